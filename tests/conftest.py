"""The one base of the tests: the ground-truth fixtures (written by transformers 4.57.6 and timm 1.0.31) and
how to read them, the tiny configurations, the weight randomizer and the parity check every backend's tests
compare with.

Test modules import the plain helpers (`from conftest import tiny_config, randomize, assert_close`) where they
need them outside a test (module-level fixtures, parametrize lists); pytest puts this folder on `sys.path`.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
# the transformers folders with an expected.npz (pixel_values and every output of both classes)
HF_FOLDERS = ("hf-tiny", "hf-small", "hf-tiny-256")

# -- tiny configurations: a few thousand weights, every block kind, run in milliseconds on a CPU
_TINY_BASE = dict(hidden_sizes=[8, 16, 24, 32], dim=32, key_dim=8, num_attention_heads=2, attention_ratio=2)
TINY = {
    # four stages, two Meta3D blocks in the last: the model and feature tests
    "base": dict(_TINY_BASE, depths=[1, 1, 2, 3], num_meta3d_blocks=2, mlp_expansion_ratio=2, num_labels=3),
    # one block per stage but the last, at 64 pixels (a 2x2 token grid): the export tests
    "export": dict(_TINY_BASE, depths=[1, 1, 1, 2], num_labels=3, image_size=64, resolution=2),
    # uneven depths, five classes, at 64 pixels: the fuse/optimize tests
    "optimize": dict(_TINY_BASE, depths=[1, 2, 1, 3], num_meta3d_blocks=2, num_labels=5, image_size=64,
                     resolution=2),
    # the optimize shape at widths the GPU kernels tile (multiples of 16): the GPU tests
    "gpu": dict(_TINY_BASE, depths=[1, 2, 1, 3], hidden_sizes=[48, 96, 112, 128], dim=128, key_dim=16,
                num_meta3d_blocks=2, num_labels=5, image_size=64, resolution=2),
    # one block per stage, one Meta3D: the smallest model that still has every part
    "minimal": dict(_TINY_BASE, depths=[1, 1, 1, 1], num_meta3d_blocks=1),
    # two stages sharing a width (16, 16), so a missing downsample still fits: the Keras weight tests
    "keras": dict(_TINY_BASE, depths=[1, 1, 2, 2], hidden_sizes=[8, 16, 16, 24], dim=24, mlp_expansion_ratio=2,
                  num_labels=3),
}


# -- tiny EfficientFormerV2 configurations (the V2 fixture's shape and smaller), every block kind
TINY_V2 = {
    # the timm-v2-tiny fixture's architecture: an attention block at the end of stages 3 and 4
    "fixture": dict(depths=[1, 1, 2, 2], hidden_sizes=[16, 24, 32, 48], num_attention_blocks=1,
                    mlp_ratios=[4, 4, [4, 3], [3, 4]], num_labels=5),
    # narrow attention (2 heads of 8) and two attention blocks per stage: the feature and input tests
    "base": dict(depths=[1, 1, 2, 2], hidden_sizes=[8, 16, 24, 32], num_attention_blocks=2, mlp_ratios=2,
                 key_dim=8, num_attention_heads=2, attention_ratio=2, downsample_key_dim=8,
                 downsample_num_attention_heads=2, downsample_attention_ratio=2, num_labels=3),
}


def tiny_config_v2(kind: str = "base", **overrides: Any):
    """A tiny `EfficientFormerV2Config` (see `TINY_V2`); `overrides` replace or add fields."""
    from efficientformer.config_v2 import EfficientFormerV2Config

    return EfficientFormerV2Config(**{**TINY_V2[kind], **overrides})


def tiny_settings(kind: str = "base", **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of a tiny `EfficientFormerConfig` (`TINY[kind]` updated by `overrides`)."""
    return {**TINY[kind], **overrides}


def tiny_config(kind: str = "base", **overrides: Any):
    """A tiny `EfficientFormerConfig` (see `TINY`); `overrides` replace or add fields."""
    from efficientformer.config import EfficientFormerConfig

    return EfficientFormerConfig(**tiny_settings(kind, **overrides))


def randomize(model, seed: int = 0):
    """Random values in every floating parameter and buffer of a PyTorch model (in place; returns it), so that a
    wrong mapping or a stale state shows: N(0, 0.25) everywhere, U(0.5, 1.5) for running variances (positive,
    so normalization stays defined). Seeded without touching torch's global generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=gen) + 0.5 if "running_var" in name \
                    else torch.randn(tensor.shape, generator=gen) * 0.5
                tensor.copy_(values)
    return model


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height pixels with a few bytes of data (how a decompression bomb opens)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# -- parity: torch and Keras outputs against the fixtures' expected arrays
def as_numpy(value: Any) -> np.ndarray:
    """A torch tensor, TensorFlow/Keras tensor, JAX array or numpy array as a float numpy array."""
    if hasattr(value, "detach"):  # torch
        value = value.detach().float().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # TensorFlow eager tensors
        value = value.numpy()
    return np.asarray(value)


def assert_close(actual: Any, expected: Any, tol: float = 1e-5) -> float:
    """Assert that the largest absolute difference is below `tol`; returns it (for tests that report it)."""
    diff = float(np.abs(as_numpy(actual) - as_numpy(expected)).max())
    assert diff < tol, f"max difference {diff} exceeds {tol}"
    return diff


def assert_backbone_matches(out: Any, expected: Any, prefix: str, tol: float = 1e-5) -> None:
    """The shared parity check of a backbone's outputs (either backend) against a fixture's expected arrays:
    `{prefix}.last_hidden_state`, every `{prefix}.hidden_states.i` (the same count) and `{prefix}.attentions.i`.
    `expected` is an expected.npz (as `np.load` returns it) or a dict of its arrays."""
    keys = list(getattr(expected, "files", None) or expected)
    assert_close(out.last_hidden_state, expected[f"{prefix}.last_hidden_state"], tol)
    n_states = len([k for k in keys if k.startswith(f"{prefix}.hidden_states.")])
    assert len(out.hidden_states) == n_states
    for i, state in enumerate(out.hidden_states):
        assert_close(state, expected[f"{prefix}.hidden_states.{i}"], tol)
    for i, attention in enumerate(out.attentions):
        assert_close(attention, expected[f"{prefix}.attentions.{i}"], tol)


def load_expected(folder: str | Path) -> dict[str, np.ndarray]:
    """The expected.npz of a fixture folder (a name under the fixtures or a path) as a dict of arrays."""
    path = Path(folder) if Path(folder).is_absolute() else FIXTURES / folder
    with np.load(path / "expected.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is not beside the repository")
    return FIXTURES


fixtures = fixtures_dir  # alias


@pytest.fixture(scope="session")
def expected(fixtures_dir):
    """`expected(folder)`: the expected arrays of a fixture folder (read once per folder)."""
    cache: dict[str, dict[str, np.ndarray]] = {}

    def read(folder: str) -> dict[str, np.ndarray]:
        if folder not in cache:
            cache[folder] = load_expected(fixtures_dir / folder)
        return cache[folder]

    return read


@pytest.fixture(scope="session")
def architectures(fixtures_dir) -> dict[str, Any]:
    """architectures.json: per preset, the state-dict shapes of every layout and the parameter counts."""
    return json.loads((fixtures_dir / "architectures.json").read_text())


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
