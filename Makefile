# The two commands a fresh clone needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# The CPU build of torch comes first: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install install-test serve test bench profile loadtest fuzz soak clean image image-cpu gpu-wheels gpu-check

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install -e .
	touch $@

# System tools the tests run (installed as root in CI; a missing one fails its tests): Debian's
# OCI registry for pull/push, podman + runc + debootstrap for the image tests (tests/deploy), Node
# and npm for ollama-js. Each is command:package.
SYSTEM_TOOLS := docker-registry:docker-registry podman:podman runc:runc debootstrap:debootstrap nsenter:util-linux \
	node:nodejs npm:npm chromium:chromium

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test]'
	missing="$$(for t in $(SYSTEM_TOOLS); do command -v $${t%%:*} >/dev/null || echo $${t#*:}; done)"; \
	  [ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }
	touch $@

# ollama-js for tests/integration/test_ollama_js.py: the npm package from the lock.
JS_TESTS := tests/clients/js
$(JS_TESTS)/node_modules/.installed: $(JS_TESTS)/package-lock.json $(VENV)/.installed-test
	cd $(JS_TESTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Client tools the tests drive, each in a venv of its own: their pins clash with ours (GuideLLM
# also brings uvloop/httptools, which would change uvicorn's defaults in .venv). pip installs the
# CPU torch first, as for .venv; uv then installs the tool in about a minute where pip takes many,
# keeping that torch (so nothing pulls CUDA). uv reads neither pip's config nor its constraints,
# so a machine's local wheels and constraint file are passed on where they exist.
UV_LOCAL := $(if $(wildcard /opt/wheels),--find-links /opt/wheels) \
	$(if $(wildcard /etc/xdg/pip/constraints.txt),--constraint /etc/xdg/pip/constraints.txt)
# $(call tool-venv,DIR,REQUIREMENT)
define tool-venv
test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
$(1)/bin/python -m pip --disable-pip-version-check -q install "uv==0.13.9" "$(TORCH)"
$(1)/bin/uv pip install -q --python $(1)/bin/python $(UV_LOCAL) "$(2)" "$(TORCH)"
touch $(1)/.installed
endef

# Open WebUI (tests/clients/openwebui) and GuideLLM (tests/clients/test_guidellm.py, make loadtest).
OPENWEBUI_VENV := .venv-openwebui
OPENWEBUI      := open-webui==0.12.4
GUIDELLM_VENV  := .venv-guidellm
GUIDELLM_PKG   ?= guidellm==0.8.1
$(OPENWEBUI_VENV)/.installed: Makefile
	$(call tool-venv,$(OPENWEBUI_VENV),$(OPENWEBUI))

$(GUIDELLM_VENV)/.installed: Makefile
	$(call tool-venv,$(GUIDELLM_VENV),$(GUIDELLM_PKG))

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test $(JS_TESTS)/node_modules/.installed $(OPENWEBUI_VENV)/.installed \
	$(GUIDELLM_VENV)/.installed

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

# Where a decode step's time goes at 1 and 32 sequences, on the real gemma3:270m (bench/profile.py).
profile: $(VENV)/.installed
	$(PY) -m bench.profile $(PROFILE_ARGS)

# GuideLLM's concurrency sweep against /v1 (bench/guidellm.py); LOADTEST_URL: a running server.
# `make loadtest LOADTEST_ARGS="--streams 1,8 --output-tokens 32"`; report in bench/out/guidellm/.
loadtest: $(VENV)/.installed $(GUIDELLM_VENV)/.installed
	$(PY) -m bench.guidellm $(LOADTEST_ARGS)

# The wheels a lent GPU machine lacks (Python 3.12 there), for the device tool to carry in .whl/.
GPU_WHEELS := gguf==0.19.0 xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2 pydantic==2.14.4 \
	pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 starlette==1.10.0 \
	cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
GPU_PLATFORMS := $(foreach n,2_17 2_27 2_28 2_34,--platform manylinux_$(n)_x86_64) --platform manylinux2014_x86_64
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)

# On the GPU machine (device tool: carry .whl, command `make gpu-check`): engine tests on CUDA + bench.
gpu-check:
	bash bench/gpu_check.sh

# Images (docker/build.py): the CPU one offline from a debootstrapped Debian and a wheelhouse of this
# venv's versions; the CUDA one from PyPI and PyTorch's CUDA index. IMAGE_ARGS="--tag ... --base ...".
image-cpu: install
	$(PY) docker/build.py --target cpu $(IMAGE_ARGS)

image: install
	$(PY) docker/build.py --target cuda $(IMAGE_ARGS)

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
	rm -rf $(VENV) $(OPENWEBUI_VENV) $(GUIDELLM_VENV) .pytest_cache build *.egg-info
