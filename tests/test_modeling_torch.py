"""PyTorch models: parity with transformers 4.57.6 goldens, and the defects of the old code fixed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from efficientformer import (  # noqa: E402
    CheckpointError,
    EfficientFormerConfig,
    EfficientFormerForImageClassification,
    EfficientFormerForImageClassificationWithTeacher,
    EfficientFormerModel,
    InputError,
)
from efficientformer.models.attention_bias import bias_index, interpolation_matrix  # noqa: E402
from efficientformer.models.pytorch.layers import DropPath  # noqa: E402

from conftest import HF_FOLDERS, randomize, tiny_config  # noqa: E402 - the shared tiny config and randomizer
from conftest import assert_backbone_matches  # noqa: E402 - the parity harness both backends' tests use
from conftest import assert_close as close  # noqa: E402


# ---------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("folder", HF_FOLDERS)
@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_every_golden_matches(fixtures_dir, tmp_path, folder, weights):
    source = fixtures_dir / folder
    for name in ("config.json", "preprocessor_config.json", weights):  # one weights format at a time
        (tmp_path / name).write_bytes((source / name).read_bytes())
    golden = np.load(source / "expected.npz")
    pixels = torch.from_numpy(golden["pixel_values"])

    model = EfficientFormerModel.from_pretrained(tmp_path)
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True, output_attentions=True)
    assert_backbone_matches(out, golden, "model")

    teacher = EfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path)
    with torch.no_grad():
        out = teacher(pixels)
    for field in ("logits", "cls_logits", "distillation_logits"):
        close(out[field], golden[f"teacher.{field}"])

    classifier = EfficientFormerForImageClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        out = classifier(pixels, labels=torch.from_numpy(golden["labels"]))
        close(out.logits, golden["classification.logits"])
        close(out.loss, golden["classification.loss"])
        for problem, labels in (("multi_label_classification", "labels_multi_label"),
                                ("regression", "labels_regression")):
            classifier.config.problem_type = problem
            loss = classifier(pixels, labels=torch.from_numpy(golden[labels])).loss
            close(loss, golden[f"classification.loss.{problem}"])
    classifier.config.problem_type = None
    classifier.train()
    with torch.no_grad():
        close(classifier(pixels).logits, golden["classification.train_mode.logits"])


def test_loads_by_hub_id_offline(fixtures_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    golden = np.load(fixtures_dir / "hf-tiny" / "expected.npz")
    model = EfficientFormerForImageClassificationWithTeacher.from_pretrained(
        "efficientformer-fixtures/hf-tiny", cache_dir=str(fixtures_dir / "hub"))
    with torch.no_grad():
        close(model(torch.from_numpy(golden["pixel_values"])).logits, golden["teacher.logits"])


def test_missing_hub_id_offline_says_so(fixtures_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="offline"):
        EfficientFormerModel.from_pretrained("efficientformer-fixtures/not-there", cache_dir=str(fixtures_dir / "hub"))


def test_unreachable_hub_uses_the_cache_at_once_and_says_why_otherwise(fixtures_dir, monkeypatch):
    """Without network (here: an endpoint that does not resolve) cached ids load with no HF_HUB_OFFLINE, and
    missing ones fail at once, naming the host, instead of after huggingface_hub's retries."""
    import time

    from efficientformer.checkpoints import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    hub._unreachable_hub.cache_clear()
    try:
        model = EfficientFormerForImageClassificationWithTeacher.from_pretrained(
            "efficientformer-fixtures/hf-tiny", cache_dir=str(fixtures_dir / "hub"))
        assert model.config.num_labels == 3
        started = time.perf_counter()
        with pytest.raises(CheckpointError, match="hub.invalid cannot be reached"):
            EfficientFormerModel.from_pretrained("efficientformer-fixtures/not-there", cache_dir=str(fixtures_dir / "hub"))
        assert time.perf_counter() - started < 5
    finally:
        hub._unreachable_hub.cache_clear()


