"""`EfficientFormerConfig`: the architecture and label settings of a model, as a `config.json`.

The field names, defaults and JSON layout are those of transformers 4.x, so a `config.json` written by
transformers loads here and one written here loads in transformers 4.57.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
from typing import Any

from .constants import ACTIVATIONS, CONFIG_NAME, HUB_KEYWORDS
from .errors import ConfigError
from .presets import VARIANTS

MODEL_TYPE = "efficientformer"
MODEL_TYPE_V2 = "efficientformer_v2"  # EfficientFormerV2Config (efficientformer.config_v2)
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# the config class of each family's model_type, for the message that a config.json is of another family
_CLASS_NAMES = {MODEL_TYPE: "EfficientFormerConfig", MODEL_TYPE_V2: "EfficientFormerV2Config"}

# Every architecture field with its transformers 4.x default. The shape is L1's (its row of the preset
# table, `presets.VARIANTS`); the rest is shared by every variant. Order is the JSON order.
_L1 = VARIANTS["l1"]
_DEFAULTS: dict[str, Any] = {
    "depths": list(_L1.depths),
    "hidden_sizes": list(_L1.hidden_sizes),
    "downsamples": [True] * len(_L1.depths),
    "dim": _L1.hidden_sizes[-1],
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
    "num_meta3d_blocks": _L1.num_meta3d_blocks,
    "distillation": True,
    "use_layer_scale": True,
    "layer_scale_init_value": 1e-5,
    "hidden_act": "gelu",
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "image_size": 224,
    "batch_norm_eps": 1e-5,
}
# Upper bounds on what a config may ask for, each far above every published EfficientFormer (L7: depths
# [6, 6, 18, 8], widths up to 768, 82 M parameters, 1000 labels). They exist so that an untrusted config.json
# cannot make the library build for minutes or allocate gigabytes before anything useful happens.
MAX_STAGES = 8
MAX_DEPTH = 64  # blocks per stage
MAX_WIDTH = 8192  # channels of a stage (hidden_sizes, dim)
MAX_LABELS = 100_000
MAX_IMAGE_SIZE = 4096
MAX_RATIO = 64  # attention_ratio, mlp_expansion_ratio
MAX_PARAMETERS = 500_000_000  # elements of every tensor of the model together (L7: 82 M)

# Integer fields with their allowed range. `resolution` is the attention-bias grid: its index table has
# resolution**4 entries (64 -> 16.8 M), so it is capped lower than the image size.
_INT_RANGES = {
    "dim": (1, MAX_WIDTH), "key_dim": (1, 1024), "resolution": (1, 64), "num_attention_heads": (1, 256),
    "num_channels": (1, 1024), "pool_size": (1, 63), "downsample_patch_size": (1, 63),
    "downsample_stride": (1, 64), "downsample_pad": (0, 63), "image_size": (1, MAX_IMAGE_SIZE),
}
_BOOLS = ("distillation", "use_layer_scale")


class LabelledConfig:
    """What every model family's config shares: the label names (`id2label`, `label2id`, `num_labels`),
    `problem_type`, unknown keys kept for the round trip, and the `config.json` reading and writing.

    A family's config names its `model_type` and its architecture fields with their defaults
    (`_defaults`, in JSON order) and adds its own `validate()`.
    """

    model_type = ""
    _defaults: dict[str, Any] = {}

    def __init__(self, **kwargs: Any) -> None:
        for name, default in self._defaults.items():
            setattr(self, name, copy.deepcopy(kwargs.pop(name, default)))
        self._read_derived(kwargs)
        self.problem_type = kwargs.pop("problem_type", None)
        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        num_labels = kwargs.pop("num_labels", None)
        kwargs.pop("model_type", None)
        self._set_labels(id2label, num_labels)
        if label2id is not None and id2label is not None:
            try:
                given = {str(k): int(v) for k, v in label2id.items()}
            except (AttributeError, TypeError, ValueError):
                raise ConfigError(f"label2id={_show(label2id)} is invalid: it must map each name to its class "
                                  "index; give only id2label and label2id is derived from it.") from None
            if given != self.label2id:
                raise ConfigError(f"label2id {_show(given)} is not the inverse of id2label {_show(self.id2label)}; "
                                  "give only id2label and label2id is derived from it.")
        self.extra = kwargs  # unknown keys, kept for the round trip
        self.validate()

    def _read_derived(self, kwargs: dict[str, Any]) -> None:
        """Pop the fields a family derives from others (V1: `hidden_size`); none by default."""

    def _derived(self) -> dict[str, Any]:
        """The derived fields as `config.json` writes them (the counterpart of `_read_derived`)."""
        return {}

    def validate(self) -> None:  # pragma: no cover - each family defines it
        raise NotImplementedError

    # what a family's size message names: its largest preset and the fields that make a model large
    _largest = ""
    _size_fields = "depths, hidden_sizes or num_labels"
    _eps_fields: tuple[str, ...] = ("batch_norm_eps",)

    def _bad(self, field: str, allowed: str) -> None:
        raise ConfigError(f"{field}={_show(getattr(self, field))} is invalid: {allowed}.")

    def _validate_shared(self) -> None:
        """The checks of the fields every family has (activation, rates, epsilons, initialization, labels),
        and the cap on the size of the model the whole config describes."""
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            self._bad("hidden_act", f"choose one of {', '.join(ACTIVATIONS)}")
        for field in ("drop_path_rate", "hidden_dropout_prob"):
            if not (_is_number(getattr(self, field)) and 0.0 <= getattr(self, field) < 1.0):
                self._bad(field, "it is a probability in [0, 1)")
        for field in self._eps_fields:
            # 0 or less divides by the square root of a variance that can be 0: NaN outputs
            if not (_is_number(getattr(self, field)) and getattr(self, field) > 0):
                self._bad(field, "it must be a finite positive number (e.g. 1e-05)")
        if not (_is_number(self.initializer_range) and self.initializer_range >= 0):
            self._bad("initializer_range", "it must be a finite number >= 0")
        if not _is_number(self.layer_scale_init_value):
            self._bad("layer_scale_init_value", "it must be a finite number")
        self._validate_labels()
        size = self.num_parameters()
        if size > MAX_PARAMETERS:
            raise ConfigError(f"this configuration describes a model of {size:,} weights, more than the "
                              f"{MAX_PARAMETERS:,} allowed ({self._largest}); use smaller {self._size_fields}.")

    def num_parameters(self) -> int:
        """Number of elements of every tensor of the two-head classifier (parameters and buffers)."""
        return sum(math.prod(shape) for shape in self._expected_shapes().values())

    def _expected_shapes(self) -> dict[str, tuple]:  # pragma: no cover - each family defines it
        raise NotImplementedError

    def _validate_labels(self) -> None:
        """The checks of `problem_type` and the label count every family shares."""
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type={_show(self.problem_type)} is invalid: choose one of "
                              f"{', '.join(PROBLEM_TYPES)} or None.")
        if len(self.id2label) > MAX_LABELS:
            raise ConfigError(f"num_labels={len(self.id2label)} is invalid: at most {MAX_LABELS} classes are allowed.")

    # ----------------------------------------------------------------------------------- labels
    def _set_labels(self, id2label: dict | None, num_labels: int | None) -> None:
        # sizes are checked before any label dict is built: a config saying num_labels 1e9 must fail at once
        if num_labels is not None and not (_is_int(num_labels) and 0 <= num_labels <= MAX_LABELS):
            raise ConfigError(f"num_labels={_show(num_labels)} is invalid: it must be a whole number from 0 to "
                              f"{MAX_LABELS}.")
        if id2label is not None:
            if not isinstance(id2label, dict) or len(id2label) > MAX_LABELS:
                shown = f"a {type(id2label).__name__}" if not isinstance(id2label, dict) else f"{len(id2label)} names"
                raise ConfigError(f"id2label ({shown}) is invalid: it must map the class indices 0..N-1 to names, "
                                  f"at most {MAX_LABELS} of them.")
            converted = {}
            for key, name in id2label.items():
                try:
                    converted[int(key)] = str(name)
                except (TypeError, ValueError):
                    raise ConfigError(f"id2label key {_show(key)} is invalid: keys must be the class indices "
                                      "0..N-1.") from None
            id2label = converted
            if num_labels is not None and num_labels != len(id2label):
                raise ConfigError(f"num_labels={num_labels} disagrees with the {len(id2label)} names in id2label; "
                                  "give one or make them agree.")
            if sorted(id2label) != list(range(len(id2label))):
                raise ConfigError(f"id2label keys must be 0..{len(id2label) - 1}, got {_show(sorted(id2label))}.")
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

    # ----------------------------------------------------------------------------- (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """Every field as transformers writes `config.json`: `id2label` keys as strings, `label2id`,
        the derived fields (V1: `hidden_size`), `model_type`, and unknown keys kept as they were read."""
        out: dict[str, Any] = dict(self.extra)
        out.update({name: copy.deepcopy(getattr(self, name)) for name in self._defaults})
        out.update(self._derived())
        out["id2label"] = {str(i): name for i, name in self.id2label.items()}
        out["label2id"] = self.label2id
        if self.problem_type is not None:
            out["problem_type"] = self.problem_type
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        """The `config.json` text (sorted keys, two-space indent)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "LabelledConfig":
        """Build from a `config.json` mapping; `overrides` win, and a new `num_labels` or `id2label`
        replaces the stored label names.

        Raises:
            ConfigError: another model type, or inconsistent values.
        """
        data = dict(data)
        model_type = data.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            reader = _CLASS_NAMES.get(model_type, "the config class of that family")
            raise ConfigError(f"this config.json is for model_type {model_type!r}, not {cls.model_type!r}; "
                              f"point at a checkpoint of this family, or read it with {reader}.")
        if "num_labels" in overrides or "id2label" in overrides:
            data.pop("id2label", None)
            data.pop("label2id", None)
        data.update(overrides)
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "LabelledConfig":
        """Read one `config.json` file.

        Raises:
            ConfigError: the file is missing, unreadable, not a JSON object, or holds invalid values.
        """
        return cls.from_dict(read_json_object(path))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> "LabelledConfig":
        """Read `config.json` from a folder, a file or a hub id (see `efficientformer.checkpoints.hub`)."""
        from .checkpoints.hub import resolve_file

        hub_kwargs = {k: kwargs.pop(k) for k in HUB_KEYWORDS if k in kwargs}
        path = name_or_path if os.path.isfile(name_or_path) else resolve_file(name_or_path, CONFIG_NAME, **hub_kwargs)
        return cls.from_dict(read_json_object(path), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike) -> str:
        """Write `folder/config.json` atomically (the folder is created) and return its path."""
        from .fileio import write_text

        path = os.path.join(folder, CONFIG_NAME)
        write_text(path, self.to_json_string())
        return path

    def copy(self, **overrides: Any) -> "LabelledConfig":
        """An independent copy with some fields changed, e.g. `config.copy(num_labels=10)`."""
        return type(self).from_dict(self.to_dict(), **overrides)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelledConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


