"""The package itself: import without backends, one clear error per missing extra, the command line."""

from __future__ import annotations

import subprocess
import sys

from efficientformer.cli import COMMANDS, main

BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorflow', 'keras', 'jax'):
            raise ImportError(f'No module named {name!r} (blocked for the test)')
sys.meta_path.insert(0, Block())
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=60)


def test_core_import_needs_no_backend():
    result = run_python(
        "import efficientformer, sys\n"
        "c = efficientformer.EfficientFormerConfig.from_preset('l1')\n"
        "p = efficientformer.EfficientFormerImageProcessor()\n"
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "print(c.num_labels, p.crop_size)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1000")


def test_missing_backend_names_the_extra():
    for name, extra in (("EfficientFormerModel", "torch"), ("TFEfficientFormerModel", "tf")):
        result = run_python(f"import efficientformer\nefficientformer.{name}\n")
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert "MissingDependencyError" in last and f"pip install -e '.[{extra}]'" in last


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_module_entry_point_and_info():
    result = subprocess.run([sys.executable, "-m", "efficientformer", "info"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert "efficientformer 0." in result.stdout and "snap-research/efficientformer-l7-300" in result.stdout
    assert "12,289,928" in result.stdout
