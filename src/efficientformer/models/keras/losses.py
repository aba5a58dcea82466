"""The losses of the Keras classes, chosen as transformers chose them (`problem_type`), with the labels
checked against the heads and the batch first; per sample (B,), as transformers' TF classes returned it."""

from __future__ import annotations

import numpy as np

from ...config import EfficientFormerConfig
from ...errors import InputError, require
from .inputs import concrete_values

keras = require("keras", "tf", "the TensorFlow classes")
from keras import ops  # noqa: E402


def _problem_type(config: EfficientFormerConfig, labels) -> str:
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if "int" in keras.backend.standardize_dtype(labels.dtype):
        return "single_label_classification"
    return "multi_label_classification"


def check_labels(config: EfficientFormerConfig, labels, batch: int | None = None):
    """Validate labels against the heads (`config.num_labels`) and the batch; return (problem type, labels).

    Integer labels (B,) or (B, 1) -> "single_label_classification"; one label or
    `problem_type="regression"` -> "regression", (B,) or (B, num_labels); float (B, num_labels) ->
    "multi_label_classification". `config.problem_type` overrides the choice from the dtype.

    Raises:
        InputError: wrong shape or batch size, or (when the values are concrete) class indices out of range.
    """
    if not hasattr(labels, "dtype") or not hasattr(labels, "shape"):
        labels = np.asarray(labels)
    problem = _problem_type(config, labels)
    num_labels, shape = config.num_labels, tuple(labels.shape)
    if shape and batch is not None and shape[0] is not None and shape[0] != batch:
        raise InputError(f"labels hold {shape[0]} entries for a batch of {batch} images; give one label per image.")
    if problem == "single_label_classification":
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InputError(f"class labels must have shape (batch,), got {shape}; for multi-label targets pass "
                             "floats of shape (batch, num_labels).")
        values = concrete_values(labels)
        if values is not None:
            if values.size and (values.min() < 0 or values.max() >= num_labels):
                raise InputError(f"class labels must lie in 0..{num_labels - 1}, got values from {values.min()} "
                                 f"to {values.max()}; check the label mapping or num_labels.")
    elif not (len(shape) == 2 and shape[1] == num_labels) and not (problem == "regression" and num_labels == 1
                                                                  and len(shape) == 1):
        raise InputError(f"labels for {problem} must have shape (batch, {num_labels}), got {shape}.")
    return problem, labels


def per_sample_loss(config: EfficientFormerConfig, labels, logits):
    """Loss of each sample (B,), as transformers' TF classes returned it; its mean is the PyTorch loss.

    Integer labels -> softmax cross-entropy; regression -> squared error (mean over labels); float
    multi-hot labels -> binary cross-entropy with logits (mean over labels). See `check_labels`.

    Raises:
        InputError: labels that do not fit (see `check_labels`).
    """
    problem, labels = check_labels(config, labels, logits.shape[0])
    labels = ops.convert_to_tensor(labels)
    if problem == "single_label_classification":
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        return ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    labels = ops.reshape(ops.cast(labels, logits.dtype), (-1, config.num_labels))
    if problem == "regression":
        return ops.mean(ops.square(logits - labels), axis=-1)
    return ops.mean(ops.binary_crossentropy(labels, logits, from_logits=True), axis=-1)


__all__ = ["check_labels", "per_sample_loss"]
