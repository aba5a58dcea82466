"""GPU decoding (`efficientformer.preprocessing.gpu_decode`, `predict --decode gpu`): the decode-resize-normalize
code gives the CPU processor's pixel values (exactly, from the same decoded pixels), refuses what it cannot
reproduce, reports bad files in the CPU path's words, and bulk prediction through it writes the CPU path's
records and resumes the same way. The code runs here on the CPU, with Pillow standing in for nvJPEG where
torchvision's decoder does not load; with torchvision's CPU decoder when it does; on nvJPEG in the tests
marked `gpu` (skipped without CUDA, run on the H200 by the lead)."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from efficientformer import ImageClassifier  # noqa: E402
from efficientformer.bulk.loader import prepare  # noqa: E402
from efficientformer.bulk.runner import predict_paths  # noqa: E402
from efficientformer.cli import main  # noqa: E402
from efficientformer.errors import ConfigError, InputError, MissingDependencyError  # noqa: E402
from efficientformer.preprocessing import jpeg_header  # noqa: E402
from efficientformer.preprocessing.gpu_decode import (  # noqa: E402
    MEAN_TOLERANCE, TOLERANCE, GpuDecoder, require_decoder)
from efficientformer.preprocessing.processor import EfficientFormerImageProcessor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from end_to_end import make_jpegs  # noqa: E402

HUB = dict(size={"shortest_edge": 256}, crop_size=224, resample=3)  # the released checkpoints' settings
LEVEL = 1 / 255 / 0.224  # one 8-bit level in pixel_values (ImageNet std)


def pillow_jpegs(data: list) -> list:
    """What nvJPEG returns, decoded by Pillow instead: (3, H, W) uint8 RGB, the EXIF orientation not applied."""
    out = []
    for tensor in data:
        image = Image.open(io.BytesIO(bytes(tensor.numpy()))).convert("RGB")
        out.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
    return out


def torchvision_decodes() -> bool:
    try:
        require_decoder("cpu")
    except MissingDependencyError:
        return False
    return True


def decoder(processor, **kwargs) -> GpuDecoder:
    return GpuDecoder(processor, "cpu", decode_jpegs=kwargs.pop("decode_jpegs", pillow_jpegs), **kwargs)


def exact(processor, paths) -> tuple:
    batch = prepare(paths, processor)
    return batch, torch.from_numpy(processor(batch.names, return_tensors="np")["pixel_values"])


def run(dec: GpuDecoder, paths):
    return dec.decode(dec.read_all([str(p) for p in paths]))


def save_jpeg(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, "JPEG", quality=90, **kwargs)
    return path


@pytest.fixture(scope="module")
def photo(fixtures_dir):
    return Image.open(fixtures_dir / "images" / "chelsea.png").convert("RGB")


@pytest.fixture(scope="module")
def odd_sizes(photo, tmp_path_factory):
    """JPEGs of sizes that exercise both pass orders, upscaling, odd margins and a gray one."""
    folder = tmp_path_factory.mktemp("odd")
    paths = []
    for width, height in ((333, 517), (1200, 301), (301, 1200), (640, 480), (150, 97), (224, 224)):
        paths.append(save_jpeg(photo.resize((width, height), Image.BICUBIC), folder / f"{width}x{height}.jpg"))
    paths.append(save_jpeg(photo.convert("L").resize((410, 290)), folder / "gray.jpg"))
    paths.append(save_jpeg(photo.resize((500, 375)), folder / "progressive.jpg", progressive=True))
    return paths


# ---------------------------------------------------------------------- the header scan
def test_header_of_jpegs_nvjpeg_takes_and_of_files_it_leaves_to_pillow(fixtures_dir, photo, tmp_path):
    images = fixtures_dir / "images"
    rocket = (images / "rocket.jpg").read_bytes()
    assert jpeg_header.scan(rocket) == jpeg_header.Header(640, 427, 1, len(rocket))
    data = save_jpeg(photo, tmp_path / "a.jpg").read_bytes()
    assert jpeg_header.scan(data) == jpeg_header.Header(451, 300, 1, len(data))
    assert jpeg_header.scan(data + b"\xff\xd8 appended video") == jpeg_header.Header(451, 300, 1, len(data))
    assert jpeg_header.scan(save_jpeg(photo, tmp_path / "p.jpg", progressive=True).read_bytes()) is not None
    assert jpeg_header.scan(save_jpeg(photo.convert("L"), tmp_path / "g.jpg").read_bytes()) is not None
    refused = {
        "truncated": (images / "truncated.jpg").read_bytes(),
        "not a JPEG": (images / "not_an_image.jpg").read_bytes(),
        "PNG": (images / "coffee.png").read_bytes(),
        "cut short": data[:len(data) // 2],
        "CMYK": save_jpeg(photo.convert("CMYK"), tmp_path / "c.jpg").read_bytes(),
    }
    for what, payload in refused.items():
        assert jpeg_header.scan(payload) is None, what


def test_exif_orientations_turn_the_image_as_pillow_does(photo, tmp_path):
    """Each EXIF orientation: the header reads it and the decoded, turned, resized pixels are the CPU path's."""
    processor = EfficientFormerImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 48, "width": 56})
    paths = []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = save_jpeg(photo.resize((120, 80)), tmp_path / f"o{orientation}.jpg", exif=exif)
        header = jpeg_header.scan(path.read_bytes())
        assert header.orientation == orientation
        assert header.size == ((120, 80) if orientation >= 5 else (80, 120))
        paths.append(str(path))
    batch = run(decoder(processor), paths)
    cpu, values = exact(processor, paths)
    assert batch.names == cpu.names == paths
    assert torch.equal(batch.pixels, values)


