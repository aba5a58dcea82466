"""A Triton kernel for the whole folded Meta4D block (CUDA, bf16/fp16): one pass over the activations.

The folded block is

    m = lerp(x, avgpool3x3(x), s1)            (pooling mixer, count_include_pad=False)
    y = m + W2' act(W1' m + b1') + b2'        (1x1 conv MLP, BatchNorms and layer scale folded)

on channels-last activations seen as a (M = B*H*W, C) matrix. Eager or compiled PyTorch runs it as
five or more kernels and writes the 4C-wide hidden activation to memory and reads it back, which
makes the early stages memory-bound. This kernel keeps a tile of BLOCK_M pixels on chip: it pools
from the tile's neighbours (the 3x3 window is 9 shifted loads that hit the caches), runs both matrix
products through the hidden width in BLOCK_H chunks with fp32 accumulation, adds the residual, and
writes the tile once: the block costs one read and one write of x.

`meta4d(x, mix, w1t, b1, w2t, b2, act)` is registered as the custom op `efficientformer::meta4d` so
that `torch.compile` and CUDA graphs treat it as one opaque call.
"""

from __future__ import annotations

import functools

import torch

ACTIVATION_CODES = {"gelu": 0, "gelu_new": 1, "gelu_pytorch_tanh": 1, "relu": 2}


def available() -> bool:
    """True when Triton imports and a CUDA GPU is present."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


# (padded channels, hidden) -> (BLOCK_M, BLOCK_H, num_warps, num_stages) measured best on an H100 at batch
# 256 (397 us against 479 us for the heuristic at 48 channels, 242 against 298 at 96). Re-timed on an H200
# (benchmarks/gpu_bench.py --parts tune, 2026-12-01): 400 / 247 us; the best of 11 / 9 other tiles there was
# (64, 32, 4, 3) at 392 us for 48 channels, +0.8% for the whole network, within the run-to-run spread.
TUNED: dict[tuple[int, int], tuple[int, int, int, int]] = {
    (64, 192): (64, 32, 4, 2),
    (128, 384): (64, 64, 4, 3),
}


def block_config(padded_channels: int, hidden: int | None = None) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_H, num_warps, num_stages) for a padded channel count: fewer rows for wider blocks
    so the fp32 accumulator (BLOCK_M x C) stays in registers, and shallower pipelines so the weight tiles
    (C x BLOCK_H twice per stage) fit in shared memory. Entries of `TUNED` win."""
    if (padded_channels, hidden) in TUNED:
        return TUNED[(padded_channels, hidden)]
    if padded_channels <= 128:
        return 128, 64, 8, 3
    if padded_channels <= 256:
        return 64, 64, 8, 2
    return 32, 32, 8, 2


