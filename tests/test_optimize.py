"""efficientformer.optimize (module efficientformer.inference): the folded inference network computes what the model computes, leaves the
model untouched, and refuses settings it cannot honour; plus the benchmark harness on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import efficientformer
from efficientformer import (
    ConfigError,
    EfficientFormerConfig,
    EfficientFormerForImageClassification,
    EfficientFormerForImageClassificationWithTeacher,
    EfficientFormerModel,
    InputError,
)
from efficientformer.bench import randomize_
from efficientformer.inference import FusedEfficientFormer, fuse, optimize

TINY = dict(depths=[1, 2, 1, 3], hidden_sizes=[8, 16, 24, 32], dim=32, key_dim=8, num_attention_heads=2,
            attention_ratio=2, num_meta3d_blocks=2, num_labels=5, image_size=64, resolution=2)


def tiny(cls=EfficientFormerForImageClassificationWithTeacher, **overrides):
    return randomize_(cls(EfficientFormerConfig(**{**TINY, **overrides})), seed=3).eval()


def outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return out.last_hidden_state if isinstance(model, EfficientFormerModel) else out.logits


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("cls", [EfficientFormerForImageClassificationWithTeacher,
                                 EfficientFormerForImageClassification, EfficientFormerModel])
@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_matches_eager_fp32(cls, channels_last):
    model = tiny(cls)
    fast = optimize(model, image_size=64, channels_last=channels_last)
    for size in [(64, 64), (96, 72)]:  # the prepared grid, and another one (bias resized as the model does)
        x = torch.randn(3, 3, *size)
        assert rel(fast(x), outputs(model, x)) < 1e-4


def test_folding_covers_every_option():
    # no layer scale, tanh GELU, a 5x5 pooling window, no downsampling between two stages
    model = tiny(use_layer_scale=False, hidden_act="gelu_new", pool_size=5, downsamples=[True, False, True, True],
                 hidden_sizes=[8, 16, 16, 32])
    x = torch.randn(2, 3, 64, 64)
    assert rel(optimize(model)(x), outputs(model, x)) < 1e-4


def test_matmul_attention_and_gelu_epilogue_compute_the_same_function():
    """The GPU-oriented options: explicit attention and GELU inside the matrix product (exact GELU on the CPU),
    in float32 equal to the eager model, also at a resized token grid; a non-GELU model ignores the epilogue."""
    model = tiny()
    default = optimize(model)  # on the CPU: SDPA and separate GELU (the GPU defaults are matmul + epilogue)
    assert default.fused.blocks3d[0].attention == "sdpa" and not default.fused.blocks3d[0].gelu_epilogue
    fast = optimize(model, attention="matmul", gelu_epilogue=True)
    assert all(block.gelu_epilogue for block in fast.fused.blocks3d)
    for size in [(64, 64), (96, 72)]:
        x = torch.randn(2, 3, *size)
        assert rel(fast(x), outputs(model, x)) < 1e-5
    relu_model = tiny(hidden_act="relu")
    relu_fast = optimize(relu_model, gelu_epilogue=True)
    assert not any(block.gelu_epilogue for block in relu_fast.fused.blocks3d)
    x = torch.randn(2, 3, 64, 64)
    assert rel(relu_fast(x), outputs(relu_model, x)) < 1e-5


def test_source_model_is_untouched_and_still_trains():
    model = tiny()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize(model, image_size=64)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    loss = model(torch.randn(2, 3, 64, 64), labels=torch.tensor([0, 4])).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_fused_is_inference_only():
    fused = fuse(tiny())
    assert isinstance(fused, FusedEfficientFormer) and not fused.training
    with pytest.raises(ConfigError, match="inference only"):
        fused.train()
    assert not any(p.requires_grad for p in fused.parameters())


def test_matches_transformers_golden(fixtures_dir):
    model = EfficientFormerForImageClassificationWithTeacher.from_pretrained(str(fixtures_dir / "hf-tiny"))
    expected = np.load(fixtures_dir / "hf-tiny" / "expected.npz")
    logits = optimize(model)(torch.from_numpy(expected["pixel_values"]))
    np.testing.assert_allclose(logits.numpy(), expected["teacher.logits"], atol=1e-4, rtol=1e-4)


def test_bf16_on_cpu_is_close():
    model = tiny()
    x = torch.randn(2, 3, 64, 64)
    out = optimize(model, dtype="bf16")(x)
    assert out.dtype == torch.bfloat16
    assert rel(out, outputs(model, x)) < 3e-2


def test_package_level_functions_stay_functions():
    import efficientformer.exporters  # noqa: F401  (importing the modules must not shadow the functions)
    import efficientformer.inference

    model = tiny()
    assert efficientformer.optimize is efficientformer.inference.optimize
    assert efficientformer.export is efficientformer.exporters.export
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(efficientformer.optimize(model)(x), optimize(model)(x))


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": "int4"}, "dtype"),
    ({"compile": "fastest"}, "torch.compile mode"),
    ({"cuda_graphs": True, "device": "cpu"}, "CUDA device"),
    ({"kernels": "cuda"}, "kernels"),
    ({"attention": "flash"}, "attention"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        optimize(tiny(), **kwargs)


def test_bad_inputs_are_refused():
    fast = optimize(tiny())
    with pytest.raises(InputError, match="4-D"):
        fast(torch.randn(3, 64, 64))
    with pytest.raises(InputError, match="channels"):
        fast(torch.randn(1, 4, 64, 64))
    with pytest.raises(InputError, match="floating point"):
        fast(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="EfficientFormer"):
        optimize(torch.nn.Linear(2, 2))


def test_benchmark_rows_report_agreement():
    from efficientformer.bench import format_table, run_benchmark

    rows = run_benchmark(tiny(), device="cpu", batch_size=2, image_size=64, compare=None,
                         modes=["eager", "fused"], min_time=0.01, log=None)
    assert [r.mode for r in rows] == ["eager", "fused"]
    assert all(r.max_rel_err < 1e-4 and r.latency_ms > 0 and r.throughput > 0 for r in rows)
    table = format_table(rows)
    assert "| ours | fused | fp32 |" in table


def test_timm_twin_has_the_same_function():
    pytest.importorskip("timm")
    from efficientformer.bench import build_model, timm_twin

    model = build_model("l1")
    twin = timm_twin(model)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert rel(twin(x), model(x).logits) < 1e-5


def test_bench_command_prints_a_table(fixtures_dir, capsys):
    from efficientformer.cli import main

    assert main(["bench", "--model", str(fixtures_dir / "hf-tiny"), "--modes", "fused", "--compare", "none", "--no-throughput",
                 "--min-time", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "| ours | fused | fp32 |" in out and "torch=" in out
