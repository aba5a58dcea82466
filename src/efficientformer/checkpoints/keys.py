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
last stage) are constants of the model, held by a `Layout`; `pos(stage)` is the index of a stage in the
list that transformers (`intermediate_stages`) and the original code (`network`) build, where each
stage is followed by its Downsample when it has one (`models.architecture.plan` says where: by default
after every stage but the last, so stage `i` sits at `2*i`). A placeholder may be an affine expression
such as `{pos(stage)-1}` or `{block+m4+1}`: the inverse direction solves it for the index.

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
_META4D = ("efficientformer.encoder.intermediate_stages.{pos(stage)}.meta4D_layers.blocks.{block}",
           "stages.{stage}.blocks.{block}",
           "network.{pos(stage)}.{block}")
# the Downsample in front of stage `stage` (timm keeps it in that stage; the lists put it just before it)
_DOWNSAMPLE = ("efficientformer.encoder.intermediate_stages.{pos(stage)-1}",
               "stages.{stage}.downsample",
               "network.{pos(stage)-1}")
_LAST_META4D = ("efficientformer.encoder.last_stage.meta4D_layers.blocks.{block}",
                "stages.{last}.blocks.{block}",
                "network.{pos(last)}.{block}")
_LAST_META3D = ("efficientformer.encoder.last_stage.meta3D_layers.blocks.{block}",
                "stages.{last}.blocks.{block+m4+1}",
                "network.{pos(last)}.{block+m4+1}")

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
        positions: index of each stage, 0..last, in the lists of transformers and the original code;
            None for the usual network with a Downsample after every stage but the last (`2 * stage`).
    """

    last: int
    m4: int
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        positions = tuple(range(0, 2 * self.last + 1, 2)) if self.positions is None else tuple(self.positions)
        if len(positions) != self.last + 1 or list(positions) != sorted(set(positions)):
            raise ValueError(f"Layout.positions {positions} must give {self.last + 1} increasing list indices")
        object.__setattr__(self, "positions", positions)

    def position(self, stage: int) -> int | None:
        """List index of stage `stage` (None when the model has no such stage)."""
        return self.positions[stage] if 0 <= stage <= self.last else None

    def stage_at(self, position: int) -> int | None:
        """The stage at list index `position` (None when a Downsample or nothing sits there)."""
        return self.positions.index(position) if position in self.positions else None

    @classmethod
    def from_config(cls, config) -> "Layout":
        """The layout of an `EfficientFormerConfig`, read off its architecture plan."""
        from ..models.architecture import plan

        network = plan(config)
        stages = network.stages
        # the last stage follows every entry of `intermediate_stages` in the original code's list
        positions = tuple(s.position for s in stages[:-1]) + (len(network.layout),)
        return cls(last=len(stages) - 1, m4=stages[-1].num_meta4d, positions=positions)


_UNKNOWNS = ("stage", "block")
_TERM = re.compile(r"([+-]?)\s*(?:(\d+)\s*\*\s*)?(pos\([a-z_]+\)|[a-z_][a-z0-9_]*|\d+)")


def _affine(expr: str) -> tuple[str | None, int, dict[str, int], bool]:
    """Parse `a*x + terms` into (unknown x or None, factor a, {constant name or '': coefficient}, whether
    the unknown is a stage's list index `pos(x)` rather than x itself)."""
    unknown, factor, consts, mapped = None, 0, {}, False
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
        elif name in _UNKNOWNS or name == "pos(stage)":
            if unknown is not None:
                raise ValueError(f"placeholder {{{expr}}} has two unknowns")
            unknown, factor, mapped = "stage" if name == "pos(stage)" else name, coef, name == "pos(stage)"
        elif name in ("last", "m4", "pos(last)"):
            consts[name] = consts.get(name, 0) + coef
        else:
            raise ValueError(f"unknown name {name!r} in placeholder {{{expr}}} of key_mapping.RULES")
        pos = m.end()
    return unknown, factor, consts, mapped


@dataclass(frozen=True)
class _Slot:
    expr: str  # the placeholder text, e.g. "2*stage-1" or "p"
    unknown: str | None
    factor: int
    consts: tuple[tuple[str, int], ...]
    mapped: bool = False  # the unknown enters as its list index, `pos(stage)`

    def offset(self, layout: Layout) -> int:
        values = {"": 1, "last": layout.last, "m4": layout.m4, "pos(last)": layout.position(layout.last)}
        return sum(coef * values[name] for name, coef in self.consts)

    def solve(self, number: int, layout: Layout) -> int | None:
        """The unknown's value that makes this placeholder read `number` (None when none does)."""
        number -= self.offset(layout)
        if number % self.factor or number // self.factor < 0:
            return None
        value = number // self.factor
        return layout.stage_at(value) if self.mapped else value

    def write(self, value: int, layout: Layout) -> int | None:
        """The number this placeholder reads for the unknown's `value` (None when the model lacks it)."""
        if self.mapped:
            value = layout.position(value)
            if value is None:
                return None
        return self.offset(layout) + self.factor * value


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
            unknown, factor, consts, mapped = _affine(expr)
            slots.append(_Slot(expr, unknown, factor, tuple(sorted(consts.items())), mapped))
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
            name, value = slot.unknown, slot.solve(int(text), layout)
            if value is None:
                return None
        if values.setdefault(name, value) != value:
            return None
    return values


def _render(pattern: str, values: Mapping[str, object], layout: Layout) -> str | None:
    pieces, slots = _parse(pattern)
    out = [pieces[0]]
    for slot, piece in zip(slots, pieces[1:]):
        if slot.expr == "p":
            out.append(str(values["p"]))
        else:
            number = slot.offset(layout) if slot.unknown is None else slot.write(int(values[slot.unknown]), layout)
            if number is None:
                return None
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
            name = _render(rule[j], values, layout)
            if name is not None:
                return name
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


# Per layout: (an entry of the stage list, a stage's block with its list entry, a Downsample entry).
_INDEX = {
    "transformers": (re.compile(r"efficientformer\.encoder\.intermediate_stages\.(\d+)\."),
                     re.compile(r"efficientformer\.encoder\.intermediate_stages\.(\d+)\.meta4D_layers\."),
                     re.compile(r"efficientformer\.encoder\.intermediate_stages\.(\d+)\.projection\.")),
    "timm": (re.compile(r"stages\.(\d+)\."), re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(token_mixer\.)?"),
             re.compile(r"stages\.(\d+)\.downsample\.")),
    "original": (re.compile(r"network\.(\d+)\."), re.compile(r"network\.(\d+)\.(\d+)\.(token_mixer\.)?"),
                 re.compile(r"network\.(\d+)\.proj\.")),
}
_LAST_META4D_BLOCK = re.compile(r"efficientformer\.encoder\.last_stage\.meta4D_layers\.blocks\.(\d+)\.")


def _indices(regex: re.Pattern, keys: list[str]) -> list[int]:
    return sorted({int(m.group(1)) for m in map(regex.match, keys) if m})


def layout_from_keys(keys: Iterable[str], fmt: str) -> Layout:
    """Read the `Layout` constants off the keys of a state dict in layout `fmt`.

    The stages are the list entries that hold blocks (transformers, original) or the `stages.S` indices
    (timm, where a Downsample in front of stage S adds an entry to the other two layouts' lists); the last
    stage is the highest. The number of its Meta4D blocks is the number of `meta4D_layers` blocks
    (transformers) or the list index of its first attention block minus one for the `Flat` module (timm,
    original).
    """
    _check_format(fmt)
    keys = list(keys)
    entry_re, block_re, down_re = _INDEX[fmt]
    if fmt == "transformers":
        stages = _indices(block_re, keys)
        entries = _indices(entry_re, keys)
        # `last_stage` comes after every entry of `intermediate_stages`
        positions = tuple(stages) + ((max(entries) + 1) if entries else 0,)
        blocks = _indices(_LAST_META4D_BLOCK, keys)
        return Layout(last=len(stages), m4=max(blocks) + 1 if blocks else 0, positions=positions)
    blocks = [m for m in map(block_re.match, keys) if m]
    if fmt == "timm":
        top = max(_indices(entry_re, keys), default=0)
        downs = set(_indices(down_re, keys))
        positions = [0]
        for stage in range(1, top + 1):
            positions.append(positions[-1] + 1 + (stage in downs))
        last = top
    else:
        stages = sorted({int(m.group(1)) for m in blocks})
        positions, top = (stages or [0]), (stages[-1] if stages else 0)
        last = len(positions) - 1
    in_last = [m for m in blocks if int(m.group(1)) == top]
    attention = [int(m.group(2)) for m in in_last if m.group(3)]
    m4 = min(attention) - 1 if attention else max((int(m.group(2)) for m in in_last), default=-1) + 1
    return Layout(last=last, m4=m4, positions=tuple(positions))


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
