"""Does styleprefs learn a person's taste? A simulated user with a hidden taste picks, round after round.

The user sees only the images: each round it scores the N proposals with a hidden taste function of
the rendered image (never of z or of the session's state), picks its top k, and refines. After R
rounds, the session's default ``apply`` runs on photos the session never saw, at their own size (1024 to 1920 px),
and those outputs, shrunk to the preview size the user picked at, are scored. The yardstick is the prior: the same photos stylised at ≥ 64 z drawn from round 1's prior
by the generator ``init`` made; we report the final score's percentile among them, its gain over
their median (in their standard deviations), the first round whose outputs reach the 90th
percentile, and the wall time. Same picks budget, same run, same round 1, against:

  random      keep the best-scoring proposal of R rounds of prior samples, apply its z
  mean-z      proposals re-centred on the mean of the chosen z each round (spread ×0.6 a round, at
              least 0.25); no choice model, no fine-tuning; apply the mean
  no-finetune styleprefs' choice model and proposals, the generator left as ``init`` made it
              (``refine(steps=0)``)
  styleprefs  the whole thing: choice model, proposals, and fine-tuning toward the personal target

styleprefs is driven only through its public Python API (Session.init/propose/select/refine/apply/
stylise, Round.z and Round.candidates). One ``init`` per painting set is shared by every taste and
method (the session folder is copied). The user's "eye" for content and style distances is the
same VGG19 (the only image network available here).

    python benchmarks/preference.py                               # 5 tastes × 4 methods
    python benchmarks/preference.py --tastes warm --rounds 2 --init-steps 20 --refine-steps 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.table import Table

from styleprefs import images
from styleprefs.config import TrainSettings
from styleprefs.losses import gram
from styleprefs.session import Session
from styleprefs.vgg import VGG19Features

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
console = Console(stderr=True)

PAINTING_A = "vangogh_starry_night.jpg"
PAINTING_B = "gauguin_arearea.jpg"
TRAIN_PHOTOS = ["gc_TowerBridgeLondon.jpg", "gc_animal_koala.jpg", "gc_farm_sheep.jpg",
                "gc_monument_montStMichel.jpg", "gc_people_italy.jpg", "opencv_hfs_lake.jpg"]
HELD_OUT = ["gc_animal_scarlet_macaw.jpg", "gc_monument_eiffelTower.jpg", "gc_erase_swans.jpg"]  # 1024–1920 px
STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


# ----------------------------------------------------------------- the simulated user's eye
class Eye:
    """What the simulated user perceives: colour, texture at two scales, VGG content and style distances."""

    def __init__(self, paintings: list[Path]):
        self.net = VGG19Features((*STYLE, "relu3_1"))
        self._photo_features: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            self.painting_grams = [self.grams(images.load_image(p, max_side=256)) for p in paintings]

    @torch.no_grad()
    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(image[None])

    def grams(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: gram(v) for k, v in self.features(image).items() if k in STYLE}

    def style_distance(self, image: torch.Tensor, k: int) -> float:
        g, target = self.grams(image), self.painting_grams[k]
        return statistics.fmean(float((g[n] - target[n]).norm() / target[n].norm()) for n in STYLE)

    def content_distance(self, image: torch.Tensor, photo: torch.Tensor) -> float:
        key = (id(photo), tuple(image.shape))
        if key not in self._photo_features:  # the photos are few and fixed: their features once each
            self._photo_features[key] = (photo, self.features(_fit(photo, image))["relu3_1"])
        a, b = self.features(image)["relu3_1"], self._photo_features[key][1]
        return float((a - b).norm() / b.norm())


def _fit(photo: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(photo[None], size=like.shape[-2:], mode="bilinear", antialias=True)[0]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.pad(x[None, None], (radius,) * 4, mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))[0, 0]


def fine_over_coarse(image: torch.Tensor) -> float:
    """log energy of the finest high-pass band (σ 1) over that of a coarser band (σ 1 to 4)."""
    grey = image.mean(0)
    fine = grey - _blur(grey, 1.0)
    coarse = _blur(grey, 1.0) - _blur(grey, 4.0)
    return float(torch.log(fine.pow(2).mean() + 1e-8) - torch.log(coarse.pow(2).mean() + 1e-8))


def saturation(image: torch.Tensor) -> float:
    top, bottom = image.max(0).values, image.min(0).values
    return float(((top - bottom) / top.clamp_min(1e-3)).mean())


@dataclass
class Taste:
    name: str
    describe: str
    two_paintings: bool
    score: Callable[[Eye, torch.Tensor, torch.Tensor], float]  # (eye, image, photo) → higher is liked more


TASTES = [
    Taste("warm", "warm palette: mean of R − B", False, lambda eye, x, p: float((x[0] - x[2]).mean())),
    Taste("subtle", "subtle: close to the photo in VGG relu3_1", False, lambda eye, x, p: -eye.content_distance(x, p)),
    Taste("fine", "fine strokes: high-pass energy σ1 over σ1–4", False, lambda eye, x, p: fine_over_coarse(x)),
    Taste("saturated", "high saturation: mean HSV S", False, lambda eye, x, p: saturation(x)),
    Taste("painting-B", "prefers painting B: style distance to A − to B", True,
          lambda eye, x, p: eye.style_distance(x, 0) - eye.style_distance(x, 1)),
]


# ----------------------------------------------------------------- the protocol
@dataclass
class Setup:
    base: Path            # the session init made, copied for every method
    eye: Eye
    preview: torch.Tensor  # the photo proposals are rendered on (the session's first content photo)
    held_out: list[torch.Tensor]  # the unseen photos at their own size
    seen: list[torch.Tensor]      # ... and shrunk to the size they are judged at (the preview's)
    prior: dict[str, list[float]]  # taste → scores of the prior's z on the held-out photos
    prior_z: torch.Tensor


def outputs_score(taste: Taste, eye: Eye, outputs: list[torch.Tensor], photos: list[torch.Tensor]) -> float:
    return statistics.fmean(taste.score(eye, x, p) for x, p in zip(outputs, photos))


def percentile(value: float, reference: list[float]) -> float:
    return 100.0 * sum(r < value for r in reference) / len(reference)


def pick(taste: Taste, eye: Eye, candidates: list[torch.Tensor], photo: torch.Tensor, k: int) -> list[int]:
    """The user's top k (1-based, as on the contact sheet) by the hidden taste."""
    scores = torch.tensor([taste.score(eye, c, photo) for c in candidates])
    return [int(i) + 1 for i in scores.topk(k).indices]


