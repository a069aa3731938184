# Set-up in two commands: `make run` and `make test` each create .venv and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-kernel test-nojit bench readme clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e '.[test]'
	touch $@

run: $(STAMP)
	$(VENV)/bin/hugecalc vmemmap --pages 1024G

# The tests that leave the machine alone run in parallel (one worker per core); the experiments on
# the running kernel (marked root) run after them, one at a time, and only when asked.
test: $(STAMP)
	$(PY) -m pytest -n auto --dist worksteal -m "not root"
	@if [ -n "$$HUGECALC_KERNEL_TESTS" ]; then $(PY) -m pytest -m root; fi

# Also the experiments on the running kernel (root): they change THP/HVO settings and allocate
# hugepages, and put every one back.
test-kernel: $(STAMP)
	HUGECALC_KERNEL_TESTS=1 $(MAKE) test

test-nojit: $(STAMP)
	NUMBA_DISABLE_JIT=1 $(MAKE) test

bench: $(STAMP)
	$(PY) benchmarks/bench.py

readme: $(STAMP)
	$(PY) tests/readme_examples.py --write

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