def test_outputs_behave_like_transformers():
    model = EfficientFormerForImageClassificationWithTeacher(tiny_config()).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert list(out.keys()) == ["logits", "cls_logits", "distillation_logits"]
    assert out[0] is out.logits and out["cls_logits"] is out.cls_logits and len(out.to_tuple()) == 3
    torch.testing.assert_close(out.logits, (out.cls_logits + out.distillation_logits) / 2)
    as_tuple = model(torch.randn(2, 3, 64, 64), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 3


# ---------------------------------------------------------------------------------- saving
@pytest.mark.parametrize("safe", [True, False])
def test_save_and_reload_round_trip(tmp_path, safe):
    model = randomize(EfficientFormerForImageClassificationWithTeacher(tiny_config())).eval()
    model.save_pretrained(tmp_path, safe_serialization=safe)
    weights = "model.safetensors" if safe else "pytorch_model.bin"
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "preprocessor_config.json", weights}
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "efficientformer" and saved["hidden_size"] == 32
    assert saved["architectures"] == ["EfficientFormerForImageClassificationWithTeacher"]
    if safe:
        from safetensors import safe_open

        with safe_open(tmp_path / weights, "pt") as handle:  # transformers refuses files without it
            assert handle.metadata() == {"format": "pt"}
    again = EfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, again(pixels).logits)


def test_wrong_shaped_checkpoint_is_a_clear_error(tmp_path):
    EfficientFormerForImageClassification(tiny_config()).save_pretrained(tmp_path)
    other = tiny_config(hidden_sizes=[8, 16, 24, 40], dim=40)
    with pytest.raises(CheckpointError, match="another shape.*hidden_size|another shape"):
        EfficientFormerForImageClassification.from_pretrained(tmp_path, config=other)


def test_new_label_count_reinitializes_only_the_heads(tmp_path):
    source = randomize(EfficientFormerForImageClassification(tiny_config()))
    source.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="ignore_mismatched_sizes"):
        EfficientFormerForImageClassification.from_pretrained(tmp_path, num_labels=5)
    model, info = EfficientFormerForImageClassification.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True)
    assert {k for k, _, _ in info["mismatched_keys"]} == {"classifier.weight", "classifier.bias"}
    assert model.classifier.out_features == 5 and model.config.id2label[4] == "LABEL_4"
    assert torch.equal(model.efficientformer.layernorm.weight, source.efficientformer.layernorm.weight)


def test_bare_backbone_checkpoint_into_classifier_reports_new_heads(tmp_path):
    EfficientFormerModel(tiny_config()).save_pretrained(tmp_path)
    _, info = EfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight",
                                            "distillation_classifier.bias", "distillation_classifier.weight"]


def test_torch_dtype_on_load(tmp_path):
    EfficientFormerModel(tiny_config()).save_pretrained(tmp_path)
    assert EfficientFormerModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert EfficientFormerModel.from_pretrained(tmp_path, torch_dtype="auto").dtype == torch.float32


# ---------------------------------------------------------------------------------- defects fixed
def test_with_teacher_needs_no_hidden_size():
    config = EfficientFormerConfig()
    assert "hidden_size" not in config.extra
    model = EfficientFormerForImageClassificationWithTeacher(config)
    assert model.distillation_classifier.in_features == 448


def test_drop_path_rescales_kept_samples_per_sample():
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    out = layer(torch.ones(4000, 3, 2, 2))
    per_sample = out.flatten(1)
    # each sample is either dropped entirely or kept and scaled by 1 / keep
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.25) < 0.03
    assert abs(out.mean().item() - 1.0) < 0.03  # expectation preserved
    assert torch.equal(layer.eval()(torch.ones(2, 3)), torch.ones(2, 3))


