"""Reading checkpoints of every layout: files, folders, hub ids, inference of the architecture, safety."""

from __future__ import annotations

import json
import os
import shutil

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from efficientformer.checkpoints import expected_shapes, infer_config, load_checkpoint
from efficientformer.config import EfficientFormerConfig
from efficientformer.errors import CheckpointError

TIMM_FILES = ("timm_model.safetensors", "timm_model.pth", "original_model.pth")


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def timm_small(fixtures_dir):
    return fixtures_dir / "timm-small"


@pytest.mark.parametrize("filename", TIMM_FILES)
def test_timm_and_original_files_give_the_architecture_and_the_same_tensors(timm_small, filename):
    ckpt = load_checkpoint(timm_small / filename)
    reference = load_checkpoint(timm_small / "timm_model.safetensors")
    assert ckpt.format == ("original" if filename.startswith("original") else "timm")
    cfg = ckpt.config
    assert (cfg.depths, cfg.hidden_sizes, cfg.num_meta3d_blocks) == ([2, 2, 3, 3], [16, 32, 48, 64], 2)
    assert (cfg.num_attention_heads, cfg.key_dim, cfg.attention_ratio, cfg.resolution) == (8, 32, 4, 7)
    assert (cfg.mlp_expansion_ratio, cfg.num_labels, cfg.distillation) == (4, 10, True)
    assert cfg.layer_norm_eps == 1e-5  # timm's LayerNorm, not transformers' 1e-12
    assert ckpt.source.endswith(filename)
    assert _same(ckpt.state_dict, reference.state_dict)
    assert set(ckpt.state_dict) == set(expected_shapes(cfg))


def test_timm_hub_folder_brings_label_names_and_preprocessing(timm_small):
    ckpt = load_checkpoint(timm_small / "hub")
    assert ckpt.format == "timm" and ckpt.source.endswith("model.safetensors")
    assert ckpt.config.id2label[0] == "T-shirt/top" and ckpt.config.id2label[9] == "Ankle boot"
    assert ckpt.processor["image_mean"] == [0.5, 0.5, 0.5] and ckpt.processor["image_std"] == [0.25, 0.25, 0.25]
    assert ckpt.processor["crop_size"] == {"height": 224, "width": 224}


@pytest.mark.parametrize("name", ["hf-tiny", "hf-small"])
def test_transformers_folder_uses_its_config_and_prefers_safetensors(fixtures_dir, name):
    folder = fixtures_dir / name
    ckpt = load_checkpoint(folder)
    assert ckpt.format == "transformers" and ckpt.source.endswith("model.safetensors")
    assert ckpt.config == EfficientFormerConfig.from_json_file(folder / "config.json")
    assert ckpt.processor == json.loads((folder / "preprocessor_config.json").read_text())
    pickled = load_checkpoint(folder / "pytorch_model.bin")
    assert _same(pickled.state_dict, ckpt.state_dict)


@pytest.mark.parametrize("name", ["hf-tiny", "hf-small", "hf-tiny-256"])
def test_a_single_transformers_file_gets_its_architecture_from_the_shapes(fixtures_dir, name):
    truth = EfficientFormerConfig.from_json_file(fixtures_dir / name / "config.json")
    cfg = load_checkpoint(fixtures_dir / name / "model.safetensors").config
    for field in ("depths", "hidden_sizes", "num_meta3d_blocks", "key_dim", "num_attention_heads",
                  "attention_ratio", "resolution", "mlp_expansion_ratio", "num_labels", "image_size"):
        assert getattr(cfg, field) == getattr(truth, field), field


@pytest.mark.parametrize("variant", ["l1", "l3", "l7"])
def test_full_size_architectures_are_inferred(fixtures_dir, variant):
    shapes = json.loads((fixtures_dir / "architectures.json").read_text())[variant]["transformers"]
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    preset = EfficientFormerConfig.from_preset(variant)
    assert expected_shapes(preset) == {k: tuple(s) for k, s in shapes.items()}
    cfg = infer_config(state)
    for field in ("depths", "hidden_sizes", "num_meta3d_blocks", "key_dim", "num_attention_heads",
                  "attention_ratio", "resolution", "mlp_expansion_ratio", "num_labels"):
        assert getattr(cfg, field) == getattr(preset, field), field


