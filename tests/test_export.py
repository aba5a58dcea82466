"""efficientformer.export: every format writes a file that computes the model's logits (ONNX through
onnxruntime, TorchScript reloaded, TFLite through LiteRT) or whose spec validates (Core ML); a checkpoint
is exported as the class its heads make it; every file carries its labels and preprocessing, and an
exported ONNX file classifies images through ImageClassifier and `efficientformer predict`."""

from __future__ import annotations

import importlib.util
import json
import logging
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from efficientformer import (
    CheckpointError,
    ConfigError,
    EfficientFormerConfig,
    EfficientFormerForImageClassification,
    EfficientFormerForImageClassificationWithTeacher,
    EfficientFormerModel,
    ImageClassifier,
    InputError,
)
from efficientformer.benchmarking import randomize_
from efficientformer.deploy.metadata import decode, export_metadata, read_metadata
from efficientformer.deploy.export import export, export_onnx
from efficientformer.preprocessing.processor import EfficientFormerImageProcessor

PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "camera.png")

from conftest import tiny_settings  # noqa: E402

TINY = tiny_settings("export")


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
    # the file is fixed at 64x64, so the preprocessing it carries makes 64x64 images (the released
    # settings, resize 256 / crop 224, scaled to it)
    processor = EfficientFormerImageProcessor.from_dict(decode(read_metadata(path))["preprocessor"])
    assert (processor.size, processor.crop_size) == ({"shortest_edge": 73}, {"height": 64, "width": 64})
    assert processor(np.zeros((300, 400, 3), np.uint8), return_tensors="np")["pixel_values"].shape == (1, 3, 64, 64)


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
    assert read_metadata(path) == export_metadata(model, (64, 64))


def test_tflite_runs_in_litert_like_pytorch(model, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    from efficientformer.deploy.export import run_tflite

    x = images(2, seed=9)
    path = export(model, tmp_path / "tiny.tflite", format="tflite")  # the fp16/int8 variants: benchmarks/
    np.testing.assert_allclose(run_tflite(path, x), logits(model, x), atol=1e-4, rtol=0)
    assert read_metadata(path) == export_metadata(model, (64, 64))  # the metadata entry kept the file runnable


def test_coreml_package_spec_validates(model, tmp_path):
    ct = pytest.importorskip("coremltools")
    path = export(model, tmp_path / "tiny.mlpackage", format="coreml")
    spec = ct.models.MLModel(path, skip_model_load=True).get_spec()
    assert [i.name for i in spec.description.input] == ["pixel_values"]
    assert [o.name for o in spec.description.output] == ["logits"]
    assert read_metadata(path) == export_metadata(model, (64, 64))


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


# ------------------------------------------------------------------ checkpoints of each class, metadata
def _needs_onnx():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(fixtures_dir, tmp_path_factory):
    """Checkpoint folders of the three classes, each exported to ONNX with the `export("folder")` API:
    (folder, class, .onnx path, golden output of transformers 4.57.6 on two fixture photos)."""
    _needs_onnx()
    base = tmp_path_factory.mktemp("exported")
    tiny = fixtures_dir / "hf-tiny"
    golden = np.load(tiny / "expected.npz")
    cases = {}
    for kind, cls, key in (("single-head", EfficientFormerForImageClassification, "classification.logits"),
                           ("backbone", EfficientFormerModel, "model.last_hidden_state")):
        folder = base / kind
        cls.from_pretrained(tiny).save_pretrained(str(folder))  # a fine-tuned model's folder: one head, or none
        cases[kind] = (folder, cls, golden["pixel_values"], golden[key])
    small = np.load(fixtures_dir / "hf-small" / "expected.npz")
    cases["with-teacher"] = (fixtures_dir / "hf-small", EfficientFormerForImageClassificationWithTeacher,
                             small["pixel_values"], small["teacher.logits"])
    return {kind: (*case, export(case[0], base / f"{kind}.onnx", format="onnx")) for kind, case in cases.items()}


@pytest.mark.parametrize("kind", ["single-head", "backbone", "with-teacher"])
def test_a_checkpoint_exports_as_the_class_it_holds(exported, kind):
    import onnxruntime as ort

    folder, cls, pixels, golden, path = exported[kind]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixel_values": pixels})[0]
    reference = cls.from_pretrained(folder)
    with torch.no_grad():
        out = reference(torch.from_numpy(pixels))
    want = out.last_hidden_state if cls is EfficientFormerModel else out.logits
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got, golden, atol=1e-4, rtol=0)  # what transformers computes for that folder
    assert session.get_outputs()[0].name == ("last_hidden_state" if cls is EfficientFormerModel else "logits")
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # as any file the user writes


