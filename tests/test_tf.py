"""The Keras 3 (TensorFlow backend) classes against transformers 4.57.6's TF classes and our PyTorch classes."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":  # pragma: no cover - the JAX run is tests/test_tf_jax.py
    pytest.skip("these tests need KERAS_BACKEND=tensorflow", allow_module_level=True)

from efficientformer import EfficientFormerConfig  # noqa: E402
from efficientformer.models.architecture import plan  # noqa: E402
from efficientformer.errors import CheckpointError, InputError  # noqa: E402
from efficientformer.models.keras import (  # noqa: E402
    TFEfficientFormerForImageClassification,
    TFEfficientFormerForImageClassificationWithTeacher,
    TFEfficientFormerModel,
)
from efficientformer.models.outputs import ImageClassifierOutput  # noqa: E402
from efficientformer.checkpoints.h5 import read_h5, write_h5  # noqa: E402

pytestmark = pytest.mark.tf
ATOL = 1e-5
from conftest import HF_FOLDERS as FOLDERS  # noqa: E402 - the fixtures both backends' tests compare with
from conftest import assert_backbone_matches  # noqa: E402 - the parity harness both backends' tests use
from conftest import assert_close as close  # noqa: E402


@pytest.fixture(scope="module")
def teacher(fixtures_dir):
    """The hf-tiny WithTeacher model loaded from tf_model.h5 (shared by the cheap tests)."""
    return TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(fixtures_dir / "hf-tiny")


@pytest.fixture(scope="module")
def classifier(fixtures_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the distillation head of the file is unused here
        return TFEfficientFormerForImageClassification.from_pretrained(fixtures_dir / "hf-tiny")


# ------------------------------------------------------------------------------------ golden parity
@pytest.mark.parametrize("folder, source", [(folder, source) for folder in FOLDERS
                                            for source in ("tf_model.h5", "model.safetensors")]
                         + [("hf-tiny", "pytorch_model.bin")])  # the same weights pickled: one is enough
def test_outputs_match_transformers_tf_classes(fixtures_dir, folder, source):
    """Every output of transformers' TF classes (hidden states, attentions, logits, per-sample loss)."""
    if source == "pytorch_model.bin":
        pytest.importorskip("torch")
    path = fixtures_dir / folder
    expected = np.load(path / "expected.npz")
    pixels = expected["pixel_values"]
    from_file = path / source  # a weights file: from_pretrained reads the config beside it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = TFEfficientFormerModel.from_pretrained(from_file)
        clf = TFEfficientFormerForImageClassification.from_pretrained(from_file)
    teacher = TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(from_file)

    out = base(pixels, output_hidden_states=True, output_attentions=True)
    assert_backbone_matches(out, expected, "tf.model")

    out = clf(pixels, labels=expected["labels"])
    close(out.logits, expected["tf.classification.logits"])
    assert out.loss.shape == (len(pixels),)  # per sample, as the TF classes returned it
    close(out.loss, expected["tf.classification.loss"])

    out = teacher(pixels)
    for key in ("logits", "cls_logits", "distillation_logits"):
        close(out[key], expected[f"tf.teacher.{key}"])


