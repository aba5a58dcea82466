"""`ImageClassifier` and `efficientformer predict`: named classes for images, bad files skipped and reported."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from efficientformer import ImageClassifier  # noqa: E402
from efficientformer.cli import main  # noqa: E402
from efficientformer.cli import predict as predict_cli  # noqa: E402

PHOTOS = ("chelsea.png", "coffee.png")  # the photos behind hf-tiny's expected.npz


@pytest.fixture(scope="module")
def classifier(fixtures_dir):
    return ImageClassifier.from_pretrained(fixtures_dir / "hf-tiny", device="cpu")


def test_predictions_are_the_teacher_logits_ranked(classifier, fixtures_dir):
    images = [fixtures_dir / "images" / name for name in PHOTOS]
    expected = torch.softmax(torch.from_numpy(np.load(fixtures_dir / "hf-tiny" / "expected.npz")["teacher.logits"]), -1)
    results = classifier.predict(images, top_k=3, batch_size=1)
    assert len(results) == 2
    for row, probs in zip(results, expected):
        assert [p.index for p in row] == probs.argsort(descending=True).tolist()
        assert [p.label for p in row] == [classifier.labels[p.index] for p in row]
        np.testing.assert_allclose([p.score for p in row], probs.sort(descending=True).values.numpy(), atol=1e-4)
        assert set(row[0].to_dict()) == {"label", "index", "score"}


def test_paths_pil_images_and_arrays_give_the_same_answer(classifier, fixtures_dir):
    path = fixtures_dir / "images" / "chelsea.png"
    pil = Image.open(path).convert("RGB")
    by_path, by_pil, by_array = (classifier.predict(x, top_k=2)[0] for x in (str(path), pil, np.asarray(pil)))
    assert [p.index for p in by_path] == [p.index for p in by_pil] == [p.index for p in by_array]
    assert by_path[0].score == pytest.approx(by_array[0].score, abs=1e-6)
    assert len(classifier.predict([pil, pil, pil], top_k=99, batch_size=2)) == 3  # top_k capped at 3 labels


def test_timm_checkpoint_predicts_with_its_label_names(fixtures_dir):
    classifier = ImageClassifier.from_pretrained(fixtures_dir / "timm-small" / "hub", device="cpu")
    top = classifier.predict(fixtures_dir / "images" / "coffee.png", top_k=10)[0]
    assert {p.label for p in top} == {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                      "Sneaker", "Bag", "Ankle boot"}
    assert sum(p.score for p in top) == pytest.approx(1.0, abs=1e-5)


@pytest.fixture()
def photo_folder(fixtures_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in (*PHOTOS, "truncated.jpg", "not_an_image.jpg"):
        shutil.copy(fixtures_dir / "images" / name, folder / name)
    return folder


def test_predict_command_reports_bad_files_and_prints_the_rest(fixtures_dir, photo_folder, capsys):
    code = main(["predict", str(photo_folder), "--model", str(fixtures_dir / "hf-tiny"), "--top-k", "2",
                 "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert "truncated.jpg" in captured.err and "not_an_image.jpg" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["image", "rank", "score"] and len(lines) == 1 + 2 * 2
    assert lines[1].startswith(str(photo_folder / "chelsea.png"))


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_predict_command_json_and_csv(fixtures_dir, photo_folder, capsys, fmt):
    pattern = str(photo_folder / "c*.png")
    code = main(["predict", pattern, "-m", str(fixtures_dir / "hf-tiny"), "-k", "3", "--format", fmt])
    out = capsys.readouterr().out
    assert code == 0
    if fmt == "json":
        records = json.loads(out)
        assert [r["image"] for r in records] == [str(photo_folder / n) for n in PHOTOS]
        assert {p["label"] for p in records[0]["predictions"]} == {"cat", "coffee", "rocket"}
    else:
        rows = list(csv.DictReader(io.StringIO(out)))
        assert len(rows) == 6 and rows[0]["rank"] == "1" and float(rows[0]["score"]) > float(rows[1]["score"])


def test_results_already_computed_survive_a_failing_batch(fixtures_dir, photo_folder, capsys, monkeypatch):
    calls = {"n": 0}
    original = ImageClassifier.logits_from_pixels

    def flaky(self, pixel_values):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory")
        return original(self, pixel_values)

    monkeypatch.setattr(ImageClassifier, "logits_from_pixels", flaky)
    monkeypatch.setattr(predict_cli, "PROGRESS_MIN_IMAGES", 2)
    files = [str(photo_folder / n) for n in PHOTOS]
    code = main(["predict", *files, "-m", str(fixtures_dir / "hf-tiny"), "-b", "1", "-f", "csv"])
    captured = capsys.readouterr()
    assert code == 1 and "out of memory" in captured.err and "predicting" in captured.err  # the progress bar
    assert "chelsea.png" in captured.out and "coffee.png" not in captured.out


def test_missing_default_model_and_missing_inputs_are_explained(fixtures_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(predict_cli, "default_model_path", lambda: str(tmp_path / "default-model"))
    assert main(["predict", str(fixtures_dir / "images" / "coffee.png")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing*.jpg"), "-m", str(fixtures_dir / "hf-tiny")]) == 1
    assert "matches no files" in capsys.readouterr().err


# ---------------------------------------------------------------------- bulk predict: nothing lost silently
from conftest import bomb_png as _bomb_png  # noqa: E402


def _classified(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip() and not line.startswith(" ")]


def test_bomb_folder_reports_the_bomb_and_classifies_the_rest(fixtures_dir, tmp_path, capsys):
    """One decompression bomb used to abort the whole run (6 of 8 results lost)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(7):
        shutil.copy(fixtures_dir / "images" / PHOTOS[i % 2], folder / f"{i}.png")
    (folder / "3-bomb.png").write_bytes(_bomb_png(20000, 20000))  # 400 M pixels: Pillow raises
    (folder / "5-big.png").write_bytes(_bomb_png(10000, 10000))  # 100 M pixels: Pillow only warns
    code = main(["predict", str(folder), "-m", str(fixtures_dir / "hf-tiny"), "-k", "1", "-b", "4"])
    captured = capsys.readouterr()
    assert code == 1
    assert _classified(captured.out) == [str(folder / f"{i}.png") for i in range(7)]
    assert "3-bomb.png" in captured.err and "5-big.png" in captured.err and "decompression-bomb limit" in captured.err
    assert "2 input(s) could not be classified" in captured.err


