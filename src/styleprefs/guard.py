"""Every look a stylisation: no candidate, and no learned look, may be a tinted photo.

A look's picture is a stylisation when its style distance to the nearer painting is at most ``STYLISED`` of the
photo's own (the benchmarks' measure: VGG19 Grams at the session's style layers, ‖G(x) − G(s)‖ / ‖G(s)‖, mean over
layers). The weak corners of the look space fail it: the least strength with the photo's own colours, or the
largest strokes, left a session's pictures at 0.85–0.89 of the photo's distance, and a taste for "subtle" or
"warm" went straight there.

``Guard.stylised`` moves a look that fails toward the prior's centre (the default look) until its picture passes.
The stroke scale moves with z: on a short init, the largest strokes (a working grid 2.3× coarser than the sheet's)
were a tinted photo at every z.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .device import Runtime
from .files import atomic_write
from .losses import style_distance
from .store import sha256
from .vgg import VGG19Features

STYLISED = 0.75  # at most this share of the photo's style distance to the nearer painting
SHRINK = (0.75, 0.5, 0.25, 0.0)  # the fractions of z tried, in turn, for a look that fails


@torch.no_grad()
def picture_features(net: VGG19Features, runtime: Runtime, image: torch.Tensor,
                     layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The loss network's activations of a (3, H, W) image at ``layers``, fp32 on the CPU."""
    with runtime.autocast():
        features = net(runtime.images(image[None]))
    return {name: features[name].float().cpu() for name in layers}


def distance_to(net: VGG19Features, runtime: Runtime, image: torch.Tensor, grams: dict[str, torch.Tensor]) -> float:
    """Style distance of a (3, H, W) image to one set of Gram targets, layer → (C, C)."""
    features = picture_features(net, runtime, image, tuple(grams))
    return float(style_distance(features, {name: gram[None] for name, gram in grams.items()}))


class Guard:
    """Measures pictures of one photo against the session's paintings."""

    def __init__(self, net: VGG19Features, runtime: Runtime, painting_grams: dict[str, torch.Tensor],
                 photo: torch.Tensor):
        self._net, self._runtime = net, runtime
        self._grams = painting_grams  # layer → (K, C, C)
        self._photo = self.distance(photo)

    def distance(self, image: torch.Tensor) -> float:
        """Style distance of a (3, H, W) image to the nearer painting."""
        features = picture_features(self._net, self._runtime, image, tuple(self._grams))
        paintings = next(iter(self._grams.values())).shape[0]
        return min(float(style_distance(features, {name: grams[k : k + 1] for name, grams in self._grams.items()}))
                   for k in range(paintings))

    def ratio(self, image: torch.Tensor) -> float:
        """The image's distance over the photo's: below 1 is nearer the painting than the photo is."""
        return self.distance(image) / max(self._photo, 1e-12)

    def stylised(self, look: torch.Tensor, render: Callable[[torch.Tensor], torch.Tensor],
                 or_nearest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``look`` and its picture (``render(look)``) if the picture is a stylisation; else the first of look × SHRINK
        whose picture is. When not even the centre's is, the generator is at fault, not the look: a candidate stays
        as it was (moving every one to the centre would show one picture sixteen times); the look to apply
        (``or_nearest``) becomes the one whose picture is nearest the painting (after four fine-tunings toward
        "subtle", the centre was 0.82 on the sheet's photo and 0.65–0.77 on others, the corner 0.89–1.09)."""
        picture = render(look)
        ratio = self.ratio(picture)
        if ratio <= STYLISED or not bool(look.any()):
            return look, picture
        nearest = (ratio, look, picture)
        for fraction in SHRINK:
            moved = look * fraction
            moved_picture = render(moved)
            moved_ratio = self.ratio(moved_picture)
            if moved_ratio <= STYLISED:
                return moved, moved_picture
            nearest = min(nearest, (moved_ratio, moved, moved_picture), key=lambda option: option[0])
        return (nearest[1], nearest[2]) if or_nearest else (look, picture)


# ----------------------------------------------------------------- the verdict on apply's look, remembered
# Judging the look apply uses costs a loss network and two to six VGG passes, about 1 s of every `apply` process,
# yet it gives the same answer until the session changes. So the fraction of the look that passed (1 or one of
# SHRINK) is remembered in the user's cache folder, under a key made of everything the verdict depends on, hashed:
# apply never writes into the session (which may be shared, read-only, or checked file by file), and a copied
# session finds its verdict too. Anything in a remembered file that is not one of the guard's own options, or not
# under its key, is ignored and the look judged afresh.
_VERDICT_VERSION = 1
_FRACTIONS = (1.0, *SHRINK)  # the guard's answers: the look itself, or one of its moves toward the centre
KEPT_VERDICTS = 256  # the newest kept; older ones removed as new ones are written


def cache_folder() -> Path:
    """``$STYLEPREFS_CACHE``, else ``$XDG_CACHE_HOME/styleprefs``, else ``~/.cache/styleprefs``."""
    if os.environ.get("STYLEPREFS_CACHE"):
        return Path(os.environ["STYLEPREFS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "styleprefs"


def verdict_key(look: torch.Tensor, files: list[Path], settings: dict) -> str:
    """The key of the guard's verdict on ``look`` judged with ``files`` (the generator, the paintings' Grams, the
    photo it is judged on: hashed whole) and ``settings`` (sizes, the runtime; JSON-able)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({"version": _VERDICT_VERSION, "stylised": STYLISED, "shrink": SHRINK, **settings},
                             sort_keys=True).encode())
    digest.update(look.detach().float().cpu().contiguous().numpy().tobytes())
    for path in files:
        digest.update(sha256(path).encode())
    return digest.hexdigest()


def fraction_of(look: torch.Tensor, judged: torch.Tensor) -> float | None:
    """Which of the guard's options ``judged`` is: the fraction f with judged = look × f (None if none)."""
    for fraction in _FRACTIONS:
        if torch.equal(judged, look * fraction):
            return fraction
    return None


def _verdict_path(key: str) -> Path:
    return cache_folder() / "verdicts" / f"{key}.json"


def recall(key: str) -> float | None:
    """The fraction remembered under ``key``; None when there is none, it is another key's, or it is not an option."""
    try:
        entry = json.loads(_verdict_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    fraction = entry.get("fraction")
    return float(fraction) if type(fraction) in (int, float) and fraction in _FRACTIONS else None


def remember(key: str, fraction: float) -> None:
    """Keep the verdict for the next process; best effort (an unwritable cache only means judging again)."""
    path = _verdict_path(key)
    try:
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps({"key": key, "fraction": fraction}) + "\n",
                                                      encoding="utf-8"))
        kept = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEPT_VERDICTS:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
