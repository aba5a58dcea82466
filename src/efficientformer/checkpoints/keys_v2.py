"""State-dict key names of EfficientFormerV2's three layouts, as one table used in both directions.

- `"transformers"`: this package's folders (transformers never had V2; the names follow our V1 classes):
  `efficientformer.patch_embed.convolution1`, `efficientformer.encoder.stages.S.downsample...`,
  `...stages.S.blocks.B.mlp.depthwise`, `...token_mixer.query.convolution`, `efficientformer.norm`,
  `classifier`, `distillation_classifier`.
- `"timm"`: `timm.models.efficientformer_v2.EfficientFormerV2`: `stem.conv1.conv`, `stages.S.downsample.conv.conv`,
  `stages.S.blocks.B.mlp.mid.conv`, `...token_mixer.q.conv`, `norm`, `head`, `head_dist`.
- `"original"`: snap-research's `models/efficientformer_v2.py` (`eformer_s0_450.pth`, `{"model": state_dict}`):
  `patch_embed.N` (an `nn.Sequential`), `network.I.B` with stage S at `I = 2S` and the downsample into it at
  `I = 2S - 1`, `nn.Sequential` members numbered (`q.0`, `q.1`; `proj.1`, `proj.2` after the activation),
  layer scales of shape (C, 1, 1), persistent `attention_bias_idxs`, `dist_head`.

Every row names the same tensor in each layout. Placeholders: `{s}` a stage, `{b}` a block, `{p}` a parameter
name; the original's list index is `{2s}` or `{2s-1}`. The downsample into the last stage (stage 3) names its
convolution `conv`/`bn` in the original code (`proj`/`norm` elsewhere), so its rows come first.

Example:
    >>> from efficientformer.checkpoints.keys_v2 import convert_key_v2
    >>> convert_key_v2("stages.2.blocks.1.token_mixer.q.conv.weight", "timm", "original")
    'network.4.1.token_mixer.q.0.weight'
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Mapping

from ..errors import CheckpointError
from .keys import FORMATS

LAST = 3  # the stage entered through the attention downsample
SCALE = "scale"  # rows whose original tensor is (C, 1, 1) where the others hold (C,)
INDEX = "index"  # rows only the original layout has (its persistent bias index buffers)

_BLOCK = ("efficientformer.encoder.stages.{s}.blocks.{b}", "stages.{s}.blocks.{b}", "network.{2s}.{b}")
_DOWN = ("efficientformer.encoder.stages.{s}.downsample", "stages.{s}.downsample", "network.{2s-1}")
_DOWN_LAST = tuple(p.replace("{s}", str(LAST)).replace("{2s-1}", str(2 * LAST - 1)) for p in _DOWN)


def _conv_norm(ours: str, timm: str, original: str, first: int = 0) -> list[tuple[str, str, str]]:
    """A convolution + BatchNorm: ours `.convolution`/`.batchnorm`, timm's `.conv`/`.bn`, the original's
    numbered members of an `nn.Sequential` from `first`."""
    return [(f"{ours}.convolution.{{p}}", f"{timm}.conv.{{p}}", f"{original}.{first}.{{p}}"),
            (f"{ours}.batchnorm.{{p}}", f"{timm}.bn.{{p}}", f"{original}.{first + 1}.{{p}}")]


def _attention_members(talking: bool) -> list[tuple]:
    rows = []
    for ours, short in (("key", "k"), ("value", "v"), ("value_local", "v_local")):
        rows += _conv_norm(ours, short, short)
    rows += _conv_norm("projection", "proj", "proj", first=1)  # the original's proj.0 is the activation
    rows += [("attention_biases", "attention_biases", "attention_biases"),
             ("attention_bias_idxs", None, "attention_bias_idxs", INDEX)]
    if talking:
        rows += _conv_norm("query", "q", "q") + _conv_norm("stride_conv", "stride_conv", "stride_conv")
        rows += [(f"{name}.{{p}}",) * 3 for name in ("talking_head1", "talking_head2")]
    else:  # the local-global query of the attention downsample
        rows += [("query.local.{p}", "q.local.{p}", "q.local.0.{p}")]
        rows += _conv_norm("query.projection", "q.proj", "q.proj")
    return rows


def _prefixed(prefixes: tuple[str, ...], rows: list[tuple]) -> list[tuple]:
    """`rows` with each layout's prefix put in front of its name (None stays None)."""
    return [tuple(f"{pre}.{name}" if name is not None else None for pre, name in zip(prefixes, row[:3]))
            + tuple(row[3:]) for row in rows]


