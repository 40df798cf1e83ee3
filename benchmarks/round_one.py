"""Round 1 drawn again with other designs: how far apart its candidates are, and how far each is from a tinted photo.

Takes a session (by default the one ``benchmarks/loop.py`` makes), copies it, undoes its refines so that no pick has
been learned, and draws round 1 (the same Sobol design, seeded by the round's number, on the same photo) through the
session's own ``propose`` path once per design: the guard and the sheet's rendering as they are, only the map from
the design to the looks (``controls.first_round``) and the guard's bar replaced. For each design: the candidates'
mean pairwise style distance (next to the distance between two paintings, as ``loop.py`` reports it), each
candidate's style distance to the painting over the photo's own, and a contact sheet to look at.

A design is a comma-separated list (a design alone, ``shipped``, is what this version proposes):

    prior           the N(0, I) design as drawn (before session 13: no fold, no spread)
    fold            strength folded onto the bold half (|z|)
    shift           strength 0.5 + 0.5·z
    stroke=F, colour=F, scale=F   that dial spread F× wider
    bar=R           the guard's bar (default: guard.STYLISED, 0.75)

    python benchmarks/round_one.py                        # the designs of the README's table
    python benchmarks/round_one.py --designs shipped prior "fold,scale=1.8"
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from styleprefs import controls, guard, images
from styleprefs.config import METRIC_STYLE_LAYERS, TrainSettings
from styleprefs.session import Session, _sheet_photo
from styleprefs.vgg import VGG19Features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop import EXAMPLES, ROOT, grams_of, pairwise_style_distance, style_distance_to  # noqa: E402

DESIGNS = ["prior", "prior,bar=0.68", "prior,bar=0.62", "fold", "shift", "fold,scale=1.4", "fold,scale=1.8",
           "fold,stroke=1.4", "fold,colour=1.4", "fold,stroke=1.4,colour=1.4,scale=1.6", "shipped"]
SHIPPED, BAR = controls.first_round, guard.STYLISED


def design_of(spec: str):
    """The map from the N(0, I) design to round 1's looks, and the guard's bar, that ``spec`` names."""
    parts = dict(part.split("=") if "=" in part else (part, "") for part in spec.split(","))
    bar = float(parts.pop("bar", BAR))
    if "shipped" in parts:
        return SHIPPED, bar
    strength, stroke, colour = (controls.NAMED_DIMS.index(name) for name in ("strength", "stroke", "colour"))

    def first_round(looks: torch.Tensor, with_scale: bool) -> torch.Tensor:
        looks = looks.clone()
        if "fold" in parts:
            looks[:, strength] = looks[:, strength].abs()
        if "shift" in parts:
            looks[:, strength] = 0.5 + 0.5 * looks[:, strength]
        looks[:, stroke] *= float(parts.get("stroke", 1))
        looks[:, colour] *= float(parts.get("colour", 1))
        if with_scale:
            looks[:, -1] *= float(parts.get("scale", 1))
        return looks
    return first_round, bar


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--session", type=Path, default=ROOT / ".bench" / "loop" / "session")
    p.add_argument("--style", type=Path, default=EXAMPLES / "paintings" / "vangogh_starry_night.jpg")
    p.add_argument("--other-style", type=Path, default=EXAMPLES / "paintings" / "vangogh_cafe_terrace_at_night.jpg")
    p.add_argument("--designs", nargs="+", default=DESIGNS)
    p.add_argument("--work", type=Path, default=ROOT / ".bench" / "round_one")
    p.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results" / "round_one.json")
    args = p.parse_args()
    if not (args.session / "state.json").exists():
        sys.exit(f"no session at {args.session}: run `python benchmarks/loop.py` first (or pass --session)")

    copy = args.work / "session"
    shutil.rmtree(args.work, ignore_errors=True)
    shutil.copytree(args.session, copy)
    session = Session.open(copy, "cpu")
    while session.state["refines"]:
        session.undo()
    entry = session.state["rounds"][0]
    preview = session.store.path(entry["preview"])
    size, working = entry["size"], session.working_side(1)
    photo = _sheet_photo(preview, size, working)

    net = VGG19Features(METRIC_STYLE_LAYERS)
    painting, other = grams_of(net, [args.style, args.other_style], TrainSettings().style_size)

    photo_distance = style_distance_to(grams_of(net, [preview], 256)[0], painting)
    two_paintings = pairwise_style_distance(painting, other)
    rows = []
    for spec in args.designs:
        first_round, bar = design_of(spec)
        controls.first_round, guard.STYLISED = first_round, bar
        try:
            z, rendered = session._draw(entry["n"], 1, photo, size, working)
        finally:
            controls.first_round, guard.STYLISED = SHIPPED, BAR
        folder = args.work / spec.replace(",", "+").replace("=", "")
        folder.mkdir(parents=True)
        files = []
        for i, image in enumerate(rendered, 1):
            files.append(folder / f"candidate-{i:02d}.png")
            images.save_image(image, files[-1])
        images.save_image(images.contact_sheet(rendered, [str(i) for i in range(1, len(rendered) + 1)],
                                               title=f"round 1, design {spec}"), folder / "sheet.png")
        grams = grams_of(net, files, 256)
        pairs = [pairwise_style_distance(a, b) for a, b in itertools.combinations(grams, 2)]
        ratios = [style_distance_to(g, painting) / photo_distance for g in grams]
        rows.append({"design": spec, "bar": bar, "span": sum(pairs) / len(pairs),
                     "span_over_two_paintings": sum(pairs) / len(pairs) / two_paintings,
                     "to_painting_ratio_max": max(ratios), "to_painting_ratio_median": sorted(ratios)[len(ratios) // 2],
                     "ratios": [round(r, 3) for r in ratios], "z": z.tolist(), "sheet": str(folder / "sheet.png")})

    t = Table(title=f"round 1 of {args.session} drawn with each design (two paintings apart: {two_paintings:.3f}; "
                    f"the photo from the painting: {photo_distance:.3f})")
    for col in ("design", "span", "× two paintings", "weakest (× photo's)", "median"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["design"], f"{r['span']:.3f}", f"{r['span_over_two_paintings']:.3f}",
                  f"{r['to_painting_ratio_max']:.3f}", f"{r['to_painting_ratio_median']:.3f}")
    Console(width=140).print(t)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"session": str(args.session), "two_paintings": two_paintings,
                                         "photo_to_painting": photo_distance, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
