"""Optional bridges to other libraries, each imported on first use: `transformers` (our classes behind
transformers' Auto classes, `pipeline` and `Trainer`). `import efficientformer.integrations` imports none of them."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {"register": "transformers"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
