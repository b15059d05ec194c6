# The two commands a fresh machine needs (README.md): `make demo` and `make test`.
# Each creates its own virtual environment and installs what it needs into it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian; without root or apt the demo falls back to scikit-learn's digits.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null 2>&1 \
		|| echo "note: could not install dataset-fashion-mnist; using the embedded digits set"; \
	fi

demo: $(STAMP) data
	$(PY) examples/demo.py

# Two workers, one per core: most of a cold run is numba compiling, which uses one core; a file's
# tests stay on one worker (loadfile), so the kernels they share compile once.
test: $(STAMP) data
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) perf/bench_gemm.py
	$(PY) perf/bench_train.py
	$(PY) perf/bench_sparse.py
	$(PY) perf/bench_conv.py
	$(PY) perf/bench_sklearn.py
	$(PY) perf/bench_distributed.py

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
