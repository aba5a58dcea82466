"""Checks on the inputs of the Keras classes, before any layer runs: pixel values (shape, dtype, size,
finite values). Only static shapes and, in eager mode, concrete values are read, so traced graphs
(fit, predict, export) stay free of them."""

from __future__ import annotations

import numpy as np

from ...constants import MIN_IMAGE_SIZE
from ...errors import InputError, require

keras = require("keras", "tf", "the TensorFlow classes")


def check_pixel_values(pixel_values, num_channels: int):
    """Raise InputError unless `pixel_values` is a float (B, num_channels, H, W) batch with H, W >= 32.

    Only static shapes and dtypes are read, so the check costs nothing under tracing.
    """
    if isinstance(pixel_values, (list, tuple)):
        pixel_values = np.asarray(pixel_values)
    if not hasattr(pixel_values, "shape") or not hasattr(pixel_values, "dtype"):
        raise InputError(f"pixel_values must be an array or tensor, got {type(pixel_values).__name__}; use "
                         "EfficientFormerImageProcessor(..., return_tensors='np') or 'tf'.")
    shape = tuple(pixel_values.shape)
    if len(shape) != 4:
        hint = " add a batch axis, e.g. pixel_values[None]," if len(shape) == 3 else ""
        raise InputError(f"pixel_values must be 4-D (batch, channels, height, width), got shape {shape};{hint} "
                         "or use the image processor.")
    dtype = keras.backend.standardize_dtype(pixel_values.dtype)
    if "float" not in dtype:
        raise InputError(f"pixel_values must be floating point, got {dtype}; rescale and normalize the images "
                         "(the image processor does it) or cast them to float32.")
    if shape[0] == 0:
        raise InputError("pixel_values holds no images (batch size 0); pass at least one image, "
                         "or skip the call for an empty batch.")
    channels, height, width = shape[1:]
    if channels is not None and channels != num_channels:
        hint = (" They look channels-last: transpose (B, H, W, C) to (B, C, H, W)."
                if shape[3] == num_channels else " Pass channels-first images (B, C, H, W).")
        raise InputError(f"pixel_values has {channels} channel(s) on axis 1 but the model takes {num_channels}.{hint}")
    if (height is not None and height < MIN_IMAGE_SIZE) or (width is not None and width < MIN_IMAGE_SIZE):
        raise InputError(f"images of {height}x{width} are too small: the model needs at least "
                         f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels; resize them first.")


def check_finite(pixel_values) -> None:
    """Raise InputError for NaN or inf pixels, which would come out as NaN scores without a word. Only
    concrete (eager) values are read, so traced graphs (fit, predict, export) stay free of the check."""
    values = concrete_values(pixel_values)
    # one float64 sum is the fast path (no overflow even for float16); only a non-finite sum tests each value
    if values is not None and values.dtype.kind == "f" and not np.isfinite(values.sum(dtype=np.float64)) \
            and not np.isfinite(values).all():
        raise InputError("pixel_values holds NaN or infinite values; check how the images were decoded "
                         "and normalized (the image processor gives finite values).")


def concrete_values(x) -> np.ndarray | None:
    """The values of an array or eager tensor; None for symbolic and traced tensors."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    except Exception:  # graph tensors, JAX tracers, Keras symbolic tensors
        return None


__all__ = ["check_pixel_values", "check_finite", "concrete_values"]
