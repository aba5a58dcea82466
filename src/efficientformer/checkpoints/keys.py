"""State-dict key names of the three EfficientFormer layouts, as one table used in both directions.

The layouts:

- `"transformers"`: `EfficientFormerForImageClassificationWithTeacher` of transformers 4.x (and this
  package): `efficientformer.patch_embed.convolution1.weight`, `...intermediate_stages.I...`,
  `...last_stage.meta4D_layers...`, `...last_stage.meta3D_layers...`, `classifier`, `distillation_classifier`.
- `"timm"`: `timm.models.efficientformer.EfficientFormer`: `stem.conv1`, `stages.S.downsample`,
  `stages.S.blocks.B`, `norm`, `head`, `head_dist`.
- `"original"`: the snap-research release (`efficientformer_l1_300d.pth`, `{"model": state_dict}`):
  `patch_embed.N`, `network.I.B`, `norm`, `head`, `dist_head`.

Every row of `RULES` names the same tensor in each layout. A pattern is a key with placeholders:
`{p}` is a parameter name (`weight`, `bias`, `running_mean`, ...); `{stage}` and `{block}` are the
indices being translated; `{last}` (index of the last stage) and `{m4}` (number of Meta4D blocks in the
last stage) are constants of the model, held by a `Layout`. A placeholder may be an affine expression
such as `{2*stage-1}` or `{block+m4+1}`: the inverse direction solves it for the index.

The last stage is where the layouts differ most: timm and the original code keep all its blocks in one
list and put a parameter-free `Flat` module between the Meta4D and the Meta3D blocks, so Meta3D block
`j` is list entry `m4 + 1 + j` there, while transformers numbers `meta3D_layers` from 0. The first
matching row wins, so the last-stage rows come before the rows of the other stages.

Example:
    >>> from efficientformer.checkpoints.keys import Layout, convert_key
    >>> convert_key("stages.3.blocks.4.token_mixer.qkv.weight", "timm", "transformers", Layout(last=3, m4=3))
    'efficientformer.encoder.last_stage.meta3D_layers.blocks.0.token_mixer.qkv.weight'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping

from ..constants import BASE_PREFIX
from ..errors import CheckpointError

FORMATS = ("transformers", "timm", "original")

# ----------------------------------------------------------------------------------------- the table
# Module prefixes of each part of the network: (transformers, timm, original).
_STEM = ("efficientformer.patch_embed", "stem", "patch_embed")
_META4D = ("efficientformer.encoder.intermediate_stages.{2*stage}.meta4D_layers.blocks.{block}",
           "stages.{stage}.blocks.{block}",
           "network.{2*stage}.{block}")
_DOWNSAMPLE = ("efficientformer.encoder.intermediate_stages.{2*stage-1}",
               "stages.{stage}.downsample",
               "network.{2*stage-1}")
_LAST_META4D = ("efficientformer.encoder.last_stage.meta4D_layers.blocks.{block}",
                "stages.{last}.blocks.{block}",
                "network.{2*last}.{block}")
_LAST_META3D = ("efficientformer.encoder.last_stage.meta3D_layers.blocks.{block}",
                "stages.{last}.blocks.{block+m4+1}",
                "network.{2*last}.{block+m4+1}")

# Members of each part: (transformers, timm, original) suffixes after the prefix.
_STEM_MEMBERS = (
    ("convolution1.{p}", "conv1.{p}", "0.{p}"),
    ("batchnorm_before.{p}", "norm1.{p}", "1.{p}"),
    ("convolution2.{p}", "conv2.{p}", "3.{p}"),
    ("batchnorm_after.{p}", "norm2.{p}", "4.{p}"),
)
_META4D_MEMBERS = (
    ("layer_scale_1", "ls1.gamma", "layer_scale_1"),
    ("layer_scale_2", "ls2.gamma", "layer_scale_2"),
    ("mlp.convolution1.{p}", "mlp.fc1.{p}", "mlp.fc1.{p}"),
    ("mlp.batchnorm_before.{p}", "mlp.norm1.{p}", "mlp.norm1.{p}"),
    ("mlp.convolution2.{p}", "mlp.fc2.{p}", "mlp.fc2.{p}"),
    ("mlp.batchnorm_after.{p}", "mlp.norm2.{p}", "mlp.norm2.{p}"),
)
_META3D_MEMBERS = (
    ("layernorm1.{p}", "norm1.{p}", "norm1.{p}"),
    ("token_mixer.attention_biases", "token_mixer.attention_biases", "token_mixer.attention_biases"),
    ("token_mixer.attention_bias_idxs", "token_mixer.attention_bias_idxs", "token_mixer.attention_bias_idxs"),
    ("token_mixer.qkv.{p}", "token_mixer.qkv.{p}", "token_mixer.qkv.{p}"),
    ("token_mixer.projection.{p}", "token_mixer.proj.{p}", "token_mixer.proj.{p}"),
    ("layer_scale_1", "ls1.gamma", "layer_scale_1"),
    ("layernorm2.{p}", "norm2.{p}", "norm2.{p}"),
    ("mlp.linear_in.{p}", "mlp.fc1.{p}", "mlp.fc1.{p}"),
    ("mlp.linear_out.{p}", "mlp.fc2.{p}", "mlp.fc2.{p}"),
    ("layer_scale_2", "ls2.gamma", "layer_scale_2"),
)
_DOWNSAMPLE_MEMBERS = (
    ("projection.{p}", "conv.{p}", "proj.{p}"),
    ("norm.{p}", "norm.{p}", "norm.{p}"),
)
_WHOLE_KEYS = (
    ("efficientformer.layernorm.{p}", "norm.{p}", "norm.{p}"),
    ("classifier.{p}", "head.{p}", "head.{p}"),
    ("distillation_classifier.{p}", "head_dist.{p}", "dist_head.{p}"),
)


def _join(prefixes: tuple[str, str, str], members: Iterable[tuple[str, str, str]]) -> list[tuple[str, ...]]:
    return [tuple(f"{pre}.{suf}" for pre, suf in zip(prefixes, member)) for member in members]


# THE table, in matching order: the first row whose pattern fits a key translates it.
RULES: tuple[tuple[str, str, str], ...] = tuple(
    _join(_STEM, _STEM_MEMBERS)
    + _join(_LAST_META3D, _META3D_MEMBERS)  # before the Meta4D rows: same list, higher indices
    + _join(_LAST_META4D, _META4D_MEMBERS)  # before the other stages: `stages.{last}` is a stage too
    + _join(_META4D, _META4D_MEMBERS)
    + _join(_DOWNSAMPLE, _DOWNSAMPLE_MEMBERS)
    + list(_WHOLE_KEYS)
)

# Wrappers that training code puts in front of every key; removed before matching.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# A bare EfficientFormerModel state dict (no heads) lacks the "efficientformer." of the table.
BARE_MODEL_PREFIXES = ("patch_embed.convolution", "patch_embed.batchnorm", "encoder.", "layernorm.")


# ----------------------------------------------------------------------------------- the machinery
@dataclass(frozen=True)
class Layout:
    """The model constants the patterns refer to.

    Args:
        last: index of the last stage (3 for the four-stage models).
        m4: number of Meta4D blocks in the last stage (`depths[-1] - num_meta3d_blocks`).
    """

    last: int
    m4: int

    @classmethod
    def from_config(cls, config) -> "Layout":
        """The layout of an `EfficientFormerConfig`, read off its architecture plan."""
        from ..models.architecture import plan

        stages = plan(config).stages
        return cls(last=len(stages) - 1, m4=stages[-1].num_meta4d)


_UNKNOWNS = ("stage", "block")
_TERM = re.compile(r"([+-]?)\s*(?:(\d+)\s*\*\s*)?([a-z_][a-z0-9_]*|\d+)")


def _affine(expr: str) -> tuple[str | None, int, dict[str, int]]:
    """Parse `a*x + terms` into (unknown x or None, factor a, {constant name or '': coefficient})."""
    unknown, factor, consts = None, 0, {}
    pos = 0
    expr = expr.replace(" ", "")
    while pos < len(expr):
        m = _TERM.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad placeholder {{{expr}}} in key_mapping.RULES")
        sign = -1 if m.group(1) == "-" else 1
        coef = sign * int(m.group(2) or 1)
        name = m.group(3)
        if name.isdigit():
            consts[""] = consts.get("", 0) + coef * int(name)
        elif name in _UNKNOWNS:
            if unknown not in (None, name):
                raise ValueError(f"placeholder {{{expr}}} has two unknowns")
            unknown, factor = name, factor + coef
        else:
            consts[name] = consts.get(name, 0) + coef
        pos = m.end()
    return unknown, factor, consts


@dataclass(frozen=True)
class _Slot:
    expr: str  # the placeholder text, e.g. "2*stage-1" or "p"
    unknown: str | None
    factor: int
    consts: tuple[tuple[str, int], ...]

    def offset(self, layout: Layout) -> int:
        values = {"": 1, "last": layout.last, "m4": layout.m4}
        return sum(coef * values[name] for name, coef in self.consts)


@lru_cache(maxsize=None)
def _parse(pattern: str) -> tuple[tuple[str, ...], tuple[_Slot, ...]]:
    """Split a pattern into literal pieces and placeholder slots (pieces has one more item)."""
    pieces, slots = [], []
    rest = pattern
    while "{" in rest:
        head, _, tail = rest.partition("{")
        expr, _, rest = tail.partition("}")
        pieces.append(head)
        if expr == "p":
            slots.append(_Slot("p", None, 0, ()))
        else:
            unknown, factor, consts = _affine(expr)
            slots.append(_Slot(expr, unknown, factor, tuple(sorted(consts.items()))))
    pieces.append(rest)
    return tuple(pieces), tuple(slots)


@lru_cache(maxsize=None)
def _regex(pattern: str, layout: Layout) -> tuple[re.Pattern, tuple[_Slot, ...]]:
    pieces, slots = _parse(pattern)
    parts, captured = [], []
    for piece, slot in zip(pieces, slots):
        parts.append(re.escape(piece))
        if slot.expr == "p":
            parts.append(r"([A-Za-z_]+)")
            captured.append(slot)
        elif slot.unknown is None:  # a constant of the layout: a literal number
            parts.append(str(slot.offset(layout)))
        else:
            parts.append(r"(\d+)")
            captured.append(slot)
    parts.append(re.escape(pieces[-1]))
    return re.compile("".join(parts) + r"\Z"), tuple(captured)


def _match(pattern: str, key: str, layout: Layout) -> dict[str, object] | None:
    """The values of the placeholders that make `pattern` spell `key`, or None."""
    regex, captured = _regex(pattern, layout)
    found = regex.match(key)
    if found is None:
        return None
    values: dict[str, object] = {}
    for slot, text in zip(captured, found.groups()):
        if slot.expr == "p":
            name, value = "p", text
        else:
            number = int(text) - slot.offset(layout)
            if number % slot.factor or number // slot.factor < 0:
                return None
            name, value = slot.unknown, number // slot.factor
        if values.setdefault(name, value) != value:
            return None
    return values


def _render(pattern: str, values: Mapping[str, object], layout: Layout) -> str:
    pieces, slots = _parse(pattern)
    out = [pieces[0]]
    for slot, piece in zip(slots, pieces[1:]):
        if slot.expr == "p":
            out.append(str(values["p"]))
        else:
            number = slot.offset(layout)
            if slot.unknown is not None:
                number += slot.factor * int(values[slot.unknown])  # type: ignore[arg-type]
            out.append(str(number))
        out.append(piece)
    return "".join(out)


def _check_format(name: str) -> int:
    if name not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format {name!r}; choose one of {', '.join(FORMATS)}.")
    return FORMATS.index(name)


def convert_key(key: str, src: str, dst: str, layout: Layout) -> str | None:
    """The name of `key` (in layout `src`) in layout `dst`, or None when no rule covers it.

    Args:
        key: a state-dict key of `src`.
        src, dst: one of `FORMATS`.
        layout: the model constants (see `Layout`, `layout_from_keys`).
    """
    i, j = _check_format(src), _check_format(dst)
    for rule in RULES:
        values = _match(rule[i], key, layout)
        if values is not None:
            return _render(rule[j], values, layout)
    return None


def strip_wrappers(keys: Iterable[str]) -> dict[str, str]:
    """Map each key to its name without training wrappers (`module.`) and with the transformers
    `efficientformer.` prefix added to a bare `EfficientFormerModel` state dict."""
    keys = list(keys)
    out = {}
    bare = any(k.startswith("encoder.intermediate_stages.") or k.startswith("encoder.last_stage.") for k in keys)
    for key in keys:
        name = key
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, changed = name[len(prefix):], True
        if bare and name.startswith(BARE_MODEL_PREFIXES):
            name = f"{BASE_PREFIX}.{name}"
        out[key] = name
    return out


_INDEX = {
    "transformers": (re.compile(r"efficientformer\.encoder\.intermediate_stages\.(\d+)\."),
                     re.compile(r"efficientformer\.encoder\.last_stage\.meta4D_layers\.blocks\.(\d+)\.")),
    "timm": (re.compile(r"stages\.(\d+)\."), re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(token_mixer\.)?")),
    "original": (re.compile(r"network\.(\d+)\."), re.compile(r"network\.(\d+)\.(\d+)\.(token_mixer\.)?")),
}


def layout_from_keys(keys: Iterable[str], fmt: str) -> Layout:
    """Read the `Layout` constants off the keys of a state dict in layout `fmt`.

    The last stage is the highest stage index; the number of its Meta4D blocks is the number of
    `meta4D_layers` blocks (transformers) or the list index of its first attention block minus one for
    the `Flat` module (timm, original).
    """
    _check_format(fmt)
    keys = list(keys)
    stage_re, block_re = _INDEX[fmt]
    stages = [int(m.group(1)) for m in map(stage_re.match, keys) if m]
    if fmt == "transformers":
        last = (max(stages) + 2) // 2 if stages else 0
        blocks = [int(m.group(1)) for m in map(block_re.match, keys) if m]
        return Layout(last=last, m4=max(blocks) + 1 if blocks else 0)
    top = max(stages) if stages else 0
    last = top if fmt == "timm" else top // 2
    in_last = [m for m in map(block_re.match, keys) if m and int(m.group(1)) == top]
    attention = [int(m.group(2)) for m in in_last if m.group(3)]
    if attention:
        return Layout(last=last, m4=min(attention) - 1)
    return Layout(last=last, m4=max((int(m.group(2)) for m in in_last), default=-1) + 1)


def match_counts(keys: Iterable[str]) -> dict[str, int]:
    """How many of `keys` each layout's rules explain (used to detect the format of a state dict)."""
    keys = list(keys)
    counts = {}
    for fmt in FORMATS:
        layout = layout_from_keys(keys, fmt)
        counts[fmt] = sum(convert_key(k, fmt, fmt, layout) is not None for k in keys)
    return counts


