"""Converting between layouts: the written checkpoints load, give the same numbers, and round-trip exactly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from efficientformer.checkpoints import load_checkpoint, read_state_dict  # noqa: E402
from efficientformer.cli import main  # noqa: E402
from efficientformer.checkpoints.conversion import convert  # noqa: E402
from efficientformer.models.pytorch import EfficientFormerForImageClassificationWithTeacher  # noqa: E402


def _assert_identical(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_timm_to_hf_folder_gives_timms_numbers(fixtures_dir, tmp_path):
    result = convert(fixtures_dir / "timm-small" / "timm_model.safetensors", tmp_path / "hf")
    assert result.source_format == "timm" and result.max_abs_diff < 1e-5
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["layer_norm_eps"] == 1e-5
    assert config["architectures"] == ["EfficientFormerForImageClassificationWithTeacher"]
    assert (tmp_path / "hf" / "preprocessor_config.json").is_file()
    expected = np.load(fixtures_dir / "timm-small" / "expected.npz")
    model = EfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        logits = model(torch.from_numpy(expected["pixel_values"])).logits.numpy()
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-5, rtol=0)


def _random_model(cls, tmp_path, name: str, **config) -> str:
    """A small model of a shape timm can build (timm fixes key_dim 32, 8 heads, attention_ratio 4), every
    parameter and buffer random as in the fixtures, saved with save_pretrained; returns the folder."""
    from efficientformer import EfficientFormerConfig

    config = EfficientFormerConfig(**{"depths": [1, 1, 1, 2], "hidden_sizes": [8, 16, 24, 32], "dim": 32,
                                      "num_meta3d_blocks": 1, "id2label": {i: f"class {i}" for i in range(5)},
                                      **config})
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5 if "running_var" in key else torch.randn_like(value) * 0.5)
    model.save_pretrained(str(tmp_path / name))
    return str(tmp_path / name)


@pytest.mark.parametrize("name, via", [("timm-shape", "timm"), ("hf-small", "original")])
def test_hf_there_and_back_gives_identical_tensors(fixtures_dir, tmp_path, name, via):
    source = fixtures_dir / name if name != "timm-shape" else _random_model(
        EfficientFormerForImageClassificationWithTeacher, tmp_path, name)
    there = convert(source, tmp_path / f"{via}.pth" if via == "original" else tmp_path / via,
                    format=via, verify=False)
    back = convert(there.path, tmp_path / "back", format="hf")
    assert back.source_format == via and back.max_abs_diff < 1e-5
    _assert_identical(load_checkpoint(back.path).state_dict, load_checkpoint(source).state_dict)
    if via == "timm":  # timm's config.json keeps label names; the original release format has no place for them
        assert load_checkpoint(back.path).config.id2label == load_checkpoint(source).config.id2label


def test_timm_hub_folder_there_and_back_keeps_timms_file(fixtures_dir, tmp_path):
    hub = fixtures_dir / "timm-small" / "hub"
    convert(hub, tmp_path / "original.pth", format="original", verify=False)
    assert set(torch.load(tmp_path / "original.pth", weights_only=True)) == {"model"}
    convert(tmp_path / "original.pth", tmp_path / "timm", format="timm", verify=False)
    _assert_identical(read_state_dict(tmp_path / "timm" / "model.safetensors"),
                      read_state_dict(hub / "model.safetensors"))
    written = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert written["model_args"]["depths"] == [2, 2, 3, 3] and written["model_args"]["num_vit"] == 2


def test_dtype_cast_is_written_and_verified(fixtures_dir, tmp_path):
    result = convert(fixtures_dir / "hf-tiny", tmp_path / "half", dtype="float16")
    state = read_state_dict(tmp_path / "half" / "model.safetensors")
    assert state["classifier.weight"].dtype == torch.float16
    assert state["efficientformer.encoder.last_stage.meta3D_layers.blocks.0.token_mixer.attention_bias_idxs"].dtype \
        == torch.int64
    assert 0 < result.max_abs_diff < 1e-1  # rounding to float16, reported rather than hidden


def test_convert_command(fixtures_dir, tmp_path, capsys):
    code = main(["convert", str(fixtures_dir / "timm-small" / "original_model.pth"), str(tmp_path / "out"),
                 "--format", "timm"])
    out = capsys.readouterr().out
    assert code == 0 and "original layout" in out and "largest difference" in out
    assert (tmp_path / "out" / "model.safetensors").is_file()
    code = main(["convert", str(fixtures_dir / "timm-small" / "original_train_checkpoint.pth"), str(tmp_path / "x")])
    assert code == 2 and "--allow-training-args" in capsys.readouterr().err
    code = main(["convert", str(fixtures_dir / "timm-small" / "original_train_checkpoint.pth"), str(tmp_path / "x"),
                 "--allow-training-args", "--no-verify"])
    assert code == 0


@pytest.mark.parametrize("settings", [{"size": {"shortest_edge": 256}},  # the released models' resize
                                      {"size": {"shortest_edge": 248}, "resample": 2, "image_mean": [0.5] * 3},
                                      {}])  # transformers' default: an exact 224x224 resize
def test_preprocessing_survives_the_trip_through_timms_pretrained_cfg(settings):
    from efficientformer.config import EfficientFormerConfig
    from efficientformer.checkpoints.timm_meta import timm_pretrained_cfg
    from efficientformer.preprocessing.processor import EfficientFormerImageProcessor

    before = EfficientFormerImageProcessor(**settings).to_dict()
    timm_cfg = timm_pretrained_cfg(before, EfficientFormerConfig())
    after = EfficientFormerImageProcessor.from_timm_config(timm_cfg).to_dict()
    for key in ("size", "crop_size", "resample", "image_mean", "image_std", "do_center_crop"):
        assert after[key] == before[key], key


# ------------------------------------------------------------------------ what timm itself loads
def _load_in_timm(folder):
    """The documented recipe, as pasted: build from config.json, load the weights strictly."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    return model.eval()


