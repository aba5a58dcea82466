"""`ImageClassifier`: images in, named classes with scores out, in three lines.

Example:
    >>> from efficientformer import ImageClassifier
    >>> classifier = ImageClassifier.from_pretrained("snap-research/efficientformer-l1-300")  # doctest: +SKIP
    >>> classifier.predict("cat.jpg", top_k=2)  # doctest: +SKIP
    [[Prediction(label='tabby, tabby cat', index=281, score=0.71), Prediction(label='tiger cat', index=282, ...)]]
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import InputError, require


@dataclass(frozen=True)
class Prediction:
    """One class of one image: its name, its index in the model's head and its probability."""

    label: str
    index: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageClassifier:
    """An EfficientFormer classifier with its preprocessing: `predict(images)` returns named classes.

    Uses the distillation model's averaged logits when the checkpoint has a distillation head (the
    paper's inference), else the class head. Preprocessing comes from the checkpoint
    (`preprocessor_config.json`, or timm's `pretrained_cfg`), else the released models' settings
    (shortest edge 256, bicubic, center crop 224, ImageNet mean/std). Scores are softmax probabilities
    (sigmoid for multi-label models).

    Args:
        model: an EfficientFormer classification model (PyTorch) in eval mode.
        processor: the `EfficientFormerImageProcessor` that prepares its inputs.
        device: where to run (`"cpu"`, `"cuda"`, a `torch.device`); None keeps the model's.

    Example:
        >>> classifier = ImageClassifier.from_pretrained("path/to/checkpoint", device="cpu")  # doctest: +SKIP
        >>> [p.label for p in classifier.predict(["a.jpg", "b.png"], top_k=1)[1]]  # doctest: +SKIP
        ['coffee mug']
    """

    def __init__(self, model, processor, device=None) -> None:
        torch = require("torch", "torch", "ImageClassifier")
        self.model = model.eval()
        self.processor = processor
        if device is not None:
            self.model.to(torch.device(device))
        self.config = model.config

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def labels(self) -> dict[int, str]:
        return dict(self.config.id2label)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, device: str | None = None,
                        **hub_kwargs: Any) -> "ImageClassifier":
        """Load a classifier from any checkpoint `efficientformer.checkpoints.load_checkpoint` reads.

        Args:
            name_or_path: folder, hub id or weights file (transformers, timm or original layout); None
                loads the model bundled with the package (Fashion-MNIST, see `efficientformer.bundled`).
            device: `"cpu"`, `"cuda"`, ...; None picks CUDA when available.
            **hub_kwargs: revision, cache_dir, local_files_only, token, allow_training_args.

        Raises:
            CheckpointError: unreadable checkpoint, or one without a classification head.
        """
        torch = require("torch", "torch", "ImageClassifier")
        if name_or_path is None:
            from .bundled import default_model_path

            name_or_path = default_model_path()
        from .checkpoints import load_checkpoint
        from .convert import build_model
        from .errors import CheckpointError
        from .modeling_torch import EfficientFormerModel
        from .processing import EfficientFormerImageProcessor

        checkpoint = load_checkpoint(name_or_path, **hub_kwargs)
        model = build_model(checkpoint)
        if isinstance(model, EfficientFormerModel):
            raise CheckpointError(f"{checkpoint.source} holds a backbone without a classification head, so it cannot "
                                  "name classes; fine-tune a head first (efficientformer train).")
        from .presets import RELEASED_PREPROCESSING

        processor = EfficientFormerImageProcessor(**(checkpoint.processor or RELEASED_PREPROCESSING))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            from .errors import InputError

            raise InputError(f"device {device!r} was requested but PyTorch sees no CUDA GPU; use device='cpu'.")
        return cls(model, processor, device=device)

    def _pixel_values(self, images: Sequence[Any]):
        import torch

        batch = self.processor(list(images), return_tensors="np")["pixel_values"]
        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)

    def logits(self, images: Sequence[Any]):
        """(B, num_labels) float32 logits for a batch of images (paths, PIL images or arrays)."""
        import torch

        with torch.inference_mode():
            return self.model(self._pixel_values(images)).logits.float()

    def predict(self, images: Any, top_k: int = 5, batch_size: int = 32) -> list[list[Prediction]]:
        """The `top_k` most likely classes of each image.

        Args:
            images: one image or a list of them: file paths (str or Path), PIL images, or numpy arrays
                (HWC uint8, or what `EfficientFormerImageProcessor` accepts).
            top_k: classes per image (at most the number of labels).
            batch_size: images per forward pass.

        Returns:
            One list of `Prediction(label, index, score)` per image, best first.

        Raises:
            InputError: an image cannot be opened or decoded, or `top_k`/`batch_size` is not positive.
        """
        if top_k < 1 or batch_size < 1:
            raise InputError(f"top_k and batch_size must be positive, got top_k={top_k}, batch_size={batch_size}.")
        items = [images] if _is_single(images) else list(images)
        results: list[list[Prediction]] = []
        for start in range(0, len(items), batch_size):
            results.extend(self.rank(self.logits(items[start:start + batch_size]), top_k))
        return results

    def rank(self, logits, top_k: int) -> list[list[Prediction]]:
        """Turn (B, num_labels) logits into the `top_k` records of each row."""
        import torch

        if self.config.problem_type == "multi_label_classification":
            scores = torch.sigmoid(logits)
        else:
            scores = torch.softmax(logits, dim=-1)
        k = min(top_k, scores.shape[-1])
        values, indices = scores.topk(k, dim=-1)
        names = self.config.id2label
        return [[Prediction(label=str(names.get(int(i), i)), index=int(i), score=float(v))
                 for v, i in zip(row_values.tolist(), row_indices.tolist())]
                for row_values, row_indices in zip(values.cpu(), indices.cpu())]


def _is_single(images: Any) -> bool:
    if isinstance(images, (str, os.PathLike)):
        return True
    if isinstance(images, np.ndarray):
        return images.ndim in (2, 3)
    try:
        from PIL import Image

        if isinstance(images, Image.Image):
            return True
    except ImportError:  # pragma: no cover
        pass
    return not isinstance(images, Iterable) or hasattr(images, "shape") and len(images.shape) <= 3

