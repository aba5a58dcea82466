"""optimize() on a CUDA GPU: the Triton kernels (Meta4D block, stem, add + pool + lerp), the default mode (bf16, compile, CUDA graphs, Triton,
matmul attention, GELU epilogue) and CUDA graphs over many shapes. Marked `gpu`; skipped without CUDA (CI),
run on the H200 by benchmarks/gpu_bench.py."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from efficientformer import EfficientFormerConfig, EfficientFormerForImageClassificationWithTeacher
from efficientformer.benchmarking import build_model, randomize_
from efficientformer.deploy.optimize import FusedMeta4D, fuse, optimize

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from conftest import tiny_settings  # noqa: E402

TINY = tiny_settings("gpu")


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture(scope="module")
def l1():
    return build_model("l1")


def reference(model, x):
    with torch.no_grad():
        return model.cuda().float()(x.cuda().float()).logits


@pytest.mark.parametrize("channels, size", [(48, 56), (96, 28), (64, 19)])  # 19: a partial last tile
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_kernel_matches_the_pytorch_block(l1, channels, size, dtype):
    pytest.importorskip("triton")
    model = l1 if channels != 64 else randomize_(EfficientFormerForImageClassificationWithTeacher(
        EfficientFormerConfig(**{**TINY, "hidden_sizes": [64, 96, 112, 128]})))
    fused = fuse(model).cuda()
    block = next(b for b in fused.convs if isinstance(b, FusedMeta4D) and b.w1.shape[1] == channels)
    x = torch.randn(64, channels, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = block(x)  # float32 PyTorch path
        block.to(dtype)
        assert block.enable_triton()
        out = block(x.to(dtype))
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.isfinite(out).all()
    assert rel(out, expected) < 1e-2


@pytest.mark.parametrize("split, fast_gelu, tanh", [(True, False, False), (False, True, True), (True, True, False),
                                                    (True, True, True)])
@pytest.mark.parametrize("channels, size, batch", [(48, 56, 16), (96, 28, 16), (96, 13, 3)])  # 13: partial tiles
def test_triton_kernel_variants_match_the_pytorch_block(l1, channels, size, batch, split, fast_gelu, tanh,
                                                        monkeypatch):
    """Exact column groups (48 = 32 + 16, 96 = 64 + 32) and the tanh-form GELU (exp2 form or PTX's tanh
    instruction) stay within 1e-2 of float32."""
    pytest.importorskip("triton")
    from efficientformer.deploy import kernels
    monkeypatch.setattr(kernels, "SPLIT_CHANNELS", split)
    monkeypatch.setattr(kernels, "FAST_GELU", fast_gelu)
    monkeypatch.setattr(kernels, "TANH_INSTRUCTION", tanh)
    block = next(b for b in fuse(l1).cuda().convs if isinstance(b, FusedMeta4D) and b.w1.shape[1] == channels)
    x = torch.randn(batch, channels, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = block(x)
        block.to(torch.bfloat16)
        assert block.enable_triton()
        block.triton_min_rows = 0
        out = block(x.to(torch.bfloat16))
    assert block.w1t.shape[0] == (channels if split else kernels.padded(channels))
    assert out.is_contiguous(memory_format=torch.channels_last) and rel(out, expected) < 1e-2


@pytest.mark.parametrize("name, batch, size", [("l1", 4, (224, 224)), ("l1", 3, (61, 50)), ("l7", 2, (97, 64))])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_stem_matches_the_pytorch_stem(name, batch, size, dtype):
    """Both stem convs in one kernel: any input layout and dtype, odd sizes (partial tiles, edge padding)."""
    pytest.importorskip("triton")
    stem = fuse(build_model(name)).stem.cuda()
    x = torch.randn(batch, 3, *size, device="cuda")
    with torch.no_grad():
        expected = stem(x)
        stem.to(dtype)
        assert stem.enable_triton()
        for inp in (x, x.to(dtype).contiguous(memory_format=torch.channels_last)):
            out = stem(inp)
            assert out.shape == expected.shape and out.dtype == dtype
            assert out.is_contiguous(memory_format=torch.channels_last) and rel(out, expected) < 1e-2


@pytest.mark.parametrize("shape", [(64, 224, 14, 14), (3, 448, 7, 7), (2, 40, 5, 9)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_add_pool_lerp_kernel_matches_pytorch(shape, dtype):
    """Stages 3-4: the block before's residual add, the pooling and the lerp in one kernel."""
    pytest.importorskip("triton")
    import torch.nn.functional as F

    from efficientformer.deploy import kernels

    m = torch.randn(*shape, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randn(*shape, device="cuda").contiguous(memory_format=torch.channels_last)
    mix = torch.rand(shape[1], device="cuda")
    x = m + y
    expected = torch.lerp(x, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), mix.view(-1, 1, 1))
    out = kernels.add_pool_lerp_launch(m.to(dtype), y.to(dtype), mix.to(dtype), 3)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert rel(out, expected) < 1e-2


def test_default_mode_is_the_fast_one_and_close_to_float32(l1):
    fast = optimize(l1, device="cuda")
    assert fast.dtype == torch.bfloat16 and fast.compile_mode == "default" and fast.cuda_graphs
    assert any(getattr(b, "triton", False) for b in fast.fused.convs) == bool(pytest.importorskip("triton"))
    assert fast.fused.stem.triton and any(getattr(b, "pool_kernel", False) for b in fast.fused.convs)
    for batch in (8, 64):
        x = torch.randn(batch, 3, 224, 224)
        assert rel(fast(x), reference(l1, x)) < 1e-2
    assert fast.setup_seconds > 0


def test_fp16_is_close_to_float32(l1):
    fast = optimize(l1, device="cuda", dtype="fp16")
    x = torch.randn(32, 3, 224, 224)
    assert rel(fast(x), reference(l1, x)) < 1e-2


def test_graphs_take_twenty_shapes_and_keep_at_most_max_graphs():
    model = randomize_(EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig(**TINY))).eval()
    fast = optimize(model, device="cuda", compile=False, max_graphs=4)
    shapes = [(b, s) for s in (64, 96) for b in (1, 2, 3, 5, 8, 13, 16, 31, 40, 300)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for batch, size in shapes:
            x = torch.randn(batch, 3, size, size)
            assert rel(fast(x), reference(model, x)) < 2e-2
    assert len(fast._graphs) <= 4


def test_compiled_graphs_across_models_and_dtypes():
    """Two optimized models (bf16, fp16) of one process, 12 shapes each: no recompile-limit failure."""
    model = randomize_(EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig(**TINY))).eval()
    models = [optimize(model, device="cuda", dtype=dtype, batch_buckets=(1, 4, 16)) for dtype in ("bf16", "fp16")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for fast in models:
            for batch in (1, 2, 3, 4, 9, 16):
                for size in (64, 96):
                    x = torch.randn(batch, 3, size, size)
                    assert rel(fast(x), reference(model, x)) < 2e-2
            assert len(fast._compiled_keys) == 6
