"""The set-up scripts and the test run's own machinery: clear failures on a bare machine, a quiet end under xdist."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fake_python(tmp_path: Path, venv_works: bool) -> Path:
    """A python3 like Debian's without python3-venv: real for `-c`, failing `-m venv` and `-m virtualenv`."""
    fake = tmp_path / "python3"
    fake.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        if [ "$1" = -m ] && {{ [ "$2" = venv ] || [ "$2" = virtualenv ]; }}; then
            {'exec ' + sys.executable + ' "$@"' if venv_works else 'echo "ensurepip is not available" >&2; exit 1'}
        fi
        exec {sys.executable} "$@"
        """))
    fake.chmod(0o755)
    return fake


def test_setup_without_venv_says_which_package_to_install(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = dict(os.environ, PYTHON=str(_fake_python(tmp_path, venv_works=False)), VENV=str(venv))
    run = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "sudo apt-get install python3-venv" in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert not venv.exists()  # no half-made environment left behind for the next attempt


def test_setup_refuses_an_old_python_before_installing_anything(tmp_path: Path) -> None:
    old = tmp_path / "python3"
    old.write_text('#!/usr/bin/env bash\nif [ "$1" = -V ]; then echo "Python 3.8.10"; exit 0; fi\nexit 1\n')
    old.chmod(0o755)
    env = dict(os.environ, PYTHON=str(old), VENV=str(tmp_path / "venv"))
    run = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "Python 3.8.10 is too old" in run.stderr, run.stderr
    assert not (tmp_path / "venv").exists()


def test_xdist_worker_ends_without_a_slow_collection() -> None:
    # After a worker reports "finished", execnet sends SIGINT if it is still busy 5 s later; pytest's final
    # gc.collect() must then be quick however large the heap (the suite's is ~1 M objects).
    code = textwrap.dedent("""
        import gc, sys, time, types
        sys.path.insert(0, sys.argv[1])
        import conftest
        heap = [[i] for i in range(1_000_000)]
        def collect():
            start = time.perf_counter(); gc.collect(); return time.perf_counter() - start
        before = min(collect() for _ in range(2))
        conftest.pytest_sessionfinish(types.SimpleNamespace(config=types.SimpleNamespace(workerinput={})))
        print(before, collect())
        """)
    run = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    before, after = map(float, run.stdout.split())
    assert after < before / 10, (before, after)


def test_no_test_skips_because_one_of_our_modules_fails_to_import() -> None:
    """Only third-party modules may be `importorskip`'ed: a broken module of ours must fail its tests, not hide
    them as skips."""
    import re

    ours = re.compile(r"""importorskip\(\s*["']efficientformer""")
    guarded = re.compile(r"""except ImportError[^\n]*\n[^\n]*pytest\.skip""")
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: importorskip of our own module" for _ in ours.finditer(text)]
        offenders += [f"{path.name}: an ImportError turned into a skip" for _ in guarded.finditer(text)]
    assert not offenders, offenders
