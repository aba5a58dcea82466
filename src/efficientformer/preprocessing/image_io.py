"""Turning what users pass as images into 8-bit (or float) pixels the image processor can work on.

Accepted: file paths (`str` / `pathlib.Path`), PIL images of any mode, numpy arrays (HWC, CHW or HW; uint8,
uint16, other integers in 0..255, or floats), and array-likes such as torch / TensorFlow / JAX tensors
(converted with `.numpy()` / `np.asarray`, so torch is never imported here). Everything becomes RGB:
grayscale is kept as one plane (the processor repeats it), alpha is dropped. Bit depths, as transformers
4.57 reads arrays where it reads them at all:

* uint16 arrays (and 16-bit files) are shifted right by 8, except arrays whose values are all <= 255:
  transformers reads those as 8-bit values, and so do we, with a warning (a 16-bit image that dark is
  unlikely, but possible);
* float arrays keep their values for the processor (0..255 whole numbers, or [0, 1]: see `processing`);
* float ("F") PIL images and float TIFF files are intensities: [0, 1] is scaled to 0..255, otherwise values
  within 0..255 are 8-bit levels (rounded); anything else is refused.

Files are checked against Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, about 89.5
million pixels) before decoding: a larger image is refused like an unreadable one (raise the limit, or set it
to None, for trusted files). Bad inputs raise `InputError` with one sentence naming the problem and the fix.
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from . import archives, hf_datasets

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


# Pillow formats whose files it only identifies (a plugin must be installed to decode them) or decodes through
# an outside program: a folder's .h5 model file or .eps drawing is not taken for an image
_NOT_DECODED = {"BUFR", "GRIB", "HDF5", "MPEG", "WMF", "EPS"}


@lru_cache(maxsize=1)
def image_suffixes() -> frozenset[str]:
    """File extensions (lower case, with the dot) of the formats Pillow decodes (.jpg, .jfif, .png, .webp, .tif,
    ...): what folder searches take for images."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and fmt not in _NOT_DECODED)


def check_pixel_limit(size: tuple[int, int], name: str) -> None:
    """Refuse an image above Pillow's decompression-bomb limit. Pillow itself raises only above twice
    `MAX_IMAGE_PIXELS` (and warns above it); decoding such a file takes hundreds of megabytes to gigabytes, for
    a network that looks at 224x224 pixels.

    Raises:
        InputError: naming the file, its size and the limit.
    """
    limit = Image.MAX_IMAGE_PIXELS
    width, height = size
    if limit is not None and width * height > limit:
        raise InputError(f"{name} has {width}x{height} = {width * height} pixels, more than Pillow's "
                         f"decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS = {limit}); downscale it first, "
                         "or raise that limit if you trust the file.")


def open_lazily(path: str | os.PathLike, source: Any = None) -> Image.Image:
    """`Image.open` (the header only) of `source` (a file object; default: the file `path`) with the
    decompression-bomb limit applied as `check_pixel_limit` words it; `path` names it in messages.

    Raises:
        InputError: above the limit; Pillow's own errors otherwise (UnidentifiedImageError, OSError, ...).
    """
    name = os.fspath(path)
    try:
        with warnings.catch_warnings():  # check_pixel_limit says it in one sentence instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(name if source is None else source)
    except Image.DecompressionBombError:
        raise InputError(f"{name} has more pixels than twice Pillow's decompression-bomb limit "
                         f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}); downscale it first, or raise "
                         "that limit if you trust the file.") from None
    try:
        check_pixel_limit(image.size, name)
    except InputError:
        image.close()
        raise
    return image


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


def _check_regular_file(name: str) -> None:
    """Refuse a path that is missing, unreachable or not a regular file, in one sentence."""
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        raise InputError(f"image file {name} does not exist; check the path.") from None
    except OSError as err:  # a symlink loop, a name too long, a folder we may not enter
        raise InputError(f"image file {name} cannot be reached ({err.strerror}); check the path.") from None
    if not stat.S_ISREG(mode):  # a folder, device or pipe: opening a pipe would block forever
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise InputError(f"{name} is {kind}; pass an image file.")


