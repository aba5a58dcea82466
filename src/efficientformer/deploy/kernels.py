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
that `torch.compile` and CUDA graphs treat it as one opaque call. Two more kernels follow, registered the same
way: the whole stem (`efficientformer::stem`, both 3x3 stride-2 convs and their ReLUs) and, between the
matrix-product blocks of stages 3-4, the residual add + pooling + lerp (`efficientformer::add_pool_lerp`).
"""

from __future__ import annotations

import functools
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # optional: available() says whether the kernel can run
    triton = tl = None

ACTIVATION_CODES = {"gelu": 0, "gelu_new": 1, "gelu_pytorch_tanh": 1, "relu": 2}


def available() -> bool:
    """True when Triton imports and a CUDA GPU is present."""
    return triton is not None and torch.cuda.is_available()


# (kernel width, hidden) -> (BLOCK_M, BLOCK_H, num_warps, num_stages), the fastest measured on an H200 at batch
# 256 (benchmarks/gpu_bench.py --parts tune, 2026-12-01, h200_gpu_bench_kernels_2026-12-01.json): the exact
# column groups with tanh-form GELU (the defaults) 252 us at 48 channels, 179 at 96; the padded widths (an H100
# tuning, kept for SPLIT_CHANNELS = False) 377 / 235 us with exact GELU.
TUNED: dict[tuple[int, int], tuple[int, int, int, int]] = {
    (48, 192): (64, 32, 4, 2),
    (96, 384): (64, 32, 4, 3),
    (64, 192): (64, 32, 4, 2),
    (128, 384): (64, 64, 4, 3),
    # L3's stages 1-2 and L7's stage 2 (`gpu_bench.py --parts wide`, 2026-12-02, h200_gpu_bench_wide_2026-12-02.json):
    # 314 / 227 us against 429 / 260 us with the generic tiles below; (192, 768) 489 us against 720, though
    # at that width the cuBLAS path still wins in the network (hence triton_max_channels=128)
    (64, 256): (64, 64, 4, 2),
    (128, 512): (64, 64, 4, 3),
    (192, 768): (64, 32, 4, 2),
}

# Small inputs (batch 1-4 at 56x56): below this many rows, tiles of `TUNED_SMALL` give the GPU more programs.
SMALL_ROWS = 16384
TUNED_SMALL: dict[tuple[int, int], tuple[int, int, int, int]] = {  # batch 1 on the H200: 35 / 34 us
    (48, 192): (16, 64, 4, 2),
    (96, 384): (32, 64, 4, 2),
}


def block_config(width: int, hidden: int | None = None, rows: int | None = None) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_H, num_warps, num_stages) for the kernel's (padded) channel width: fewer rows for wider
    blocks so the fp32 accumulator (BLOCK_M x C) stays in registers, and shallower pipelines so the weight tiles
    (C x BLOCK_H twice per stage) fit in shared memory. Entries of `TUNED` (and `TUNED_SMALL` for fewer than
    `SMALL_ROWS` rows) win."""
    if rows is not None and rows < SMALL_ROWS and (width, hidden) in TUNED_SMALL:
        return TUNED_SMALL[(width, hidden)]
    if (width, hidden) in TUNED:
        return TUNED[(width, hidden)]
    if width <= 128:
        return 128, 64, 8, 3
    if width <= 256:
        return 64, 64, 8, 2
    return 32, 32, 8, 2


# Kernel variants, chosen before a model is optimized (benchmarks/gpu_bench.py --parts tune times all four;
# both on: L1 batch 256 66,198 img/s against 58,671 with both off, same run, same 4.7e-3 error against fp32):
# SPLIT_CHANNELS runs a width that is the sum of two powers of two (48 = 32 + 16, 96 = 64 + 32) as two exact
# column groups instead of one zero-padded power of two (64, 128), a quarter less pooling and matrix work;
# FAST_GELU evaluates GELU in its tanh form through one exp2 and an approximate division instead of erf
# (about 5e-4 from exact GELU, below the bf16 rounding of the hidden activation that follows).
SPLIT_CHANNELS = True
FAST_GELU = True


