"""The numpy tutorial MLP that ``jitnn.compat`` is a drop-in for, kept as our speed and accuracy peer.

Source: Vladimir Ivanov, "Intuitively untangling the Multilayer Perceptron", repository
https://github.com/VIad/mlp-article-repo (commit e40a66890f2642260e5fecc9bff53fc73255e8d9):
``src/numpyimpl/NN.py``, ``src/numpyimpl/mlmath.py``, ``src/numpyimpl/optimizers.py``,
``src/numpyimpl/initializers.py``; the article is that repository's ``README.md``. Its CuPy port
(``src/cuda/cuda_*.py``) is the one the article times at 10.2 s (RTX 2070) for 784-512-128-64-10, Adam,
``learning_rate=0.01``, ``sample_size=1000``, 10 epochs on MNIST; the numpy version took 33.4 s on an
i7-10750H.

Reproduced operation for operation (the same numpy calls per batch, in the same order, with the same
float handling: weights are float64, so every product runs in float64 whatever the input dtype). What
differs from the original, none of it touching the arithmetic:

- the four modules are merged into this one file (the original imports them as top-level modules
  ``mlmath``, ``initializers``, ``optimizers``, which fails from any other directory); the mlmath
  functions keep their names at module level;
- the unused ``timeit`` decorator of ``NN.py`` is left out; comments and docstrings are ours.

Quirks kept on purpose, because the compat layer must match them:

- ``Layer.backward`` steps the optimizer *before* it propagates, so the error sent to the previous layer
  is computed with the already-updated weights;
- each batch is ``np.random.choice(n, sample_size, replace=False)``: batches within an epoch are drawn
  independently (samples repeat or are skipped), ``ceil(n / sample_size)`` of them per epoch;
- Adam's step ``t`` counts batches from 1, restarts at 1 on every ``fit`` call, and is shared by all
  layers, while each layer's moments persist across ``fit`` calls;
- mse / binary cross-entropy expect 1-D ``y`` with one output unit (a (n, 1) ``y`` broadcasts to
  (n, n) silently); any other loss name is softmax cross-entropy and expects one-hot ``y``.

Run ``python3 perf/baselines/tutorial_numpy.py [--epochs N]`` to train the article's benchmark network on
Fashion-MNIST and print the time and test accuracy.
"""

import copy

import numpy as np

# --- mlmath.py ------------------------------------------------------------------------------------------

def relu(X):
    """max(0, x)."""
    return np.maximum(0, X)


def relu_derivative(x):
    """1 where x > 0 else 0, as an int array (the product with the error promotes it)."""
    return np.where(x <= 0, 0, 1)


def sigmoid(x):
    """1 / (1 + e^-x)."""
    return 1 / (1 + np.exp(-x))


def sigmoid_derivative(x):
    """sigmoid(x) * (1 - sigmoid(x))."""
    Z = sigmoid(x)
    return Z * (1 - Z)


def mse(Y_hat, Y):
    """Mean of the squared differences (no 1/2, broadcasting as the shapes come)."""
    return np.mean((Y_hat - Y) ** 2)


def mse_derivative(output, y):
    """(output - y) / len(y): the loss derivative without the factor 2."""
    error = output - y
    derivative = error / y.shape[0]
    return derivative


def binary_crossentropy(Y_hat, Y):
    """-mean(y log p + (1 - y) log(1 - p)) with 1e-10 inside the logs."""
    eps = 1e-10
    m = Y.shape[0]
    cost = -1 / m * np.sum(Y * np.log(Y_hat + eps) + (1 - Y) * np.log(1 - Y_hat + eps))
    return cost


def binary_crossentropy_derivative(Y_hat, Y):
    """(p - y) / (p (1 - p) + 1e-10) / len(y)."""
    eps = 1e-10
    m = Y.shape[0]
    return (Y_hat - Y) / (Y_hat * (1 - Y_hat) + eps) / m


def batch_softmax(x):
    """Row-wise softmax, stabilized by subtracting each row's max."""
    row_maxes = np.max(x, axis=1)
    row_maxes = row_maxes[:, np.newaxis]
    stabilized_exp = np.exp(x - row_maxes)
    return stabilized_exp / np.sum(stabilized_exp, axis=1, keepdims=True)


def batch_error_softmax_input(Y_hat, Y):
    """Softmax + cross-entropy gradient w.r.t. the logits, not yet divided by the batch size."""
    return Y_hat - Y.T


def cross_entropy(Y_hat, Y):
    """Per-sample -log(p of the true class + 1e-8); Y one-hot, Y_hat transposed (classes, batch)."""
    return -np.log(Y_hat[np.where(Y.T)] + 1e-8)


