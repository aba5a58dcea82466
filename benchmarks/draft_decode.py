"""`--draft` (JPEG decoding at a reduced DCT scale) against the exact path: time and largest difference.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/draft_decode.py

The five fixture photos are saved as JPEGs (quality 90) at 640x480, 1280x960 and 4000x3000; for the hub
settings and the bundled model's, each file is decoded and cropped (`EfficientFormerImageProcessor.crop_8bit`)
exactly and with `image_io.open_image(path, draft=processor.draft_size)`, on one core (process CPU time, mean
over the files), and the crops are compared as 8-bit values and as `pixel_values`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from efficientformer import EfficientFormerImageProcessor
from efficientformer.bundled import default_model_path
from efficientformer.checkpoints.folder import DEFAULT, processor_for
from efficientformer.preprocessing.image_io import open_image

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "images"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png")
SIZES = ((640, 480), (1280, 960), (4000, 3000))


def cpu_ms(call) -> tuple[float, np.ndarray]:
    start = time.process_time()
    result = call()
    return (time.process_time() - start) * 1e3, result


def main() -> int:
    processors = {"hub": processor_for(DEFAULT), "bundled": EfficientFormerImageProcessor.from_pretrained(
        default_model_path())}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name in PHOTOS:
            photo = Image.open(FIXTURES / name).convert("RGB")
            for size in SIZES:
                path = Path(tmp) / f"{Path(name).stem}_{size[0]}.jpg"
                photo.resize(size, Image.BICUBIC).save(path, quality=90)
                files.setdefault(size, []).append(str(path))
        print("| settings, JPEG size | exact ms | draft ms | largest |pixel_values| difference "
              "| 8-bit largest / mean |")
        print("|---|---:|---:|---:|---:|")
        for label, processor in processors.items():
            table = processor.lookup_table()
            processor.crop_8bit(files[SIZES[0]][0])  # warm-up: plans and work arrays
            for size in SIZES:
                rows = []
                for path in files[size]:
                    exact_ms, exact = cpu_ms(lambda: processor.crop_8bit(path))
                    draft_ms, draft = cpu_ms(lambda: processor.crop_8bit(open_image(path, draft=processor.draft_size)))
                    levels = np.abs(exact.astype(int) - draft)
                    values = np.abs(np.stack([table[c][exact[..., c]] - table[c][draft[..., c]] for c in range(3)]))
                    rows.append((exact_ms, draft_ms, values.max(), levels.max(), levels.mean()))
                r = np.array(rows)
                print(f"| {label}, {size[0]}x{size[1]} | {r[:, 0].mean():.1f} | {r[:, 1].mean():.1f} | "
                      f"{r[:, 2].max():.3f} | {int(r[:, 3].max())} / {r[:, 4].mean():.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
