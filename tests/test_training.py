"""Training: data sources, augmentation, losses, exact resume, distillation, DDP and the train/eval commands.

Everything runs a tiny EfficientFormer (widths 8..32) on 32x32 synthetic images for a few steps, so the
whole file takes seconds on two CPU cores.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from efficientformer.errors import InputError  # noqa: E402
from efficientformer.training import data as D  # noqa: E402
from efficientformer.training.augment import AugmentConfig, BatchAugment, MixupCutmix, one_hot  # noqa: E402
from efficientformer.training.losses import training_loss  # noqa: E402
from efficientformer.training.trainer import TrainConfig, train  # noqa: E402

TINY = {"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 24, 32], "num_attention_heads": 2, "key_dim": 8}
CLASSES = ("red", "green", "blue")


def _write_images(root: Path, per_class: int = 8, size: int = 36) -> Path:
    """Class k: noisy images whose channel k is bright, so a tiny model can learn them in a few steps."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 70, (size, size, 3), dtype=np.uint8)
            pixels[..., k] += 160
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return _write_images(tmp_path_factory.mktemp("images"))


def _config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), output_dir=str(out), image_size=32, model="l1", arch=TINY, epochs=2,
                    batch_size=6, lr=3e-3, warmup_epochs=0.25, workers=0, log_every=1, progress=False,
                    crop_scale=(0.5, 1.0), seed=0)
    settings.update(overrides)
    return TrainConfig(**settings)


# ------------------------------------------------------------------------------------------------ data
def test_image_folder_and_csv_give_the_same_images(image_folder, tmp_path):
    folder = D.load_dataset(image_folder, spec=D.DataSpec(size=32))
    assert folder.class_names == sorted(CLASSES) and len(folder) == 24
    rows = ["path,label"] + [f"{p},{Path(p).parent.name}" for p in folder.paths]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    table = D.load_dataset(tmp_path / "data.csv", spec=D.DataSpec(size=32))
    assert table.class_names == folder.class_names
    image, label = table[5]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert torch.equal(image, folder[5][0]) and label == folder[5][1]


def test_hugging_face_style_dataset_wrapper():
    from PIL import Image

    class FakeHF:  # the part of datasets.Dataset the wrapper uses
        column_names = ["img", "label"]

        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, key):
            return [r[key] for r in self.rows] if isinstance(key, str) else self.rows[key]

        def select(self, keep):
            return FakeHF([self.rows[i] for i in keep])

    rows = [{"img": Image.new("L", (20, 20), 40 * i), "label": i % 2} for i in range(4)]
    ds = D.HFImageDataset(FakeHF(rows), "img", "label", ["even", "odd"], size=32)
    image, label = ds[3]
    assert image.shape == (3, 32, 32) and int(image[0, 0, 0]) == 120 and label == 1
    assert len(ds.subset([0, 3])) == 2
    with pytest.raises(InputError, match="no column 'image'"):
        D.HFImageDataset(FakeHF(rows), "image", "label", ["even", "odd"], size=32)


def test_idx_reader_roundtrip(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 3, 9, 1, 2], dtype=np.uint8)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">4B3I", 0, 0, 8, 3, 5, 28, 28) + images.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">4BI", 0, 0, 8, 1, 5) + labels.tobytes())
    ds = D.load_dataset(tmp_path, "test", D.DataSpec(size=28, channels=1))
    assert ds.images.shape == (5, 1, 28, 28)
    assert np.array_equal(ds.images[:, 0].numpy(), images) and ds.labels.tolist() == [0, 3, 9, 1, 2]
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(InputError, match="truncated"):
        D.read_idx(tmp_path / "bad-images-idx3-ubyte")


