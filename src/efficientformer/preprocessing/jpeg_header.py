"""What GPU decoding needs to know about a JPEG before handing it to nvJPEG, read from its header in Python.

`scan(data)` walks the markers up to the first scan and returns the stored size, the EXIF orientation and
the length of a file nvJPEG decodes the way Pillow does (8-bit baseline, extended or progressive Huffman
JPEG, gray or YCbCr, with an EOI marker after its scans, within Pillow's decompression-bomb limit): the
length runs through that EOI, so data after it (a phone's appended video) is not handed to nvJPEG, as
libjpeg ignores it too. None for anything else: CMYK / YCCK and Adobe RGB files, 12-bit, lossless and
arithmetic-coded JPEGs, a truncated file (no EOI after the scans; entropy-coded data never holds one, as its
0xFF bytes are stuffed), an orientation in XMP rather than EXIF, or a header this scan cannot follow. Those
files go to the CPU decoder (`image_io.open_image`), which decodes them exactly as the CPU path does, or
refuses them with the CPU path's own message.

The orientation is the one Pillow's `ImageOps.exif_transpose` applies: the Orientation tag of the first
"Exif" APP1 segment's first IFD; `orient` applies it to a (C, H, W) tensor with the same flips and turns.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from PIL import Image

_SOF_DECODED = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman: nvJPEG's
_SOF_OTHER = (0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)  # lossless, hierarchical, arithmetic
_STANDALONE = {0x01} | set(range(0xD0, 0xD8))  # markers without a length
_ORIENTATION_TAG = 0x0112
_SHORT = 3


@dataclass(frozen=True)
class Header:
    """A JPEG nvJPEG may decode: its stored (width, height), EXIF orientation (1: as stored) and the bytes
    it takes up (through its EOI marker)."""

    width: int
    height: int
    orientation: int = 1
    length: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) after the orientation is applied."""
        return (self.width, self.height) if self.orientation in (5, 6, 7, 8) else (self.height, self.width)


def scan(data: bytes | bytearray | memoryview) -> Header | None:
    """The header of a JPEG that nvJPEG decodes as Pillow does, or None (see the module docstring)."""
    try:
        return _scan(memoryview(data), data)
    except (struct.error, IndexError, ValueError):  # a header cut short or malformed: Pillow decides
        return None


def _scan(data: memoryview, raw) -> Header | None:
    end = len(data)
    if end < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos, orientation, size, components, adobe_transform, exif_seen, scans = 2, 1, None, None, None, False, None
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > end:
            return None
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xDA:  # start of scan: the header is over
            scans = pos
            break
        if marker == 0xE1:
            head = bytes(segment[:32])
            if head.startswith(b"Exif\x00\x00"):
                if exif_seen:  # Pillow joins the segments into one block: it reads that
                    return None
                exif_seen = True
                orientation = _exif_orientation(bytes(segment[6:]))
                if orientation is None:
                    return None
            elif b"Orientation" in bytes(segment):  # XMP's tiff:Orientation, which Pillow also reads
                return None
        elif marker == 0xEE and bytes(segment[:5]) == b"Adobe" and len(segment) >= 12:
            adobe_transform = segment[11]
        elif marker in _SOF_OTHER:
            return None
        elif marker in _SOF_DECODED:
            precision, height, width, count = segment[0], (segment[1] << 8) | segment[2], \
                (segment[3] << 8) | segment[4], segment[5]
            if precision != 8 or count not in (1, 3) or height == 0 or width == 0:
                return None
            ids = bytes(segment[6 + 3 * i] for i in range(count))
            if ids == b"RGB":  # libjpeg reads component ids R, G, B as RGB, not YCbCr
                return None
            size, components = (width, height), count
        pos += 2 + length
    if size is None or scans is None:
        return None
    eoi = (raw if hasattr(raw, "find") else bytes(raw)).find(b"\xff\xd9", scans)
    if eoi < 0:  # truncated (the thumbnails in EXIF, with their own EOI, come before the scans)
        return None
    if components == 3 and adobe_transform is not None and adobe_transform != 1:  # Adobe RGB, not YCbCr
        return None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:  # the CPU decoder refuses it, in its own words
        return None
    return Header(size[0], size[1], orientation, eoi + 2)


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation of IFD0 of a TIFF block (1 without one), or None when the block cannot be read."""
    if tiff[:2] == b"II":
        order = "<"
    elif tiff[:2] == b"MM":
        order = ">"
    else:
        return None
    (offset,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    for index in range(count):
        tag, kind = struct.unpack_from(order + "HH", tiff, offset + 2 + 12 * index)
        if tag == _ORIENTATION_TAG:
            if kind != _SHORT:
                return None
            (value,) = struct.unpack_from(order + "H", tiff, offset + 2 + 12 * index + 8)
            return value if 1 <= value <= 8 else 1  # Pillow applies nothing for other values
    return 1


def orient(image, orientation: int):
    """A (C, H, W) torch tensor turned as Pillow's `exif_transpose` turns an image of this orientation."""
    import torch

    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image
