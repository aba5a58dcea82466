"""Converting between layouts: the written checkpoints load, give the same numbers, and round-trip exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientformer.modeling_torch")
pytest.importorskip("efficientformer.processing")

from efficientformer.checkpoints import load_checkpoint, read_state_dict  # noqa: E402
from efficientformer.cli import main  # noqa: E402
from efficientformer.convert import convert  # noqa: E402
from efficientformer.modeling_torch import EfficientFormerForImageClassificationWithTeacher  # noqa: E402


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


@pytest.mark.parametrize("name, via", [("hf-tiny", "timm"), ("hf-small", "original")])
def test_hf_there_and_back_gives_identical_tensors(fixtures_dir, tmp_path, name, via):
    there = convert(fixtures_dir / name, tmp_path / f"{via}.pth" if via == "original" else tmp_path / via,
                    format=via, verify=False)
    back = convert(there.path, tmp_path / "back", format="hf")
    assert back.source_format == via and back.max_abs_diff < 1e-5
    _assert_identical(load_checkpoint(back.path).state_dict, load_checkpoint(fixtures_dir / name).state_dict)
    if via == "timm":  # timm's config.json keeps label names; the original release format has no place for them
        assert load_checkpoint(back.path).config.id2label == load_checkpoint(fixtures_dir / name).config.id2label


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
    from efficientformer.convert import timm_pretrained_cfg
    from efficientformer.processing import EfficientFormerImageProcessor

    before = EfficientFormerImageProcessor(**settings).to_dict()
    timm_cfg = timm_pretrained_cfg(before, EfficientFormerConfig())
    after = EfficientFormerImageProcessor.from_timm_config(timm_cfg).to_dict()
    for key in ("size", "crop_size", "resample", "image_mean", "image_std", "do_center_crop"):
        assert after[key] == before[key], key
