"""The whole loop through the real CLI, timed: init, propose, select, refine, propose, apply, apply --polish (the
commands of examples/quickstart.sh), then a round of polished candidates (propose --polish), timed apart.

Also reports how different one round's proposals are from each other (mean pairwise style distance),
next to the style distance between two different paintings, and how close each is to the painting.

    python benchmarks/loop.py                       # defaults, bundled examples (about 6 min on 2 cores with bf16 units)
    python benchmarks/loop.py --steps 20 --refine-steps 5   # a quick smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from styleprefs import images
from styleprefs.config import METRIC_STYLE_LAYERS, TrainSettings
from styleprefs.device import cpu_report
from styleprefs.losses import gram
from styleprefs.vgg import VGG19Features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def cli(*args: object) -> tuple[dict, float]:
    """Run one styleprefs command in a fresh process; its JSON and wall seconds (import included)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "styleprefs", *map(str, args), "--json"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"styleprefs {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), seconds


def grams_of(net: VGG19Features, paths: list[Path], max_side: int) -> list[dict[str, torch.Tensor]]:
    with torch.no_grad():
        return [{k: gram(v) for k, v in net(images.load_image(p, max_side=max_side)[None]).items()} for p in paths]


def style_distance_to(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> float:
    """Style distance from one image's Grams to another's (``y``'s norm as the scale), mean over the metric's layers."""
    return float(torch.stack([((x[k] - y[k]).norm() / y[k].norm()) for k in METRIC_STYLE_LAYERS]).mean())


def pairwise_style_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Symmetrised style distance between two images' Grams."""
    return (style_distance_to(a, b) + style_distance_to(b, a)) / 2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--style", type=Path, default=EXAMPLES / "paintings" / "vangogh_starry_night.jpg")
    p.add_argument("--other-style", type=Path, default=EXAMPLES / "paintings" / "vangogh_cafe_terrace_at_night.jpg",
                   help="a second painting, for the painting-to-painting distance")
    p.add_argument("--content", type=Path, default=EXAMPLES / "photos")
    p.add_argument("--steps", type=int, help=f"init steps (default: the package's, {TrainSettings().steps})")
    p.add_argument("--refine-steps", type=int, help=f"refine steps (default {TrainSettings().refine_steps})")
    p.add_argument("--picks", default="2 7 11")
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "loop")
    p.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results" / "loop.json")
    args = p.parse_args()

    session = args.out / "session"
    figures: dict[str, float] = {}
    init, figures["init_s"] = cli("init", "--style", args.style, "--content", args.content, "--session", session,
                                  "--force", *(["--steps", args.steps] if args.steps else []))
    first, figures["propose_s"] = cli("propose", "--n", 16, "--session", session)
    _, figures["select_s"] = cli("select", *args.picks.split(), "--session", session)
    refined, figures["refine_s"] = cli("refine", "--session", session,
                                       *(["--steps", args.refine_steps] if args.refine_steps else []))
    second, figures["propose2_s"] = cli("propose", "--n", 16, "--session", session)
    applied, figures["apply_s"] = cli("apply", args.content, "--out", args.out / "styled", "--session", session)
    figures["apply_images"] = len(applied["outputs"])
    polished, figures["apply_polish_s"] = cli("apply", args.content, "--out", args.out / "styled-polished", "--polish",
                                              "--session", session)
    figures["total_s"] = sum(v for k, v in figures.items() if k.endswith("_s"))
    # Not part of the quickstart, so not of the total: a round of candidates each finished by polish.
    finished, figures["propose_polish_seconds"] = cli("propose", "--n", 16, "--polish", "--session", session)

    net = VGG19Features(METRIC_STYLE_LAYERS)
    size = TrainSettings().style_size
    painting, other = grams_of(net, [args.style, args.other_style], size)
    rounds = {}
    for name, r in (("round1", first), ("round2", second)):
        g = grams_of(net, [Path(c) for c in r["candidates"]], size)
        pairs = [pairwise_style_distance(a, b) for a, b in itertools.combinations(g, 2)]
        to_painting = [style_distance_to(x, painting) for x in g]
        rounds[name] = {"pairwise_mean": sum(pairs) / len(pairs), "pairwise_max": max(pairs),
                        "to_painting_median": sorted(to_painting)[len(to_painting) // 2],
                        "to_painting_max": max(to_painting)}
    preview = Path(json.loads((session / "config.json").read_text())["contents"][0]["path"])
    photo = grams_of(net, [preview], 256)[0]
    reference = {"two_paintings": pairwise_style_distance(painting, other),
                 "photo_to_painting": style_distance_to(photo, painting)}

    console = Console()
    t = Table(title="styleprefs loop, CLI end to end (wall seconds, each command a fresh process)")
    for col in ("command", "seconds", "target"):
        t.add_column(col)
    t.add_row(f"init ({init['steps']} steps)", f"{figures['init_s']:.1f}", "≤ 600")
    t.add_row("propose --n 16", f"{figures['propose_s']:.1f}", "≤ 15")
    t.add_row("select", f"{figures['select_s']:.1f}", "")
    t.add_row(f"refine ({refined['steps']} steps)", f"{figures['refine_s']:.1f}", "≤ 180")
    t.add_row("propose --n 16 (round 2)", f"{figures['propose2_s']:.1f}", "≤ 15")
    t.add_row(f"apply ({figures['apply_images']} photos, own size)", f"{figures['apply_s']:.1f}", "")
    t.add_row(f"apply --polish ({len(polished['outputs'])} photos)", f"{figures['apply_polish_s']:.1f}", "")
    t.add_row("the whole loop", f"{figures['total_s']:.1f}", "")
    t.add_row(f"then propose --n 16 --polish (round {finished['round']}; not in the loop)",
              f"{figures['propose_polish_seconds']:.1f}", "")
    console.print(t)
    d = Table(title="diversity of the proposals (style distance, mean over relu1_1…relu5_1)")
    for col in ("", "pairwise mean", "pairwise max", "to painting, median", "to painting, max"):
        d.add_column(col)
    for name, r in rounds.items():
        d.add_row(name, *(f"{r[k]:.3f}" for k in ("pairwise_mean", "pairwise_max", "to_painting_median", "to_painting_max")))
    console.print(d)
    console.print(f"reference: two different paintings {reference['two_paintings']:.3f}; "
                  f"the preview photo to the painting {reference['photo_to_painting']:.3f}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"cpu": cpu_report(), "commit": commit(), "date": time.strftime("%Y-%m-%d"),
                                         "figures": figures, "rounds": rounds,
                                         "reference": reference, "sheets": [first["sheet"], second["sheet"]]},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