@pytest.mark.parametrize("source", ["timm-small", "with-teacher", "single-head", "grayscale", "no-downsample"])
def test_every_timm_folder_convert_writes_loads_in_timm_with_our_logits(fixtures_dir, tmp_path, source):
    from efficientformer import create_model
    from efficientformer.models.pytorch import EfficientFormerForImageClassification

    timm_eps = {"layer_norm_eps": 1e-5}  # timm's LayerNorm eps: the verified difference is the conversion's alone
    if source == "timm-small":  # timm's own folder, through the original layout and back
        convert(fixtures_dir / "timm-small" / "hub", tmp_path / "original.pth", format="original", verify=False)
        src = tmp_path / "original.pth"
    elif source == "with-teacher":  # transformers' eps 1e-12: converted, with a note on the eps change
        src = _random_model(EfficientFormerForImageClassificationWithTeacher, tmp_path, source)
    elif source == "single-head":
        src = _random_model(EfficientFormerForImageClassification, tmp_path, source, **timm_eps)
    elif source == "grayscale":  # as the bundled Fashion-MNIST model: one input channel, timm's in_chans
        src = _random_model(EfficientFormerForImageClassificationWithTeacher, tmp_path, source, num_channels=1,
                            **timm_eps)
    else:  # stages 1 and 2 share a width and no Downsample: every list index after it moves (timm's flags)
        src = _random_model(EfficientFormerForImageClassificationWithTeacher, tmp_path, source, **timm_eps,
                            hidden_sizes=[8, 16, 16, 32], downsamples=[True, False, True, True])
    result = convert(src, tmp_path / "timm", format="timm")
    if source == "with-teacher":
        assert any("LayerNorm eps 1e-05" in note for note in result.notes)
    else:
        assert result.max_abs_diff < 1e-5
    model = _load_in_timm(tmp_path / "timm")
    ours = create_model(load_checkpoint(tmp_path / "timm"))
    channels = 1 if source == "grayscale" else 3
    size = 112 if source == "no-downsample" else 224  # timm runs at the 7x7 token grid it was built for only
    pixels = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_allclose(model(pixels).numpy(), ours(pixels).logits.numpy(), atol=1e-5, rtol=0)
    cfg = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert cfg["model_args"]["num_classes"] == cfg["num_classes"] == (10 if source == "timm-small" else 5)
    if source == "single-head":
        assert any("both heads" in note for note in result.notes)
    if source == "no-downsample":  # timm's folder on to the original layout, and back: the same function
        assert cfg["model_args"]["downsamples"] == [False, True, False, True]
        convert(tmp_path / "timm", tmp_path / "original.pth", format="original")
        again = create_model(load_checkpoint(tmp_path / "original.pth"))
        assert again.config.downsamples[:3] == [True, False, True]
        with torch.no_grad():
            np.testing.assert_allclose(again(pixels).logits.numpy(), ours(pixels).logits.numpy(), atol=1e-5, rtol=0)
    if source == "timm-small":  # timm's numbers, and timm reading the folder on its own
        import timm

        expected = np.load(fixtures_dir / "timm-small" / "expected.npz")
        by_itself = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
        with torch.no_grad():
            for m in (model, by_itself):
                logits = m(torch.from_numpy(expected["pixel_values"])).numpy()
                np.testing.assert_allclose(logits, expected["logits"], atol=1e-5, rtol=0)
        assert by_itself.pretrained_cfg["num_classes"] == 10


