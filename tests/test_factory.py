"""create_model: one factory for presets (random weights), paths, hub ids, configs and checkpoints, both backends."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from efficientformer import create_model, list_models
from efficientformer.errors import ConfigError, InputError
from efficientformer.factory import architecture_for, model_class_for, preset_name, task_for

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import efficientformer as modeling  # noqa: E402  (the public classes, whichever module defines them)

CLASSES = {"backbone": modeling.EfficientFormerModel, "features": modeling.EfficientFormerModel,
           "classification": modeling.EfficientFormerForImageClassification,
           "distillation": modeling.EfficientFormerForImageClassificationWithTeacher,
           "with-teacher": modeling.EfficientFormerForImageClassificationWithTeacher}


def test_registry_lists_the_presets():
    assert list_models() == ["l1", "l3", "l7", "s0", "s1", "s2", "l"]  # V1, then EfficientFormerV2
    assert list_models("l[13]") == ["l1", "l3"]
    assert list_models(pretrained=True) == ["l1", "l3", "l7", "s0", "s1", "s2", "l"]
    assert preset_name("efficientformer-L3") == "l3" and preset_name("efficientformer_l7") == "l7"
    assert preset_name("no-such-model") is None


@pytest.mark.parametrize("name", ["l1", "l3", "l7"])
def test_each_preset_has_the_released_parameter_count_and_keys(name, fixtures_dir):
    facts = json.loads((fixtures_dir / "architectures.json").read_text())[name]
    model = create_model(name)
    assert type(model) is modeling.EfficientFormerForImageClassificationWithTeacher
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == facts["num_parameters"]["transformers"]
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == facts["transformers"]


@pytest.mark.parametrize("task", list(CLASSES))
def test_task_picks_the_class(task):
    model = create_model("efficientformer-l1", task=task, depths=[1, 1, 1, 1], num_labels=4)
    assert type(model) is CLASSES[task]
    assert model.config.depths == [1, 1, 1, 1] and model.config.num_labels == 4


def test_unknown_task_backend_and_preset_settings_are_named():
    with pytest.raises(ConfigError, match="task 'segmentation'"):
        create_model("l1", task="segmentation")
    with pytest.raises(ConfigError, match="backend 'jax'"):
        create_model("l1", backend="jax")
    with pytest.raises(ConfigError):
        create_model("l1", depths=[0, 1, 1, 1])


def test_seeded_random_weights_are_realistic_and_repeatable():
    first = create_model("l1", seed=3, depths=[1, 1, 1, 1])
    second = create_model("l1", seed=3, depths=[1, 1, 1, 1])
    other = create_model("l1", seed=4, depths=[1, 1, 1, 1])
    for key, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[key]), key
    scale = next(v for k, v in first.state_dict().items() if "layer_scale" in k)
    assert float(scale.min()) >= 0.05  # not the constructor's 1e-5
    assert not torch.equal(first.classifier.weight, other.classifier.weight)


def test_a_folder_loads_as_the_class_its_heads_make_it(fixtures_dir):
    folder = fixtures_dir / "hf-tiny"
    model = create_model(folder)
    assert type(model) is modeling.EfficientFormerForImageClassificationWithTeacher
    reference = modeling.EfficientFormerForImageClassificationWithTeacher.from_pretrained(str(folder))
    for key, tensor in reference.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[key]), key
    assert model.processor_settings is not None
    single = create_model(folder, task="classification")
    assert type(single) is modeling.EfficientFormerForImageClassification
    assert torch.equal(single.classifier.weight, reference.classifier.weight)


def test_a_weights_file_and_a_checkpoint_load(fixtures_dir, tmp_path):
    from efficientformer.checkpoints.loading import load_checkpoint

    file = tmp_path / "weights.safetensors"
    shutil.copy(fixtures_dir / "hf-tiny" / "model.safetensors", file)
    model = create_model(file)
    checkpoint = load_checkpoint(fixtures_dir / "hf-tiny")
    again = create_model(checkpoint)
    assert torch.equal(model.classifier.weight, again.classifier.weight)
    backbone = {k: v for k, v in checkpoint.state_dict.items() if k.startswith("efficientformer.")}
    assert model_class_for(backbone) is modeling.EfficientFormerModel
    assert architecture_for(backbone) == "EfficientFormerModel"


def test_pretrained_false_keeps_the_architecture_with_new_weights(fixtures_dir):
    loaded = create_model(fixtures_dir / "hf-tiny")
    fresh = create_model(fixtures_dir / "hf-tiny", pretrained=False, seed=0)
    assert fresh.config.depths == loaded.config.depths and type(fresh) is type(loaded)
    assert not torch.equal(fresh.classifier.weight, loaded.classifier.weight)


def test_hub_id_and_pretrained_preset_load_through_the_cache(fixtures_dir, monkeypatch):
    from efficientformer import presets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = str(fixtures_dir / "hub")
    model = create_model("efficientformer-fixtures/hf-tiny", cache_dir=cache)
    assert type(model) is modeling.EfficientFormerForImageClassificationWithTeacher
    released = dataclasses.replace(presets.WEIGHTS["l1"], hub_id="efficientformer-fixtures/hf-tiny")
    monkeypatch.setitem(presets.WEIGHTS, "l1", released)
    pretrained = create_model("l1", pretrained=True, cache_dir=cache)
    assert torch.equal(pretrained.classifier.weight, model.classifier.weight)


def test_an_existing_path_wins_over_a_preset_name(fixtures_dir, tmp_path, monkeypatch):
    shutil.copytree(fixtures_dir / "hf-tiny", tmp_path / "l1")
    monkeypatch.chdir(tmp_path)
    assert create_model("l1").config.depths == [1, 1, 1, 2]


def test_new_labels_with_ignore_mismatched_sizes(fixtures_dir):
    model = create_model(fixtures_dir / "hf-tiny", task="classification", num_labels=7, ignore_mismatched_sizes=True)
    assert model.classifier.weight.shape[0] == 7


def test_task_for_reads_both_backends_names():
    assert task_for(["classifier/kernel:0", "distillation_classifier/bias:0"]) == "distillation"
    assert task_for(["classifier.weight", "efficientformer.layernorm.weight"]) == "classification"
    assert task_for(["efficientformer/layernorm/gamma:0"]) == "backbone"


def test_keras_backend_builds_the_tf_classes(fixtures_dir):
    pytest.importorskip("keras")
    import efficientformer as keras_modeling

    model = create_model("l1", backend="keras", task="classification", depths=[1, 1, 1, 1], num_labels=3)
    assert type(model) is keras_modeling.TFEfficientFormerForImageClassification
    loaded = create_model(fixtures_dir / "hf-tiny", backend="keras")
    assert type(loaded) is keras_modeling.TFEfficientFormerForImageClassificationWithTeacher
    with pytest.raises(InputError, match="seed"):
        create_model("l1", backend="keras", seed=0)


def test_import_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; import efficientformer; efficientformer.list_models(); "
            "import efficientformer.factory; assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ every builder goes through create_model
def test_builders_agree_with_create_model(fixtures_dir):
    from efficientformer.benchmarking import build_model as bench_model
    from efficientformer.deploy.export import PRESET_SEED, load_model
    from efficientformer.training.build import build_model as train_model
    from efficientformer.training.teacher import load_teacher

    folder = fixtures_dir / "hf-tiny"
    reference = create_model(folder)
    teacher = load_teacher(str(folder), num_labels=3)
    assert type(teacher) is type(reference) and not any(p.requires_grad for p in teacher.parameters())
    assert torch.equal(teacher.classifier.weight, reference.classifier.weight)
    exported = load_model("l1")
    assert torch.equal(exported.classifier.weight, create_model("l1", seed=PRESET_SEED).classifier.weight)
    assert torch.equal(bench_model("l1", seed=1).classifier.weight, create_model("l1", seed=1).classifier.weight)
    student = train_model("l1", ["a", "b"], distillation_head=False, arch={"depths": [1, 1, 1, 1]})
    assert type(student) is modeling.EfficientFormerForImageClassification and student.training
    assert student.config.id2label == {0: "a", 1: "b"}
    tuned = train_model(str(folder), ["a", "b"])
    assert type(tuned) is modeling.EfficientFormerForImageClassificationWithTeacher
    assert torch.equal(tuned.efficientformer.layernorm.weight, reference.efficientformer.layernorm.weight)


def test_a_backbone_teacher_is_refused(fixtures_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from efficientformer.errors import CheckpointError
    from efficientformer.training.teacher import load_teacher

    state = load_file(fixtures_dir / "hf-tiny" / "model.safetensors")
    save_file({k: v for k, v in state.items() if k.startswith("efficientformer.")}, tmp_path / "backbone.safetensors")
    with pytest.raises(CheckpointError, match="backbone without a classification head"):
        load_teacher(str(tmp_path / "backbone.safetensors"), num_labels=3)
