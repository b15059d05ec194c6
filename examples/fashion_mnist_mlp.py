"""Train the reference MLP (784-512-128-64-10, Adam) on Fashion-MNIST and report test accuracy.

    python examples/fashion_mnist_mlp.py [--epochs 15] [--batch-size 128] [--profile]

Falls back to scikit-learn's digits when Fashion-MNIST is not installed
(``apt-get install dataset-fashion-mnist``).
"""

import argparse
import time

import jitnn
from jitnn import Dense, Dropout, Sequential


def build(input_dim=784, classes=10, dropout=0.0):
    """The tutorial's benchmark network, optionally with dropout between the hidden layers."""
    layers = [Dense(512, activation="relu", input_dim=input_dim)]
    if dropout:
        layers.append(Dropout(dropout))
    layers += [Dense(128, activation="relu"), Dense(64, activation="relu"), Dense(classes, activation="softmax")]
    return Sequential(layers)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--dataset", default="auto", choices=["auto", "fashion_mnist", "digits"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="print the per-layer hotspot table after training")
    args = p.parse_args(argv)

    name, (x, y), (xt, yt) = jitnn.datasets.load_dataset(args.dataset)
    print(f"dataset: {name}, train {x.shape}, test {xt.shape}, threads {jitnn.get_num_threads()}")
    model = build(x.shape[1], int(y.max()) + 1, args.dropout)
    model.compile(loss="categorical_crossentropy", optimizer=jitnn.optimizers.Adam(learning_rate=args.lr),
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    with jitnn.profile() as prof:
        model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_data=(xt, yt),
                  verbose=args.verbose, seed=args.seed)
    seconds = time.perf_counter() - t0
    loss, acc = model.evaluate(xt, yt)
    model.summary()
    print(f"test loss {loss:.4f}  test accuracy {acc:.4f}  ({args.epochs} epochs in {seconds:.1f} s, "
          f"compile included on a cold cache)")
    if args.profile:
        from jitnn.report import render_top

        print(render_top(prof))
    return acc


if __name__ == "__main__":
    main()
