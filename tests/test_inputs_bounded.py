"""Small inputs that used to ask for gigabytes or pass silently: 1xN images, decompression bombs, sizes from
untrusted configs, labels CSVs with typos, a negative --val-split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efficientformer import EfficientFormerImageProcessor, InputError
from efficientformer.errors import ConfigError

HUB = dict(size={"shortest_edge": 256}, resample=3, crop_size={"height": 224, "width": 224})


from conftest import bomb_png  # noqa: E402


# ---------------------------------------------------------------------- 1xN images
def test_one_pixel_high_png_through_predict_stays_within_a_few_hundred_mb(fixtures_dir, tmp_path):
    """A 177-byte 1x100000 PNG took 6.3 GB and 28 s in `predict` (15 GB with nearest): the shortest-edge resize
    makes it 256x25600000 before the crop. Measured in a child process, after a warm-up on a photo, under an
    address-space limit so that a regression fails instead of swapping."""
    pytest.importorskip("torch")
    Image.fromarray(np.full((1, 100_000), 200, np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.full((100_000, 1, 3), 90, np.uint8)).save(tmp_path / "tall.png")
    assert (tmp_path / "wide.png").stat().st_size < 1000
    nearest = tmp_path / "nearest-model"
    nearest.mkdir()
    for name in ("config.json", "model.safetensors"):
        (nearest / name).symlink_to(fixtures_dir / "hf-tiny" / name)
    settings = json.loads((fixtures_dir / "hf-tiny" / "preprocessor_config.json").read_text())
    (nearest / "preprocessor_config.json").write_text(json.dumps({**settings, "resample": 0}))
    script = textwrap.dedent(f"""
        import resource, sys, time
        from efficientformer.cli import main

        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        photo, tiny = {str(fixtures_dir / "images" / "coffee.png")!r}, {str(fixtures_dir / "hf-tiny")!r}
        assert main(["predict", photo, "-m", tiny, "--device", "cpu"]) == 0
        vm = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize"))) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
        warm, started = peak_mb(), time.perf_counter()
        for model in (tiny, {str(nearest)!r}):
            assert main(["predict", {str(tmp_path / "wide.png")!r}, {str(tmp_path / "tall.png")!r}, "-m", model,
                         "--device", "cpu"]) == 0
        print("RESULT", peak_mb() - warm, time.perf_counter() - started, file=sys.stderr)
        """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    grown_mb, seconds = map(float, run.stderr.split("RESULT")[1].split())
    assert grown_mb < 200, f"{grown_mb:.0f} MB beyond the warm process"
    assert seconds < 10  # 4 images; about 0.2 s on one free core


@pytest.mark.parametrize("resample", [0, 1, 2, 3, 4, 5])
def test_extreme_aspect_resize_computes_only_the_crop(resample):
    """1x300 -> 256x76800 (19.7 M pixels, above the whole-resize budget): the crop equals Pillow's full resize,
    exactly for bicubic, bilinear, box and nearest, within one 8-bit level for lanczos and hamming."""
    from efficientformer.preprocessing.resize import FULL_RESIZE_PIXELS, resize_crop

    pixels = np.random.default_rng(0).integers(0, 256, (1, 300, 3), dtype=np.uint8)
    out_w, out_h = 76800, 256
    assert out_w * out_h > FULL_RESIZE_PIXELS
    box = ((out_w - 224) // 2, 16, (out_w - 224) // 2 + 224, 240)
    expected = np.asarray(Image.fromarray(pixels).resize((out_w, out_h), resample).crop(box)).astype(int)
    got = resize_crop(pixels, out_w, out_h, resample, box, fast=False).astype(int)
    assert np.abs(got - expected).max() <= (1 if resample in (1, 5) else 0)


def test_extreme_downscale_of_a_long_side_is_bounded(tmp_path):
    """A 1x3000000 PNG (3 KB) squashed to 96x96, as the bundled model's processor does: Pillow's weights for
    such a side would take gigabytes, so it is reduced first; the result is still the image's mean level."""
    Image.fromarray(np.full((1, 3_000_000), 77, np.uint8)).save(tmp_path / "long.png")
    for resample in (1, 2):
        processor = EfficientFormerImageProcessor(size={"height": 96, "width": 96}, do_center_crop=False,
                                                  resample=resample, do_rescale=False, do_normalize=False)
        out = processor(tmp_path / "long.png", return_tensors="np")["pixel_values"]
        assert out.shape == (1, 3, 96, 96) and np.all(out == 77)


def test_huge_output_without_a_crop_is_refused_before_allocating():
    processor = EfficientFormerImageProcessor(size={"shortest_edge": 256}, do_center_crop=False)
    with pytest.raises(InputError, match=r"resized to 25600000x256 pixels, more than the 16777216"):
        processor(np.zeros((1, 100_000), np.uint8))


# ---------------------------------------------------------------------- decompression bombs
@pytest.mark.parametrize("width, height", [(20000, 20000), (10000, 10000)])  # Pillow raises / only warns
def test_decompression_bombs_are_an_input_error(tmp_path, width, height):
    (tmp_path / "bomb.png").write_bytes(bomb_png(width, height))
    with pytest.raises(InputError, match=r"bomb.png has .*decompression-bomb limit"):
        EfficientFormerImageProcessor()(tmp_path / "bomb.png")


