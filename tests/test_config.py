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


# --------------------------------------------------------------------------- types, caps and NaN (issue 13)
@pytest.mark.parametrize("kwargs, message", [
    ({"depths": [1.5, 2, 6, 4]}, r"depths=\[1.5, 2, 6, 4\] is invalid: every stage needs a whole number of blocks"),
    ({"depths": [float("nan"), 2, 6, 4]}, "depths=.nan"),
    ({"depths": [float("inf"), 2, 6, 4]}, "depths=.inf"),
    ({"depths": []}, r"depths=\[\] is invalid: give 1 to 8 stages"),
    ({"depths": 4}, "depths=4 is invalid: it must be a list"),
    ({"depths": [True, 2, 6, 4]}, "depths=.True"),
    ({"key_dim": True}, "key_dim=True is invalid: it must be a whole number from 1 to 1024"),
    ({"key_dim": 32.0}, "key_dim=32.0 is invalid"),
    ({"layer_norm_eps": "abc"}, "layer_norm_eps='abc' is invalid: it must be a finite positive number"),
    ({"layer_norm_eps": float("nan")}, "layer_norm_eps=nan is invalid"),
    ({"batch_norm_eps": -1}, "batch_norm_eps=-1 is invalid: it must be a finite positive number"),
    ({"batch_norm_eps": 0}, "batch_norm_eps=0 is invalid"),
    ({"hidden_dropout_prob": float("nan")}, r"hidden_dropout_prob=nan is invalid: it is a probability in \[0, 1\)"),
    ({"mlp_expansion_ratio": float("inf")}, "mlp_expansion_ratio=inf is invalid"),
    ({"use_layer_scale": "yes"}, "use_layer_scale='yes' is invalid: it must be true or false"),
    ({"downsamples": [1, 1, 1, 1]}, "downsamples=.* every entry must be true or false"),
    ({"hidden_act": ["gelu"]}, "hidden_act=.* choose one of"),
    ({"num_labels": 1.5}, "num_labels=1.5 is invalid: it must be a whole number from 0 to 100000"),
    ({"num_labels": -1}, "num_labels=-1 is invalid"),
    ({"id2label": {"zero": "cat"}}, "id2label key 'zero' is invalid"),
    ({"id2label": ["cat", "dog"]}, r"id2label \(a list\) is invalid"),
])
def test_wrong_types_and_nan_give_one_sentence_naming_field_and_value(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        EfficientFormerConfig(**kwargs)
    assert str(info.value).count("\n") == 0 and str(info.value).endswith(".")


def test_nan_and_infinity_literals_in_config_json_are_refused(tmp_path):
    # Python's json reads the NaN / Infinity literals that some writers emit; validate() must catch them
    (tmp_path / "config.json").write_text('{"model_type": "efficientformer", "layer_norm_eps": NaN}')
    with pytest.raises(ConfigError, match="layer_norm_eps=nan is invalid"):
        EfficientFormerConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "efficientformer", "depths": [3, 2, Infinity, 4]}')
    with pytest.raises(ConfigError, match="depths=.*inf"):
        EfficientFormerConfig.from_json_file(tmp_path / "config.json")


@pytest.mark.parametrize("kwargs, message", [
    ({"num_labels": 10**9}, "num_labels=1000000000 is invalid: it must be a whole number from 0 to 100000"),
    ({"num_labels": 1e9}, "num_labels=1000000000.0 is invalid"),
    ({"depths": [3, 2, 6, 100000]}, "depths=.*100000.*from 1 to 64"),
    ({"depths": [1] * 100000}, r"depths=\[1, 1, .*\.\.\. is invalid: give 1 to 8 stages"),
    ({"hidden_sizes": [48, 96, 224, 10**6], "dim": 10**6, "hidden_size": 10**6}, "hidden_sizes=.*from 1 to 8192"),
    ({"image_size": 10**5}, "image_size=100000 is invalid: it must be a whole number from 1 to 4096"),
    ({"resolution": 1000}, "resolution=1000 is invalid"),
    ({"depths": [64, 64, 64, 64], "hidden_sizes": [8192] * 4, "dim": 8192, "hidden_size": 8192},
     "describes a model of .* weights, more than the 500,000,000 allowed"),
])
def test_sizes_are_capped_before_anything_is_built(kwargs, message):
    import time

    started = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        EfficientFormerConfig(**kwargs)
    assert time.perf_counter() - started < 2.0  # num_labels 1e9 used to build a billion label names first


def test_a_huge_id2label_is_refused_by_its_size(tmp_path):
    names = {str(i): f"c{i}" for i in range(100_001)}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "efficientformer", "id2label": names}))
    with pytest.raises(ConfigError, match=r"id2label \(100001 names\) is invalid: .* at most 100000"):
        EfficientFormerConfig.from_pretrained(tmp_path)


def test_real_configs_are_far_below_the_caps():
    from efficientformer.config import MAX_PARAMETERS

    l7 = EfficientFormerConfig.from_preset("l7")
    assert 80e6 < l7.num_parameters() < MAX_PARAMETERS / 5
    assert EfficientFormerConfig(num_labels=100_000).num_labels == 100_000
    assert EfficientFormerConfig(layer_norm_eps=1, mlp_expansion_ratio=2.5).mlp_expansion_ratio == 2.5


def test_missing_unreadable_or_non_object_config_files_give_one_sentence(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="missing.json does not exist"):
        EfficientFormerConfig.from_json_file(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="list.json holds a JSON list, not an object"):
        EfficientFormerConfig.from_json_file(tmp_path / "list.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        EfficientFormerConfig.from_pretrained(tmp_path)  # used to be a json.JSONDecodeError traceback

    import builtins

    import efficientformer.config as config_module

    def denied(path, *args, **kwargs):  # the tests may run as root, where chmod 000 does not stop a read
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(ConfigError, match="cannot read .*config.json: permission denied; make it readable"):
        config_module.EfficientFormerConfig.from_json_file(tmp_path / "config.json")
