#!/usr/bin/env bash
# From a fresh machine with only python3 (3.10+) to a working install, then the main job.
#
# Everything goes into ./.venv: nothing is installed into the system Python (so Debian's
# "externally-managed-environment", PEP 668, does not apply) nor into a pyenv Python.
# Then it runs `efficientformer info` and `efficientformer predict` (the bundled model on its sample images).
#
#   bash scripts/setup.sh
#
# Settings (environment variables):
#   TORCH_SPEC       the torch to install (default torch==2.13.0, the build this project is tested with).
#   TORCH_INDEX_URL  where torch comes from (default: pip's own index). PyPI's Linux x86-64 torch is the CUDA 12
#                    build; https://download.pytorch.org/whl/cpu gives the CPU build, .../whl/cu128 CUDA 12.8.
#                    A torch already in the environment that satisfies TORCH_SPEC is kept as it is.
#   EXTRAS           the package extras (default torch; scripts/test.sh asks for all of them).
#   PYTHON           the interpreter that creates .venv (default python3).
#   VENV             where the environment goes (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-torch}

fail() { echo "setup: $*" >&2; exit 2; }

command -v "$PYTHON" >/dev/null || fail "$PYTHON was not found: install Python 3.10 or newer, or set PYTHON=/path/to/python3."
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "$("$PYTHON" -V 2>&1) is too old: efficientformer needs Python 3.10 or newer (set PYTHON=python3.11, for example)."

if [ ! -x "$VENV/bin/python" ]; then
    # Debian and Ubuntu ship venv without ensurepip (package python3-venv); virtualenv is the other way in.
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"  # a failed venv leaves a folder without pip behind
        if "$PYTHON" -m virtualenv --version >/dev/null 2>&1; then
            "$PYTHON" -m virtualenv -q "$VENV"
        else
            fail "$PYTHON cannot create a virtual environment: install python3-venv (sudo apt-get install python3-venv) and run this again."
        fi
    fi
    # the pip a venv starts with is the interpreter's bundled one, often years old
    "$VENV/bin/python" -m pip install -q --upgrade pip || echo "setup: pip could not be upgraded; going on with the one there"
fi
PY=$VENV/bin/python

# torch first and on its own, so that the package's `torch>=2.1` is already met and pip never swaps it
# for another build while resolving the extras.
echo "setup: installing $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL} into $VENV"
"$PY" -m pip install -q "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
torch_version() { "$PY" -c "import importlib.metadata as m; print(m.version('torch'))"; }
TORCH_VERSION=$(torch_version)
echo "setup: installing efficientformer[$EXTRAS] (editable, from this checkout) into $VENV"
"$PY" -m pip install -q -e ".[$EXTRAS]"
[ "$(torch_version)" = "$TORCH_VERSION" ] || fail "installing the extras replaced torch $TORCH_VERSION by $(torch_version): pin what pulled it in."

"$VENV/bin/efficientformer" info
"$VENV/bin/efficientformer" predict
echo
echo "setup: done. Activate the environment with: source $VENV/bin/activate"
