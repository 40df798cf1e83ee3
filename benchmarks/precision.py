"""bf16 against fp32: do the stylised outputs differ by more than noise?

Renders the unseen photos of ``quality.py``'s run with each of its trained sessions twice, in fp32 and
under bf16 autocast (on this device, whatever its speed: a CPU without bf16 matrix units still computes
bf16, only slowly), and scores both like ``quality.py``: style distance (relu1_1…relu5_1) and content
distance. Target (the speed issue): the mean style and content distances within 2 % of each other.
Also reports the largest per-pixel difference and each precision's seconds per image.

    python benchmarks/quality.py --gatys-photos 2    # first: trains the sessions this reads
    python benchmarks/precision.py                   # a minute or two on 2 CPU cores
    python benchmarks/precision.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from gatys import DATA, ROOT, loss_network, targets
from quality import score
from rich.console import Console
from rich.table import Table

from styleprefs.config import TrainSettings
from styleprefs.images import load_image
from styleprefs.session import Session

TARGET = 0.02  # relative difference of the mean distances, at most
console = Console(stderr=True)


def render(session: Session, photo: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, float]:
    session.runtime = replace(session.runtime, bf16=bf16)
    session.stylise(photo)  # warm-up
    start = time.perf_counter()
    out = session.stylise(photo)
    return out, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quality", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json",
                   help="quality.py's JSON: which paintings, photos and size")
    p.add_argument("--sessions", type=Path, default=ROOT / ".bench" / "quality" / "sessions")
    p.add_argument("--device", default="cpu")
    p.add_argument("--photos", type=int, default=4, help="unseen photos per painting (default 4)")
    p.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results" / "precision.json")
    args = p.parse_args()
    if not args.quality.exists() or not args.sessions.is_dir():
        console.print(f"skipped: run benchmarks/quality.py first (no {args.quality} or {args.sessions})")
        return 0
    quality = json.loads(args.quality.read_text())
    size = quality["settings"]["size"]
    photos = {Path(name).stem: load_image(DATA / "content" / name, short_side=size)
              for name in quality["eval_photos"][: args.photos]}
    net = loss_network()
    rows = []
    for painting in quality["settings"]["paintings"]:
        folder = args.sessions / painting
        if not (folder / "state.json").exists():
            console.print(f"[yellow]no session for {painting} in {args.sessions}: skipped[/yellow]")
            continue
        session = Session.open(folder, args.device)
        style_path = Path(session.config["styles"][0]["path"])
        style = load_image(style_path, max_side=TrainSettings.from_dict(session.config["settings"]).style_size)
        for name, photo in photos.items():
            style_grams, content_target = targets(net, photo, style)
            row = {"painting": painting, "image": name}
            outputs = {}
            for precision, bf16 in (("fp32", False), ("bf16", True)):
                out, seconds = render(session, photo, bf16)
                outputs[precision] = out
                row[precision] = {**score(net, out, style_grams, content_target), "seconds": seconds}
            row["max_abs_pixel"] = float((outputs["fp32"] - outputs["bf16"]).abs().max())
            row["mean_abs_pixel"] = float((outputs["fp32"] - outputs["bf16"]).abs().mean())
            rows.append(row)
            console.print(f"{painting} × {name}: style {row['fp32']['style']:.4f} / {row['bf16']['style']:.4f}, "
                          f"content {row['fp32']['content']:.4f} / {row['bf16']['content']:.4f}")
    if not rows:
        return 1
    summary = {}
    for key in ("style", "content", "seconds"):
        a = statistics.fmean(r["fp32"][key] for r in rows)
        b = statistics.fmean(r["bf16"][key] for r in rows)
        summary[key] = {"fp32": a, "bf16": b, "relative_difference": (b - a) / a}
    summary["max_abs_pixel"] = max(r["max_abs_pixel"] for r in rows)
    summary["mean_abs_pixel"] = statistics.fmean(r["mean_abs_pixel"] for r in rows)
    met = all(abs(summary[k]["relative_difference"]) <= TARGET for k in ("style", "content"))
    report = {"device": args.device, "torch": torch.__version__, "size": size, "rows": rows, "summary": summary,
              "target_relative_difference": TARGET, "met": met}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=1) + "\n")

    t = Table(title=f"bf16 autocast against fp32, {len(rows)} unseen photos at {size} px ({args.device})")
    for header in ("", "fp32", "bf16", "bf16 − fp32"):
        t.add_column(header, justify="right")
    for key, unit in (("style", ""), ("content", ""), ("seconds", " s")):
        s = summary[key]
        t.add_row(f"{key} distance" if key != "seconds" else "s/image", f"{s['fp32']:.4f}{unit}",
                  f"{s['bf16']:.4f}{unit}", f"{100 * s['relative_difference']:+.2f} %")
    Console(width=100).print(t)
    print(f"pixels: mean |Δ| {summary['mean_abs_pixel']:.4f}, max |Δ| {summary['max_abs_pixel']:.3f}; "
          f"distances within {100 * TARGET:.0f} %: {'yes' if met else 'NO'}; figures in {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