def detect_format(keys: Iterable[str]) -> str | None:
    """The layout whose rules explain every key, else the one explaining most (None if none fits any)."""
    keys = list(keys)
    counts = match_counts(keys)
    best = max(FORMATS, key=lambda f: counts[f])
    return best if counts[best] else None


def convert_state_dict(state_dict: Mapping[str, object], src: str, dst: str,
                       layout: Layout | None = None, *, source: str = "the checkpoint") -> dict[str, object]:
    """Rename every key of `state_dict` from layout `src` to layout `dst` (values unchanged, order kept).

    Args:
        state_dict: key -> tensor (or any value) in layout `src`.
        src, dst: one of `FORMATS`.
        layout: model constants; read from the keys when None.
        source: what to call the state dict in errors (e.g. its file name).

    Returns:
        A new dict with the `dst` names.

    Raises:
        CheckpointError: some key fits no rule (the error lists them).

    Example:
        >>> sd = convert_state_dict(timm_sd, "timm", "transformers")  # doctest: +SKIP
    """
    _check_format(src), _check_format(dst)
    layout = layout or layout_from_keys(state_dict, src)
    out, unknown = {}, []
    for key, value in state_dict.items():
        name = key if src == dst else convert_key(key, src, dst, layout)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise CheckpointError(f"{source}: {len(unknown)} key(s) are not part of the {src} EfficientFormer layout "
                              f"({shown}); is this an EfficientFormer checkpoint?")
    return out
