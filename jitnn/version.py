"""jitnn's version, written once here: pyproject.toml reads it (setuptools' ``attr``, parsed without
importing jitnn), ``jitnn.__version__`` re-exports it, and report.py stamps profiles with it without
importing the package that imports report."""

__version__ = "0.1.0"
