# The two commands a fresh clone needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# The CPU build of torch comes first: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install install-test serve test bench clean image image-cpu

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install -e .
	touch $@

# System tools the tests run (installed as root in CI; a missing one fails its tests): Debian's
# OCI registry for pull/push, podman + runc + debootstrap for the image tests (tests/deploy).
SYSTEM_TOOLS := docker-registry:docker-registry podman:podman runc:runc debootstrap:debootstrap nsenter:util-linux

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test]'
	missing="$$(for t in $(SYSTEM_TOOLS); do command -v $${t%%:*} >/dev/null || echo $${t#*:}; done)"; \
	  [ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }
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

# Images (docker/build.py): the CPU one offline from a debootstrapped Debian and a wheelhouse of this
# venv's versions; the CUDA one from PyPI and PyTorch's CUDA index. IMAGE_ARGS="--tag ... --base ...".
image-cpu: install
	$(PY) docker/build.py --target cpu $(IMAGE_ARGS)

image: install
	$(PY) docker/build.py --target cuda $(IMAGE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
