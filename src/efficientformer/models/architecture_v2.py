"""The plan of an EfficientFormerV2 network, read from its config once (plain Python: no torch, no numpy).

    image (B, C, H, W)
      -> stem: two 3x3 stride-2 conv + BN + activation                    (B, C1, H/4, W/4)
      -> stage 1, 2: 4-D blocks (depthwise-conv FFN)                       strides 4, 8
      -> stage 3: 4-D blocks, the last ones with stride-2 attention        stride 16
      -> stage 4, entered through the local-global attention downsample:
         4-D blocks, the last ones with attention                          stride 32
      -> BatchNorm, mean over the map, head(s)

Each stage after the first starts with a downsample (3x3 stride-2 conv + BN; into the last stage plus
the attention downsample). An attention block is `x + s1 * Attention(x)` then `x + s2 * FFN(x)`; the
other blocks have the FFN only. Both backends, the key table, the expected shapes and shape inference
read these facts here, and the attention grids of any image size.

Example:
    >>> from efficientformer import EfficientFormerV2Config
    >>> from efficientformer.models.architecture_v2 import plan_v2
    >>> p = plan_v2(EfficientFormerV2Config.from_preset("s0"))
    >>> [b.index for b in p.stages[2].blocks if b.attention], p.stages[3].downsample.attention.grid
    ([4, 5], 14)
    >>> p.attention_grids(256, 320)
    {'stride': (8, 10), 'global': (8, 10), 'downsample': (16, 20)}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .architecture import STEM_CONVS, STEM_REDUCTION, _conv_out

# every downsample between stages: a 3x3 convolution of stride 2, padding 1 (fixed by the architecture)
DOWNSAMPLE_CONV = (3, 2, 1)
# the kinds of attention, by where they sit
STRIDE, GLOBAL, DOWNSAMPLE = "stride", "global", "downsample"


def _halve(size: int) -> int:
    return _conv_out(size, *DOWNSAMPLE_CONV)


@dataclass(frozen=True)
class AttentionPlanV2:
    """One attention: `kind` is STRIDE (stage 3: queries, keys and values on the map downsampled by a
    stride-2 depthwise conv, the result upsampled back), GLOBAL (stage 4: on the map itself) or
    DOWNSAMPLE (into stage 4: keys on the stage-3 map, queries on its stride-2 grid). The bias table
    holds one value per head and offset of the `grid` x `grid` training grid: (heads, grid ** 2)."""

    kind: str
    heads: int
    key_dim: int
    value_dim: int  # per head
    in_width: int
    out_width: int
    grid: int  # side of the trained bias grid (the key grid)

    @property
    def table_shape(self) -> tuple[int, int]:
        return (self.heads, self.grid ** 2)

    @property
    def query_stride(self) -> int:
        return 2 if self.kind == DOWNSAMPLE else 1

    @property
    def talking_heads(self) -> bool:
        return self.kind != DOWNSAMPLE


@dataclass(frozen=True)
class BlockPlanV2:
    """One block: its stage and index there, width, MLP hidden width, attention (None: FFN only), rate."""

    stage: int
    index: int
    width: int
    hidden: int
    attention: AttentionPlanV2 | None
    drop_path: float

    @property
    def parts(self) -> tuple[str, ...]:
        return (f"stages.{self.stage}", f"blocks.{self.index}")

    def path(self, sep: str = ".") -> str:
        """Module path inside the encoder: `.` for PyTorch names, `/` for Keras names."""
        return sep.join(self.parts)


@dataclass(frozen=True)
class DownsamplePlanV2:
    """The downsample at the start of stage `stage`: conv + BN, plus the attention downsample into stage 4."""

    stage: int
    in_width: int
    out_width: int
    attention: AttentionPlanV2 | None


@dataclass(frozen=True)
class StagePlanV2:
    index: int
    width: int
    depth: int
    reduction: int
    grid: int  # side of its map at the trained image size
    downsample: DownsamplePlanV2 | None  # the one it starts with (None for the first stage)
    blocks: tuple[BlockPlanV2, ...]

    @property
    def module(self) -> tuple[str, ...]:
        return (f"stages.{self.index}",)


@dataclass(frozen=True)
class PlanV2:
    stages: tuple[StagePlanV2, ...]
    in_channels: int
    stem_width: int
    image_size: int

    @property
    def blocks(self) -> tuple[BlockPlanV2, ...]:
        return tuple(block for stage in self.stages for block in stage.blocks)

    @property
    def downsamples(self) -> tuple[DownsamplePlanV2, ...]:
        return tuple(stage.downsample for stage in self.stages if stage.downsample is not None)

    @property
    def attentions(self) -> tuple[AttentionPlanV2, ...]:
        found = [d.attention for d in self.downsamples if d.attention]
        return tuple(found + [b.attention for b in self.blocks if b.attention])

    def feature_size(self, stage: int, height: int, width: int) -> tuple[int, int]:
        """(H_i, W_i) of stage `stage`'s map for an image of height x width (ceil rounding at every stride)."""
        for kernel, stride, padding in STEM_CONVS:
            height, width = _conv_out(height, kernel, stride, padding), _conv_out(width, kernel, stride, padding)
        for _ in range(stage):
            height, width = _halve(height), _halve(width)
        return height, width

    def attention_grids(self, height: int, width: int) -> dict[str, tuple[int, int]]:
        """The key grid of each kind of attention for an image size (at the trained size: the tables' own)."""
        third, fourth = self.feature_size(2, height, width), self.feature_size(3, height, width)
        return {STRIDE: (_halve(third[0]), _halve(third[1])), GLOBAL: fourth, DOWNSAMPLE: third}


