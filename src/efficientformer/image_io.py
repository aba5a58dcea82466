"""Turning what users pass as images into 8-bit (or float) pixels the image processor can work on.

Accepted: file paths (`str` / `pathlib.Path`), PIL images of any mode, numpy arrays (HWC, CHW or HW; uint8,
uint16, other integers in 0..255, or floats), and array-likes such as torch / TensorFlow / JAX tensors
(converted with `.numpy()` / `np.asarray`, so torch is never imported here). Everything becomes RGB:
grayscale is kept as one plane (the processor repeats it), alpha is dropped, 16-bit values are shifted
right by 8. Bad inputs raise `InputError` with one sentence naming the problem and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"
_LAYOUT_ALIASES = {
    "channels_first": CHANNELS_FIRST, "first": CHANNELS_FIRST, "chw": CHANNELS_FIRST,
    "channels_last": CHANNELS_LAST, "last": CHANNELS_LAST, "hwc": CHANNELS_LAST,
}


@dataclass
class Pixels:
    """One input image, decoded.

    Attributes:
        data: a PIL image of mode "RGB" or "L" (8-bit), a uint8 array (H, W, 3) or (H, W), or a float array
            (H, W, 3) holding the values the user gave (not yet quantized).
        layout: the layout the user gave it in ("channels_last" for PIL images and files), used when the
            output `data_format` is None.
        name: a short description for error messages (the file name or the input's position).
    """

    data: Any
    layout: str
    name: str

    @property
    def is_float(self) -> bool:
        return isinstance(self.data, np.ndarray) and self.data.dtype.kind == "f"

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        if isinstance(self.data, Image.Image):
            return self.data.height, self.data.width
        return self.data.shape[0], self.data.shape[1]


def normalize_layout(value: Any, name: str = "input_data_format") -> str | None:
    """Map "channels_first" / "channels_last" (or transformers' ChannelDimension enum) to a layout; None and
    "none" mean "infer it"."""
    if value is None:
        return None
    key = str(getattr(value, "value", value)).lower()
    if key == "none":  # transformers' ChannelDimension.NONE: (H, W) images, inferred here anyway
        return None
    if key not in _LAYOUT_ALIASES:
        raise InputError(f"{name}={value!r} is not a layout; use 'channels_first' (C, H, W) or 'channels_last' (H, W, C).")
    return _LAYOUT_ALIASES[key]


def collect(images: Any, input_data_format: Any = None) -> list[Pixels]:
    """Decode `images` (one image, a list of images, or a 4-D batch array/tensor) into a list of `Pixels`.

    Args:
        images: a path, PIL image, array (HWC / CHW / HW, or NCHW / NHWC for a batch), tensor, or a list/tuple
            mixing them.
        input_data_format: "channels_first" or "channels_last" for arrays and tensors; None infers it per image
            (a first axis of 1 or 3 means channels first, as transformers does; else a last axis of 1, 3 or 4).

    Returns:
        A non-empty list of `Pixels`.

    Raises:
        InputError: on an empty list, an unreadable or truncated file, an unknown object, or an array whose
            shape, channel count or values cannot be an image.
    """
    layout = normalize_layout(input_data_format)
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise InputError("got an empty list of images; pass at least one image.")
        items = list(images)
    else:
        items = [images]
    out: list[Pixels] = []
    for index, item in enumerate(items):
        name = f"image {index}" if len(items) > 1 else "the image"
        if isinstance(item, (list, tuple)):
            raise InputError(f"{name} is a nested list; pass a flat list of images (or one 4-D array for a batch).")
        if isinstance(item, (str, os.PathLike)):
            out.append(_from_pil(open_image(item), str(Path(item).name), CHANNELS_LAST))
        elif isinstance(item, Image.Image):
            out.append(_from_pil(item, name, CHANNELS_LAST))
        elif isinstance(item, np.ndarray) or _is_tensor(item):
            array = _to_numpy(item, name)
            if array.ndim == 4:
                out.extend(_from_array(a, f"{name}[{i}]", layout) for i, a in enumerate(array))
            else:
                out.append(_from_array(array, name, layout))
        else:
            raise InputError(f"{name} is a {type(item).__name__}; pass a file path, a PIL image, a numpy array or a "
                             "torch/TF tensor.")
    if not out:
        raise InputError("got a batch with no images in it; pass at least one image.")
    return out


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file, applying its EXIF orientation (as transformers' `load_image` does).

    Raises:
        InputError: when the file is missing, is not an image, or is truncated/corrupt.
    """
    name = os.fspath(path)
    if name.startswith(("http://", "https://")):
        raise InputError(f"{name} is a URL; download the image first and pass the local file or a PIL image.")
    if not os.path.isfile(name):
        raise InputError(f"image file {name} does not exist; check the path.")
    try:
        image = Image.open(name)
        image.load()
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image file Pillow can read; pass a JPEG, PNG, WebP, BMP or TIFF image."
                         ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{name} is truncated or corrupt ({err}); re-download or re-export the image.") from None
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not make a readable image unusable
        return image


def _from_pil(image: Image.Image, name: str, layout: str) -> Pixels:
    mode = image.mode
    if mode in ("RGB", "L"):
        return Pixels(image, layout, name)
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image)
        if mode == "I" and values.size and int(values.max()) <= 255 and int(values.min()) >= 0:
            return Pixels(Image.fromarray(values.astype(np.uint8), "L"), layout, name)
        values = np.clip(values.astype(np.int64), 0, 65535) >> 8
        return Pixels(Image.fromarray(values.astype(np.uint8), "L"), layout, name)
    if mode == "F":  # floats: [0, 1] go the float way (as an array would), anything else is 0..255 gray
        values = np.asarray(image)
        if values.size and values.min() >= 0 and values.max() <= 1:
            return _from_array(values, name, CHANNELS_LAST)
        return Pixels(image.convert("L"), layout, name)
    if mode in ("LA", "La", "1"):
        return Pixels(image.convert("L"), layout, name)
    try:
        return Pixels(image.convert("RGB"), layout, name)  # RGBA/P/CMYK/YCbCr/...: alpha dropped
    except (ValueError, OSError) as err:
        raise InputError(f"{name} has PIL mode {mode!r} that cannot be converted to RGB ({err}); "
                         "convert it to 'RGB' first.") from None


def _is_tensor(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module.split(".")[0] in ("torch", "tensorflow", "jax", "jaxlib", "mlx") or (
        hasattr(obj, "__array__") and hasattr(obj, "shape") and not isinstance(obj, (str, bytes)))


def _to_numpy(obj: Any, name: str) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        return obj
    try:
        if hasattr(obj, "detach"):  # torch: leave autograd and the device, bfloat16 has no numpy dtype
            obj = obj.detach().cpu()
            if str(obj.dtype) == "torch.bfloat16":
                obj = obj.float()
            return obj.numpy()
        if hasattr(obj, "numpy"):
            return np.asarray(obj.numpy())
        return np.asarray(obj)
    except Exception as err:  # noqa: BLE001 - any backend failure becomes one clear message
        raise InputError(f"{name} ({type(obj).__name__}) could not be converted to a numpy array ({err}); "
                         "pass a numpy array or a CPU tensor.") from None


def _infer_layout(shape: tuple[int, ...], name: str) -> str:
    first, last = shape[0], shape[-1]
    if first in (1, 3):  # transformers' rule: an ambiguous shape counts as channels first
        return CHANNELS_FIRST
    if last in (1, 3, 4):
        return CHANNELS_LAST
    if first == 4:
        return CHANNELS_FIRST
    raise InputError(f"{name} has shape {tuple(shape)}, with no axis of 1, 3 or 4 channels first or last; pass "
                     "(H, W, C) or (C, H, W) with C in 1/3/4, or a 4-D (N, C, H, W) / (N, H, W, C) batch.")


def _from_array(array: np.ndarray, name: str, layout: str | None) -> Pixels:
    if array.ndim == 2:
        layout, hwc = layout or CHANNELS_LAST, array[:, :, None]
    elif array.ndim == 3:
        layout = layout or _infer_layout(array.shape, name)
        hwc = array if layout == CHANNELS_LAST else array.transpose(1, 2, 0)
    else:
        raise InputError(f"{name} has {array.ndim} dimensions (shape {tuple(array.shape)}); pass (H, W), (H, W, C), "
                         "(C, H, W), or a 4-D batch.")
    height, width, channels = hwc.shape
    if channels not in (1, 3, 4):
        raise InputError(f"{name} has {channels} channels (shape {tuple(array.shape)} read as {layout}); pass 1 "
                         "(gray), 3 (RGB) or 4 (RGBA) channels, or set input_data_format.")
    if height == 0 or width == 0:
        raise InputError(f"{name} is empty (shape {tuple(array.shape)}); pass an image with pixels.")
    hwc = hwc[:, :, :3] if channels == 4 else hwc
    kind = hwc.dtype.kind
    if kind == "f":
        values = hwc.astype(np.float32, copy=False) if hwc.dtype == np.float16 else hwc
        if not np.all(np.isfinite(values)):
            raise InputError(f"{name} contains NaN or infinite values; clean the array first.")
        if values.shape[2] == 1:
            values = np.repeat(values, 3, axis=2)
        return Pixels(values, layout, name)
    if hwc.dtype == np.uint8:
        plane = hwc
    elif hwc.dtype == np.uint16:
        plane = (hwc >> 8).astype(np.uint8)
    elif kind in "iu":
        low, high = int(hwc.min()), int(hwc.max())
        if low < 0 or high > 255:
            raise InputError(f"{name} is {hwc.dtype} with values in [{low}, {high}]; pass 8-bit values 0..255, "
                             "uint16 for 16-bit data, or floats.")
        plane = hwc.astype(np.uint8)
    elif kind == "b":
        raise InputError(f"{name} is a boolean mask; pass an image as uint8 (0..255) or float values.")
    else:
        raise InputError(f"{name} has dtype {hwc.dtype}; pass uint8, uint16, integer or float pixel values.")
    return Pixels(plane[:, :, 0] if plane.shape[2] == 1 else plane, layout, name)
