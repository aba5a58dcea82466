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
