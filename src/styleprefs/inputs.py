"""The photos and paintings a session learns from, kept inside it.

``init`` decodes them once and keeps them as training uses them (``inputs.safetensors``), with the first photo at a
size any contact sheet can use (``preview.png``). A session folder copied to another machine then refines, proposes
and applies with no access to the original files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import images
from .config import TrainSettings
from .store import SessionError, Store

KEPT = "inputs.safetensors"  # content_000, …, style_000, …: (3, H, W) uint8
PREVIEW = "preview.png"      # the first photo, for contact sheets
PREVIEW_SIDE = 2048          # the largest contact sheet's long side


def decode(content_paths: list[Path], style_paths: list[Path], settings: TrainSettings,
           max_pixels: int = images.DEFAULT_MAX_PIXELS) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The photos and paintings as training uses them: photos up to 4× the crop size, paintings at style_size, in
    8-bit steps (the precision of the files they came from), so the kept copy is exactly what init trained on."""
    contents = [_8bit(images.load_image(p, max_side=4 * settings.size, max_pixels=max_pixels)) for p in content_paths]
    styles = [_8bit(images.load_image(p, max_side=settings.style_size, max_pixels=max_pixels)) for p in style_paths]
    return contents, styles


def _8bit(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round() / 255


def keep(store: Store, contents: list[torch.Tensor], styles: list[torch.Tensor], preview: torch.Tensor) -> None:
    """Write the decoded inputs and the preview photo into the session."""
    def byte(x: torch.Tensor) -> torch.Tensor:
        return (x * 255).round().clamp(0, 255).to(torch.uint8)

    store.write_tensors(KEPT, {**{f"content_{i:03d}": byte(x) for i, x in enumerate(contents)},
                               **{f"style_{i:03d}": byte(x) for i, x in enumerate(styles)}})
    images.save_image(preview, store.path(PREVIEW))


def load(store: Store, config: dict, photos: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The session's own copy of its training photos (none unless ``photos``) and paintings."""
    kept = store.read_tensors(KEPT)
    return ([_image(store, kept, f"content_{i:03d}") for i in range(len(config["contents"]) if photos else 0)],
            [_image(store, kept, f"style_{i:03d}") for i in range(len(config["styles"]))])


def _image(store: Store, kept: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    x = kept.get(key)
    if x is None or x.ndim != 3 or x.shape[0] != 3 or x.dtype != torch.uint8 or min(x.shape[1:]) < 1:
        raise SessionError(f"{store.path(KEPT)}: damaged ({key!r} is missing or not an 8-bit RGB image)")
    return x.float() / 255


def default_preview(store: Store) -> Path:
    """The photo contact sheets show unless told otherwise: the session's own copy of the first photo."""
    return store.path(PREVIEW)