def test_timm_format_refuses_shapes_timm_cannot_build(fixtures_dir, tmp_path, capsys):
    code = main(["convert", str(fixtures_dir / "hf-small"), str(tmp_path / "timm"), "--format", "timm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not (tmp_path / "timm").exists()
    assert "key_dim=32" in err and "key_dim=16" in err and "--format hf" in err and len(err.splitlines()) == 1
    from efficientformer.models.pytorch import EfficientFormerModel

    for name, cls, config, says in [
            ("backbone", EfficientFormerModel, {}, "bare backbone"),
            ("no-attention", EfficientFormerForImageClassificationWithTeacher, {"num_meta3d_blocks": 0},
             "num_meta3d_blocks=0"),
            ("pool-5", EfficientFormerForImageClassificationWithTeacher, {"pool_size": 5}, "pool_size=5")]:
        src = _random_model(cls, tmp_path, name, **config)
        assert main(["convert", src, str(tmp_path / "timm"), "--format", "timm"]) == 2
        assert says in capsys.readouterr().err and not (tmp_path / "timm").exists()


# ---------------------------------------------------------------------------- destination guards
def _snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_dst_symlinked_to_the_source_is_refused_and_the_source_kept(fixtures_dir, tmp_path, capsys):
    src = tmp_path / "src"
    assert main(["convert", str(fixtures_dir / "hf-tiny"), str(src), "--no-verify"]) == 0
    before = _snapshot(src)
    (tmp_path / "alias").symlink_to(src)
    for dst in (tmp_path / "alias", src / "sub", tmp_path):  # the source itself, inside it, holding it
        code = main(["convert", str(src), str(dst), "--dtype", "float16", "--overwrite"])
        assert code == 2, dst
        assert "is where the source is" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "release.pth"), "--format", "original", "--no-verify"]) == 0
    (tmp_path / "release-alias.pth").symlink_to(tmp_path / "release.pth")
    release = (tmp_path / "release.pth").read_bytes()
    code = main(["convert", str(tmp_path / "release.pth"), str(tmp_path / "release-alias.pth"), "--format",
                 "original", "--dtype", "float16", "--overwrite"])
    assert code == 2 and "is where the source is" in capsys.readouterr().err
    assert (tmp_path / "release.pth").read_bytes() == release
    assert _snapshot(src) == before and not (src / "sub").exists()


def test_a_dst_that_holds_a_model_needs_overwrite_and_then_keeps_no_stale_files(fixtures_dir, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"):
        (dst / name).write_text("an older model")
    (dst / "notes.txt").write_text("mine")
    code = main(["convert", str(fixtures_dir / "hf-tiny"), str(dst)])
    err = capsys.readouterr().err
    assert code == 2 and "already holds a model" in err and "pass --overwrite" in err
    assert (dst / "model.safetensors").read_text() == "an older model"
    assert main(["convert", str(fixtures_dir / "hf-tiny"), str(dst), "--overwrite"]) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "notes.txt",
                                                      "preprocessor_config.json"]
    _assert_identical(load_checkpoint(dst).state_dict, load_checkpoint(fixtures_dir / "hf-tiny").state_dict)
    assert main(["convert", str(fixtures_dir / "hf-tiny"), str(tmp_path / "m.pth"), "--format", "original"]) == 0
    assert main(["convert", str(fixtures_dir / "hf-tiny"), str(tmp_path / "m.pth"), "--format", "original"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_a_dst_that_is_a_file_or_read_only_is_one_sentence(fixtures_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["convert", str(fixtures_dir / "hf-tiny"), str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file, not a folder" in err and len(err.splitlines()) == 1
    (tmp_path / "locked").mkdir()
    os.chmod(tmp_path / "locked", 0o555)
    try:
        assert main(["convert", str(fixtures_dir / "hf-tiny"), str(tmp_path / "locked" / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert "not a writable folder" in err and len(err.splitlines()) == 1
        assert main(["convert", str(fixtures_dir / "hf-tiny"), str(tmp_path / "locked")]) == 2
        assert "is read-only; make it writable" in capsys.readouterr().err
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert list((tmp_path / "locked").iterdir()) == []
