"""Checks on the inputs of the Keras classes, before any layer runs: pixel values (shape, dtype, size,
finite values). Only static shapes and, in eager mode, concrete values are read, so traced graphs
(fit, predict, export) stay free of them."""

from __future__ import annotations

import numpy as np

from ...errors import InputError, require
from ..validation import NON_FINITE, check_pixel_shape

keras = require("keras", "tf", "the TensorFlow classes")


def check_pixel_values(pixel_values, num_channels: int):
    """Raise InputError unless `pixel_values` is a float (B, num_channels, H, W) batch with H, W >= 32
    (`models.validation.check_pixel_shape`). Only static shapes and dtypes are read, so the check costs
    nothing under tracing."""
    if isinstance(pixel_values, (list, tuple)):
        pixel_values = np.asarray(pixel_values)
    if not hasattr(pixel_values, "shape") or not hasattr(pixel_values, "dtype"):
        raise InputError(f"pixel_values must be an array or tensor, got {type(pixel_values).__name__}; use "
                         "EfficientFormerImageProcessor(..., return_tensors='np') or 'tf'.")
    dtype = keras.backend.standardize_dtype(pixel_values.dtype)
    check_pixel_shape(tuple(pixel_values.shape), is_float="float" in dtype, dtype=dtype, num_channels=num_channels,
                      processor_hint="return_tensors='np'")


def check_finite(pixel_values) -> None:
    """Raise InputError for NaN or inf pixels, which would come out as NaN scores without a word. Only
    concrete (eager) values are read, so traced graphs (fit, predict, export) stay free of the check."""
    values = concrete_values(pixel_values)
    # one float64 sum is the fast path (no overflow even for float16); only a non-finite sum tests each value
    if values is not None and values.dtype.kind == "f" and not np.isfinite(values.sum(dtype=np.float64)) \
            and not np.isfinite(values).all():
        raise InputError(NON_FINITE)


def concrete_values(x) -> np.ndarray | None:
    """The values of an array or eager tensor; None for symbolic and traced tensors."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    except Exception:  # graph tensors, JAX tracers, Keras symbolic tensors
        return None


__all__ = ["check_pixel_values", "check_finite", "concrete_values"]
