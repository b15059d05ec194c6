"""A small CNN of our own design on Fashion-MNIST: BatchNormalization, cosine learning-rate decay, folding.

    python examples/fashion_mnist_cnn.py [--epochs 12] [--batch-size 128]

Conv 32 3x3 → BN → ReLU → MaxPool 2 → Conv 64 3x3 → BN → ReLU → MaxPool 2 → Flatten → Dense 128 ReLU →
Dropout 0.3 → Dense 10 softmax; Adam with a cosine decay over all steps (jitnn.schedules.CosineDecay, a
short warm-up). The convolutions have no bias and no activation of their own: BatchNormalization's beta
is the bias, and after training ``fold_batchnorm`` merges each Conv → BN → ReLU block into one Conv2D
with its ReLU in the kernel's epilogue, so inference runs 7 layers instead of 11. Prints the test
accuracy per epoch, the total time, and the folded model's accuracy and inference time.
"""

import argparse
import time

import numpy as np

import jitnn
from jitnn import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPooling2D,
    Sequential,
)


def build(classes=10):
    return Sequential([
        Conv2D(32, 3, use_bias=False, input_shape=(28, 28, 1)), BatchNormalization(), Activation("relu"),
        MaxPooling2D(2),
        Conv2D(64, 3, use_bias=False), BatchNormalization(), Activation("relu"),
        MaxPooling2D(2),
        Flatten(),
        Dense(128, activation="relu"), Dropout(0.3),
        Dense(classes, activation="softmax"),
    ])


def best_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="train on the first N images only (a quick check)")
    args = p.parse_args(argv)

    (x, y), (xt, yt) = jitnn.datasets.load_fashion_mnist(flatten=False)
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    print(f"train {x.shape}, test {xt.shape}, threads {jitnn.get_num_threads()}", flush=True)
    model = build()
    model.summary()
    steps = args.epochs * -(-len(x) // args.batch_size)
    schedule = jitnn.schedules.CosineDecay(args.lr, decay_steps=steps, alpha=0.01, warmup_steps=min(200, steps // 10))
    model.compile(loss="sparse_categorical_crossentropy", optimizer=jitnn.optimizers.Adam(learning_rate=schedule),
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_data=(xt, yt), verbose=2,
              seed=args.seed)
    seconds = time.perf_counter() - t0
    loss, acc = model.evaluate(xt, yt)
    print(f"test loss {loss:.4f}  test accuracy {acc:.4f}  ({args.epochs} epochs in {seconds:.1f} s, "
          f"{seconds / max(args.epochs, 1):.1f} s an epoch with validation, compile included)", flush=True)

    folded = model.fold_batchnorm()
    folded.summary()
    t_plain, p_plain = best_time(lambda: model.predict(xt, batch_size=256))
    t_fold, p_fold = best_time(lambda: folded.predict(xt, batch_size=256))
    agree = float(np.mean(p_plain.argmax(1) == p_fold.argmax(1)))
    print(f"inference on the test set, batch 256: {t_plain * 1e3:.0f} ms unfolded, {t_fold * 1e3:.0f} ms folded "
          f"({t_plain / t_fold:.2f}x); folded accuracy {np.mean(p_fold.argmax(1) == yt):.4f}, "
          f"max |difference| {np.abs(p_plain - p_fold).max():.2e}, same class for {agree:.4%}")
    return acc


if __name__ == "__main__":
    main()