# The tanh form of FAST_GELU through PTX's `tanh.approx.f32` (one special-function op per hidden element instead
# of an exp2 and a reciprocal, which bound the kernel; maximum relative error about 2**-11, below the bf16
# rounding of the hidden activation). Triton's interpreter (TRITON_INTERPRET=1) runs no PTX: the exp2 form there.
TANH_INSTRUCTION = True


def gelu_code(act: int) -> int:
    """The kernel's ACT code for an `ACTIVATION_CODES` value under the current FAST_GELU / TANH_INSTRUCTION."""
    if act == 0 and FAST_GELU:
        act = 1
    if act == 1 and TANH_INSTRUCTION and os.environ.get("TRITON_INTERPRET") != "1":
        act = 3
    return act


def channel_groups(channels: int, split: bool | None = None) -> tuple[int, int]:
    """(C_A, C_B): the kernel's two column groups, powers of two of at least 16. Split: C = C_A + C_B exactly
    where C is such a sum; otherwise (padded(C), 0), one group with zero-padded columns past C."""
    top = 1 << (channels.bit_length() - 1)
    rest = channels - top
    if (SPLIT_CHANNELS if split is None else split) and rest >= 16 and rest & (rest - 1) == 0:
        return top, rest
    return padded(channels), 0


# The device code, defined where triton imports (helpers must be module globals for the JIT to find them).
if triton is not None:
    @triton.jit
    def tap_mask(ok, col_ok, PAD: tl.constexpr):
        """A tile's load mask from its rows' mask: columns too only for a zero-padded column group (the exact
        groups need none, and a per-element AND for each of the 9 taps is ALU time the kernel is short of)."""
        if PAD:  # one return after the if: Triton visits only the taken branch of a constexpr if
            mask = ok[:, None] & col_ok[None, :]
        else:
            mask = ok[:, None]
        return mask

    @triton.jit
    def window_reciprocal(h, w, H, W, POOL: tl.constexpr):
        """1 / (in-image taps of each row's window), count_include_pad=False: one division per row, so that the
        tile is scaled with a multiplication per element (a division per element costs several instructions)."""
        count_h = tl.minimum(h + POOL // 2, H - 1) - tl.maximum(h - POOL // 2, 0) + 1
        count_w = tl.minimum(w + POOL // 2, W - 1) - tl.maximum(w - POOL // 2, 0) + 1
        return 1.0 / (count_h * count_w).to(tl.float32)

    @triton.jit
    def mixed_tile(x_ptr, mix_ptr, rows, h, w, row_ok, H, W, C: tl.constexpr, C0: tl.constexpr,
                   CW: tl.constexpr, POOL: tl.constexpr):
        """Columns [C0, C0 + CW) of lerp(x, avgpool(x), s1) for a tile of rows, and x there, in fp32."""
        PAD: tl.constexpr = C0 + CW > C
        cols = C0 + tl.arange(0, CW)
        col_ok = cols < C
        centre = x_ptr + (rows[:, None] * C + cols[None, :])  # each tap is this plus one scalar offset
        x = tl.load(centre, mask=tap_mask(row_ok, col_ok, PAD), other=0.0).to(tl.float32)
        total = x  # the centre tap
        for i in tl.static_range(POOL):
            for j in tl.static_range(POOL):
                if i != POOL // 2 or j != POOL // 2:
                    hh = h + (i - POOL // 2)
                    ww = w + (j - POOL // 2)
                    ok = row_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                    v = tl.load(centre + ((i - POOL // 2) * W + (j - POOL // 2)) * C,
                                mask=tap_mask(ok, col_ok, PAD), other=0.0)
                    total += v.to(tl.float32)
        pooled = total * window_reciprocal(h, w, H, W, POOL)[:, None]
        s1 = tl.load(mix_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        return x + s1[None, :] * (pooled - x)

    @triton.jit
    def activation(hid, ACT: tl.constexpr):
        if ACT == 0:  # exact GELU
            hid = 0.5 * hid * (1.0 + tl.erf(hid * 0.7071067811865476))
        elif ACT == 1:  # tanh GELU: 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3)
            z = -2.302208198144325 * (hid + 0.044715 * hid * hid * hid)  # -2u log2(e)
            hid = tl.fdiv(hid, 1.0 + tl.exp2(z), ieee_rounding=False)
        elif ACT == 3:  # tanh GELU through the GPU's tanh instruction: one special-function op, not two
            half = 0.5 * hid
            u = hid * (0.7978845608028654 + 0.035677408136300125 * hid * hid)
            t = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [u], dtype=tl.float32,
                                          is_pure=True, pack=1)
            hid = half + half * t
        else:
            hid = tl.maximum(hid, 0.0)
        return hid

    @triton.jit
    def meta4d_kernel(x_ptr, out_ptr, mix_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr,
                      M, H, W, C: tl.constexpr, HID: tl.constexpr, C_A: tl.constexpr, C_B: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr, POOL: tl.constexpr, ACT: tl.constexpr):
        # weights: w1 (C_A + C_B, HID) and w2 (HID, C_A + C_B), zero past C
        C_W: tl.constexpr = C_A + C_B
        pid = tl.program_id(0)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        rem = rows % (H * W)
        h = rem // W
        w = rem % W
        dt = x_ptr.dtype.element_ty
        cols_a = tl.arange(0, C_A)
        mixed_a = mixed_tile(x_ptr, mix_ptr, rows, h, w, row_ok, H, W, C, 0, C_A, POOL).to(dt)
        acc_a = tl.zeros((BLOCK_M, C_A), dtype=tl.float32)
        if C_B > 0:
            cols_b = C_A + tl.arange(0, C_B)
            mixed_b = mixed_tile(x_ptr, mix_ptr, rows, h, w, row_ok, H, W, C, C_A, C_B, POOL).to(dt)
            acc_b = tl.zeros((BLOCK_M, C_B), dtype=tl.float32)
        for h0 in range(0, HID, BLOCK_H):
            hcols = h0 + tl.arange(0, BLOCK_H)
            hid = tl.dot(mixed_a, tl.load(w1_ptr + cols_a[:, None] * HID + hcols[None, :]))
            if C_B > 0:
                hid = tl.dot(mixed_b, tl.load(w1_ptr + cols_b[:, None] * HID + hcols[None, :]), acc=hid)
            hid = activation(hid + tl.load(b1_ptr + hcols).to(tl.float32)[None, :], ACT).to(dt)
            acc_a = tl.dot(hid, tl.load(w2_ptr + hcols[:, None] * C_W + cols_a[None, :]), acc=acc_a)
            if C_B > 0:
                acc_b = tl.dot(hid, tl.load(w2_ptr + hcols[:, None] * C_W + cols_b[None, :]), acc=acc_b)
        col_ok = cols_a < C
        out = mixed_a.to(tl.float32) + acc_a + tl.load(b2_ptr + cols_a, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + rows[:, None] * C + cols_a[None, :], out.to(dt), mask=row_ok[:, None] & col_ok[None, :])
        if C_B > 0:
            out = mixed_b.to(tl.float32) + acc_b + tl.load(b2_ptr + cols_b).to(tl.float32)[None, :]
            tl.store(out_ptr + rows[:, None] * C + cols_b[None, :], out.to(dt), mask=row_ok[:, None])


def _kernel():
    return meta4d_kernel


def padded(channels: int) -> int:
    """Channels rounded up to a power of two (at least 16), the width of the kernel's tiles."""
    return max(16, 1 << (channels - 1).bit_length())


def launch(x: torch.Tensor, mix: torch.Tensor, w1t: torch.Tensor, b1: torch.Tensor, w2t: torch.Tensor,
           b2: torch.Tensor, act: int, pool: int, config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Run the kernel on channels-last x (B, C, H, W); returns a new channels-last tensor.

    w1t: (C_W, HID) = W1'^T, w2t: (HID, C_W) = W2'^T, zero-padded to C_W = C_A + C_B (`prepare_weights`;
    the padding says which column groups the kernel runs); mix, b1, b2: (C,), (HID,), (C,). All in x's dtype.
    """
    batch, channels, height, width = x.shape
    c_w, hid = w1t.shape
    groups = channel_groups(channels, split=c_w == channels and c_w != padded(channels))
    rows = batch * height * width
    block_m, block_h, warps, stages = config or block_config(c_w, hid, rows)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    grid = ((rows + block_m - 1) // block_m,)
    act = gelu_code(act)
    _kernel()[grid](x, out, mix, w1t, b1, w2t, b2, rows, height, width, channels, hid, C_A=groups[0],
                    C_B=groups[1], BLOCK_M=block_m, BLOCK_H=block_h, POOL=pool, ACT=act, num_warps=warps,
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


def prepare_weights(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                    split: bool | None = None):
    """Folded (HID, C) / (C, HID) weights -> the kernel's transposed (C_W, HID) / (HID, C_W), zero-padded to
    the width of its column groups (`channel_groups`; split: default `SPLIT_CHANNELS`)."""
    hid, channels = w1.shape
    c_p = sum(channel_groups(channels, split))
    w1t = w1.new_zeros(c_p, hid)
    w1t[:channels] = w1.t()
    w2t = w2.new_zeros(hid, c_p)
    w2t[:, :channels] = w2.t()
    return w1t.contiguous(), b1, w2t.contiguous(), b2


def supported(channels: int, hidden: int, activation: str) -> bool:
    """Whether the kernel handles a block of this shape and activation."""
    return (activation in ACTIVATION_CODES and hidden % block_config(padded(channels), hidden)[1] == 0
            and padded(channels) <= 512)


# ------------------------------------------------------------------------------------------- the stem
# The stem (conv3x3/2 -> ReLU -> conv3x3/2 -> ReLU, BatchNorms folded) as one kernel: a tile of BLOCK_M output
# pixels gathers, for each of the second conv's 9 taps, the first conv's 27 inputs (3 channels x 3x3, zero
# past the image) of that tap's position, runs the first conv there as one small matrix product (K = 27 padded
# to 32) with bias and ReLU, and accumulates the second conv's product. The first conv's output (half the
# stem's channels at half the resolution, the largest activation of the network) is never written: it is
# recomputed for each of the up to 9 second-conv outputs that read it (2.25x its 27-MAC work, on tensor cores).
# Eager or compiled PyTorch runs it as two cuDNN convs (the 3-channel one on a slow direct kernel) and two
# bias + ReLU passes.
STEM_CONFIG = (128, 4, 2)  # BLOCK_M, num_warps, num_stages: H200, L1 b256 256 us (64-row tiles 350 us)

if triton is not None:
    @triton.jit
    def stem_kernel(x_ptr, out_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, M, H, W, H1, W1, H2, W2, sb, sc, sh, sw,
                    CIN: tl.constexpr, K1: tl.constexpr, C1P: tl.constexpr, C2: tl.constexpr, C2P: tl.constexpr,
                    BLOCK_M: tl.constexpr):
        # w1: (K1, C1P), row k = (i * 3 + j) * CIN + c; w2: (9, C1P, C2P); both zero-padded; b1, b2: fp32
        pid = tl.program_id(0)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        image = (rows // (H2 * W2)).to(tl.int64)
        rem = rows % (H2 * W2)
        h2 = rem // W2
        w2 = rem % W2
        dt = w1_ptr.dtype.element_ty
        kk = tl.arange(0, K1)
        k_ok = kk < CIN * 9
        tap = kk // CIN
        i1 = tap // 3
        j1 = tap % 3
        chan_off = (kk % CIN) * sc
        c1 = tl.arange(0, C1P)
        c2 = tl.arange(0, C2P)
        w1 = tl.load(w1_ptr + kk[:, None] * C1P + c1[None, :])
        b1 = tl.load(b1_ptr + c1)
        base = image * sb
        acc = tl.zeros((BLOCK_M, C2P), dtype=tl.float32)
        for t in tl.static_range(9):
            y1 = 2 * h2 + (t // 3 - 1)  # the first conv's output row and column this tap reads
            x1 = 2 * w2 + (t % 3 - 1)
            ok1 = row_ok & (y1 >= 0) & (y1 < H1) & (x1 >= 0) & (x1 < W1)
            y0 = 2 * y1[:, None] + i1[None, :] - 1
            x0 = 2 * x1[:, None] + j1[None, :] - 1
            ok0 = ok1[:, None] & k_ok[None, :] & (y0 >= 0) & (y0 < H) & (x0 >= 0) & (x0 < W)
            a = tl.load(x_ptr + base[:, None] + chan_off[None, :] + y0 * sh + x0 * sw, mask=ok0, other=0.0)
            hid = tl.dot(a.to(dt), w1) + b1[None, :]
            hid = tl.where(ok1[:, None], tl.maximum(hid, 0.0), 0.0).to(dt)  # the second conv's zero padding
            acc = tl.dot(hid, tl.load(w2_ptr + t * C1P * C2P + c1[:, None] * C2P + c2[None, :]), acc=acc)
        out = tl.maximum(acc + tl.load(b2_ptr + c2)[None, :], 0.0)
        tl.store(out_ptr + rows[:, None] * C2 + c2[None, :], out.to(dt), mask=row_ok[:, None] & (c2 < C2)[None, :])


def stem_output_shape(x: torch.Tensor, channels: int) -> tuple[int, int, int, int]:
    """(B, channels, H2, W2) of two 3x3 stride-2 convs with padding 1 on x (B, C, H, W)."""
    h1, w1 = (x.shape[2] + 1) // 2, (x.shape[3] + 1) // 2
    return x.shape[0], channels, (h1 + 1) // 2, (w1 + 1) // 2


def stem_launch(x: torch.Tensor, w1k: torch.Tensor, b1: torch.Tensor, w2k: torch.Tensor, b2: torch.Tensor,
                channels: int, config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Run the stem kernel on x (B, CIN, H, W) of any strides and float dtype; returns channels-last
    (B, channels, H/4, W/4) in the weights' dtype. w1k (K1, C1P), w2k (9, C1P, C2P): `prepare_stem_weights`."""
    batch, cin, height, width = x.shape
    _, _, h2, w2 = stem_output_shape(x, channels)
    h1, w1 = (height + 1) // 2, (width + 1) // 2
    rows = batch * h2 * w2
    block_m, warps, stages = config or STEM_CONFIG
    out = w1k.new_empty(batch, h2, w2, channels).permute(0, 3, 1, 2)
    grid = ((rows + block_m - 1) // block_m,)
    sb, sc, sh, sw = x.stride()
    stem_kernel[grid](x, out, w1k, b1, w2k, b2, rows, height, width, h1, w1, h2, w2, sb, sc, sh, sw,
                      CIN=cin, K1=w1k.shape[0], C1P=w1k.shape[1], C2=channels, C2P=w2k.shape[2], BLOCK_M=block_m,
                      num_warps=warps, num_stages=stages)
    return out


def prepare_stem_weights(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor):
    """Folded conv weights (C1, CIN, 3, 3), (C2, C1, 3, 3) -> the stem kernel's zero-padded (K1, C1P) and
    (9, C1P, C2P) in their dtype, and both biases padded, in float32."""
    c1, cin = w1.shape[:2]
    c2 = w2.shape[0]
    k1, c1p, c2p = padded(9 * cin), padded(c1), padded(c2)
    w1k = w1.new_zeros(k1, c1p)
    w1k[:9 * cin, :c1] = w1.permute(2, 3, 1, 0).reshape(9 * cin, c1)
    w2k = w2.new_zeros(9, c1p, c2p)
    w2k[:, :c1, :c2] = w2.permute(2, 3, 1, 0).reshape(9, c1, c2)
    b1p = b1.new_zeros(c1p, dtype=torch.float32)
    b1p[:c1] = b1.float()
    b2p = b2.new_zeros(c2p, dtype=torch.float32)
    b2p[:c2] = b2.float()
    return w1k.contiguous(), b1p, w2k.contiguous(), b2p


def stem_supported(in_channels: int, mid: int, channels: int) -> bool:
    """Whether the stem kernel handles these widths (its tiles: 9 * in_channels, mid and channels padded to
    powers of two of at most 128)."""
    return max(padded(9 * in_channels), padded(mid), padded(channels)) <= 128


@functools.lru_cache(maxsize=1)
def stem_op():
    """The custom op `torch.ops.efficientformer.stem` (registered on first use)."""

    @torch.library.custom_op("efficientformer::stem", mutates_args=())
    def stem(x: torch.Tensor, w1k: torch.Tensor, b1: torch.Tensor, w2k: torch.Tensor, b2: torch.Tensor,
             channels: int) -> torch.Tensor:
        return stem_launch(x, w1k, b1, w2k, b2, channels)

    @stem.register_fake
    def _(x, w1k, b1, w2k, b2, channels):
        batch, _, h2, w2 = stem_output_shape(x, channels)
        return w1k.new_empty(batch, h2, w2, channels).permute(0, 3, 1, 2)

    return stem


# ----------------------------------------------------------------- residual add + pooling mixer (stages 3-4)
# The Meta4D blocks that run as matrix products (wider than the fused kernel takes) end in `x = m + y` (the
# mixed input plus the MLP's output) and the next block starts with `lerp(x, avgpool3x3(x), s1)`: PyTorch (or
# Inductor) writes x, then reads it back to pool it. This kernel reads m and y (the 9 taps of both hit the
# caches), adds, pools and mixes in one pass and writes only the next block's mixed input.
POOL_CONFIG = (64, 32, 4)  # BLOCK_M, BLOCK_C, num_warps: H200, L1 stage 3 at b256 39 us (64 x 64 tiles: 51 us)

if triton is not None:
    @triton.jit
    def add_pool_lerp_kernel(m_ptr, y_ptr, mix_ptr, out_ptr, M, H, W, C, BLOCK_M: tl.constexpr,
                             BLOCK_C: tl.constexpr, POOL: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        row_ok = rows < M
        col_ok = cols < C
        rem = rows % (H * W)
        h = rem // W
        w = rem % W
        centre = rows[:, None] * C + cols[None, :]
        ok = row_ok[:, None] & col_ok[None, :]
        x = (tl.load(m_ptr + centre, mask=ok, other=0.0).to(tl.float32)
             + tl.load(y_ptr + centre, mask=ok, other=0.0).to(tl.float32))
        total = x
        for i in tl.static_range(POOL):
            for j in tl.static_range(POOL):
                if i != POOL // 2 or j != POOL // 2:
                    hh = h + (i - POOL // 2)
                    ww = w + (j - POOL // 2)
                    tap_ok = row_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                    nb = centre + ((i - POOL // 2) * W + (j - POOL // 2)) * C
                    mask = tap_ok[:, None] & col_ok[None, :]
                    total += (tl.load(m_ptr + nb, mask=mask, other=0.0).to(tl.float32)
                              + tl.load(y_ptr + nb, mask=mask, other=0.0).to(tl.float32))
        pooled = total * window_reciprocal(h, w, H, W, POOL)[:, None]
        s1 = tl.load(mix_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        out = x + s1[None, :] * (pooled - x)
        tl.store(out_ptr + centre, out.to(out_ptr.dtype.element_ty), mask=ok)


def add_pool_lerp_launch(m: torch.Tensor, y: torch.Tensor, mix: torch.Tensor, pool: int,
                         config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """lerp(x, avgpool(x), mix) for x = m + y (channels-last (B, C, H, W), count_include_pad=False), in one
    pass; returns a new channels-last tensor in m's dtype. mix: (C,)."""
    m = m.contiguous(memory_format=torch.channels_last)
    y = y.contiguous(memory_format=torch.channels_last)
    batch, channels, height, width = m.shape
    rows = batch * height * width
    block_m, block_c, warps = config or POOL_CONFIG
    out = torch.empty_like(m, memory_format=torch.channels_last)
    grid = ((rows + block_m - 1) // block_m, (channels + block_c - 1) // block_c)
    add_pool_lerp_kernel[grid](m, y, mix, out, rows, height, width, channels, BLOCK_M=block_m, BLOCK_C=block_c,
                               POOL=pool, num_warps=warps)
    return out


@functools.lru_cache(maxsize=1)
def add_pool_lerp_op():
    """The custom op `torch.ops.efficientformer.add_pool_lerp` (registered on first use)."""

    @torch.library.custom_op("efficientformer::add_pool_lerp", mutates_args=())
    def add_pool_lerp(m: torch.Tensor, y: torch.Tensor, mix: torch.Tensor, pool: int) -> torch.Tensor:
        return add_pool_lerp_launch(m, y, mix, pool)

    @add_pool_lerp.register_fake
    def _(m, y, mix, pool):
        return torch.empty_like(m, memory_format=torch.channels_last)

    return add_pool_lerp
