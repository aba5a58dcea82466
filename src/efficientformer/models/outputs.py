"""Model outputs that behave as transformers' do: attributes, keys, indices and `to_tuple()`.

Fields left as `None` are skipped by keys, indexing and `to_tuple()`, exactly as in transformers.
Backend-neutral: the values are torch tensors, TensorFlow tensors or numpy arrays.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Iterator


class ModelOutput(OrderedDict):
    """Base of the outputs: an ordered mapping of the fields that are not None, also readable as attributes
    and by index (`out[0]`, `out.logits`, `out["logits"]`), as transformers' `ModelOutput`. Also built from one mapping or iterable of (name, value) pairs, which is how
    `tf.function`, `tf.nest` and pytree utilities rebuild a container they took apart."""

    def __post_init__(self) -> None:
        names = [f.name for f in fields(self)]
        first = getattr(self, names[0])
        if _is_pairs(first) and all(getattr(self, name) is None for name in names[1:]):
            pairs = dict(first)
            if not set(pairs) <= set(names):
                raise TypeError(f"{type(self).__name__} has no field(s) {sorted(set(pairs) - set(names))}.")
            for name in names:
                object.__setattr__(self, name, pairs.get(name))
        for name in names:
            value = getattr(self, name)
            if value is not None:
                super().__setitem__(name, value)

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return dict(self.items())[key]
        return self.to_tuple()[key]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.keys() and value is not None:
            super().__setitem__(name, value)
        super().__setattr__(name, value)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        super().__setattr__(key, value)

    def __reduce__(self):  # picklable like a dataclass
        return type(self), tuple(getattr(self, f.name) for f in fields(self))

    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are not None, in declaration order."""
        return tuple(self[k] for k in self.keys())


def _is_pairs(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, (list, Iterator)) and not hasattr(value, "shape")


@dataclass(eq=False)
class BaseModelOutput(ModelOutput):
    """`last_hidden_state` (B, N, C) after the final LayerNorm; `hidden_states`: the stem output, every
    stage and downsampling output (B, C, H, W) and the last stage's tokens (B, N, C); `attentions`: the
    softmaxed attention of every Meta3D block (B, heads, N, N)."""

    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass(eq=False)
class ImageClassifierOutput(ModelOutput):
    """`loss` when labels are given, `logits` (B, num_labels), and the backbone's optional states."""

    loss: Any = None
    logits: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass(eq=False)
class ImageClassifierWithTeacherOutput(ModelOutput):
    """`logits` is the mean of `cls_logits` (class head) and `distillation_logits` (distillation head);
    `loss` (both heads trained on the labels) only when labels are given."""

    loss: Any = None
    logits: Any = None
    cls_logits: Any = None
    distillation_logits: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


