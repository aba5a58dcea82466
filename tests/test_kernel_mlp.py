"""The split-hidden MLP kernels of stages 3-4 (`efficientformer.deploy.kernel_mlp`, issue 15) on the CPU, in
Triton's interpreter: the kernels against float64 PyTorch, and a folded network running them (eager and through
torch.compile) against the same network without them; and the rule's tiles compiled for sm_90 (no GPU needed).

Triton interprets a kernel only if TRITON_INTERPRET=1 is set when the kernel's module is first imported, and
any earlier test may import it, so `test_kernels_in_triton_interpreter` runs this file again in a fresh
process with the variable set; there the `interpreted` tests run. Skipped without triton (CI) and where CUDA
is present (tests/test_optimize_gpu.py runs the compiled kernels there). The config rule needs no triton.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch.nn import functional as F  # noqa: E402

from efficientformer.errors import ConfigError  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRETED,
                                 reason="runs in Triton's interpreter (test_kernels_in_triton_interpreter)")


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def channels_last(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).contiguous(memory_format=torch.channels_last)


def reference_block(m, w1, b1, w2, b2):
    """m + W2 gelu(W1 m + b1) + b2 in float64 on (B, C, H, W), exact GELU."""
    x = m.permute(0, 2, 3, 1).double()
    hidden = F.gelu(x @ w1.double().t() + b1.double())
    return (x + hidden @ w2.double().t() + b2.double()).permute(0, 3, 1, 2)


def reference_mix(x, mix):
    x = x.double()
    return torch.lerp(x, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), mix.double().view(-1, 1, 1))


# ------------------------------------------------------------------------------ runs without triton too
@pytest.mark.parametrize("channels, hidden, rows, expected", [
    (224, 896, 196, (16, 64, 7, 4, 2)),     # L1 stage 3, batch 1: 13 row tiles x 7 splits
    (448, 1792, 49, (16, 32, 14, 8, 2)),    # L1 stage 4, batch 1: 4 x 14
    (224, 896, 1568, (32, 64, 2, 8, 2)),    # stage 3, batch 8: 49 x 2
    (448, 1792, 392, (16, 32, 4, 8, 2)),    # stage 4, batch 8: 25 x 4
    (448, 1792, 1568, (32, 32, 2, 8, 2)),   # stage 4, batch 32: 49 x 2
])
def test_split_config_spreads_small_inputs_over_the_gpu(channels, hidden, rows, expected):
    from efficientformer.deploy import kernel_mlp

    config = kernel_mlp.split_config(channels, hidden, rows)
    assert config == expected
    kernel_mlp.check_config(hidden, config)  # whole BLOCK_H chunks in every split
    assert -(-rows // config[0]) * config[2] <= kernel_mlp.TARGET_PROGRAMS


def test_split_config_takes_tuned_entries_and_refuses_a_tile_that_does_not_divide(monkeypatch):
    from efficientformer.deploy import kernel_mlp

    monkeypatch.setitem(kernel_mlp.TUNED, (256, 896, 196), (32, 64, 2, 4, 3))
    assert kernel_mlp.split_config(224, 896, 196) == (32, 64, 2, 4, 3)
    with pytest.raises(ConfigError, match="does not fit hidden width 896"):
        kernel_mlp.check_config(896, (16, 64, 3, 4, 2))
    assert kernel_mlp.supported(448, 1792, "gelu") and not kernel_mlp.supported(768, 3072, "gelu")


@pytest.mark.skipif(INTERPRETED, reason="compiles the kernels for the GPU: outside the interpreter")
@pytest.mark.parametrize("channels, hidden, rows", [(224, 896, 196), (448, 1792, 49), (224, 896, 1568),
                                                    (448, 1792, 392), (448, 1792, 1568)])
def test_rule_tiles_compile_for_sm90_without_spills(channels, hidden, rows, tmp_path):
    """The rule's tiles for L1 at batch 1, 8, 32, compiled for an H100/H200 (no GPU needed): pipelined (async
    copies of the weight tiles), within shared memory, and no registers spilled to local memory."""
    pytest.importorskip("triton")
    import re

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from efficientformer.deploy import kernel_mlp

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        pytest.skip("this triton ships no cuobjdump")
    block_m, block_h, splits, warps, stages = kernel_mlp.split_config(channels, hidden, rows)
    signature = {name: "*bf16" for name in ("m_ptr", "w1_ptr", "b1_ptr", "w2_ptr", "b2_ptr")}
    signature.update(part_ptr="*fp32", M="i32", **{name: "constexpr" for name in (
        "C", "CP", "CHUNK", "BLOCK_M", "BLOCK_H", "ACT", "WIDE")})
    source = ASTSource(fn=kernel_mlp.mlp_split_kernel, signature=signature, constexprs=dict(
        C=channels, CP=kernel_mlp.padded(channels), CHUNK=hidden // splits, BLOCK_M=block_m, BLOCK_H=block_h,
        ACT=1, WIDE=False), attrs={(i,): [["tt.divisibility", 16]] for i in range(6)})  # aligned, as launched
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps, "num_stages": stages})
    assert "async_copy" in compiled.asm["ttgir"] and compiled.metadata.shared <= 200 * 1024
    cubin = tmp_path / "mlp_split.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                           check=True).stdout
    assert int(re.search(r"STACK:(\d+)", usage).group(1)) == 0, usage


# --------------------------------------------------------------------------------- the interpreter run
@pytest.mark.skipif(INTERPRETED, reason="this is the interpreter run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: tests/test_optimize_gpu.py runs the kernels")
def test_kernels_in_triton_interpreter():
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(root / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


SHAPES = [(1, 224, 14, 14, 896), (1, 448, 7, 7, 1792), (2, 224, 14, 14, 896),  # 196, 49, 392 rows
          (3, 40, 5, 7, 160), (1, 72, 3, 3, 48)]  # odd widths and grids: masked columns, a partial row tile


@interpreted
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_split_mlp_and_its_sums_match_pytorch(shape, dtype, monkeypatch):
    from efficientformer.deploy import kernel_mlp, kernels

    monkeypatch.setattr(kernels, "FAST_GELU", False)  # exact GELU, as the float64 reference
    torch.manual_seed(0)
    batch, channels, height, width, hidden = shape
    m = channels_last(batch, channels, height, width).to(dtype)
    w1, b1 = (torch.randn(hidden, channels) / channels ** 0.5).to(dtype), (torch.randn(hidden) * 0.1).to(dtype)
    w2, b2 = (torch.randn(channels, hidden) / hidden ** 0.5).to(dtype), (torch.randn(channels) * 0.1).to(dtype)
    mix = torch.rand(channels).to(dtype)
    parts = kernel_mlp.mlp_split_launch(m, w1, b1, kernel_mlp.prepare_weights(w2), b2, 0)
    assert parts.dtype == torch.float32
    assert parts.shape == kernel_mlp.partials_shape(m, hidden) == (kernel_mlp.split_config(
        channels, hidden, batch * height * width)[2], batch * height * width, channels)
    expected = reference_block(m, w1, b1, w2, b2)
    out = kernel_mlp.sum_partials_launch(parts, m)
    mixed = kernel_mlp.sum_pool_lerp_launch(parts, m, mix, 3)
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: the output's own rounding, about 4e-3
    for got, want in ((out, expected), (mixed, reference_mix(expected, mix))):
        assert got.shape == m.shape and got.dtype == dtype
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert rel(got, want) < tol
    # in float32 the sum of the partials is the block's output before its last rounding
    assert rel(parts.double().sum(0), expected.permute(0, 2, 3, 1).reshape(-1, channels)) < (
        1e-5 if dtype == torch.float32 else 5e-3)


@interpreted
@pytest.mark.parametrize("config", [(16, 16, 1, 4, 2), (32, 32, 5, 4, 2), (64, 16, 10, 4, 2)])
def test_every_tiling_gives_the_same_block_and_repeats_bit_for_bit(config):
    """One split or ten, 16-row or 64-row tiles: the same output within float32 rounding; the same call twice
    gives the same bits (the partials are summed in a fixed order, no atomics)."""
    from efficientformer.deploy import kernel_mlp

    torch.manual_seed(1)
    m = channels_last(3, 40, 5, 7)
    w1, b1, w2t, b2 = torch.randn(160, 40) / 7, torch.randn(160), torch.randn(160, 40) / 13, torch.randn(40)
    base = kernel_mlp.sum_partials_launch(kernel_mlp.mlp_split_launch(m, w1, b1, w2t, b2, 0), m)
    parts = kernel_mlp.mlp_split_launch(m, w1, b1, w2t, b2, 0, config)
    assert parts.shape[0] == config[2]
    out = kernel_mlp.sum_partials_launch(parts, m)
    assert rel(out, base) < 1e-6
    again = kernel_mlp.sum_partials_launch(kernel_mlp.mlp_split_launch(m, w1, b1, w2t, b2, 0, config), m)
    assert torch.equal(out, again)
    with pytest.raises(ConfigError, match="SPLITS x BLOCK_H must divide"):
        kernel_mlp.mlp_split_launch(m, w1, b1, w2t, b2, 0, (16, 64, 3, 4, 2))


def _tiny_fused():
    from conftest import tiny_settings

    from efficientformer import EfficientFormerConfig, EfficientFormerForImageClassificationWithTeacher
    from efficientformer.benchmarking import randomize_
    from efficientformer.deploy.optimize import fuse

    # three Meta4D blocks in stage 3 and two in stage 4: partials handed on twice, then summed, per stage
    config = EfficientFormerConfig(**{**tiny_settings("gpu"), "depths": [1, 1, 3, 3], "num_meta3d_blocks": 1})
    return fuse(randomize_(EfficientFormerForImageClassificationWithTeacher(config)).eval()).to(
        memory_format=torch.channels_last)


@interpreted
def test_network_with_split_kernels_matches_the_cublas_path(monkeypatch):
    from efficientformer.deploy import kernels
    from efficientformer.deploy.optimize import FusedMeta4D, _chain_small_mlp

    monkeypatch.setattr(kernels, "FAST_GELU", False)
    torch.manual_seed(2)
    plain, fused = _tiny_fused(), _tiny_fused()
    fused.load_state_dict(plain.state_dict())
    _chain_small_mlp(fused, max_rows=64)
    blocks = [b for b in fused.convs if isinstance(b, FusedMeta4D)]
    assert all(b.small_mlp for b in blocks)
    # handed on within a stage, summed at its end (before a Downsample, before the Meta3D)
    assert [b.small_handoff for b in blocks][-5:] == [True, True, False, True, False]
    with torch.no_grad():
        for batch in (1, 3, 5):  # 64x64 images: stage 3 has 16 rows per image, so batch 5 keeps cuBLAS there
            x = torch.randn(batch, 3, 64, 64).contiguous(memory_format=torch.channels_last)
            assert rel(fused(x), plain(x)) < 1e-5
        # a block past the threshold takes the partials of the block before, sums them and runs cuBLAS
        blocks[-4].small_max_rows = 0
        x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
        assert rel(fused(x), plain(x)) < 1e-5


@interpreted
def test_network_with_split_kernels_compiles_as_one_graph(monkeypatch):
    """The ops are opaque to torch.compile (fullgraph, static shapes): the handed-on partials trace too."""
    from efficientformer.deploy.optimize import _chain_small_mlp

    torch.manual_seed(3)
    fused = _tiny_fused()
    _chain_small_mlp(fused, max_rows=64)
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True, dynamic=False)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert rel(compiled(x), fused(x)) < 1e-6
