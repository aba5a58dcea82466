"""Saving a model is all or nothing: kill -9 at any moment leaves the old model or the new one, never a mix;
a failed write keeps the model that was there; no stale weights survive a new save."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from efficientformer.checkpoints.loading import load_checkpoint  # noqa: E402
from conftest import tiny_config  # noqa: E402
from efficientformer.cli import main  # noqa: E402
from efficientformer.models.pytorch import EfficientFormerForImageClassification  # noqa: E402

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks a writer process")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _model(prefix: str, seed: int) -> EfficientFormerForImageClassification:
    config = tiny_config("minimal", id2label={i: f"{prefix}{i}" for i in range(3)})
    torch.manual_seed(seed)
    return EfficientFormerForImageClassification(config).eval()


@pytest.fixture(scope="module")
def models():
    """Two models a loader can tell apart by labels and by weights."""
    return {"a": _model("a", 0), "b": _model("b", 1)}


def _which(folder, models) -> str:
    """Which of the models the folder holds, checked file by file: the labels, the one weights file and
    the loaded tensors must all name the same model."""
    names = sorted(os.listdir(folder))
    weights = [name for name in names if name in WEIGHT_FILES]
    assert len(weights) == 1, f"expected exactly one weights file, found {names}"
    assert "preprocessor_config.json" in names, names
    labels = json.loads((folder / "config.json").read_text())["id2label"]
    name = labels["0"][0]
    checkpoint = load_checkpoint(folder)
    expected = models[name].state_dict()
    assert checkpoint.config.id2label == models[name].config.id2label
    assert torch.equal(checkpoint.state_dict["classifier.weight"], expected["classifier.weight"]), \
        f"{name}'s labels on the other model's weights"
    return name


def _kill_loop(folder, models, write, kills: int) -> set[str]:
    """Fork a writer that runs `write(i)` for i = start, start + 1, ... forever and reports each finished
    write; after one or two finished writes, kill -9 it at a random moment of the next one, `kills` times,
    checking the folder after each kill. Returns the models seen."""
    rng = random.Random(0)
    began = time.perf_counter()
    write(0)
    duration = time.perf_counter() - began  # one write, measured here: the kills spread over the next one
    seen = set()
    for _ in range(kills):
        start, wait = rng.randrange(2), rng.randint(1, 2)
        done, report = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer: never returns into pytest
            code = 0
            try:
                os.close(done)
                i = start
                while True:
                    write(i)
                    os.write(report, b"x")
                    i += 1
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(report)
        for _ in range(wait):
            assert os.read(done, 1) == b"x", "the writer failed"
        time.sleep(rng.uniform(0.0, 1.2 * duration))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(done)
        seen.add(_which(folder, models))
    return seen


@needs_fork
def test_kill_during_save_pretrained_leaves_the_old_or_the_new_model(tmp_path, models):
    folder = tmp_path / "model"
    models["a"].save_pretrained(folder)

    def write(i: int) -> None:  # a (safetensors) and b (.bin) in turn: a stale file would show
        if i % 2:
            models["b"].save_pretrained(folder, safe_serialization=False)
        else:
            models["a"].save_pretrained(folder)

    seen = _kill_loop(folder, models, write, kills=14)
    assert seen == {"a", "b"}  # kills after an a-write and after a b-write, each landing in the next write
    models["a"].save_pretrained(folder)  # the next write cleans up what the killed writers left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@needs_fork
def test_kill_during_convert_leaves_the_old_or_the_new_model(tmp_path, models):
    for name, model in models.items():
        model.save_pretrained(tmp_path / f"src-{name}", safe_serialization=name == "a")
    folder = tmp_path / "dst"
    assert main(["convert", str(tmp_path / "src-a"), str(folder), "--no-verify"]) == 0

    def write(i: int) -> None:
        name = "ab"[i % 2]
        main(["convert", str(tmp_path / f"src-{name}"), str(folder), "--no-verify", "--overwrite"])

    seen = _kill_loop(folder, models, write, kills=10)
    assert seen == {"a", "b"}


def test_a_read_only_weights_file_keeps_the_old_model_and_says_why_in_one_sentence(tmp_path, models, capsys):
    folder = tmp_path / "model"
    models["a"].save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    os.chmod(folder / "model.safetensors", 0o444)
    with pytest.raises(OSError, match=r"model.safetensors is read-only, so it is not replaced; make it writable"):
        models["b"].save_pretrained(folder)
    code = main(["convert", str(tmp_path / "model"), str(tmp_path / "model"), "--overwrite"])
    assert code == 2
    assert main(["convert", str(folder), str(tmp_path / "copy"), "--no-verify"]) == 0
    assert main(["convert", str(tmp_path / "copy"), str(folder), "--overwrite", "--no-verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "read-only, so it is not replaced; make it writable" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert _which(folder, models) == "a"


def test_no_stale_weights_after_a_save_in_another_format(tmp_path, models):
    folder = tmp_path / "model"
    models["a"].save_pretrained(folder)
    (folder / "README.md").write_text("my notes")
    models["b"].save_pretrained(folder, safe_serialization=False)
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "preprocessor_config.json", "pytorch_model.bin"]
    assert _which(folder, models) == "b"  # the loader would prefer an old model.safetensors


def test_saved_model_files_follow_the_umask_not_0600(tmp_path, models):
    import stat

    old = os.umask(0o027)
    try:
        models["a"].save_pretrained(tmp_path / "model")
        assert main(["convert", str(tmp_path / "model"), str(tmp_path / "converted"), "--no-verify"]) == 0
    finally:
        os.umask(old)
    for folder in ("model", "converted"):
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / folder).iterdir()}
        assert set(modes.values()) == {0o640}, modes  # safetensors alone would write model.safetensors 0600


def test_trained_model_export_is_atomic_and_clean(tmp_path, models):
    from efficientformer.training.trainer import export_model

    folder = tmp_path / "out" / "model"
    models["a"].save_pretrained(folder, safe_serialization=False)
    export_model(models["b"], folder, {"size": {"height": 32, "width": 32}})
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert _which(folder, models) == "b"