def open_image(path: str | os.PathLike, draft: Any = None) -> Image.Image:
    """Open and fully decode an image file, applying its EXIF orientation (as transformers' `load_image` does).
    A "shard.tar::member" name is a member of a .tar shard (`archives`), an "hf:SOURCE/SPLIT/ROW" name the image
    in a row of a Hugging Face dataset (`hf_datasets`).

    `draft`: for a fast, inexact decode, a function of the stored (width, height) that returns the smallest
    (width, height) the caller needs, or None; a JPEG is then decoded at the smallest DCT scale (1/2, 1/4,
    1/8) that still covers it (Pillow's `draft`), several times faster for photos much larger than that.

    Raises:
        InputError: when the file is missing, unreadable, not a regular file, not an image, larger than
            Pillow's decompression-bomb limit, or truncated/corrupt.
    """
    name = os.fspath(path)
    if name.startswith(("http://", "https://")):
        raise InputError(f"{name} is a URL; download the image first and pass the local file or a PIL image.")
    if archives.split(name) is not None:  # "shard.tar::member": the member's bytes, read from the archive
        return decode_encoded(archives.read_member(name), name, draft)
    if hf_datasets.parse_row(name) is not None:  # "hf:SOURCE/SPLIT/ROW": the image stored in that row
        return row_image(hf_datasets.read(name), name, draft)
    _check_regular_file(name)
    return _decode(name, None, draft)


def row_image(stored: Any, name: str, draft: Any = None) -> Image.Image:
    """The image of a dataset row (`hf_datasets.stored_image`: encoded bytes, a pixel array or a PIL image)
    as `open_image` gives a file's: bytes decoded as a file's, an 8-bit or 16-bit array as its image.

    Raises:
        InputError: as `open_image`; float pixels (bulk prediction decodes 8-bit images).
    """
    if isinstance(stored, bytes):
        return decode_encoded(stored, name, draft)
    if isinstance(stored, np.ndarray):
        pixels = collect(stored)[0]
        if pixels.is_float:
            raise InputError(f"{name} holds float pixels, and bulk prediction decodes 8-bit images; store uint8 "
                             "(or uint16) pixels, or pass the arrays to ImageClassifier.predict.")
        stored = Image.fromarray(np.ascontiguousarray(pixels.data))
    check_pixel_limit(stored.size, name)
    return stored


def decode_encoded(data: bytes, name: str, draft: Any = None) -> Image.Image:
    """`open_image` for an encoded image already in memory (an archive member, a dataset row's bytes); `name`
    names it in messages.

    Raises:
        InputError: as `open_image`.
    """
    return _decode(name, io.BytesIO(data), draft)


def _decode(name: str, source: Any, draft: Any) -> Image.Image:
    """Decode the file `name` (or the file object `source`, named `name`) as `open_image` describes."""
    try:
        image = open_lazily(name, source)
        if draft is not None and image.format == "JPEG":
            needed = draft(image.size)
            if needed is not None:
                image.draft(image.mode, needed)
        image.load()
    except InputError:
        raise
    except PermissionError:
        raise InputError(f"{name} cannot be read (permission denied); check the file's permissions.") from None
    except Image.DecompressionBombError:  # load() checks again (an image whose size changes on load)
        raise InputError(f"{name} has more pixels than Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS"
                         f" = {Image.MAX_IMAGE_PIXELS}); downscale it first, or raise that limit if you trust the "
                         "file.") from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image file Pillow can read; pass a JPEG, PNG, WebP, BMP or TIFF image."
                         ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{name} is truncated or corrupt ({err}); re-download or re-export the image.") from None
    try:
        # in place: without an orientation to apply, exif_transpose would return a copy of the whole image
        transposed = ImageOps.exif_transpose(image, in_place=True)
        return image if transposed is None else transposed
    except Exception:  # a broken EXIF block should not make a readable image unusable
        return image


def _from_pil(image: Image.Image, name: str, layout: str) -> Pixels:
    mode = image.mode
    if mode in ("RGB", "L"):
        return Pixels(image, layout, name)
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.int64)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise InputError(f"{name} is a {mode} image with values in [{low}, {high}], outside 16 bits; scale it "
                             "to 0..255 (8-bit) or 0..65535 (16-bit) first.")
        if mode == "I" and high <= 255:  # 32-bit integers holding 8-bit values
            return Pixels(Image.fromarray(values.astype(np.uint8), "L"), layout, name)
        return Pixels(Image.fromarray((values >> 8).astype(np.uint8), "L"), layout, name)
    if mode == "F":
        return Pixels(Image.fromarray(_float_intensities(np.asarray(image), name), "L"), layout, name)
    if mode in ("LA", "La", "1"):
        return Pixels(image.convert("L"), layout, name)
    try:
        return Pixels(image.convert("RGB"), layout, name)  # RGBA/P/CMYK/YCbCr/...: alpha dropped
    except (ValueError, OSError) as err:
        raise InputError(f"{name} has PIL mode {mode!r} that cannot be converted to RGB ({err}); "
                         "convert it to 'RGB' first.") from None


