"""Run under mpiexec: data-parallel fit against a one-process fit at the same global batch and seed.

Checked on every rank: weights equal the one-process run within float rounding (the split only changes
the order of row sums) and bitwise equal across ranks after every step; the loss history and validation
metrics agree; a stop decided by a root-only callback stops every rank at the same epoch; the compiled
step, split in two calls around the allreduce, gives bitwise the weights of the layer-by-layer loop.
"""

import sys

import numpy as np

import jitnn
from jitnn import compiled_step
from jitnn.callbacks import Callback
from jitnn.distributed import DataParallel

strategy = DataParallel()
r, p = strategy.rank, strategy.size
dtype = sys.argv[1] if len(sys.argv) > 1 else "float64"
tol = {"float64": 1e-9, "float32": 2e-4}[dtype]


def data(n, d=17, k=5, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(dtype)
    return x, (np.abs(x[:, :k]).argmax(1) + rng.integers(0, 2, n)) % k


def model(optimizer="adam"):
    m = jitnn.Sequential([jitnn.Dense(13, activation="relu", input_dim=17), jitnn.Dense(11, activation="tanh"),
                          jitnn.Dense(5, activation="softmax")], dtype=dtype)
    m.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return m


def same_on_every_rank(weights):
    root = [w.copy() for w in weights]
    strategy.broadcast(root)
    return strategy.agree(not all(np.array_equal(a, b) for a, b in zip(weights, root))) is False


def close(a, b):
    return all(np.allclose(x, y, rtol=tol, atol=tol) for x, y in zip(a, b))


x, y = data(203)
xv, yv = data(61, seed=9)
# uneven splits (203 = 6 * 32 + 11), and a batch smaller than the rank count (some ranks get no rows)
for n, batch, optimizer in ((203, 32, "adam"), (203, 50, jitnn.optimizers.SGD(0.1, momentum=0.9)), (7, 2, "rmsprop")):
    dist, ref = model(optimizer), model(jitnn.optimizers.get(optimizer).get_config()
                                        if not isinstance(optimizer, str) else optimizer)
    h = dist.fit(x[:n], y[:n], epochs=2, batch_size=batch, seed=0, verbose=0, strategy=strategy,
                 validation_data=(xv, yv))
    hr = ref.fit(x[:n], y[:n], epochs=2, batch_size=batch, seed=0, verbose=0, validation_data=(xv, yv))
    assert same_on_every_rank(dist.get_weights()), "ranks disagree"
    assert close(dist.get_weights(), ref.get_weights()), f"weights differ from one process ({n}, {batch})"
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(h.history[key], hr.history[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert dist.optimizer.iterations == ref.optimizer.iterations

# bitwise agreement across ranks after every single step
m = model()
for step in range(4):
    m.fit(x[:32], y[:32], epochs=1, batch_size=32, seed=step, verbose=0, strategy=strategy)
    assert same_on_every_rank(m.get_weights()), f"ranks disagree after step {step + 1}"


class StopAtSecondEpoch(Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            self.model.stop_training = True


m = model()
h = m.fit(x, y, epochs=5, batch_size=64, seed=0, verbose=0, strategy=strategy, callbacks=[StopAtSecondEpoch()])
assert len(h.history["loss"]) == 2, h.history

# the compiled step in two calls (gradients, then the update after the allreduce) against the layer-by-layer
# loop: the same kernels in the same order, so the same bits; 3 ranks at batch 4 leave a rank without rows
compiled_step.MIN_STEPS = 1
for n, batch in ((203, 32), (9, 4)):
    runs = []
    for enabled in (True, False):
        compiled_step.ENABLED = enabled
        m = jitnn.Sequential([jitnn.Dense(13, activation="relu", input_dim=17), jitnn.Dropout(0.25, seed=5),
                              jitnn.Dense(5, activation="softmax")], dtype=dtype)
        m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        hist = m.fit(x[:n], y[:n], epochs=2, batch_size=batch, seed=0, verbose=0, strategy=strategy).history
        runs.append((m.step_path, m.get_weights(), hist))
    compiled_step.ENABLED = True
    (path, w_compiled, h_compiled), (_, w_layers, h_layers) = runs
    assert path == "compiled, gradients and update apart", path
    assert all(np.array_equal(a, b) for a, b in zip(w_compiled, w_layers)), f"compiled step differs ({n}, {batch})"
    assert h_compiled == h_layers, (h_compiled, h_layers)
    assert same_on_every_rank(w_compiled)
print(f"OK rank {r} of {p}", flush=True)
