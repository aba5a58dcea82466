"""The GPU benchmark of BENCHMARKS.md in one call: ours with `optimize(model, device="cuda")` defaults against
timm's best mode (compile + channels-last + CUDA graphs), same weights, same process, outputs checked against
our float32 eager model; then the GPU tests. Replaces the per-run scripts gpu_run*.py of earlier sessions.

Parts (in this order; each is skipped once --budget seconds are spent, so a cut-off call still returns the
rows measured so far, written after every part):
  ceil     measured ceilings: device copy bandwidth and a bf16 8192^3 matrix product
  l1       L1 at batch 256, 1, 8 and 32 (one optimized model and one timm model serve all four: the server
           case), a profile of ours at batch 256, ours in fp16 and ours without the Triton kernel at 256
  l3, l7   batch 256
  tests    pytest tests/test_optimize_gpu.py (the `gpu` tests)
  tune     the Meta4D kernel's variants (exact column groups, tanh-form GELU) and tiles timed on this GPU,
           then L1 at batch 256, 1 and 8: optimize() defaults against each variant and timm's best mode
  kernel   pytest -k triton of tests/test_optimize_gpu.py (the kernel's correctness tests alone)
  stem     L1's stem at batch 256 and 1: cuDNN convs against the stem kernel's tiles
  pool     stages 3-4 at batch 256: residual add + pooling + lerp, Inductor against the add_pool_lerp kernel
  train    L1 training steps at batch 256, bf16 autocast, channels-last, fused AdamW (benchmarks/train_speed.py's
           loop): ours and timm compiled alike in each mode (each plan compiles for ~100 s)
  v2       EfficientFormerV2 S0 (batch 256, 1, 8), S1, S2 and L (batch 256): ours against timm's V2, as l1
  autotune L3 and L7 at batch 256: the defaults and timm, then Inductor's max-autotune (Triton GEMM templates
           with fused epilogues, cuBLAS where it wins) with and without the cuBLASLt GELU epilogue
  wide     L3's and L7's stage 1-2 Meta4D kernel tiles at batch 256, then L3 (profiled) and L7 with the fastest
           against timm, and L7 with the kernel on its 192-wide blocks too (`triton_max_channels=256`)
  gelu     the Meta4D kernel with and without PTX's tanh instruction for GELU (L1, L3, L7 stage 1-2 blocks)
  maxch    L3 (batch 256) and L7 (profiled) with the Meta4D kernel on blocks up to 0, 64 and 96 channels wide
           (the others run as cuBLAS matrix products), against the defaults and timm
  trainprof  ours and timm compiled training steps as `train`, each with its top kernels by GPU time
  e2e      benchmarks/end_to_end.py: L1 bf16 optimized, 8,000 640x480 JPEGs on disk -> labels, against the model
           alone, CPU decoding in worker processes, then GPU decoding (--decode gpu)

    PYTHONPATH=src python benchmarks/gpu_bench.py --parts ceil,l1,l3,l7,tests
    # JSON (dated) and log go to $OUT (or --out); copy them into benchmarks/results/
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import torch

from efficientformer.benchmarking import (
    _timm_runner,
    build_model,
    environment,
    profile_summary,
    quiet_compiler,
    time_call,
    timm_twin,
)
from efficientformer.deploy.optimize import optimize

STARTED = time.perf_counter()


def log(line: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {line}", flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def ceilings() -> dict:
    dev = torch.device("cuda")
    src = torch.randn(1 << 30, device=dev, dtype=torch.bfloat16)  # 2 GiB
    dst = torch.empty_like(src)
    seconds = time_call(lambda: dst.copy_(src), dev, min_time=1.0)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    mm = time_call(lambda: a @ b, dev, min_time=1.0)
    out = {"copy_TBps": 2 * src.numel() * 2 / seconds / 1e12, "bf16_matmul_TFLOPs": 2 * 8192 ** 3 / mm / 1e12}
    del src, dst, a, b
    torch.cuda.empty_cache()
    return out


def flops_per_image(model) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, 224, 224))
    return float(counter.get_total_flops())


def compare(name: str, batches: list[int], min_time: float, extra_modes: dict | None = None,
            profile: bool = False) -> dict:
    """Ours (optimize defaults) against timm's best mode at each batch size, one model of each for all sizes."""
    dev, bf16 = torch.device("cuda"), torch.bfloat16
    model = build_model(name)
    result: dict = {"model": name, "flops_per_image": flops_per_image(model), "rows": []}
    ref_model = build_model(name).to(dev)
    gen = torch.Generator().manual_seed(1)
    inputs = {b: torch.randn(b, 3, 224, 224, generator=gen).to(dev) for b in batches}
    with torch.no_grad():
        refs = {b: torch.cat([ref_model(c).logits for c in x.split(64)]) for b, x in inputs.items()}
    del ref_model
    t0 = time.perf_counter()
    ours = optimize(model, device="cuda")
    result["ours_config"] = ours.extra_repr()
    twin = timm_twin(model)
    timm_run = _timm_runner(twin, "compile+cl+graphs", dev, bf16, 224)
    log(f"{name}: built ours ({time.perf_counter() - t0:.1f}s) and timm")
    for batch in batches:
        x = inputs[batch]
        row: dict = {"batch": batch}
        for impl, fn in (("ours", ours), ("timm", timm_run)):
            t1 = time.perf_counter()
            with torch.no_grad():
                out = fn(x)
                torch.cuda.synchronize()
                row[f"{impl}_first_call_s"] = time.perf_counter() - t1
                row[f"{impl}_rel_err"] = rel(out, refs[batch])
                seconds = time_call(lambda: fn(x), dev, min_time=min_time)
            row[f"{impl}_ms"] = seconds * 1e3
            row[f"{impl}_img_s"] = batch / seconds
        row["ratio"] = row["ours_img_s"] / row["timm_img_s"]
        row["ours_TFLOPs"] = row["ours_img_s"] * result["flops_per_image"] / 1e12
        result["rows"].append(row)
        log(f"{name} b={batch}: ours {row['ours_ms']:.3f} ms ({row['ours_img_s']:,.0f} img/s, err "
            f"{row['ours_rel_err']:.1e}) timm {row['timm_ms']:.3f} ms ({row['timm_img_s']:,.0f} img/s, err "
            f"{row['timm_rel_err']:.1e}) ratio {row['ratio']:.2f}x")
    result["ours_setup_seconds"] = ours.setup_seconds
    if profile:
        with torch.no_grad():
            result["profile_ours_b256"] = profile_summary(lambda: ours(inputs[256]), dev, top=25)
            if 1 in inputs:
                result["profile_ours_b1"] = profile_summary(lambda: ours(inputs[1]), dev, top=40)
    del ours, timm_run
    torch.cuda.empty_cache()
    for label, kwargs in (extra_modes or {}).items():
        fast = optimize(model, device="cuda", **kwargs)
        x = inputs[256]
        with torch.no_grad():
            err = rel(fast(x), refs[256])
            seconds = time_call(lambda: fast(x), dev, min_time=min_time)
        result.setdefault("extra", {})[label] = {"img_s": 256 / seconds, "rel_err": err, "kwargs": str(kwargs)}
        log(f"{name} b=256 {label}: {256 / seconds:,.0f} img/s, err {err:.1e}")
        del fast
        torch.cuda.empty_cache()
    return result


