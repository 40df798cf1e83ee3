"""The photos and paintings a session learns from, kept inside it.

``init`` decodes them once and keeps them as training uses them (``inputs.safetensors``), with the first photo at a
size any contact sheet can use (``preview.png``). A session folder copied to another machine then refines, proposes
and applies with no access to the original files. Sessions made before this kept only the files' paths and
SHA-256s: for them the files are read again, and only while they are the ones the session was made from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import images
from .config import TrainSettings
from .store import SessionError, Store, sha256

KEPT = "inputs.safetensors"  # content_000, …, style_000, …: (3, H, W) uint8
PREVIEW = "preview.png"      # the first photo, for contact sheets
PREVIEW_SIDE = 2048          # the largest contact sheet's long side
ACCEPTED = 2**62             # a recorded photo whose SHA-256 matches passed the pixel limit at init


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


def load(store: Store, config: dict, settings: TrainSettings,
         photos: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The session's training photos (none unless ``photos``) and paintings: its own copy, or (older sessions) the
    recorded files."""
    contents = config["contents"] if photos else []
    if store.path(KEPT).exists():
        kept = store.read_tensors(KEPT)
        return ([_image(store, kept, f"content_{i:03d}") for i in range(len(contents))],
                [_image(store, kept, f"style_{i:03d}") for i in range(len(config["styles"]))])
    for item in [*contents, *config["styles"]]:
        path = Path(item["path"])
        if not path.is_file():
            raise SessionError(f"{path}: gone since init (this session, made before sessions kept their own copy, "
                               "needs its training photos where they were)")
        if "sha256" in item and sha256(path) != item["sha256"]:
            raise SessionError(f"{path}: changed since init (its SHA-256 differs from the one {store.path('config.json')} "
                               "recorded); put the original back")
    return decode([Path(c["path"]) for c in contents], [Path(s["path"]) for s in config["styles"]],
                  settings, max_pixels=ACCEPTED)


def _image(store: Store, kept: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    x = kept.get(key)
    if x is None or x.ndim != 3 or x.shape[0] != 3 or x.dtype != torch.uint8 or min(x.shape[1:]) < 1:
        raise SessionError(f"{store.path(KEPT)}: damaged ({key!r} is missing or not an 8-bit RGB image)")
    return x.float() / 255


def default_preview(store: Store, config: dict) -> Path:
    """The photo contact sheets show unless told otherwise: the session's own copy, else the first recorded photo."""
    kept = store.path(PREVIEW)
    return kept if kept.is_file() else Path(config["contents"][0]["path"])
