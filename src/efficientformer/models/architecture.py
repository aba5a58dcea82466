"""The plan of an EfficientFormer network, read from its config once (plain Python: no torch, no numpy).

    image (B, C, H, W)
      -> stem: two 3x3 stride-2 convolutions                       (B, C1, H/4, W/4)
      -> stage 0..n-2: Meta4D blocks, then a Downsample when the
         config asks for one or the next stage is wider            (B, Ci, H/2^(i+2), W/2^(i+2))
      -> last stage: Meta4D blocks, flatten to tokens, Meta3D blocks  (B, N, C_last), N = grid_h * grid_w
      -> LayerNorm, mean over tokens, head(s)

Both backends' encoders, `fuse`, the key tables, expected shapes and shape inference read these facts
here: which stages there are, where the Downsamples sit (their index in `encoder.intermediate_stages`,
which alternates stages and Downsamples as transformers named them), each block's kind and
stochastic-depth rate, the token grid of an image size and the geometry of the attention biases.

Example:
    >>> from efficientformer import EfficientFormerConfig
    >>> from efficientformer.models.architecture import plan
    >>> p = plan(EfficientFormerConfig.from_preset("l1"))
    >>> [s.position for s in p.stages], [d.position for d in p.downsamples], p.token_grid(224, 224)
    ([0, 2, 4, None], [1, 3, 5], (7, 7))
    >>> p.blocks[-1].kind, p.blocks[-1].path()
    ('meta3d', 'last_stage.meta3D_layers.blocks.0')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

META4D = "meta4d"
META3D = "meta3d"

# the stem: two convolutions of kernel 3, stride 2, padding 1 (fixed by the architecture, not configurable)
STEM_CONVS = ((3, 2, 1), (3, 2, 1))
STEM_REDUCTION = 4


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis (PyTorch's floor rule)."""
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class BlockPlan:
    """One Meta4D or Meta3D block: its stage, its index in its run of blocks, its width and drop-path rate."""

    stage: int
    index: int  # position within its run (`meta4D_layers.blocks.<index>` or `meta3D_layers.blocks.<index>`)
    kind: str  # META4D or META3D
    width: int
    drop_path: float
    parts: tuple[str, ...]  # module path inside the encoder, one name per level

    def path(self, sep: str = ".") -> str:
        """Module path inside the encoder: `.` for PyTorch names, `/` for Keras names."""
        return sep.join(self.parts)


@dataclass(frozen=True)
class DownsamplePlan:
    """The strided convolution + BatchNorm after stage `after`, at `encoder.intermediate_stages.<position>`."""

    after: int
    position: int
    in_width: int
    out_width: int
    kernel: int
    stride: int
    padding: int

    def out_size(self, size: int) -> int:
        return _conv_out(size, self.kernel, self.stride, self.padding)


@dataclass(frozen=True)
class StagePlan:
    """One stage: `position` is its index in `encoder.intermediate_stages` (None for the last stage, which
    is `encoder.last_stage`); `reduction` is the stride of its map relative to the image."""

    index: int
    width: int
    depth: int
    num_meta3d: int
    position: int | None
    reduction: int
    blocks: tuple[BlockPlan, ...]
    downsample: DownsamplePlan | None  # the Downsample that follows it, if any

    @property
    def is_last(self) -> bool:
        return self.position is None

    @property
    def num_meta4d(self) -> int:
        return self.depth - self.num_meta3d

    @property
    def module(self) -> tuple[str, ...]:
        """Module path of the stage inside the encoder."""
        return ("last_stage",) if self.is_last else (f"intermediate_stages.{self.position}",)


@dataclass(frozen=True)
class AttentionPlan:
    """Geometry of every Meta3D block's attention: the bias table holds one value per head and relative
    offset of the `resolution` x `resolution` training grid, shape (heads, resolution ** 2)."""

    heads: int
    key_dim: int
    value_dim: int  # per head
    resolution: int
    dim: int

    @property
    def qkv_width(self) -> int:
        return self.heads * (2 * self.key_dim + self.value_dim)

    @property
    def table_shape(self) -> tuple[int, int]:
        return (self.heads, self.resolution ** 2)

    @property
    def index_shape(self) -> tuple[int, int]:
        """Shape of transformers' `attention_bias_idxs` buffer: one table column per token pair."""
        cells = self.resolution ** 2
        return (cells, cells)