def test_a_raised_pixel_limit_is_respected(tmp_path, monkeypatch):
    (tmp_path / "big.png").write_bytes(bomb_png(10000, 10000))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the user trusts the file: decoding is tried
    with pytest.raises(InputError, match="truncated or corrupt"):
        EfficientFormerImageProcessor()(tmp_path / "big.png")


# ---------------------------------------------------------------------- sizes from configs
@pytest.mark.parametrize("settings", [{"crop_size": 30000}, {"crop_size": {"height": 224, "width": 5000}},
                                      {"size": {"shortest_edge": 100_000}}, {"size": [4097, 10]}])
def test_sizes_a_config_asks_for_are_capped(settings, tmp_path):
    with pytest.raises(ConfigError, match="more than the 4096"):
        EfficientFormerImageProcessor(**settings)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**HUB, **settings}))
    with pytest.raises(ConfigError, match="more than the 4096"):
        EfficientFormerImageProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize("cfg, message", [({"input_size": [3, 1e5, 1e5]}, "more than the 4096"),
                                          ({"input_size": [3, 224.5, 224]}, "not a whole number"),
                                          ({"input_size": "big"}, "not \\(channels, height, width\\)"),
                                          ({"crop_pct": 1e-9}, "crop_pct"),
                                          ({"crop_pct": float("nan")}, "crop_pct")])
def test_untrusted_timm_configs_are_refused(cfg, message):
    with pytest.raises(ConfigError, match=message):
        EfficientFormerImageProcessor.from_timm_config({"pretrained_cfg": cfg})


def test_non_finite_settings_are_refused():
    with pytest.raises(ConfigError, match="rescale_factor"):
        EfficientFormerImageProcessor(rescale_factor=float("nan"))
    with pytest.raises(ConfigError, match="NaN or infinite"):
        EfficientFormerImageProcessor(image_std=[0.2, float("nan"), 0.2])(np.zeros((8, 8, 3), np.uint8))


# ---------------------------------------------------------------------- training data
torch = pytest.importorskip("torch")
from efficientformer.training import data as D  # noqa: E402


def _tiny_folder(root: Path, classes=("cat", "dog"), per_class: int = 2) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_a_bomb_in_training_data_names_the_file_before_training(tmp_path):
    folder = _tiny_folder(tmp_path / "data")
    (folder / "dog" / "bomb.png").write_bytes(bomb_png(20000, 20000))
    for width, height in ((20000, 20000), (10000, 10000)):  # Pillow raises / only warns
        (folder / "dog" / "bomb.png").write_bytes(bomb_png(width, height))
        with pytest.raises(InputError, match=r"cannot read image: .*bomb.png has .*decompression-bomb limit"):
            D.load_dataset(folder)


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    folder = _tiny_folder(tmp_path / "images")
    text = "\n".join(row.replace("A", str(folder / "cat" / "0.png")).replace("B", str(folder / "dog" / "1.png"))
                     for row in rows)
    (tmp_path / "labels.csv").write_text(text + "\n")
    return tmp_path / "labels.csv"


@pytest.mark.parametrize("rows, message", [
    (["path,label", "A,Coffee", "B,"], "line 3: the label is empty"),
    (["A,Coffee", 'B,"Coffee "', "A,Tea"], "'Coffee' \\(line 1\\) and 'Coffee ' \\(line 2\\) differ only in spaces"),
    (["A,0", "B,1", "A,7"], "indices up to 7, but 5 of those classes have no rows \\(2, 3, 4, 5, 6\\)"),
    (["A,-1", "B,1"], "label -1 is out of range"),
    (["file,class", "A,0", "B,1"], "line 2 has the class index '0' but line 1 the class name 'class'.*header"),
    (["A,Coffee", "B,Coffee"], "has 1 class \\(\\['Coffee'\\]\\); a classifier needs at least 2"),
])
def test_labels_csv_mistakes_are_refused_before_training(tmp_path, rows, message):
    with pytest.raises(InputError, match=message):
        D.load_dataset(_csv(tmp_path, rows), "train", D.DataSpec(size=8))


def test_the_label_set_is_shown_and_spaces_around_names_dropped(tmp_path, capsys):
    dataset = D.load_dataset(_csv(tmp_path, ["path,label", "A, Coffee", "B, Tea", "A, Tea"]), "train",
                             D.DataSpec(size=8))
    assert dataset.class_names == ["Coffee", "Tea"] and dataset.labels.tolist() == [0, 1, 1]
    assert "2 classes in " in (err := capsys.readouterr().err) and "'Coffee' (1), 'Tea' (2)" in err


def test_class_folders_differing_only_in_spaces_are_refused(tmp_path):
    folder = _tiny_folder(tmp_path / "data", classes=("Coffee", "Coffee ", "Tea"))
    with pytest.raises(InputError, match="differ only in spaces"):
        D.load_dataset(folder)


def test_val_split_outside_0_1_is_one_sentence():
    from efficientformer.training.settings import TrainConfig

    for value in (-0.5, 1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"val_split=.* must be a share in \[0, 1\)"):
            TrainConfig(data="x", val_split=value).validate()
