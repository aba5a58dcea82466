"""Several processes under torchrun (benchmarks/scaling.py's CPU mode, gloo): bulk prediction writes every image
exactly once, the ranks end with bitwise the same weights, a run SIGKILLed mid-way and resumed ends with the
weights of an uninterrupted one; and the pieces of the trainer the script relies on (synthetic data, the
replica check, a rerun after a stop)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from efficientformer.errors import InputError  # noqa: E402
from efficientformer.training import data as D  # noqa: E402
from efficientformer.training.trainer import TrainConfig, train  # noqa: E402

from test_training import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = "--depths 1,1,1,1 --hidden-sizes 8,16,24,32 --num-attention-heads 2 --key-dim 8"


def _scaling():
    spec = importlib.util.spec_from_file_location("scaling", ROOT / "benchmarks" / "scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu_args(tmp_path, *more: str) -> list[str]:
    return ["--device", "cpu", "--backend", "gloo", "--image-size", "32", "--batch-size", "4", "--log-every", "1",
            "--workers", "0", "--classes", "3", "--train-args", TINY_FLAGS, "--work", str(tmp_path / "work"),
            "--write", str(tmp_path / "results.json"), *more]


def test_synthetic_source_is_the_same_everywhere_and_checked():
    spec = D.DataSpec(size=32)
    a, b = D.load_dataset("synthetic:3:10", spec=spec), D.load_dataset("synthetic:3:10", spec=spec)
    assert a.images.shape == (10, 3, 32, 32) and a.images.dtype == torch.uint8 and torch.equal(a.images, b.images)
    assert a.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0] and len(a.class_names) == 3
    large = D.load_dataset(f"synthetic:3:{D.SYNTHETIC_DISTINCT + 5}", spec=spec)  # the memory of 1024 images
    images, labels = large.get_batch(torch.tensor([0, D.SYNTHETIC_DISTINCT, D.SYNTHETIC_DISTINCT + 4]))
    assert len(large) == D.SYNTHETIC_DISTINCT + 5 and large.images.shape[0] == D.SYNTHETIC_DISTINCT
    assert torch.equal(images[0], images[1]) and torch.equal(images[0], a.images[0])
    assert labels.tolist() == [0, D.SYNTHETIC_DISTINCT % 3, (D.SYNTHETIC_DISTINCT + 4) % 3]
    for bad in ("synthetic:1:10", "synthetic:3", "synthetic:3:x", "synthetic:3:0"):
        with pytest.raises(InputError, match="synthetic:CLASSES:COUNT"):
            D.load_dataset(bad, spec=spec)


def test_rerun_after_a_stop_takes_no_step_past_it_and_the_summary_says_so(tmp_path):
    settings = dict(data="synthetic:3:24", output_dir=str(tmp_path / "run"), image_size=32, model="l1", arch=TINY,
                    batch_size=4, workers=0, log_every=1, progress=False, device="cpu", stop_after_steps=7)
    first = train(TrainConfig(**settings))
    again = train(TrainConfig(**settings, resume="auto"))  # the same command again, e.g. after a kill at the end
    assert first.global_step == again.global_step == 7 and again.stopped_early
    a, b = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_early"] and summary["model_dir"] is None and summary["global_step"] == 7
    assert summary["images_per_s"] is None  # the rerun timed no window: no figure rather than a wrong one
    last_record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last_record["step"] == 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _replica_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    from efficientformer.training.distributed import cleanup, init_distributed, replicas_identical

    ctx = init_distributed("cpu")
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    same = replicas_identical([layer], ctx)
    if rank == 1:
        with torch.no_grad():  # the last bit of one weight
            layer.bias[0] = torch.nextafter(layer.bias[0], torch.tensor(float("inf")))
    drifted = replicas_identical([layer], ctx)
    if rank == 0:
        Path(out).write_text(json.dumps([same, drifted]))
    cleanup(ctx)


def test_replica_check_sees_one_drifted_bit(tmp_path):
    out = tmp_path / "check.json"
    torch.multiprocessing.spawn(_replica_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    assert json.loads(out.read_text()) == [True, False]


# the script's CPU mode last: its parent imports timm (versions), after which in-process training starts slower
def test_one_and_two_gloo_processes_predict_every_image_once_with_identical_replicas(fixtures_dir, tmp_path):
    results = _scaling().main(_cpu_args(tmp_path, "--gpus", "1", "2", "--steps", "8", "--skip", "jpeg", "resume",
                                        "--predict-model", str(fixtures_dir / "hf-tiny")))
    one, two = results["rows"]
    assert (one["gpus"], two["gpus"]) == (1, 2)
    for row in (one, two):
        assert row["train_synthetic"]["steps"] == 8 and row["train_synthetic"]["images_per_s"] > 0
        assert row["predict"]["images"] == 9 * 4 * 2 and row["predict"]["exactly_once"]
        assert row["predict"]["part_files_left"] == 0
    assert one["train_synthetic"].get("replicas_identical") is None  # one process: nothing to compare
    assert two["train_synthetic"]["replicas_identical"] is True
    assert two["train_synthetic"]["efficiency"] > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["environment"]["NCCL_NVLS_ENABLE"] == "0" and saved["rows"][1]["gpus"] == 2
    assert "| 2 |" in results["markdown"] and "yes" in results["markdown"].splitlines()[-1]


def test_two_gloo_processes_killed_and_resumed_end_with_the_uninterrupted_weights(tmp_path):
    results = _scaling().main(_cpu_args(tmp_path, "--gpus", "2", "--steps", "12", "--save-every", "2",
                                        "--skip", "jpeg", "predict"))
    resume = results["rows"][0]["resume"]
    assert resume["killed"] and resume["killed_at_step"] < 12  # the kill landed mid-run
    assert resume["steps"] == 12 and resume["replicas_identical"] is True
    assert resume["bitwise_equal"] and resume["max_abs_diff"] == 0.0
    assert resume["survivors"] == 0  # torchrun's workers (sessions of their own) died with it