def test_a_missing_downsample_is_inferred_from_the_positions():
    """Stages 1 and 2 share a width and have no Downsample between them, so `intermediate_stages` does not
    alternate (stages at 0, 2, 3; Downsamples at 1, 4): the positions are read off the keys."""
    from conftest import randomize, tiny_config

    from efficientformer.models.pytorch.models import EfficientFormerForImageClassification

    truth = tiny_config("keras", downsamples=[True, False, True, True])
    state = randomize(EfficientFormerForImageClassification(truth)).state_dict()
    cfg = infer_config(state)
    assert (cfg.depths, cfg.hidden_sizes, cfg.downsamples) == (truth.depths, truth.hidden_sizes, truth.downsamples)
    EfficientFormerForImageClassification(cfg).load_state_dict(state)


def test_hub_ids_load_offline_from_the_cache(fixtures_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = load_checkpoint("efficientformer-fixtures/hf-tiny", cache_dir=str(fixtures_dir / "hub"))
    assert hf.format == "transformers" and hf.config.id2label == {0: "cat", 1: "coffee", 2: "rocket"}
    timm_ckpt = load_checkpoint("efficientformer-fixtures/timm-small", cache_dir=str(fixtures_dir / "hub"),
                                local_files_only=True)
    assert timm_ckpt.format == "timm" and timm_ckpt.config.num_labels == 10
    with pytest.raises(CheckpointError, match="offline"):
        load_checkpoint("efficientformer-fixtures/absent", cache_dir=str(fixtures_dir / "hub"), local_files_only=True)


def test_a_config_json_that_does_not_fit_the_weights_names_key_and_shapes(fixtures_dir, tmp_path):
    shutil.copy(fixtures_dir / "hf-tiny" / "model.safetensors", tmp_path)
    config = json.loads((fixtures_dir / "hf-tiny" / "config.json").read_text())
    config["num_attention_heads"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"attention_biases has shape \(2, 49\) but .* implies \(4, 49\)"):
        load_checkpoint(tmp_path)


def test_training_checkpoint_is_refused_unless_its_arguments_are_allowed(timm_small):
    path = timm_small / "original_train_checkpoint.pth"
    with pytest.raises(CheckpointError, match="original_train_checkpoint.pth.*argparse.Namespace.*allow_training_args"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, allow_training_args=True)
    assert ckpt.format == "original"
    assert _same(ckpt.state_dict, load_checkpoint(timm_small / "original_model.pth").state_dict)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickles_with_other_objects_are_not_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"head.weight": torch.zeros(1)}, "x": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pth contains a pickled Python object \(posix.getcwd\)"):
        load_checkpoint(path)


@pytest.mark.parametrize("filename", ["timm_model.safetensors", "original_model.pth"])
def test_truncated_files_give_a_clear_error(timm_small, tmp_path, filename):
    data = (timm_small / filename).read_bytes()
    path = tmp_path / filename
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=f"{filename}.*(truncated|corrupt)"):
        load_checkpoint(path)