def test_losses_average_to_the_pytorch_losses(fixtures_dir):
    """Multi-label (float multi-hot labels) and regression losses: mean over samples == transformers' PyTorch loss."""
    path = fixtures_dir / "hf-small"
    expected = np.load(path / "expected.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = TFEfficientFormerForImageClassification.from_pretrained(path)
        regression = TFEfficientFormerForImageClassification.from_pretrained(path, problem_type="regression")
    pixels = expected["pixel_values"]
    close(np.mean(clf(pixels, labels=expected["labels"]).loss), expected["classification.loss"])
    close(np.mean(clf(pixels, labels=expected["labels_multi_label"]).loss),
          expected["classification.loss.multi_label_classification"])
    close(np.mean(regression(pixels, labels=expected["labels_regression"]).loss),
          expected["classification.loss.regression"])


def test_training_flag_uses_batch_statistics(fixtures_dir):
    """training=True normalizes with the batch's statistics, as PyTorch's train mode (transformers' golden),
    and updates the moving statistics; the default is inference."""
    expected = np.load(fixtures_dir / "hf-tiny" / "expected.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TFEfficientFormerForImageClassification.from_pretrained(fixtures_dir / "hf-tiny")
    close(model(expected["pixel_values"]).logits, expected["tf.classification.logits"])
    close(model(expected["pixel_values"], training=True).logits, expected["classification.train_mode.logits"])
    assert not np.allclose(model(expected["pixel_values"]).logits, expected["tf.classification.logits"], atol=1e-3)


# --------------------------------------------------------------------------------- any input size
def test_any_input_size_and_no_stale_bias(fixtures_dir, teacher):
    """Non-square sizes give the 1/32 token grid; going back to 224 gives the stored result (nothing cached)."""
    expected = np.load(fixtures_dir / "hf-tiny" / "expected.npz")
    rng = np.random.default_rng(0)
    for height, width in [(256, 320), (97, 65), (32, 32)]:
        pixels = rng.standard_normal((1, 3, height, width)).astype("float32")
        out = teacher(pixels, output_attentions=True)
        tokens = int(np.prod(plan(teacher.config).token_grid(height, width)))
        assert out.attentions[0].shape == (1, teacher.config.num_attention_heads, tokens, tokens)
        close(np.sum(out.attentions[0], axis=-1), np.ones((1, 2, tokens)))
        assert np.isfinite(np.asarray(out.logits)).all()
    close(teacher(expected["pixel_values"]).logits, expected["tf.teacher.logits"])


def test_bad_inputs_raise_clear_errors(classifier):
    x = np.zeros((2, 3, 64, 64), "float32")
    cases = [
        (x[0], "4-D"),
        (x.transpose(0, 2, 3, 1), "channels-last"),
        (x.astype("uint8"), "floating point"),
        (x[:, :, :16], "too small"),
        (np.zeros((2, 1, 64, 64), "float32"), "channel"),
    ]
    for pixels, words in cases:
        with pytest.raises(InputError, match=words):
            classifier(pixels)
    for labels, words in [(np.zeros((2, 2), "int64"), "shape"), (np.array([0, 5]), "0..2"),
                          (np.array([0, 1, 2]), "batch of 2"), (np.zeros((2, 4), "float32"), "shape")]:
        with pytest.raises(InputError, match=words):
            classifier(x, labels=labels)


# ----------------------------------------------------------------------------- loading and saving
def test_save_pretrained_writes_transformers_layout(fixtures_dir, teacher, tmp_path):
    """tf_model.h5 holds exactly the datasets (names, shapes, values) transformers 4.57 wrote, so its TF
    classes can read it; config.json round-trips; reloading gives the same outputs."""
    teacher.save_pretrained(tmp_path)
    assert {"tf_model.h5", "config.json", "preprocessor_config.json"} <= set(os.listdir(tmp_path))
    processor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 256}  # the checkpoint's preprocessing, written back
    import h5py

    def datasets(path):
        found = {}
        with h5py.File(path, "r") as handle:
            handle.visititems(lambda name, obj: found.__setitem__(name, list(obj.shape))
                              if isinstance(obj, h5py.Dataset) else None)
            layers = list(handle.attrs["layer_names"])
            listed = {f"{layer}/{w}" for layer in layers for w in handle[layer].attrs["weight_names"]}
        return found, layers, listed

    ours, layers, listed = datasets(tmp_path / "tf_model.h5")
    names = {}
    for line in (fixtures_dir / "hf-tiny" / "tf_weight_names.txt").read_text().splitlines():
        name, shape = line.split("\t")
        names[name] = json.loads(shape)
    assert ours == names
    assert set(listed) == set(names)  # what transformers' loader iterates over
    assert layers == ["efficientformer", "classifier", "distillation_classifier"]
    stored, original = read_h5(tmp_path / "tf_model.h5"), read_h5(fixtures_dir / "hf-tiny" / "tf_model.h5")
    for name, value in original.items():
        np.testing.assert_array_equal(stored[name], value)
        assert stored[name].dtype == value.dtype
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["EfficientFormerForImageClassificationWithTeacher"]
    assert EfficientFormerConfig.from_pretrained(tmp_path) == teacher.config.copy(
        architectures=["EfficientFormerForImageClassificationWithTeacher"])
    reloaded = TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path)
    pixels = np.random.default_rng(1).standard_normal((1, 3, 64, 96)).astype("float32")
    np.testing.assert_array_equal(reloaded(pixels).logits, teacher(pixels).logits)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras' saver