def test_bad_data_errors_name_the_file(image_folder, tmp_path):
    broken = _write_images(tmp_path / "broken", per_class=2)
    (broken / "red" / "oops.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="oops.png"):
        D.load_dataset(broken)
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    with pytest.raises(InputError, match="cat"):
        D.load_dataset(empty)
    with pytest.raises(InputError, match="no class sub-folders"):
        D.load_dataset(tmp_path / "empty" / "cat")
    first = next((image_folder / "red").iterdir())
    (tmp_path / "labels.csv").write_text(f"{first},0\n{first},7\n")
    with pytest.raises(InputError, match="line 2: label 7 is out of range"):
        D.read_csv_labels(tmp_path / "labels.csv", num_classes=3)


def test_image_broken_past_its_header_fails_in_training_with_its_name(tmp_path):
    data = _write_images(tmp_path / "truncated", per_class=4)
    whole = (data / "green" / "2.png").read_bytes()
    (data / "green" / "2.png").write_bytes(whole[:120])  # the header reads, the pixels do not
    with pytest.raises(InputError, match=r"cannot read image .*green.2\.png"):
        train(_config(data, tmp_path / "out", workers=1, epochs=1))


def test_epoch_batches_shard_and_repeat():
    a = D.epoch_batches(20, 4, epoch=3, seed=1)
    assert [b.tolist() for b in a] == [b.tolist() for b in D.epoch_batches(20, 4, epoch=3, seed=1)]
    assert a[0].tolist() != D.epoch_batches(20, 4, epoch=4, seed=1)[0].tolist()
    r0 = D.epoch_batches(20, 4, 3, 1, rank=0, world_size=2)
    r1 = D.epoch_batches(20, 4, 3, 1, rank=1, world_size=2)
    seen = torch.cat(r0 + r1)
    assert len(r0) == len(r1) == 2 and seen.unique().numel() == seen.numel() == 16


# -------------------------------------------------------------------------------------------- augment
def test_augmentation_shapes_ranges_and_replay():
    aug = BatchAugment(AugmentConfig(image_size=24, randaugment_ops=2, random_erase=0.5), seed=3)
    images = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8)
    state = aug.state_dict()
    out = aug(images)
    assert out.shape == (16, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    aug.load_state_dict(state)
    assert torch.equal(aug(images), out)  # the generator state replays the same augmentation
    plain = BatchAugment(AugmentConfig(image_size=40, crop_scale=None, hflip=0.0), seed=0)
    assert torch.allclose(plain(images), images.float() / 255, atol=1e-5)  # identity when all is off
    flip = BatchAugment(AugmentConfig(image_size=40, crop_scale=None, hflip=1.0), seed=0)
    assert torch.allclose(flip(images), images.flip(-1).float() / 255, atol=1e-5)


def test_mixup_cutmix_targets_and_label_smoothing():
    target = one_hot(torch.tensor([2]), 4, smoothing=0.2)
    assert torch.allclose(target, torch.tensor([[0.05, 0.05, 0.85, 0.05]]))
    mix = MixupCutmix(5, mixup_alpha=0.8, cutmix_alpha=1.0, smoothing=0.1, seed=0)
    labels = torch.tensor([0, 1, 2, 3])
    for _ in range(6):
        x, y = mix(torch.rand(4, 3, 16, 16), labels)
        assert x.shape == (4, 3, 16, 16) and y.shape == (4, 5)
        assert torch.allclose(y.sum(1), torch.ones(4))
        assert (y.argmax(1) == labels).sum() + (y.argmax(1) == labels.flip(0)).sum() >= 4


# --------------------------------------------------------------------------------------------- losses
def test_losses_without_and_with_a_teacher():
    from efficientformer.models.outputs import ImageClassifierWithTeacherOutput

    cls, dist = torch.randn(4, 3), torch.randn(4, 3)
    out = ImageClassifierWithTeacherOutput(logits=(cls + dist) / 2, cls_logits=cls, distillation_logits=dist)
    labels = torch.tensor([0, 1, 2, 0])
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(training_loss(out, labels), (ce(cls, labels) + ce(dist, labels)) / 2)
    teacher = torch.tensor([[0.0, 5, 0]] * 4)
    hard = training_loss(out, labels, teacher, "hard", alpha=0.5)
    assert torch.allclose(hard, 0.5 * ce(cls, labels) + 0.5 * ce(dist, torch.ones(4, dtype=torch.long)))
    soft_same = training_loss(out, labels, dist.clone(), "soft", alpha=1.0)
    assert float(soft_same) == pytest.approx(0.0, abs=1e-6)  # KL to itself


# ----------------------------------------------------------------------------------------- training
def test_training_lowers_the_loss_and_exports_a_model(image_folder, tmp_path):
    losses = []
    result = train(_config(image_folder, tmp_path / "run", epochs=4, val_split=0.25, ema_decay=0.9,
                           randaugment_ops=1, mixup=0.2, cutmix=1.0, drop_path_rate=0.1),
                   on_step=lambda step, loss: losses.append(loss))  # noqa: E501
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    model_dir = Path(result.model_dir)
    assert {p.name for p in model_dir.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    processor = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32} and processor["do_center_crop"] is False
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3, 4]
    for name in ("curves.png", "confusion.png", "epochs.csv", "summary.json"):
        assert (tmp_path / "run" / name).is_file()


