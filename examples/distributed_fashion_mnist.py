"""Data-parallel training of the reference MLP on Fashion-MNIST over MPI.

    mpiexec -n 2 python examples/distributed_fashion_mnist.py [--epochs 5] [--batch-size 1024]

``--batch-size`` is the global batch: each of the N ranks computes the gradient of its share of every
batch, one Allreduce averages them, and every rank takes the same optimizer step. Rank 0 prints the
progress and the test accuracy. Falls back to scikit-learn's digits when Fashion-MNIST is absent.
"""

import argparse
import time

import jitnn
from jitnn import Dense, Sequential
from jitnn.distributed import DataParallel


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dataset", default="auto", choices=["auto", "fashion_mnist", "digits"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    strategy = DataParallel()  # before any kernel runs: it sets the threads per rank
    name, (x, y), (xt, yt) = jitnn.datasets.load_dataset(args.dataset)
    model = Sequential([Dense(512, activation="relu", input_dim=x.shape[1]), Dense(128, activation="relu"),
                        Dense(64, activation="relu"), Dense(int(y.max()) + 1, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=jitnn.optimizers.Adam(learning_rate=args.lr),
                  metrics=["accuracy"])
    if strategy.is_root:
        print(f"dataset {name}: {x.shape[0]} rows; {strategy.size} ranks x {strategy.threads} threads, "
              f"global batch {args.batch_size}")
    t0 = time.perf_counter()
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_data=(xt, yt), seed=args.seed,
              strategy=strategy, verbose=2)
    seconds = time.perf_counter() - t0
    loss, acc = model.evaluate(xt, yt)
    if strategy.is_root:
        print(f"test loss {loss:.4f}  test accuracy {acc:.4f}  ({args.epochs} epochs in {seconds:.1f} s)")


if __name__ == "__main__":
    main()
