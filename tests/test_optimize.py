"""efficientformer.optimize (module efficientformer.deploy.optimize): the folded inference network computes what the model computes, leaves the
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
from efficientformer.benchmarking import randomize_
from efficientformer.deploy.optimize import FusedEfficientFormer, fuse, optimize

from conftest import tiny_settings  # noqa: E402

TINY = tiny_settings("optimize")


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


def test_chained_residuals_compute_the_same_function():
    """The pairing of optimize(triton_pool=True): a matrix-product Meta4D block hands (mixed, mlp output) to the
    next, which adds, pools and mixes (on the GPU in one Triton kernel); on the CPU the same function."""
    from efficientformer.deploy.optimize import _chain_pool_kernels

    model = tiny()
    fast = optimize(model)
    _chain_pool_kernels(fast.fused)
    assert sum(getattr(block, "defer_residual", False) for block in fast.fused.convs) == 1  # stage 2 of TINY
    x = torch.randn(2, 3, 64, 64)
    assert rel(fast(x), outputs(model, x)) < 1e-4


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
    import efficientformer.deploy.export  # noqa: F401  (importing the modules must not shadow the functions)
    import efficientformer.deploy.optimize

    model = tiny()
    assert efficientformer.optimize is efficientformer.deploy.optimize.optimize
    assert efficientformer.export is efficientformer.deploy.export.export
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
    from efficientformer.benchmarking import format_table, run_benchmark

    rows = run_benchmark(tiny(), device="cpu", batch_size=2, image_size=64, compare=None,
                         modes=["eager", "fused"], min_time=0.01, log=None)
    assert [r.mode for r in rows] == ["eager", "fused"]
    assert all(r.max_rel_err < 1e-4 and r.latency_ms > 0 and r.throughput > 0 for r in rows)
    table = format_table(rows)
    assert "| ours | fused | fp32 |" in table


def test_timm_twin_has_the_same_function():
    pytest.importorskip("timm")
    from efficientformer.benchmarking import build_model, timm_twin

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


# ------------------------------------------------------------------ any sequence of shapes (issue 15)
def test_batches_run_as_pieces_of_the_buckets():
    from efficientformer.deploy.optimize import plan_batches

    buckets = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    for batch in [1, 3, 5, 31, 33, 129, 255, 256, 300, 1000]:
        for pad_up_to in (0, 32):
            pieces = plan_batches(batch, buckets, pad_up_to)
            assert sum(images for images, _ in pieces) == batch
            assert all(bucket in buckets and images <= bucket for images, bucket in pieces)
            padded = sum(bucket - images for images, bucket in pieces)
            assert padded == 0 if pad_up_to == 0 else padded < 32  # the CPU never computes padded rows
    assert plan_batches(5, buckets, 32) == [(5, 8)]  # graphs: one padded replay
    assert plan_batches(5, buckets, 0) == [(4, 4), (1, 1)]
    assert plan_batches(300, buckets, 32) == [(256, 256), (32, 32), (12, 16)]


class _CountingCompiler:
    """Stands in for torch.compile's result: runs the fused network and records the shapes it saw."""

    def __init__(self, fused, fail=False):
        self.fused, self.fail, self.shapes = fused, fail, []

    def __call__(self, x):
        if self.fail:
            raise RuntimeError("inductor broke")
        self.shapes.append(tuple(x.shape))
        return self.fused(x)


def test_shapes_past_max_shapes_run_uncompiled_with_one_warning():
    model = tiny()
    fast = optimize(model, compile=True, max_shapes=2, batch_buckets=(1, 4))
    fast._compiled = counting = _CountingCompiler(fast.fused)
    with pytest.warns(RuntimeWarning, match="run uncompiled") as caught:
        for batch, size in [(4, 64), (1, 64), (4, 96), (5, 96), (3, 64)]:
            x = torch.randn(batch, 3, size, size)
            assert rel(fast(x), outputs(model, x)) < 1e-4
    assert len(caught) == 1
    assert {s[0] for s in counting.shapes} == {1, 4} and all(s[2] == 64 for s in counting.shapes)


def test_a_failing_compiler_falls_back_with_one_warning():
    model = tiny()
    fast = optimize(model, compile=True)
    fast._compiled = _CountingCompiler(fast.fused, fail=True)
    with pytest.warns(RuntimeWarning, match="compiling for batch 2 at 64x64 failed") as caught:
        for batch in (2, 2, 3):
            x = torch.randn(batch, 3, 64, 64)
            assert rel(fast(x), outputs(model, x)) < 1e-4
    assert len(caught) == 1


