"""Decoding and preprocessing image files on the GPU, for bulk prediction (`efficientformer predict --decode gpu`).

Worker processes (or, for a batch or two, threads) read each file's bytes and JPEG header ahead of the model
(`read_file`); between the model's calls (`GpuDecoder.batches`), the JPEGs of a batch are decoded together by
nvJPEG through `torchvision.io.decode_jpeg(list, device="cuda")`; then, on the GPU, the EXIF orientation is
applied, the images are resized and center-cropped and the 8-bit crops are looked up in the processor's rescale +
normalize table (`EfficientFormerImageProcessor.lookup_table`), into the model's dtype (and channels-last
when asked). The settings all come from the processor the CPU path uses (size,
crop_size, resample, crop_rounding, the do_* flags, mean / std); filters other than bilinear, bicubic and
box are refused with one sentence.

The resize is Pillow's, bit for bit, as in `efficientformer.preprocessing.resample`: per axis, a product with
Pillow's integer weights (22 fractional bits) in float64, whose sums are exact, then Pillow's rounding to
8 bits between and after the passes, in Pillow's pass order. So every difference from the CPU path comes from
the decoder alone. Tolerance, on the fixture photos (640x480 JPEGs from `benchmarks/end_to_end.py`'s
`make_jpegs` and the fixture JPEGs; `python benchmarks/gpu_decode_check.py --device cpu|cuda`):

- `device="cpu"` (torchvision's libjpeg-turbo, what CI tests): the processor's `pixel_values` exactly
  (largest |difference| 0) and so the same logits (top-1 agreement of EfficientFormer-L1: 100%);
- nvJPEG (`device="cuda"`): its IDCT and chroma upsampling are not libjpeg-turbo's; on the H200 (302 photos)
  16% of the values moved, by 0.2 of an 8-bit level on average and at most 24 levels (0.42), the top-1 class of
  L1 the same for all; one level is 1 / (255 * std) <= 0.0175 in `pixel_values`. The GPU tests hold the largest |difference| within TOLERANCE
  (0.5, about 29 levels) and the mean within MEAN_TOLERANCE (2 levels); the H200's measured figures and
  top-1 agreement are in BENCHMARKS.md ("GPU decoding").

The resize runs in float64: fast on data-centre GPUs (H100 / H200: about a quarter GFLOP per 640x480 photo),
slower on GPUs whose float64 is slow.

Every file nvJPEG is not sure to decode as Pillow does (PNG and the other formats, CMYK or 12-bit JPEGs, a
truncated file, an orientation in XMP: `jpeg_header.scan`), and every file
nvJPEG refuses, is decoded by the CPU path's own decoder (`image_io`; where it is read, or for a refused file
where the batch is decoded), so it gives the
CPU path's pixels, or is reported as failed with the CPU path's message. torchvision is imported only here,
when GPU decoding is asked for; `require_decoder` says what to install when it is missing or does not load.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import ConfigError, InputError, MissingDependencyError
from . import archives, hf_datasets, jpeg_header
from .processor import check_output_size, crop_window, resize_shape
from .resample import FILTERS, PRECISION_BITS, SUPPORTED, pillow_coefficients

TOLERANCE = 0.5  # largest |pixel_values difference| from the CPU path the GPU tests allow (nvJPEG)
MEAN_TOLERANCE = 2 / 255 / 0.224  # mean |difference| allowed: 2 8-bit levels
MAX_ELEMENTS = 1 << 26  # float64 samples one resize step holds at a time (512 MB)
READ_PIECE = 32  # files one reading task holds


@dataclass
class Encoded:
    """One file as read: its JPEG bytes and header for nvJPEG, or its pixels decoded on the CPU (uint8
    (H, W, 3) or (H, W)), or the reason it cannot be classified."""

    path: str
    data: Any = None
    header: jpeg_header.Header | None = None
    pixels: np.ndarray | None = None
    error: str | None = None


@lru_cache(maxsize=1)
def _probe_jpeg() -> bytes:
    """A tiny JPEG that tells whether torchvision's decoder works (made once, by Pillow)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buffer, "JPEG")
    return buffer.getvalue()