@functools.lru_cache(maxsize=1)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def meta4d_kernel(x_ptr, out_ptr, mix_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr,
                      M, H, W, C: tl.constexpr, HID: tl.constexpr,
                      C_P: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr,
                      POOL: tl.constexpr, ACT: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, C_P)
        row_ok = rows < M
        col_ok = cols < C
        rem = rows % (H * W)
        h = rem // W
        w = rem % W
        mask = row_ok[:, None] & col_ok[None, :]
        x = tl.load(x_ptr + rows[:, None] * C + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        total = tl.zeros((BLOCK_M, C_P), dtype=tl.float32)
        count = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for i in tl.static_range(POOL):
            for j in tl.static_range(POOL):
                hh = h + (i - POOL // 2)
                ww = w + (j - POOL // 2)
                ok = row_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                nb = rows + (i - POOL // 2) * W + (j - POOL // 2)
                v = tl.load(x_ptr + nb[:, None] * C + cols[None, :], mask=ok[:, None] & col_ok[None, :], other=0.0)
                total += v.to(tl.float32)
                count += ok.to(tl.float32)
        pooled = total / tl.maximum(count, 1.0)[:, None]
        s1 = tl.load(mix_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        mixed = (x + s1[None, :] * (pooled - x)).to(x_ptr.dtype.element_ty)
        acc = tl.zeros((BLOCK_M, C_P), dtype=tl.float32)
        for h0 in range(0, HID, BLOCK_H):
            hcols = h0 + tl.arange(0, BLOCK_H)
            w1 = tl.load(w1_ptr + cols[:, None] * HID + hcols[None, :])  # (C_P, BLOCK_H), zero rows past C
            hid = tl.dot(mixed, w1) + tl.load(b1_ptr + hcols).to(tl.float32)[None, :]
            if ACT == 0:
                hid = 0.5 * hid * (1.0 + tl.erf(hid * 0.7071067811865476))
            elif ACT == 1:
                inner = 0.7978845608028654 * (hid + 0.044715 * hid * hid * hid)
                hid = 0.5 * hid * (1.0 + (2.0 / (1.0 + tl.exp(-2.0 * inner)) - 1.0))
            else:
                hid = tl.maximum(hid, 0.0)
            w2 = tl.load(w2_ptr + hcols[:, None] * C_P + cols[None, :])  # (BLOCK_H, C_P), zero columns past C
            acc += tl.dot(hid.to(x_ptr.dtype.element_ty), w2)
        b2 = tl.load(b2_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        out = mixed.to(tl.float32) + acc + b2[None, :]
        tl.store(out_ptr + rows[:, None] * C + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)

    return meta4d_kernel


def padded(channels: int) -> int:
    """Channels rounded up to a power of two (at least 16), the width of the kernel's tiles."""
    return max(16, 1 << (channels - 1).bit_length())


def launch(x: torch.Tensor, mix: torch.Tensor, w1t: torch.Tensor, b1: torch.Tensor, w2t: torch.Tensor,
           b2: torch.Tensor, act: int, pool: int, config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Run the kernel on channels-last x (B, C, H, W); returns a new channels-last tensor.

    w1t: (C_P, HID) = W1'^T zero-padded to C_P rows; w2t: (HID, C_P) = W2'^T zero-padded to C_P columns;
    mix, b1, b2: (C,), (HID,), (C,). All in x's dtype.
    """
    batch, channels, height, width = x.shape
    c_p, hid = w1t.shape
    block_m, block_h, warps, stages = config or block_config(c_p, hid)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    rows = batch * height * width
    grid = ((rows + block_m - 1) // block_m,)
    _kernel()[grid](x, out, mix, w1t, b1, w2t, b2, rows, height, width, channels, hid,
                    C_P=c_p, BLOCK_M=block_m, BLOCK_H=block_h, POOL=pool, ACT=act, num_warps=warps,
                    num_stages=stages)
    return out


@functools.lru_cache(maxsize=1)
def meta4d_op():
    """The custom op `torch.ops.efficientformer.meta4d` (registered on first use)."""

    @torch.library.custom_op("efficientformer::meta4d", mutates_args=())
    def meta4d(x: torch.Tensor, mix: torch.Tensor, w1t: torch.Tensor, b1: torch.Tensor, w2t: torch.Tensor,
               b2: torch.Tensor, act: int, pool: int) -> torch.Tensor:
        return launch(x.contiguous(memory_format=torch.channels_last), mix, w1t, b1, w2t, b2, act, pool)

    @meta4d.register_fake
    def _(x, mix, w1t, b1, w2t, b2, act, pool):
        return torch.empty_like(x, memory_format=torch.channels_last)

    return meta4d


def prepare_weights(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor):
    """Folded (HID, C) / (C, HID) weights -> the kernel's padded, transposed (C_P, HID) / (HID, C_P)."""
    hid, channels = w1.shape
    c_p = padded(channels)
    w1t = w1.new_zeros(c_p, hid)
    w1t[:channels] = w1.t()
    w2t = w2.new_zeros(hid, c_p)
    w2t[:, :channels] = w2.t()
    return w1t.contiguous(), b1, w2t.contiguous(), b2


def supported(channels: int, hidden: int, activation: str) -> bool:
    """Whether the kernel handles a block of this shape and activation."""
    return (activation in ACTIVATION_CODES and hidden % block_config(padded(channels), hidden)[1] == 0
            and padded(channels) <= 512)
