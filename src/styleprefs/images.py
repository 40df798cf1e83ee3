"""Image I/O: finding and decoding photos (EXIF, modes), resizing, saving (atomically), the contact sheet."""

from __future__ import annotations

import math
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .config import DEFAULT_MAX_PIXELS
from .errors import BadInput
from .files import atomic_write

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MIN_SIDE = 16
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # "I": how Pillow opens 16-bit PGM/PPM
_PILLOW_LIMIT = threading.Lock()


class ImageError(BadInput):
    """An input image that cannot be used; the message names the file and says why."""


def find_images(paths: list[Path]) -> list[Path]:
    """The image files among ``paths``, folders searched recursively, in a stable order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise ImageError(f"{path}: not a file or folder")
        else:
            raise ImageError(f"{path}: no such file or folder")
    if not found:
        raise ImageError(f"no images found in {', '.join(map(str, paths))}")
    return found


def find_paintings(paths: list[Path]) -> list[Path]:
    """The painting files named by ``--style``, in order. A folder is refused: each painting becomes a blend axis
    of z, so every image in a folder (sketches and thumbnails too) would silently become one more."""
    for path in map(Path, paths):
        if path.is_dir():
            raise ImageError(f"{path}: is a folder; name each painting on its own (each one adds a blend axis to "
                             "the looks)", "styles")
    return find_images(paths)


def open_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image upright (EXIF orientation applied) in its own mode; the first frame of an animation.

    The pixel count is checked from the header, before anything is decoded (decompression bombs)."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    try:
        with _own_pixel_limit():  # Pillow checks its limit when it reads the header, here: decodes run in parallel
            img = Image.open(path)
        with img:
            if img.width * img.height > max_pixels:
                raise ImageError(
                    f"{path}: {img.width}×{img.height} is over the limit of {max_pixels:,} pixels")
            if getattr(img, "n_frames", 1) > 1:
                warnings.warn(f"{path}: animated image, using its first frame", stacklevel=2)
            img.seek(0)
            img.load()
            return ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


@contextmanager
def _own_pixel_limit():
    """Pillow's decompression-bomb check lifted while one header is read: ours, from the header against
    ``max_pixels``, takes its place (Pillow's limit is not ours, and below it Pillow warns, on lines of its own).

    Pillow reads its limit from a module global, so it is lifted only for ``Image.open`` and put back after:
    importing styleprefs leaves Pillow as it was for other code. The lock keeps two of our opens from putting it back
    out of order; the decodes themselves run in parallel, outside it. A host program's own thread opening an image
    in that moment would go unchecked by Pillow."""
    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB; transparency is flattened onto white."""
    if img.mode in SIXTEEN_BIT_MODES:
        # By the mode, never by the content: a dark 16-bit photo (all values under 256) is still out of 65535.
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def resize(img: Image.Image, max_side: int | None = None, short_side: int | None = None) -> Image.Image:
    """Scale so the long side is at most ``max_side`` or the short side equals ``short_side``."""
    w, h = img.size
    scale = 1.0
    if short_side is not None:
        scale = short_side / min(w, h)
    if max_side is not None:
        scale = min(scale if short_side is not None else 1.0, max_side / max(w, h))
    if abs(scale - 1.0) < 1e-9:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


def shrink(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """A (3, H, W) image in [0, 1] as :func:`load_image` would give it at ``max_side`` (the preview photo's resize)."""
    return to_tensor(resize(to_pil(image), max_side=max_side))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB → float tensor (3, H, W) in [0, 1]."""
    return to_bytes(img).float() / 255.0


def to_bytes(img: Image.Image) -> torch.Tensor:
    """PIL RGB → uint8 tensor (3, H, W), a quarter of the float one's memory."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def to_pil(image: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [0, 1], or uint8 (stored channels last, as ``render.to_bytes`` gives it, it is
    not copied), → PIL RGB."""
    if image.dtype == torch.uint8:
        return Image.fromarray(image.permute(1, 2, 0).cpu().contiguous().numpy(), "RGB")
    # One float copy, then in place: a 4096² image is 200 MB a copy.
    arr = image.detach().float().clamp(0, 1).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def load_image(path: Path, max_side: int | None = None, short_side: int | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode, orient and resize an image to a (3, H, W) tensor in [0, 1] (transparency onto white)."""
    return load_image_with_alpha(path, max_side, short_side, max_pixels)[0]


def load_image_with_alpha(path: Path, max_side: int | None = None, short_side: int | None = None,
                          max_pixels: int = DEFAULT_MAX_PIXELS,
                          as_bytes: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """As :func:`load_image`, plus the (1, H, W) alpha channel when the image has real transparency;
    ``as_bytes``: the image as uint8 (``/ 255.0`` gives exactly what :func:`load_image` does)."""
    img = open_image(path, max_pixels)
    alpha = None
    if has_alpha(img):
        channel = img.convert("RGBA").getchannel("A")
        if channel.getextrema() != (255, 255):
            alpha = resize(channel, max_side, short_side)
    rgb = resize(_to_rgb(img), max_side, short_side)
    if min(rgb.size) < MIN_SIDE:
        raise ImageError(f"{path}: {rgb.width}×{rgb.height} is too small (at least {MIN_SIDE} px a side)")
    alpha_tensor = None if alpha is None else torch.from_numpy(np.asarray(alpha, dtype=np.uint8).copy())[None] / 255.0
    return (to_bytes(rgb) if as_bytes else to_tensor(rgb)), alpha_tensor


def save_image(image: torch.Tensor | Image.Image, path: Path, quality: int = 95,
               alpha: torch.Tensor | None = None) -> None:
    """Write an image atomically (a PIL image, or a (3, H, W) tensor as :func:`to_pil` takes it); the format follows
    the suffix (PNG or JPEG).

    ``alpha`` (1, H, W) is kept in a PNG; JPEG has no alpha, so there the image is composited onto white."""
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    if alpha is not None and isinstance(image, torch.Tensor):
        if fmt == "JPEG":
            image = (image.float() / 255 if image.dtype == torch.uint8 else image) * alpha + (1 - alpha)
        else:
            rgba = to_pil(image).convert("RGBA")
            rgba.putalpha(Image.fromarray((alpha[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy(), "L"))
            image = rgba
    img = image if isinstance(image, Image.Image) else to_pil(image)
    # PNG at zlib level 1: 2.8× faster to write than Pillow's default 6 (35 against 95 ms for a 512² output), for
    # files about 11 % larger; on 2 cores the encoder competes with the generator for the CPU, so this is most of
    # apply's overhead over the bare forward (benchmarks/speed.py).
    options = {"quality": quality, "subsampling": 0} if fmt == "JPEG" else {"compress_level": 1}
    atomic_write(Path(path), lambda tmp: img.save(tmp, format=fmt, **options))


def _font(size: int) -> ImageFont.ImageFont:
    """A bold sans font where the system has one, else Pillow's built-in scalable font."""
    for name in ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf", "Arial Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def contact_sheet(images: list[torch.Tensor], labels: list[str], columns: int | None = None,
                  cell: int = 256, title: str | None = None) -> Image.Image:
    """A grid of thumbnails, each with a large, legible label in a dark badge at its top-left."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    gap, header = 6, (44 if title else 0)
    sheet = Image.new("RGB", (columns * (cell + gap) + gap, header + rows * (cell + gap) + gap), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((gap + 4, 8), title, fill=(235, 235, 235), font=_font(26))
    label_font = _font(max(20, cell // 5))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        thumb = ImageOps.contain(to_pil(image), (cell, cell), Image.Resampling.LANCZOS)
        x = gap + (i % columns) * (cell + gap)
        y = header + gap + (i // columns) * (cell + gap)
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        box = draw.textbbox((0, 0), label, font=label_font)
        pad = 6
        draw.rectangle((x, y, x + box[2] + 2 * pad, y + box[3] + 2 * pad), fill=(0, 0, 0))
        draw.text((x + pad, y + pad - box[1] // 2), label, fill=(255, 235, 59), font=label_font)
    return sheet