def require_decoder(device: Any = "cuda") -> Callable:
    """`torchvision.io.decode_jpeg` for `device`, checked on a tiny JPEG.

    Raises:
        MissingDependencyError: torchvision is missing, its image extension does not load beside this torch,
            or it has no nvJPEG for a CUDA device.
    """
    import torch

    fix = (f"install the torchvision release built for this torch ({torch.__version__}), e.g. pip install "
           "torchvision from the index your torch came from, or use --decode cpu")
    try:
        from torchvision import io as tvio
    except Exception as err:  # ImportError, or a torchvision for another torch failing at import
        raise MissingDependencyError(f"GPU decoding needs torchvision, which does not import here ({err}); {fix}."
                                     ) from None
    probe = torch.frombuffer(bytearray(_probe_jpeg()), dtype=torch.uint8)
    target = torch.device(device)
    try:
        tvio.decode_jpeg([probe], mode=tvio.ImageReadMode.RGB, device=target)
    except RuntimeError as err:
        where = "nvJPEG decoder" if target.type == "cuda" else "JPEG decoder"
        raise MissingDependencyError(f"GPU decoding needs torchvision's {where}, which does not work here "
                                     f"({str(err).splitlines()[0]}); {fix}.") from None

    def decode(data: list) -> list:
        return tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB, device=target)

    return decode


def check_processor(processor) -> None:
    """Refuse settings this module cannot reproduce.

    Raises:
        ConfigError: a resize filter other than bilinear, bicubic or box (or bad mean / std / rescale).
    """
    if processor.do_resize and processor.resample not in SUPPORTED:
        name = FILTERS.get(processor.resample, (processor.resample,))[0]
        raise ConfigError(f"GPU decoding resizes with bilinear, bicubic or box filters, but this processor uses "
                          f"{name}; use --decode cpu, or set resample to 3 (bicubic).")
    processor.lookup_table()  # a missing rescale factor or a zero std is refused here, before any file


@lru_cache(maxsize=256)  # about 0.4 MB each for a photo's side
def axis_weights(in_size: int, out_size: int, resample: int, start: int, stop: int) -> tuple[int, int, np.ndarray]:
    """For outputs start..stop-1 of Pillow's resize of a side from in_size to out_size: the inputs lo..hi-1
    they read and the (hi - lo, stop - start) matrix of Pillow's integer weights / 2**22 (each output's taps
    normalized to sum 1, then rounded to 22 fractional bits, as Pillow's Resample.c does), exact in float32."""
    first, count, integer = pillow_coefficients(in_size, out_size, resample, start, stop)  # the CPU path's weights
    offsets = np.arange(integer.shape[1])
    lo, hi = int(first.min()), int((first + count).max())
    used = offsets[None] < count[:, None]
    rows = (first[:, None] - lo + offsets[None])[used]
    columns = np.broadcast_to(np.arange(stop - start)[:, None], used.shape)[used]
    # float32 holds these weights exactly (integers below 2**24 times a power of two) in half the memory
    matrix = np.zeros((hi - lo, stop - start), dtype=np.float32)
    matrix[rows, columns] = integer[used] * 2.0 ** -PRECISION_BITS
    return lo, hi, matrix


def _file_bytes(path: str) -> bytearray | None:
    """The whole file (or "shard.tar::member", or the encoded image of an "hf:SOURCE/SPLIT/ROW" dataset row) as
    a writable buffer torch can share, or None for what only the CPU path may open (not a regular file, a URL, a
    file shorter than its size said, a dataset row holding an array)."""
    if archives.split(path) is not None:
        return bytearray(archives.read_member(path))
    if hf_datasets.parse_row(path) is not None:
        stored = hf_datasets.read(path)
        return bytearray(stored) if isinstance(stored, bytes) else None
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode) or path.startswith(("http://", "https://")):
        return None
    with open(path, "rb") as handle:
        data = bytearray(info.st_size)
        got = handle.readinto(data)
    return data if got == len(data) else None


def read_file(path: str) -> Encoded:
    """A file as GPU decoding needs it, in plain data (threads and worker processes run it): a JPEG nvJPEG
    takes as its whole bytes (a bytearray) and header, any other file decoded on the CPU (`read_on_cpu`)."""
    try:
        data = _file_bytes(path)
    except (OSError, InputError):  # the CPU decoder says why, in the CPU path's words
        data = None
    if data:
        header = jpeg_header.scan(data)
        if header is not None:
            return Encoded(path, data, header)
    return read_on_cpu(path)


def read_files(paths: Sequence[str]) -> list[Encoded]:
    """`read_file` of each path: one task of a worker process (`GpuDecoder.batches` with `processes`)."""
    return [read_file(path) for path in paths]


def read_on_cpu(path: str) -> Encoded:
    """The file decoded as the CPU path decodes it (EXIF orientation and mode conversions included), or the
    CPU path's reason for refusing it."""
    from .image_io import collect

    try:
        pixels = collect(path)[0]
    except InputError as err:
        return Encoded(path, error=str(err))
    return Encoded(path, pixels=np.array(pixels.data))  # a copy torch may take (PIL's view is read-only)


