"""Checkpoint files in every layout: format detection from key names (`keys`), safe reading of weight files
(`reading`), the shapes a config implies and the config that shapes imply (`shapes`), finding and loading
a checkpoint (`loading`), the Keras `tf_model.h5` files (`h5`), the Hugging Face hub and its cache (`hub`),
the one model-folder writer (`folder`), and conversion between layouts (`conversion`)."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Checkpoint", "load_checkpoint"], "loading"),
    **dict.fromkeys(["convert", "ConversionResult"], "conversion"),
    "read_state_dict": "reading", "expected_shapes": "shapes", "infer_config": "infer",
    "write_model_folder": "folder",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
