"""What you pick is what you get, at any size: picks from a 256-px contact sheet applied to photos up to 6000 px.

For each pick and each size, the photo enlarged to that long side is written as a JPEG and stylised by the
real CLI (``styleprefs apply --pick``) in a fresh process. Reported for each:

* drift: the style distance (mean over relu1_1…relu5_1, symmetrised) between the output, shrunk to the preview
  size as the preview photo was, and the candidate that was picked; next to half the candidates' mean pairwise
  distance (the target: below it) and the pick's rank among the round's 16 candidates (the target: 1);
* detail: the output's 1-px luminance detail over the input's, at full size (a blurry upscale is far below 1);
* seconds: apply's own, decode to written file, and the process's wall time, Python's start included;
* peak RSS of the process.

A row with ``--stroke-scale`` set so the generator works on the photo's own grid shows the generator without full-size
rendering, what that rendering is measured against.

    python benchmarks/fullsize.py                         # ~5 min after a session exists (init: ~2.5 min more)
    python benchmarks/fullsize.py --sides 1024 2048       # quicker
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
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.table import Table

from loop import cli, grams_of, pairwise_style_distance
from styleprefs import images, render
from styleprefs.config import METRIC_STYLE_LAYERS
from styleprefs.device import cpu_report
from styleprefs.session import Session
from styleprefs.vgg import VGG19Features

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED_PHOTO = ROOT.parent / "shared" / "data" / "content" / "gc_farm_dog.jpg"  # 4:3, so 4000 px is 12 megapixels


# Started from a fresh, small interpreter: Linux carries a process's peak RSS across exec, so a child forked straight
# from this process (VGG and images loaded) would report this process's size as its own.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"peak-rss-kb {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(*args: object) -> tuple[dict, float, float]:
    """As ``loop.cli``, also returning the command's own peak RSS in GB."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, "-m", "styleprefs", *map(str, args), "--json"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"styleprefs {' '.join(map(str, args))} failed:\n{proc.stderr}")
    kb = int(proc.stderr.strip().splitlines()[-1].split()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1]), seconds, kb / 2**20


def detail(image: torch.Tensor) -> float:
    """Standard deviation of the luminance minus its 3×3 mean (1-px detail), in bands of rows (large images)."""
    total, count = 0.0, 0
    for start in range(0, image.shape[-2], 512):
        band = render.luminance(image[:, max(0, start - 1):start + 513])[None]
        high = band - F.avg_pool2d(band, 3, 1, 1, count_include_pad=False)
        high = high[..., (1 if start else 0):, :][..., :min(512, image.shape[-2] - start), :]
        total, count = total + float(high.pow(2).sum()), count + high.numel()
    return (total / count) ** 0.5


def enlarge(photo: Path, side: int, folder: Path) -> Path:
    """The photo scaled to long side ``side`` (Lanczos), as a JPEG of quality 95: a camera-sized input."""
    target = folder / f"{photo.stem}-{side}.jpg"
    if not target.exists():
        img = Image.open(photo).convert("RGB")
        scale = side / max(img.size)
        size = (round(img.width * scale), round(img.height * scale))
        images.save_image(img.resize(size, Image.Resampling.LANCZOS), target)
    return target


