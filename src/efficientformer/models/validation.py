"""What a model call accepts, checked once for both backends (plain Python on shapes and a few numbers: no
torch, no keras, so the checks cost nothing under tracing and compilation).

Each backend reads the facts of its own tensors (shape, whether the dtype is floating point or integer,
and, in eager mode only, the smallest and largest class label) and hands them to these functions, which
raise `InputError` with one sentence naming the problem and the fix, before any layer runs.
"""

from __future__ import annotations

from typing import Any

from ..constants import MIN_IMAGE_SIZE
from ..errors import InputError

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"


def check_pixel_shape(shape: tuple, *, is_float: bool, dtype: Any, num_channels: int, processor_hint: str) -> None:
    """`pixel_values` must be a float (B, num_channels, H, W) batch with B >= 1 and H, W >= MIN_IMAGE_SIZE.

    `None` in `shape` (a dimension unknown while tracing) passes; `processor_hint` names the processor call
    that gives the right input in this backend (e.g. "return_tensors='pt'").
    """
    if len(shape) != 4:
        hint = " add a batch axis (x[None] or .unsqueeze(0))," if len(shape) == 3 else ""
        raise InputError(f"pixel_values must be 4-D (batch, channels, height, width), got shape {shape};{hint} "
                         f"or use EfficientFormerImageProcessor(..., {processor_hint}).")
    if not is_float:
        raise InputError(f"pixel_values must be floating point, got {dtype}; rescale and normalize the images "
                         "(the image processor does it) or cast them to float32.")
    batch, channels, height, width = shape
    if batch == 0:
        raise InputError("pixel_values holds no images (batch size 0); pass at least one image, "
                         "or skip the call for an empty batch.")
    if channels is not None and channels != num_channels:
        hint = (" They look channels-last: transpose (B, H, W, C) to (B, C, H, W)."
                if width == num_channels else " Pass channels-first images (B, C, H, W).")
        raise InputError(f"pixel_values has {channels} channel(s) on axis 1 but the model takes {num_channels}.{hint}")
    if (height is not None and height < MIN_IMAGE_SIZE) or (width is not None and width < MIN_IMAGE_SIZE):
        raise InputError(f"images of {height}x{width} are too small: the model needs at least "
                         f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels; resize them first.")


NON_FINITE = ("pixel_values holds NaN or infinite values; check how the images were decoded "
              "and normalized (the image processor gives finite values).")


def problem_type(config: Any, labels_are_integers: bool) -> str:
    """The loss the labels ask for, as transformers chose it: `config.problem_type` when set, else
    regression for one label, single-label classification for integer labels, multi-label otherwise."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return REGRESSION
    return SINGLE_LABEL if labels_are_integers else MULTI_LABEL


def check_label_shape(shape: tuple, batch: int | None, num_labels: int, problem: str, *,
                      column_ok: bool = False) -> None:
    """Labels against the heads and the batch: one per image; (B,) class indices (also (B, 1) with
    `column_ok`: Keras datasets often give them so), (B, num_labels) targets otherwise (regression with one
    label also takes (B,)). `None` dimensions pass."""
    if num_labels == 0:
        raise InputError("this model has no classification head (num_labels=0) to compute a loss with; "
                         "give it one with reset_classifier(num_classes) or drop the labels.")
    if not shape:
        raise InputError(f"labels hold a single value for a batch of {batch} images; give one label per image.")
    if batch is not None and shape[0] is not None and shape[0] != batch:
        raise InputError(f"labels hold {shape[0]} entries for a batch of {batch} images; give one label per image.")
    if problem == SINGLE_LABEL:
        if not (len(shape) == 1 or (column_ok and len(shape) == 2 and shape[1] == 1)):
            raise InputError(f"class labels must have shape (batch,), got {shape}; for multi-label targets pass "
                             "floats of shape (batch, num_labels).")
    elif not (len(shape) == 2 and shape[1] == num_labels) and not (num_labels == 1 and len(shape) == 1):
        raise InputError(f"labels for {problem} must have shape (batch, {num_labels}), got {shape}.")


def check_label_range(lowest: int, highest: int, num_labels: int) -> None:
    """Class indices must lie in 0..num_labels-1 (read in eager mode only: it needs the values)."""
    if lowest < 0 or highest >= num_labels:
        raise InputError(f"class labels must lie in 0..{num_labels - 1}, got values from {lowest} "
                         f"to {highest}; check the label mapping or num_labels.")


__all__ = ["check_pixel_shape", "check_label_shape", "check_label_range", "problem_type", "NON_FINITE",
           "SINGLE_LABEL", "MULTI_LABEL", "REGRESSION"]