def test_onnx_metadata_names_the_class_labels_and_preprocessing(exported):
    folder, cls, _, _, path = exported["single-head"]
    meta = read_metadata(path)
    assert meta == export_metadata(cls.from_pretrained(folder), (224, 224))
    values = decode(meta)
    assert values["model_class"] == "EfficientFormerForImageClassification"
    assert values["id2label"] == {0: "cat", 1: "coffee", 2: "rocket"}
    assert values["image_size"] == (224, 224)
    assert values["preprocessor"] == json.loads(EfficientFormerImageProcessor.from_pretrained(folder).to_json_string())
    assert EfficientFormerConfig.from_dict(values["config"]) == EfficientFormerConfig.from_pretrained(folder)
    assert decode(read_metadata(exported["backbone"][4]))["id2label"] == {}


def test_image_classifier_runs_an_onnx_file_like_its_checkpoint(exported, fixtures_dir, capsys):
    from efficientformer.cli import main

    folder, _, _, _, path = exported["single-head"]
    photos = [str(fixtures_dir / "images" / name) for name in PHOTOS]
    by_folder = ImageClassifier.from_pretrained(folder, device="cpu").predict(photos, top_k=3)
    onnx_classifier = ImageClassifier.from_pretrained(path)
    assert onnx_classifier.model is None and onnx_classifier.labels == {0: "cat", 1: "coffee", 2: "rocket"}
    by_file = onnx_classifier.predict(photos, top_k=3, batch_size=2)
    for want, got in zip(by_folder, by_file, strict=True):
        assert [p.label for p in got] == [p.label for p in want]
        np.testing.assert_allclose([p.score for p in got], [p.score for p in want], atol=1e-4, rtol=0)
    assert main(["predict", *photos[:2], "--model", path, "--format", "json", "--top-k", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["predictions"][0]["label"] for r in printed] == [row[0].label for row in by_folder[:2]]
    assert [r["predictions"][0]["score"] for r in printed] == pytest.approx([row[0].score for row in by_folder[:2]],
                                                                            abs=1e-4)


def test_onnx_files_that_cannot_name_classes_are_refused(exported, tmp_path):
    import onnx

    with pytest.raises(CheckpointError, match="backbone"):
        ImageClassifier.from_pretrained(exported["backbone"][4])
    proto = onnx.load(exported["single-head"][4])
    del proto.metadata_props[:]  # an ONNX file written by another tool
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, bare)
    with pytest.raises(CheckpointError, match="no efficientformer metadata"):
        ImageClassifier.from_pretrained(bare)


def test_a_failed_check_leaves_the_previous_file(model, tmp_path):
    from efficientformer.deploy.export import export_torchscript

    path = tmp_path / "tiny.pt"
    path.write_bytes(b"the previous export")
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_torchscript(model, path, atol=-1.0)  # no output can pass a negative tolerance
    assert path.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pt"]  # no temporary file left behind


def test_export_command_to_a_folder_is_one_sentence(fixtures_dir, tmp_path, capsys):
    from efficientformer.cli import main

    assert main(["export", "--model", str(fixtures_dir / "hf-tiny"), "--format", "onnx", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a folder" in err and str(tmp_path / "model.onnx") in err
    (tmp_path / "a-file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        export("l1", tmp_path / "a-file" / "model.onnx")  # refused before the model is built


def test_export_command_says_what_it_wrote_and_nothing_about_torchvision(exported, tmp_path, capsys, caplog,
                                                                        monkeypatch, fixtures_dir):
    from efficientformer.cli import main

    find_spec = importlib.util.find_spec
    # as on a machine without torchvision, where torch.onnx warns once per torchvision op it skips
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else
                        find_spec(name, *a))
    caplog.set_level(logging.INFO)
    folder = exported["single-head"][0]
    out = tmp_path / "static.onnx"
    assert main(["export", "--model", str(folder), "--format", "onnx", "--static-batch", str(out)]) == 0
    printed = capsys.readouterr()
    assert not [r.getMessage() for r in caplog.records if "torchvision" in r.getMessage()]
    assert "torchvision" not in printed.out + printed.err
    assert "EfficientFormerForImageClassification, 3 labels" in printed.out and "checked against PyTorch" in printed.out
    # a fixed batch of 2 still classifies any number of images
    photos = [str(fixtures_dir / "images" / name) for name in PHOTOS[:3]]
    want = ImageClassifier.from_pretrained(folder, device="cpu").predict(photos, top_k=1)
    got = ImageClassifier.from_pretrained(out).predict(photos, top_k=1)
    assert [r[0].label for r in got] == [r[0].label for r in want]