# --- initializers.py ------------------------------------------------------------------------------------

class KernelInitializer:
    """Holds the layer's sizes; ``W()`` and ``B()`` make fresh (input, output) and (1, output) arrays."""

    def __init__(self, input_size, output_size):
        self.i = input_size
        self.o = output_size

    def W(self):
        pass

    def B(self):
        pass


class UniformInitializer(KernelInitializer):
    """W ~ U(0, 1), B = 0."""

    def W(self):
        return np.random.uniform(0, 1, size=(self.i, self.o))

    def B(self):
        return np.zeros((1, self.o))


class XavierInitializer(KernelInitializer):
    """W ~ N(0, sqrt(2 / (in + out))), B = 0 (Glorot & Bengio 2010, the normal variant)."""

    def W(self):
        return np.random.normal(loc=0, scale=np.sqrt(2 / (self.i + self.o)), size=(self.i, self.o))

    def B(self):
        return np.zeros((1, self.o))


class KaimingHeInitializer(KernelInitializer):
    """W ~ N(0, sqrt(2 / in)), B = 0 (He et al. 2015)."""

    def W(self):
        return np.random.normal(loc=0, scale=np.sqrt(2 / self.i), size=(self.i, self.o))

    def B(self):
        return np.zeros((1, self.o))


class SigmoidInitializer(KernelInitializer):
    """W ~ N(0, sqrt(6 / (in + out))), B = 0."""

    def W(self):
        return np.random.normal(loc=0, scale=np.sqrt(6 / (self.i + self.o)), size=(self.i, self.o))

    def B(self):
        return np.zeros((1, self.o))


# --- optimizers.py --------------------------------------------------------------------------------------

class Optimizer:
    """``step(learning_rate, dw, db, w, b, t)`` returns the new ``(w, b)``; ``t`` counts from 1."""

    def step(self, learning_rate, dw, db, w, b, t):
        pass


class Adam(Optimizer):
    """Adam with bias correction, epsilon outside the root (Kingma & Ba 2014, arXiv:1412.6980)."""

    def __init__(self, b1=0.9, b2=0.999, epsilon=1e-8):
        self.b1 = b1
        self.b2 = b2
        self.epsilon = epsilon
        self.m_dw, self.v_dw = 0, 0  # become arrays on the first step
        self.m_db, self.v_db = 0, 0

    def step(self, learning_rate, dw, db, w, b, t):
        self.m_dw = self.b1 * self.m_dw + (1 - self.b1) * dw
        self.v_dw = self.b2 * self.v_dw + (1 - self.b2) * dw ** 2

        self.m_db = self.b1 * self.m_db + (1 - self.b1) * db
        self.v_db = self.b2 * self.v_db + (1 - self.b2) * db ** 2

        mt_w_hat = self.m_dw / (1 - self.b1 ** t)
        mt_b_hat = self.m_db / (1 - self.b1 ** t)

        vt_w_hat = self.v_dw / (1 - self.b2 ** t)
        vt_b_hat = self.v_db / (1 - self.b2 ** t)

        n_w = w - learning_rate * mt_w_hat / (np.sqrt(vt_w_hat) + self.epsilon)
        n_b = b - learning_rate * mt_b_hat / (np.sqrt(vt_b_hat) + self.epsilon)
        return n_w, n_b


class SGD(Optimizer):
    """Plain gradient descent: w - learning_rate * dw."""

    def step(self, learning_rate, dw, db, w, b, t):
        n_w = w - learning_rate * dw
        n_b = b - learning_rate * db
        return n_w, n_b


# --- NN.py ----------------------------------------------------------------------------------------------

