#!/bin/sh
# Corral's dependencies into the venv /opt/corral, from the build context's wheels/ (bind-mounted
# at /wheels, so no wheel lands in a layer) and any wheels a builder stage made (/extra).
# OFFLINE=1: exactly the listed wheels, nothing resolved; else the pins resolved from the index.
set -eu
python3 -m venv /opt/corral
pip="/opt/corral/bin/pip install --no-cache-dir --disable-pip-version-check"
if [ "${OFFLINE:-1}" = 1 ]; then
  $pip --no-index --no-deps -r /wheels/requirements.txt
else
  $pip --extra-index-url "$TORCH_INDEX" -r /wheels/requirements.txt
fi
for wheel in /extra/*.whl; do
  if [ -e "$wheel" ]; then $pip --no-deps "$wheel"; fi
done
