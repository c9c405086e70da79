#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the PyPI sdist of llama-cpp-python (the only route to
# llama.cpp's sources here: PyPI is reachable, GitHub is not), for `python -m bench --llama-server`.
# Prints the binary's path as the last line of stdout. Idempotent: an existing binary is reused.
#
#   bench/build_llama_server.sh            # ~/.cache/corral-bench/llama.cpp/bin/llama-server
#   JOBS=4 NICE=0 bench/build_llama_server.sh
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="${CORRAL_BENCH_CACHE:-$HOME/.cache/corral-bench}/llama.cpp"
JOBS="${JOBS:-2}"
NICE="${NICE:-19}"
PY="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"
[ -x "$PY" ] || PY=python3

BIN="$ROOT/bin/llama-server"
if [ -x "$BIN" ] && [ -z "${FORCE:-}" ]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$ROOT/src"
SDIST_DIR="$ROOT/src/llama_cpp_python-$VERSION"
if [ ! -d "$SDIST_DIR/vendor/llama.cpp" ]; then
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary llama-cpp-python \
    -d "$ROOT/src" "llama-cpp-python==$VERSION" >&2
  tar -xzf "$ROOT/src/llama_cpp_python-$VERSION.tar.gz" -C "$ROOT/src"
fi

BUILD="$ROOT/build-$VERSION"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$SDIST_DIR/vendor/llama.cpp" -B "$BUILD" "${GEN[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DBUILD_SHARED_LIBS=OFF >&2
nice -n "$NICE" cmake --build "$BUILD" --target llama-server -j "$JOBS" >&2

mkdir -p "$ROOT/bin"
cp "$BUILD/bin/llama-server" "$BIN"
"$BIN" --version >&2 || true
echo "$BIN"