# ------------------------------------------------------------------------------- dense features
class FeatureInfo(list):
    """What `forward_intermediates` gives for each stage, as timm's `feature_info`: a list (one per stage)
    of dicts `{"num_chs", "reduction", "module", "index"}`, where `module` names our module whose output
    the map is. `out_indices` are the stages a features-only backbone returns (all stages otherwise);
    `channels()`, `reduction()` and `module_name()` list them for those stages, as timm's `FeatureInfo`."""

    def __init__(self, info: list[dict], out_indices: tuple[int, ...] | None = None) -> None:
        super().__init__(dict(entry, index=i) for i, entry in enumerate(info))
        self.out_indices = tuple(range(len(self))) if out_indices is None else tuple(out_indices)

    def get(self, key: str, idx: int | list[int] | tuple[int, ...] | None = None) -> Any:
        """`key` of the output stages (`idx=None`), of the stages in `idx` (a sequence), or of stage `idx`."""
        if idx is None:
            return [self[i][key] for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def channels(self, idx: int | list[int] | tuple[int, ...] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | list[int] | tuple[int, ...] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | list[int] | tuple[int, ...] | None = None) -> Any:
        return self.get("module", idx)


def loading_report(missing: list[str], unexpected: list[str],
                   mismatched: list[tuple[str, tuple, tuple]]) -> dict[str, list]:
    """What loading a checkpoint did, the same from both backends (transformers' `output_loading_info`):
    `missing_keys` (weights of the model the checkpoint lacks, newly initialized), `unexpected_keys`
    (weights of the checkpoint the model does not use) and `mismatched_keys` ((name, checkpoint shape,
    model shape) of weights newly initialized because their shape differs)."""
    return {"missing_keys": list(missing), "unexpected_keys": list(unexpected), "mismatched_keys": list(mismatched)}


def stage_feature_info(config: Any, prefix: str, sep: str, out_indices: tuple[int, ...] | None = None) -> FeatureInfo:
    """`FeatureInfo` of every stage of `config` from the architecture plan, for both backends: module paths
    `prefix + encoder<sep><stage module>` (`.` for PyTorch names, `/` for Keras names)."""
    from .architecture import plan

    info = [{"num_chs": stage.width, "reduction": stage.reduction,
             "module": prefix + sep.join(("encoder",) + stage.module)} for stage in plan(config).stages]
    return FeatureInfo(info, out_indices)


def take_indices(num_stages: int, indices: Any, name: str = "indices") -> list[int]:
    """The stages `forward_intermediates` returns, as timm's `feature_take_indices`: an int n means the
    last n stages, a sequence names stages (negative ones count from the end); sorted, each once.

    Raises:
        InputError: an index outside the model's stages (plain Python, so free under tracing).
    """
    from ..errors import InputError

    if isinstance(indices, bool) or not isinstance(indices, (int, list, tuple, range)):
        raise InputError(f"{name} must be an int (the last n stages) or a sequence of stage numbers, "
                         f"got {type(indices).__name__}.")
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise InputError(f"{name}={indices} asks for the last {indices} stages but the model has {num_stages}; "
                             f"give 1..{num_stages}, or a sequence of stage numbers.")
        return list(range(num_stages - indices, num_stages))
    if not indices or any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
        raise InputError(f"{name} {tuple(indices)} must be stage numbers in 0..{num_stages - 1} "
                         "(or negative from the end), at least one.")
    if any(not -num_stages <= i < num_stages for i in indices):
        raise InputError(f"{name} {tuple(indices)} must lie in 0..{num_stages - 1} (or negative from the end).")
    return sorted({i % num_stages for i in indices})



def features_request(num_stages: int, features_only: bool, out_indices: Any) -> tuple[int, ...] | None:
    """The stages a features-only backbone returns (both backends' `EfficientFormerModel(config,
    features_only=..., out_indices=...)`), or None for the ordinary backbone."""
    if not features_only and out_indices is None:
        return None
    return tuple(take_indices(num_stages, num_stages if out_indices is None else out_indices, "out_indices"))


def features_arguments(cls: type, features_only: bool, out_indices: Any) -> dict[str, Any]:
    """The constructor arguments `from_pretrained(..., features_only=, out_indices=)` passes on (both
    backends): none for an ordinary model; refused for a classifier class."""
    if not features_only and out_indices is None:
        return {}
    if not getattr(cls, "supports_features_only", False):
        from ..errors import ConfigError

        backbone = cls.__name__.split("EfficientFormer")[0] + "EfficientFormerModel"
        raise ConfigError(f"out_indices/features_only build a features-only backbone, and {cls.__name__} is a "
                          f"classifier; load it with {backbone}.from_pretrained(path, out_indices=...).")
    return {"features_only": True, "out_indices": out_indices}


def checked_num_classes(num_classes: Any, global_pool: Any) -> int:
    """The arguments of `reset_classifier` (both backends), as timm's: a class count >= 0 (0: no head) and
    the only pooling the heads have, the mean over tokens."""
    from ..errors import InputError

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise InputError(f"num_classes must be a whole number >= 0, got {num_classes!r}.")
    if global_pool not in (None, "avg"):
        raise InputError(f"global_pool={global_pool!r} is not supported: the heads average the tokens ('avg').")
    return num_classes

def intermediates_request(num_stages: int, indices: Any, out_indices: Any, output_fmt: str,
                          intermediates_only: bool, default: Any = None) -> tuple[list[int], bool, str]:
    """The arguments of `forward_intermediates` (both backends) checked and resolved: the stages to return,
    whether only the maps are returned (always with the earlier `out_indices` keyword, which returned
    the list alone), and the keyword's name for messages. `default` applies when neither is given."""
    from ..errors import InputError

    name = "indices"
    if out_indices is not None:
        if indices is not None:
            raise InputError("give indices or its earlier name out_indices, not both.")
        indices, intermediates_only, name = out_indices, True, "out_indices"
    if output_fmt != "NCHW":
        raise InputError(f"output_fmt={output_fmt!r} is not supported: the maps are NCHW only, as timm's; "
                         "permute them with .permute(0, 2, 3, 1) for NHWC.")
    if indices is None:
        indices = num_stages if default is None else default
    return take_indices(num_stages, indices, name), bool(intermediates_only), name