def test_a_new_image_size_keeps_the_compiled_shapes_valid():
    """Building the attention bias of a new token grid must not change what torch.compile guards on (it was a
    new registered buffer, which recompiled every shape compiled before)."""
    from torch._dynamo.utils import counters

    fused = fuse(tiny())
    run = torch.compile(lambda x: fused(x), backend="eager", fullgraph=True, dynamic=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        run(x)
        before = counters["stats"]["unique_graphs"]
        for block in fused.blocks3d:
            block.add_grid((3, 2))
        run(x)
    assert counters["stats"]["unique_graphs"] == before


@pytest.mark.slow
def test_compiled_models_take_twenty_shapes_and_dtypes():
    """The ninth distinct shape or dtype used to fail (FailOnRecompileLimitHit), counted across all optimized
    models of the process; now any sequence works: 20 shapes over two image sizes and four input dtypes,
    for a float32 and a bfloat16 model, with no fallback warning (6 compiles: about 30 s on 2 idle cores)."""
    import warnings

    model = tiny()
    fast = optimize(model, compile=True, batch_buckets=(1, 16))  # few buckets: each compile takes seconds
    fast_bf16 = optimize(model, compile=True, dtype="bf16", batch_buckets=(1, 16))
    gen = torch.Generator().manual_seed(0)
    shapes = [(b, s) for s in (64, 96) for b in (1, 2, 3, 4, 5, 7, 9, 16, 17, 20)]
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for i, (batch, size) in enumerate(shapes):
            x = torch.randn(batch, 3, size, size, generator=gen)
            expected = outputs(model, x)
            assert rel(fast(x.to(dtypes[i % 4])), expected) < (1e-4 if i % 4 < 2 else 3e-2)
            if i % 10 == 0:
                assert rel(fast_bf16(x), expected) < 3e-2
    assert len(fast._compiled_keys) == 4 and not fast._eager_keys
    assert fast.setup_seconds > 0


def test_defaults_pick_the_cpu_mode_and_report_setup(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="efficientformer.optimize"):
        fast = optimize(tiny())
    assert (fast.dtype, fast.compile_mode, fast.cuda_graphs) == (torch.float32, None, False)
    assert not any(getattr(block, "triton", False) for block in fast.fused.convs)
    assert fast.setup_seconds > 0 and "built in" in caplog.text
    assert fast.warmup(batch_sizes=(1, 2)) >= 0  # nothing to compile: no cost, no error


def test_bench_compares_with_timm_only_when_it_can(fixtures_dir, capsys, monkeypatch):
    import importlib.util

    from efficientformer.benchmarking import timm_unavailable
    from efficientformer.cli import main

    assert "L1, L3 and L7" in timm_unavailable(tiny())
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real_find_spec(name, *a))
    assert timm_unavailable(tiny()) == "timm is not installed"
    # the default --compare auto: no timm here, so a note and our rows (it used to fail)
    assert main(["bench", "--model", str(fixtures_dir / "hf-tiny"), "--modes", "fused", "--no-throughput",
                 "--min-time", "0.01"]) == 0
    captured = capsys.readouterr()
    assert "timm is not installed: measuring ours only" in captured.err
    assert "| ours | fused | fp32 |" in captured.out and "| timm |" not in captured.out


def test_bench_silences_autotuning_tables():
    from torch._inductor import select_algorithm

    from efficientformer.benchmarking import quiet_compiler

    quiet_compiler()
    assert select_algorithm.PRINT_AUTOTUNE is False


def test_graph_replay_pads_to_buckets_and_keeps_at_most_max_graphs(monkeypatch):
    """The CUDA-graph policy, on the CPU with a stand-in for graph capture: 20 shapes, each batch padded up
    (or split) to the buckets, at most `max_graphs` graphs kept, every result equal to the eager model's."""
    import efficientformer.deploy.optimize as inference

    class FakeGraph:  # replay() recomputes into the static output, as a captured graph would
        def __init__(self, fn, static_in):
            self.fn, self.static_in = fn, static_in
            self.static_out = fn(static_in)

        def replay(self):
            self.static_out.copy_(self.fn(self.static_in))

    captured = []

    def fake_capture(fn, example):
        captured.append(tuple(example.shape))
        graph = FakeGraph(fn, example)
        return graph, example, graph.static_out

    monkeypatch.setattr(inference, "capture_cuda_graph", fake_capture)
    model = tiny()
    fast = inference.OptimizedEfficientFormer(fuse(model), device=torch.device("cpu"), dtype=torch.float32,
                                              channels_last=True, compile=None, cuda_graphs=True, max_graphs=3)
    shapes = [(b, s) for s in (64, 80) for b in (1, 2, 3, 5, 8, 13, 16, 31, 40, 70)]
    for batch, size in shapes:
        x = torch.randn(batch, 3, size, size)
        assert rel(fast(x), outputs(model, x)) < 1e-4
    assert len(fast._graphs) <= 3
    assert {shape[0] for shape in captured} <= {1, 2, 4, 8, 16, 32, 64}  # 70 = 64 + 6 padded to 8
    assert (4, 3, 64, 64) in captured  # batch 3 ran padded to 4


def test_bench_builds_the_class_a_checkpoint_holds(tmp_path):
    """`efficientformer bench --model FOLDER` times the model the folder holds: a single-head checkpoint is not
    given a random distillation head (which would average noise into its logits)."""
    from conftest import tiny_config

    from efficientformer.benchmarking import build_model

    saved = EfficientFormerForImageClassification(tiny_config("optimize")).eval()
    saved.save_pretrained(tmp_path / "single")
    built = build_model(str(tmp_path / "single"))
    assert type(built) is EfficientFormerForImageClassification
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(built(x).logits, saved(x).logits, atol=1e-6)
    assert type(build_model("l1")) is EfficientFormerForImageClassificationWithTeacher
