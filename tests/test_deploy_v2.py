"""EfficientFormerV2 in deploy/: `optimize` folds every BatchNorm and layer scale and computes the eager model's
function (float32 within 1e-5 relative, any input size, all three classes; bf16 within 1e-2), V1-only options are
refused in one sentence, the ONNX, TorchScript and TFLite exports compute the eager logits and carry the V2 config
(an ONNX file classifies through ImageClassifier), the Core ML package's spec validates with that metadata, and the
benchmark's timm twin holds the same weights."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import FIXTURES, tiny_config_v2

import efficientformer
from efficientformer import (
    ConfigError,
    EfficientFormerV2ForImageClassification,
    EfficientFormerV2ForImageClassificationWithTeacher,
    EfficientFormerV2Model,
    ImageClassifier,
    create_model,
)
from efficientformer.deploy.fold_v2 import FusedEfficientFormerV2
from efficientformer.factory import randomize_

CLASSES = (EfficientFormerV2ForImageClassificationWithTeacher, EfficientFormerV2ForImageClassification,
           EfficientFormerV2Model)


def tiny(cls=EfficientFormerV2ForImageClassificationWithTeacher, kind="base", seed=3):
    return randomize_(cls(tiny_config_v2(kind)), seed=seed).eval()


def eager(model, x):
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("cls", CLASSES)
def test_optimize_folds_every_batchnorm_and_computes_the_same_function(cls):
    model = tiny(cls)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = efficientformer.optimize(model, image_size=224)
    assert isinstance(fast.fused, FusedEfficientFormerV2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    for size in ((224, 224), (96, 160), (65, 97)):  # the trained grid, and biases resized to others
        x = torch.randn(2, 3, *size)
        assert rel(fast(x), eager(model, x)) < 1e-5, size
    unchannelled = efficientformer.optimize(model, channels_last=False)
    x = torch.randn(3, 3, 64, 64)
    assert rel(unchannelled(x), eager(model, x)) < 1e-5
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the source is only read


def test_optimize_gives_the_fixtures_logits(fixtures_dir):
    model = create_model(FIXTURES / "timm-v2-tiny" / "hub")
    with np.load(FIXTURES / "timm-v2-tiny" / "expected.npz") as data:
        pixels, logits = data["pixel_values"], data["logits"]
    got = efficientformer.optimize(model)(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(got, logits, rtol=1e-5, atol=1e-5)


def test_bf16_on_cpu_is_close_and_v1_only_options_are_refused():
    model = tiny(kind="fixture")
    x = torch.randn(2, 3, 224, 224)
    fast = efficientformer.optimize(model, dtype="bf16")
    out = fast(x)
    assert out.dtype == torch.bfloat16 and rel(out, eager(model, x)) < 1e-2
    for option in ({"kernels": "triton"}, {"attention": "matmul"}, {"pad_stem": True}):
        with pytest.raises(ConfigError, match="EfficientFormer \\(V1\\) only"):
            efficientformer.optimize(model, **option)
    with pytest.raises(ConfigError, match="inference only"):
        fast.fused.train()


def test_onnx_export_computes_the_eager_logits_and_classifies(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from efficientformer.deploy.metadata import decode, read_metadata

    model = tiny()
    path = efficientformer.export(model, tmp_path / "v2.onnx", format="onnx", image_size=(64, 96))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 96)).astype(np.float32)
    got = session.run(None, {"pixel_values": x})[0]
    np.testing.assert_allclose(got, eager(model, torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    meta = decode(read_metadata(path))
    assert meta["model_class"] == "EfficientFormerV2ForImageClassificationWithTeacher"
    assert meta["config"]["model_type"] == "efficientformer_v2" and meta["image_size"] == (64, 96)
    assert meta["id2label"] == model.config.id2label and meta["preprocessor"]["crop_size"] == {"height": 64, "width": 96}
    classifier = ImageClassifier.from_pretrained(path)
    assert type(classifier.config).__name__ == "EfficientFormerV2Config"
    np.testing.assert_allclose(classifier.logits_from_pixels(x), got, rtol=1e-6, atol=1e-6)


def test_torchscript_export_of_a_backbone_gives_the_normalized_map(tmp_path):
    from efficientformer.deploy.metadata import read_metadata

    model = tiny(EfficientFormerV2Model)
    path = efficientformer.export(model, tmp_path / "v2.pt", format="torchscript", image_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in favour of torch.export
        loaded = torch.jit.load(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = loaded(x)
    assert got.shape == (2, 32, 2, 2) and rel(got, eager(model, x)) < 1e-5
    meta = read_metadata(path)
    assert meta["output"] == "last_hidden_state" and meta["id2label"] == "{}"



def test_tflite_of_the_fixture_runs_in_litert_like_pytorch_and_timm(fixtures_dir, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    from efficientformer.deploy.export import run_tflite
    from efficientformer.deploy.metadata import decode, export_metadata, read_metadata

    model = create_model(FIXTURES / "timm-v2-tiny" / "hub")  # the smallest V2 with real labels, at its 224
    path = efficientformer.export(model, tmp_path / "v2.tflite", format="tflite")
    x = np.random.default_rng(2).standard_normal((3, 3, 224, 224)).astype(np.float32)  # another batch than the check's
    np.testing.assert_allclose(run_tflite(path, x), eager(model, torch.from_numpy(x)).numpy(), atol=1e-4, rtol=0)
    with np.load(FIXTURES / "timm-v2-tiny" / "expected.npz") as data:  # two photos: timm's logits, through the Keras V2
        np.testing.assert_allclose(run_tflite(path, data["pixel_values"]), data["logits"], atol=1e-4, rtol=0)
    assert read_metadata(path) == export_metadata(model, (224, 224))
    meta = decode(read_metadata(path))
    assert meta["model_class"] == "EfficientFormerV2ForImageClassificationWithTeacher"
    assert meta["id2label"] == {0: "cat", 1: "coffee", 2: "astronaut", 3: "rocket", 4: "camera"}
    assert meta["config"]["model_type"] == "efficientformer_v2"


@pytest.mark.parametrize("cls, size, output, shape", [
    (EfficientFormerV2ForImageClassificationWithTeacher, (64, 96), "logits", [1, 3]),
    (EfficientFormerV2Model, (64, 64), "last_hidden_state", [1, 32, 2, 2]),  # the normalized map, NCHW
])
def test_coreml_package_spec_validates_with_the_v2_metadata(cls, size, output, shape, tmp_path):
    ct = pytest.importorskip("coremltools")
    from efficientformer.deploy.metadata import decode, export_metadata, read_metadata

    model = tiny(cls)
    path = efficientformer.export(model, tmp_path / "v2.mlpackage", format="coreml", image_size=size, dtype="fp32")
    spec = ct.models.MLModel(path, skip_model_load=True).get_spec()
    # Core ML predicts only on macOS, so off it the program's interface is what is checked
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [(i.name, list(i.type.multiArrayType.shape)) for i in spec.description.input] == \
        [("pixel_values", [1, 3, *size])]
    assert [(o.name, list(o.type.multiArrayType.shape)) for o in spec.description.output] == [(output, shape)]
    assert read_metadata(path) == export_metadata(model, size)
    meta = decode(read_metadata(path))
    assert meta["model_class"] == cls.__name__ and meta["config"]["model_type"] == "efficientformer_v2"
    assert meta["id2label"] == (model.config.id2label if output == "logits" else {})  # a backbone has no labels
    assert meta["preprocessor"]["crop_size"] == {"height": size[0], "width": size[1]}
    if sys.platform == "darwin":  # where Core ML runs: the float32 program computes the eager output
        x = np.random.default_rng(4).standard_normal((1, 3, *size)).astype(np.float32)
        got = ct.models.MLModel(path, compute_units=ct.ComputeUnit.CPU_ONLY).predict({"pixel_values": x})[output]
        np.testing.assert_allclose(got, eager(model, torch.from_numpy(x)).numpy(), atol=1e-4, rtol=0)

def test_bench_builds_timms_v2_twin_with_the_same_weights():
    pytest.importorskip("timm")
    from efficientformer.benchmarking import run_benchmark, timm_twin, timm_unavailable

    for cls in CLASSES[:2]:
        model = tiny(cls, kind="fixture")
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            assert rel(timm_twin(model)(x), eager(model, x)) < 1e-6
    assert timm_unavailable(model) is None
    assert "only at the size" in timm_unavailable(model, image_size=256)
    assert "key_dim" in timm_unavailable(tiny())  # the base tiny config has narrow attention, timm fixes it
    rows = run_benchmark(model, batch_size=2, modes=["fused"], timm_modes=["eager"], min_time=0.01,
                         latency=False, log=None)
    assert [(r.impl, r.mode) for r in rows] == [("ours", "fused"), ("timm", "eager")]
    assert all(r.max_rel_err < 1e-5 and not r.note for r in rows)


def test_cli_exports_and_benchmarks_a_v2_checkpoint(fixtures_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    pytest.importorskip("timm")
    from efficientformer.cli import main

    hub = str(FIXTURES / "timm-v2-tiny" / "hub")
    assert main(["export", "--model", hub, "--format", "onnx", str(tmp_path / "tiny.onnx")]) == 0
    assert "EfficientFormerV2ForImageClassificationWithTeacher, 5 labels" in capsys.readouterr().out
    assert main(["bench", "--model", hub, "--modes", "fused", "--timm-modes", "eager", "--no-throughput",
                 "--min-time", "0.01"]) == 0
    table = capsys.readouterr().out
    assert "| ours | fused |" in table and "| timm | eager |" in table and "failed" not in table