def test_wrong_files_give_a_clear_error(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pth is not a weights file"):
        load_checkpoint(text)
    image = tmp_path / "photo.pth"  # an image passed as weights by mistake is named as one
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match="photo.pth is a PNG image, not a weights file"):
        load_checkpoint(image)
    other = tmp_path / "resnet.safetensors"
    safetensors_torch.save_file({"fc.weight": torch.zeros(2, 2), "conv1.weight": torch.zeros(1)}, str(other))
    with pytest.raises(CheckpointError, match="resnet.safetensors is not an EfficientFormer checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing" / "model.pth")
    with pytest.raises(CheckpointError, match="several weights files"):
        load_checkpoint(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor pytorch_model.bin"):
        load_checkpoint(empty)


def test_thousand_generic_labels_become_imagenet_names_and_wrappers_are_removed(fixtures_dir, tmp_path):
    state = safetensors_torch.load_file(str(fixtures_dir / "hf-tiny" / "model.safetensors"))
    for head in ("classifier", "distillation_classifier"):
        state[f"{head}.weight"] = torch.zeros(1000, 32)
        state[f"{head}.bias"] = torch.zeros(1000)
    path = tmp_path / "ddp.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.config.num_labels == 1000
    assert ckpt.config.id2label[0].startswith("tench") and "efficientformer.layernorm.weight" in ckpt.state_dict


@pytest.mark.parametrize("source", ["original_model.pth", "hub"])
def test_timm_and_original_weights_give_timms_numbers(timm_small, source):
    """Both ends of the mapping (the original release, timm's hub folder) reproduce timm's outputs; the other
    files give tensor-identical checkpoints (tested above)."""
    import numpy as np

    from efficientformer.models import pytorch as mt
    expected = np.load(timm_small / "expected.npz")
    model = mt.EfficientFormerForImageClassificationWithTeacher.from_pretrained(timm_small / source)
    pixels = torch.from_numpy(expected["pixel_values"])
    with torch.no_grad():
        out = model(pixels)
        features = model.efficientformer.forward_intermediates(pixels, intermediates_only=True)
        tokens = model.efficientformer.layernorm(features[3].flatten(2).transpose(1, 2))
    got = {"logits": out.logits, "head_logits": out.cls_logits, "head_dist_logits": out.distillation_logits,
           "last_hidden_state": tokens, **{f"features.{i}": f for i, f in enumerate(features)}}
    for name, value in got.items():
        np.testing.assert_allclose(value.numpy(), expected[name], atol=1e-5, rtol=0, err_msg=name)


def test_buffers_missing_from_a_file_are_rebuilt(timm_small, tmp_path):
    full = safetensors_torch.load_file(str(timm_small / "timm_model.safetensors"))
    stripped = {k: v for k, v in full.items() if not k.endswith(("attention_bias_idxs", "num_batches_tracked"))}
    safetensors_torch.save_file(stripped, str(tmp_path / "no_buffers.safetensors"))
    rebuilt = load_checkpoint(tmp_path / "no_buffers.safetensors").state_dict
    reference = load_checkpoint(timm_small / "timm_model.safetensors").state_dict
    assert set(rebuilt) == set(reference)
    idxs = [k for k in reference if k.endswith("attention_bias_idxs")]
    assert idxs and all(torch.equal(rebuilt[k], reference[k]) for k in idxs)


@pytest.mark.parametrize("path", ["hf-tiny/model.safetensors", "hf-small/pytorch_model.bin", "hf-tiny-256"])
def test_transformers_files_give_transformers_numbers(fixtures_dir, path):
    """A lone weights file (architecture read from the shapes) and a folder give transformers' outputs."""
    import numpy as np

    from efficientformer.models import pytorch as mt
    expected = np.load(fixtures_dir / path.split("/")[0] / "expected.npz")
    model = mt.EfficientFormerForImageClassificationWithTeacher.from_pretrained(fixtures_dir / path)
    with torch.no_grad():
        out = model(torch.from_numpy(expected["pixel_values"]))
    for name in ("logits", "cls_logits", "distillation_logits"):
        np.testing.assert_allclose(getattr(out, name).numpy(), expected[f"teacher.{name}"], atol=1e-5, rtol=0)


# ------------------------------------------------------------------ honest tensors, bounded reading (issue 13)
def _copy_folder(src, dst):
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, dst / name)
    return dst


def _relabel(path, key: str, dtype: str) -> None:
    """Change the dtype of one tensor in a safetensors header, keeping its bytes (a forged or damaged file)."""
    import struct

    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    header[key]["dtype"] = dtype
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= size
    path.write_bytes(data[:8] + text.ljust(size) + data[8 + size:])


def test_a_float_weight_relabelled_as_integer_is_refused(fixtures_dir, tmp_path):
    folder = _copy_folder(fixtures_dir / "hf-tiny", tmp_path / "m")
    _relabel(folder / "model.safetensors", "classifier.weight", "I32")  # used to load, logits off by 0.68
    with pytest.raises(CheckpointError, match=r"model.safetensors: classifier.weight is stored as int32, but it is a "
                                              r"weight and must be one of float16, bfloat16, float32, float64"):
        load_checkpoint(folder)
    state = safetensors_torch.load_file(str(fixtures_dir / "hf-tiny" / "model.safetensors"))
    key = next(k for k in state if k.endswith("num_batches_tracked"))
    safetensors_torch.save_file({**state, key: state[key].float()}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"{key} is stored as float32, but it is an integer buffer"):
        load_checkpoint(folder)
    key = next(k for k in state if k.endswith("attention_bias_idxs"))
    safetensors_torch.save_file({**state, key: state[key] + 1000}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"{key} holds indices outside 0..48"):
        load_checkpoint(folder)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_nan_or_infinite_weights_are_refused_at_load(fixtures_dir, tmp_path, value, filename):
    state = safetensors_torch.load_file(str(fixtures_dir / "hf-tiny" / "model.safetensors"))
    key = "efficientformer.encoder.last_stage.meta3D_layers.blocks.0.token_mixer.qkv.weight"
    state[key][3, 1] = value
    path = tmp_path / filename
    if filename.endswith(".safetensors"):
        safetensors_torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"{filename}: {key} contains NaN or infinite values"):
        load_checkpoint(path)  # used to load and give nan scores with exit code 0


