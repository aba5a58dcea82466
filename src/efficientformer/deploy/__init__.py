"""Everything that turns a trained model into a fast or portable one: the folded inference network and
`optimize` (`optimize`; EfficientFormerV2's folding in `fold_v2`), its Triton kernels (`kernels`), and the exporters (`export`) with the metadata
every exported file carries (`metadata`)."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {"fuse": "optimize", "optimize": "optimize", "export": "export"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