class Layer:
    """Dense layer ``activation(X @ W + B)``: 'relu', 'sigmoid', 'softmax', any other name is linear."""

    def __init__(self, input_size, output_size, activation, kernel_initializer=None):
        self.kernel_initializer = kernel_initializer
        self.optimizer = None  # NN gives each layer its own copy
        if kernel_initializer is None:
            self.kernel_initializer = XavierInitializer(input_size, output_size)

        self.activation = activation

        self.W = self.kernel_initializer.W()
        self.B = self.kernel_initializer.B()

    def backward(self, w_or_error, learning_rate, t):
        """Update W and B from the error w.r.t. this layer's output; return the error w.r.t. its input."""
        activation_error = self.compute_activation_error(w_or_error)

        weights_error = np.dot(self.input, activation_error) * (1 / self.N)
        bias_error = np.mean(activation_error, axis=0, keepdims=True)

        self.W, self.B = self.optimizer.step(learning_rate, weights_error, bias_error, self.W, self.B, t)

        # the original propagates through the weights it has just updated
        error = np.dot(activation_error, self.W.T)
        return error

    def compute_activation_error(self, w_or_error):
        """Chain the activation's derivative; softmax passes through (its loss gradient is w.r.t. logits)."""
        if self.activation == 'relu':
            return relu_derivative(self.D) * w_or_error
        if self.activation == 'sigmoid':
            return sigmoid_derivative(self.D) * w_or_error
        if self.activation == 'softmax':
            return w_or_error
        else:
            return w_or_error

    def dense_pass(self, X):
        return np.dot(X, self.W) + self.B

    def activation_pass(self, X):
        if self.activation == 'relu':
            return relu(X)
        if self.activation == 'sigmoid':
            return sigmoid(X)
        if self.activation == 'softmax':
            return batch_softmax(X)
        else:
            return X  # linear

    def layer(self, X):
        """Forward pass; caches X.T, the batch size and the pre-activation for ``backward``."""
        self.input = X.T
        self.N = X.shape[0]
        D = self.dense_pass(X)
        A = self.activation_pass(D)
        self.D = D
        return A


class NN:
    """A stack of ``Layer``s; loss 'mse', 'binary_crossentropy', any other name softmax cross-entropy."""

    # the original's shared default instance: harmless, SGD holds no state and each layer gets a copy
    def __init__(self, layers, loss='mse', optimizer=SGD()):  # noqa: B008
        self.loss = loss
        self.layers = layers
        self.optimizer = optimizer
        for layer in layers:
            layer.optimizer = copy.copy(optimizer)

    def compute_loss_derivative(self, Y_hat, Y):
        if self.loss == 'mse':
            return mse_derivative(Y_hat, Y)
        if self.loss == 'binary_crossentropy':
            return binary_crossentropy_derivative(Y_hat, Y)
        else:
            return batch_error_softmax_input(Y_hat, Y)

    def compute_error(self, Y_hat, Y):
        if self.loss == 'mse':
            return mse(Y_hat, Y)
        if self.loss == 'binary_crossentropy':
            return binary_crossentropy(Y_hat, Y)
        else:
            return cross_entropy(Y_hat, Y)

    def predict(self, X):
        """The last layer's activations, shape (len(X), output_size)."""
        return self.predict_(X)

    def predict_(self, X):
        output = X
        for layer in self.layers:
            output = layer.layer(output)
        return output

    def sample(self, x_train, sample_size, y_train):
        """A random batch of ``sample_size`` distinct rows (drawn afresh for every batch)."""
        indices = np.random.choice(x_train.shape[0], sample_size, replace=False)

        sample_X = x_train[indices]
        sample_Y = y_train[indices]
        return sample_X, sample_Y

    def fit(self, x_train, y_train, epochs, learning_rate, sample_size, include_logs=True):
        """Train on ceil(n / sample_size) random batches per epoch; print each epoch's mean loss."""
        n_weight_updates = int(np.ceil(x_train.shape[0] / sample_size))
        t = 1
        for i in range(epochs):
            err = []
            for j in range(n_weight_updates):
                sample_X, sample_Y = self.sample(x_train, sample_size, y_train)

                output = self.predict_(sample_X).T

                error = self.compute_loss_derivative(output, sample_Y).T

                for layer in reversed(self.layers):
                    error = layer.backward(error, learning_rate, t)
                t += 1
                total_err = self.compute_error(output, sample_Y).T
                err.append(total_err)
            if include_logs:
                mean_err = np.mean(np.array(err))
                print('epoch %d/%d err: %f' % (i + 1, epochs, mean_err))  # noqa: UP031


def _main(argv=None):
    """Train the article's benchmark network on Fashion-MNIST and print the time and the test accuracy."""
    import argparse
    import os
    import sys
    import time

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("--epochs", type=int, default=3, help="10 reproduces the article's benchmark")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--sample-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from jitnn.datasets import load_fashion_mnist, one_hot

    # float64 like the article's ``x_train / 255.0``
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(dtype="float64")
    np.random.seed(args.seed)
    net = NN(layers=[
        Layer(784, 512, activation='relu'),
        Layer(512, 128, activation='relu'),
        Layer(128, 64, activation='relu'),
        Layer(64, 10, activation='softmax'),
    ], loss='categorical_crossentropy', optimizer=Adam())
    start = time.perf_counter()
    net.fit(x_train, one_hot(y_train, 10), args.epochs, args.learning_rate, sample_size=args.sample_size)
    seconds = time.perf_counter() - start
    accuracy = np.mean(np.argmax(net.predict(x_test), axis=1) == y_test)
    print(f"{args.epochs} epochs in {seconds:.2f} s; test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    _main()
