#!/usr/bin/env bash
# Installs everything the test suite needs into ./.venv, from nothing, and runs every test.
# Used as is by CI (.ci/run). Needs python3 (3.10+) and the fixtures in ../shared/fixtures.
# The environment is scripts/setup.sh's (same settings: TORCH_SPEC, TORCH_INDEX_URL, PYTHON, VENV) with every extra.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=torch,tf-cpu,jax,export,train,datasets,transformers,docs,bench,dev bash scripts/setup.sh
PY=${VENV:-.venv}/bin/python
TORCH_VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('torch'))")
# timm beside that torch (the machine's own installer when the shared tools provide one)
if [ -x ../shared/tools/install-timm.sh ]; then bash ../shared/tools/install-timm.sh "$PY"; else bash scripts/install-timm.sh "$PY"; fi
# transformers 4.57 (its own EfficientFormer classes) beside the 5.x of the environment, for the test of the task
# guide on both: into a folder of the environment that one test puts first on a subprocess's path (no deps: torch,
# numpy and the rest are the environment's; huggingface_hub 0.x and tokenizers 0.22 are what 4.57 needs, and
# datasets 3.6, which 4.57's Trainer imports when datasets is installed: the environment's 5.x needs hub 1.x)
"$PY" -m pip install -q --no-deps --upgrade --target "${VENV:-.venv}/transformers-4.57" \
    transformers==4.57.6 huggingface_hub==0.36.0 tokenizers==0.22.1 datasets==3.6.0
# Fashion-MNIST's test set, for the test that reproduces the bundled model's accuracy (skipped without it)
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    timeout 120 apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || { timeout 120 apt-get update -qq >/dev/null 2>&1 && timeout 120 apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
        || echo "note: dataset-fashion-mnist could not be installed; its test will be skipped"
fi
"$PY" -c "import sys, torch; assert torch.__version__ == sys.argv[1], (torch.__version__, sys.argv[1])" "$TORCH_VERSION"
"$PY" -m pytest -q -n 2 tests
