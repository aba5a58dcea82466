"""The losses of the Keras classes, chosen as transformers chose them (`problem_type`), with the labels
checked against the heads and the batch first; per sample (B,), as transformers' TF classes returned it."""

from __future__ import annotations

import numpy as np

from ...config import EfficientFormerConfig
from ...errors import require
from ..validation import REGRESSION, SINGLE_LABEL, check_label_range, check_label_shape, problem_type
from .inputs import concrete_values

keras = require("keras", "tf", "the TensorFlow classes")
from keras import ops  # noqa: E402


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
    problem = problem_type(config, "int" in keras.backend.standardize_dtype(labels.dtype))
    check_label_shape(tuple(labels.shape), batch, config.num_labels, problem, column_ok=True)
    if problem == SINGLE_LABEL:
        values = concrete_values(labels)
        if values is not None and values.size:
            check_label_range(int(values.min()), int(values.max()), config.num_labels)
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
    if problem == SINGLE_LABEL:
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        return ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    labels = ops.reshape(ops.cast(labels, logits.dtype), (-1, config.num_labels))
    if problem == REGRESSION:
        return ops.mean(ops.square(logits - labels), axis=-1)
    return ops.mean(ops.binary_crossentropy(labels, logits, from_logits=True), axis=-1)


__all__ = ["check_labels", "per_sample_loss"]
