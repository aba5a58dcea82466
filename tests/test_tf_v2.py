"""EfficientFormerV2 on Keras 3: the TensorFlow backend against timm's outputs (the timm-v2-tiny fixture, from
every file there), other input sizes, the Keras folder round trip and the factory; the JAX backend (in a
subprocess, as Keras fixes its backend at import) against the same outputs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import FIXTURES, assert_close

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":  # pragma: no cover
    pytest.skip("these tests need KERAS_BACKEND=tensorflow", allow_module_level=True)

from efficientformer import (  # noqa: E402
    TFEfficientFormerV2ForImageClassification,
    TFEfficientFormerV2ForImageClassificationWithTeacher,
    TFEfficientFormerV2Model,
    create_model,
)

pytestmark = pytest.mark.tf
V2 = FIXTURES / "timm-v2-tiny"


@pytest.fixture(scope="module")
def fixture_v2(fixtures_dir):
    with np.load(V2 / "expected.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def teacher(fixtures_dir):
    return TFEfficientFormerV2ForImageClassificationWithTeacher.from_pretrained(V2 / "hub")


def _assert_outputs(model, expected) -> None:
    pixels = expected["pixel_values"]
    out = model(pixels)
    assert_close(out.logits, expected["logits"])
    assert_close(out.cls_logits, expected["head_logits"])
    assert_close(out.distillation_logits, expected["head_dist_logits"])
    assert_close(model.forward_features(pixels), expected["last_feature_map"])
    final, maps = model.forward_intermediates(pixels)
    assert_close(final, expected["last_feature_map"])
    for i, feature in enumerate(maps):
        assert_close(feature, expected[f"features.{i}"])


def test_the_hub_folder_gives_timms_outputs(teacher, fixture_v2):
    _assert_outputs(teacher, fixture_v2)
    assert teacher.feature_info.channels() == [16, 24, 32, 48]
    assert teacher.feature_info[3]["module"] == "efficientformer/encoder/stages.3"


@pytest.mark.parametrize("source", ["timm_model.safetensors", "timm_model.pth"])
def test_single_files_give_timms_logits(source, fixture_v2):
    model = create_model(V2 / source, backend="keras")
    assert type(model) is TFEfficientFormerV2ForImageClassificationWithTeacher
    assert type(create_model(model.config, backend="keras", task="backbone")) is TFEfficientFormerV2Model
    assert_close(model(fixture_v2["pixel_values"]).logits, fixture_v2["logits"])


@pytest.mark.filterwarnings("ignore:.*are not used by:UserWarning")  # the heads, loading the backbone alone
def test_other_sizes_and_the_keras_folder_round_trip(teacher, fixture_v2, tmp_path):
    for size in ((256, 320), (384, 384)):
        out = teacher(np.random.default_rng(0).standard_normal((1, 3, *size)).astype("float32"))
        assert out.logits.shape == (1, 5) and np.isfinite(np.asarray(out.logits)).all()
    teacher.save_pretrained(tmp_path / "keras")
    assert (tmp_path / "keras" / "tf_model.h5").is_file()
    again = TFEfficientFormerV2ForImageClassificationWithTeacher.from_pretrained(tmp_path / "keras")
    assert_close(again(fixture_v2["pixel_values"]).logits, fixture_v2["logits"])
    head = TFEfficientFormerV2ForImageClassification.from_pretrained(tmp_path / "keras")
    assert_close(head(fixture_v2["pixel_values"]).logits, fixture_v2["head_logits"])
    backbone = TFEfficientFormerV2Model.from_pretrained(tmp_path / "keras")
    assert_close(backbone(fixture_v2["pixel_values"]).last_hidden_state, fixture_v2["last_feature_map"])


JAX_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from efficientformer import TFEfficientFormerV2ForImageClassificationWithTeacher as Model
    folder, pixels, out = sys.argv[1:4]
    model = Model.from_pretrained(folder)
    pixels = np.load(pixels)
    output = model(pixels)
    final, maps = model.forward_intermediates(pixels)
    np.savez(out, logits=np.asarray(output.logits), cls=np.asarray(output.cls_logits),
             dist=np.asarray(output.distillation_logits), final=np.asarray(final),
             **{f"features.{i}": np.asarray(m) for i, m in enumerate(maps)})
""")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_backend_gives_timms_outputs(fixture_v2, tmp_path):
    np.save(tmp_path / "pixels.npy", fixture_v2["pixel_values"])
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(V2 / "hub"), str(tmp_path / "pixels.npy"),
                          str(tmp_path / "jax.npz")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = np.load(tmp_path / "jax.npz")
    for name, key in (("logits", "logits"), ("cls", "head_logits"), ("dist", "head_dist_logits"),
                      ("final", "last_feature_map")):
        assert_close(result[name], fixture_v2[key])
    for i in range(4):
        assert_close(result[f"features.{i}"], fixture_v2[f"features.{i}"])


def test_bad_input_gets_the_v1_errors(teacher):
    from efficientformer import InputError

    cases = [(np.zeros((3, 64, 64), "float32"), "4-D"), (np.zeros((1, 3, 64, 64), "int32"), "float"),
             (np.zeros((1, 4, 64, 64), "float32"), "channel"), (np.zeros((1, 3, 16, 64), "float32"), "too small"),
             (np.full((1, 3, 64, 64), np.nan, "float32"), "NaN")]
    for pixels, message in cases:
        with pytest.raises(InputError, match=message):
            teacher(pixels)
    with pytest.raises(InputError, match="forward_head takes"):
        teacher.forward_head(np.zeros((2, 5, 48), "float32"))