_BLOCK_MEMBERS = [
    ("mlp.convolution1.{p}", "mlp.fc1.conv.{p}", "mlp.fc1.{p}"),
    ("mlp.batchnorm_before.{p}", "mlp.fc1.bn.{p}", "mlp.norm1.{p}"),
    ("mlp.depthwise.{p}", "mlp.mid.conv.{p}", "mlp.mid.{p}"),
    ("mlp.batchnorm_depthwise.{p}", "mlp.mid.bn.{p}", "mlp.mid_norm.{p}"),
    ("mlp.convolution2.{p}", "mlp.fc2.conv.{p}", "mlp.fc2.{p}"),
    ("mlp.batchnorm_after.{p}", "mlp.fc2.bn.{p}", "mlp.norm2.{p}"),
    ("layer_scale_1", "ls1.gamma", "layer_scale_1", SCALE),
    ("layer_scale_2", "ls2.gamma", "layer_scale_2", SCALE),
] + _prefixed(("token_mixer",) * 3, _attention_members(True))
_DOWN_LAST_MEMBERS = ([("projection.{p}", "conv.conv.{p}", "conv.{p}"), ("norm.{p}", "conv.bn.{p}", "bn.{p}")]
                      + _prefixed(("attention", "attn", "attn"), _attention_members(False)))
_DOWN_MEMBERS = [("projection.{p}", "conv.conv.{p}", "proj.{p}"), ("norm.{p}", "conv.bn.{p}", "norm.{p}")]

_STEM = [("efficientformer.patch_embed.convolution1.{p}", "stem.conv1.conv.{p}", "patch_embed.0.{p}"),
         ("efficientformer.patch_embed.batchnorm_before.{p}", "stem.conv1.bn.{p}", "patch_embed.1.{p}"),
         ("efficientformer.patch_embed.convolution2.{p}", "stem.conv2.conv.{p}", "patch_embed.3.{p}"),
         ("efficientformer.patch_embed.batchnorm_after.{p}", "stem.conv2.bn.{p}", "patch_embed.4.{p}")]
_WHOLE = [("efficientformer.norm.{p}", "norm.{p}", "norm.{p}"), ("classifier.{p}", "head.{p}", "head.{p}"),
          ("distillation_classifier.{p}", "head_dist.{p}", "dist_head.{p}")]


# THE table, in matching order (the first row whose pattern fits a key translates it); a row is
# (transformers, timm, original[, kind]), None where a layout has no such tensor.
RULES_V2: tuple[tuple, ...] = tuple(
    _STEM + _prefixed(_DOWN_LAST, _DOWN_LAST_MEMBERS) + _prefixed(_DOWN, _DOWN_MEMBERS)
    + _prefixed(_BLOCK, _BLOCK_MEMBERS)
    + _WHOLE)

# keys only an EfficientFormerV2 has: every block's FFN holds a depthwise convolution
_V2_MARK = re.compile(r"(^|[./])mlp[./](depthwise|mid|mid_norm)[./]")  # PyTorch names and Keras' (`/`)
_SLOT = re.compile(r"\{(p|s|b|2s|2s-1)\}")


def is_v2_keys(keys: Iterable[str]) -> bool:
    """Whether state-dict keys (any layout, wrappers such as `module.` allowed) are an EfficientFormerV2's."""
    return any(_V2_MARK.search(key) for key in keys)


@lru_cache(maxsize=None)
def _compiled(pattern: str) -> tuple[re.Pattern, tuple[str, ...]]:
    slots = _SLOT.findall(pattern)
    pieces = _SLOT.split(pattern)[::2]
    regex = "".join(re.escape(piece) + ("" if i == len(slots) else r"([A-Za-z_]+)" if slots[i] == "p" else r"(\d+)")
                    for i, piece in enumerate(pieces))
    return re.compile(regex + r"\Z"), tuple(slots)