def plan_v2(config: Any) -> PlanV2:
    """The network an `EfficientFormerV2Config` describes (read, never changed)."""
    widths, depths = list(config.hidden_sizes), list(config.depths)
    rates = config.block_drop_path_rates()
    last = len(depths) - 1
    sizes = [_conv_out(_conv_out(config.image_size, *STEM_CONVS[0]), *STEM_CONVS[1])]
    for _ in range(last):
        sizes.append(_halve(sizes[-1]))

    def attention(kind: str, in_width: int, out_width: int, grid: int) -> AttentionPlanV2:
        if kind == DOWNSAMPLE:
            heads, key_dim, ratio = (config.downsample_num_attention_heads, config.downsample_key_dim,
                                     config.downsample_attention_ratio)
        else:
            heads, key_dim, ratio = config.num_attention_heads, config.key_dim, config.attention_ratio
        return AttentionPlanV2(kind=kind, heads=heads, key_dim=key_dim, value_dim=int(ratio * key_dim),
                               in_width=in_width, out_width=out_width, grid=grid)

    stages, start, reduction = [], 0, STEM_REDUCTION
    for i, (width, depth) in enumerate(zip(widths, depths)):
        down = None
        if i > 0:
            reduction *= DOWNSAMPLE_CONV[1]
            down_attention = attention(DOWNSAMPLE, widths[i - 1], width, sizes[i - 1]) if i == last else None
            down = DownsamplePlanV2(stage=i, in_width=widths[i - 1], out_width=width, attention=down_attention)
        blocks = []
        for j in range(depth):
            kind = None
            if i >= last - 1 and j >= depth - config.num_attention_blocks:
                kind = GLOBAL if i == last else STRIDE
            grid = sizes[i] if kind == GLOBAL else _halve(sizes[i])
            blocks.append(BlockPlanV2(stage=i, index=j, width=width, hidden=int(width * config.mlp_ratios[i][j]),
                                      attention=attention(kind, width, width, grid) if kind else None,
                                      drop_path=rates[start + j]))
        start += depth
        stages.append(StagePlanV2(index=i, width=width, depth=depth, reduction=reduction, grid=sizes[i],
                                  downsample=down, blocks=tuple(blocks)))
    return PlanV2(stages=tuple(stages), in_channels=config.num_channels, stem_width=widths[0] // 2,
                  image_size=config.image_size)


__all__ = ["plan_v2", "PlanV2", "StagePlanV2", "BlockPlanV2", "DownsamplePlanV2", "AttentionPlanV2",
           "STRIDE", "GLOBAL", "DOWNSAMPLE", "DOWNSAMPLE_CONV"]
