"""optimize() on a CUDA GPU: the Triton Meta4D kernel, the default mode (bf16, compile, CUDA graphs, Triton,
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


@pytest.mark.parametrize("split, fast_gelu", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("channels, size, batch", [(48, 56, 16), (96, 28, 16), (96, 13, 3)])  # 13: partial tiles
def test_triton_kernel_variants_match_the_pytorch_block(l1, channels, size, batch, split, fast_gelu, monkeypatch):
    """Exact column groups (48 = 32 + 16, 96 = 64 + 32) and the tanh-form GELU stay within 1e-2 of float32."""
    pytest.importorskip("triton")
    from efficientformer.deploy import kernels
    monkeypatch.setattr(kernels, "SPLIT_CHANNELS", split)
    monkeypatch.setattr(kernels, "FAST_GELU", fast_gelu)
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


def test_default_mode_is_the_fast_one_and_close_to_float32(l1):
    fast = optimize(l1, device="cuda")
    assert fast.dtype == torch.bfloat16 and fast.compile_mode == "default" and fast.cuda_graphs
    assert any(getattr(b, "triton", False) for b in fast.fused.convs) == bool(pytest.importorskip("triton"))
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