def _match(pattern: str | None, key: str) -> dict[str, object] | None:
    if pattern is None:
        return None
    regex, slots = _compiled(pattern)
    found = regex.match(key)
    if found is None:
        return None
    values: dict[str, object] = {}
    for slot, text in zip(slots, found.groups()):
        if slot == "p":
            name, value = "p", text
        elif slot == "2s":
            if int(text) % 2:
                return None
            name, value = "s", int(text) // 2
        elif slot == "2s-1":
            if int(text) % 2 == 0:
                return None
            name, value = "s", (int(text) + 1) // 2
        else:
            name, value = slot, int(text)
        if values.setdefault(name, value) != value:
            return None
    return values


def _render(pattern: str, values: Mapping[str, object]) -> str:
    numbers = {"p": values.get("p"), "s": values.get("s"), "b": values.get("b")}
    if values.get("s") is not None:
        numbers.update({"2s": 2 * int(values["s"]), "2s-1": 2 * int(values["s"]) - 1})
    return _SLOT.sub(lambda m: str(numbers[m.group(1)]), pattern)


def _rule_for(key: str, src: str) -> tuple[tuple, dict] | None:
    i = FORMATS.index(src)
    for rule in RULES_V2:
        values = _match(rule[i], key)
        if values is not None:
            return rule, values
    return None


def convert_key_v2(key: str, src: str, dst: str) -> str | None:
    """The name of `key` (layout `src`) in layout `dst`; None when no rule covers it or `dst` has no such tensor."""
    if src not in FORMATS or dst not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format {src if src not in FORMATS else dst!r}; choose one of "
                              f"{', '.join(FORMATS)}.")
    found = _rule_for(key, src)
    if found is None or found[0][FORMATS.index(dst)] is None:
        return None
    return _render(found[0][FORMATS.index(dst)], found[1])


def detect_format_v2(keys: Iterable[str]) -> str | None:
    """The V2 layout whose rules explain the most keys (None when none explains any)."""
    keys = list(keys)
    counts = {fmt: sum(_rule_for(k, fmt) is not None for k in keys) for fmt in FORMATS}
    best = max(FORMATS, key=lambda f: counts[f])
    return best if counts[best] else None


def convert_state_dict_v2(state_dict: Mapping[str, object], src: str, dst: str, *,
                          source: str = "the checkpoint") -> dict[str, object]:
    """Rename every key from layout `src` to `dst`; layer scales are reshaped between (C,) and the original's
    (C, 1, 1), and the original's index buffers are dropped (the others rebuild them; `bias_index_buffers`
    writes them for the original layout). Order is kept.

    Raises:
        CheckpointError: a key fits no rule (the error lists the first ones).
    """
    j = FORMATS.index(dst)
    out, unknown = {}, []
    for key, value in state_dict.items():
        found = _rule_for(key, src)
        if found is None:
            unknown.append(key)
            continue
        rule, values = found
        kind = rule[3] if len(rule) > 3 else None
        if rule[j] is None or (kind == INDEX and dst != "original"):
            continue
        if kind == SCALE and src != dst and "original" in (src, dst):
            value = value.reshape(-1, 1, 1) if dst == "original" else value.reshape(-1)
        out[_render(rule[j], values)] = value
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise CheckpointError(f"{source}: {len(unknown)} key(s) are not part of the {src} EfficientFormerV2 layout "
                              f"({shown}); is this an EfficientFormerV2 checkpoint?")
    return out


def bias_index_buffers(config) -> dict[str, object]:
    """The original layout's `attention_bias_idxs` of every attention (our names), as torch int64 tensors."""
    import torch

    from ..models.architecture_v2 import plan_v2
    from ..models.attention_bias import NUMPY, offset_index

    network = plan_v2(config)
    out = {}
    for stage in network.stages:
        down = stage.downsample
        if down is not None and down.attention is not None:
            grid = down.attention.grid
            out[f"efficientformer.encoder.stages.{stage.index}.downsample.attention.attention_bias_idxs"] = \
                torch.from_numpy(offset_index(grid, grid, NUMPY, None, down.attention.query_stride).copy())
        for block in stage.blocks:
            if block.attention is not None:
                grid = block.attention.grid
                out[f"efficientformer.encoder.{block.path()}.token_mixer.attention_bias_idxs"] = \
                    torch.from_numpy(offset_index(grid, grid, NUMPY).copy())
    return out


__all__ = ["RULES_V2", "is_v2_keys", "convert_key_v2", "detect_format_v2", "convert_state_dict_v2",
           "bias_index_buffers"]