def test_an_orientation_in_xmp_is_left_to_pillow(photo, tmp_path):
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    path = save_jpeg(photo, tmp_path / "xmp.jpg", xmp=xmp)
    assert jpeg_header.scan(path.read_bytes()) is None
    processor = EfficientFormerImageProcessor(**HUB)
    assert torch.equal(run(decoder(processor), [path]).pixels, exact(processor, [str(path)])[1])


# ---------------------------------------------------------------------- the pixel values
SETTINGS = {
    "hub": HUB,
    "bilinear, exact size, no crop": dict(size={"height": 96, "width": 96}, do_center_crop=False, resample=2),
    "box, rounded crop offsets": dict(size={"shortest_edge": 131}, crop_size={"height": 97, "width": 120},
                                      resample=4, crop_rounding="round"),
    "crop larger than the resize (padded)": dict(size={"shortest_edge": 200}, crop_size=224),
    "upscaling": dict(size={"shortest_edge": 640}, crop_size=600),
    "no resize": dict(do_resize=False, crop_size={"height": 90, "width": 140}),
    "no normalize": dict(size=128, do_normalize=False, crop_size=100),
    "nothing but the resize": dict(size={"height": 64, "width": 80}, do_center_crop=False, do_rescale=False,
                                   do_normalize=False),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_pixel_values_are_the_processors_for_each_setting(name, odd_sizes):
    processor = EfficientFormerImageProcessor(**SETTINGS[name])
    paths = [str(p) for p in odd_sizes]
    batch = run(decoder(processor), paths)
    cpu, values = exact(processor, paths)
    assert batch.names == cpu.names and batch.failed == cpu.failed
    assert batch.pixels.dtype == torch.float32 and batch.pixels.shape == values.shape
    assert float((batch.pixels - values).abs().max()) == 0.0


def test_sizes_that_differ_without_a_crop_fail_as_on_the_cpu_path(odd_sizes):
    processor = EfficientFormerImageProcessor(size={"shortest_edge": 64}, do_center_crop=False)
    paths = [str(p) for p in odd_sizes]
    batch = run(decoder(processor), paths)
    cpu, values = exact(processor, paths)
    assert batch.names == cpu.names and batch.failed == cpu.failed and len(batch.failed) >= 1
    assert torch.equal(batch.pixels, values)


def test_dtype_and_channels_last_are_the_models(odd_sizes):
    processor = EfficientFormerImageProcessor(**HUB)
    paths = [str(p) for p in odd_sizes[:3]]
    batch = run(decoder(processor, dtype=torch.bfloat16, channels_last=True), paths)
    assert batch.pixels.dtype == torch.bfloat16
    assert batch.pixels.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch.pixels, exact(processor, paths)[1].to(torch.bfloat16))


