"""Train the reference MLP (784-512-128-64-10, Adam) on Fashion-MNIST and plot its training curves.

    python examples/plot_history.py                        # writes history.svg
    python examples/plot_history.py --out docs/history.svg --epochs 10

Needs matplotlib (pip install 'jitnn[plot]'). Uses scikit-learn's digits when Fashion-MNIST is absent.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jitnn
import jitnn.plot


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="history.svg")
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args(argv)
    name, (x, y), (x_test, y_test) = jitnn.datasets.load_dataset("auto")
    model = jitnn.Sequential([jitnn.Dense(512, activation="relu"), jitnn.Dense(128, activation="relu"),
                              jitnn.Dense(64, activation="relu"), jitnn.Dense(10, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x, y, epochs=args.epochs, batch_size=64, validation_data=(x_test, y_test), seed=0,
                        verbose=2)
    jitnn.plot.history(history, args.out, title=f"784-512-128-64-10 on {name}, Adam, batch 64")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