def test_negative_batchnorm_variances_are_refused(fixtures_dir, tmp_path):
    state = safetensors_torch.load_file(str(fixtures_dir / "hf-tiny" / "model.safetensors"))
    key = "efficientformer.patch_embed.batchnorm_before.running_var"
    state[key][0] = -1.0
    safetensors_torch.save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"{key} holds negative variances"):
        load_checkpoint(tmp_path / "model.safetensors")


def test_a_nan_epsilon_in_config_json_is_refused(fixtures_dir, tmp_path):
    folder = _copy_folder(fixtures_dir / "hf-tiny", tmp_path / "m")
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text.replace('"layer_norm_eps": 1e-12', '"layer_norm_eps": NaN'))
    assert "NaN" in (folder / "config.json").read_text()
    with pytest.raises(CheckpointError, match=r"config.json is not a valid EfficientFormer config.json "
                                              r"\(layer_norm_eps=nan is invalid"):
        load_checkpoint(folder)


def test_a_model_that_overflows_to_nan_scores_never_reports_a_prediction(fixtures_dir):
    import numpy as np

    from efficientformer.classifier import ImageClassifier

    classifier = ImageClassifier.from_pretrained(fixtures_dir / "hf-tiny", device="cpu")
    with torch.no_grad():
        classifier.model.classifier.weight.fill_(3e38)  # finite weights whose products overflow
    with pytest.raises(CheckpointError, match="NaN or infinite scores for 1 of 1 images"):
        classifier.predict(np.full((40, 40, 3), 120, dtype=np.uint8))


def _deflated_copy(src, dst) -> None:
    """The torch.save archive `src` re-packed with deflate (torch.save itself never compresses)."""
    import zipfile

    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info.filename))


def test_a_zip_bomb_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    from efficientformer.checkpoints import reading

    plain = tmp_path / "plain.pth"
    torch.save({"head.weight": torch.zeros(4 * 2**20)}, plain)  # 16 MiB of zeros deflate to about 16 KiB
    bomb = tmp_path / "bomb.pth"
    _deflated_copy(plain, bomb)
    assert bomb.stat().st_size < 2**20

    def must_not_run(*args, **kwargs):
        raise AssertionError("torch.load ran on a zip bomb")

    monkeypatch.setattr(torch, "load", must_not_run)
    with pytest.raises(CheckpointError, match=r"bomb.pth: entry .*data/0 unpacks .* into 16,777,216, a compression "
                                              "torch.save never writes"):
        load_checkpoint(bomb)
    monkeypatch.setattr(reading, "MAX_ARCHIVE_BYTES", 2**20)  # the total bound, shown on a real file
    with pytest.raises(CheckpointError, match=r"plain.pth declares 16 MiB of data, more than the 1 MiB"):
        load_checkpoint(plain)


@pytest.mark.parametrize("filename", ["timm_model.safetensors", "original_model.pth"])
def test_permission_denied_is_named_not_called_corrupt(timm_small, tmp_path, monkeypatch, filename):
    import builtins

    path = tmp_path / filename
    shutil.copy(timm_small / filename, path)
    real_open = builtins.open

    def denied(file, *args, **kwargs):  # the tests may run as root, where chmod 000 does not stop a read
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(CheckpointError, match=f"cannot read {path}: permission denied; make it readable") as info:
        load_checkpoint(path)
    assert "corrupt" not in str(info.value)


def test_an_unreadable_folder_is_named_not_called_empty(fixtures_dir, monkeypatch):
    folder = str(fixtures_dir / "hf-tiny")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path) == folder else real_access(path, mode))
    with pytest.raises(CheckpointError, match=f"cannot read the folder {folder}: permission denied"):
        load_checkpoint(folder)  # its files looked absent: "has neither model.safetensors nor ..."