TILE_CANDIDATES = {  # channels -> (BLOCK_M, BLOCK_H, num_warps, num_stages) to try at batch 256
    48: [(64, 32, 4, 2), (64, 64, 4, 3), (64, 32, 4, 3), (128, 32, 4, 2), (128, 64, 8, 2), (32, 32, 2, 2),
         (128, 32, 8, 3)],
    96: [(64, 64, 4, 3), (64, 32, 4, 3), (128, 64, 8, 3), (32, 64, 4, 2), (64, 64, 4, 2), (128, 32, 8, 2)],
}
# L3's and L7's stage 1-2 widths (64 / 128 at 56x56 / 28x28, 96 / 192), batch 256 (`--parts wide`)
WIDE_SIZES = {"l3": {64: 56, 128: 28}, "l7": {96: 56, 192: 28}}
WIDE_CANDIDATES = {
    64: [(64, 32, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (128, 32, 4, 2), (128, 64, 8, 2), (64, 64, 4, 2),
         (32, 64, 4, 2)],
    96: TILE_CANDIDATES[96],
    128: [(64, 64, 4, 3), (64, 32, 4, 3), (128, 64, 8, 3), (64, 64, 8, 2), (32, 64, 4, 2), (128, 32, 8, 2),
          (64, 128, 8, 2)],
    192: [(64, 64, 8, 2), (64, 32, 4, 2), (32, 64, 4, 2), (64, 32, 8, 3), (128, 32, 8, 2), (32, 32, 4, 3),
          (64, 64, 4, 2)],
}
SMALL_CANDIDATES = [(16, 32, 2, 2), (16, 64, 4, 2), (32, 32, 4, 2), (32, 64, 4, 2), (64, 32, 4, 2)]  # batch 1
KERNEL_VARIANTS = {"padded": (False, False), "split": (True, False), "fast-gelu": (False, True),
                   "split+fast-gelu": (True, True)}  # label -> (SPLIT_CHANNELS, FAST_GELU)


def _set_variant(kernels, label: str, tiles: dict | None = None, small: dict | None = None) -> None:
    kernels.SPLIT_CHANNELS, kernels.FAST_GELU = KERNEL_VARIANTS[label]
    if tiles is not None:
        kernels.TUNED.clear()
        kernels.TUNED.update(tiles)
    if small is not None:
        kernels.TUNED_SMALL.clear()
        kernels.TUNED_SMALL.update(small)


def _time_tiles(kernels, block, x, ref, configs, min_time, label, out) -> tuple | None:
    """The fastest of `configs` for one block and input (error against PyTorch under 1e-2), all logged."""
    dev = x.device
    w1t, _, w2t, _ = kernels.prepare_weights(block.w1, block.b1, block.w2, block.b2)
    best = None
    for cfg in configs:
        try:
            run = lambda: kernels.launch(x, block.mix_scale.view(-1), w1t, block.b1, w2t, block.b2, 0, 3, cfg)
            err = rel(run(), ref)
            seconds = time_call(run, dev, min_time=min_time)
        except Exception as err_:  # out of shared memory or registers for this tile
            log(f"tile {label} {cfg} failed: {type(err_).__name__}: {str(err_)[:100]}")
            continue
        key = (int(w1t.shape[0]), int(w1t.shape[1]))
        out["timings"].append({"variant": label, "batch": x.shape[0], "key": key, "config": cfg,
                               "us": seconds * 1e6, "rel_err": err})
        log(f"tile {label} b={x.shape[0]} {key} {cfg}: {seconds * 1e6:.1f} us err {err:.1e}")
        if err < 1e-2 and (best is None or seconds < best[0]):
            best = (seconds, cfg, key)
    return best


def tune_tiles(min_time: float) -> dict:
    """Each kernel variant's tiles for L1's 48- and 96-wide blocks at batch 256 on this GPU, then small tiles
    at batch 1 for the fastest variant. Returns every timing and, per variant, its best tiles and total time."""
    from efficientformer.deploy import kernels
    from efficientformer.deploy.optimize import FusedMeta4D, fuse

    dev = torch.device("cuda")
    defaults = (kernels.SPLIT_CHANNELS, kernels.FAST_GELU)
    fused = fuse(build_model("l1")).to(dev, torch.bfloat16).to(memory_format=torch.channels_last)
    blocks = {}
    for block in fused.convs:
        if isinstance(block, FusedMeta4D) and block.w1.shape[1] in TILE_CANDIDATES:
            blocks.setdefault(block.w1.shape[1], block)
    sizes, out = {48: 56, 96: 28}, {"timings": [], "variants": {}}
    inputs = {(c, b): torch.randn(b, c, sizes[c], sizes[c], device=dev, dtype=torch.bfloat16).contiguous(
        memory_format=torch.channels_last) for c in blocks for b in (256, 1)}
    with torch.no_grad():
        refs = {k: blocks[k[0]].float()(v.float()).float() for k, v in inputs.items()}
        for block in blocks.values():
            block.to(torch.bfloat16)
        for label in KERNEL_VARIANTS:
            _set_variant(kernels, label)
            tiles, total = [], 0.0  # [(width, hidden), tile] pairs: JSON has no tuple keys
            for c, block in blocks.items():
                best = _time_tiles(kernels, block, inputs[(c, 256)], refs[(c, 256)], TILE_CANDIDATES[c], min_time,
                                   label, out)
                if best is None:
                    break
                tiles.append([best[2], best[1]])
                total += best[0] * {48: 3, 96: 2}[c]  # L1: 3 blocks of 48 channels, 2 of 96
            else:
                out["variants"][label] = {"tiles": tiles, "l1_stage12_us": total * 1e6}
                log(f"variant {label}: stages 1-2 {total * 1e6:.0f} us with {tiles}")
        fastest = min(out["variants"], key=lambda k: out["variants"][k]["l1_stage12_us"])
        _set_variant(kernels, fastest)
        small = []
        for c, block in blocks.items():
            best = _time_tiles(kernels, block, inputs[(c, 1)], refs[(c, 1)], SMALL_CANDIDATES, min_time, fastest, out)
            if best:
                small.append([best[2], best[1]])
        out["fastest"], out["small_tiles"] = fastest, small
    kernels.SPLIT_CHANNELS, kernels.FAST_GELU = defaults
    return out


def first_blocks(name: str, widths, dev: torch.device) -> tuple:
    """The folded bf16 channels-last network of `name` and its first Meta4D block of each width in `widths`."""
    from efficientformer.deploy.optimize import FusedMeta4D, fuse

    fused = fuse(build_model(name)).to(dev, torch.bfloat16).to(memory_format=torch.channels_last)
    blocks: dict = {}
    for block in fused.convs:
        if isinstance(block, FusedMeta4D) and block.w1.shape[1] in widths:
            blocks.setdefault(block.w1.shape[1], block)
    return fused, blocks


def tune_wide(min_time: float) -> dict:
    """The Meta4D kernel's tiles for L3's and L7's stage 1-2 blocks at batch 256 (default variant); the fastest
    of each width is put into `kernels.TUNED` for the rest of the process (the `wide` part's comparisons)."""
    from efficientformer.deploy import kernels

    dev = torch.device("cuda")
    out: dict = {"timings": [], "best": []}
    for name, sizes in WIDE_SIZES.items():
        fused, blocks = first_blocks(name, sizes, dev)
        with torch.no_grad():
            for c, block in blocks.items():
                x = torch.randn(256, c, sizes[c], sizes[c], device=dev, dtype=torch.bfloat16).contiguous(
                    memory_format=torch.channels_last)
                ref = block.float()(x.float()).float()
                block.to(torch.bfloat16)
                best = _time_tiles(kernels, block, x, ref, WIDE_CANDIDATES[c], min_time, name, out)
                if best:
                    out["best"].append({"key": best[2], "config": best[1], "us": best[0] * 1e6,
                                        "default": kernels.block_config(*best[2])})
                    kernels.TUNED[best[2]] = best[1]
                    log(f"wide {name} {best[2]}: best {best[1]} {best[0] * 1e6:.1f} us "
                        f"(default {kernels.block_config(*best[2])})")
        del fused
    return out


def gelu_timing(min_time: float) -> dict:
    """The Meta4D kernel with its default tiles, GELU's tanh through PTX's tanh instruction against the exp2 form
    (`kernels.TANH_INSTRUCTION`), on L1's and L7's stage 1-2 blocks at batch 256 and L1's at batch 1."""
    from efficientformer.deploy import kernels

    dev, out = torch.device("cuda"), {"rows": []}
    cases = (("l1", {48: 56, 96: 28}, (256, 1)), ("l7", {96: 56, 192: 28}, (256,)), ("l3", {64: 56, 128: 28}, (256,)))
    for name, sizes, batches in cases:
        fused, blocks = first_blocks(name, sizes, dev)
        with torch.no_grad():
            for c, block in blocks.items():
                w1t, _, w2t, _ = kernels.prepare_weights(block.w1, block.b1, block.w2, block.b2)
                for batch in batches:
                    x = torch.randn(batch, c, sizes[c], sizes[c], device=dev, dtype=torch.bfloat16).contiguous(
                        memory_format=torch.channels_last)
                    ref = block.float()(x.float()).float()
                    block.to(torch.bfloat16)
                    for tanh in (False, True):
                        kernels.TANH_INSTRUCTION = tanh
                        run = lambda: kernels.launch(x, block.mix_scale.view(-1), w1t, block.b1, w2t, block.b2, 0, 3)
                        err = rel(run(), ref)
                        us = time_call(run, dev, min_time=min_time) * 1e6
                        out["rows"].append({"model": name, "channels": c, "batch": batch, "tanh_instruction": tanh,
                                            "us": us, "rel_err": err})
                        log(f"gelu {name} {c}ch b={batch} tanh_instruction={tanh}: {us:.1f} us err {err:.1e}")
        kernels.TANH_INSTRUCTION = True
        del fused
    return out


STEM_CANDIDATES = [(64, 4, 2), (128, 4, 2), (128, 8, 2), (32, 4, 2), (64, 4, 3), (256, 8, 2), (32, 2, 2),
                   (64, 2, 2), (16, 2, 2)]  # (BLOCK_M, num_warps, num_stages) of the stem kernel


def stem_timing(min_time: float) -> dict:
    """L1's stem at batch 256 and 1: the two cuDNN convs + ReLUs (bf16, channels-last, eager) against the stem
    kernel at each tile, on the graph's bf16 channels-last input and on the caller's fp32 NCHW images."""
    from efficientformer.deploy import kernels
    from efficientformer.deploy.optimize import fuse

    dev, bf16 = torch.device("cuda"), torch.bfloat16
    ref_stem = fuse(build_model("l1")).stem.to(dev)
    stem = fuse(build_model("l1")).stem.to(dev, bf16).to(memory_format=torch.channels_last)
    out: dict = {"rows": []}
    with torch.no_grad():
        for batch in (256, 1):
            raw = torch.randn(batch, 3, 224, 224, device=dev)
            x = raw.to(bf16).contiguous(memory_format=torch.channels_last)
            ref = ref_stem(raw)
            stem.triton = False
            seconds = time_call(lambda: stem(x), dev, min_time=min_time)
            out["rows"].append({"batch": batch, "impl": "cudnn", "us": seconds * 1e6, "rel_err": rel(stem(x), ref)})
            log(f"stem b={batch} cudnn convs + relu: {seconds * 1e6:.1f} us")
            stem.enable_triton()
            for inp_label, inp in (("bf16 nhwc", x), ("fp32 nchw", raw)):
                for cfg in STEM_CANDIDATES if inp_label == "bf16 nhwc" else STEM_CANDIDATES[:4]:
                    run = lambda: kernels.stem_launch(inp, stem.w1k, stem.b1k, stem.w2k, stem.b2k, 48, cfg)
                    try:
                        err = rel(run(), ref)
                        seconds = time_call(run, dev, min_time=min_time / 4)
                    except Exception as err_:
                        log(f"stem {cfg} failed: {type(err_).__name__}: {str(err_)[:100]}")
                        continue
                    out["rows"].append({"batch": batch, "impl": "triton", "input": inp_label, "config": cfg,
                                        "us": seconds * 1e6, "rel_err": err})
                    log(f"stem b={batch} triton {inp_label} {cfg}: {seconds * 1e6:.1f} us err {err:.1e}")
    return out


POOL_CANDIDATES = [(64, 64, 4), (32, 64, 4), (64, 32, 4), (128, 32, 4), (32, 128, 4), (16, 64, 2), (128, 64, 8)]


def pool_timing(min_time: float) -> dict:
    """L1's stage 3 (224 x 14 x 14) and 4 (448 x 7 x 7) at batch 256: residual add + pooling + lerp compiled by
    Inductor against the add_pool_lerp kernel at each tile."""
    from torch.nn import functional as F

    from efficientformer.deploy import kernels

    dev, bf16 = torch.device("cuda"), torch.bfloat16
    out: dict = {"rows": []}

    def pytorch(m, y, mix):
        x = m + y
        return torch.lerp(x, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), mix.view(-1, 1, 1))

    compiled = torch.compile(pytorch)
    for shape in ((256, 224, 14, 14), (256, 448, 7, 7), (1, 224, 14, 14)):
        m, y = (torch.randn(*shape, device=dev, dtype=bf16).contiguous(memory_format=torch.channels_last)
                for _ in range(2))
        mix = torch.rand(shape[1], device=dev, dtype=bf16)
        ref = pytorch(m.float(), y.float(), mix.float())
        with torch.no_grad():
            seconds = time_call(lambda: compiled(m, y, mix), dev, min_time=min_time / 4)
            out["rows"].append({"shape": shape, "impl": "inductor", "us": seconds * 1e6})
            log(f"pool {shape} inductor: {seconds * 1e6:.1f} us")
            for cfg in POOL_CANDIDATES:
                run = lambda: kernels.add_pool_lerp_launch(m, y, mix, 3, cfg)
                err = rel(run(), ref)
                seconds = time_call(run, dev, min_time=min_time / 4)
                out["rows"].append({"shape": shape, "impl": "triton", "config": cfg, "us": seconds * 1e6,
                                    "rel_err": err})
                log(f"pool {shape} triton {cfg}: {seconds * 1e6:.1f} us err {err:.1e}")
    return out


