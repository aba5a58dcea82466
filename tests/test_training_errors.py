"""Training settings and resume files that cannot work fail in one sentence, before any step (issue 13)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from efficientformer.errors import CheckpointError, ConfigError
from efficientformer.training.settings import TrainConfig
from efficientformer.training.trainer import train

TINY = {"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 24, 32], "num_attention_heads": 2, "key_dim": 8}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = {"data": str(data), "output_dir": str(out), "image_size": 32, "model": "l1", "arch": TINY, "epochs": 1,
                "batch_size": 4, "workers": 0, "progress": False, "crop_scale": None, "seed": 0}
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("overrides, message", [
    ({"lr": float("nan")}, r"lr=nan is invalid \(--lr\): it must be a finite number above 0"),
    ({"lr": float("inf")}, r"lr=inf is invalid \(--lr\)"),
    ({"lr": -1e-3}, r"lr=-0.001 is invalid \(--lr\)"),
    ({"lr": 0.0}, r"lr=0.0 is invalid"),
    ({"min_lr": float("nan")}, r"min_lr=nan is invalid \(--min-lr\)"),
    ({"weight_decay": -0.1}, r"weight_decay=-0.1 is invalid \(--weight-decay\): it must be a finite number in \[0"),
    ({"warmup_epochs": float("inf")}, r"warmup_epochs=inf is invalid"),
    ({"hflip": 1.5}, r"hflip=1.5 is invalid \(--hflip\): it must be a finite number in \[0, 1\]"),
    ({"mixup": float("nan")}, r"mixup=nan is invalid"),
    ({"distill_tau": 0.0}, r"distill_tau=0.0 is invalid \(--distill-tau\): it must be a finite number above 0"),
    ({"betas": (0.9, 1.5)}, r"betas=\(0.9, 1.5\) is invalid \(--betas\): give two numbers in \[0, 1\)"),
    ({"clip_grad": float("nan")}, r"clip_grad=nan is invalid"),
    ({"crop_scale": (0.9, 0.1)}, r"crop_scale=\(0.9, 0.1\) is invalid"),
    ({"std": [0.2, 0.0, 0.2]}, r"std=\[0.2, 0.0, 0.2\] is invalid \(--std\): .* each above 0"),
    ({"epochs": 1.5}, r"epochs=1.5 is invalid \(--epochs\): it must be a whole number >= 1"),
    ({"workers": -1}, r"workers=-1 is invalid"),
])
def test_impossible_numbers_fail_before_training_in_one_sentence(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        train(_config(tmp_path / "no-data-needed", tmp_path / "out", **overrides))
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_train_command_with_lr_nan_exits_with_one_line(tmp_path, capsys):
    from efficientformer.cli import main

    code = main(["train", str(tmp_path), "--output", str(tmp_path / "out"), "--lr", "nan", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "lr=nan is invalid (--lr)" in err


def _last_pt(images: Path, out: Path) -> Path:
    train(_config(images, out, stop_after_steps=1))
    assert (out / "last.pt").is_file()
    return out / "last.pt"


def test_resuming_with_another_architecture_names_the_difference(images, tmp_path):
    last = _last_pt(images, tmp_path / "run")
    other = dict(TINY, hidden_sizes=[8, 16, 24, 40])
    with pytest.raises(CheckpointError, match=rf"{last} was written for another model \(.* has shape .* there but "
                                              r".* here\); resume with the settings it was trained with, start a "
                                              r"new --output, or drop --resume") as info:
        train(_config(images, tmp_path / "run", arch=other, resume="auto"))  # was a RuntimeError listing keys
    assert "\n" not in str(info.value)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_resuming_from_an_unsafe_file_gives_one_sentence_without_torchs_advice(images, tmp_path):
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "global_step": 1, "x": _RunsCode()}, unsafe)
    with pytest.raises(CheckpointError, match=r"unsafe.pt contains a pickled Python object \(posix.getcwd\) and is "
                                              "not read") as info:
        train(_config(images, tmp_path / "run", resume=str(unsafe)))
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_eval_reports_each_unreadable_image_and_scores_the_rest(images, tmp_path, capsys):
    """A decompression bomb or a truncated file in the data is named on stderr and left out; the other images
    are still evaluated and the exit code says something was skipped (issue 13)."""
    import json
    import shutil

    from conftest import bomb_png, tiny_config

    from efficientformer import EfficientFormerForImageClassification
    from efficientformer.cli import main

    data = tmp_path / "data"
    shutil.copytree(images, data)
    (data / "a" / "bomb.png").write_bytes(bomb_png(30_000, 30_000))  # 900 M pixels claimed by a few bytes
    (data / "b" / "cut.png").write_bytes((data / "b" / "0.png").read_bytes()[:40])
    config = tiny_config("base", num_labels=2, id2label={0: "a", 1: "b"}, image_size=32)
    model = tmp_path / "model"
    EfficientFormerForImageClassification(config).save_pretrained(model)
    capsys.readouterr()
    code = main(["eval", str(data), "--model", str(model), "--device", "cpu", "--batch-size", "4",
                 "--confusion", "", "--json", str(tmp_path / "eval.json")])
    printed = capsys.readouterr()
    assert code == 1
    assert "bomb.png" in printed.err and "cut.png" in printed.err
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["images"] == 8 and figures["skipped"] == 2 and np.array(figures["confusion"]).sum() == 8
