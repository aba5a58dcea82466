#!/usr/bin/env bash
# Installs timm (the peer of `efficientformer bench --compare timm`, the benchmarks and the parity tests)
# beside the torch already installed, without replacing it.
#
#   bash scripts/install-timm.sh [PYTHON]     (default: .venv/bin/python when there, else python3)
#
# `pip install timm` would resolve timm's torchvision dependency to the newest torchvision, which pins
# another torch (on Linux a multi-GB CUDA build). So torchvision comes in the release made for the installed
# torch (torch 2.X.Y <-> torchvision 0.(X+15).Y), without dependencies, from TORCH_INDEX_URL when set (use the
# index torch came from: a CPU torch needs the CPU torchvision); timm without dependencies; then timm's
# small dependencies (the `bench` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
TIMM_SPEC=${TIMM_SPEC:-timm==1.0.31}

torch_version() { "$PY" -c "import importlib.metadata as m; print(m.version('torch'))"; }
TORCH_VERSION=$(torch_version) || { echo "install-timm: torch is not installed in $PY: run scripts/setup.sh first." >&2; exit 2; }
TORCHVISION_SPEC=${TORCHVISION_SPEC:-$("$PY" -c "
import sys
major, minor, patch = (sys.argv[1].split('+')[0].split('.') + ['0'])[:3]
print(f'torchvision==0.{int(minor) + 15}.{patch}' if major == '2' else 'torchvision')" "$TORCH_VERSION")}

"$PY" -m pip install -q --no-deps "$TORCHVISION_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$PY" -m pip install -q --no-deps "$TIMM_SPEC"
"$PY" -m pip install -q "pyyaml>=5.1" "huggingface_hub>=0.20" "safetensors>=0.4"
[ "$(torch_version)" = "$TORCH_VERSION" ] || { echo "install-timm: torch $TORCH_VERSION was replaced by $(torch_version)." >&2; exit 1; }
if ! "$PY" -c "import timm" 2>/dev/null; then
    echo "install-timm: timm is installed but does not import: $TORCHVISION_SPEC does not load beside torch $TORCH_VERSION" \
         "(a CPU/CUDA build mismatch); set TORCH_INDEX_URL to the index torch came from and run this again." >&2
    exit 1
fi
"$PY" -c "import timm, torch; print('install-timm: timm', timm.__version__, 'beside torch', torch.__version__)"