def test_drop_path_rates_rise_linearly_and_training_stays_finite():
    config = EfficientFormerConfig.from_preset("l1", num_labels=4, drop_path_rate=0.1,
                                               hidden_sizes=[8, 16, 24, 32], dim=32, hidden_size=32)
    rates = config.block_drop_path_rates()
    assert rates[0] == 0.0 and math.isclose(rates[-1], 0.1) and len(rates) == sum(config.depths)
    model = EfficientFormerForImageClassificationWithTeacher(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        loss = model(torch.randn(4, 3, 64, 64), labels=torch.tensor([0, 1, 2, 3])).loss
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_channels_last_training_computes_the_same_loss_and_gradients():
    # on channels-last memory the Meta4D MLP's 1x1 convolutions run as matrix products (layers._pointwise):
    # the same function, so the same loss, gradients and BatchNorm statistics as on contiguous NCHW memory
    torch.manual_seed(0)
    model = EfficientFormerForImageClassificationWithTeacher(tiny_config()).train()
    randomize(model)
    twin = EfficientFormerForImageClassificationWithTeacher(tiny_config()).train()
    twin.load_state_dict(model.state_dict())
    twin = twin.to(memory_format=torch.channels_last)
    x, labels = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 2])
    loss = model(x, labels=labels).loss
    loss_cl = twin(x.contiguous(memory_format=torch.channels_last), labels=labels).loss
    loss.backward()
    loss_cl.backward()
    assert abs(loss.item() - loss_cl.item()) < 1e-5
    grads = dict(twin.named_parameters())
    for name, param in model.named_parameters():
        close(grads[name].grad, param.grad, tol=1e-5)
    buffers = dict(twin.named_buffers())
    for name, buffer in model.named_buffers():  # the running statistics each BatchNorm took of the batch
        close(buffers[name], buffer, tol=1e-5)


def reference_bias(attention) -> torch.Tensor:
    return attention.attention_biases[:, attention.attention_bias_idxs]


def test_attention_bias_is_never_stale():
    model = randomize(EfficientFormerForImageClassification(tiny_config())).eval()
    attention = model.efficientformer.encoder.last_stage.meta3D_layers.blocks[0].token_mixer
    pixels = torch.randn(2, 3, 64, 64)

    def check() -> None:
        grid = (attention.resolution, attention.resolution)
        assert torch.equal(attention.bias(grid), reference_bias(attention))

    model(pixels)
    check()
    # after load_state_dict
    model.load_state_dict(randomize(EfficientFormerForImageClassification(tiny_config()), seed=1).state_dict())
    check()
    # after an optimizer step
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(pixels, labels=torch.tensor([0, 1])).loss.backward()
    before = attention.attention_biases.detach().clone()
    optimizer.step()
    assert not torch.equal(before, attention.attention_biases)
    model.eval()
    check()
    # outputs track the parameters after dtype changes and train/eval switches
    reference = model(pixels).logits
    model.train().eval()
    assert torch.equal(model(pixels).logits, reference)
    model.to(torch.float64)
    torch.testing.assert_close(model(pixels.double()).logits.float(), reference, atol=1e-5, rtol=1e-5)
    model.half()
    check()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_fp32(fixtures_dir, dtype):
    golden = np.load(fixtures_dir / "hf-small" / "expected.npz")
    model = EfficientFormerForImageClassificationWithTeacher.from_pretrained(fixtures_dir / "hf-small")
    pixels = torch.from_numpy(golden["pixel_values"])
    with torch.no_grad():
        reference = model(pixels).logits
        low = model.to(dtype)(pixels).logits  # float32 input is cast to the model's dtype
    assert low.dtype == dtype
    scale = reference.abs().max().item()
    assert (low.float() - reference).abs().max().item() < 0.05 * scale
    assert torch.equal(low.float().argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("size", [(224, 224), (256, 320), (384, 384), (100, 150)])
def test_any_input_size(fixtures_dir, size):
    model = EfficientFormerModel.from_pretrained(fixtures_dir / "hf-small")
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size), output_attentions=True)
    grid = (math.ceil(size[0] / 32), math.ceil(size[1] / 32))
    assert out.last_hidden_state.shape == (2, grid[0] * grid[1], 64)
    assert out.attentions[0].shape == (2, 4, grid[0] * grid[1], grid[0] * grid[1])
    assert torch.isfinite(out.last_hidden_state).all()


