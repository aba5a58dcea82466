"""Triton kernels for the folded Meta4D MLP of stages 3-4 at small batches (CUDA, bf16/fp16; issue 15).

At batch 1 the blocks of stages 3-4 are (196 or 49 rows) x (224 or 448 channels) matrices: their two cuBLAS
products (hidden 896 or 1792) and the pooling kernel between blocks each take 2.5-4.5 us, almost all of it
latency, because a few dozen output tiles leave most of the GPU idle. Here one kernel runs the whole MLP

    x = m + W2' act(W1' m + b1') + b2'

over a grid of (row tiles, hidden splits): program (r, s) multiplies its rows by W1's columns of split s,
applies bias and activation on chip (the 4C-wide hidden never reaches memory), multiplies by W2's matching
rows and writes a float32 partial sum; split 0 also adds the residual m and b2. The partials are summed
in a fixed order (deterministic, no atomics) by whatever comes next: the next block's pooling kernel
(`sum_pool_lerp`: the sum of the partials at each of its 3x3 taps, then the pooling mixer), or, for the last
block of a stage, `sum_partials`. So a block costs two launches instead of three, and each spreads over
row tiles x splits programs.

All three are custom ops (`efficientformer::mlp_split`, `::sum_pool_lerp`, `::sum_partials`), opaque to
torch.compile and CUDA graphs like the ops of `efficientformer.deploy.kernels`. `FusedMeta4D` picks them
per input shape (at most `MAX_ROWS` rows), which compile and graph capture fix per batch bucket.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch

from ..errors import ConfigError
from . import kernels
from .kernels import ACTIVATION_CODES, padded, tl, triton

# The most rows (batch x H x W) a block runs with these kernels; larger inputs keep the cuBLAS products, which
# fill the GPU on their own (L1 at batch 8: 1,568 rows in stage 3, 392 in stage 4). Not yet measured on the
# H200: benchmarks/gpu_bench.py --parts small times both sides.
MAX_ROWS = 2048

# (padded width, hidden, rows) -> (BLOCK_M, BLOCK_H, SPLITS, num_warps, num_stages), measured winners that
# replace `split_config`'s rule (benchmarks/gpu_bench.py --parts small prints candidates for these keys).
TUNED: dict[tuple[int, int, int], tuple[int, int, int, int, int]] = {}

# How many programs the rule aims for (the H200 has 132 SMs) and the most splits it takes: every split adds a
# float32 partial of the block's output that the next kernel reads at each of its 9 pooling taps.
TARGET_PROGRAMS = 128
MAX_SPLITS = 16

# (BLOCK_M, BLOCK_C, num_warps) of sum_pool_lerp for every shape when set; None: `sum_config`'s rule.
SUM_CONFIG: tuple[int, int, int] | None = None
FLAT_BLOCK = 1024  # elements per program of sum_partials


def supported(channels: int, hidden: int, activation: str) -> bool:
    """Whether the kernels handle a block of this width, hidden width and activation: the accumulator is a
    (BLOCK_M, padded width) float32 tile and two (BLOCK_H, padded width) weight tiles per pipeline stage sit in
    shared memory (83 KB at 512 columns with 16-row tiles, two stages), so the width stays at most 512 (L1, L3;
    L7's stage 4, 768 wide, keeps cuBLAS), and the hidden width is split in chunks of 16 or more."""
    return activation in ACTIVATION_CODES and padded(channels) <= 512 and hidden % 16 == 0


def split_config(channels: int, hidden: int, rows: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_H, SPLITS, num_warps, num_stages) for `rows` rows of this width and hidden width.
    `TUNED` wins; otherwise row tiles of 16 (32 for more rows) and hidden chunks of 64 (32 past 256 channels),
    tiles that ptxas keeps in registers for sm_90 (Triton 3.9: 64-row tiles of 512 columns spill), and as many
    hidden splits as bring the programs near `TARGET_PROGRAMS`."""
    width = padded(channels)
    key = (width, hidden, rows)
    if key in TUNED:
        return TUNED[key]
    block_m = 16 if rows <= (256 if width <= 256 else 1024) else 32
    sizes = (64, 32, 16) if width <= 256 else (32, 16)
    block_h = next(b for b in sizes if hidden % b == 0)
    tiles = -(-rows // block_m)
    chunks = hidden // block_h
    limit = max(1, min(MAX_SPLITS, TARGET_PROGRAMS // tiles))
    splits = max(d for d in range(1, limit + 1) if chunks % d == 0)
    return block_m, block_h, splits, 4 if width <= 256 and block_m == 16 else 8, 2


def sum_config(rows: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_C, num_warps) of sum_pool_lerp: small tiles at small inputs, where each element reads
    SPLITS partials at each of its 9 taps and programs are few (L1 stage 4 at batch 1: 49 x 448)."""
    if SUM_CONFIG is not None:
        return SUM_CONFIG
    if rows <= 512:
        return 16, 32, 2
    return (32, 32, 4) if rows <= 4096 else (64, 32, 4)


def check_config(hidden: int, config: tuple[int, int, int, int, int]) -> None:
    """Refuse a config whose splits do not cut the hidden width into whole BLOCK_H chunks (before launching)."""
    block_m, block_h, splits = config[:3]
    if min(block_m, block_h) < 16 or hidden % (block_h * splits):
        raise ConfigError(f"small-MLP config {config} does not fit hidden width {hidden}: BLOCK_M and BLOCK_H "
                         "need 16 or more and SPLITS x BLOCK_H must divide the hidden width; pick another tile.")


class Partials(NamedTuple):
    """What a block that ran `mlp_split` hands the next: its float32 partial sums (SPLITS, rows, C) and its
    mixed input (B, C, H, W), which gives the output's shape and dtype."""

    parts: torch.Tensor
    like: torch.Tensor


# The device code, defined where triton imports (helpers must be module globals for the JIT to find them).
if triton is not None:
    from .kernels import activation

    @triton.jit
    def mma(a, b, acc, WIDE: tl.constexpr):
        """acc + a @ b; WIDE: on float32 copies of the operands (the same products: Triton's CPU interpreter
        gets bf16 products wrong)."""
        if WIDE:
            out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc=acc)
        else:
            out = tl.dot(a, b, acc=acc)
        return out

    @triton.jit
    def mlp_split_kernel(m_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, part_ptr, M, C: tl.constexpr, CP: tl.constexpr,
                         CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr, ACT: tl.constexpr,
                         WIDE: tl.constexpr):
        # m (M, C) rows; w1 (HID, C) = W1' and w2 (HID, C) = W2'^T: hidden unit h's input and output weights
        # are both row h, so a split's chunk of either is one contiguous slab
        split = tl.program_id(1)
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, CP)
        row_ok = rows < M
        col_ok = cols < C
        ok = row_ok[:, None] & col_ok[None, :]
        dt = m_ptr.dtype.element_ty
        m = tl.load(m_ptr + rows[:, None] * C + cols[None, :], mask=ok, other=0.0)
        acc = tl.zeros((BLOCK_M, CP), dtype=tl.float32)
        for step in range(CHUNK // BLOCK_H):
            hcols = split * CHUNK + step * BLOCK_H + tl.arange(0, BLOCK_H)
            w1 = tl.load(w1_ptr + hcols[None, :] * C + cols[:, None], mask=col_ok[:, None], other=0.0)
            hid = mma(m, w1, tl.zeros((BLOCK_M, BLOCK_H), dtype=tl.float32), WIDE)
            hid += tl.load(b1_ptr + hcols).to(tl.float32)[None, :]
            hid = activation(hid, ACT).to(dt)  # the cuBLAS path rounds the hidden to the dtype likewise
            w2 = tl.load(w2_ptr + hcols[:, None] * C + cols[None, :], mask=col_ok[None, :], other=0.0)
            acc = mma(hid, w2, acc, WIDE)
        if split == 0:  # the residual and the output bias, once
            acc += m.to(tl.float32) + tl.load(b2_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(part_ptr + (split * M + rows)[:, None] * C + cols[None, :], acc, mask=ok)

    @triton.jit
    def summed(part_ptr, offsets, mask, stride, SPLITS: tl.constexpr):
        """The sum over splits of the partials at `offsets`, split 0 first (a fixed order: deterministic)."""
        total = tl.load(part_ptr + offsets, mask=mask, other=0.0)
        for split in range(1, SPLITS):
            total += tl.load(part_ptr + split * stride + offsets, mask=mask, other=0.0)
        return total

    @triton.jit
    def sum_pool_lerp_kernel(part_ptr, mix_ptr, out_ptr, M, H, W, C, SPLITS: tl.constexpr, BLOCK_M: tl.constexpr,
                             BLOCK_C: tl.constexpr, POOL: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        row_ok = rows < M
        col_ok = cols < C
        rem = rows % (H * W)
        h = rem // W
        w = rem % W
        stride = M * C
        centre = rows[:, None] * C + cols[None, :]
        ok = row_ok[:, None] & col_ok[None, :]
        x = summed(part_ptr, centre, ok, stride, SPLITS)
        total = x
        for i in tl.static_range(POOL):
            for j in tl.static_range(POOL):
                if i != POOL // 2 or j != POOL // 2:
                    hh = h + (i - POOL // 2)
                    ww = w + (j - POOL // 2)
                    tap_ok = row_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                    nb = (rows + (i - POOL // 2) * W + (j - POOL // 2))[:, None] * C + cols[None, :]
                    total += summed(part_ptr, nb, tap_ok[:, None] & col_ok[None, :], stride, SPLITS)
        # count_include_pad=False: the window's in-image taps
        count_h = tl.minimum(h + POOL // 2, H - 1) - tl.maximum(h - POOL // 2, 0) + 1
        count_w = tl.minimum(w + POOL // 2, W - 1) - tl.maximum(w - POOL // 2, 0) + 1
        pooled = total / (count_h * count_w).to(tl.float32)[:, None]
        s1 = tl.load(mix_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        out = x + s1[None, :] * (pooled - x)
        tl.store(out_ptr + centre, out.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def sum_partials_kernel(part_ptr, out_ptr, N, SPLITS: tl.constexpr, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offsets < N
        total = summed(part_ptr, offsets, ok, N, SPLITS)
        tl.store(out_ptr + offsets, total.to(out_ptr.dtype.element_ty), mask=ok)


def interpreted() -> bool:
    """Whether Triton runs in its CPU interpreter (TRITON_INTERPRET=1: the tests without a GPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _rows(x: torch.Tensor) -> int:
    return x.shape[0] * x.shape[2] * x.shape[3]


def partials_shape(m: torch.Tensor, hidden: int, config: tuple | None = None) -> tuple[int, int, int]:
    """(SPLITS, rows, C) of `mlp_split_launch`'s result for the mixed input m (B, C, H, W)."""
    splits = (config or split_config(m.shape[1], hidden, _rows(m)))[2]
    return splits, _rows(m), m.shape[1]


def mlp_split_launch(m: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2t: torch.Tensor, b2: torch.Tensor,
                     act: int, config: tuple[int, int, int, int, int] | None = None) -> torch.Tensor:
    """Float32 partials (SPLITS, rows, C) of `m + W2' act(W1' m + b1') + b2'` for the channels-last mixed
    input m (B, C, H, W); their sum over the first axis is the block's output (`sum_partials_launch`).

    w1: (HID, C) = W1', w2t: (HID, C) = W2'^T (both contiguous), b1 (HID,), b2 (C,), all in m's dtype;
    act: a code of `kernels.ACTIVATION_CODES`; config: `split_config`'s by default."""
    hidden, channels = w1.shape
    rows = _rows(m)
    config = config or split_config(channels, hidden, rows)
    check_config(hidden, config)
    block_m, block_h, splits, warps, stages = config
    m = m.contiguous(memory_format=torch.channels_last)
    parts = torch.empty(splits, rows, channels, device=m.device, dtype=torch.float32)
    act = 1 if act == 0 and kernels.FAST_GELU else act
    grid = (-(-rows // block_m), splits)
    mlp_split_kernel[grid](m, w1, b1, w2t, b2, parts, rows, C=channels, CP=padded(channels), CHUNK=hidden // splits,
                           BLOCK_M=block_m, BLOCK_H=block_h, ACT=act, WIDE=interpreted(), num_warps=warps,
                           num_stages=stages)
    return parts


def sum_pool_lerp_launch(parts: torch.Tensor, like: torch.Tensor, mix: torch.Tensor, pool: int,
                         config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """lerp(x, avgpool(x), mix) for x = parts.sum(0) seen as `like`'s (B, C, H, W) (count_include_pad=False):
    the next block's mixed input, channels-last in like's dtype."""
    splits, rows, channels = parts.shape
    batch, _, height, width = like.shape
    block_m, block_c, warps = config or sum_config(rows)
    out = torch.empty_like(like, memory_format=torch.channels_last)
    grid = (-(-rows // block_m), -(-channels // block_c))
    sum_pool_lerp_kernel[grid](parts, mix, out, rows, height, width, channels, SPLITS=splits, BLOCK_M=block_m,
                               BLOCK_C=block_c, POOL=pool, num_warps=warps)
    return out


def sum_partials_launch(parts: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """parts.sum(0) as a channels-last tensor of like's shape and dtype (the last block of a stage)."""
    out = torch.empty_like(like, memory_format=torch.channels_last)
    n = parts.shape[1] * parts.shape[2]
    sum_partials_kernel[(-(-n // FLAT_BLOCK),)](parts, out, n, SPLITS=parts.shape[0], BLOCK=FLAT_BLOCK)
    return out


@functools.lru_cache(maxsize=1)
def register_ops():
    """Register `torch.ops.efficientformer.mlp_split`, `.sum_pool_lerp` and `.sum_partials` (on first use)."""

    @torch.library.custom_op("efficientformer::mlp_split", mutates_args=())
    def mlp_split(m: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2t: torch.Tensor, b2: torch.Tensor,
                  act: int) -> torch.Tensor:
        return mlp_split_launch(m, w1, b1, w2t, b2, act)

    @mlp_split.register_fake
    def _(m, w1, b1, w2t, b2, act):  # the same split_config as the launch: shapes decide it
        return m.new_empty(partials_shape(m, w1.shape[0]), dtype=torch.float32)

    @torch.library.custom_op("efficientformer::sum_pool_lerp", mutates_args=())
    def sum_pool_lerp(parts: torch.Tensor, like: torch.Tensor, mix: torch.Tensor, pool: int) -> torch.Tensor:
        return sum_pool_lerp_launch(parts, like, mix, pool)

    @sum_pool_lerp.register_fake
    def _(parts, like, mix, pool):
        return torch.empty_like(like, memory_format=torch.channels_last)

    @torch.library.custom_op("efficientformer::sum_partials", mutates_args=())
    def sum_partials(parts: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return sum_partials_launch(parts, like)

    @sum_partials.register_fake
    def _(parts, like):
        return torch.empty_like(like, memory_format=torch.channels_last)

    return mlp_split, sum_pool_lerp, sum_partials


def prepare_weights(w2: torch.Tensor) -> torch.Tensor:
    """W2' (C, HID) -> the kernel's contiguous (HID, C) `w2t` (W1' (HID, C) is used as it is)."""
    return w2.t().contiguous()