def _to_8bit(values):
    """Pillow's rounding of a resampled sum, in place: floor(clip(v + 0.5, 0, 255))."""
    return values.add_(0.5).clamp_(0, 255).floor_()


class GpuDecoder:
    """Decode, resize, crop and normalize batches of image files on `device`, with `processor`'s settings.

    Args:
        processor: the `EfficientFormerImageProcessor` of the CPU path.
        device: "cuda" (nvJPEG) or "cpu" (torchvision's CPU decoder: the same code, for tests).
        dtype: of the returned `pixel_values` (default float32; the model's, to skip a cast).
        channels_last: return `pixel_values` in channels-last memory.
        decode_jpegs: list of uint8 byte tensors -> list of (3, H, W) uint8 RGB tensors on `device`; default
            `require_decoder(device)` (tests pass their own).

    Raises:
        ConfigError: settings `check_processor` refuses.
        MissingDependencyError: no working torchvision decoder (see `require_decoder`).
    """

    def __init__(self, processor, device: Any = "cuda", dtype: Any = None, channels_last: bool = False,
                 decode_jpegs: Callable | None = None) -> None:
        import torch

        check_processor(processor)
        self.processor = processor
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else torch.float32
        self.channels_last = channels_last
        self.decode_jpegs = decode_jpegs if decode_jpegs is not None else require_decoder(self.device)
        self.table = torch.from_numpy(processor.lookup_table()).to(self.device, self.dtype)
        self._weights: dict = {}

    # ------------------------------------------------------------------ reading (threads or processes)
    def read(self, path: str) -> Encoded:
        """A file's JPEG bytes and header, or (any other file) its pixels from the CPU decoder, or the CPU
        path's reason for refusing it."""
        return self.take(read_file(path))

    def take(self, item: Encoded) -> Encoded:
        """`read_file`'s result (from this process or a worker) made ready for `decode`: the JPEG's bytes as a
        uint8 tensor through its EOI, with the resize weights of its size computed ahead."""
        if item.header is None or item.data is None:
            return item
        import torch

        self.plan(*item.header.size)
        data = torch.frombuffer(item.data, dtype=torch.uint8)[:item.header.length]
        return Encoded(item.path, data, item.header)

    def read_all(self, paths: Sequence[str]) -> list[Encoded]:
        return [self.read(path) for path in paths]

    # ------------------------------------------------------------------ decoding (the device)
    def decode(self, items: Sequence[Encoded]):
        """One batch: `bulk.loader.Batch` with `pixels` (N, 3, H, W) on the device, in input order, and the
        (path, reason) of the files that failed, as the CPU path words them."""
        from ..bulk.loader import Batch, shape_mismatch

        items = list(items)
        images = self._images(items)  # items nvJPEG refused are replaced by their CPU decode
        names, failed, kept, first = [], [], [], None
        for item, image in zip(items, images):
            if item.error is not None:
                failed.append((item.path, item.error))
                continue
            try:
                shape = self._output_shape(image.shape[-2], image.shape[-1], item.path)
            except InputError as err:
                failed.append((item.path, str(err)))
                continue
            first = shape if first is None else first
            if shape != first:
                failed.append((item.path, shape_mismatch(shape, first)))
                continue
            names.append(item.path)
            kept.append(image)
        if not kept:
            return Batch(names, None, failed)
        try:
            pixels = self._normalize(self._crops(kept, first))
        except RuntimeError as err:  # out of GPU memory: this batch fails, the run goes on
            reason = f"decoding the batch of {len(names)} images from {names[0]} on {self.device} failed: {err}"
            return Batch([], None, failed + [(name, reason) for name in names])
        return Batch(names, None, failed, pixels=pixels)

    def _images(self, items: list[Encoded]) -> list:
        """Each item's (3, H, W) uint8 RGB tensor on the device, oriented (None for failed items; items nvJPEG
        refuses are decoded on the CPU instead, or marked failed)."""
        import torch

        jpegs = [index for index, item in enumerate(items) if item.data is not None]
        decoded: dict[int, Any] = {}
        if jpegs:
            try:
                outputs = self.decode_jpegs([items[i].data for i in jpegs])
            except RuntimeError:  # one bad file fails the whole call: decode them one by one
                outputs = [self._decode_one(items[i].data) for i in jpegs]
            for index, out in zip(jpegs, outputs):
                header = items[index].header
                if out is not None and tuple(out.shape) == (3, header.height, header.width):
                    decoded[index] = jpeg_header.orient(out, header.orientation)
                else:  # refused, or not what its header said: the CPU decoder decides
                    items[index] = read_on_cpu(items[index].path)
        images = []
        for index, item in enumerate(items):
            if index in decoded:
                images.append(decoded[index])
            elif item.pixels is not None:
                pixels = torch.from_numpy(np.ascontiguousarray(item.pixels)).to(self.device)
                images.append(pixels.expand(3, -1, -1) if pixels.ndim == 2 else pixels.permute(2, 0, 1))  # gray: 3x
            else:
                images.append(None)
        return images

    def _decode_one(self, data):
        try:
            return self.decode_jpegs([data])[0]
        except RuntimeError:
            return None

    def _output_shape(self, height: int, width: int, path: str) -> tuple[int, int]:
        p = self.processor
        if p.do_center_crop:
            return p.crop_size["height"], p.crop_size["width"]
        out = resize_shape(height, width, p.size) if p.do_resize else (height, width)
        check_output_size(out[0], out[1], Path(path).name, "resized to" if p.do_resize else "kept at")
        return out

    def _crops(self, images: list, shape: tuple[int, int]):
        """(N, 3, H, W) uint8 crops of `images`, resized in groups of one source size."""
        import torch

        out = torch.empty((len(images), 3) + tuple(shape), dtype=torch.uint8, device=self.device)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(tuple(image.shape[-2:]), []).append(index)
        for (height, width), indices in groups.items():
            per_image = 3 * height * width
            step = max(1, MAX_ELEMENTS // per_image)
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                batch = torch.stack([images[i] for i in chunk])
                out[torch.tensor(chunk, device=self.device)] = self._resize_crop(batch)
        return out

    def geometry(self, height: int, width: int) -> tuple[int, int, int, int, int, int, tuple[int, int, int, int]]:
        """For a (height, width) image: the resized (out_h, out_w), the crop (crop_h, crop_w), its offsets (top,
        left; negative where it is padded) and the part of the resized image it keeps (y0, x0, y1, x1)."""
        p = self.processor
        out_h, out_w = resize_shape(height, width, p.size) if p.do_resize else (height, width)
        if not p.do_center_crop:
            return out_h, out_w, out_h, out_w, 0, 0, (0, 0, out_h, out_w)
        top, left, (x0, y0, x1, y1) = crop_window(out_h, out_w, p.crop_size, p.crop_rounding)  # the CPU path's
        return out_h, out_w, p.crop_size["height"], p.crop_size["width"], top, left, (y0, x0, y1, x1)

    def plan(self, height: int, width: int) -> None:
        """Compute the resize weights of a (height, width) image ahead (`take` calls it as files arrive, so that
        a batch of many sizes finds them cached)."""
        if self.processor.do_resize:
            out_h, out_w, *_, inner = self.geometry(height, width)
            if out_h != height:
                axis_weights(height, out_h, self.processor.resample, inner[0], inner[2])
            if out_w != width:
                axis_weights(width, out_w, self.processor.resample, inner[1], inner[3])

    def _resize_crop(self, batch):
        """(n, 3, h, w) uint8 -> (n, 3, crop) uint8: the processor's resize then center crop (or either)."""
        p = self.processor
        out_h, out_w, crop_h, crop_w, top, left, inner = self.geometry(*batch.shape[-2:])
        region = self._resample(batch, out_h, out_w, inner) if p.do_resize else \
            batch[:, :, inner[0]:inner[2], inner[1]:inner[3]]
        if region.shape[-2:] == (crop_h, crop_w):
            return region
        import torch

        canvas = torch.zeros(batch.shape[:2] + (crop_h, crop_w), dtype=torch.uint8, device=batch.device)
        y, x = inner[0] - top, inner[1] - left
        canvas[:, :, y:y + region.shape[-2], x:x + region.shape[-1]] = region
        return canvas

    def _axis(self, in_size: int, out_size: int, start: int, stop: int, vertical: bool):
        """(lo, hi, weights on the device) for one axis ((outputs, inputs) for the vertical one, else (inputs,
        outputs)), or None where Pillow leaves the axis as it is."""
        if in_size == out_size:
            return None
        key = (in_size, out_size, self.processor.resample, start, stop, vertical)
        if key not in self._weights:
            import torch

            if len(self._weights) >= 128:  # many image sizes: keep the device memory bounded
                self._weights.clear()
            lo, hi, matrix = axis_weights(*key[:5])
            if vertical:  # weights @ columns
                matrix = np.ascontiguousarray(matrix.T)
            self._weights[key] = (lo, hi, torch.from_numpy(matrix).to(self.device, torch.float64))
        return self._weights[key]

    def _resample(self, batch, out_h: int, out_w: int, inner: tuple[int, int, int, int]):
        """Pillow's resize of (n, 3, h, w) uint8 to (out_h, out_w), only the rows inner[0]:inner[2] and columns
        inner[1]:inner[3]: exact float64 products in Pillow's pass order, 8-bit between the passes."""
        import torch

        from .resample import vertical_first

        height, width = batch.shape[-2:]
        rows = self._axis(height, out_h, inner[0], inner[2], vertical=True)
        cols = self._axis(width, out_w, inner[1], inner[3], vertical=False)
        r0, r1 = (rows[0], rows[1]) if rows is not None else (inner[0], inner[2])
        c0, c1 = (cols[0], cols[1]) if cols is not None else (inner[1], inner[3])
        source = batch[:, :, r0:r1, c0:c1]
        if vertical_first(width, height, out_w, out_h) and rows is not None:
            middle = _to_8bit(self._strips(source, rows[2], along=-1))
            out = _to_8bit(self._strips(middle, cols[2], along=-2)) if cols is not None else middle
        else:
            middle = _to_8bit(self._strips(source, cols[2], along=-2)) if cols is not None else source
            out = _to_8bit(self._strips(middle, rows[2], along=-1)) if rows is not None else middle
        return out.to(torch.uint8)

    @staticmethod
    def _strips(source, weights, along: int):
        """One pass of `_resample` in float64, strip by strip along `along` (-2: rows, for source @
        weights; -1: columns, for weights @ source) so that at most MAX_ELEMENTS samples are float64 at once."""
        import torch

        n, c, h, w = source.shape
        if along == -2:
            out = torch.empty((n, c, h, weights.shape[1]), dtype=torch.float64, device=source.device)
            step = max(1, MAX_ELEMENTS // (n * c * w))
            for start in range(0, h, step):
                out[:, :, start:start + step] = source[:, :, start:start + step].double() @ weights
        else:
            out = torch.empty((n, c, weights.shape[0], w), dtype=torch.float64, device=source.device)
            step = max(1, MAX_ELEMENTS // (n * c * h))
            for start in range(0, w, step):
                out[..., start:start + step] = weights @ source[..., start:start + step].double()
        return out

    def _normalize(self, crops):
        """uint8 (N, 3, H, W) -> the processor's values through its table, in the decoder's dtype / layout."""
        import torch

        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty(crops.shape, dtype=self.dtype, device=self.device, memory_format=fmt)
        for channel in range(3):
            out[:, channel] = self.table[channel][crops[:, channel].long()]
        return out

    # ------------------------------------------------------------------ batches
    def batches(self, paths: Sequence[str], batch_size: int, threads: int = 4,
                prefetch: int | None = None, processes: int = 0) -> Iterator:
        """The decoded batches of `paths[i:i + batch_size]` in order, read up to `prefetch` batches (default
        `bulk.loader.PREFETCH_BATCHES`) ahead of the one being decoded, by `processes` worker processes (the
        CPU path's kept pool, `bulk.loader`) or, with none, by `threads` threads of this process.

        Processes are what a many-core host needs: a thread holds Python's lock for most of its reading (the
        header scan, the search for the EOI marker, the per-file bookkeeping), so on the H200 host 15 reading
        threads read about as many files as one (2,200-2,700 files/s), while the model and nvJPEG take
        over 10,000 images/s. Threads suit a batch or two, where starting processes costs more.

        Decoding runs in the calling thread, on its current stream, between the model's calls: the GPU still
        runs the model on the last batch meanwhile (its calls return before it finishes), and nvJPEG works on
        a stream of its own. A decoding thread beside the model's would break a CUDA graph capture
        (`deploy.optimize` captures one for each new batch shape), during which no other thread may
        allocate or synchronize."""
        from ..bulk import loader

        slices = [list(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)]
        ahead = loader.PREFETCH_BATCHES if prefetch is None else max(1, prefetch)
        if processes > 0 and slices:
            for results in loader.in_workers(slices, read_files, READ_PIECE, processes, self.processor, ahead=ahead):
                yield self.decode([self.take(item) for items in results for item in items])
            return
        pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="efficientformer-read")
        try:
            for futures in loader.started_ahead(slices, lambda chunk: [
                    pool.submit(self.read_all, chunk[i:i + READ_PIECE]) for i in range(0, len(chunk), READ_PIECE)],
                    ahead):
                yield self.decode([item for future in futures for item in future.result()])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