def test_bias_resizing_method():
    attention = randomize(EfficientFormerModel(tiny_config())).encoder.last_stage.meta3D_layers.blocks[0].token_mixer
    table = attention.attention_biases.detach().view(2, 7, 7).numpy()
    # trained grid: the stored table, exactly
    assert torch.equal(attention.bias((7, 7)), reference_bias(attention))
    # other grids: separable linear interpolation with aligned corners, as every backend computes it
    for grid in [(8, 10), (12, 12), (3, 5), (1, 2)]:
        expected = interpolation_matrix(grid[0], 7) @ table @ interpolation_matrix(grid[1], 7).T
        expected = expected.reshape(2, -1)[:, bias_index(*grid)]
        np.testing.assert_allclose(attention.bias(grid).detach().numpy(), expected, atol=1e-6)
    # corners are kept: offset 0 and the largest offset keep their trained values
    resized = attention.bias((12, 12)).detach().numpy()
    assert np.allclose(resized[:, 0, 0], table[:, 0, 0], atol=1e-6)
    assert np.allclose(resized[:, 0, -1], table[:, -1, -1], atol=1e-6)


class LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels, return_dict=False)[0]


def test_torch_compile_fullgraph_and_jit_trace():
    model = randomize(EfficientFormerForImageClassificationWithTeacher(tiny_config())).eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(pixels).logits
        traced = torch.jit.trace(LogitsOnly(model), pixels)
        torch.testing.assert_close(traced(pixels), reference)
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(pixels).logits, reference)


# -------------------------------------------------------------------------------- dense features
def test_forward_intermediates_for_dense_tasks():
    model = EfficientFormerModel(tiny_config()).eval()
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(2, 3, 128, 96), intermediates_only=True)
        assert [tuple(m.shape) for m in maps] == [(2, 8, 32, 24), (2, 16, 16, 12), (2, 24, 8, 6), (2, 32, 4, 3)]
        picked = model.forward_intermediates(torch.randn(1, 3, 64, 64), out_indices=(1, -1))
    assert [m.shape[1] for m in picked] == [16, 32]
    with pytest.raises(InputError, match="out_indices"):
        model.forward_intermediates(torch.randn(1, 3, 64, 64), out_indices=(4,))


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("pixels, message", [
    (torch.randn(2, 1, 64, 64), r"1 channel\(s\) on axis 1 but the model takes 3"),
    (torch.randn(3, 64, 64), "4-D"),
    (torch.randn(1, 2, 3, 64, 64), "4-D"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating point"),
    (torch.randn(1, 3, 16, 64), "too small"),
    (np.zeros((1, 3, 64, 64), dtype=np.float32), "torch.Tensor"),
    (torch.randn(0, 3, 224, 224), r"no images \(batch size 0\)"),
    (torch.full((2, 3, 64, 64), float("nan")), "NaN or infinite"),
    (torch.randn(2, 3, 64, 64).index_put_((torch.tensor(1), torch.tensor(2)), torch.tensor(float("-inf"))),
     "NaN or infinite"),
])
def test_bad_pixel_values_are_refused_before_compute(pixels, message):
    model = EfficientFormerForImageClassification(tiny_config())
    ran = []
    model.efficientformer.patch_embed.register_forward_pre_hook(lambda *args: ran.append(True))
    with pytest.raises(InputError, match=message):
        model(pixels)
    with pytest.raises(InputError, match=message):
        model.efficientformer.forward_intermediates(pixels)
    assert not ran


def test_finite_check_counts_values_not_their_sum():
    """Finite pixels whose sum overflows float32 are not refused: only a NaN or inf value is."""
    model = EfficientFormerModel(tiny_config()).eval()
    with torch.no_grad():
        out = model(torch.full((1, 3, 64, 64), 3e38))
    assert out.last_hidden_state.shape == (1, 4, 32)


def test_input_checks_stay_out_of_exported_graphs():
    """The value checks (finite pixels) run in eager mode only: torch.export neither fails on them nor
    keeps them, so the exported program runs whatever it is given."""
    model = LogitsOnly(EfficientFormerForImageClassification(tiny_config(depths=[1, 1, 1, 1], num_meta3d_blocks=1)))
    program = torch.export.export(model.eval(), (torch.randn(1, 3, 32, 32),))
    assert torch.isnan(program.module()(torch.full((1, 3, 32, 32), float("nan")))).all()


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([0, 3]), "0..2"),
    (torch.tensor([-1, 0]), "0..2"),
    (torch.tensor([[0], [1]]), "shape"),
    (torch.tensor([0, 1, 2]), "3 entries for a batch of 2"),
    (torch.zeros(2, 4), "shape"),
    (torch.tensor(1), "a single value for a batch of 2"),
    ([0, 1], "torch.Tensor"),
])
@pytest.mark.parametrize("cls", [EfficientFormerForImageClassification,
                                 EfficientFormerForImageClassificationWithTeacher])