def held_out_outputs(session: Session, z: torch.Tensor, setup: Setup, size: int) -> list[torch.Tensor]:
    """``z`` on the unseen photos, stylised at their own size and shrunk to ``size``."""
    return [images.shrink(session.stylise(p, z), size) for p in setup.held_out]


def held_out_score(session: Session, z: torch.Tensor, taste: Taste, setup: Setup, size: int) -> float:
    """The taste's score of ``z`` on the unseen photos, stylised at their own size and shrunk to ``size``."""
    return outputs_score(taste, setup.eye, held_out_outputs(session, z, setup, size), setup.seen)


def stylised_ratio(eye: Eye, outputs: list[torch.Tensor], photos: list[torch.Tensor], paintings: int) -> float:
    """The largest, over the outputs, of the style distance to the nearer painting over the photo's own: at most
    0.8 for every output to be a stylisation rather than a tinted photo."""
    def nearer(x: torch.Tensor) -> float:
        return min(eye.style_distance(x, k) for k in range(paintings))
    return max(nearer(x) / nearer(p) for x, p in zip(outputs, photos))


def run_styleprefs(taste: Taste, setup: Setup, folder: Path, args, fine_tune: bool) -> dict:
    """propose → the user picks → select → refine, R times; then apply on the held-out photos."""
    shutil.copytree(setup.base, folder)
    started = time.perf_counter()
    per_round, refine_seconds = [], []
    for _ in range(args.rounds):
        r = Session.open(folder, "cpu").propose(n=args.n, size=args.proposal_size)  # takes the lock itself
        picks = pick(taste, setup.eye, [images.load_image(c) for c in r.candidates], setup.preview, args.k)
        with Session.editing(folder, "cpu") as s:
            s.select(picks)
            t = time.perf_counter()
            s.refine(steps=args.refine_steps if fine_tune else 0)
            refine_seconds.append(time.perf_counter() - t)
            per_round.append(held_out_score(s, s.preferred_z(), taste, setup, args.eval_size))
    s = Session.open(folder, "cpu")
    out = folder.parent / f"{folder.name}-applied"
    result = s.apply(setup_paths(args), out)  # apply's defaults: the learned look, each photo at its own size
    assert not result.skipped, result.skipped
    outputs = [images.load_image(out / f"{Path(name).stem}.png", max_side=args.eval_size) for name in HELD_OUT]
    final = outputs_score(taste, setup.eye, outputs, setup.seen)
    return {"per_round": per_round, "final": final, "seconds": time.perf_counter() - started,
            "refine_seconds": refine_seconds, "z": s.preferred_z().tolist(), "taste_words": s.status()["taste"],
            "stylised_ratio": stylised_ratio(setup.eye, outputs, setup.seen, 2 if taste.two_paintings else 1)}


