"""The numpy tutorial's MNIST-style script, unchanged except for the import line.

Original: https://github.com/VIad/mlp-article-repo (src/numpyimpl). Its import
    from NN import NN, Layer, Adam, XavierInitializer
becomes the line below; nothing else changes.
"""

import numpy as np

from jitnn.compat import NN, Adam, Layer  # was: from NN import NN, Layer, Adam
from jitnn.datasets import load_dataset, one_hot

np.random.seed(42)
name, (x_train, y_train), (x_test, y_test) = load_dataset("auto")
y_train = one_hot(y_train, 10)

nn = NN([
    Layer(x_train.shape[1], 512, 'relu'),
    Layer(512, 128, 'relu'),
    Layer(128, 64, 'relu'),
    Layer(64, 10, 'softmax'),
], 'categorical_crossentropy', Adam())

nn.fit(x_train, y_train, epochs=10, learning_rate=0.001, sample_size=1000)

pred = nn.predict(x_test)
print(f"{name}: test accuracy {np.mean(np.argmax(pred, axis=1) == y_test):.4f}")
