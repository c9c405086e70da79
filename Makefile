# The two commands a fresh clone needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# The CPU build of torch comes first: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install install-test serve test bench fuzz soak clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install -e .
	touch $@

# The pull/push tests run Debian's OCI registry (installed as root in CI); without it they skip.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test]'
	command -v docker-registry >/dev/null || (apt-get update -qq && apt-get install -y -qq docker-registry) || true
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

serve: install
	$(VENV)/bin/corral serve

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

# `make bench BENCH_ARGS=--quick`; set LLAMA_SERVER (bench/build_llama_server.sh) to add llama.cpp.
$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) install -e '.[bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) -m bench $(BENCH_ARGS)

# The long forms of what `make test` runs bounded: schemathesis with every phase and many
# examples per operation, and a 30-minute soak (`make soak SOAK_MINUTES=N`).
FUZZ_EXAMPLES ?= 100
fuzz: install-test
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_PHASES=examples,coverage,fuzzing,stateful FUZZ_TIMEOUT=7200 \
		$(PY) -m pytest tests/fuzz -o timeout=7500 $(PYTEST_ARGS)

SOAK_MINUTES ?= 30
soak: install-test
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