def run_random(taste: Taste, setup: Setup, folder: Path, args) -> dict:
    """R rounds of prior proposals (never selected, so never learned from); apply the best one's z."""
    shutil.copytree(setup.base, folder)
    started = time.perf_counter()
    s = Session.open(folder, "cpu")
    best, best_z, per_round = -float("inf"), None, []
    for _ in range(args.rounds):
        r = s.propose(n=args.n, size=args.proposal_size)
        for c, z in zip(r.candidates, r.z):
            value = taste.score(setup.eye, images.load_image(c), setup.preview)
            if value > best:
                best, best_z = value, z
        per_round.append(held_out_score(s, best_z, taste, setup, args.eval_size))
    seconds = time.perf_counter() - started
    outputs = held_out_outputs(s, best_z, setup, args.eval_size)  # whether the baseline's pick is a stylisation
    return {"per_round": per_round, "final": per_round[-1], "seconds": seconds, "z": best_z.tolist(),
            "stylised_ratio": stylised_ratio(setup.eye, outputs, setup.seen, 2 if taste.two_paintings else 1)}


def run_mean_z(taste: Taste, setup: Setup, folder: Path, args) -> dict:
    """Round 1 as styleprefs proposes it; then proposals around the recency-weighted mean of the chosen z."""
    shutil.copytree(setup.base, folder)
    started = time.perf_counter()
    s = Session.open(folder, "cpu")
    r = s.propose(n=args.n, size=args.proposal_size)
    z_round, rendered = r.z, [images.load_image(c) for c in r.candidates]
    chosen, per_round = [], []
    g = torch.Generator().manual_seed(11)
    for round_index in range(1, args.rounds + 1):
        picks = pick(taste, setup.eye, rendered, setup.preview, args.k)
        chosen.append(z_round[[i - 1 for i in picks]])
        weights = torch.tensor([2.0**i for i in range(len(chosen))])
        mean = sum(w * c.mean(0) for w, c in zip(weights / weights.sum(), chosen))
        per_round.append(held_out_score(s, mean, taste, setup, args.eval_size))
        if round_index < args.rounds:
            spread = max(0.6**round_index, 0.25)
            z_round = mean + spread * torch.randn(args.n, mean.numel(), generator=g)
            rendered = [s.stylise(setup.preview, z) for z in z_round]
    seconds = time.perf_counter() - started
    outputs = held_out_outputs(s, mean, setup, args.eval_size)
    return {"per_round": per_round, "final": per_round[-1], "seconds": seconds, "z": mean.tolist(),
            "stylised_ratio": stylised_ratio(setup.eye, outputs, setup.seen, 2 if taste.two_paintings else 1)}


def setup_paths(args) -> list[Path]:
    return [DATA / "content" / name for name in HELD_OUT]