def variants(min_time: float, tuned: dict) -> dict:
    """L1 in one process: optimize() defaults against each kernel variant with its tuned tiles (batch 256), the
    fastest variant with the kernel at every batch size (batch 1 and 8), and timm's best mode at each."""
    from efficientformer.deploy import kernels

    dev, bf16 = torch.device("cuda"), torch.bfloat16
    model = build_model("l1")
    ref_model = build_model("l1").to(dev)
    gen = torch.Generator().manual_seed(1)
    xs = {b: torch.randn(b, 3, 224, 224, generator=gen).to(dev) for b in (256, 1, 8)}
    with torch.no_grad():
        refs = {b: torch.cat([ref_model(c).logits for c in x.split(64)]) for b, x in xs.items()}
    del ref_model
    old_tiles, old_small = dict(kernels.TUNED), dict(kernels.TUNED_SMALL)
    defaults = (kernels.SPLIT_CHANNELS, kernels.FAST_GELU)
    out: dict = {"rows": {}}

    def measure(label: str, fast, batches) -> None:
        for batch in batches:
            with torch.no_grad():
                err = rel(fast(xs[batch]), refs[batch])
                seconds = time_call(lambda: fast(xs[batch]), dev, min_time=min_time)
            out["rows"][f"{label} b={batch}"] = {"ms": seconds * 1e3, "img_s": batch / seconds, "rel_err": err}
            log(f"{label} b={batch}: {seconds * 1e3:.3f} ms ({batch / seconds:,.0f} img/s) err {err:.1e}")

    plans = [("old kernel", "padded", old_tiles)] + [
        (label, label, {**old_tiles, **{tuple(k): tuple(v) for k, v in row["tiles"]}})
        for label, row in tuned.get("variants", {}).items()]
    for label, variant, tiles in plans:
        _set_variant(kernels, variant, tiles, old_small)
        fast = optimize(model, device="cuda")
        measure(label, fast, [256] + ([1, 8] if label == "old kernel" else []))
        del fast
        torch.cuda.empty_cache()
    best = tuned.get("fastest")
    if best:
        tiles = next(t for lab, _, t in plans if lab == best)
        _set_variant(kernels, best, tiles, {**old_small, **{tuple(k): tuple(v) for k, v in tuned.get("small_tiles", [])}})
        fast = optimize(model, device="cuda")
        for block in fast.fused.convs:
            if getattr(block, "triton", False):
                block.triton_min_rows = 0
        measure(f"{best} at every batch", fast, [1, 8])
        del fast
        torch.cuda.empty_cache()
    _set_variant(kernels, "padded", old_tiles, old_small)
    kernels.SPLIT_CHANNELS, kernels.FAST_GELU = defaults
    timm_run = _timm_runner(timm_twin(model), "compile+cl+graphs", dev, bf16, 224)
    measure("timm compile+cl+graphs", timm_run, [256, 1, 8])
    return out