@dataclass(frozen=True)
class Plan:
    """Everything structural about a network, in order: stages, Downsamples, blocks, attention geometry."""

    stages: tuple[StagePlan, ...]
    downsamples: tuple[DownsamplePlan, ...]
    blocks: tuple[BlockPlan, ...]
    attention: AttentionPlan
    in_channels: int
    stem_width: int  # channels after the first stem convolution (half of the first stage's)

    @property
    def layout(self) -> tuple[StagePlan | DownsamplePlan, ...]:
        """`encoder.intermediate_stages` in order: each stage before the last, followed by its Downsample."""
        out: list[StagePlan | DownsamplePlan] = []
        for stage in self.stages[:-1]:
            out.append(stage)
            if stage.downsample is not None:
                out.append(stage.downsample)
        return tuple(out)

    def feature_size(self, stage: int, height: int, width: int) -> tuple[int, int]:
        """(H_i, W_i) of stage `stage`'s map for an image of height x width (ceil rounding at every stride)."""
        for kernel, stride, padding in STEM_CONVS:
            height, width = _conv_out(height, kernel, stride, padding), _conv_out(width, kernel, stride, padding)
        for down in self.downsamples:
            if down.after >= stage:
                break
            height, width = down.out_size(height), down.out_size(width)
        return height, width

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """The last stage's token grid for an image size: (ceil(H / 32), ceil(W / 32)) with the default
        Downsamples; N = grid_h * grid_w tokens reach the Meta3D blocks."""
        return self.feature_size(len(self.stages) - 1, height, width)


def plan(config: Any) -> Plan:
    """The network an `EfficientFormerConfig` describes (it is read, never changed; the config module is
    not imported here, as the config's own size check reads this plan through `checkpoints.shapes`)."""
    widths, depths = list(config.hidden_sizes), list(config.depths)
    rates = config.block_drop_path_rates()
    last = len(depths) - 1
    stages: list[StagePlan] = []
    downsamples: list[DownsamplePlan] = []
    blocks: list[BlockPlan] = []
    position, reduction, start = 0, STEM_REDUCTION, 0
    for i, (width, depth) in enumerate(zip(widths, depths)):
        num_meta3d = config.num_meta3d_blocks if i == last else 0
        stage_module = ("last_stage",) if i == last else (f"intermediate_stages.{position}",)
        stage_blocks = []
        for j in range(depth):
            kind = META3D if j >= depth - num_meta3d else META4D
            index = j - (depth - num_meta3d) if kind == META3D else j
            run = "meta3D_layers" if kind == META3D else "meta4D_layers"
            stage_blocks.append(BlockPlan(stage=i, index=index, kind=kind, width=width, drop_path=rates[start + j],
                                          parts=stage_module + (run, f"blocks.{index}")))
        start += depth
        down = None
        # a Downsample follows a stage when the config asks for one or the next stage is wider (the
        # widths must change somewhere, and transformers builds one there whatever `downsamples` says)
        if i < last and (bool(config.downsamples[i]) or widths[i] != widths[i + 1]):
            down = DownsamplePlan(after=i, position=position + 1, in_width=width, out_width=widths[i + 1],
                                  kernel=config.downsample_patch_size, stride=config.downsample_stride,
                                  padding=config.downsample_pad)
            downsamples.append(down)
        stages.append(StagePlan(index=i, width=width, depth=depth, num_meta3d=num_meta3d,
                                position=None if i == last else position, reduction=reduction,
                                blocks=tuple(stage_blocks), downsample=down))
        blocks.extend(stage_blocks)
        if down is not None:
            reduction *= down.stride
            position += 2
        else:
            position += 1
    attention = AttentionPlan(heads=config.num_attention_heads, key_dim=config.key_dim,
                              value_dim=int(config.attention_ratio * config.key_dim), resolution=config.resolution,
                              dim=config.dim)
    return Plan(stages=tuple(stages), downsamples=tuple(downsamples), blocks=tuple(blocks), attention=attention,
                in_channels=config.num_channels, stem_width=widths[0] // 2)


__all__ = ["plan", "Plan", "StagePlan", "BlockPlan", "DownsamplePlan", "AttentionPlan", "META4D", "META3D"]
