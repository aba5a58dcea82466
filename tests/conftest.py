"""Shared test fixtures: the ground-truth folder written by transformers 4.57.6 and timm 1.0.31."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is not beside the repository")
    return FIXTURES


fixtures = fixtures_dir  # alias