TRAIN_PLANS = [  # (label, model maker, torch.compile mode: True is the default mode)
    ("timm compiled", "timm", True),
    ("ours compiled", "ours", True),
    ("timm reduce-overhead", "timm", "reduce-overhead"),
    ("ours reduce-overhead", "ours", "reduce-overhead"),
]


def training(batch: int = 256, steps: int = 20, windows: int = 3, plans: list | None = None,
             profile: bool = False) -> dict:
    """Training images/s of each plan in one process (same loop, data on the GPU, bf16 autocast)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import train_speed

    makers = {"timm": train_speed.timm_l1, "ours": train_speed.our_l1}
    out: dict = {"batch": batch, "rows": []}
    for label, maker, mode in plans or TRAIN_PLANS:
        t0 = time.perf_counter()
        try:
            torch.manual_seed(0)
            torch.cuda.reset_peak_memory_stats()
            row = train_speed.measure(makers[maker](), batch, 224, steps, windows, "bf16", mode, profile=profile)
        except Exception as err:  # noqa: BLE001 - the other plans still run
            row = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
        row.update(label=label, seconds_with_compile=time.perf_counter() - t0)
        out["rows"].append(row)
        log(f"train {label}: {row.get('images_per_s', row.get('error'))} img/s ({row['seconds_with_compile']:.0f} s)")
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    return out


def end_to_end(extra: list[str]) -> dict:
    """benchmarks/end_to_end.py as a subprocess (its own worker processes), its JSON read back."""
    here = os.path.dirname(os.path.abspath(__file__))
    out: dict = {}
    for decode in ("cpu", "gpu"):
        target = os.path.join(os.environ.get("OUT", "/tmp"), f"end_to_end_{decode}.json")
        cmd = [sys.executable, os.path.join(here, "end_to_end.py"), "--models", "l1", "--device", "cuda",
               "--dtype", "bfloat16", "--optimize", "--images", "8000", "--batch-size", "256", "--write", target,
               "--decode", decode, "--seconds", "3", *(["--no-serial"] if decode == "cpu" else []), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(here), "src")})
        out[decode] = {"rc": proc.returncode, "tail": (proc.stdout + proc.stderr)[-3000:]}
        if os.path.exists(target):
            out[decode]["result"] = json.load(open(target))
        log(f"e2e {decode} rc={proc.returncode}\n{proc.stdout[-1500:]}{proc.stderr[-800:]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="ceil,l1,l3,l7,tests")
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    parser.add_argument("--budget", type=float, default=540.0, help="seconds after which no new part starts")
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args()
    quiet_compiler()
    torch.backends.cudnn.allow_tf32 = False  # the float32 reference in full float32 (its convs default to TF32)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d_%H%M")
    path = os.path.join(args.out, f"gpu_bench_{stamp}.json")
    results: dict = {"date_utc": stamp, "environment": environment(), "command": " ".join(sys.argv)}

    def save() -> None:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1, default=str)
        os.replace(tmp, path)

    for part in args.parts.split(","):
        if time.perf_counter() - STARTED > args.budget:
            log(f"budget spent: skipping {part} and the rest")
            results.setdefault("skipped", []).append(part)
            continue
        log(f"part {part}")
        try:
            if part == "ceil":
                results["ceilings"] = ceilings()
                log(str(results["ceilings"]))
            elif part == "l1":
                results["l1"] = compare("l1", [256, 1, 8, 32], args.min_time, profile=True, extra_modes={
                    "fp16": {"dtype": "fp16"}, "no-triton": {"kernels": None},
                    "no-triton-stem": {"triton_stem": False}, "no-triton-pool": {"triton_pool": False}})
            elif part == "pool":
                results["pool"] = pool_timing(args.min_time)
            elif part == "stem":
                results["stem"] = stem_timing(args.min_time)
            elif part == "tune":
                results["tiles"] = tune_tiles(0.2)
                save()
                results["variants"] = variants(args.min_time, results["tiles"])
            elif part in ("l3", "l7"):
                results[part] = compare(part, [256], args.min_time, extra_modes={"no-triton-pool": {"triton_pool": False}})
            elif part == "train":
                results["train"] = training()
            elif part == "gelu":
                results["gelu"] = gelu_timing(0.3)
            elif part == "maxch":
                results["maxch"] = {name: compare(name, [256], args.min_time, profile=name == "l7", extra_modes={
                    f"triton_max_channels={c}": {"triton_max_channels": c} for c in (0, 64, 96)})
                    for name in ("l3", "l7") if time.perf_counter() - STARTED < args.budget}
            elif part == "trainprof":
                results["trainprof"] = training(plans=TRAIN_PLANS[:2], profile=True)
                for row in results["trainprof"]["rows"]:
                    log(f"{row['label']}\n{row.get('profile', '')}")
            elif part == "wide":
                results["wide_tiles"] = tune_wide(0.2)
                save()
                results["wide"] = {name: compare(name, [256], args.min_time, profile=name == "l3", extra_modes={
                    "Triton kernel up to 256 channels": {"triton_max_channels": 256}} if name == "l7" else None)
                    for name in ("l3", "l7") if time.perf_counter() - STARTED < args.budget}
            elif part == "v2":
                results["v2"] = {name: compare(name, batches, args.min_time) for name, batches in
                                 (("s0", [256, 1, 8]), ("l", [256]), ("s1", [256]), ("s2", [256]))
                                 if time.perf_counter() - STARTED < args.budget}
            elif part == "autotune":
                tuned = {"max-autotune": {"compile": "max-autotune-no-cudagraphs"},
                         "max-autotune, GELU by Inductor": {"compile": "max-autotune-no-cudagraphs",
                                                            "gelu_epilogue": False}}
                results["autotune"] = {name: compare(name, [256], args.min_time, extra_modes=tuned)
                                       for name in ("l3", "l7") if time.perf_counter() - STARTED < args.budget}
            elif part == "e2e":
                results["e2e"] = end_to_end([])
            elif part == "kernel":
                proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k",
                                       "triton", "tests/test_optimize_gpu.py"], capture_output=True, text=True,
                                      timeout=240)
                results["kernel_tests"] = {"rc": proc.returncode, "tail": proc.stdout[-3000:]}
                log(f"kernel tests rc={proc.returncode}\n{proc.stdout[-1200:]}")
            elif part == "tests":
                left = max(300, int(args.budget + 50 - (time.perf_counter() - STARTED)))  # the GPU tests take ~3 min
                proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                                       "tests/test_optimize_gpu.py"], capture_output=True, text=True, timeout=left)
                results["tests"] = {"rc": proc.returncode, "tail": proc.stdout[-4000:] + proc.stderr[-2000:]}
                log(f"tests rc={proc.returncode}\n{proc.stdout[-1500:]}")
        except Exception as err:  # keep the other parts' numbers
            results.setdefault("errors", {})[part] = f"{type(err).__name__}: {err}"
            log(f"{part} failed: {type(err).__name__}: {err}")
        save()
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
