"""The pictures of README.md, from a run of benchmarks/loop.py (the quickstart's commands): photo | apply |
apply --polish for some bundled photos (docs/applied.jpg), the round-1 contact sheet (docs/sheet-round1.png) and the
sheet of polished candidates the loop ends with (docs/sheet-polished.jpg).

    python benchmarks/loop.py && python tools/readme_pictures.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from styleprefs.images import load_image, save_image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("skimage_chelsea_cat.png", "skimage_astronaut.png", "skimage_coffee.png")
HEIGHT = 300  # px of each picture in the strip


def fitted(image: torch.Tensor) -> torch.Tensor:
    width = round(image.shape[-1] * HEIGHT / image.shape[-2])
    return F.interpolate(image[None], size=(HEIGHT, width), mode="bicubic", antialias=True)[0].clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loop", type=Path, default=ROOT / ".bench" / "loop", help="benchmarks/loop.py's --out")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    args = p.parse_args(argv)
    rows = []
    for name in PHOTOS:
        stem = Path(name).stem
        found = [next((folder.glob(f"{stem}.*")), None) for folder in (
            ROOT / "examples" / "photos", args.loop / "styled", args.loop / "styled-polished")]
        if None in found:
            print(f"{name}: missing from {args.loop}; run benchmarks/loop.py first", file=sys.stderr)
            return 2
        gap = torch.ones(3, HEIGHT, 6)
        rows.append(torch.cat([x for image in found for x in (fitted(load_image(image)), gap)][:-1], dim=2))
    width = max(r.shape[-1] for r in rows)
    rows = [F.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows]
    save_image(torch.cat([x for r in rows for x in (r, torch.ones(3, 6, width))][:-1], dim=1),
               args.out / "applied.jpg", quality=88)
    rounds = args.loop / "session" / "rounds"
    shutil.copy(rounds / "001" / "sheet.png", args.out / "sheet-round1.png")
    save_image(load_image(rounds / "003" / "sheet.png"), args.out / "sheet-polished.jpg", quality=85)
    print(f"wrote {args.out / 'applied.jpg'}, {args.out / 'sheet-round1.png'} and {args.out / 'sheet-polished.jpg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
