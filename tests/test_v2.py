"""EfficientFormerV2 (PyTorch): parity with timm's outputs from every layout, any input size, the key table
against the original repository's module names, config, factory, conversion and the input checks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import FIXTURES, assert_close, randomize, tiny_config_v2

torch = pytest.importorskip("torch")

from efficientformer import (  # noqa: E402
    ConfigError,
    EfficientFormerV2Config,
    EfficientFormerV2ForImageClassification,
    EfficientFormerV2ForImageClassificationWithTeacher,
    EfficientFormerV2Model,
    InputError,
    create_model,
    list_models,
)
from efficientformer.checkpoints.keys_v2 import (  # noqa: E402
    bias_index_buffers,
    convert_state_dict_v2,
    detect_format_v2,
)
from efficientformer.checkpoints.loading import load_checkpoint  # noqa: E402

V2 = FIXTURES / "timm-v2-tiny"
SOURCES = ("hub", "timm_model.safetensors", "timm_model.pth")


@pytest.fixture(scope="module")
def fixture_v2(fixtures_dir):
    with np.load(V2 / "expected.npz") as data:
        return {key: data[key] for key in data.files}


def _assert_fixture_outputs(model, expected) -> None:
    pixels = torch.from_numpy(expected["pixel_values"])
    with torch.no_grad():
        out = model(pixels)
        assert_close(out.logits, expected["logits"])
        assert_close(out.cls_logits, expected["head_logits"])
        assert_close(out.distillation_logits, expected["head_dist_logits"])
        assert_close(model.forward_features(pixels), expected["last_feature_map"])
        final, maps = model.forward_intermediates(pixels)
    assert_close(final, expected["last_feature_map"])
    assert len(maps) == 4
    for i, feature in enumerate(maps):
        assert_close(feature, expected[f"features.{i}"])


# ------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("source", SOURCES)
def test_every_fixture_file_gives_timms_outputs(source, fixture_v2):
    model = create_model(V2 / source)
    assert type(model) is EfficientFormerV2ForImageClassificationWithTeacher
    assert load_checkpoint(V2 / source).format == "timm"
    _assert_fixture_outputs(model, fixture_v2)


def test_the_hub_folder_brings_timms_labels_and_preprocessing():
    checkpoint = load_checkpoint(V2 / "hub")
    names = json.loads((V2 / "hub" / "config.json").read_text())["label_names"]
    assert list(checkpoint.config.id2label.values()) == names
    assert checkpoint.processor["size"] == {"shortest_edge": 235} and checkpoint.processor["resample"] == 3
    config = checkpoint.config
    assert (config.depths, config.hidden_sizes, config.mlp_ratios, config.num_attention_blocks, config.image_size) == (
        [1, 1, 2, 2], [16, 24, 32, 48], [[4], [4], [4, 3], [3, 4]], 1, 224)


def test_our_folder_round_trip_and_the_bare_backbone(fixture_v2, tmp_path):
    model = create_model(V2 / "hub")
    model.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["model_type"] == "efficientformer_v2"
    assert saved["architectures"] == ["EfficientFormerV2ForImageClassificationWithTeacher"]
    _assert_fixture_outputs(EfficientFormerV2ForImageClassificationWithTeacher.from_pretrained(tmp_path / "ours"),
                            fixture_v2)
    backbone = EfficientFormerV2Model.from_pretrained(tmp_path / "ours").eval()
    torch.save(backbone.state_dict(), tmp_path / "bare.pth")  # no prefix, no heads
    bare = create_model(tmp_path / "bare.pth")
    assert type(bare) is EfficientFormerV2Model
    with torch.no_grad():
        assert_close(bare(torch.from_numpy(fixture_v2["pixel_values"])).last_hidden_state,
                     fixture_v2["last_feature_map"])


# ------------------------------------------------------------------------------- the original layout
# The snap-research module tree (models/efficientformer_v2.py), written out here from its module definitions:
# a key of the original layout is one of these, with the stage S at network.2S and its downsample at network.2S-1.
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_CONV = r"(weight|bias)"
_ORIGINAL_MODULES = [
    rf"patch_embed\.[03]\.{_CONV}", rf"patch_embed\.[14]\.{_BN}",  # stem: Conv, BN, act, Conv, BN, act
    rf"network\.\d*[02468]\.\d+\.mlp\.(fc1|mid|fc2)\.{_CONV}",  # Mlp(mid_conv=True)
    rf"network\.\d*[02468]\.\d+\.mlp\.(norm1|mid_norm|norm2)\.{_BN}",
    r"network\.\d*[02468]\.\d+\.layer_scale_[12]",  # FFN / AttnFFN
    rf"network\.4\.\d+\.token_mixer\.stride_conv\.0\.{_CONV}", rf"network\.4\.\d+\.token_mixer\.stride_conv\.1\.{_BN}",
    rf"network\.[46]\.\d+\.token_mixer\.(q|k|v|v_local)\.0\.{_CONV}",  # Attention4D
    rf"network\.[46]\.\d+\.token_mixer\.(q|k|v|v_local)\.1\.{_BN}",
    rf"network\.[46]\.\d+\.token_mixer\.talking_head[12]\.{_CONV}",
    rf"network\.[46]\.\d+\.token_mixer\.proj\.1\.{_CONV}", rf"network\.[46]\.\d+\.token_mixer\.proj\.2\.{_BN}",
    r"network\.[46]\.\d+\.token_mixer\.attention_bia(ses|s_idxs)",
    rf"network\.[13]\.proj\.{_CONV}", rf"network\.[13]\.norm\.{_BN}",  # Embedding
    rf"network\.5\.conv\.{_CONV}", rf"network\.5\.bn\.{_BN}",  # Embedding(asub=True)
    rf"network\.5\.attn\.q\.local\.0\.{_CONV}", rf"network\.5\.attn\.q\.proj\.0\.{_CONV}",  # LGQuery
    rf"network\.5\.attn\.q\.proj\.1\.{_BN}",
    rf"network\.5\.attn\.(k|v|v_local)\.0\.{_CONV}", rf"network\.5\.attn\.(k|v|v_local)\.1\.{_BN}",
    rf"network\.5\.attn\.proj\.1\.{_CONV}", rf"network\.5\.attn\.proj\.2\.{_BN}",  # Attention4DDownsample
    r"network\.5\.attn\.attention_bia(ses|s_idxs)",
    rf"norm\.{_BN}", rf"(head|dist_head)\.{_CONV}",
]


def _original_state(checkpoint) -> dict:
    return convert_state_dict_v2({**checkpoint.state_dict, **bias_index_buffers(checkpoint.config)},
                                 "transformers", "original")


def test_the_key_table_writes_the_original_repositorys_module_names():
    checkpoint = load_checkpoint(V2 / "timm_model.safetensors")
    original = _original_state(checkpoint)
    rules = [re.compile(rule + r"\Z") for rule in _ORIGINAL_MODULES]
    assert [k for k in original if not any(rule.match(k) for rule in rules)] == []
    assert all(any(rule.match(k) for k in original) for rule in rules)  # every kind of module is there
    # its layer scales are (C, 1, 1) parameters; its index buffers are persistent, one per attention
    assert original["network.6.1.layer_scale_1"].shape == (48, 1, 1)
    assert sorted(k for k in original if k.endswith("idxs")) == [
        "network.4.1.token_mixer.attention_bias_idxs", "network.5.attn.attention_bias_idxs",
        "network.6.1.token_mixer.attention_bias_idxs"]
    assert original["network.5.attn.attention_bias_idxs"].shape == (49, 196)
    assert detect_format_v2(original) == "original"


def test_an_original_layout_file_loads_with_the_same_outputs(fixture_v2, tmp_path):
    torch.save({"model": _original_state(load_checkpoint(V2 / "hub"))}, tmp_path / "eformer_tiny.pth")
    checkpoint = load_checkpoint(tmp_path / "eformer_tiny.pth")
    assert checkpoint.format == "original"
    _assert_fixture_outputs(create_model(checkpoint), fixture_v2)


def test_the_table_goes_there_and_back_unchanged():
    timm_state = load_checkpoint(V2 / "timm_model.safetensors").state_dict
    for layout in ("timm", "original"):
        there = convert_state_dict_v2(timm_state, "transformers", layout)
        back = convert_state_dict_v2(there, layout, "transformers")
        assert list(back) == list(timm_state)
        assert all(torch.equal(back[k], timm_state[k]) for k in timm_state)


# ---------------------------------------------------------------------------------- any input size
def test_other_sizes_resize_the_biases_and_keep_them_at_the_trained_size(fixture_v2):
    model = create_model(V2 / "hub")
    pixels = torch.from_numpy(fixture_v2["pixel_values"][:1])
    for size in ((224, 224), (256, 320), (384, 384), (512, 512)):
        batch = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            out = model(batch, output_attentions=True)
            features = model.forward_features(batch)
        grid = (-(-size[0] // 32), -(-size[1] // 32))
        assert out.logits.shape == (1, 5) and torch.isfinite(out.logits).all()
        assert features.shape == (1, 48, *grid)
        stride, down, last = (w.shape[-2:] for w in out.attentions)  # in network order
        assert tuple(last) == (grid[0] * grid[1],) * 2
        assert tuple(down) == (grid[0] * grid[1], 4 * grid[0] * grid[1])
        assert tuple(stride) == (grid[0] * grid[1],) * 2
        if size == (224, 224):  # the trained grid: the stored table exactly, and timm's numbers
            assert_close(out.logits, fixture_v2["logits"][:1])
    downsample = model.efficientformer.encoder.stages[3].downsample.attention
    table, index = downsample.attention_biases, bias_index_buffers(model.config)
    key = "efficientformer.encoder.stages.3.downsample.attention.attention_bias_idxs"
    assert torch.equal(downsample.bias((14, 14)), table[:, index[key]])  # gathered, not interpolated


# ------------------------------------------------------------------------------- forward surface
def test_forward_surface_losses_and_features_only():
    model = randomize(EfficientFormerV2ForImageClassification(tiny_config_v2())).eval()
    pixels = torch.randn(2, 3, 64, 96)
    out = model(pixels, labels=torch.tensor([0, 2]), output_hidden_states=True)
    assert out.loss.ndim == 0 and out.logits.shape == (2, 3)
    assert [tuple(h.shape[1:]) for h in out.hidden_states] == [(8, 16, 24), (8, 16, 24), (16, 8, 12), (24, 4, 6),
                                                               (32, 2, 3)]
    features = model.forward_features(pixels)
    assert torch.allclose(model.forward_head(features), out.logits)
    assert model.forward_head(features, pre_logits=True).shape == (2, 32)
    assert model.feature_info.channels() == [8, 16, 24, 32]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info[2]["module"] == "efficientformer.encoder.stages.2"
    backbone = EfficientFormerV2Model(model.config, out_indices=(1, 3))
    backbone.load_state_dict(model.efficientformer.state_dict())
    maps = backbone.eval()(pixels)
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 8, 12), (32, 2, 3)]
    teacher = EfficientFormerV2ForImageClassificationWithTeacher(model.config)
    assert teacher(pixels, labels=torch.tensor([1, 1])).loss.ndim == 0


def test_bad_input_gets_v1s_errors_before_compute():
    model = EfficientFormerV2ForImageClassification(tiny_config_v2()).eval()
    cases = [([[1.0]], "must be a torch.Tensor"), (torch.randn(3, 64, 64), "4-D"),
             (torch.ones(1, 3, 64, 64, dtype=torch.long), "floating point"), (torch.randn(1, 4, 64, 64), "channels"),
             (torch.randn(1, 3, 16, 64), "too small"), (torch.full((1, 3, 64, 64), float("nan")), "NaN")]
    for pixels, message in cases:
        with pytest.raises(InputError, match=message):
            model(pixels)
    with pytest.raises(InputError, match="class labels must lie in 0..2"):
        model(torch.randn(2, 3, 64, 64), labels=torch.tensor([0, 7]))
    with pytest.raises(InputError, match="forward_head takes"):
        model.forward_head(torch.randn(2, 5, 32))


# ----------------------------------------------------------------------------------------- config
def test_config_validates_and_round_trips():
    config = EfficientFormerV2Config.from_preset("s0", num_labels=10)
    assert config.mlp_ratios == [[4, 4], [4, 4], [4, 3, 3, 3, 4, 4], [4, 3, 3, 4]]
    assert EfficientFormerV2Config.from_dict(json.loads(config.to_json_string())) == config
    assert tiny_config_v2(mlp_ratios=3).mlp_ratios == [[3], [3], [3, 3], [3, 3]]
    bad = [({"depths": [1, 1, 1]}, "4 stages"), ({"mlp_ratios": [[4], [4], [4], [4, 4]]}, "mlp_ratios"),
           ({"num_attention_heads": 0}, "num_attention_heads"), ({"hidden_act": "nope"}, "hidden_act"),
           ({"image_size": 16}, "image_size")]
    for fields, message in bad:
        with pytest.raises(ConfigError, match=message):
            tiny_config_v2(**fields)
    with pytest.raises(ConfigError, match="EfficientFormerV2Config"):
        from efficientformer import EfficientFormerConfig

        EfficientFormerConfig.from_dict(config.to_dict())


@pytest.mark.parametrize("name", ["s0", "s1"])
def test_presets_have_timms_parameter_counts(name):
    timm = pytest.importorskip("timm")
    from efficientformer import V2_VARIANTS

    ours = create_model(name)
    theirs = timm.create_model(f"efficientformerv2_{name}")
    assert ours.num_parameters() == V2_VARIANTS[name].num_parameters == sum(p.numel() for p in theirs.parameters())


def test_factory_lists_and_builds_v2():
    assert {"s0", "s1", "s2", "l"} <= set(list_models())
    assert type(create_model("efficientformerv2_s0", task="backbone")) is EfficientFormerV2Model
    assert type(create_model(tiny_config_v2(), task="classification")) is EfficientFormerV2ForImageClassification


# ----------------------------------------------------------------------------------------- convert
def test_convert_between_layouts_and_timm_loads_the_result(fixture_v2, tmp_path):
    timm = pytest.importorskip("timm")
    from efficientformer.checkpoints.conversion import convert

    assert convert(V2 / "hub", tmp_path / "hf").max_abs_diff == 0.0
    assert convert(tmp_path / "hf", tmp_path / "timm", format="timm").max_abs_diff == 0.0
    assert convert(tmp_path / "timm", tmp_path / "original.pth", format="original").max_abs_diff == 0.0
    assert convert(tmp_path / "original.pth", tmp_path / "hf2").source_format == "original"
    _assert_fixture_outputs(create_model(tmp_path / "hf2"), fixture_v2)
    written = json.loads((tmp_path / "timm" / "config.json").read_text())
    from safetensors.torch import load_file

    model = timm.create_model(written["architecture"], **written["model_args"]).eval()
    model.load_state_dict(load_file(tmp_path / "timm" / "model.safetensors"))
    with torch.no_grad():
        assert_close(model(torch.from_numpy(fixture_v2["pixel_values"])), fixture_v2["logits"])
    assert written["label_names"] == json.loads((V2 / "hub" / "config.json").read_text())["label_names"]
    with pytest.raises(InputError, match="fixes key_dim=32"):
        create_model(tiny_config_v2()).save_pretrained(tmp_path / "narrow")
        convert(tmp_path / "narrow", tmp_path / "narrow-timm", format="timm")


# ---------------------------------------------------------------------------------------- training
def test_training_from_a_v2_config_lowers_the_loss_and_exports_a_v2_folder(tmp_path):
    from test_training import _config, _write_images

    from efficientformer.training.build import build_model
    from efficientformer.training.trainer import train

    data = _write_images(tmp_path / "images")
    tiny_config_v2().save_pretrained(tmp_path / "v2")
    losses = []
    result = train(_config(data, tmp_path / "run", epochs=2, arch=None, config=str(tmp_path / "v2" / "config.json")),
                   on_step=lambda step, loss: losses.append(loss))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert type(create_model(result.model_dir)) is EfficientFormerV2ForImageClassificationWithTeacher
    model = build_model("s0", ["a", "b"], image_size=64, distillation_head=False)
    assert type(model) is EfficientFormerV2ForImageClassification and model.config.image_size == 64
    with pytest.raises(ConfigError, match="V1"):
        build_model("s0", ["a", "b"], arch={"depths": [1, 1, 1, 1]})


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomize(EfficientFormerV2ForImageClassification(tiny_config_v2())).train()
    pixels, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(pixels, labels=labels).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_pretrained_preset_loads_timms_hub_folder_through_the_cache(fixture_v2, tmp_path, monkeypatch):
    import hashlib
    import shutil

    from efficientformer import V2_WEIGHTS

    hub_id = V2_WEIGHTS["s0"].hub_id  # timm/efficientformerv2_s0.snap_dist_in1k, here the fixture's weights
    repo = tmp_path / "cache" / f"models--{hub_id.replace('/', '--')}"
    revision = hashlib.sha1(hub_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(V2 / "hub", repo / "snapshots" / revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = create_model("s0", pretrained=True, cache_dir=str(tmp_path / "cache"))
    with torch.no_grad():
        assert_close(model(torch.from_numpy(fixture_v2["pixel_values"])).logits, fixture_v2["logits"])


def test_a_v2_checkpoint_is_a_distillation_teacher(fixture_v2):
    """`--teacher` takes a V2 folder as any checkpoint: loaded as the class its heads make it, frozen, timm's
    logits; a teacher of other classes is refused before training."""
    from efficientformer.errors import ConfigError
    from efficientformer.training.teacher import load_teacher

    teacher = load_teacher(str(FIXTURES / "timm-v2-tiny" / "hub"), num_labels=5)
    assert isinstance(teacher, EfficientFormerV2ForImageClassificationWithTeacher) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        assert_close(teacher(torch.from_numpy(fixture_v2["pixel_values"])).logits, fixture_v2["logits"])
    with pytest.raises(ConfigError, match="predicts 5 classes but the student has 3"):
        load_teacher(str(FIXTURES / "timm-v2-tiny" / "hub"), num_labels=3)
