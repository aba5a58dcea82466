"""The key-name table: every key of the full-size L1/L3/L7 maps to timm and original names and back."""

from __future__ import annotations

import json

import pytest

from efficientformer.errors import CheckpointError
from efficientformer.checkpoints.keys import (Layout, convert_key, convert_state_dict, detect_format, layout_from_keys,
                                         strip_wrappers)

VARIANTS = ("l1", "l3", "l7")


@pytest.fixture(scope="module")
def architectures(fixtures_dir):
    return json.loads((fixtures_dir / "architectures.json").read_text())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fmt", ["timm", "original"])
def test_transformers_keys_map_to_exactly_the_other_layout_and_back(architectures, variant, fmt):
    layouts = architectures[variant]
    hf, other = layouts["transformers"], layouts[fmt]
    mapped = convert_state_dict(hf, "transformers", fmt)
    assert mapped == other  # same keys, each with the same shape
    back = convert_state_dict(other, fmt, "transformers")
    assert back == hf


@pytest.mark.parametrize("variant", VARIANTS)
def test_layout_constants_are_read_from_each_layout(architectures, variant):
    layouts = architectures[variant]
    found = {fmt: layout_from_keys(keys, fmt) for fmt, keys in layouts.items() if fmt != "num_parameters"}
    m4 = {"l1": 3, "l3": 2, "l7": 0}[variant]  # Meta4D blocks before the Flat module in the last stage
    assert set(found.values()) == {Layout(last=3, m4=m4)}


@pytest.mark.parametrize("fmt", ["transformers", "timm", "original"])
def test_format_is_detected_from_the_keys(architectures, fmt):
    assert detect_format(architectures["l3"][fmt]) == fmt


def test_meta3d_blocks_skip_the_flat_module_index():
    layout = Layout(last=3, m4=2)
    hf = "efficientformer.encoder.last_stage.meta3D_layers.blocks.0.token_mixer.projection.weight"
    assert convert_key(hf, "transformers", "timm", layout) == "stages.3.blocks.3.token_mixer.proj.weight"
    assert convert_key(hf, "transformers", "original", layout) == "network.6.3.token_mixer.proj.weight"
    # a Meta4D block of the last stage keeps its index
    assert (convert_key("network.6.1.mlp.norm1.running_var", "original", "transformers", layout)
            == "efficientformer.encoder.last_stage.meta4D_layers.blocks.1.mlp.batchnorm_before.running_var")
    # downsampling layers sit at odd indices of the transformers / original lists
    assert convert_key("stages.2.downsample.conv.weight", "timm", "original", layout) == "network.3.proj.weight"


def test_unknown_keys_are_named_in_the_error():
    with pytest.raises(CheckpointError, match="fc.weight"):
        convert_state_dict({"stem.conv1.weight": 0, "fc.weight": 0}, "timm", "transformers", Layout(3, 3))
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        convert_key("head.weight", "keras", "timm", Layout(3, 3))


def test_training_wrappers_and_bare_model_keys_are_normalized():
    names = strip_wrappers(["module.patch_embed.0.weight", "module._orig_mod.head.bias"])
    assert list(names.values()) == ["patch_embed.0.weight", "head.bias"]
    bare = strip_wrappers(["patch_embed.convolution1.weight", "encoder.last_stage.meta4D_layers.blocks.0.layer_scale_1",
                           "layernorm.bias"])
    assert all(v.startswith("efficientformer.") for v in bare.values())


def test_list_indices_follow_the_plan_when_a_downsample_is_missing():
    """Stages 1 and 2 share a width and no Downsample: stage 2 sits at list index 3, not 4, in transformers and
    the original layout, and timm's stage 3 starts with the only later Downsample."""
    from conftest import tiny_config
    from efficientformer.models.pytorch import EfficientFormerForImageClassificationWithTeacher

    config = tiny_config(hidden_sizes=[8, 16, 16, 32], downsamples=[True, False, True, True])
    keys = list(EfficientFormerForImageClassificationWithTeacher(config).state_dict())
    layout = Layout.from_config(config)
    assert layout.positions == (0, 2, 3, 5)
    names = {fmt: convert_state_dict(dict.fromkeys(keys), "transformers", fmt) for fmt in ("timm", "original")}
    assert "network.4.proj.weight" in names["original"] and "stages.3.downsample.conv.weight" in names["timm"]
    assert not any(k.startswith("stages.2.downsample") for k in names["timm"])
    for fmt, converted in names.items():
        assert layout_from_keys(converted, fmt) == layout
        assert list(convert_state_dict(converted, fmt, "transformers")) == keys
    assert layout_from_keys(keys, "transformers") == layout