def _float_intensities(values: np.ndarray, name: str) -> np.ndarray:
    """A float ("F") image, as float TIFFs decode, to 8-bit levels: [0, 1] is the usual range of float image
    files and is scaled by 255 (not read as near-black 0..1 levels); other values within 0..255 are levels.
    Rounded to the nearest level, so k/255 and k both give k exactly."""
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise InputError(f"{name} is a float image with no pixels or with NaN/infinite values; clean it first.")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 255:
        raise InputError(f"{name} is a float image with values in [{low:.4g}, {high:.4g}]; scale it to [0, 1] or "
                         "0..255 first.")
    scaled = values.astype(np.float64) * 255 if high <= 1 else values.astype(np.float64)
    return np.rint(scaled).astype(np.uint8)


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
        if int(hwc.max()) <= 255:  # transformers reads these as 8-bit values; shifting would make them black
            warnings.warn(f"{name} is uint16 but no value exceeds 255, so it is read as 8-bit values 0..255 (as "
                          "transformers does); pass uint8 to silence this, or scale true 16-bit data to 0..65535.",
                          stacklevel=4)
            plane = hwc.astype(np.uint8)
        else:
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


# ---------------------------------------------------------------------- zero-copy pixels of a PIL image
class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
                         ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64),
                         ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
                         ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p),
                         ("private_data", ctypes.c_void_p)]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                        ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
                        ("buffers", ctypes.POINTER(ctypes.c_void_p)),
                        ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
                        ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p),
                        ("private_data", ctypes.c_void_p)]
_CAPSULE_POINTER = ctypes.pythonapi.PyCapsule_GetPointer
_CAPSULE_POINTER.restype = ctypes.c_void_p
_CAPSULE_POINTER.argtypes = [ctypes.py_object, ctypes.c_char_p]


def pixel_view(image: Image.Image, words: bool = False) -> tuple | None:
    """A read-only numpy view of a loaded "RGB" or "L" PIL image's own memory, without a copy: (H, W, 3)
    (Pillow keeps RGB in 4 bytes a pixel, so the view is strided) or (H, W), with the object that keeps the
    memory alive (hold it while the view is used). Through Pillow's Arrow export (Pillow 11.2+); None where
    that is missing, refused (images stored in several blocks, images over memory Pillow does not own) or
    shaped otherwise than expected, so callers copy with `np.asarray` instead. `np.asarray` copies the whole image through `tobytes` (0.1-0.2 ms for
    a 640x480 photo), which is what this saves.

    With `words`, a third item: for "RGB" the same pixels as (H, W) little-endian uint32 words (R in the low
    byte, Pillow's padding byte in the high one), so that the channels can be split with whole-word
    arithmetic; None for "L"."""
    export = getattr(image, "__arrow_c_array__", None)
    if export is None or image.mode not in ("RGB", "L") or image.width == 0 or image.height == 0:
        return None
    if getattr(image, "readonly", 0):
        # memory Pillow does not own (Image.fromarray / frombuffer map the caller's buffer): Pillow 12's
        # export of such an image crashes the process (segmentation fault; seen with 12.3), so these copy
        return None
    try:
        schema_capsule, array_capsule = export()
        schema = ctypes.cast(_CAPSULE_POINTER(schema_capsule, b"arrow_schema"), ctypes.POINTER(_ArrowSchema)).contents
        array = ctypes.cast(_CAPSULE_POINTER(array_capsule, b"arrow_array"), ctypes.POINTER(_ArrowArray)).contents
        pixels = image.width * image.height
        if image.mode == "RGB":
            if (schema.format != b"+w:4" or schema.n_children != 1 or schema.children[0].contents.format != b"C"
                    or array.n_children != 1 or array.length != pixels or array.offset != 0):
                return None
            data = array.children[0].contents
            if data.n_buffers != 2 or data.offset != 0 or data.length != pixels * 4 or not data.buffers[1]:
                return None
            shape, take = (image.height, image.width, 4), slice(0, 3)
        else:
            data = array
            if (schema.format != b"C" or data.n_buffers != 2 or data.offset != 0 or data.length != pixels
                    or not data.buffers[1]):
                return None
            shape, take = (image.height, image.width), None
        memory = (ctypes.c_uint8 * math.prod(shape)).from_address(data.buffers[1])
        view = np.frombuffer(memory, dtype=np.uint8).reshape(shape)
    except Exception:  # noqa: BLE001 - any surprise: callers copy instead
        return None
    view.flags.writeable = False
    keep = (schema_capsule, array_capsule, image, memory)
    if take is None:
        return (view, keep, None) if words else (view, keep)
    return (view[:, :, take], keep, view.view("<u4")[:, :, 0]) if words else (view[:, :, take], keep)