def test_settings_it_cannot_reproduce_are_refused_before_any_file():
    with pytest.raises(ConfigError, match="lanczos; use --decode cpu"):
        GpuDecoder(EfficientFormerImageProcessor(resample=1), "cpu", decode_jpegs=pillow_jpegs)
    with pytest.raises(ConfigError, match="image_std contains 0"):
        GpuDecoder(EfficientFormerImageProcessor(image_std=[0.2, 0, 0.2]), "cpu", decode_jpegs=pillow_jpegs)


# ---------------------------------------------------------------------- files that fail or fall back
def test_bad_and_other_files_are_decoded_or_reported_as_on_the_cpu_path(fixtures_dir, tmp_path):
    images = fixtures_dir / "images"
    names = ("rocket.jpg", "truncated.jpg", "astronaut.png", "not_an_image.jpg", "camera_16bit.png",
             "coffee_rgba.png", "astronaut_640x480.jpg", "camera.png")
    paths = [str(images / n) for n in names] + [str(tmp_path / "missing.jpg"), str(tmp_path)]
    processor = EfficientFormerImageProcessor(**HUB)
    batch = run(decoder(processor), paths)
    cpu, values = exact(processor, paths)
    assert batch.names == cpu.names and len(batch.names) == 6
    assert batch.failed == cpu.failed and len(batch.failed) == 4
    assert torch.equal(batch.pixels, values)


def test_members_of_a_tar_shard_are_decoded_as_the_files(fixtures_dir, tmp_path):
    import tarfile

    images = fixtures_dir / "images"
    names = ("rocket.jpg", "astronaut.png", "truncated.jpg", "astronaut_640x480.jpg")
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for name in names:
            tar.add(images / name, arcname=f"x/{name}")
    processor = EfficientFormerImageProcessor(**HUB)
    members = [f"{shard}::x/{name}" for name in names] + [f"{shard}::x/missing.jpg"]
    batch = run(decoder(processor), members)
    files, values = exact(processor, [str(images / name) for name in names])
    assert batch.names == [f"{shard}::x/{Path(n).name}" for n in files.names]
    assert torch.equal(batch.pixels, values)  # the same pixels as from the files themselves
    assert [name for name, _ in batch.failed] == [f"{shard}::x/truncated.jpg", f"{shard}::x/missing.jpg"]


def test_a_batch_nvjpeg_refuses_is_retried_file_by_file(odd_sizes):
    """nvJPEG fails a whole call for one bad file: each file is tried alone, and the refused one is decoded on
    the CPU, so the batch still gives the CPU path's values."""
    refused = odd_sizes[1].read_bytes()
    calls = []

    def picky(data: list) -> list:
        calls.append(len(data))
        if any(bytes(t.numpy()) == refused for t in data):
            raise RuntimeError("nvjpeg: unsupported")
        return pillow_jpegs(data)

    processor = EfficientFormerImageProcessor(**HUB)
    paths = [str(p) for p in odd_sizes]
    batch = run(decoder(processor, decode_jpegs=picky), paths)
    assert calls[0] == len(paths) and calls[1:] == [1] * len(paths)
    assert torch.equal(batch.pixels, exact(processor, paths)[1])


def test_missing_torchvision_is_named_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(MissingDependencyError, match="needs torchvision.*--decode cpu"):
        require_decoder("cpu")


@pytest.mark.skipif(not torchvision_decodes(), reason="torchvision's JPEG decoder does not load here")
def test_torchvision_cpu_decoder_gives_the_processors_values(fixtures_dir, tmp_path):
    paths = make_jpegs(tmp_path, 12) + [str(fixtures_dir / "images" / n) for n in ("rocket.jpg", "truncated.jpg")]
    processor = EfficientFormerImageProcessor(**HUB)
    dec = GpuDecoder(processor, "cpu")
    batch = run(dec, paths)
    cpu, values = exact(processor, paths)
    assert batch.names == cpu.names and batch.failed == cpu.failed
    assert float((batch.pixels - values).abs().max()) <= LEVEL  # measured: 0 (libjpeg-turbo on both sides)


# ---------------------------------------------------------------------- bulk prediction through it
@pytest.fixture(scope="module")
def classifier(fixtures_dir):
    return ImageClassifier.from_pretrained(str(fixtures_dir / "hf-tiny"), device="cpu")


