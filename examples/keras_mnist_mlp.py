"""Keras's classic ``mnist_mlp.py`` example, ported to jitnn by changing its imports.

Trains a simple deep NN (Dense 512 relu, Dropout 0.2, Dense 512 relu, Dropout 0.2, Dense 10 softmax)
with RMSprop. The differences from the Keras script, all on purpose:

- the imports (``import jitnn as keras`` and the ``jitnn`` modules for ``keras.*``);
- the data: Fashion-MNIST (``jitnn.datasets.fashion_mnist``, the same shapes and dtypes as
  ``keras.datasets.mnist``) instead of MNIST, whose download is impossible where jitnn is tested
  (Debian's ``dataset-fashion-mnist`` package holds the files);
- ``validation_split=0.1`` where the script validated on the test set;
- two lines (marked) that keep only the first ``$KERAS_MNIST_ROWS`` rows, so that the test suite can
  run the script on a small slice.

Keras reaches 98.40% on MNIST after 20 epochs; Fashion-MNIST is harder (about 89% here).
Run: ``python examples/keras_mnist_mlp.py`` (docs/keras.md).
"""

from __future__ import print_function  # noqa: UP010 - kept as in the Keras script

import os

import jitnn as keras
from jitnn.datasets import fashion_mnist as mnist
from jitnn.layers import Dense, Dropout
from jitnn.model import Sequential
from jitnn.optimizers import RMSprop

batch_size = 128
num_classes = 10
epochs = 20

# the data, split between train and test sets
(x_train, y_train), (x_test, y_test) = mnist.load_data()

x_train = x_train.reshape(60000, 784)
x_test = x_test.reshape(10000, 784)
x_train = x_train.astype('float32')
x_test = x_test.astype('float32')
x_train /= 255
x_test /= 255
rows = int(os.environ.get("KERAS_MNIST_ROWS", "0")) or None  # jitnn: a small slice for the tests
x_train, y_train, x_test, y_test = x_train[:rows], y_train[:rows], x_test[:rows], y_test[:rows]  # jitnn
print(x_train.shape[0], 'train samples')
print(x_test.shape[0], 'test samples')

# convert class vectors to binary class matrices
y_train = keras.utils.to_categorical(y_train, num_classes)
y_test = keras.utils.to_categorical(y_test, num_classes)

model = Sequential()
model.add(Dense(512, activation='relu', input_shape=(784,)))
model.add(Dropout(0.2))
model.add(Dense(512, activation='relu'))
model.add(Dropout(0.2))
model.add(Dense(num_classes, activation='softmax'))

model.summary()

model.compile(loss='categorical_crossentropy',
              optimizer=RMSprop(),
              metrics=['accuracy'])

history = model.fit(x_train, y_train,
                    batch_size=batch_size,
                    epochs=epochs,
                    verbose=1,
                    validation_split=0.1)
score = model.evaluate(x_test, y_test, verbose=0)
print('Test loss:', score[0])
print('Test accuracy:', score[1])