def prepare(two_paintings: bool, work: Path, args) -> tuple[Setup, float]:
    """One init for this painting set, and the prior's scores on the held-out photos for every taste."""
    paintings = [DATA / "style" / PAINTING_A] + ([DATA / "style" / PAINTING_B] if two_paintings else [])
    folder = args.bases / ("base-AB" if two_paintings else "base-A")
    settings = TrainSettings(steps=args.init_steps, size=args.train_size, refine_steps=args.refine_steps)
    started = time.perf_counter()
    unfinished = (folder / "state.json").exists() and json.loads((folder / "state.json").read_text())["checkpoint"] is None
    if unfinished and not args.fresh:
        console.print(f"init on {' + '.join(p.stem for p in paintings)}: resuming an interrupted one")
        Session.init(folder, [], [], device="cpu", resume=True)
    elif not (folder / "state.json").exists() or args.fresh:
        console.print(f"init on {' + '.join(p.stem for p in paintings)}: {args.init_steps} steps at {args.train_size} px")
        Session.init(folder, paintings, [DATA / "content" / n for n in TRAIN_PHOTOS], settings, device="cpu",
                     seed=0, force=True)
    init_seconds = time.perf_counter() - started
    s = Session.open(folder, "cpu")
    eye = Eye([DATA / "style" / PAINTING_A, DATA / "style" / PAINTING_B])
    preview = images.load_image(Path(s.config["contents"][0]["path"]), max_side=args.proposal_size)
    held_out = [images.load_image(p) for p in setup_paths(args)]
    seen = [images.shrink(p, args.eval_size) for p in held_out]
    prior_z = torch.randn(args.prior, len(s.config["z_names"]), generator=torch.Generator().manual_seed(2024))
    rendered = [[images.shrink(s.stylise(p, z), args.eval_size) for p in held_out] for z in prior_z]
    tastes = [t for t in TASTES if t.two_paintings == two_paintings and t.name in args.tastes]
    prior = {t.name: [outputs_score(t, eye, outs, seen) for outs in rendered] for t in tastes}
    console.print(f"  prior: {args.prior} z × {len(held_out)} held-out photos scored "
                  f"({time.perf_counter() - started - init_seconds:.0f} s; init {init_seconds:.0f} s)")
    return Setup(folder, eye, preview, held_out, seen, prior, prior_z), init_seconds


def summarise(taste: Taste, method: str, run: dict, prior: list[float]) -> dict:
    median, sd = statistics.median(prior), statistics.pstdev(prior) or 1.0
    reached = next((i + 1 for i, v in enumerate(run["per_round"]) if percentile(v, prior) >= 90), None)
    return {"taste": taste.name, "method": method, "percentile": percentile(run["final"], prior),
            "gain_sd": (run["final"] - median) / sd, "rounds_to_p90": reached, "seconds": run["seconds"],
            "final": run["final"], "prior_median": median, "prior_sd": sd,
            "per_round_percentile": [percentile(v, prior) for v in run["per_round"]],
            **{k: run[k] for k in ("z", "refine_seconds", "taste_words", "stylised_ratio") if k in run}}


METHODS = ("random", "mean-z", "no-finetune", "styleprefs")


def table(rows: list[dict]) -> Table:
    t = Table(title="Simulated users: final apply on unseen photos, as a percentile of the prior's outputs")
    for header in ("taste", "method", "percentile", "gain (σ)", "rounds to P90", "per round (pct)",
                   "style to painting / photo's (max)", "seconds"):
        t.add_column(header, justify="left" if header in ("taste", "method") else "right")
    for row in rows:
        bold = row["method"] == "styleprefs"
        t.add_row(row["taste"], row["method"], f"{row['percentile']:.0f}", f"{row['gain_sd']:+.2f}",
                  str(row["rounds_to_p90"] or "–"), " ".join(f"{p:.0f}" for p in row["per_round_percentile"]),
                  f"{row['stylised_ratio']:.2f}" if "stylised_ratio" in row else "–", f"{row['seconds']:.0f}",
                  style="bold" if bold else None)
    return t


