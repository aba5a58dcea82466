"""The bundled Fashion-MNIST model: small, and `efficientformer predict` with no --model names the samples right."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

DATA = Path(__file__).resolve().parents[1] / "src" / "efficientformer" / "data"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def test_bundled_model_is_small_and_complete():
    folder = DATA / "default-model"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5_000_000
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"]["9"] == "Ankle boot" and len(config["id2label"]) == 10


def test_predict_without_model_names_every_sample_image(capsys):
    from efficientformer.cli import main

    samples = sorted((DATA / "sample-images").glob("*.png"))
    assert len(samples) == 10
    code = main(["predict", str(DATA / "sample-images"), "--top-k", "1", "--format", "json", "--device", "cpu"])
    assert code == 0
    records = json.loads(capsys.readouterr().out)
    predicted = {Path(r["image"]).stem: _slug(r["predictions"][0]["label"]) for r in records}
    assert predicted == {p.stem: p.stem for p in samples}  # each file is named by its true class


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_eval_reproduces_the_recorded_accuracy(capsys, tmp_path):
    """`efficientformer eval` of the bundled model on the 10,000 test images: 94.03% top-1, as recorded."""
    from efficientformer.cli import main

    assert main(["eval", str(FASHION_MNIST), "--device", "cpu", "--confusion", str(tmp_path / "confusion.png")]) == 0
    out = capsys.readouterr().out
    assert "(10000 images)" in out and "top-1: 94.03%" in out and "top-5: 99.97%" in out
    assert (tmp_path / "confusion.png").stat().st_size > 10_000
