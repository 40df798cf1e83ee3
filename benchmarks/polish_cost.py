"""What ``apply --polish`` costs, against a fixed yardstick measured in the same run, and what each step buys.

The yardstick is one fp32 forward of Johnson et al.'s transformation network (9×9 conv 32, two stride-2 convs to 128,
five residual blocks, two upsampling convs, 9×9 conv 3, instance norm; built here, random weights: the time does not
depend on them) on a 512×512 image. Every measurement runs in a process of its own, so its peak resident memory is its
own (wait4's rusage), and is reported as median (min–max) over ``--repeats`` runs after a warm-up.

- a 512-px photo and a 12-megapixel photo (4000×3000) with the session's default look, polished with the default
  steps, end to end from the decoded photo to the full-size picture;
- the seconds of one polish step on each grid;
- the largest grid polish takes (``config.POLISH_MAX_PIXELS``: a square 9-megapixel photo on a 1024×1024 grid, as
  the finest strokes ``--stroke-scale`` allows give it), a few steps: the seconds a step and the peak memory;
- whether the picked look is kept: for picks of a round-1 sheet, the polished picture of the sheet's photo, seen at
  the sheet's size, must be nearer its own candidate than any other (rank 1) and further from the photo than it;
  the painting's own distance to the photo is printed beside them (a candidate already further from the photo than
  the painting is can come nearer the photo while it comes nearer the painting); ``--picks all`` scores every
  candidate of the round;
- how far a photo gets, step by step: style distance removed as a share of Gatys's (80 L-BFGS evaluations from the
  photo, benchmarks/gatys.py) and content distance, at 0 (the generator alone), 10, 20, 40 and 80 steps.

Targets (as ratios to the yardstick): a 512-px photo ≤ 30×, a 12-megapixel photo ≤ 100× at ≤ 3 GB peak.

    python benchmarks/polish_cost.py --session .bench/quality/sessions/vangogh_starry_night
    python benchmarks/polish_cost.py --quick          # a smoke run on a tiny session made from the bundled examples
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DATA = ROOT / ".." / "shared" / "data"
TARGET_512, TARGET_12MP, TARGET_12MP_GB = 30.0, 100.0, 3.0
STEP_TABLE = (0, 10, 20, 40, 80)
FINEST_STEPS = 5  # steps of the largest-grid run: its seconds a step and its peak, not a finished picture


# ------------------------------------------------------------------------------------------------ workers
def johnson(size: int) -> dict:
    """Seconds of one fp32 forward of Johnson et al.'s network on a size×size image (after a warm-up)."""
    import torch
    from torch import nn

    def conv(cin, cout, k, stride=1):
        return [nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, stride), nn.InstanceNorm2d(cout, affine=True)]

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(*conv(c, c, 3), nn.ReLU(), *conv(c, c, 3))

        def forward(self, x):
            return x + self.body(x)

    net = nn.Sequential(*conv(3, 32, 9), nn.ReLU(), *conv(32, 64, 3, 2), nn.ReLU(), *conv(64, 128, 3, 2), nn.ReLU(),
                        *[Residual(128) for _ in range(5)],
                        nn.Upsample(scale_factor=2), *conv(128, 64, 3), nn.ReLU(),
                        nn.Upsample(scale_factor=2), *conv(64, 32, 3), nn.ReLU(),
                        nn.ReflectionPad2d(4), nn.Conv2d(32, 3, 9)).eval()
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        net(x)
        started = time.perf_counter()
        net(x)
    return {"seconds": time.perf_counter() - started}