def verdict(rows: list[dict]) -> dict:
    by = {(r["taste"], r["method"]): r for r in rows}
    tastes = [t.name for t in TASTES if all((t.name, m) in by for m in METHODS)]  # tastes run to the end
    ours = [by[t, "styleprefs"] for t in tastes]
    return {
        "tastes": len(tastes),
        "reached_p90": sum(r["percentile"] >= 90 for r in ours),
        "beats_random": sum(by[t, "styleprefs"]["final"] > by[t, "random"]["final"] for t in tastes),
        "beats_mean_z": sum(by[t, "styleprefs"]["final"] > by[t, "mean-z"]["final"] for t in tastes),
        "beats_no_finetune": sum(by[t, "styleprefs"]["final"] > by[t, "no-finetune"]["final"] for t in tastes),
        "finetune_gain_sd": statistics.fmean(by[t, "styleprefs"]["gain_sd"] - by[t, "no-finetune"]["gain_sd"]
                                             for t in tastes),
        "no_finetune_reached_p90": sum(by[t, "no-finetune"]["percentile"] >= 90 for t in tastes),
        "all_outputs_stylised": sum(by[t, "styleprefs"].get("stylised_ratio", 9) <= 0.8 for t in tastes),
        # A baseline whose final look is not a stylisation (over 0.8 of the photo's distance) wins by leaving what
        # styleprefs is held to: which ones did, and on how many tastes styleprefs beats every baseline that did not.
        "baselines_not_stylised": [f"{t}/{m}" for t in tastes for m in ("random", "mean-z")
                                   if by[t, m].get("stylised_ratio", 0) > 0.8],
        "beats_stylised_baselines": sum(all(by[t, "styleprefs"]["final"] > by[t, m]["final"]
                                            for m in ("random", "mean-z") if by[t, m].get("stylised_ratio", 0) <= 0.8)
                                        for t in tastes),
    }


def save_sheets(folder: Path, taste: str, rounds: int) -> list[str]:
    """Round 1's and the last round's contact sheets of one taste, as JPEGs in docs/."""
    written = []
    for index in (1, rounds):
        target = ROOT / "docs" / f"preference-{taste}-round{index}.jpg"
        Image.open(folder / "rounds" / f"{index:03d}" / "sheet.png").convert("RGB").save(target, quality=88)
        written.append(str(target.relative_to(ROOT)))
    return written


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tastes", nargs="+", default=[t.name for t in TASTES], choices=[t.name for t in TASTES])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--n", type=int, default=16, help="proposals per round")
    p.add_argument("--k", type=int, default=3, help="picks per round")
    p.add_argument("--prior", type=int, default=64, help="prior z the final outputs are ranked against")
    p.add_argument("--init-steps", type=int, default=200)
    p.add_argument("--refine-steps", type=int, default=10)
    p.add_argument("--train-size", type=int, default=96)
    p.add_argument("--proposal-size", type=int, default=256, help="the sheet's candidates, as a person sees them")
    p.add_argument("--eval-size", type=int, default=256,
                   help="long side the outputs (made at the photos' own size) are judged at: the preview's")
    p.add_argument("--sheets", default="warm", help="the taste whose round-1 and last sheets go to docs/ ('' for none)")
    p.add_argument("--work", type=Path, default=ROOT / ".bench" / "preference")
    p.add_argument("--bases", type=Path, default=ROOT / ".bench" / "preference",
                   help="where the init sessions are kept (shared by runs with different --work)")
    p.add_argument("--part", type=Path, help="also write this run's rows here after every method (for --report)")
    p.add_argument("--report", type=Path, nargs="+", help="merge these --part files into the table and --out; run nothing")
    p.add_argument("--fresh", action="store_true", help="re-run init even if a base session is there")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "preference.json")
    args = p.parse_args()
    needed = [DATA / "style" / PAINTING_A, DATA / "style" / PAINTING_B,
              *(DATA / "content" / n for n in TRAIN_PHOTOS + HELD_OUT)]
    if missing := [str(x) for x in needed if not x.is_file()]:
        console.print(f"skipped: the shared data is not here ({missing[0]} …)")
        return 0
    if args.report:
        return report(args, [json.loads(p.read_text()) for p in args.report])
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    rows, inits, sheets = [], {}, []
    for two in (False, True):
        tastes = [t for t in TASTES if t.two_paintings == two and t.name in args.tastes]
        if not tastes:
            continue
        setup, inits["AB" if two else "A"] = prepare(two, args.work, args)
        for taste in tastes:
            runs_folder = args.work / taste.name
            shutil.rmtree(runs_folder, ignore_errors=True)
            runs_folder.mkdir()
            for method in args.methods:
                folder = runs_folder / method
                if method == "random":
                    run = run_random(taste, setup, folder, args)
                elif method == "mean-z":
                    run = run_mean_z(taste, setup, folder, args)
                else:
                    run = run_styleprefs(taste, setup, folder, args, fine_tune=method == "styleprefs")
                rows.append(summarise(taste, method, run, setup.prior[taste.name]))
                r = rows[-1]
                console.print(f"  {taste.name:11s} {method:12s} percentile {r['percentile']:5.1f}  gain "
                              f"{r['gain_sd']:+.2f} σ  per round {r['per_round_percentile']}  {r['seconds']:.0f} s")
                if args.part:
                    args.part.parent.mkdir(parents=True, exist_ok=True)
                    args.part.write_text(json.dumps({"rows": rows, "init_seconds": inits, "sheets": sheets, "settings": vars(args)}, indent=2, default=str))
            if taste.name == args.sheets and "styleprefs" in args.methods:
                sheets = save_sheets(runs_folder / "styleprefs", taste.name, args.rounds)
                if args.part:
                    args.part.write_text(json.dumps({"rows": rows, "init_seconds": inits, "sheets": sheets, "settings": vars(args)}, indent=2, default=str))
    return report(args, [{"rows": rows, "init_seconds": inits, "sheets": sheets, "settings": vars(args)}])


