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
"$PY" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
"$PY" -m pytest -q -n 2 tests
