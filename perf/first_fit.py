"""What a new user waits for: python start to the end of the first fit of the reference MLP (784-512-128-64-10,
Adam, accuracy; 4 batches of 64), with the compiled step or the layer-by-layer loop.

    d=$(mktemp -d); JITNN_CACHE_DIR=$d python perf/first_fit.py compiled   # cold: empty cache
    JITNN_CACHE_DIR=$d python perf/first_fit.py compiled                   # warm: the disk cache
    (the same with "layers")
"""
import sys
import time

t0 = time.perf_counter()
import numpy as np

import jitnn
from jitnn import compiled_step

compiled_step.ENABLED = sys.argv[1] == "compiled"
compiled_step.MIN_STEPS = 0  # a 4-step fit: compile the step anyway
t_import = time.perf_counter() - t0
rng = np.random.default_rng(0)
x = rng.random((256, 784), dtype=np.float32)
y = rng.integers(0, 10, 256)
layers = [jitnn.Dense(512, "relu", input_dim=784), jitnn.Dense(128, "relu"), jitnn.Dense(64, "relu"),
          jitnn.Dense(10, "softmax")]
m = jitnn.Sequential(layers)
m.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
m.fit(x, y, epochs=1, batch_size=64, verbose=0, seed=0)
print(f"{sys.argv[1]}: path={m.step_path!r} import {t_import:.1f} s, first fit done "
      f"{time.perf_counter() - t0:.1f} s after start")
