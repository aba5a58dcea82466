"""Distributed training: two CPU processes (gloo) hold identical weights after training together."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_training import TINY, _write_images  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from efficientformer.training.trainer import TrainConfig, train

    result = train(TrainConfig(data=data, output_dir=out, image_size=32, model="l1", arch=TINY, epochs=2,
                               batch_size=4, lr=3e-3, warmup_epochs=0.25, workers=0, log_every=1, progress=False,
                               device="cpu", drop_path_rate=0.1, randaugment_ops=1))
    torch.save({k: v.detach().clone() for k, v in result.model.state_dict().items()},
               Path(out) / f"rank{rank}.pt")


def test_two_gloo_processes_hold_identical_weights(tmp_path):
    data = _write_images(tmp_path / "images", per_class=8)
    out = tmp_path / "run"
    out.mkdir()
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(data), str(out)), nprocs=2, join=True)
    a, b = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # the run really trained: 24 images, 2 processes x 4 per step -> 3 steps per epoch, 2 epochs
    summary = (out / "summary.json").read_text()
    assert '"global_step": 6' in summary and (out / "model" / "model.safetensors").is_file()
