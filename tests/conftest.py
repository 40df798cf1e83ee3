"""Shared fixtures: small images made here or shipped in examples/, and the optional shared data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# What styleprefs remembers between processes (guard.cache_folder) goes to a folder of this test run, not the user's
# (the commands the tests start inherit it).
os.environ["STYLEPREFS_CACHE"] = tempfile.mkdtemp(prefix="styleprefs-test-cache-")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


def make_photo(path: Path, size=(96, 72), seed: int = 0, mode: str = "RGB") -> Path:
    """A small synthetic 'photo': smooth gradients plus a few shapes, so it has edges and colour."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([x, y, 1 - x * y], -1) * 200 + rng.uniform(0, 40, 3)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 20)
        mask = (np.mgrid[0:h, 0:w][1] - cx) ** 2 + (np.mgrid[0:h, 0:w][0] - cy) ** 2 < r * r
        base[mask] = rng.uniform(0, 255, 3)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


@pytest.fixture(params=[0o022, 0o077], ids=["umask-022", "umask-077"])
def umask(request):
    """Run the test under each of two umasks (the umask is process-wide, so it is put back after)."""
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


@pytest.fixture
def painting() -> Path:
    return EXAMPLES / "paintings" / "vangogh_starry_night.jpg"


@pytest.fixture
def photos() -> list[Path]:
    return sorted((EXAMPLES / "photos").iterdir())


def record_files(session_folder: Path) -> None:
    """Record a copied session's files as they are now in its manifest: a test's own edit of them (say, to a recorded
    path), which the commands would otherwise, rightly, refuse as damage."""
    import json

    from styleprefs.store import Store
    state_path = session_folder / "state.json"
    state = json.loads(state_path.read_text())
    state["files"] = Store(session_folder).manifest()
    state_path.write_text(json.dumps(state))


@pytest.fixture(scope="session")
def proposed_session(tmp_path_factory) -> Path:
    """A real session (3 init steps at 64 px on two made photos) with one round of 6 candidates proposed; never
    changed: tests work on a copy (``one_round``)."""
    from styleprefs.config import TrainSettings
    from styleprefs.session import Session

    root = tmp_path_factory.mktemp("proposed")
    photos = [make_photo(root / "photos" / "a.png", seed=1), make_photo(root / "photos" / "b.png", seed=2)]
    painting = EXAMPLES / "paintings" / "vangogh_starry_night.jpg"
    session = Session.init(root / "session", [painting], photos, TrainSettings(steps=3, size=64), device="cpu")
    session.propose(n=6, size=64)
    return root / "session"


@pytest.fixture
def one_round(proposed_session, tmp_path) -> Path:
    """This test's own copy of ``proposed_session``."""
    import shutil
    shutil.copytree(proposed_session, tmp_path / "session")
    return tmp_path / "session"


# Two computations of one picture that differ only in the order of their sums (another batch size, convolution kernel
# or thread split) agree up to rounding, on every x86 CPU alike. The bounds come from the arithmetic, not from one
# machine's run:
# - fp32 rounds each sum to 2^-24 of its size, about 1e-6 of an output in [0, 1] after the generator's layers and
#   norms (seen 1e-6 to 3e-6 at most, 1e-7 on average, on AVX2 and AVX-512). The bounds are a hundred times that and
#   more, and still far below a level of 8 bits (1/255 = 3.9e-3), so a pixel moves by at most one level, and on
#   average a fraction 255·E|Δ| of them do (a rounding boundary falls between the two values);
# - bf16 keeps 8 bits of each activation (2^-9 relative rounding): some twenty independent roundings give about
#   √20·2^-9 ≈ 1 % of a value, a level or so of the output on average, with tails a few times that.
# A real fault (one photo's statistics leaking into another's, a band written twice) moves pixels by tens of levels.
FP32_MAX, FP32_MEAN = 1.5e-3, 1e-4
BF16_MAX, BF16_MEAN = 24 / 255, 4 / 255


def assert_equal_up_to_rounding(a: torch.Tensor, b: torch.Tensor, bf16: bool) -> None:
    """``a`` and ``b``, two renders of one picture in [0, 1] (floats) or 0…255 (bytes), differ by rounding alone."""
    scale = 255.0 if a.dtype == torch.uint8 else 1.0
    difference = (a.double() - b.double()).abs() / scale
    largest, mean = float(difference.max()), float(difference.mean())
    if bf16:
        assert largest <= BF16_MAX and mean <= BF16_MEAN, (largest * 255, mean * 255)
    elif a.dtype == torch.uint8:  # rounded to levels: at most one apart, on a fraction of at most 255·E|Δ|
        moved = float((difference > 0).double().mean())
        assert largest <= 1 / 255 + 1e-9 and moved <= 255 * FP32_MEAN, (largest * 255, moved)
    else:
        assert largest <= FP32_MAX and mean <= FP32_MEAN, (largest, mean)
