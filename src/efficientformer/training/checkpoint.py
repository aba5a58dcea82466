"""Training checkpoints: written atomically, read back to resume a run exactly.

A checkpoint is one `torch.save` file holding the model, optimizer, scheduler, gradient scaler and EMA
states, every random-number generator (Python, numpy, torch CPU and CUDA, the augmentation generators)
and the position in the data (epoch, step inside the epoch, global step). It is written through
`efficientformer.fileio` (a temporary file beside the target, flushed to disk, then renamed over it), so a
run killed at any moment leaves either the previous checkpoint or the new one, never half a file.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import fileio
from ..errors import CheckpointError

LAST = "last.pt"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` all or nothing (`efficientformer.fileio`: temporary file, fsync, `os.replace`;
    the file gets the umask's mode like any other the library writes, not `mkstemp`'s 0600)."""
    fileio.write_bytes(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    fileio.write_text(path, text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path`, atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """The state of Python's, numpy's and torch's (CPU and every CUDA device) generators, as tensors/lists."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state()` returned."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------------------- save/load
def save_checkpoint(path: str | os.PathLike, **state: Any) -> None:
    """Save a training state (any mapping of picklable-safe values) atomically to `path`."""
    atomic_torch_save(state, path)


def load_checkpoint_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values only: `weights_only=True`).

    Raises:
        CheckpointError: the file is missing or is not such a checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; give a file written by `efficientformer train` "
                              "(OUTPUT/last.pt) or the run's output folder.")
    from ..checkpoints.reading import check_archive, load_error

    check_archive(path)  # a zip declaring gigabytes is refused before torch allocates them
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - one sentence, never torch's advice to use weights_only=False
        raise load_error(path, err, "training checkpoint") from None
    if not isinstance(state, dict) or "model" not in state or "global_step" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint of `efficientformer train` (no model/step).")
    return state


def find_resume_path(resume: str | os.PathLike | None, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: `resume` itself, or OUTPUT/last.pt for "auto" (None when absent)."""
    if resume is None or resume == "":
        return None
    if str(resume) == "auto":
        last = Path(output_dir) / LAST
        return last if last.is_file() else None
    return Path(resume)
