"""`EfficientFormerConfig`: the architecture and label settings of a model, as a `config.json`.

The field names, defaults and JSON layout are those of transformers 4.x, so a `config.json` written by
transformers loads here and one written here loads in transformers 4.57.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from .errors import ConfigError

CONFIG_NAME = "config.json"
MODEL_TYPE = "efficientformer"

# Activations both backends implement; `hidden_act` must name one of them.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "relu6", "silu", "swish", "tanh", "sigmoid")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

# Every architecture field with its transformers 4.x default (L1's shape). Order is the JSON order.
_DEFAULTS: dict[str, Any] = {
    "depths": [3, 2, 6, 4],
    "hidden_sizes": [48, 96, 224, 448],
    "downsamples": [True, True, True, True],
    "dim": 448,
    "key_dim": 32,
    "attention_ratio": 4,
    "resolution": 7,
    "num_hidden_layers": 5,
    "num_attention_heads": 8,
    "mlp_expansion_ratio": 4,
    "hidden_dropout_prob": 0.0,
    "patch_size": 16,
    "num_channels": 3,
    "pool_size": 3,
    "downsample_patch_size": 3,
    "downsample_stride": 2,
    "downsample_pad": 1,
    "drop_path_rate": 0.0,
    "num_meta3d_blocks": 1,
    "distillation": True,
    "use_layer_scale": True,
    "layer_scale_init_value": 1e-5,
    "hidden_act": "gelu",
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "image_size": 224,
    "batch_norm_eps": 1e-5,
}
_POSITIVE_INTS = ("dim", "key_dim", "resolution", "num_attention_heads", "num_channels", "pool_size",
                  "downsample_patch_size", "downsample_stride", "image_size")


class EfficientFormerConfig:
    """Architecture, labels and task of an EfficientFormer model.

    Args:
        depths: blocks per stage, four stages (L1: `[3, 2, 6, 4]`).
        hidden_sizes: channels per stage (L1: `[48, 96, 224, 448]`).
        downsamples: whether a strided convolution precedes each stage after the first.
        dim: width of the attention blocks; must equal `hidden_sizes[-1]`.
        key_dim: size of each attention head's query and key.
        attention_ratio: value size per head as a multiple of `key_dim`.
        resolution: side of the token grid the attention biases were trained on (7 at 224x224).
        num_attention_heads: attention heads of each Meta3D block.
        num_meta3d_blocks: how many of the last stage's blocks are attention (Meta3D) blocks.
        mlp_expansion_ratio: hidden width of every MLP as a multiple of its input.
        drop_path_rate: stochastic-depth rate of the last block (rates rise linearly from 0).
        hidden_act: activation of the MLPs, one of `ACTIVATIONS`.
        id2label / label2id / num_labels: class names of the classification heads.
        problem_type: loss of the heads: `"regression"`, `"single_label_classification"` or
            `"multi_label_classification"`; `None` chooses from the labels as transformers does.
        **kwargs: any other key of a `config.json`; kept and written back unchanged.

    Example:
        >>> from efficientformer import EfficientFormerConfig
        >>> config = EfficientFormerConfig.from_preset("l3", num_labels=10)
        >>> config.hidden_sizes, config.num_labels
        ([64, 128, 320, 512], 10)
    """

    model_type = MODEL_TYPE

    def __init__(self, **kwargs: Any) -> None:
        for name, default in _DEFAULTS.items():
            setattr(self, name, copy.deepcopy(kwargs.pop(name, default)))
        self.hidden_size = kwargs.pop("hidden_size", None) or self.hidden_sizes[-1]
        self.problem_type = kwargs.pop("problem_type", None)
        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        num_labels = kwargs.pop("num_labels", None)
        kwargs.pop("model_type", None)
        self._set_labels(id2label, num_labels)
        if label2id is not None and id2label is not None:
            given = {str(k): int(v) for k, v in label2id.items()}
            if given != self.label2id:
                raise ConfigError(f"label2id {given} is not the inverse of id2label {self.id2label}; "
                                  "give only id2label and label2id is derived from it.")
        self.extra = kwargs  # unknown keys, kept for the round trip
        self.validate()

    # ----------------------------------------------------------------------------------- labels
    def _set_labels(self, id2label: dict | None, num_labels: int | None) -> None:
        if id2label is not None:
            id2label = {int(k): str(v) for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(id2label):
                raise ConfigError(f"num_labels={num_labels} disagrees with the {len(id2label)} names in id2label; "
                                  "give one or make them agree.")
            if sorted(id2label) != list(range(len(id2label))):
                raise ConfigError(f"id2label keys must be 0..{len(id2label) - 1}, got {sorted(id2label)}.")
        else:
            id2label = {i: f"LABEL_{i}" for i in range(2 if num_labels is None else int(num_labels))}
        self.id2label = dict(sorted(id2label.items()))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        if value != self.num_labels:
            self._set_labels(None, value)

    # ----------------------------------------------------------------------------- derived shape
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_meta4d_last_stage(self) -> int:
        return self.depths[-1] - self.num_meta3d_blocks

    def block_drop_path_rates(self) -> list[float]:
        """Stochastic-depth rate of every block in order: 0 for the first, `drop_path_rate` for the last."""
        total = sum(self.depths)
        return [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]

    # ------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise `ConfigError` (a ValueError) naming the first inconsistent field."""
        def bad(field: str, allowed: str) -> None:
            raise ConfigError(f"{field}={getattr(self, field)!r} is invalid: {allowed}.")

        n = len(self.depths)
        if n < 1:
            bad("depths", "give at least one stage")
        if len(self.hidden_sizes) != n:
            bad("hidden_sizes", f"it needs one entry per stage ({n}, as depths)")
        if len(self.downsamples) != n:
            bad("downsamples", f"it needs one entry per stage ({n}, as depths)")
        if any(int(d) < 1 for d in self.depths):
            bad("depths", "every stage needs at least one block")
        if any(int(h) < 1 for h in self.hidden_sizes):
            bad("hidden_sizes", "widths must be positive")
        for field in _POSITIVE_INTS:
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                bad(field, "it must be a positive integer")
        if self.dim != self.hidden_sizes[-1]:
            bad("dim", f"it must equal the last hidden size, hidden_sizes[-1]={self.hidden_sizes[-1]}")
        if self.hidden_size != self.hidden_sizes[-1]:
            bad("hidden_size", f"it must equal the last hidden size, hidden_sizes[-1]={self.hidden_sizes[-1]}")
        if not 0 <= self.num_meta3d_blocks <= self.depths[-1]:
            bad("num_meta3d_blocks", f"the last stage has {self.depths[-1]} blocks, so 0..{self.depths[-1]} are allowed")
        if self.attention_ratio <= 0 or self.mlp_expansion_ratio <= 0:
            bad("attention_ratio" if self.attention_ratio <= 0 else "mlp_expansion_ratio", "it must be positive")
        if self.pool_size % 2 == 0:
            bad("pool_size", "it must be odd so that pooling keeps the feature size")
        if self.hidden_act not in ACTIVATIONS:
            bad("hidden_act", f"choose one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            bad("drop_path_rate", "it is a probability in [0, 1)")
        if not 0.0 <= self.hidden_dropout_prob < 1.0:
            bad("hidden_dropout_prob", "it is a probability in [0, 1)")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            bad("problem_type", f"choose one of {', '.join(PROBLEM_TYPES)} or None")

    # ------------------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "EfficientFormerConfig":
        """The paper's L1, L3 or L7 shape (1000 ImageNet classes unless overridden)."""
        from .presets import get_variant

        return cls.from_dict(get_variant(name).config_kwargs(), **overrides)

    # ----------------------------------------------------------------------------- (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """Every field as transformers writes `config.json`: `id2label` keys as strings, `label2id`,
        `hidden_size`, `model_type`, and unknown keys kept as they were read."""
        out: dict[str, Any] = dict(self.extra)
        out.update({name: copy.deepcopy(getattr(self, name)) for name in _DEFAULTS})
        out["hidden_size"] = self.hidden_size
        out["id2label"] = {str(i): name for i, name in self.id2label.items()}
        out["label2id"] = self.label2id
        if self.problem_type is not None:
            out["problem_type"] = self.problem_type
        out["model_type"] = MODEL_TYPE
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        """The `config.json` text (sorted keys, two-space indent)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "EfficientFormerConfig":
        """Build from a `config.json` mapping; `overrides` win, and a new `num_labels` or `id2label`
        replaces the stored label names.

        Raises:
            ConfigError: another model type, or inconsistent values.
        """
        data = dict(data)
        model_type = data.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ConfigError(f"this config.json is for model_type {model_type!r}, not {MODEL_TYPE!r}; "
                              "point at an EfficientFormer checkpoint.")
        if "num_labels" in overrides or "id2label" in overrides:
            data.pop("id2label", None)
            data.pop("label2id", None)
        data.update(overrides)
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "EfficientFormerConfig":
        """Read one `config.json` file."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON ({err}); re-download or rewrite it.") from None
        return cls.from_dict(data)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> "EfficientFormerConfig":
        """Read `config.json` from a folder, a file or a hub id (see `efficientformer.hub`)."""
        from .hub import resolve_file

        hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only", "token") if k in kwargs}
        path = name_or_path if os.path.isfile(name_or_path) else resolve_file(name_or_path, CONFIG_NAME, **hub_kwargs)
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return cls.from_dict(data, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike) -> str:
        """Write `folder/config.json` (the folder is created) and return its path."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json_string())
        return path

    def copy(self, **overrides: Any) -> "EfficientFormerConfig":
        """An independent copy with some fields changed, e.g. `config.copy(num_labels=10)`."""
        return type(self).from_dict(self.to_dict(), **overrides)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EfficientFormerConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
