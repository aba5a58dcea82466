"""Training logs and pictures: a JSONL log, a per-epoch CSV, training curves and a confusion matrix as PNG.

The pictures are drawn with Pillow alone (already a core dependency), so they need no plotting library.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..fileio import write_bytes, write_text

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


class MetricsLog:
    """Appends records to OUTPUT/metrics.jsonl and rewrites OUTPUT/epochs.csv and OUTPUT/curves.png.

    Args:
        folder: the run's output folder.
        enabled: False on processes other than rank 0 (nothing is written).

    On resume, `truncate(step)` drops records written after the checkpoint's step, so the log of a
    resumed run equals the log of an uninterrupted one.
    """

    def __init__(self, folder: str | os.PathLike, enabled: bool = True) -> None:
        self.folder = Path(folder)
        self.enabled = enabled
        self.path = self.folder / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        if enabled:
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.path.is_file():
                self.records = _read_records(self.path)
                if not self.path.read_bytes().endswith(b"\n"):  # cut short by a kill: appending would glue lines
                    write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def truncate(self, step: int) -> None:
        """Keep only records with `step` <= the given global step (used when resuming)."""
        if not self.enabled:
            return
        self.records = [r for r in self.records if r.get("step", 0) <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def reset(self) -> None:
        """Start a fresh log (a new run in an existing folder)."""
        self.records = []
        if self.enabled and self.path.exists():
            self.path.unlink()

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (a dict with at least `kind` and `step`)."""
        if not self.enabled:
            return
        self.records.append(record)
        # appended, not rewritten (the log grows with the run); a kill mid-line leaves a partial last
        # line, which `_read_records` drops and the resume's `truncate` rewrites away
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == "epoch"]

    def write_summaries(self) -> None:
        """Rewrite epochs.csv and curves.png from the records so far."""
        if not self.enabled:
            return
        rows = self.epochs()
        if rows:
            fields = sorted({k for r in rows for k in r if k != "kind"}, key=_field_order)
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            write_text(self.folder / "epochs.csv", buffer.getvalue())
        steps = [r for r in self.records if r.get("kind") == "train"]
        if steps or rows:
            plot_curves(steps, rows, self.folder / "curves.png")


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a last line cut short by a kill is dropped, damage elsewhere is an error."""
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            from ..errors import CheckpointError

            raise CheckpointError(f"{path} line {number} is not JSON; delete the file (the run's metrics "
                                  "restart) or repair that line.") from None
    return records


def _field_order(name: str) -> tuple[int, str]:
    first = ("epoch", "step", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr")
    return (first.index(name) if name in first else len(first), name)


# -------------------------------------------------------------------------------------------- drawing
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _panel(draw, box, title: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
           ylim: tuple[float, float] | None = None) -> None:
    x0, y0, x1, y1 = box
    font, small = _font(16), _font(12)
    draw.text((x0, y0 - 24), title, fill="black", font=font)
    draw.rectangle(box, outline=(120, 120, 120))
    xs_all = [x for _, xs, _ in series for x in xs]
    ys_all = [y for _, _, ys in series for y in ys if np.isfinite(y)]
    if not xs_all or not ys_all:
        return
    xmin, xmax = min(xs_all), max(xs_all)
    ymin, ymax = ylim if ylim else (min(ys_all), max(ys_all))
    if ymax - ymin < 1e-9:
        ymin, ymax = ymin - 0.5, ymax + 0.5
    xmax = xmax if xmax > xmin else xmin + 1

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x0 + (x - xmin) / (xmax - xmin) * (x1 - x0), y1 - (y - ymin) / (ymax - ymin) * (y1 - y0))

    for i in range(5):  # horizontal grid with labels
        y = ymin + (ymax - ymin) * i / 4
        _, py = to_px(xmin, y)
        draw.line([(x0, py), (x1, py)], fill=(225, 225, 225))
        draw.text((x0 - 58, py - 7), f"{y:.3g}", fill="black", font=small)
    draw.text((x0, y1 + 6), f"{xmin:g}", fill="black", font=small)
    draw.text((x1 - 40, y1 + 6), f"{xmax:g}", fill="black", font=small)
    for k, (name, xs, ys) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        points = [to_px(x, y) for x, y in zip(xs, ys) if np.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        elif points:
            px, py = points[0]
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        draw.text((x0 + 10, y0 + 8 + 16 * k), name, fill=color, font=small)


def plot_curves(steps: Sequence[dict], epochs: Sequence[dict], path: str | os.PathLike) -> None:
    """Draw training loss over steps and validation top-1 / loss over epochs into one PNG."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1200, 460), "white")
    draw = ImageDraw.Draw(image)

    def series(name: str, key: str) -> tuple[str, list, list]:
        rows = [r for r in epochs if key in r]
        return name, [r["epoch"] for r in rows], [r[key] for r in rows]

    loss_series = [("train loss (per log step)", [r["epoch_float"] for r in steps], [r["loss"] for r in steps])]
    if any("val_loss" in r for r in epochs):
        loss_series.append(series("val loss", "val_loss"))
    acc_series = [series(name, key) for name, key in (("train top-1 %", "train_top1"), ("val top-1 %", "val_top1"),
                                                       ("val top-1 % (EMA)", "val_ema_top1"))
                  if any(key in r for r in epochs)]
    _panel(draw, (80, 50, 560, 400), "loss (x: epoch)", loss_series)
    _panel(draw, (680, 50, 1160, 400), "accuracy (x: epoch)", acc_series)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def draw_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                          title: str = "") -> None:
    """Write a PNG of the confusion matrix: rows true, columns predicted, shaded by row share, counts written in.

    Past 30 classes the counts are left out and only the shading is drawn.
    """
    from PIL import Image, ImageDraw

    k = len(class_names)
    cell = max(6, min(60, 900 // max(k, 1)))
    left = 140 if k <= 30 else 20
    top = 70 if k <= 30 else 40
    image = Image.new("RGB", (left + cell * k + 20, top + cell * k + 20), "white")
    draw = ImageDraw.Draw(image)
    font = _font(max(9, min(14, cell // 3)))
    draw.text((10, 8), title or "confusion matrix", fill="black", font=_font(14))
    draw.text((10, 28), "rows: true class, columns: predicted class", fill=(90, 90, 90), font=_font(12))
    totals = matrix.sum(1, keepdims=True).clip(min=1)
    share = matrix / totals
    for i in range(k):
        for j in range(k):
            shade = int(255 * (1 - share[i, j]))
            color = (shade, shade, 255) if i == j else (255, shade, shade)
            x, y = left + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell, y + cell], fill=color, outline=(200, 200, 200))
            if k <= 30 and matrix[i, j]:
                ink = "white" if shade < 110 else "black"
                draw.text((x + 3, y + cell // 2 - 7), str(int(matrix[i, j])), fill=ink, font=font)
        if k <= 30:
            draw.text((5, top + i * cell + cell // 2 - 7), str(class_names[i])[:18], fill="black", font=font)
            draw.text((left + i * cell + 2, top - 16), str(class_names[i])[: max(2, cell // 7)], fill="black",
                      font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())
