"""From image files to `pixel_values`: decoding (`image_io`), Pillow-exact resampling (`resample`,
`resize`) and the image processor (`processor`)."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {"EfficientFormerImageProcessor": "processor"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
