"""EfficientFormerImageProcessor: transformers 4.57 parity, inputs, outputs, config files, timm, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efficientformer import EfficientFormerImageProcessor, InputError
from efficientformer.errors import CheckpointError, ConfigError

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
_EXPECTED = FIXTURES / "processor_expected.npz"
KEYS = sorted(np.load(_EXPECTED).files) if _EXPECTED.is_file() else []
HUB = dict(size={"shortest_edge": 256}, resample=3, crop_size={"height": 224, "width": 224})


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return np.load(fixtures_dir / "processor_expected.npz"), json.loads(
        (fixtures_dir / "processor_cases.json").read_text())


def rgb(fixtures_dir, name):
    return np.asarray(Image.open(fixtures_dir / "images" / name).convert("RGB"))


@pytest.mark.parametrize("key", KEYS)
def test_matches_transformers(golden, fixtures_dir, key):
    """Every golden of transformers 4.57.6 (settings, photos, input kinds, the batch) within 1e-5."""
    expected, cases = golden
    case, image = key.split("/")
    processor = EfficientFormerImageProcessor.from_dict(cases["hub" if case.startswith("hub_") else case])
    if case == "hub_batch":
        paths = [fixtures_dir / "images" / name for name in image.split("+")]
        out = processor(paths, return_tensors="np")["pixel_values"]
    elif case == "hub_numpy_hwc_uint8":
        out = processor(rgb(fixtures_dir, image), return_tensors="np")["pixel_values"][0]
    elif case == "hub_numpy_chw_float_norescale":
        chw = (rgb(fixtures_dir, image).astype(np.float32) / 255).transpose(2, 0, 1)
        out = processor(chw, do_rescale=False, return_tensors="np")["pixel_values"][0]
    else:
        out = processor(fixtures_dir / "images" / image, return_tensors="np")["pixel_values"][0]
    assert out.shape == expected[key].shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected[key], atol=1e-5, rtol=0)


def test_to_dict_is_transformers_dict(golden):
    _, cases = golden
    for settings in cases.values():
        assert EfficientFormerImageProcessor.from_dict(settings).to_dict() == settings


def test_array_and_tensor_inputs_agree(fixtures_dir):
    processor = EfficientFormerImageProcessor(**HUB)
    hwc = rgb(fixtures_dir, "chelsea.png")
    reference = processor(Image.fromarray(hwc), return_tensors="np")["pixel_values"]
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    for value, layout in [(hwc, None), (chw, None), (chw, "channels_first"), (hwc, "channels_last")]:
        out = processor(value, input_data_format=layout, return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(out, reference)
    batch = processor(np.stack([hwc, hwc]), return_tensors="np")["pixel_values"]  # 4-D NHWC batch
    assert batch.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(batch[1], reference[0])
    torch = pytest.importorskip("torch")
    tensor_out = processor(torch.from_numpy(chw), return_tensors="pt")
    assert isinstance(tensor_out.pixel_values, torch.Tensor)
    np.testing.assert_array_equal(tensor_out.pixel_values.numpy(), reference)
    half = processor(torch.from_numpy(chw)[None].float(), return_tensors="pt").to(torch.float16)
    assert half.pixel_values.dtype == torch.float16 and half.pixel_values.shape == (1, 3, 224, 224)


def test_grayscale_rgba_and_16bit_arrays_become_rgb(fixtures_dir):
    processor = EfficientFormerImageProcessor(**HUB)
    gray = np.asarray(Image.open(fixtures_dir / "images" / "camera.png"))
    expected = processor(np.repeat(gray[:, :, None], 3, axis=2), return_tensors="np")["pixel_values"]
    for value in (gray, gray[:, :, None], (gray.astype(np.uint16) * 257)):
        np.testing.assert_array_equal(processor(value, return_tensors="np")["pixel_values"], expected)
    rgba = np.dstack([np.repeat(gray[:, :, None], 3, axis=2), np.full_like(gray, 7)])
    np.testing.assert_array_equal(processor(rgba, return_tensors="np")["pixel_values"], expected)


def test_output_forms(fixtures_dir):
    processor = EfficientFormerImageProcessor(**HUB)
    image = fixtures_dir / "images" / "coffee.png"
    listed = processor([image, image])["pixel_values"]  # return_tensors=None: a list, as transformers
    assert isinstance(listed, list) and len(listed) == 2 and listed[0].shape == (3, 224, 224)
    first = processor(image, return_tensors="np")
    last = processor(image, return_tensors="np", data_format="channels_last")
    assert last.pixel_values.shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(last.pixel_values, first.pixel_values.transpose(0, 2, 3, 1))
    assert first.pixel_values is first["pixel_values"] and list(first) == ["pixel_values"]
    fast = processor(image, return_tensors="np", fast_resize=True).pixel_values
    assert np.abs(fast - first.pixel_values).max() < 2e-2  # the documented bound of the faster path


def test_save_and_load_round_trip(tmp_path, fixtures_dir):
    tiny = fixtures_dir / "hf-tiny"
    loaded = EfficientFormerImageProcessor.from_pretrained(tiny)
    assert loaded.size == {"shortest_edge": 256} and loaded.resample == 3 and loaded.crop_size["height"] == 224
    assert loaded.to_json_string() == (tiny / "preprocessor_config.json").read_text()  # byte-identical json
    assert EfficientFormerImageProcessor.from_pretrained(tiny / "preprocessor_config.json") == loaded
    newer = {**loaded.to_dict(), "future_key": {"kept": True}}  # unknown keys of a config survive a round trip
    custom = EfficientFormerImageProcessor.from_dict(newer, crop_size=200, image_mean=[0.5] * 3)
    custom.save_pretrained(tmp_path / "saved")
    again = EfficientFormerImageProcessor.from_pretrained(tmp_path / "saved")
    assert again == custom and again.crop_size == {"height": 200, "width": 200} and again.future_key == {"kept": True}
    data = json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())
    assert data["image_processor_type"] == "EfficientFormerImageProcessor" and "_processor_class" not in data
    with pytest.raises(ConfigError, match="unknown processor option"):
        EfficientFormerImageProcessor.from_pretrained(tiny, crop_sise=200)


def test_load_by_hub_id_offline(fixtures_dir, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    processor = EfficientFormerImageProcessor.from_pretrained(
        "efficientformer-fixtures/hf-tiny", cache_dir=str(fixtures_dir / "hub"), local_files_only=True)
    assert processor == EfficientFormerImageProcessor.from_pretrained(fixtures_dir / "hf-tiny")


def test_timm_transform_parity(fixtures_dir):
    data = np.load(fixtures_dir / "timm-small" / "expected.npz")
    processor = EfficientFormerImageProcessor.from_timm_config(json.loads(str(data["timm_data_config"])))
    assert processor.size == {"shortest_edge": 248} and processor.resample == 2  # floor(224 / 0.9), bilinear
    for key in (k for k in data.files if k.startswith("timm_transform/")):
        out = processor(fixtures_dir / "images" / key.split("/")[1], return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(out, data[key], atol=1e-5, rtol=0)
    assert EfficientFormerImageProcessor.from_pretrained(fixtures_dir / "timm-small" / "hub") == processor


def test_crop_rounding_follows_torchvision_when_asked():
    image = np.zeros((10, 15, 3), np.uint8)
    image[:, 3] = 255  # a bright column that a crop starting at x=3 keeps and one at x=4 loses
    kwargs = dict(do_resize=False, crop_size={"height": 10, "width": 8}, do_normalize=False, return_tensors="np")
    processor = EfficientFormerImageProcessor()
    floor = processor(image, **kwargs)["pixel_values"][0]  # margin 7: transformers starts at 3
    rounded = processor(image, crop_rounding="round", **kwargs)["pixel_values"][0]  # round(3.5) = 4
    assert floor[:, :, 0].max() == 1.0 and rounded.max() == 0.0


@pytest.mark.parametrize("name, message", [("truncated.jpg", "truncated or corrupt"),
                                           ("not_an_image.jpg", "not an image file"),
                                           ("missing.jpg", "does not exist")])
def test_bad_files_raise_one_clear_error(fixtures_dir, name, message):
    with pytest.raises(InputError, match=message) as info:
        EfficientFormerImageProcessor()(fixtures_dir / "images" / name)
    assert name in str(info.value)


@pytest.mark.parametrize("images, message", [
    ([], "empty list"),
    (np.zeros((32, 32, 5), np.uint8), "no axis of 1, 3 or 4"),
    (np.zeros((2, 32, 32, 2), np.uint8), "no axis of 1, 3 or 4"),
    (np.zeros((2, 8, 32, 32), np.uint8), "no axis of 1, 3 or 4"),
    (np.zeros((4, 4, 4, 4, 3), np.uint8), "5 dimensions"),
    (np.full((32, 32, 3), 2.5, np.float32), "float values"),
    (np.full((32, 32, 3), 300, np.int32), "values in"),
    ([[Image.new("RGB", (8, 8))]], "nested list"),
    ("https://example.com/cat.jpg", "URL"),
    (42, "pass a file path"),
])
def test_bad_inputs_raise_input_error(images, message):
    with pytest.raises(InputError, match=message):
        EfficientFormerImageProcessor()(images)


def test_wrong_channel_count_with_explicit_layout():
    with pytest.raises(InputError, match="has 5 channels"):
        EfficientFormerImageProcessor()(np.zeros((32, 32, 5), np.uint8), input_data_format="channels_last")
    with pytest.raises(InputError, match="has 2 channels"):
        EfficientFormerImageProcessor()(np.zeros((2, 32, 32), np.uint8), input_data_format="channels_first")


def test_bad_settings_and_ragged_batches():
    with pytest.raises(ConfigError, match="size"):
        EfficientFormerImageProcessor(size={"longest_edge": 3})
    with pytest.raises(ConfigError, match="resample"):
        EfficientFormerImageProcessor(resample=9)
    with pytest.raises(ConfigError, match="image_mean"):
        EfficientFormerImageProcessor(image_mean=[0.5, 0.5])(Image.new("RGB", (8, 8)))
    processor = EfficientFormerImageProcessor(size={"shortest_edge": 32}, do_center_crop=False)
    images = [Image.new("RGB", (64, 32)), Image.new("RGB", (32, 64))]
    assert [a.shape for a in processor(images)["pixel_values"]] == [(3, 32, 64), (3, 64, 32)]
    with pytest.raises(InputError, match="different sizes"):
        processor(images, return_tensors="np")
    with pytest.raises(CheckpointError):
        EfficientFormerImageProcessor.from_pretrained(FIXTURES / "images")


def test_numpy_resample_is_pillow_bit_for_bit(fixtures_dir):
    """`efficientformer.preprocessing.resample` against Pillow's own resize + crop: photos, gray, portrait and noise images,
    upscales and downscales of any aspect (both pass orders), bilinear, bicubic and box."""
    from PIL import Image

    from efficientformer.preprocessing import resample

    rng = np.random.default_rng(0)
    photos = [Image.open(fixtures_dir / "images" / name) for name in ("chelsea.png", "camera.png", "rocket.jpg")]
    images = photos + [photos[0].transpose(Image.Transpose.TRANSPOSE),
                       Image.fromarray(rng.integers(0, 256, (777, 333, 3), dtype=np.uint8))]
    checked = 0
    for image in images:
        pixels = np.asarray(image)
        sizes = [(int(w), int(h)) for w, h in rng.integers(16, 2 * max(image.size), (12, 2))]
        sizes += [(image.width * 256 // image.height, 256), (256, image.height * 256 // image.width)]
        for out_w, out_h in sizes:
            crop_w, crop_h = min(out_w, 224), min(out_h, 200)
            box = ((out_w - crop_w) // 2, (out_h - crop_h) // 2, (out_w - crop_w) // 2 + crop_w,
                   (out_h - crop_h) // 2 + crop_h)
            for filter_code in (2, 3, 4):
                expected = np.asarray(image.resize((out_w, out_h), filter_code).crop(box))
                # an array, and the PIL image itself (read in place, RGB split from 4-byte words)
                for source in (pixels, image):
                    np.testing.assert_array_equal(resample.resize_crop(source, out_w, out_h, filter_code, box),
                                                  expected)
                    checked += 1
    assert checked == 5 * 14 * 3 * 2


def test_numpy_resample_steps_aside_when_pillow_computes_differently(monkeypatch):
    """The once-per-process check against the installed Pillow: with a wrong pass order it fails, and every
    resize then goes to Pillow (exact either way)."""
    from efficientformer.preprocessing import resample

    real = resample.vertical_first
    monkeypatch.setattr(resample, "vertical_first", lambda *sizes: not real(*sizes))  # the other release's order
    resample._matches_installed_pillow.cache_clear()
    try:
        assert not resample.supported(3)
    finally:
        monkeypatch.undo()
        resample._matches_installed_pillow.cache_clear()
    assert resample.supported(3) and not resample.supported(1)


def test_fast_resize_stays_within_one_level_where_used(fixtures_dir):
    """Fast mode (Pillow's box, for the filters Pillow computes) against exact mode over many shortest-edge
    scales; resizes outside its domain (upscaling, aspect change) come out exact."""
    from PIL import Image

    from efficientformer.preprocessing.resize import resize_crop

    worst = 0
    for name in ("chelsea.png", "coffee.png", "astronaut_640x480.jpg"):
        image = Image.open(fixtures_dir / "images" / name).convert("RGB")
        for short in range(160, 420, 17):
            out_w, out_h = (short, short * image.height // image.width) if image.width <= image.height else (
                short * image.width // image.height, short)
            crop = min(out_w, out_h, 224)
            box = ((out_w - crop) // 2, (out_h - crop) // 2, (out_w - crop) // 2 + crop, (out_h - crop) // 2 + crop)
            exact = np.asarray(image.resize((out_w, out_h), 1).crop(box)).astype(int)
            worst = max(worst, np.abs(resize_crop(image, out_w, out_h, 1, box, True) - exact).max())
        for out_w, out_h, resample in ((900, 700, 1), (500, 160, 1), (336, 224, 5)):
            box = (0, 0, 160, 150)
            exact = np.asarray(image.resize((out_w, out_h), resample).crop(box))
            np.testing.assert_array_equal(resize_crop(image, out_w, out_h, resample, box, True), exact)
    assert worst <= 1  # one 8-bit level: at most 1/255/std = 0.0175 after ImageNet normalization


def test_threads_spread_a_batch_without_changing_values(fixtures_dir):
    paths = [fixtures_dir / "images" / name for name in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")]
    for resample in (3, 1):  # numpy-computed and Pillow-computed filters
        one = EfficientFormerImageProcessor(**{**HUB, "resample": resample})(paths, return_tensors="np")
        four = EfficientFormerImageProcessor(**{**HUB, "resample": resample}, num_threads=4)(paths, return_tensors="np")
        np.testing.assert_array_equal(one.pixel_values, four.pixel_values)
    assert EfficientFormerImageProcessor(**HUB).num_threads == 1
    assert EfficientFormerImageProcessor(**HUB, num_threads=3).to_dict()["num_threads"] == 3
    assert "num_threads" not in EfficientFormerImageProcessor(**HUB).to_dict()  # defaults stay out of the json
    with pytest.raises(ConfigError, match="num_threads"):
        EfficientFormerImageProcessor(num_threads=0)


# ---------------------------------------------------------------------- float, 16-bit and float-file inputs
@pytest.mark.parametrize("do_resize", [True, False])
def test_float_0_to_255_inputs_give_exactly_the_uint8_result(fixtures_dir, do_resize):
    """transformers casts whole-number floats 0..255 to 8-bit for its resize; they used to be divided by 255
    twice (near-black, 3.65 away from transformers)."""
    torch = pytest.importorskip("torch")
    processor = EfficientFormerImageProcessor(**HUB)
    hwc = rgb(fixtures_dir, "chelsea.png")
    reference = processor(hwc, do_resize=do_resize, return_tensors="np")["pixel_values"]
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    for value in (hwc.astype(np.float32), hwc.astype(np.float64), torch.from_numpy(chw).float(),
                  torch.from_numpy(chw).double()):
        out = processor(value, do_resize=do_resize, return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(out, reference)


def test_float_unit_range_is_rescaled_as_transformers_does_and_warned_about(fixtures_dir):
    processor = EfficientFormerImageProcessor(**HUB)
    unit = rgb(fixtures_dir, "coffee.png").astype(np.float32) / 255
    reference = processor(rgb(fixtures_dir, "coffee.png"), return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(processor(unit, do_rescale=False, return_tensors="np")["pixel_values"], reference)
    with pytest.warns(UserWarning, match="already rescaled"):  # divided by 255 once more, as transformers does
        processor(unit, return_tensors="np")


def test_uint16_holding_8_bit_values_is_read_as_8_bit(fixtures_dir):
    """transformers reads a uint16 array whose values fit 8 bits as 8-bit values; shifting right by 8 (as for
    true 16-bit data) made it black."""
    processor = EfficientFormerImageProcessor(**HUB)
    hwc = rgb(fixtures_dir, "chelsea.png")
    reference = processor(hwc, return_tensors="np")["pixel_values"]
    with pytest.warns(UserWarning, match="read as 8-bit"):
        out = processor(hwc.astype(np.uint16), return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(out, reference)
    wide = processor(hwc.astype(np.uint16) * 257, return_tensors="np")["pixel_values"]  # true 16-bit: >> 8
    np.testing.assert_array_equal(wide, reference)


@pytest.mark.parametrize("scale", [1.0, 1 / 255])
def test_float_tiff_files_give_the_8_bit_result(fixtures_dir, tmp_path, scale):
    gray = np.asarray(Image.open(fixtures_dir / "images" / "camera.png"))
    Image.fromarray(gray.astype(np.float32) * np.float32(scale), "F").save(tmp_path / "camera.tif")
    processor = EfficientFormerImageProcessor(**HUB)
    expected = processor(fixtures_dir / "images" / "camera.png", return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(processor(tmp_path / "camera.tif", return_tensors="np")["pixel_values"], expected)


def test_float_tiff_outside_both_ranges_is_refused(tmp_path):
    Image.fromarray(np.full((8, 8), 300.0, np.float32), "F").save(tmp_path / "hot.tif")
    with pytest.raises(InputError, match=r"hot.tif is a float image with values in \[300, 300\]"):
        EfficientFormerImageProcessor()(tmp_path / "hot.tif")


# ---------------------------------------------------------------------- the file transformers reads
def test_round_crop_is_written_with_a_note_for_transformers(fixtures_dir, tmp_path):
    """transformers ignores crop_rounding and rounds down: a file that asks for "round" says so."""
    data = np.load(fixtures_dir / "timm-small" / "expected.npz")
    timm_processor = EfficientFormerImageProcessor.from_timm_config(json.loads(str(data["timm_data_config"])))
    written = timm_processor.to_dict()
    assert written["crop_rounding"] == "round" and "rounds the offsets down" in written["note_for_transformers"]
    timm_processor.save_pretrained(tmp_path / "saved")
    again = EfficientFormerImageProcessor.from_pretrained(tmp_path / "saved")
    assert again == timm_processor and again.crop_rounding == "round" and "note_for_transformers" not in again._extra
    assert "note_for_transformers" not in EfficientFormerImageProcessor(**HUB).to_dict()  # transformers' own


@pytest.mark.parametrize("rounding, first_column", [("floor", 3), ("round", 4)])
def test_padded_center_crop_keeps_the_crop_size(rounding, first_column):
    """A crop taller than the image pads it (transformers: top by ceil, torchvision: by floor) and is always
    crop-sized; "round" used to lose a row there."""
    image = np.arange(5 * 15, dtype=np.uint8).reshape(5, 15)[:, :, None].repeat(3, axis=2)
    out = EfficientFormerImageProcessor()(image, do_resize=False, crop_size={"height": 8, "width": 8},
                                          do_rescale=False, do_normalize=False, crop_rounding=rounding,
                                          return_tensors="np")["pixel_values"][0, 0]
    assert out.shape == (8, 8)
    top = 2 if rounding == "floor" else 1  # padding above the 5 rows: ceil(3 / 2) or 3 // 2
    assert out[:top].max() == 0 and out[top + 5:].max() == 0
    np.testing.assert_array_equal(out[top:top + 5], image[:, first_column:first_column + 8, 0])


# ---------------------------------------------------------------------- the float32 resize and the bulk halves
def test_float32_resize_recomputes_the_samples_near_a_rounding_edge_exactly(monkeypatch):
    """exact32 (float32 products + exact recomputation near half-integers) gives Pillow's bytes on noise, the
    hardest input (every level occurs), at sizes where its fix-up really runs."""
    from efficientformer.preprocessing import exact32, resample

    fixed = []
    original = exact32.Axis.exact

    def counting(self, samples, outputs):
        fixed.append(len(outputs))
        return original(self, samples, outputs)

    monkeypatch.setattr(exact32.Axis, "exact", counting)
    monkeypatch.setattr(exact32, "SINGLE_THREAD_MNK", 5000)  # products split in pieces, as where BLAS threads
    rng = np.random.default_rng(7)
    for _ in range(12):
        height, width = (int(v) for v in rng.integers(40, 500, 2))
        out_w, out_h = (int(v) for v in rng.integers(16, 400, 2))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for code in resample.SUPPORTED:
            box = (out_w // 5, out_h // 7, out_w - out_w // 6, out_h - out_h // 9)
            expected = np.asarray(Image.fromarray(pixels).resize((out_w, out_h), code).crop(box))
            assert np.array_equal(resample.resize_crop(pixels, out_w, out_h, code, box), expected), (
                height, width, out_w, out_h, code)
    assert sum(fixed) > 0  # the exact recomputation was exercised, not only the float32 products


def test_pixel_view_is_the_image_or_nothing(fixtures_dir):
    from efficientformer.preprocessing.image_io import pixel_view

    image = Image.open(fixtures_dir / "images" / "astronaut_640x480.jpg")
    image.load()
    for candidate in (image, image.convert("L")):
        view, _keep = pixel_view(candidate)
        assert np.array_equal(view, np.asarray(candidate)) and not view.flags.writeable
    assert pixel_view(image.convert("RGBA")) is None  # other modes: callers copy
    # over a numpy buffer (how 16-bit and float images reach the resize): Pillow 12's export of these crashed
    assert pixel_view(Image.fromarray(np.asarray(image.convert("L")))) is None
    view, _keep, words = pixel_view(image, words=True)
    for channel in range(3):  # R in the low byte of each word, then G, then B
        assert np.array_equal((words >> (8 * channel)) & 255, np.asarray(image)[:, :, channel])
    assert pixel_view(image.convert("L"), words=True)[2] is None


def test_exif_orientation_is_applied(tmp_path, fixtures_dir):
    from efficientformer.preprocessing.image_io import open_image

    image = Image.open(fixtures_dir / "images" / "chelsea.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    opened = open_image(tmp_path / "rotated.jpg")
    assert opened.size == (image.height, image.width)
    plain = Image.open(tmp_path / "rotated.jpg")
    assert np.array_equal(np.asarray(opened), np.asarray(plain.transpose(Image.Transpose.ROTATE_270)))


@pytest.mark.parametrize("name", ["astronaut_640x480.jpg", "camera.png", "camera_16bit.png", "coffee_rgba.png"])
def test_crop_8bit_through_the_lookup_table_is_preprocess(fixtures_dir, name):
    processor = EfficientFormerImageProcessor(**HUB)
    path = fixtures_dir / "images" / name
    crop, table = processor.crop_8bit(path), processor.lookup_table()
    assert crop.dtype == np.uint8 and crop.shape == (224, 224, 3)
    looked_up = np.stack([table[c][crop[:, :, c]] for c in range(3)])
    assert np.array_equal(looked_up, processor(path, return_tensors="np")["pixel_values"][0])


def test_float32_products_stay_within_their_error_bound():
    """The bound exact32 relies on (the taps of one output, not the band's height, times float32's unit
    roundoff): on noise at the extremes, the hardest input, the float32 products of every band of 60 resizes
    never leave it, and it stays small enough that about 0.04% of a photo's samples are recomputed."""
    from efficientformer.preprocessing import resample

    rng = np.random.default_rng(3)
    worst, checked = 0.0, 0
    for _ in range(60):
        height, width = (int(v) for v in rng.integers(20, 700, 2))
        out_w, out_h = (int(v) for v in rng.integers(8, 500, 2))
        box = (out_w // 5, out_h // 7, out_w - out_w // 6, out_h - out_h // 9)
        for code in resample.SUPPORTED:
            (r0, r1), (c0, c1), _, _, fast = resample._plan(width, height, out_w, out_h, box, code)
            if fast is None:
                continue
            samples = np.where(rng.random((r1 - r0, c1 - c0)) < 0.5, 255, rng.integers(0, 256, (r1 - r0, c1 - c0)))
            samples = samples.astype(np.float32)
            for _, _, i, j, weights in fast[0].bands:
                error = np.abs(samples[:, i:j] @ weights - samples[:, i:j].astype(np.float64) @ weights.astype(
                    np.float64)).max()
                worst = max(worst, error / fast[0].eps)
                checked += 1
    assert checked > 1000 and worst <= 1.0
    hub = resample._plan(640, 480, 341, 256, (58, 16, 282, 240), 3)[4]  # the hub setting on a 640x480 photo
    assert max(hub[0].edge, hub[1].edge) < 2.5e-4  # 2 * edge of the samples are recomputed


@pytest.mark.parametrize("settings", [
    {}, {"image_mean": 0.5, "image_std": 0.25}, {"do_rescale": False, "image_mean": [120, 110, 100]},
    {"do_normalize": False}, {"rescale_factor": 1 / 127.5, "image_mean": [1, 1, 1], "image_std": [1, 1, 1]}])
def test_direct_normalization_is_the_lookup_table_bit_for_bit(fixtures_dir, settings):
    """The processor normalizes with three vector passes where they give the table's values: checked here
    for every pixel of a photo and of a gray image against the table, bits included (the sign of zero)."""
    from efficientformer.preprocessing.processor import _steps_match_lut

    processor = EfficientFormerImageProcessor(**HUB, **settings)
    table = processor.lookup_table()
    for name in ("astronaut_640x480.jpg", "camera.png"):
        path = fixtures_dir / "images" / name
        crop = processor.crop_8bit(path)
        looked_up = np.stack([table[c][crop[:, :, c]] for c in range(3)])
        out = processor(path, return_tensors="np")["pixel_values"][0]
        assert np.array_equal(out.view(np.uint32), looked_up.view(np.uint32))
    mean = tuple(float(v) for v in np.broadcast_to(processor.image_mean, 3)) if processor.do_normalize else None
    std = tuple(float(v) for v in np.broadcast_to(processor.image_std, 3)) if processor.do_normalize else None
    assert _steps_match_lut(processor.do_rescale, processor.rescale_factor, processor.do_normalize, mean, std)


def test_kept_work_arrays_never_leak_into_results(fixtures_dir):
    """The resize keeps its work arrays per thread and reuses them by role: results already returned never
    change, and images of other sizes, a batch on threads and a gray image in between change nothing."""
    processor = EfficientFormerImageProcessor(**HUB)
    paths = [fixtures_dir / "images" / name for name in ("astronaut_640x480.jpg", "chelsea.png", "camera.png")]
    first = [processor(path, return_tensors="np")["pixel_values"] for path in paths]
    kept = [a.copy() for a in first]
    threaded = processor(paths + paths[::-1], return_tensors="np", num_threads=3)["pixel_values"]
    again = [processor(path, return_tensors="np")["pixel_values"] for path in paths[::-1]][::-1]
    for a, b, c in zip(first, kept, again):
        assert np.array_equal(a, b) and np.array_equal(c, b)
    assert np.array_equal(threaded, np.concatenate(kept + kept[::-1]))