def panel(candidate: Path, output: Path, photo: Path, out: Path, centre: tuple[float, float], crop: int = 480) -> None:
    """Candidate | the full-size output shrunk to the same height | 1:1 crops of the photo and the output around
    ``centre`` (fractions of the width and height)."""
    big = Image.open(output).convert("RGB")
    src = Image.open(photo).convert("RGB")
    height = 2 * crop
    cand = Image.open(candidate).convert("RGB")
    cand = cand.resize((round(cand.width * height / cand.height), height), Image.Resampling.LANCZOS)
    whole = big.resize((round(big.width * height / big.height), height), Image.Resampling.LANCZOS)
    x = min(max(0, round(big.width * centre[0]) - crop // 2), big.width - crop)
    y = min(max(0, round(big.height * centre[1]) - crop // 2), big.height - crop)
    crops = [img.crop((x, y, x + crop, y + crop)) for img in (src, big)]
    sheet = Image.new("RGB", (cand.width + whole.width + crop + 24, height), "white")
    sheet.paste(cand, (0, 0))
    sheet.paste(whole, (cand.width + 8, 0))
    sheet.paste(crops[0], (cand.width + whole.width + 16, 0))
    sheet.paste(crops[1], (cand.width + whole.width + 16, crop))
    images.save_image(sheet, out, quality=88)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--session", type=Path, default=ROOT / ".bench" / "fullsize" / "session",
                   help="a session to pick from (made on the bundled examples if absent)")
    p.add_argument("--photo", type=Path, default=SHARED_PHOTO if SHARED_PHOTO.exists() else
                   EXAMPLES / "photos" / "skimage_astronaut.png")
    p.add_argument("--round", type=int, help="pick from this existing round (default: propose a new one on --photo)")
    p.add_argument("--picks", type=int, nargs="+", default=[2, 7, 11])
    p.add_argument("--sides", type=int, nargs="+", default=[1024, 2048, 4000, 6000])
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "fullsize")
    p.add_argument("--panel", type=Path, default=ROOT / "docs" / "fullsize.jpg")
    p.add_argument("--crop-at", type=float, nargs=2, default=(0.82, 0.3), metavar=("X", "Y"),
                   help="centre of the panel's 1:1 crops, as fractions of the width and height (default: the dog's head)")
    p.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results" / "fullsize.json")
    args = p.parse_args()
    console = Console(width=140)

    if not (args.session / "state.json").exists():
        console.print(f"making a session at {args.session} (default init on the bundled examples)")
        cli("init", "--style", EXAMPLES / "paintings" / "vangogh_starry_night.jpg", "--content", EXAMPLES / "photos",
            "--session", args.session, "--force")
    if args.round is None:
        proposed, _ = cli("propose", "--n", 16, "--preview", args.photo, "--session", args.session)
        args.round = proposed["round"]
    entry = json.loads((args.session / "state.json").read_text())["rounds"][args.round - 1]
    # Rounds keep a copy of their photo (a path inside the session); older rounds recorded the photo's own path.
    if Path(entry["preview"]).is_absolute() and Path(entry["preview"]).resolve() != args.photo.resolve():
        sys.exit(f"round {args.round} was rendered on {entry['preview']}, not on --photo {args.photo}")
    round_index, side = args.round, entry["size"]
    session = Session.open(args.session, "cpu")
    own_scales = {pick: session.split(session.rounds()[round_index - 1].z[pick - 1])[1] for pick in args.picks}
    candidates = [args.session / entry["folder"] / name for name in entry["candidates"]]

    net = VGG19Features(METRIC_STYLE_LAYERS)
    candidate_grams = grams_of(net, candidates, side)
    pairwise = [pairwise_style_distance(a, b) for a, b in itertools.combinations(candidate_grams, 2)]
    half_spread = sum(pairwise) / len(pairwise) / 2

    photos = args.out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = [(pick, s, 1.0) for pick in args.picks for s in args.sides]
    old_side = 2048 if 2048 in args.sides else args.sides[0]
    # The generator on the photo's own grid, without full-size rendering: what that rendering is measured against.
    runs.append((args.picks[0], old_side, session.working_side(round_index) / old_side / own_scales[args.picks[0]]))
    for pick, long_side, stroke_scale in runs:
        photo = enlarge(args.photo, long_side, photos)
        out = args.out / "styled" / f"pick{pick}-{long_side}-x{stroke_scale:g}"
        result, wall, rss = run_measured("apply", photo, "--out", out, "--pick", f"{round_index}:{pick}",
                                         "--stroke-scale", stroke_scale, "--session", args.session)
        output = Path(result["outputs"][0])
        full = images.load_image(output)
        seen = grams_of(net, [output], side)[0]
        distances = [pairwise_style_distance(seen, c) for c in candidate_grams]
        rank = 1 + sum(d < distances[pick - 1] for d in distances)
        rows.append({"pick": pick, "side": long_side, "pixels": full.shape[-2] * full.shape[-1],
                     "stroke_scale": stroke_scale, "drift": distances[pick - 1], "half_spread": half_spread,
                     "rank": rank, "nearest_other": min(d for k, d in enumerate(distances) if k != pick - 1),
                     "detail": detail(full) / detail(images.load_image(photo)),
                     "apply_s": result["seconds"], "wall_s": wall, "peak_rss_gb": rss, "output": str(output)})
        r = rows[-1]
        r["own_stroke_scale"] = own_scales[pick]
        console.print(f"pick {pick} at {long_side} px (stroke scale {stroke_scale:g}): drift {r['drift']:.3f} "
                      f"(rank {rank}), detail {r['detail']:.2f}, {r['apply_s']:.2f} s, {rss:.2f} GB")

    t = Table(title=f"round {round_index}'s picks applied at full size (preview {side} px; half the candidates' mean "
                    f"pairwise distance: {half_spread:.3f})")
    for col in ("pick", "long side", "MP", "--stroke-scale", "drift to pick", "rank of 16", "nearest other",
                "detail kept", "apply s", "wall s", "peak RSS GB"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["pick"]), str(r["side"]), f"{r['pixels'] / 1e6:.1f}", f"{r['stroke_scale']:.3g}",
                  f"{r['drift']:.3f}", str(r["rank"]), f"{r['nearest_other']:.3f}", f"{r['detail']:.2f}",
                  f"{r['apply_s']:.2f}", f"{r['wall_s']:.1f}", f"{r['peak_rss_gb']:.2f}")
    console.print(t)
    largest = max(args.sides)
    shown = next(r for r in rows if r["pick"] == args.picks[-1] and r["side"] == (4000 if 4000 in args.sides else largest)
                 and r["stroke_scale"] == 1.0)
    panel(candidates[args.picks[-1] - 1], Path(shown["output"]), enlarge(args.photo, shown["side"], photos), args.panel,
          tuple(args.crop_at))
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"photo": str(args.photo.name), "preview_side": side, "round": round_index,
                                         "half_spread": half_spread, "torch_threads": torch.get_num_threads(),
                                         "cpu": cpu_report(),
                                         "rows": rows}, indent=2) + "\n")
    console.print(f"panel: {args.panel}; results: {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
