"""Bulk prediction over Hugging Face datasets (`efficientformer predict hf:...`, `ImageClassifier.predict` of a
`datasets.Dataset`): each row is an input named "hf:SOURCE/SPLIT/ROW" that scores as the file it was made
from, resumes and shards like a file, and every mistake is one sentence before any work."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

from PIL import Image  # noqa: E402

from efficientformer import ImageClassifier, InputError  # noqa: E402
from efficientformer.cli import main  # noqa: E402
from efficientformer.errors import MissingDependencyError  # noqa: E402
from efficientformer.preprocessing import hf_datasets  # noqa: E402

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut_640x480.jpg", "camera.png")
TEST_ROWS = 8  # PHOTOS over and over; then one row whose bytes are not an image


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return str(fixtures_dir / "hf-tiny")


@pytest.fixture(scope="module")
def classifier(model):
    return ImageClassifier.from_pretrained(model, device="cpu")


def _files(fixtures_dir, count: int) -> list[str]:
    return [str(fixtures_dir / "images" / PHOTOS[i % len(PHOTOS)]) for i in range(count)]


def _features():
    return datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})


@pytest.fixture(scope="module")
def saved(fixtures_dir, tmp_path_factory) -> Path:
    """A DatasetDict saved to disk: "test" holds TEST_ROWS photos (their encoded bytes) and a row of text bytes,
    "train" two photos."""
    test = [{"bytes": Path(f).read_bytes(), "path": None} for f in _files(fixtures_dir, TEST_ROWS)]
    test.append({"bytes": (fixtures_dir / "images" / "not_an_image.jpg").read_bytes(), "path": None})
    splits = {"test": test, "train": _files(fixtures_dir, 2)}
    folder = tmp_path_factory.mktemp("hf") / "photos-ds"
    datasets.DatasetDict({name: datasets.Dataset.from_dict({"image": rows, "label": [0] * len(rows)},
                                                           features=_features())
                          for name, rows in splits.items()}).save_to_disk(str(folder))
    return folder


def _predict(*args) -> int:
    return main(["predict", *map(str, args), "--device", "cpu"])


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _assert_same_scores(records: list[dict], expected) -> None:
    assert len(records) == len(expected)
    for record, predictions in zip(records, expected):
        assert [p["index"] for p in record["predictions"]] == [p.index for p in predictions]
        assert np.allclose([p["score"] for p in record["predictions"]], [p.score for p in predictions],
                           rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def serial(model, saved, tmp_path_factory) -> Path:
    """The records of the test split, decoded in the main process."""
    out = tmp_path_factory.mktemp("serial") / "rows.jsonl"
    assert _predict(f"hf:{saved}", "-m", model, "-k", "3", "-b", "3", "--workers", "0", "--output", out) == 1
    return out


def test_rows_score_as_the_files_they_were_made_from(serial, saved, classifier, fixtures_dir, capsys):
    rows = _jsonl(serial)
    assert [r["image"] for r in rows] == [f"hf:{saved}/test/{i}" for i in range(TEST_ROWS)]  # the default split
    _assert_same_scores(rows, classifier.predict(_files(fixtures_dir, TEST_ROWS), top_k=3))
    # the row that is no image fails with the reason a file of those bytes gets (not written); here by its name
    code = _predict(f"hf:{saved}/test/{TEST_ROWS}", "-m", str(fixtures_dir / "hf-tiny"))
    err = capsys.readouterr().err
    assert code == 1 and f"hf:{saved}/test/{TEST_ROWS} is not an image file Pillow can read" in err


def test_a_partial_output_resumes_with_every_row_once(serial, saved, model, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    out.write_text("".join(serial.read_text().splitlines(keepends=True)[:3]))  # a job killed after a batch
    assert _predict(f"hf:{saved}", "-m", model, "-k", "3", "-b", "3", "--workers", "0", "--output", out) == 1
    assert out.read_bytes() == serial.read_bytes()  # the rest appended, each row once
    assert f"3 of {TEST_ROWS + 1} image(s) were there already" in capsys.readouterr().err


def test_two_workers_give_the_records_of_none(serial, saved, model, tmp_path):
    out = tmp_path / "rows.jsonl"
    assert _predict(f"hf:{saved}", "-m", model, "-k", "3", "-b", "3", "--workers", "2", "--output", out) == 1
    assert out.read_bytes() == serial.read_bytes()


def test_other_splits_columns_and_single_saved_datasets(saved, classifier, fixtures_dir, tmp_path):
    result = classifier.predict_files(f"hf:{saved}", split="train", top_k=2, workers=0)
    assert [name for name, _ in result.predictions] == [f"hf:{saved}/train/0", f"hf:{saved}/train/1"]
    assert [p for _, p in result.predictions] == classifier.predict(_files(fixtures_dir, 2), top_k=2)
    # a saved Dataset is one split, "train" unless it was taken from a named one; arrays are images too
    pixels = [np.asarray(Image.open(f).convert("RGB")) for f in _files(fixtures_dir, 2)]
    arrays = datasets.Dataset.from_dict({"pixels": [p.tolist() for p in pixels], "caption": ["a", "b"]})
    arrays.save_to_disk(str(tmp_path / "arrays"))
    result = classifier.predict_files(f"hf:{tmp_path / 'arrays'}", image_column="pixels", top_k=2, workers=0)
    names = [f"hf:{tmp_path / 'arrays'}/train/{i}#pixels" for i in range(2)]  # not the default column: named
    assert [name for name, _ in result.predictions] == names
    assert [p for _, p in result.predictions] == classifier.predict([Image.fromarray(p) for p in pixels], top_k=2)
    failed = classifier.predict_files(f"hf:{tmp_path / 'arrays'}", image_column="caption", workers=0).failed
    assert [reason for _, reason in failed][0].endswith("is not an image: its column 'caption' holds text; name "
                                                        "the column that holds the images with --image-column.")


def test_a_dataset_object_predicts_as_its_files(classifier, fixtures_dir, saved):
    files = _files(fixtures_dir, 5)
    in_memory = datasets.Dataset.from_dict({"label": [1] * 5, "photo": files},
                                           features=datasets.Features({"label": datasets.Value("int64"),
                                                                       "photo": datasets.Image()}))
    got = classifier.predict(in_memory, top_k=3, batch_size=2)  # the Image column, whatever its name
    want = classifier.predict(files, top_k=3, batch_size=2)
    assert [[p.index for p in row] for row in got] == [[p.index for p in row] for row in want]
    assert np.allclose([[p.score for p in row] for row in got], [[p.score for p in row] for row in want], atol=1e-6)
    assert classifier.predict(f"hf:{saved}/train/1", top_k=3) == classifier.predict(files[1], top_k=3)
    with pytest.raises(InputError, match=r"got a DatasetDict \(splits: test, train\); pass one split"):
        classifier.predict(datasets.load_from_disk(str(saved)))
    with pytest.raises(InputError, match="has no image column .* its columns: label, caption"):
        classifier.predict(datasets.Dataset.from_dict({"label": [1], "caption": ["x"]}))


def test_mistakes_are_one_sentence_before_any_work(saved, model, tmp_path, capsys, monkeypatch):
    assert _predict(f"hf:{saved}", "--split", "validation", "-m", model) == 2
    assert "has no split 'validation' (its splits: test, train); pick one with --split." in capsys.readouterr().err
    assert _predict(f"hf:{saved}", "--image-column", "photo", "-m", model) == 2
    assert "has no column 'photo' (its columns: image, label); name it with --image-column." in \
        capsys.readouterr().err
    texts = tmp_path / "texts"
    datasets.Dataset.from_dict({"caption": ["x"], "label": [0]}).save_to_disk(str(texts))
    assert _predict(f"hf:{texts}", "-m", model) == 2
    assert "has no image column (no Image feature, none named image or img; its columns: caption, label); name " \
           "it with --image-column." in capsys.readouterr().err
    assert _predict(str(tmp_path), "--split", "test", "-m", model) == 2
    assert "--split and --image-column choose the rows of hf: inputs, and none was given" in capsys.readouterr().err
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 does
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert _predict("hf:nothing_cached", "-m", model) == 2
    assert "hf:nothing_cached is neither a dataset in the local cache nor one the Hugging Face Hub gives" in \
        capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "datasets", None)  # as without the package
    with pytest.raises(MissingDependencyError, match="install the 'datasets' extra"):
        hf_datasets.row_names(str(saved))


def test_jpeg_rows_feed_gpu_decoding_as_files_do(saved, classifier, fixtures_dir):
    """GPU decoding reads a row's JPEG bytes by name as a file's (here with Pillow standing in for nvJPEG)."""
    from efficientformer.bulk.loader import prepare
    from efficientformer.preprocessing.gpu_decode import GpuDecoder

    def pillow_jpegs(data: list) -> list:
        return [torch.from_numpy(np.array(Image.open(io.BytesIO(bytes(t.numpy()))).convert("RGB"))).permute(2, 0, 1)
                for t in data]

    decoder = GpuDecoder(classifier.processor, "cpu", decode_jpegs=pillow_jpegs)
    names = [f"hf:{saved}/test/{i}" for i in (2, 3, 0, TEST_ROWS)]  # two JPEGs, a PNG, the row of text bytes
    items = decoder.read_all(names)
    assert [item.data is not None for item in items] == [True, True, False, False]  # the JPEGs go to the decoder
    batch = decoder.decode(items)
    files = prepare(_files(fixtures_dir, 4)[2:] + _files(fixtures_dir, 1), classifier.processor)
    assert batch.names == names[:3] and [name for name, _ in batch.failed] == names[3:]
    assert torch.equal(batch.pixels, classifier.pixels_from_8bit(files.crops))


def _hub_cache(saved: Path, cache: Path) -> bool:
    """Write `saved`'s splits into a datasets cache as the Hub dataset "tiny_photos" would be (offline use);
    False where this datasets version lays its cache out otherwise."""
    try:
        from datasets.data_files import DataFilesDict
        from datasets.packaged_modules.parquet.parquet import Parquet

        files = {}
        for split in ("test", "train"):
            files[split] = [str(cache.parent / f"{split}.parquet")]
            datasets.load_from_disk(str(saved / split)).to_parquet(files[split][0])
        builder = Parquet(cache_dir=str(cache), dataset_name="tiny_photos", config_id="default", hash="0" * 16,
                          data_files=DataFilesDict.from_local_or_remote(files))
        builder.download_and_prepare()
    except (ImportError, TypeError, ValueError):
        return False
    return True


def test_hub_names_load_from_the_local_cache_offline(saved, model, serial, tmp_path):
    cache = tmp_path / "datasets-cache"
    if not _hub_cache(saved, cache):
        pytest.skip("this datasets version keeps its cache in another layout")
    out = tmp_path / "hub.jsonl"
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "efficientformer", "predict", "hf:tiny_photos", "--split", "test", "-m", model,
               "-k", "3", "--device", "cpu", "--workers", "0", "--output", str(out)]
    job = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 1, job.stderr
    rows, expected = _jsonl(out), _jsonl(serial)
    assert [r["image"] for r in rows] == [f"hf:tiny_photos/test/{i}" for i in range(TEST_ROWS)]
    _assert_same_records(rows, expected)  # one thread here: the scores' last bits may move


def _assert_same_records(records: list[dict], expected: list[dict]) -> None:
    assert [[p["index"] for p in r["predictions"]] for r in records] == \
        [[p["index"] for p in r["predictions"]] for r in expected]
    assert np.allclose([[p["score"] for p in r["predictions"]] for r in records],
                       [[p["score"] for p in r["predictions"]] for r in expected], rtol=0, atol=1e-6)


def test_training_opens_the_same_sources_with_its_split_fallback(saved):
    from efficientformer.training.data import DataSpec, load_dataset

    validation = load_dataset(f"hf:{saved}", "val", DataSpec(size=32))  # no "val": the "test" split
    assert len(validation) == TEST_ROWS + 1 and validation.source == f"hf:{saved}[test]"
    assert tuple(load_dataset(f"hf:{saved}", "train", DataSpec(size=32))[1][0].shape) == (3, 32, 32)