def polished(session: str, height: int, width: int, steps: int, grid: int | None = None) -> dict:
    """Seconds to polish one photo of height×width with the session's default look, end to end (decoded bytes in,
    full-size bytes out), and the seconds a step on the grid it polishes on; ``grid``: the long side of that grid
    instead of the look's own (its strokes made finer, as ``--stroke-scale`` below 1 does), the grid reported."""
    import torch

    from styleprefs.config import POLISH_MAX_PIXELS
    from styleprefs.render import working_size
    from styleprefs.session import Session
    s = Session.open(Path(session), "cpu")
    look = s.preferred_z()
    goal = s.goal(look, learned=True)
    side = size = None  # the working side that gives a grid of about ``grid``, and that grid
    if grid:
        scale = s.split(look)[1]
        side = int(grid * scale)
        while (size := working_size(height, width, side, scale))[0] * size[1] > POLISH_MAX_PIXELS:
            side -= 1
    photo = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8)
    photo[..., : height // 2, :] //= 2  # some structure, so the loss network's work is a real picture's
    s.stylise_batch(photo[..., :64, :64], look, finish=(goal, 1, None), as_bytes=True)  # warm-up
    stamps = []
    started = time.perf_counter()
    s.stylise_batch(photo, look, finish=(goal, steps, lambda k, n: stamps.append(time.perf_counter())), as_bytes=True,
                    **({"side": side} if side else {}))
    total = time.perf_counter() - started
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    return {"seconds": total, "seconds_per_step": per_step,
            **({"grid": list(size)} if side else {})}


def by_steps(session: str, painting: str, photo: str, gatys_steps: int) -> dict:
    """Style distance removed as a share of Gatys's, and content distance, after each count of STEP_TABLE: over whole
    pictures, and over their interiors against Gatys with the interior losses (benchmarks/quality.py says why)."""
    import torch
    from gatys import features, gatys, loss_network, targets

    from styleprefs.config import CONTENT_LAYER
    from styleprefs.images import load_image
    from styleprefs.losses import content_distance, style_distance
    from styleprefs.session import Session
    s = Session.open(Path(session), "cpu")
    look = s.preferred_z()
    goal = s.goal(look, learned=True)
    net = loss_network()
    image = load_image(Path(photo), short_side=256)
    style = load_image(Path(painting), max_side=s.settings.style_size)
    toward = {interior: targets(net, image, style, interior) for interior in (False, True)}

    def scored(x: torch.Tensor, interior: bool) -> tuple[float, float]:
        grams, content = toward[interior]
        with torch.no_grad():
            f = features(net, x, interior)
            return style_distance(f, grams).item(), content_distance(f[CONTENT_LAYER], content).item()

    rows = []
    yardsticks = {interior: scored(gatys(image, style, steps=gatys_steps, net=net, interior=interior)[0], interior)
                  for interior in (False, True)}
    for steps in STEP_TABLE:
        picture = (s.stylise(image, look) if steps == 0
                   else s.stylise_batch(image[None], look, finish=(goal, steps, None))[0])
        row = {"steps": steps}
        for interior, suffix in ((False, ""), (True, "_interior")):
            photo_style, (gatys_style, gatys_content) = scored(image, interior)[0], yardsticks[interior]
            style_d, content_d = scored(picture, interior)
            row.update({f"removal{suffix}": (photo_style - style_d) / (photo_style - gatys_style),
                        f"content{suffix}": content_d, f"content_gatys{suffix}": gatys_content})
        rows.append(row)
    return {"rows": rows}


def kept(session: str, picks: list[int], steps: int) -> dict:
    """For picks of round 1: the polished picture of the round's photo with each pick's look, seen at the sheet's size,
    ranked by style distance (relu1_1…relu5_1) against all the round's candidates (1: nearest its own), and its
    style distance to the photo against its candidate's."""
    import torch

    from styleprefs.config import METRIC_STYLE_LAYERS
    from styleprefs.images import load_image, shrink
    from styleprefs.losses import gram
    from styleprefs.session import Session
    from styleprefs.vgg import VGG19Features
    s = Session.open(Path(session), "cpu")
    first = s.rounds()[0]
    size, working = s.state["rounds"][0]["size"], s.working_side(1)
    net = VGG19Features(METRIC_STYLE_LAYERS)

    def grams(x: torch.Tensor) -> dict:
        with torch.no_grad():
            return {k: gram(v) for k, v in net(x[None]).items()}

    def distance(a: dict, b: dict) -> float:
        return float(torch.stack([(a[k] - b[k]).norm() / b[k].norm() for k in METRIC_STYLE_LAYERS]).mean())

    photo = load_image(first.folder / "preview.png")
    candidates = [grams(load_image(c)) for c in first.candidates]
    seen = grams(shrink(photo, size))
    painting = grams(load_image(Path(s.config["styles"][0]["path"]), max_side=s.settings.style_size))
    rows = []
    for pick in picks or range(1, len(candidates) + 1):
        look = first.z[pick - 1]
        finished = s.stylise_batch(photo[None], look, side=working, finish=(s.goal(look), steps, None))[0]
        mine = grams(shrink(finished, size))
        to_candidates = [distance(mine, c) for c in candidates]
        rank = 1 + sum(d < to_candidates[pick - 1] for d in to_candidates)
        rows.append({"pick": pick, "rank": rank, "of": len(candidates),
                     "to_own_candidate": to_candidates[pick - 1], "to_photo": distance(mine, seen),
                     "candidate_to_photo": distance(candidates[pick - 1], seen),
                     "to_painting": distance(mine, painting),
                     "candidate_to_painting": distance(candidates[pick - 1], painting)})
    return {"rows": rows, "painting_to_photo": distance(painting, seen)}


WORKERS = {"johnson": johnson, "polished": polished, "by_steps": by_steps, "kept": kept}


# ------------------------------------------------------------------------------------------------ the run
def run_worker(name: str, **spec) -> tuple[dict, float]:
    """A worker in a fresh process: its JSON answer and its peak resident memory in GB."""
    proc = subprocess.Popen([sys.executable, __file__, "--worker", name, "--spec", json.dumps(spec)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT / "benchmarks")
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"worker {name} failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 2**20


def repeated(repeats: int, name: str, **spec) -> dict:
    runs = [run_worker(name, **spec) for _ in range(repeats)]
    seconds = [r["seconds"] for r, _ in runs]
    steps = [r["seconds_per_step"] for r, _ in runs if r.get("seconds_per_step")]
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "peak_gb": max(rss for _, rss in runs),
            "seconds_per_step": statistics.median(steps) if steps else None}


def tiny_session(folder: Path) -> Path:
    from styleprefs.config import TrainSettings
    from styleprefs.session import Session
    if not (folder / "state.json").exists():
        Session.init(folder, [EXAMPLES / "paintings" / "vangogh_starry_night.jpg"], [EXAMPLES / "photos"],
                     TrainSettings(steps=2, size=64), device="cpu", force=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--session", type=Path, help="a trained session (default: .bench/quality's Starry Night session)")
    p.add_argument("--steps", type=int, help="polish steps (default: apply --polish's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--painting", type=Path, default=DATA / "style" / "vangogh_starry_night.jpg")
    p.add_argument("--photo", type=Path, default=DATA / "content" / "gc_monument_neuschwansteinCastle.jpg",
                   help="the photo of the step table (falls back to a bundled one without ../shared/data)")
    p.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results" / "polish_cost.json")
    p.add_argument("--picked-session", type=Path, default=ROOT / ".bench" / "loop" / "session",
                   help="a session with a round 1, for the picked-look check (default: benchmarks/loop.py's)")
    p.add_argument("--picks", default="2 7 11",
                   help="the round-1 candidates of the picked-look check, or 'all' (default: 2 7 11, loop.py's picks)")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny session, 1 repeat, a 2-MP photo")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](**json.loads(args.spec))))
        return 0

    sys.path.insert(0, str(ROOT / "src"))
    from quality import commit

    from styleprefs.config import POLISH_MAX_PIXELS, POLISH_STEPS
    from styleprefs.device import cpu_report
    steps = args.steps or POLISH_STEPS
    if args.quick:
        session, repeats, big = tiny_session(ROOT / ".bench" / "polish-quick"), 1, (1200, 1600)
    else:
        session = args.session or ROOT / ".bench" / "quality" / "sessions" / "vangogh_starry_night"
        repeats, big = args.repeats, (3000, 4000)
    if not (session / "state.json").exists():
        raise SystemExit(f"no session at {session}: train one (benchmarks/quality.py) or pass --session")
    if not args.photo.is_file() or not args.painting.is_file():
        args.photo, args.painting = EXAMPLES / "photos" / "skimage_chelsea_cat.png", \
            EXAMPLES / "paintings" / "vangogh_starry_night.jpg"
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"the load average is {load:.1f}: other processes compete for the CPU; the timings will be inflated")

    yardstick = repeated(repeats, "johnson", size=512)
    small = repeated(repeats, "polished", session=str(session), height=384, width=512, steps=steps)
    large = repeated(repeats, "polished", session=str(session), height=big[0], width=big[1], steps=steps)
    finest = run_worker("polished", session=str(session), height=big[0], width=big[0], steps=FINEST_STEPS,
                        grid=int(POLISH_MAX_PIXELS ** 0.5))
    table, _ = run_worker("by_steps", session=str(session), painting=str(args.painting), photo=str(args.photo),
                          gatys_steps=4 if args.quick else 80)
    picked = None
    if (args.picked_session / "state.json").exists():
        picks = [] if args.picks == "all" else [int(i) for i in args.picks.split()]
        picked, _ = run_worker("kept", session=str(args.picked_session), picks=picks, steps=steps)
    base = yardstick["median"]
    report = {"environment": {**cpu_report(), "commit": commit(), "date": time.strftime("%Y-%m-%d")},
              "session": str(session), "steps": steps, "johnson_512_fp32": yardstick, "photo_512": small,
              f"photo_{big[1]}x{big[0]}": large,
              "largest_grid": {"photo": [big[0], big[0]], **finest[0], "peak_gb": finest[1]},
              "ratio_512": small["median"] / base,
              "ratio_12mp": large["median"] / base, "by_steps": table["rows"],
              "picked": picked and picked["rows"], "painting_to_photo": picked and picked["painting_to_photo"],
              "targets": {"512 ≤ 30×": small["median"] / base <= TARGET_512,
                          "12 MP ≤ 100×": large["median"] / base <= TARGET_12MP,
                          "12 MP ≤ 3 GB": large["peak_gb"] <= TARGET_12MP_GB,
                          **({"picks kept (rank 1, further from the photo)": all(
                              r["rank"] == 1 and r["to_photo"] > r["candidate_to_photo"] for r in picked["rows"])}
                             if picked else {})}}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=1) + "\n")

    env = report["environment"]
    print(f"{env['cpu']}, {env['cores']} cores, commit {env['commit']}, {env['date']}; {steps} polish steps")
    print(f"yardstick, Johnson et al.'s network at 512×512, fp32: {base:.3f} s "
          f"({yardstick['min']:.3f}–{yardstick['max']:.3f})")
    for name, r, target in (("512×384 photo", small, TARGET_512), (f"{big[1]}×{big[0]} photo", large, TARGET_12MP)):
        print(f"{name}: {r['median']:.1f} s ({r['min']:.1f}–{r['max']:.1f}), {r['median'] / base:.1f}× the "
              f"yardstick (target ≤ {target:.0f}×), {r['seconds_per_step']:.3f} s a step, peak {r['peak_gb']:.2f} GB")
    print(f"the largest grid polish takes ({'×'.join(map(str, finest[0]['grid']))}, a {big[0]}×{big[0]} photo): "
          f"{finest[0]['seconds_per_step']:.3f} s a step, peak {finest[1]:.2f} GB")
    print("steps | removed, share of Gatys's | content distance (Gatys's) | the same over the interiors")
    for row in table["rows"]:
        print(f"{row['steps']:5d} | {row['removal']:.2f} | {row['content']:.3f} ({row['content_gatys']:.3f}) | "
              f"{row['removal_interior']:.2f} | {row['content_interior']:.3f} ({row['content_gatys_interior']:.3f})")
    if picked:
        print("picked look kept (round 1, seen at the sheet's size): pick | rank among the candidates | style distance "
              "to the photo, polished (candidate) | to the painting, polished (candidate)")
        for row in picked["rows"]:
            print(f"{row['pick']:4d} | {row['rank']} of {row['of']} | {row['to_photo']:.3f} "
                  f"({row['candidate_to_photo']:.3f}) | {row['to_painting']:.3f} ({row['candidate_to_painting']:.3f})")
        rows, painting = picked["rows"], picked["painting_to_photo"]
        first = sum(r["rank"] == 1 for r in rows)
        further = sum(r["to_photo"] > r["candidate_to_photo"] for r in rows)
        beyond = sum(r["candidate_to_photo"] > painting for r in rows)
        print(f"the painting itself is {painting:.3f} from the photo; of {len(rows)} picks, rank 1: {first}, further "
              f"from the photo: {further}; candidates further from the photo than the painting: {beyond}")
    print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in report["targets"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