class EfficientFormerConfig(LabelledConfig):
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

    _defaults = _DEFAULTS

    def _read_derived(self, kwargs: dict[str, Any]) -> None:
        widths = self.hidden_sizes if isinstance(self.hidden_sizes, (list, tuple)) and self.hidden_sizes else [None]
        self.hidden_size = kwargs.pop("hidden_size", None) or widths[-1]  # a wrong type is named by validate()

    def _derived(self) -> dict[str, Any]:
        return {"hidden_size": self.hidden_size}

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
        """Raise `ConfigError` (a ValueError) naming the first invalid field, its value and what is allowed.

        Types are checked (integers must be integers, not floats or booleans; rates and epsilons finite
        numbers), sizes are capped (`MAX_DEPTH`, `MAX_WIDTH`, `MAX_LABELS`, `MAX_PARAMETERS`, ...), and the
        fields must fit together (`dim == hidden_sizes[-1]`, `num_meta3d_blocks <= depths[-1]`, ...).
        """
        def bad(field: str, allowed: str) -> None:
            raise ConfigError(f"{field}={_show(getattr(self, field))} is invalid: {allowed}.")

        for field in ("depths", "hidden_sizes", "downsamples"):
            if not isinstance(getattr(self, field), (list, tuple)):
                bad(field, "it must be a list with one entry per stage")
        n = len(self.depths)
        if not 1 <= n <= MAX_STAGES:
            bad("depths", f"give 1 to {MAX_STAGES} stages")
        if not all(_is_int(d) and 1 <= d <= MAX_DEPTH for d in self.depths):
            bad("depths", f"every stage needs a whole number of blocks from 1 to {MAX_DEPTH}")
        if len(self.hidden_sizes) != n:
            bad("hidden_sizes", f"it needs one entry per stage ({n}, as depths)")
        if not all(_is_int(h) and 1 <= h <= MAX_WIDTH for h in self.hidden_sizes):
            bad("hidden_sizes", f"widths must be whole numbers from 1 to {MAX_WIDTH}")
        if self.hidden_sizes[0] < 2:
            bad("hidden_sizes", "the first width must be at least 2 (the stem has half as many channels)")
        if len(self.downsamples) != n:
            bad("downsamples", f"it needs one entry per stage ({n}, as depths)")
        if not all(isinstance(d, bool) for d in self.downsamples):
            bad("downsamples", "every entry must be true or false")
        for field, (low, high) in _INT_RANGES.items():
            if not (_is_int(getattr(self, field)) and low <= getattr(self, field) <= high):
                bad(field, f"it must be a whole number from {low} to {high}")
        for field in _BOOLS:
            if not isinstance(getattr(self, field), bool):
                bad(field, "it must be true or false")
        if self.dim != self.hidden_sizes[-1]:
            bad("dim", f"it must equal the last hidden size, hidden_sizes[-1]={self.hidden_sizes[-1]}")
        if self.hidden_size != self.hidden_sizes[-1]:
            bad("hidden_size", f"it must equal the last hidden size, hidden_sizes[-1]={self.hidden_sizes[-1]}")
        if not (_is_int(self.num_meta3d_blocks) and 0 <= self.num_meta3d_blocks <= self.depths[-1]):
            bad("num_meta3d_blocks", f"the last stage has {self.depths[-1]} blocks, so 0..{self.depths[-1]} are allowed")
        for field in ("attention_ratio", "mlp_expansion_ratio"):
            if not (_is_number(getattr(self, field)) and 0 < getattr(self, field) <= MAX_RATIO):
                bad(field, f"it must be a positive number up to {MAX_RATIO}")
        if int(self.attention_ratio * self.key_dim) < 1:
            bad("attention_ratio", f"attention_ratio * key_dim ({self.key_dim}) must be at least 1")
        if int(min(self.hidden_sizes) * self.mlp_expansion_ratio) < 1:
            bad("mlp_expansion_ratio", f"the MLP of the narrowest stage ({min(self.hidden_sizes)}) needs at least "
                "one hidden unit")
        if self.pool_size % 2 == 0:
            bad("pool_size", "it must be odd so that pooling keeps the feature size")
        self._validate_shared()

    _largest = "the largest EfficientFormer, L7, has 82 million"
    _size_fields = "depths, hidden_sizes, mlp_expansion_ratio or num_labels"
    _eps_fields = ("layer_norm_eps", "batch_norm_eps")

    def _expected_shapes(self) -> dict[str, tuple]:
        from .checkpoints.shapes import expected_shapes

        return expected_shapes(self)

    # ------------------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "EfficientFormerConfig":
        """The paper's L1, L3 or L7 shape (1000 ImageNet classes unless overridden)."""
        from .presets import get_variant

        return cls.from_dict(get_variant(name).config_kwargs(), **overrides)

def read_json_object(path: str | os.PathLike, error: type[ValueError] = ConfigError) -> dict[str, Any]:
    """The JSON object in `path`, or `error` (one sentence) when the file is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise error(f"{path} does not exist; give the path of a config.json or of the folder holding it.") from None
    except PermissionError:
        raise error(f"cannot read {path}: permission denied; make it readable (chmod u+r) or copy it "
                    "somewhere you can read.") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a JSON file; point at the file itself.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path} is not valid JSON ({err}); download or write it again.") from None
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__}, not an object; download or write it again.")
    return data


def _is_int(value: Any) -> bool:
    """A whole number given as an integer (numpy's too); True and 3.0 are not, as JSON never writes a count so."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float, not a bool (JSON's NaN and Infinity literals parse as floats)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value: Any) -> str:
    """`repr` of a config value, cut short so that a list of 100000 depths gives a one-line message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
