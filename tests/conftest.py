"""Shared test fixtures: the ground-truth folder written by transformers 4.57.6 and timm 1.0.31."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is not beside the repository")
    return FIXTURES


fixtures = fixtures_dir  # alias


def pytest_sessionfinish(session) -> None:
    """On a pytest-xdist worker, do the last full garbage collection before the worker reports back.

    Once the workers have reported "finished", the controller closes their gateways, and execnet gives a worker
    still running 5 s and then sends it SIGINT. pytest's own last `gc.collect()` comes after that report, and
    with TensorFlow, Keras, JAX and torch loaded it walks about a million objects: seconds on 2 busy cores. The SIGINT then lands in the only Python code running
    during a collection, JAX's XLA gc callback, and the run ends with a KeyboardInterrupt traceback. So collect
    here, while the controller still waits without a deadline, and freeze what is left: later collections
    only walk what is allocated after this and take milliseconds.
    """
    if hasattr(session.config, "workerinput"):
        gc.collect()
        gc.freeze()