def test_keras_native_format_round_trip(classifier, tmp_path):
    """model.save("x.keras") / keras.models.load_model work without custom_objects."""
    classifier.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert type(restored) is TFEfficientFormerForImageClassification
    pixels = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype("float32")
    np.testing.assert_array_equal(restored(pixels).logits, classifier(pixels).logits)


@pytest.mark.parametrize("with_torch", [True, False])
def test_pytorch_weights_are_used_when_no_h5(fixtures_dir, tmp_path, monkeypatch, with_torch):
    """Only model.safetensors: converted automatically, through efficientformer.checkpoints.loading when torch is
    installed, else read with safetensors.numpy."""
    if with_torch:
        pytest.importorskip("torch")
    else:
        monkeypatch.setattr("efficientformer.models.keras.loading._torch_available", lambda: False)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(fixtures_dir / "hf-tiny" / name, tmp_path / name)
    expected = np.load(fixtures_dir / "hf-tiny" / "expected.npz")
    model = TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path)
    close(model(expected["pixel_values"]).logits, expected["tf.teacher.logits"])
    with pytest.raises(CheckpointError, match="tf_model.h5"):
        TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path, from_pt=False)


def test_loads_hub_id_offline(fixtures_dir, monkeypatch):
    """A hub id resolved from the cache; that repository only has PyTorch weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = np.load(fixtures_dir / "hf-tiny" / "expected.npz")
    model = TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(
        "efficientformer-fixtures/hf-tiny", cache_dir=str(fixtures_dir / "hub"))
    close(model(expected["pixel_values"]).logits, expected["tf.teacher.logits"])


def test_every_weight_is_accounted_for(fixtures_dir, tmp_path):
    path = fixtures_dir / "hf-tiny"
    weights = read_h5(path / "tf_model.h5")
    # missing: named in the error
    lost = "efficientformer/encoder/last_stage/meta3D_layers/blocks.0/token_mixer/attention_biases"
    shutil.copy(path / "config.json", tmp_path / "config.json")
    write_h5(tmp_path / "tf_model.h5", {k: v for k, v in weights.items() if k != lost},
             "tf_efficient_former_for_image_classification_with_teacher")
    with pytest.raises(CheckpointError, match="attention_biases"):
        TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path)
    # unused: a warning naming them
    with pytest.warns(UserWarning, match="distillation_classifier/kernel"):
        TFEfficientFormerForImageClassification.from_pretrained(path)
    # a new number of labels: the heads are re-initialized, the backbone is loaded
    model, info = TFEfficientFormerForImageClassification.from_pretrained(path, num_labels=5,
                                                                           output_loading_info=True)
    assert model(np.zeros((1, 3, 64, 64), "float32")).logits.shape == (1, 5)
    np.testing.assert_array_equal(model.named_weights()[lost], weights[lost])
    # the loading report has the PyTorch classes' keys: the resized head is mismatched, the other one unused
    assert sorted(info) == ["mismatched_keys", "missing_keys", "unexpected_keys"]
    assert info["missing_keys"] == []
    assert [(name, model_shape) for name, _, model_shape in info["mismatched_keys"]] == [
        ("classifier/bias", (5,)), ("classifier/kernel", (model.config.hidden_sizes[-1], 5))]
    assert all(name.startswith("distillation_classifier/") for name in info["unexpected_keys"])
    # the wrong shape for the config
    with pytest.raises(CheckpointError, match="another shape"):
        TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(
            path, config=EfficientFormerConfig.from_pretrained(path).copy(key_dim=16))


# -------------------------------------------------------------------------------- TF integration
def test_xla_compiled_function_matches_eager(classifier):
    compiled = tf.function(lambda x: classifier(x), jit_compile=True)
    pixels = np.random.default_rng(2).standard_normal((2, 3, 256, 320)).astype("float32")
    out = compiled(tf.constant(pixels))
    assert isinstance(out, ImageClassifierOutput)
    close(out.logits, classifier(pixels).logits)


def test_saved_model_export_has_dynamic_batch(classifier, tmp_path):
    classifier.export(str(tmp_path / "saved"), image_size=64)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    for batch in (1, 3):
        pixels = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64)).astype("float32")
        result = served.serve(tf.constant(pixels))
        assert set(result) == {"logits"}
        close(result["logits"], classifier(pixels).logits)


def test_fit_lowers_the_loss(fixtures_dir):
    """Fine-tuning with model.fit and the model's own loss (no loss given to compile), as transformers did."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TFEfficientFormerForImageClassification.from_pretrained(fixtures_dir / "hf-tiny")
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((8, 3, 64, 64)).astype("float32")
    labels = rng.integers(0, 3, 8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    history = model.fit(pixels, labels, batch_size=4, epochs=3, shuffle=False, verbose=0).history["loss"]
    assert history[-1] < history[0]
    predicted = model.predict(pixels, batch_size=4, verbose=0)
    assert predicted["logits"].shape == (8, 3)


# ----------------------------------------------------------------------------- PyTorch parity
@pytest.mark.parametrize("folder", FOLDERS)
def test_matches_our_pytorch_classes(fixtures_dir, folder):
    """Same folder in both backends: the same logits at the trained size and at 256x320."""
    torch = pytest.importorskip("torch")
    from efficientformer.models.pytorch import EfficientFormerForImageClassificationWithTeacher

    pt_model = EfficientFormerForImageClassificationWithTeacher.from_pretrained(str(fixtures_dir / folder))
    tf_model = TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(fixtures_dir / folder)
    pt_model.eval()
    rng = np.random.default_rng(3)
    for shape in [(2, 3, 224, 224), (2, 3, 256, 320)]:
        pixels = rng.standard_normal(shape).astype("float32")
        with torch.no_grad():
            expected = pt_model(torch.from_numpy(pixels)).logits.numpy()
        close(tf_model(pixels).logits, expected)


def test_loads_timm_hub_folder_through_pytorch(fixtures_dir):
    """timm's layout (config inferred from the shapes): WithTeacher logits == timm's eval logits (mean of heads)."""
    pytest.importorskip("torch")
    expected = np.load(fixtures_dir / "timm-small" / "expected.npz")
    model = TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(fixtures_dir / "timm-small" / "hub")
    out = model(expected["pixel_values"])
    close(out.logits, expected["logits"])
    close(out.cls_logits, expected["head_logits"])


@pytest.mark.parametrize("fields", [
    {"use_layer_scale": False, "hidden_act": "relu", "downsamples": [True, False, True, True]},
    {"num_meta3d_blocks": 0},
    {"num_meta3d_blocks": 2, "resolution": 5, "hidden_act": "gelu_new", "drop_path_rate": 0.2,
     "hidden_dropout_prob": 0.1},
], ids=["no-layer-scale-relu", "no-attention", "two-attention-blocks-r5-dropout"])
def test_other_configs_match_pytorch_through_converted_weights(fields):
    """Random weights of a Keras model, converted by tf_weights.keras_to_pt, give PyTorch the same logits."""
    torch = pytest.importorskip("torch")
    from conftest import tiny_config
    from efficientformer.checkpoints.h5 import keras_to_pt
    from efficientformer.models.pytorch import EfficientFormerForImageClassificationWithTeacher

    config = tiny_config("keras", **fields)
    tf_model = TFEfficientFormerForImageClassificationWithTeacher(config)
    named = tf_model.named_weights()
    assert len(named) == len(tf_model.weights)  # every weight has a name
    rng = np.random.default_rng(0)
    for name, variable in named.items():
        values = rng.standard_normal(variable.shape).astype("float32") * 0.3
        variable.assign(np.abs(values) + 0.5 if name.endswith("moving_variance") else values)
    state = keras_to_pt({name: np.asarray(v.numpy()) for name, v in named.items()})
    pt_model = EfficientFormerForImageClassificationWithTeacher(config)
    pt_model.load_pretrained_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    pt_model.eval()
    pixels = rng.standard_normal((2, 3, 96, 128)).astype("float32")
    with torch.no_grad():
        expected = pt_model(torch.from_numpy(pixels)).logits.numpy()
    close(tf_model(pixels).logits, expected)


def test_l1_weights_match_transformers_architecture(fixtures_dir):
    """Full-size L1: every Keras weight has the shape transformers' state dict implies; parameter count as listed."""
    from efficientformer.checkpoints.h5 import pt_to_keras

    spec = json.loads((fixtures_dir / "architectures.json").read_text())["l1"]
    model = TFEfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig.from_preset("l1"))
    expected = {name: value.shape for name, value in
                pt_to_keras({k: np.zeros(v, "float32") for k, v in spec["transformers"].items()}).items()}
    assert {name: tuple(v.shape) for name, v in model.named_weights().items()} == expected
    # the count transformers reports (trainable parameters, no BatchNorm statistics)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == spec["num_parameters"]["transformers"]