def test_bad_labels_are_refused_before_the_forward(cls, labels, message):
    model = cls(tiny_config())
    ran = []
    model.efficientformer.patch_embed.register_forward_pre_hook(lambda *args: ran.append(True))
    with pytest.raises(InputError, match=message):
        model(torch.randn(2, 3, 64, 64), labels=labels)
    assert not ran, "the network ran before the labels were checked"


# ---------------------------------------------------------------------------- the architecture plan
@pytest.mark.parametrize("fields", [dict(), dict(downsamples=[False, False, True, True], hidden_sizes=[8, 8, 16, 24],
                                                dim=24), dict(drop_path_rate=0.3, num_meta3d_blocks=3)])
def test_the_network_is_built_from_its_plan(fields):
    from efficientformer.models.architecture import META3D, DownsamplePlan, plan
    from efficientformer.models.pytorch.layers import Downsample, IntermediateStage

    config = tiny_config(**fields)
    network = plan(config)
    model = EfficientFormerModel(config).eval()
    encoder = model.encoder
    assert len(encoder.intermediate_stages) == len(network.layout)
    for item, module in zip(network.layout, encoder.intermediate_stages):
        assert isinstance(module, Downsample if isinstance(item, DownsamplePlan) else IntermediateStage)
    # each block where its path says, with the config's drop-path schedule and kind
    assert [b.drop_path for b in network.blocks] == pytest.approx(config.block_drop_path_rates())
    for block in network.blocks:
        module = encoder.get_submodule(block.path())
        assert type(module).__name__ == ("Meta3D" if block.kind == META3D else "Meta4D")
        assert module.drop_path.rate == pytest.approx(block.drop_path)
    # the token grid and the stage maps' sizes and strides, at sizes that are not multiples of 32
    for height, width in [(64, 64), (97, 65), (33, 200)]:
        with torch.no_grad():
            final, maps = model.forward_intermediates(torch.randn(1, 3, height, width))
        assert final.shape[1] == math.prod(network.token_grid(height, width))
        assert [tuple(m.shape[2:]) for m in maps] == [network.feature_size(s.index, height, width)
                                                       for s in network.stages]
    assert model.feature_info.reduction() == [s.reduction for s in network.stages]
    # the attention-bias geometry
    attention = encoder.last_stage.meta3D_layers.blocks[0].token_mixer
    assert tuple(attention.attention_biases.shape) == network.attention.table_shape
    assert tuple(attention.attention_bias_idxs.shape) == network.attention.index_shape
    assert attention.qkv.out_features == network.attention.qkv_width


def test_the_bias_resize_is_the_attention_bias_geometry():
    """The torch resize (used by the model and the fused network) equals the numpy recipe Keras uses."""
    from efficientformer.models.pytorch.layers import grid_bias

    resolution, heads = 4, 3
    table = torch.randn(heads, resolution * resolution, dtype=torch.float64)
    for grid in [(4, 4), (2, 5), (7, 3), (1, 1)]:
        a_h, a_w = interpolation_matrix(grid[0], resolution), interpolation_matrix(grid[1], resolution)
        resized = (a_h[None] @ table.numpy().reshape(heads, resolution, resolution) @ a_w.T[None])
        expected = resized.reshape(heads, -1)[:, bias_index(*grid)]
        np.testing.assert_allclose(grid_bias(table, resolution, grid).numpy(), expected, rtol=0, atol=1e-6)

