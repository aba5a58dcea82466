"""`ImageClassifier`: images in, named classes with scores out, in three lines.

It runs a checkpoint through PyTorch, or an exported `.onnx` file through onnxruntime (no PyTorch
needed), whose labels and preprocessing come from the file's metadata (`efficientformer.deploy.metadata`).

Example:
    >>> from efficientformer import ImageClassifier
    >>> classifier = ImageClassifier.from_pretrained("snap-research/efficientformer-l1-300")  # doctest: +SKIP
    >>> classifier.predict("cat.jpg", top_k=2)  # doctest: +SKIP
    [[Prediction(label='tabby, tabby cat', index=281, score=0.71), Prediction(label='tiger cat', index=282, ...)]]
    >>> ImageClassifier.from_pretrained("l1.onnx").predict("cat.jpg", top_k=1)  # doctest: +SKIP
    [[Prediction(label='tabby, tabby cat', index=281, score=0.71)]]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

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
                        **hub_kwargs: Any) -> ImageClassifier:
        """Load a classifier from any checkpoint `efficientformer.checkpoints.loading.load_checkpoint` reads, or
        from an `.onnx` file written by `efficientformer export` (see `OnnxImageClassifier`).

        Args:
            name_or_path: folder, hub id or weights file (transformers, timm or original layout), or an
                exported `.onnx` file; None loads the model bundled with the package (Fashion-MNIST, see
                `efficientformer.bundled`).
            device: `"cpu"`, `"cuda"`, ...; None picks CUDA when available.
            **hub_kwargs: revision, cache_dir, local_files_only, token, allow_training_args.

        Raises:
            CheckpointError: unreadable checkpoint, one without a classification head, or an `.onnx` file
                without this package's metadata.
            MissingDependencyError: PyTorch (checkpoints) or onnxruntime (`.onnx` files) is not installed.
        """
        if name_or_path is not None and os.fspath(name_or_path).lower().endswith(".onnx"):
            return OnnxImageClassifier.from_file(name_or_path, device=device)
        torch = require("torch", "torch", "ImageClassifier")
        if name_or_path is None:
            from .bundled import default_model_path

            name_or_path = default_model_path()
        from .checkpoints.folder import DEFAULT as DEFAULT_PROCESSOR, processor_for
        from .checkpoints.loading import load_checkpoint
        from .errors import CheckpointError
        from .factory import create_model, task_for

        checkpoint = load_checkpoint(name_or_path, **hub_kwargs)
        if task_for(checkpoint.state_dict) == "backbone":  # before building: a backbone cannot name classes
            raise CheckpointError(f"{checkpoint.source} holds a backbone without a classification head, so it cannot "
                                  "name classes; fine-tune a head first (efficientformer train).")
        model = create_model(checkpoint)
        processor = processor_for(checkpoint.processor or DEFAULT_PROCESSOR)
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
        return self.logits_from_pixels(self._pixel_values(images))

    def logits_from_pixels(self, pixel_values):
        """(B, num_labels) float32 logits for `pixel_values` already on the model's device (cast to the
        model's dtype; `self.model` may also be `efficientformer.deploy.optimize`'s network)."""
        import torch

        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            out = self.model(pixel_values if pixel_values.dtype == dtype else pixel_values.to(dtype))
            return (out.logits if hasattr(out, "logits") else out).float()  # optimize()'s network: logits

    def pixels_from_8bit(self, crops: np.ndarray):
        """uint8 (B, H, W, 3) crops (`EfficientFormerImageProcessor.crop_8bit`) -> the processor's exact
        (B, 3, H, W) float32 `pixel_values` on the model's device. On a GPU the uint8 batch goes through pinned
        memory with a non-blocking copy (a quarter of float32's bytes) and is looked up in the processor's
        table there."""
        import torch

        device = self.device
        table = getattr(self, "_tables", {}).get(str(device))
        if device.type != "cuda":
            values = np.empty((len(crops), 3) + crops.shape[1:3], dtype=np.float32)
            host = self.processor.lookup_table()
            for index, crop in enumerate(crops):
                for channel in range(3):
                    np.take(host[channel], crop[:, :, channel], out=values[index, channel], mode="clip")
            return torch.from_numpy(values)
        if table is None:
            table = torch.from_numpy(self.processor.lookup_table().reshape(-1)).to(device)
            self._tables = {**getattr(self, "_tables", {}), str(device): table}
        batch = torch.from_numpy(np.ascontiguousarray(crops)).pin_memory().to(device, non_blocking=True)
        index = batch.permute(0, 3, 1, 2).long() + torch.arange(0, 768, 256, device=device).view(1, 3, 1, 1)
        return table[index].contiguous()

    def predict(self, images: Any, top_k: int = 5, batch_size: int = 32, workers: int = 0
                ) -> list[list[Prediction]]:
        """The `top_k` most likely classes of each image.

        Args:
            images: one image or a list of them: file paths (str or Path), PIL images, or numpy arrays
                (HWC uint8, or what `EfficientFormerImageProcessor` accepts). A folder, a glob pattern, a
                `.csv` list or an `hf:NAME[:CONFIG]` / `hf:FOLDER` dataset stands for its images, in the
                order `predict_files` takes them (which also returns their names and reports unreadable
                files instead of raising). A `datasets.Dataset` object gives the images of its image column
                (the first with the Image feature, else "image" / "img"), decoded here batch by batch as
                its rows are by name (`workers` does not apply to it).
            top_k: classes per image (at most the number of labels).
            batch_size: images per forward pass.
            workers: for file paths, decode them in this many processes ahead of the model (the same
                numbers; 0 decodes in this process).

        Returns:
            One list of `Prediction(label, index, score)` per image, best first.

        Raises:
            InputError: an image cannot be opened or decoded, or `top_k`/`batch_size` is not positive.
        """
        if top_k < 1 or batch_size < 1:
            raise InputError(f"top_k and batch_size must be positive, got top_k={top_k}, batch_size={batch_size}.")
        from .preprocessing import hf_datasets

        if hf_datasets.is_dataset(images):  # a datasets.Dataset object: its image column, batch by batch
            from .preprocessing.image_io import row_image

            results = []
            for rows in hf_datasets.dataset_images(images, batch_size):
                batch = [row_image(stored, name) for name, stored in rows]
                results.extend(self.rank(self.logits(batch), top_k))
            return results
        items = _expand_sources([images] if _is_single(images) else list(images))
        if workers and items and all(isinstance(item, (str, os.PathLike)) for item in items):
            from .bulk.runner import predict_paths

            paths = [os.fspath(item) for item in items]
            done = predict_paths(self, paths, top_k=top_k, batch_size=batch_size, workers=workers)
            if done.failed:
                raise InputError(done.failed[0][1])
            return [predictions for _, predictions in done.predictions]
        results: list[list[Prediction]] = []
        for start in range(0, len(items), batch_size):
            results.extend(self.rank(self.logits(items[start:start + batch_size]), top_k))
        return results

    def predict_files(self, sources: Any, top_k: int = 5, batch_size: int = 32, workers: int | None = None,
                      output: str | os.PathLike | None = None, progress: bool = False, keep: bool = True,
                      draft: bool = False, decode: str = "cpu", split: str | None = None,
                      image_column: str | None = None):
        """Classify every image file of `sources` (files, folders, glob patterns, `.csv` lists, `.tar` shards,
        the rows of `hf:` datasets, named "hf:SOURCE/SPLIT/ROW"), in bulk:
        worker processes decode ahead of the model, bad files are reported rather than raised, and with
        `output` (`.jsonl` or `.csv`) each batch's records are appended as it is done, and a rerun skips the
        images already there (`efficientformer.bulk`).

        Args:
            sources: one source or a list of them (see `efficientformer.bulk.sources`).
            workers: decoding processes; None: one per core but one (none for a single batch); 0: here.
                They are started with "spawn", which imports the calling script again: a script that uses
                workers needs the usual `if __name__ == "__main__":` guard around its work.
            output: results file to append to and resume from.
            progress: report images/s on stderr (`efficientformer.bulk.progress`).
            keep: keep this call's predictions in the result (False for millions of files with `output`).
            draft: decode JPEGs at a reduced DCT scale that still covers the resize (much faster for photos
                far larger than the model's input; not exact, see `efficientformer predict --draft`).
            decode: "cpu" (exact, worker processes) or "gpu": nvJPEG decodes the JPEGs on the model's CUDA GPU,
                which also resizes and normalizes them (`efficientformer.preprocessing.gpu_decode`, within its
                stated tolerance; `workers` then counts the processes that read the files, 0 threads).
                Needs torchvision.
            split, image_column: the split of `hf:` sources (None: "test", or the dataset's only split) and the
                column holding their images (None: the first with the Image feature), as
                `efficientformer predict --split / --image-column`.

        Returns:
            `BulkResult`: `.predictions` [(path, [Prediction, ...])] of this call, `.failed` [(path, reason)]
            (unreadable files and what the folder search skipped), `.already_done` (images found in `output`).

        Raises:
            InputError: no images at all, bad `top_k`/`batch_size`, an `output` that is not a results file or
                was written with another `top_k`; `decode="gpu"` with a model that is not on a CUDA GPU.
            MissingDependencyError: `decode="gpu"` without a working torchvision.
        """
        from .bulk.progress import Progress
        from .bulk.runner import predict_paths
        from .bulk.sources import expand_inputs

        if top_k < 1 or batch_size < 1:
            raise InputError(f"top_k and batch_size must be positive, got top_k={top_k}, batch_size={batch_size}.")
        items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
        paths, skipped = expand_inputs([os.fspath(item) for item in items], split, image_column)
        if not paths:
            raise InputError(f"no image files found in {items}; pass image files, folders, globs or .csv lists.")
        result = predict_paths(self, paths, top_k=top_k, batch_size=batch_size, workers=workers, output=output,
                               progress=Progress if progress else None, keep=keep, draft=draft, decode=decode)
        result.failed = list(skipped) + result.failed
        return result

    def rank(self, logits, top_k: int) -> list[list[Prediction]]:
        """Turn (B, num_labels) logits (a torch tensor or a numpy array) into the `top_k` records of each row."""
        if isinstance(logits, np.ndarray):
            return self._rank_numpy(logits, top_k)
        import torch

        if self.config.problem_type == "multi_label_classification":
            scores = torch.sigmoid(logits)
        else:
            scores = torch.softmax(logits, dim=-1)
        if not bool(torch.isfinite(scores).all()):  # never report a NaN score as a prediction
            _refuse_non_finite(int((~torch.isfinite(scores)).any(dim=-1).sum()), len(scores))
        k = min(top_k, scores.shape[-1])
        values, indices = scores.topk(k, dim=-1)
        names = self.config.id2label
        return [[Prediction(label=str(names.get(int(i), i)), index=int(i), score=float(v))
                 for v, i in zip(row_values.tolist(), row_indices.tolist())]
                for row_values, row_indices in zip(values.cpu(), indices.cpu())]

    def _rank_numpy(self, logits: np.ndarray, top_k: int) -> list[list[Prediction]]:
        """`rank` for the numpy logits of an ONNX file (in float64, so no torch is needed)."""
        values = np.asarray(logits, np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite logits are refused just below
            if self.config.problem_type == "multi_label_classification":
                scores = 1.0 / (1.0 + np.exp(-values))
            else:
                shifted = np.exp(values - values.max(axis=-1, keepdims=True))
                scores = shifted / shifted.sum(axis=-1, keepdims=True)
        if not np.isfinite(scores).all():  # never report a NaN score as a prediction
            _refuse_non_finite(int((~np.isfinite(scores)).any(axis=-1).sum()), len(scores))
        k = min(top_k, scores.shape[-1])
        order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
        names = self.config.id2label
        return [[Prediction(label=str(names.get(int(i), i)), index=int(i), score=float(row[i])) for i in picks]
                for row, picks in zip(scores, order)]


class OnnxImageClassifier(ImageClassifier):
    """`ImageClassifier` over an `.onnx` file written by `efficientformer export`, run by onnxruntime: the
    labels, the model config and the preprocessing (made for the file's fixed image size) come from the
    file's metadata (`efficientformer.deploy.metadata`), so nothing but the file is needed, and no PyTorch.
    `logits` returns a numpy array; `predict` and `rank` are as for PyTorch models.

    Files without that metadata (exported by other tools, or by versions before 0.1.0 wrote it) are
    refused rather than run with guessed labels and preprocessing.

    Example:
        >>> classifier = ImageClassifier.from_pretrained("l1.onnx")  # doctest: +SKIP
        >>> classifier.image_size  # doctest: +SKIP
        (224, 224)
    """

    def __init__(self, session, processor, config, image_size: tuple[int, int], path: str) -> None:
        self.session = session
        self.processor = processor
        self.config = config
        self.model = None  # no PyTorch module: the session runs the file
        self.image_size = image_size
        self.path = path
        inputs = session.get_inputs()
        self._input = inputs[0].name
        batch = inputs[0].shape[0]
        self._batch = batch if isinstance(batch, int) and batch > 0 else None  # an export with --static-batch

    @property
    def device(self) -> str:
        return "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | None = None) -> OnnxImageClassifier:
        """Open an exported `.onnx` file with onnxruntime (CPU, or CUDA with `device="cuda"`, or when
        onnxruntime-gpu is installed and `device` is None).

        Raises:
            CheckpointError: the file is missing, not ONNX, without this package's metadata, or a backbone.
            InputError: `device="cuda"` but this onnxruntime has no CUDA provider.
            MissingDependencyError: onnxruntime is not installed.
        """
        from .config import MODEL_TYPE_V2, EfficientFormerConfig
        from .errors import CheckpointError
        from .deploy.metadata import check_metadata, decode, is_backbone, processor_for_size
        from .preprocessing.processor import EfficientFormerImageProcessor

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise CheckpointError(f"{path} does not exist; give the path of an .onnx file written by "
                                  "efficientformer export.")
        ort = require("onnxruntime", "export", "running an ONNX file")
        available = ort.get_available_providers()
        if device is not None and str(device).startswith("cuda") and "CUDAExecutionProvider" not in available:
            raise InputError(f"device {device!r} was requested but this onnxruntime has no CUDA provider; use "
                             "device='cpu' or install onnxruntime-gpu.")
        use_cuda = "CUDAExecutionProvider" in available and (device is None or str(device).startswith("cuda"))
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        state = ort.capi.onnxruntime_pybind11_state  # onnxruntime's own exception classes
        unreadable = (state.InvalidProtobuf, state.InvalidGraph, state.Fail, state.NoSuchFile, state.InvalidArgument)
        try:
            session = ort.InferenceSession(path, providers=providers)
        except unreadable as err:
            raise CheckpointError(f"{path} is not a readable ONNX model ({str(err).splitlines()[0]}); re-export "
                                  "it with efficientformer export.") from None
        meta = decode(check_metadata(dict(session.get_modelmeta().custom_metadata_map), path))
        if is_backbone(meta["model_class"]):
            raise CheckpointError(f"{path} holds a backbone without a classification head, so it cannot name "
                                  "classes; export a fine-tuned classifier instead.")
        if meta["config"].get("model_type") == MODEL_TYPE_V2:  # an EfficientFormerV2 export
            from .config_v2 import EfficientFormerV2Config

            config = EfficientFormerV2Config.from_dict(meta["config"])
        else:
            config = EfficientFormerConfig.from_dict(meta["config"])
        if meta["id2label"]:
            config.id2label = dict(meta["id2label"])
        # the file takes one image size only: the processor must produce exactly that size
        processor = EfficientFormerImageProcessor.from_dict(processor_for_size(meta["preprocessor"],
                                                                               meta["image_size"]))
        return cls(session, processor, config, meta["image_size"], path)

    def logits(self, images: Sequence[Any]) -> np.ndarray:
        """(B, num_labels) float32 logits (numpy) for a batch of images (paths, PIL images or arrays)."""
        return self.logits_from_pixels(self.processor(list(images), return_tensors="np")["pixel_values"])

    def pixels_from_8bit(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) crops -> the processor's exact (B, 3, H, W) float32 `pixel_values` (numpy)."""
        table = self.processor.lookup_table()
        return np.ascontiguousarray(np.stack([table[c][crops[..., c]] for c in range(3)], axis=1))

    def logits_from_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        """(B, num_labels) float32 logits (numpy) for (B, 3, H, W) float32 `pixel_values`."""
        batch = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if self._batch is None:
            return self.session.run(None, {self._input: batch})[0]
        outputs = []
        for start in range(0, len(batch), self._batch):  # a fixed batch: run full chunks, the last one padded
            chunk = batch[start:start + self._batch]
            padded = np.concatenate([chunk, np.zeros((self._batch - len(chunk), *chunk.shape[1:]), np.float32)])
            outputs.append(self.session.run(None, {self._input: padded})[0][:len(chunk)])
        return np.concatenate(outputs)


def _refuse_non_finite(rows: int, total: int) -> None:
    from .errors import CheckpointError

    raise CheckpointError(f"the model gave NaN or infinite scores for {rows} of {total} images although their "
                          "pixels are finite: its weights overflow (the checkpoint is corrupt or training diverged); "
                          "use another checkpoint.")


def _expand_sources(items: list) -> list:
    """`items` with each folder, glob pattern, `.csv` list or `hf:` dataset replaced by its image files or rows
    (what the folder search skipped is warned about)."""
    from .bulk.sources import expand_inputs, is_list_file
    from .preprocessing import hf_datasets

    out: list = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            name = os.fspath(item)
            whole_dataset = hf_datasets.is_source(name) and hf_datasets.parse_row(name) is None
            if os.path.isdir(name) or is_list_file(name) or (not os.path.lexists(name) and (
                    _has_magic(name) or whole_dataset)):
                paths, skipped = expand_inputs([name])
                if skipped:
                    import warnings

                    warnings.warn(f"{len(skipped)} entries of {name} are not classified, e.g. {skipped[0][0]}: "
                                  f"{skipped[0][1]}; predict_files lists them all.", stacklevel=3)
                out.extend(paths)
                continue
        out.append(item)
    return out


def _has_magic(name: str) -> bool:
    import glob

    return glob.has_magic(name)


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

