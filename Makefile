# kexue: the two commands are `make report` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.kexue-installed
# 2-core CI: pytest-xdist is not used; torch threads follow the cores.
export OMP_NUM_THREADS ?= 2
export MPLBACKEND := Agg

.PHONY: setup report readme test test-slow docs bench lint format clean

setup: $(STAMP)

# torch==2.13.0 first: the CPU build on this machine's disk. Any other spec may pull a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,bert,peers,docs]'
	touch $(STAMP)

report: setup
	$(VENV)/bin/kexue report --scale quick --out report/ --overwrite

# after `make report`: rewrite the README's results blocks (and docs/results/ snapshots) from it,
# and its benchmark blocks from docs/results/bench/*.json (benchmarks/*.py --snapshot)
readme: setup
	$(VENV)/bin/kexue readme --results report --readme README.md --docs docs --snapshots docs/results

test: setup
	$(PY) -m pytest -q

# Tests marked slow (> ~10 s each). pytest exits 5 when it collects nothing: not a failure here.
test-slow: setup
	$(PY) -m pytest -q -m slow; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no test is marked slow"; exit 0; fi; exit $$rc

# the docs site: Sphinx + MyST, warnings are errors (a broken reference or a public name
# without a docstring fails the build)
docs: setup
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

bench: setup
	@for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) report build dist docs/_build src/*.egg-info .pytest_cache .ruff_cache .hypothesis