def test_every_skipped_path_is_reported(fixtures_dir, tmp_path, capsys, monkeypatch):
    """Unknown extensions, no extension, unreadable sub-folders and broken links used to vanish with exit 0."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "locked").mkdir()
    shutil.copy(fixtures_dir / "images" / "chelsea.png", folder / "chelsea.png")
    shutil.copy(fixtures_dir / "images" / "rocket.jpg", folder / "sub" / "rocket.jfif")  # a JPEG name Pillow knows
    shutil.copy(fixtures_dir / "images" / "rocket.jpg", folder / "sub" / "noext")
    (folder / "notes.txt").write_text("not a photo")
    (folder / ".hidden.png").write_bytes(b"hidden files are not searched")
    (folder / "gone.png").symlink_to(tmp_path / "missing.png")
    real_scandir = predict_cli.os.scandir

    def scandir(path="."):
        if str(path) == str(folder / "locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(predict_cli.os, "scandir", scandir)
    code = main(["predict", str(folder), "-m", str(fixtures_dir / "hf-tiny"), "-k", "1"])
    captured = capsys.readouterr()
    assert code == 1
    assert _classified(captured.out) == [str(folder / "chelsea.png"), str(folder / "sub" / "rocket.jfif")]
    for name, reason in [("locked", "folder cannot be read (Permission denied)"), ("notes.txt", "not an image file"),
                         ("noext", "not an image file"), ("gone.png", "broken symbolic link")]:
        assert any(name in line and reason in line for line in captured.err.splitlines()), (name, captured.err)
    assert ".hidden" not in captured.err and "4 input(s) could not be classified" in captured.err
    assert main(["predict", str(folder / "sub" / "noext"), "-m", str(fixtures_dir / "hf-tiny")]) == 0  # named: tried


def test_a_symlink_loop_classifies_each_file_once(fixtures_dir, tmp_path, capsys):
    """A `**` glob (and a folder search) through a link loop used to classify the same file 41 times."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(fixtures_dir / "images" / "chelsea.png", folder / "chelsea.png")
    shutil.copy(fixtures_dir / "images" / "coffee.png", folder / "sub" / "coffee.png")
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (tmp_path / "alias.png").symlink_to(folder / "chelsea.png")
    expected = [str(folder / "chelsea.png"), str(folder / "sub" / "coffee.png")]
    for inputs in ([str(folder)], [str(folder / "**")], [str(folder / "**" / "*.png"), str(folder),
                                                          str(tmp_path / "alias.png")]):
        code = main(["predict", *inputs, "-m", str(fixtures_dir / "hf-tiny"), "-k", "1", "-f", "csv"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert [row["image"] for row in csv.DictReader(io.StringIO(captured.out))] == expected


def test_bundled_model_says_what_it_is(capsys):
    """A photo answered in clothing classes needs the reason and the way to an ImageNet model beside it."""
    assert main(["predict", "-k", "1", "-f", "json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 10  # stdout stays machine-readable
    assert "Fashion-MNIST" in captured.err and "96x96 grayscale" in captured.err
    assert "--model snap-research/efficientformer-l1-300" in captured.err


def test_float_tiff_on_the_command_line_predicts_as_the_png(fixtures_dir, tmp_path, capsys):
    """A float TIFF holding [0, 1] used to be divided by 255 twice (near-black)."""
    pixels = np.asarray(Image.open(fixtures_dir / "images" / "camera.png"))
    Image.fromarray(pixels.astype(np.float32) / 255, "F").save(tmp_path / "camera.tif")
    shutil.copy(fixtures_dir / "images" / "camera.png", tmp_path / "camera.png")
    main(["predict", str(tmp_path / "camera.png"), str(tmp_path / "camera.tif"), "-m", str(fixtures_dir / "hf-tiny"),
          "-k", "3", "-f", "json"])
    png, tif = json.loads(capsys.readouterr().out)
    assert png["predictions"] == tif["predictions"]


def test_a_glob_over_files_named_already_is_no_error(fixtures_dir, photo_folder, capsys):
    code = main(["predict", str(photo_folder / "chelsea.png"), str(photo_folder / "c*.png"), "-m",
                 str(fixtures_dir / "hf-tiny"), "-k", "1", "-f", "csv"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [row["image"] for row in csv.DictReader(io.StringIO(captured.out))] == [
        str(photo_folder / "chelsea.png"), str(photo_folder / "coffee.png")]
