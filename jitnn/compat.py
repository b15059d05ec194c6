"""A drop-in for the numpy tutorial's ``NN``/``Layer``/``SGD``/``Adam``/``XavierInitializer``.

The tutorial is Vladimir Ivanov's "Intuitively untangling the Multilayer Perceptron"
(https://github.com/VIad/mlp-article-repo, ``src/numpyimpl``); ``perf/baselines/tutorial_numpy.py``
is a faithful copy. Change ``from NN import ...`` to ``from jitnn.compat import ...`` and keep the code:

    nn = NN([Layer(784, 512, 'relu'), Layer(512, 10, 'softmax')], 'categorical_crossentropy', Adam())
    nn.fit(x_train, y_train, epochs=10, learning_rate=0.01, sample_size=1000)
    proba = nn.predict(x_test)

Everything runs on jitnn's Sequential, layers and kernels. Where the tutorial has a bug, this follows
the maths instead (documented in docs/compat.md): mse/BCE gradients are divided by the batch size
once, not twice; dX uses the weights before the update; Adam's step counter continues across ``fit``
calls. Each epoch visits every sample once (a shuffled pass) instead of drawing every batch
independently, which is the same expected gradient without repeated or skipped rows.
The model computes in the dtype of the data it is first given (float32 in, float32 math), as numpy
would. Once it has trained, data of another dtype is cast to the model's (``predict`` returns the
caller's dtype): rebuilding would re-create the optimizer and lose Adam's moments and step count.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from jitnn import losses as _losses
from jitnn import optimizers as _optimizers
from jitnn.callbacks import Callback
from jitnn.layers import Dense
from jitnn.model import Sequential


class XavierInitializer:
    """W ~ N(0, 2 / (in + out)) from numpy's global generator, B = 0 (the tutorial's default)."""

    def __init__(self, input_size, output_size):
        self.input_size, self.output_size = int(input_size), int(output_size)

    def W(self):
        std = math.sqrt(2.0 / (self.input_size + self.output_size))
        return np.random.normal(0.0, std, (self.input_size, self.output_size))

    def B(self):
        return np.zeros((1, self.output_size))


class SGD:
    """w -= lr * dw (the learning rate comes from ``fit``)."""

    def _build(self, learning_rate):
        return _optimizers.SGD(learning_rate=learning_rate)


class Adam:
    """Adam(b1, b2, epsilon) with the learning rate from ``fit`` (Kingma & Ba 2014)."""

    def __init__(self, b1=0.9, b2=0.999, epsilon=1e-8):
        self.b1, self.b2, self.epsilon = b1, b2, epsilon

    def _build(self, learning_rate):
        return _optimizers.Adam(learning_rate=learning_rate, beta_1=self.b1, beta_2=self.b2, epsilon=self.epsilon)


_ACTIVATIONS = {"relu": "relu", "sigmoid": "sigmoid", "softmax": "softmax"}


class Layer:
    """Layer(input_size, output_size, activation, kernel_initializer=None): a jitnn Dense underneath."""

    def __init__(self, input_size, output_size, activation, kernel_initializer=None):
        self.input_size, self.output_size = int(input_size), int(output_size)
        self.activation = activation
        self.kernel_initializer = kernel_initializer or XavierInitializer(input_size, output_size)
        # Drawn now, in layer order, from numpy's global generator, exactly as the tutorial does.
        self._W0 = np.asarray(self.kernel_initializer.W(), dtype=np.float64)
        self._B0 = np.asarray(self.kernel_initializer.B(), dtype=np.float64).reshape(-1)
        if self._W0.shape != (self.input_size, self.output_size):
            raise ValueError(f"kernel_initializer.W() returned shape {self._W0.shape}, "
                             f"expected {(self.input_size, self.output_size)}")
        self.dense = None

    def _make(self):
        return Dense(self.output_size, activation=_ACTIVATIONS.get(self.activation), input_dim=self.input_size)

    @property
    def W(self):
        """The weights, (input_size, output_size)."""
        return self.dense.W if self.dense is not None else self._W0

    @property
    def B(self):
        """The bias, (1, output_size) as in the tutorial (a view of the layer's bias)."""
        return (self.dense.b if self.dense is not None else self._B0).reshape(1, -1)


def _loss_name(loss):
    if loss in ("mse", "binary_crossentropy"):
        return loss
    return "categorical_crossentropy"  # the tutorial treats every other name as softmax cross-entropy


class _EpochLog(Callback):
    """Prints the tutorial's per-epoch line as each epoch ends."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        print(f"epoch {epoch + 1:d}/{self.epochs:d} err: {logs['loss']:f}")


class NN:
    """NN(layers, loss='mse', optimizer=SGD()): fit / predict with the tutorial's signatures."""

    def __init__(self, layers, loss="mse", optimizer=None):
        if not layers:
            raise ValueError("NN needs at least one Layer")
        for a, b in itertools.pairwise(layers):
            if a.output_size != b.input_size:
                raise ValueError(f"layer sizes do not chain: {a.output_size} outputs feed {b.input_size} inputs")
        self.layers = list(layers)
        self.loss = _loss_name(loss)
        self.optimizer = optimizer if optimizer is not None else SGD()
        self.model = None

    def _ensure(self, x, learning_rate=None):
        dtype = np.float32 if x.dtype == np.float32 else np.float64
        trained = self.model is not None and self.model.optimizer.iterations > 0
        if self.model is None or (self.model.dtype != dtype and not trained):
            weights = [(L.W, L.B.reshape(-1)) for L in self.layers]
            self.model = Sequential([L._make() for L in self.layers], dtype=dtype)
            self.model.build(self.layers[0].input_size)
            for L, dense, (w, b) in zip(self.layers, self.model.layers, weights):
                dense.W[...] = w
                dense.b[...] = b
                L.dense = dense
            self.model.compile(loss=_losses.get(self.loss), optimizer=self.optimizer._build(learning_rate or 0.01))
        if learning_rate is not None:
            self.model.optimizer.learning_rate = float(learning_rate)
        return self.model

    def _targets(self, y, n_out):
        y = np.asarray(y)
        if self.loss == "categorical_crossentropy":
            return y  # one-hot rows (as the tutorial requires) or integer labels
        if y.ndim == 1 and n_out == 1:
            return y.reshape(-1, 1)
        return y

    def fit(self, x_train, y_train, epochs, learning_rate, sample_size, include_logs=True):
        """Train for ``epochs`` passes in batches of ``sample_size``; prints ``epoch i/n err: x``."""
        x = np.asarray(x_train)
        model = self._ensure(x, learning_rate)
        x = x.astype(model.dtype, copy=False) if x.dtype.kind == "f" else x
        y = self._targets(y_train, self.layers[-1].output_size)
        log = [_EpochLog(epochs)] if include_logs else []
        model.fit(x, y, epochs=epochs, batch_size=int(sample_size), verbose=0, callbacks=log,
                  seed=int(np.random.randint(0, 2**31 - 1)))

    def predict(self, X):
        """The last layer's activations, (len(X), outputs)."""
        x = np.asarray(X)
        model = self._ensure(x)
        out = model.predict(x.astype(model.dtype, copy=False) if x.dtype.kind == "f" else x)
        return out.astype(x.dtype, copy=False) if x.dtype.kind == "f" else out


__all__ = ["NN", "SGD", "Adam", "Layer", "XavierInitializer"]