@pytest.fixture(scope="module")
def folder(fixtures_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-bulk")
    for i in range(3):
        for name in ("chelsea.png", "rocket.jpg", "astronaut_640x480.jpg"):
            shutil.copy(fixtures_dir / "images" / name, root / f"{i}_{name}")
    shutil.copy(fixtures_dir / "images" / "truncated.jpg", root / "truncated.jpg")
    return sorted(str(p) for p in root.iterdir())


def test_bulk_prediction_writes_the_cpu_paths_records_and_resumes(classifier, folder, tmp_path):
    cpu_out, gpu_out = tmp_path / "cpu.jsonl", tmp_path / "gpu.jsonl"
    cpu = predict_paths(classifier, folder, top_k=3, batch_size=4, workers=0, output=cpu_out)
    dec = decoder(classifier.processor)
    gpu = predict_paths(classifier, folder, top_k=3, batch_size=4, workers=2, output=gpu_out, decode=dec)
    assert gpu_out.read_text() == cpu_out.read_text() and len(gpu_out.read_text().splitlines()) == 9
    threads_out = tmp_path / "threads.jsonl"  # files read by threads of this process instead of 2 processes
    predict_paths(classifier, folder, top_k=3, batch_size=4, workers=0, output=threads_out, decode=dec)
    assert threads_out.read_text() == cpu_out.read_text()
    assert gpu.failed == cpu.failed and [name for name, _ in gpu.failed] == [folder[-1]]
    lines = gpu_out.read_text().splitlines(keepends=True)
    gpu_out.write_text("".join(lines[:4]))  # a job killed after its first batch
    again = predict_paths(classifier, folder, top_k=3, batch_size=4, output=gpu_out, decode=dec)
    assert again.already_done == 4 and len(again.predictions) == 5
    assert gpu_out.read_text() == cpu_out.read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_decode_gpu_without_cuda_is_one_sentence(classifier, folder, fixtures_dir, capsys):
    with pytest.raises(InputError, match="nvJPEG on a CUDA GPU, but the model runs on cpu"):
        predict_paths(classifier, folder, decode="gpu")
    model = str(fixtures_dir / "hf-tiny")
    assert main(["predict", folder[0], "-m", model, "--decode", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--decode gpu decodes with nvJPEG on a CUDA GPU, and PyTorch sees none here" in err
    assert err.count("\n") == 0
    assert main(["predict", folder[0], "-m", model, "--decode", "gpu", "--device", "cpu"]) == 2
    assert "--device cpu was given" in capsys.readouterr().err


# ---------------------------------------------------------------------- nvJPEG (the H200)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
def test_nvjpeg_is_within_the_stated_tolerance(fixtures_dir, tmp_path):
    paths = make_jpegs(tmp_path, 40) + [str(fixtures_dir / "images" / "rocket.jpg")]
    processor = EfficientFormerImageProcessor(**HUB)
    batch = run(GpuDecoder(processor, "cuda"), paths)
    cpu, values = exact(processor, paths)
    assert batch.names == cpu.names and batch.pixels.is_cuda
    diff = (batch.pixels.cpu() - values).abs()
    assert float(diff.max()) <= TOLERANCE and float(diff.mean()) <= MEAN_TOLERANCE


@pytest.mark.gpu
@cuda
def test_predict_files_on_the_gpu_classifies_every_file_and_reports_the_bad_one(fixtures_dir, folder, tmp_path):
    classifier = ImageClassifier.from_pretrained(str(fixtures_dir / "hf-tiny"), device="cuda")
    result = classifier.predict_files(folder, top_k=1, batch_size=4, output=tmp_path / "o.jsonl", decode="gpu")
    cpu = classifier.predict_files(folder, top_k=1, batch_size=4, workers=0)
    assert [n for n, _ in result.predictions] == [n for n, _ in cpu.predictions]
    assert result.failed == cpu.failed
    # a tiny random model's classes lie close together: nvJPEG's few levels may flip one or two of nine
    agree = sum(a[0].index == b[0].index for (_, a), (_, b) in zip(result.predictions, cpu.predictions))
    assert agree >= len(cpu.predictions) - 2
