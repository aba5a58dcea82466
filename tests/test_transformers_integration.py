"""Our classes inside transformers 5 (`efficientformer.integrations.transformers`): the Auto classes and
`pipeline` on the released layout with our scores, and a `Trainer` run whose folder both libraries load."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from efficientformer.integrations import transformers as integration

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
needs_5 = pytest.mark.skipif(not TRANSFORMERS_5, reason="transformers 4.x owns model_type 'efficientformer'")
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")


@pytest.fixture(scope="module")
def registered():
    if not integration.register():
        pytest.skip("transformers 4.x owns model_type 'efficientformer'")
    return True


@pytest.fixture(scope="module")
def photos(fixtures_dir):
    from PIL import Image

    return [Image.open(fixtures_dir / "images" / name).convert("RGB") for name in PHOTOS]


def test_core_package_does_not_import_transformers():
    code = ("import sys, efficientformer, efficientformer.integrations\n"
            "efficientformer.EfficientFormerConfig\n"
            "assert 'transformers' not in sys.modules, 'transformers was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_register_follows_the_owner_of_the_type():
    assert integration.register() is TRANSFORMERS_5
    assert integration.register() is TRANSFORMERS_5  # a second call changes nothing
    if not TRANSFORMERS_5:  # transformers 4's own classes keep the type
        from transformers import AutoConfig

        assert AutoConfig.for_model("efficientformer").__module__.startswith("transformers.")


@needs_5
def test_auto_classes_and_pipeline_match_our_classifier(registered, fixtures_dir, photos):
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    from efficientformer import ImageClassifier

    folder = str(fixtures_dir / "hf-small")
    assert isinstance(AutoConfig.from_pretrained(folder), integration.EfficientFormerConfig)
    model = AutoModelForImageClassification.from_pretrained(folder)
    assert type(model) is integration.EfficientFormerForImageClassificationWithTeacher
    assert isinstance(AutoImageProcessor.from_pretrained(folder), integration.EfficientFormerImageProcessor)
    ours = ImageClassifier.from_pretrained(folder)
    expected = [{p.label: p.score for p in row} for row in ours.predict(photos, top_k=10)]
    for classifier in (pipeline("image-classification", model=folder),
                       pipeline("image-classification", model=model, image_processor=folder)):
        got = classifier(photos, top_k=10)
        for row, want in zip(got, expected):
            assert {r["label"] for r in row} == set(want)
            np.testing.assert_allclose([r["score"] for r in row], [want[r["label"]] for r in row], atol=1e-5)
    # the backbone: the released folder's tokens, through AutoModel
    backbone = AutoModel.from_pretrained(folder)
    assert type(backbone) is integration.EfficientFormerModel
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        np.testing.assert_allclose(backbone(pixels).last_hidden_state.numpy(),
                                   ours.model.efficientformer(pixels).last_hidden_state.numpy(), atol=1e-5)


class _Photos(torch.utils.data.Dataset):
    def __init__(self, processor, images, labels):
        self.pixels = processor(images, return_tensors="pt")["pixel_values"]
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.pixels[i], "labels": self.labels[i]}


@needs_5
def test_trainer_saves_a_folder_both_libraries_load(registered, fixtures_dir, photos, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments

    from efficientformer import EfficientFormerForImageClassificationWithTeacher as Ours

    folder = str(fixtures_dir / "hf-small")
    names = {0: "animal", 1: "object"}
    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForImageClassification.from_pretrained(folder, id2label=names, ignore_mismatched_sizes=True)
    data = _Photos(processor, photos, [0, 1, 1, 0])
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2,
                             per_device_eval_batch_size=4, learning_rate=1e-3, use_cpu=True, report_to=[],
                             save_strategy="steps", save_steps=2, logging_steps=1, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=processor)
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"  # every checkpoint is a complete folder
    assert {"config.json", "preprocessor_config.json", "model.safetensors"} <= {p.name for p in checkpoint.iterdir()}
    args.max_steps = 3
    resumed = Trainer(model=model, args=args, train_dataset=data, processing_class=processor)
    assert resumed.train(resume_from_checkpoint=str(checkpoint)).global_step == 3
    predictions = trainer.predict(data)
    assert isinstance(predictions.predictions, np.ndarray) and predictions.predictions.shape == (4, 2)

    saved = tmp_path / "saved"
    trainer.save_model(str(saved))
    assert {"config.json", "preprocessor_config.json", "model.safetensors"} <= {p.name for p in saved.iterdir()}
    config = json.loads((saved / "config.json").read_text())
    assert config["model_type"] == "efficientformer" and config["id2label"] == {"0": "animal", "1": "object"}

    again = AutoModelForImageClassification.from_pretrained(str(saved))
    ours = Ours.from_pretrained(str(saved))
    assert again.config.id2label == names and ours.config.id2label == names
    assert isinstance(AutoImageProcessor.from_pretrained(str(saved)), integration.EfficientFormerImageProcessor)
    pixels = data.pixels
    with torch.no_grad():
        expected = ours(pixels).logits.numpy()
        np.testing.assert_allclose(again.eval()(pixels).logits.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(predictions.predictions, expected, atol=1e-4)


@needs_5
def test_config_round_trip_and_errors(registered):
    from efficientformer import EfficientFormerConfig as OurConfig
    from efficientformer.errors import ConfigError

    ours = OurConfig.from_preset("l1", num_labels=3)
    theirs = integration.EfficientFormerConfig.from_efficientformer(ours)
    assert theirs.to_efficientformer() == ours and theirs.num_labels == 3
    with pytest.raises(ConfigError, match="dim"):
        integration.EfficientFormerConfig(dim=7)


@needs_5
def test_from_config_builds_a_trainable_model(registered):
    from transformers import AutoModelForImageClassification

    from conftest import tiny_settings

    config = integration.EfficientFormerConfig(**tiny_settings("export"))
    model = AutoModelForImageClassification.from_config(config)
    assert type(model) is integration.EfficientFormerForImageClassification
    out = model(torch.randn(2, 3, 64, 64), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)
    assert model.efficientformer_model.classifier is model.classifier  # one set of weights


def test_efficientformer_v2_behind_the_auto_classes_pipeline_and_trainer(fixtures_dir, photos, tmp_path):
    """"efficientformer_v2" is free in every transformers version: registered, the Auto classes and pipeline
    load our V2 folder with our scores, and a Trainer run saves a folder both libraries load."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments, pipeline

    from efficientformer import EfficientFormerV2ForImageClassificationWithTeacher as OursV2
    from efficientformer import ImageClassifier

    integration.register()
    folder = tmp_path / "v2"
    OursV2.from_pretrained(str(fixtures_dir / "timm-v2-tiny" / "hub")).save_pretrained(str(folder))
    model = AutoModelForImageClassification.from_pretrained(str(folder))
    assert type(model) is integration.EfficientFormerV2ForImageClassificationWithTeacher
    ours = ImageClassifier.from_pretrained(str(folder))
    expected = [{p.label: p.score for p in row} for row in ours.predict(photos, top_k=5)]
    # transformers 4 resolves the processor by the class name in preprocessor_config.json, its own
    # EfficientFormerImageProcessor (without timm's crop_pct): ours is named there
    processor = None if TRANSFORMERS_5 else integration.EfficientFormerImageProcessor.from_pretrained(str(folder))
    classify = pipeline("image-classification", model=str(folder), image_processor=processor)
    for row, want in zip(classify(photos, top_k=5), expected):
        np.testing.assert_allclose([r["score"] for r in row], [want[r["label"]] for r in row], atol=1e-5)

    names = {0: "animal", 1: "object"}
    processor = processor or AutoImageProcessor.from_pretrained(str(folder))
    model = AutoModelForImageClassification.from_pretrained(str(folder), id2label=names, ignore_mismatched_sizes=True)
    data = _Photos(processor, photos, [0, 1, 1, 0])
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2,
                             use_cpu=True, report_to=[], save_strategy="no", dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=processor)
    trainer.train()
    assert trainer.predict(data).predictions.shape == (4, 2)
    trainer.save_model(str(tmp_path / "saved"))
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["model_type"] == "efficientformer_v2" and config["id2label"] == {"0": "animal", "1": "object"}
    again, ours = AutoModelForImageClassification.from_pretrained(str(tmp_path / "saved")), OursV2.from_pretrained(
        str(tmp_path / "saved"))
    assert ours.config.id2label == names
    with torch.no_grad():
        np.testing.assert_allclose(again.eval()(data.pixels).logits.numpy(), ours(data.pixels).logits.numpy(),
                                   atol=1e-5)
