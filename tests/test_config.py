"""EfficientFormerConfig: transformers-compatible config.json, presets, and clear validation errors."""

from __future__ import annotations

import json

import pytest

from efficientformer import ConfigError, EfficientFormerConfig
from efficientformer.presets import VARIANTS


def test_defaults_are_transformers_defaults():
    config = EfficientFormerConfig()
    assert config.depths == [3, 2, 6, 4] and config.hidden_sizes == [48, 96, 224, 448]
    assert (config.dim, config.key_dim, config.attention_ratio, config.resolution) == (448, 32, 4, 7)
    assert (config.num_attention_heads, config.num_meta3d_blocks, config.mlp_expansion_ratio) == (8, 1, 4)
    assert config.layer_norm_eps == 1e-12 and config.batch_norm_eps == 1e-5 and config.hidden_act == "gelu"
    assert config.num_labels == 2 and config.id2label == {0: "LABEL_0", 1: "LABEL_1"}


@pytest.mark.parametrize("folder", ["hf-tiny", "hf-small", "hf-tiny-256"])
def test_transformers_config_json_round_trips(fixtures_dir, tmp_path, folder):
    original = json.loads((fixtures_dir / folder / "config.json").read_text())
    config = EfficientFormerConfig.from_pretrained(fixtures_dir / folder)
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    original.setdefault("hidden_size", original["hidden_sizes"][-1])  # we always write it
    assert written == original  # every key, unknown ones (transformers_version, dtype) included
    assert EfficientFormerConfig.from_pretrained(tmp_path) == config


def test_unknown_keys_are_kept():
    config = EfficientFormerConfig(my_field={"a": 1})
    assert EfficientFormerConfig.from_dict(json.loads(config.to_json_string())).extra["my_field"] == {"a": 1}


@pytest.mark.parametrize("name", ["l1", "l3", "l7"])
def test_presets_are_the_papers_variants(fixtures_dir, name):
    config = EfficientFormerConfig.from_preset(name)
    shapes = json.loads((fixtures_dir / "architectures.json").read_text())[name]["transformers"]
    assert config.hidden_sizes[-1] == config.dim == config.hidden_size
    assert config.num_labels == 1000 and config.id2label[1].startswith("goldfish")
    last = config.num_stages - 1
    n3d = len({k.split(".blocks.")[1].split(".")[0] for k in shapes if "meta3D_layers" in k})
    assert n3d == config.num_meta3d_blocks == VARIANTS[name].num_meta3d_blocks
    assert shapes["classifier.weight"] == [1000, config.hidden_sizes[last]]


def test_labels_override():
    config = EfficientFormerConfig.from_preset("l1", id2label={0: "cat", 1: "dog"})
    assert config.num_labels == 2 and config.label2id == {"cat": 0, "dog": 1}
    assert EfficientFormerConfig(num_labels=4).id2label[3] == "LABEL_3"


@pytest.mark.parametrize("kwargs, field", [
    ({"hidden_sizes": [8, 16, 32]}, "hidden_sizes"),
    ({"downsamples": [True, True]}, "downsamples"),
    ({"dim": 100}, "dim"),
    ({"num_meta3d_blocks": 5}, "num_meta3d_blocks"),
    ({"depths": [3, 0, 6, 4]}, "depths"),
    ({"hidden_sizes": [48, -96, 224, 448]}, "hidden_sizes"),
    ({"key_dim": 0}, "key_dim"),
    ({"num_attention_heads": -1}, "num_attention_heads"),
    ({"hidden_act": "sparkle"}, "hidden_act"),
    ({"drop_path_rate": 1.5}, "drop_path_rate"),
    ({"problem_type": "ranking"}, "problem_type"),
    ({"id2label": {0: "a"}, "num_labels": 3}, "num_labels"),
])
def test_inconsistent_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field) as info:
        EfficientFormerConfig(**kwargs)
    assert isinstance(info.value, ConfigError)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="l1, l3, l7"):
        EfficientFormerConfig.from_preset("l5")


def test_wrong_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ConfigError, match="vit"):
        EfficientFormerConfig.from_pretrained(tmp_path)