def test_stop_and_resume_gives_the_same_weights(image_folder, tmp_path):
    settings = dict(epochs=3, ema_decay=0.9, randaugment_ops=2, mixup=0.2, cutmix=1.0, drop_path_rate=0.1,
                    random_erase=0.3)
    whole = train(_config(image_folder, tmp_path / "whole", **settings))
    first = train(_config(image_folder, tmp_path / "parts", stop_after_steps=5, **settings))
    assert first.stopped_early and first.model_dir is None and (tmp_path / "parts" / "last.pt").is_file()
    resumed = train(_config(image_folder, tmp_path / "parts", resume="auto", **settings))
    assert resumed.global_step == whole.global_step == 12
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = [("images_per_s", "time_s")]
    def clean(path):  # noqa: E306
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in strip[0]} for r in rows]
    assert clean(tmp_path / "whole" / "metrics.jsonl") == clean(tmp_path / "parts" / "metrics.jsonl")


def test_distillation_uses_the_teacher(image_folder, tmp_path):
    class AlwaysClassZero(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            logits = torch.zeros(x.shape[0], 3)
            logits[:, 0] = 10.0
            return logits

    teacher = AlwaysClassZero()
    result = train(_config(image_folder, tmp_path / "kd", epochs=6, crop_scale=None, label_smoothing=0.0,
                           distillation="hard", lr=5e-3), teacher=teacher)
    assert teacher.calls == result.global_step
    model = result.model.eval()
    images = D.load_dataset(image_folder, spec=D.DataSpec(size=32))
    x = torch.stack([images[i][0] for i in range(len(images))]).float() / 255
    from efficientformer.presets import IMAGENET_MEAN, IMAGENET_STD
    from efficientformer.training.augment import normalize

    with torch.no_grad():
        out = model(normalize(x, IMAGENET_MEAN, IMAGENET_STD))
    # the distillation head follows the teacher (always class 0) much more than the class head does
    dist_zero = (out.distillation_logits.argmax(1) == 0).float().mean()
    cls_zero = (out.cls_logits.argmax(1) == 0).float().mean()
    assert dist_zero >= cls_zero + 0.25, (dist_zero, cls_zero)


def test_bad_settings_fail_before_training(image_folder, tmp_path):
    from efficientformer.errors import ConfigError

    with pytest.raises(ConfigError, match="precision"):
        train(_config(image_folder, tmp_path / "x", precision="fp8"))
    with pytest.raises(InputError, match="fewer than one batch"):
        train(_config(image_folder, tmp_path / "y", batch_size=1000))


# -------------------------------------------------------------------------------------------- CLI
def test_train_and_eval_commands(image_folder, tmp_path, capsys):
    from efficientformer.cli import main

    out = tmp_path / "cli"
    code = main(["train", str(image_folder), "--output", str(out), "--image-size", "32", "--depths", "1,1,1,1",
                 "--hidden-sizes", "8,16,24,32", "--num-attention-heads", "2", "--key-dim", "8", "--epochs", "1",
                 "--batch-size", "6", "--workers", "0", "--no-progress"])
    assert code == 0 and (out / "model" / "model.safetensors").is_file()
    # the trained model serves as a teacher for another run (our own model as teacher, from its folder)
    code = main(["train", str(image_folder), "--output", str(tmp_path / "student"), "--image-size", "32",
                 "--depths", "1,1,1,1", "--hidden-sizes", "8,16,24,32", "--num-attention-heads", "2", "--key-dim", "8",
                 "--batch-size", "6", "--workers", "0", "--no-progress", "--teacher", str(out / "model"),
                 "--distillation", "soft", "--stop-after-steps", "2"])
    assert code == 0 and (tmp_path / "student" / "last.pt").is_file()
    capsys.readouterr()
    picture = tmp_path / "cm.png"
    code = main(["eval", str(image_folder), "--model", str(out / "model"), "--confusion", str(picture),
                 "--json", str(tmp_path / "eval.json"), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0 and "top-1:" in printed and "top-5: 100.00%" in printed
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["images"] == 24 and np.array(figures["confusion"]).sum() == 24
    from PIL import Image

    with Image.open(picture) as image:
        assert image.size[0] > 100
    assert main(["eval", str(tmp_path / "nowhere"), "--model", str(out / "model")]) == 2


def test_a_v2_teacher_distils_into_a_v1_student(image_folder, tmp_path):
    """`teacher=` an EfficientFormerV2 folder (the other family) trains a V1 student: a finite distillation loss
    at every step, and a V1 folder written."""
    from conftest import tiny_config_v2
    from efficientformer import EfficientFormerConfig, EfficientFormerV2ForImageClassificationWithTeacher

    teacher = EfficientFormerV2ForImageClassificationWithTeacher(tiny_config_v2(num_labels=3, image_size=32)).eval()
    teacher.save_pretrained(str(tmp_path / "v2-teacher"))
    result = train(_config(image_folder, tmp_path / "kd", epochs=1, distillation="soft",
                           teacher=str(tmp_path / "v2-teacher")))
    rows = [json.loads(line) for line in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert result.global_step == len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert EfficientFormerConfig.from_pretrained(str(result.model_dir)).model_type == "efficientformer"
