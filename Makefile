# The two commands of the README: `make demo` and `make test`.
# Both create .venv with the Python on PATH (3.11+) and install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench realistic screenshots clean

# constraints.txt pins the versions this project is tested with (pip freeze of a working
# environment): without it pip can spend many minutes backtracking through boto3/botocore.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,notebooks]" -c constraints.txt
	touch $@

demo: $(BIN)/.installed
	$(BIN)/abo-lake demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the tests on PYTEST_WORKERS processes (pytest-xdist; --dist loadfile keeps a file's tests on
# one process, so its module fixtures are built once); PYTEST_WORKERS=0: all in this process.
# The notebooks' demo lake (notebooks/_work, what the first notebook would build) is built
# meanwhile, so the notebooks can then run on PYTEST_WORKERS processes too.
PYTEST_WORKERS ?= 2
NOTEBOOK_LAKE  := $(BIN)/python -c 'from abo_lake.demo import demo_lake; demo_lake("notebooks/_work")'

test: lint
	if ls notebooks/*.ipynb >/dev/null 2>&1; then $(NOTEBOOK_LAKE) >/dev/null & lake=$$!; fi; \
	  $(BIN)/pytest -q -p no:nbmake -n $(PYTEST_WORKERS) --dist loadfile tests; tests=$$?; \
	  if [ -n "$${lake-}" ]; then wait $$lake || exit 1; fi; exit $$tests
	if ls notebooks/*.ipynb >/dev/null 2>&1; then \
	  $(BIN)/pytest -q -n $(PYTEST_WORKERS) --nbmake notebooks; fi

# every source format synthesized at realistic scale, converted, published and verified
# (about four minutes on 2 cores; CI runs it after `make test`)
realistic: $(BIN)/.installed
	$(BIN)/python tests/benchmarks/bench_realistic_kinds.py

# a PNG of each page of `abo-lake serve` in headless Chromium (Debian's chromium and
# chromium-driver) into abo_lake_work/screenshots, over a small sample lake built there on
# first use, or LAKE=URL
screenshots: $(BIN)/.installed
	$(BIN)/python -m abo_lake.web.screenshots abo_lake_work/screenshots $(if $(LAKE),--lake $(LAKE))

bench: $(BIN)/.installed
	for b in tests/benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