def report(args, parts: list[dict]) -> int:
    """The table, the verdict and the JSON, from the rows of one run or of several run side by side."""
    rows = [row for part in parts for row in part["rows"]]
    order = [t.name for t in TASTES]
    rows.sort(key=lambda r: (order.index(r["taste"]), METHODS.index(r["method"])))
    inits = {k: v for part in parts for k, v in part["init_seconds"].items()}
    sheets = [s for part in parts for s in part["sheets"]]
    Console().print(table(rows))
    summary = verdict(rows) if {r["method"] for r in rows} == set(METHODS) else None
    if summary and summary["tastes"] < len({r["taste"] for r in rows}):
        console.print("[yellow]some tastes did not finish every method: the verdict counts only those that did[/]")
    if summary:
        console.print(f"styleprefs: ≥ P90 on {summary['reached_p90']}/{summary['tastes']} tastes; beats random on "
                      f"{summary['beats_random']}, mean-z on {summary['beats_mean_z']}, no-finetune on "
                      f"{summary['beats_no_finetune']} (fine-tuning adds {summary['finetune_gain_sd']:+.2f} σ on average); "
                      f"every final output a stylisation on {summary['all_outputs_stylised']}/{summary['tastes']}; "
                      f"baselines whose look is not a stylisation: {', '.join(summary['baselines_not_stylised']) or 'none'}; "
                      f"beats every baseline that stays a stylisation on {summary['beats_stylised_baselines']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "settings": {k: v for k, v in parts[0].get("settings", vars(args)).items() if k not in ("report", "part")},
        "paintings": {"A": PAINTING_A, "B": PAINTING_B}, "train_photos": TRAIN_PHOTOS, "held_out": HELD_OUT,
        "tastes": {t.name: t.describe for t in TASTES if t.name in {r["taste"] for r in rows}},
        "init_seconds": inits, "rows": rows, "summary": summary, "sheets": sheets,
        "torch_threads": torch.get_num_threads(),
    }, indent=2, default=str) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
