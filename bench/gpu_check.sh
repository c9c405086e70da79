#!/usr/bin/env bash
# `make gpu-check`, run on a GPU machine lent by the device tool (torch, transformers, peft there;
# no starlette/gguf/xgrammar): install the carried wheels (`make gpu-wheels` fetched them into
# .whl/), run the engine and backend tests on CUDA, then the engine bench at 1/16/64 clients in
# bf16. Sized to finish well inside 10 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 CORRAL_TEST_DEVICE=cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
# The engine and backend tests that need no model file (the slow ones load GGUF from PyPI packages).
timeout 300 python3 -m pytest tests/scheduler tests/backends -m "not slow" -q -p no:cacheprovider \
  -o addopts="--import-mode=importlib -ra" 2>&1 | tee "$OUT/tests.txt"
tests=${PIPESTATUS[0]}
timeout 240 python3 -m bench.engine_bench --device cuda --dtype bfloat16 --clients 1,16,64 2>&1 | tee "$OUT/bench.txt"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, bench exit $bench"
exit $(( tests || bench ))
