"""The README's main job: train the reference MLP on Fashion-MNIST, print accuracy and the hotspot report.

Runs examples/fashion_mnist_mlp.py with the per-layer profile on (digits when Fashion-MNIST is absent).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fashion_mnist_mlp

if __name__ == "__main__":
    fashion_mnist_mlp.main(["--profile", "--verbose", "2"] + sys.argv[1:])
