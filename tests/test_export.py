"""efficientformer.export: every format writes a file that computes the model's logits (ONNX through
onnxruntime, TorchScript reloaded, TFLite through LiteRT) or whose spec validates (Core ML)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from efficientformer import (
    ConfigError,
    EfficientFormerConfig,
    EfficientFormerForImageClassificationWithTeacher,
)
from efficientformer.bench import randomize_
from efficientformer.exporters import export, export_onnx

TINY = dict(depths=[1, 1, 1, 2], hidden_sizes=[8, 16, 24, 32], dim=32, key_dim=8, num_attention_heads=2,
            attention_ratio=2, num_labels=3, image_size=64, resolution=2)


@pytest.fixture(scope="module")
def model():
    return randomize_(EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig(**TINY)), seed=7).eval()


def logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).logits.numpy()


def images(batch: int, size=(64, 64), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, *size)).astype(np.float32)


def test_onnx_dynamic_batch_runs_in_onnxruntime(model, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = export(model, tmp_path / "tiny.onnx", format="onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = images(batch, seed=batch)
        np.testing.assert_allclose(session.run(None, {"pixel_values": x})[0], logits(model, x), atol=1e-4, rtol=0)


def test_onnx_other_image_size_and_old_opset(model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    path = export_onnx(model, tmp_path / "wide.onnx", image_size=(64, 96), dynamic_batch=False)
    x = images(2, (64, 96))
    out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
    np.testing.assert_allclose(out, logits(model, x), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(model, tmp_path / "old.onnx", opset=13)


def test_torchscript_reloads_without_the_package_classes(model, tmp_path):
    path = export(model, tmp_path / "tiny.pt", format="torchscript")
    loaded = torch.jit.load(path)
    x = images(3, seed=4)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(torch.from_numpy(x)).numpy(), logits(model, x), atol=1e-4, rtol=0)


def test_tflite_runs_in_litert_like_pytorch(model, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    from efficientformer.exporters import run_tflite

    x = images(2, seed=9)
    path = export(model, tmp_path / "tiny.tflite", format="tflite")  # the fp16/int8 variants: benchmarks/
    np.testing.assert_allclose(run_tflite(path, x), logits(model, x), atol=1e-4, rtol=0)


def test_coreml_package_spec_validates(model, tmp_path):
    ct = pytest.importorskip("coremltools")
    path = export(model, tmp_path / "tiny.mlpackage", format="coreml")
    spec = ct.models.MLModel(path, skip_model_load=True).get_spec()
    assert [i.name for i in spec.description.input] == ["pixel_values"]
    assert [o.name for o in spec.description.output] == ["logits"]


def test_unknown_format_is_refused(model, tmp_path):
    with pytest.raises(ConfigError, match="format"):
        export(model, tmp_path / "x.bin", format="tensorrt")


def test_export_command_from_a_checkpoint_folder(fixtures_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from efficientformer.cli import main

    out = tmp_path / "hf-tiny.onnx"
    assert main(["export", "--model", str(fixtures_dir / "hf-tiny"), "--format", "onnx", str(out)]) == 0
    assert out.exists() and "checked against PyTorch" in capsys.readouterr().out
    assert main(["export", "--model", "l1", "--format", "coreml", str(tmp_path / "x.onnx")]) == 2
