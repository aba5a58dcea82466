#!/usr/bin/env bash
# Installs everything the test suite needs into ./.venv, from nothing, and runs every test.
# Used as is by CI (.ci/run). Needs Python 3.10+ and the fixtures in ../shared/fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv .venv
PY=.venv/bin/python
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q torch==2.13.0                      # the CPU build; nothing below may replace it
"$PY" -m pip install -q -e '.[torch,tf-cpu,jax,export,train,docs,dev]'
if [ -x ../shared/tools/install-timm.sh ]; then bash ../shared/tools/install-timm.sh "$PY"; fi
# Fashion-MNIST's test set, for the test that reproduces the bundled model's accuracy (skipped without it)
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    timeout 120 apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || { timeout 120 apt-get update -qq >/dev/null 2>&1 && timeout 120 apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
        || echo "note: dataset-fashion-mnist could not be installed; its test will be skipped"
fi
"$PY" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
"$PY" -m pytest -q -n 2 tests
