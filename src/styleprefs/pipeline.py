"""Stylising many files: photos decoded ahead and outputs encoded behind on worker threads while the
model runs in the calling thread, and consecutive images of the same size stacked into one forward.

Pillow releases the GIL while it decodes and compresses, so on a CPU the I/O overlaps the convolutions
instead of adding to them; on a GPU it also keeps the device fed. Results come back in input order.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import images
from .config import MAX_BATCH

# Images per forward: as many of one size as fit in this many pixels *of the grid the model runs on*, up to
# MAX_BATCH. On a CPU a batch pays only for small grids (the per-layer fixed costs: 4 photos of 512 px, each a
# 320×320 working grid, stylise in 0.033 s each against 0.040 s one by one) and keeps decoding and writing from
# overlapping the model; a GPU needs big batches to be kept busy.
BATCH_PIXELS = {"cpu": 1 << 18, "cuda": 1 << 24}
# And at most this many pixels of full-size photos: on a CPU 4 megapixels, since a batch gains nothing once the
# full-size composition dominates, and photos decoded and written while the model runs need batches smaller than the
# folder (three 12-megapixel photos in one batch took 1.14 s each end to end, one by one 0.8x s).
BATCH_PHOTO_PIXELS = {"cpu": 1 << 22, "cuda": 1 << 26}
AHEAD = 4               # decoded images waiting for the model, and outputs waiting to be written, at most
# PNG compression is the slowest step after the model; a GPU outruns one thread of it many times over.
ENCODERS = max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class Item:
    """One input on its way through: decoded (or why not), then stylised and written."""

    source: Path
    target: Path
    image: torch.Tensor | None = None  # (3, H, W) uint8 until stylised
    alpha: torch.Tensor | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # why the input was skipped
    written: Future | None = None


def _decode(source: Path, target: Path, max_side: int, max_pixels: int) -> Item:
    # One decoding thread, so recording warnings (process-wide state) sees only this image's.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Kept as bytes while it waits: a quarter of the memory.
            image, alpha = images.load_image_with_alpha(source, max_side=max_side, max_pixels=max_pixels,
                                                        as_bytes=True)
        except images.ImageError as exc:
            return Item(source, target, error=str(exc), warnings=[str(w.message) for w in caught])
    return Item(source, target, image, alpha, [str(w.message) for w in caught])


def batch_size(height: int, width: int, grid: tuple[int, int], batch_pixels: int = BATCH_PIXELS["cpu"],
               photo_pixels: int = BATCH_PHOTO_PIXELS["cpu"], max_batch: int = MAX_BATCH) -> int:
    """How many photos of ``height``×``width`` go through the model together, when it runs on ``grid`` for each: as
    many as fit in ``batch_pixels`` of grid and ``photo_pixels`` of photo, up to ``max_batch``; at least one."""
    return max(1, min(max_batch, batch_pixels // (grid[0] * grid[1]), photo_pixels // (height * width)))


def stylise_files(pairs: list[tuple[Path, Path]], render: Callable[[torch.Tensor], torch.Tensor], max_side: int,
                  max_pixels: int, batch_pixels: int = BATCH_PIXELS["cpu"], max_batch: int = MAX_BATCH,
                  encoders: int = ENCODERS, grid: Callable[[int, int], tuple[int, int]] | None = None,
                  photo_pixels: int = BATCH_PHOTO_PIXELS["cpu"]) -> Iterator[Item]:
    """Decode each (source, target) pair, ``render`` batches of one size, (B, 3, H, W) uint8 as decoded → (B, 3, H, W)
    in [0, 1] or uint8 (as :func:`images.save_image` takes them), write each result to its target; yield every item,
    in order, once written or skipped. An error while writing is raised. ``grid(H, W)``: the grid the model runs on
    for an image of that size (default: its own), which ``batch_pixels`` counts; ``photo_pixels`` bounds the photos'
    own pixels in a batch."""
    grid = grid or (lambda height, width: (height, width))
    ahead = AHEAD + encoders
    with ThreadPoolExecutor(1, "decode") as decoder, ThreadPoolExecutor(encoders, "encode") as encoder:
        todo = iter(pairs)
        decoding: deque[Future[Item]] = deque()
        batch: list[Item] = []    # decoded, waiting for the model (skipped ones keep their place)
        finished: deque[Item] = deque()  # rendered, being written

        def read_ahead() -> None:
            while len(decoding) < ahead and (pair := next(todo, None)) is not None:
                decoding.append(decoder.submit(_decode, *pair, max_side, max_pixels))

        def run_batch() -> None:
            good = [item for item in batch if item.error is None]
            if good:
                outputs = render(torch.stack([item.image for item in good]))
                for item, output in zip(good, outputs, strict=True):
                    item.written = encoder.submit(images.save_image, output, item.target, alpha=item.alpha)
                    item.image = None
            finished.extend(batch)
            batch.clear()

        def fits(item: Item) -> bool:
            good = [b for b in batch if b.error is None]
            if item.error is not None or not good:
                return True
            height, width = item.image.shape[-2:]
            return good[0].image.shape == item.image.shape and len(good) < batch_size(
                height, width, grid(height, width), batch_pixels, photo_pixels, max_batch)

        def done(keep: int) -> Iterator[Item]:
            """The finished items at the front: those written, and the oldest while more than ``keep`` wait."""
            while finished and (len(finished) > keep or finished[0].written is None or finished[0].written.done()):
                item = finished.popleft()
                if item.written is not None:
                    item.written.result()  # raises what the write raised
                yield item

        read_ahead()
        while decoding:
            item = decoding.popleft().result()
            read_ahead()
            if not fits(item):
                run_batch()
            batch.append(item)
            if not decoding:
                run_batch()
            yield from done(keep=ahead)
        yield from done(keep=0)
