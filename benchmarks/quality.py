"""Quality benchmark: ``apply`` against the Gatys baseline, on photos the training never saw.

For each painting, a session is trained (``Session.init``) on some photos; on other photos, at the
same short side, we score the photo itself, apply's output and a Gatys result (L-BFGS from the
photo, same VGG) by style distance (mean over relu1_1…relu5_1 of ‖G(x)−G(s)‖_F / ‖G(s)‖_F), content
distance at the content layer, and seconds per image.

Targets (issue 10): for every painting, apply removes at least 85 % as much style distance as Gatys does, at
a content distance at most 0.05 above Gatys's; over the paintings the mean removal is at least 0.90.

    python benchmarks/quality.py            # the full run: about an hour on 2 idle CPU cores (32 minutes with a
                                            # filled --gatys-cache, session 10)
    python benchmarks/quality.py --quick    # a smoke run of a minute or two
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from gatys import DATA, ROOT, features, gatys, loss_network, targets, time_to_reach
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from styleprefs.config import CONTENT_LAYER, ProposalSettings, TrainSettings
from styleprefs.images import find_images, load_image, save_image
from styleprefs.losses import content_distance, style_distance
from styleprefs.device import resolve
from styleprefs.networks import Generator
from styleprefs.pretrain import load_start
from styleprefs.session import Session
from styleprefs.training import gram_stats
from styleprefs.training import loss_network as training_network
from styleprefs.vgg import VGG19Features

PAINTINGS = ("vangogh_starry_night", "hokusai_great_wave", "vangogh_cafe_terrace_at_night", "gauguin_arearea")
# Not colour photos: a greyscale one, and an RGBA cut-out on a flat background.
EXCLUDED_PHOTOS = ("skimage_camera_gray", "opencv_dog_rgba")
TARGET_REMOVAL = 0.85       # every painting: apply's removed style distance / Gatys's, at least
TARGET_MEAN_REMOVAL = 0.90  # ... and its mean over the paintings, at least
CONTENT_SLACK = 0.05        # every painting: apply's content distance at most Gatys's + this

# Piped to a file, rich would wrap the table at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=132)


def split_photos(folder: Path, n_train: int, n_eval: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Disjoint training and evaluation photos, drawn in a fixed shuffled order of the colour photos."""
    photos = [p for p in find_images([folder]) if p.stem not in EXCLUDED_PHOTOS]
    if n_train + n_eval > len(photos):
        raise SystemExit(f"{folder} has {len(photos)} usable photos, fewer than {n_train} + {n_eval}")
    random.Random(seed).shuffle(photos)
    return photos[:n_train], photos[n_train : n_train + n_eval]


def median_seconds(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[torch.Tensor, float]:
    """The result of ``fn`` and its median time over ``repeats`` runs after one warm-up run."""
    result = fn()  # the first call pays for lazy loading and allocator warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def train(painting: Path, photos: list[Path], folder: Path, settings: TrainSettings,
          seed: int, proposals: ProposalSettings | None = None) -> tuple[Session, float]:
    """A fresh session for one painting, trained with a progress bar; returns it and its seconds."""
    columns = (TextColumn(f"training on {painting.stem}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    start = time.perf_counter()
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("init", total=settings.steps)
        session = Session.init(folder, styles=[painting], contents=photos, settings=settings, device="cpu",
                               seed=seed, force=True, on_progress=lambda p: bar.update(task, completed=p.step),
                               proposals=proposals)
    return session, time.perf_counter() - start


class StartingPoint:
    """What ``init`` starts from for a painting, before its first step: the shipped generator at the embedding of
    the nearest pretraining painting (``--start-only``; shows what pretraining itself learned)."""

    def __init__(self, painting: Path, settings: TrainSettings):
        runtime = resolve("cpu")
        style = load_image(painting, max_side=settings.style_size)
        grams = gram_stats(training_network(runtime, settings.style_layers), [style], runtime, settings.style_layers)
        self.generator = Generator(3, settings.generator_width, settings.generator_blocks)
        self.nearest = load_start(self.generator, grams, settings.start)
        if self.nearest is None:
            raise SystemExit("--start-only: no pretrained generator fits these settings")
        console.print(f"{painting.stem}: starting from the embedding of {self.nearest}")
        self.generator.eval()

    @torch.inference_mode()
    def stylise(self, photo: torch.Tensor) -> torch.Tensor:
        return self.generator(photo[None], torch.zeros(1, 3))[0]


def score(net: VGG19Features, image: torch.Tensor, style_grams: dict, content_target: torch.Tensor) -> dict:
    """The benchmark's two figures for one image, style distance and content distance, and the style
    distance of each layer (where a method falls short: the palette in the shallow layers, strokes deeper)."""
    with torch.no_grad():
        activations = features(net, image)
        layers = {name: style_distance(activations, {name: gram}).item() for name, gram in style_grams.items()}
        return {"style": style_distance(activations, style_grams).item(),
                "content": content_distance(activations[CONTENT_LAYER], content_target).item(),
                "style_layers": {name: round(value, 4) for name, value in layers.items()}}


def cached_gatys(cache: Path, painting: str, name: str, photo: torch.Tensor, style: torch.Tensor, steps: int,
                 net: VGG19Features) -> tuple[torch.Tensor, list]:
    """Gatys's result and history for one pair, from ``cache`` when this pair, size and budget ran before.

    Gatys does not depend on the package's training, so a rerun of the benchmark after a training change
    need not spend its 2 minutes per image again (``--fresh-gatys`` does). The cached seconds are those of
    the run that made it."""
    stem = cache / f"{painting}__{name}__{photo.shape[-2]}x{photo.shape[-1]}__{steps}"
    image_path, history_path = stem.with_suffix(".png"), stem.with_suffix(".json")
    if image_path.exists() and history_path.exists():
        return load_image(image_path), [tuple(record) for record in json.loads(history_path.read_text())]
    baseline, history = gatys(photo, style, steps=steps, net=net)
    save_image(baseline, image_path)
    history_path.write_text(json.dumps(history))
    # Scored from the saved 8-bit PNG, as a cache hit would be, so a rerun gives the same figures.
    return load_image(image_path), history


def mean(rows: list[dict], method: str, key: str) -> float:
    return statistics.fmean(row[method][key] for row in rows)


def summary(rows: list[dict]) -> dict[str, float | None]:
    """Means over images, and the two ratios of the target computed from those means.

    With ``--gatys-photos`` only some images have a Gatys result: the ratios compare the three
    methods on those images alone, so every figure in a ratio is paired.
    """
    rows = [row for row in rows if row["gatys"] is not None]
    out = {f"{method}_{key}": mean(rows, method, key)
           for method in ("photo", "apply", "gatys") for key in ("style", "content", "seconds")}
    removed_by_apply = out["photo_style"] - out["apply_style"]
    removed_by_gatys = out["photo_style"] - out["gatys_style"]
    out["removal_ratio"] = removed_by_apply / removed_by_gatys if removed_by_gatys > 0 else None
    out["speedup"] = out["gatys_seconds"] / out["apply_seconds"]
    reached = [row["gatys"]["seconds_to_apply_style"] for row in rows]
    # Seconds Gatys needs to get as far as apply got: the speed benchmark's fairer yardstick.
    out["gatys_seconds_to_apply_style"] = None if None in reached else statistics.fmean(reached)
    return out


def table(per_painting: dict[str, dict], overall: dict) -> Table:
    t = Table(title="Style and content distance on unseen photos (lower style = more stylised)")
    t.add_column("painting", no_wrap=True)
    for header in ("style photo", "style apply", "style Gatys", "content apply", "content Gatys",
                   "s/img apply", "s/img Gatys", "removed ratio", "speed-up"):
        t.add_column(header, justify="right")

    def row(name: str, s: dict, **style) -> None:
        ratio = "—" if s["removal_ratio"] is None else f"{s['removal_ratio']:.2f}"
        t.add_row(name, f"{s['photo_style']:.3f}", f"{s['apply_style']:.3f}", f"{s['gatys_style']:.3f}",
                  f"{s['apply_content']:.3f}", f"{s['gatys_content']:.3f}", f"{s['apply_seconds']:.3f}",
                  f"{s['gatys_seconds']:.1f}", ratio, f"{s['speedup']:.0f}×", **style)

    for name, s in per_painting.items():
        row(name, s)
    row("mean", overall, style="bold", end_section=True)
    return t


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="folder with style/ and content/ (default ../shared/data)")
    p.add_argument("--paintings", nargs="+", help=f"stems in style/ (default: {' '.join(PAINTINGS)})")
    p.add_argument("--train-photos", type=int, help="photos each session is trained on (default 8)")
    p.add_argument("--eval-photos", type=int, help="other photos it is scored on (default 8)")
    p.add_argument("--steps", type=int, help=f"init steps (default {TrainSettings().steps}, the package's)")
    p.add_argument("--gatys-steps", type=int, help="L-BFGS loss evaluations per image (default 80)")
    p.add_argument("--size", type=int, help="short side of the evaluation photos, px (default 256)")
    p.add_argument("--gatys-photos", type=int,
                   help="run the (slow) Gatys baseline on only the first N evaluation photos per painting")
    p.add_argument("--repeats", type=int, help="timed runs of stylise per image, after a warm-up (default 3)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--working-side", type=int,
                   help=f"the sessions' working side, px (default {ProposalSettings().working_side}, the package's)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a training setting other than the default (repeatable), e.g. --set tv_weight=0.1")
    p.add_argument("--gatys-cache", type=Path, help="folder of Gatys results kept between runs (default OUT/gatys-cache)")
    p.add_argument("--fresh-gatys", action="store_true", help="rerun Gatys even where a cached result exists")
    p.add_argument("--out", type=Path, help="folder for sessions and images (default .bench/quality)")
    p.add_argument("--json-out", type=Path, help="all figures as JSON (default benchmarks/results/quality.json)")
    p.add_argument("--start-only", action="store_true",
                   help="score the pretrained starting point itself at z = 0, before any fine-tuning")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run: 1 painting, 2+1 photos, few steps, 64 px")
    args = p.parse_args(argv)
    quick = {"paintings": list(PAINTINGS[:1]), "train_photos": 2, "eval_photos": 1, "steps": 4, "gatys_steps": 4,
             "size": 64, "repeats": 1, "out": ROOT / ".bench" / "quality-quick",
             "json_out": ROOT / ".bench" / "quality-quick" / "quality.json"}
    full = {"paintings": list(PAINTINGS), "train_photos": 8, "eval_photos": 8, "steps": TrainSettings().steps,
            "gatys_steps": 80, "size": 256, "repeats": 3, "out": ROOT / ".bench" / "quality",
            "json_out": ROOT / "benchmarks" / "results" / "quality.json"}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not (args.data / "style").is_dir() or not (args.data / "content").is_dir():
        console.print(f"skipped: no benchmark images at {args.data.resolve()} (use --data)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if load > 0.5:
        # Measured here: with 2 threads on 2 busy cores, stylise at 64 px took 0.93 s instead of 0.02 s.
        console.print(f"[yellow]the load average is {load:.1f}: other processes compete for the CPU, so the "
                      "timings will be inflated (thread contention slows small images most)[/yellow]")
    # The smoke run trains on small crops and batches: it checks the plumbing, not the quality.
    settings = TrainSettings(steps=args.steps, **({"size": 64, "batch": 2} if args.quick else {}),
                             **overrides(args.set))
    proposals = ProposalSettings(**({"working_side": args.working_side} if args.working_side else {}))
    paintings = []
    for name in args.paintings:
        found = [p for p in find_images([args.data / "style"]) if p.stem == name]
        if not found:
            console.print(f"[red]no painting named {name!r} in {args.data / 'style'}[/red]")
            return 2
        paintings.append(found[0])
    train_photos, eval_photos = split_photos(args.data / "content", args.train_photos, args.eval_photos, args.seed)
    console.print(f"training photos: {', '.join(p.stem for p in train_photos)}")
    console.print(f"evaluation photos: {', '.join(p.stem for p in eval_photos)}")

    net = loss_network()
    cache = args.gatys_cache or args.out / "gatys-cache"
    if args.fresh_gatys:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    photos = {p.stem: load_image(p, short_side=args.size) for p in eval_photos}
    report = {
        "settings": {"paintings": [p.stem for p in paintings], "size": args.size, "gatys_steps": args.gatys_steps,
                     "repeats": args.repeats, "seed": args.seed, "train": settings.to_dict(), "quick": args.quick,
                     "working_side": proposals.working_side},
        "train_photos": [p.name for p in train_photos], "eval_photos": [p.name for p in eval_photos],
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "load_average_at_start": load},
        "per_image": [], "per_painting": {}, "train_seconds": {},
    }
    strips: list[torch.Tensor] = []
    for painting in paintings:
        folder = args.out / "sessions" / painting.stem
        if args.start_only:
            session, train_seconds = StartingPoint(painting, settings), 0.0
        else:
            session, train_seconds = train(painting, train_photos, folder, settings, args.seed, proposals)
            report["environment"]["bf16"] = session.status()["bf16"]
        report["train_seconds"][painting.stem] = round(train_seconds, 1)
        # The painting as training saw it: the same long side, so strokes have the same scale.
        style = load_image(painting, max_side=settings.style_size)
        rows = []
        for k, (name, photo) in enumerate(photos.items(), start=1):
            console.print(f"{painting.stem} × {name} ({k}/{len(photos)})", end=" ")
            style_grams, content_target = targets(net, photo, style)
            applied, apply_seconds = median_seconds(lambda photo=photo: session.stylise(photo), args.repeats)
            apply_scores = score(net, applied, style_grams, content_target)
            row = {"painting": painting.stem, "image": name,
                   "photo": {**score(net, photo, style_grams, content_target), "seconds": 0.0},
                   "apply": {**apply_scores, "seconds": apply_seconds}, "gatys": None}
            message = f"style {row['photo']['style']:.3f} → apply {row['apply']['style']:.3f} ({apply_seconds:.2f} s)"
            if args.gatys_photos is None or k <= args.gatys_photos:
                baseline, history = cached_gatys(cache, painting.stem, name, photo, style, args.gatys_steps, net)
                row["gatys"] = {**score(net, baseline, style_grams, content_target), "seconds": history[-1][1],
                                "seconds_to_apply_style": time_to_reach(history, apply_scores["style"]),
                                "history": [(step, round(t, 3), round(d, 4)) for step, t, d in history]}
                message += f", Gatys {row['gatys']['style']:.3f} ({history[-1][1]:.0f} s)"
            rows.append(row)
            console.print(message)
            if row["gatys"] is not None:  # the panel: photo | apply | Gatys
                strips.append(torch.cat([photo, applied, baseline], dim=2))
                save_image(strips[-1], args.out / f"{painting.stem}__{name}__photo-apply-gatys.png")
        report["per_image"] += rows
        report["per_painting"][painting.stem] = summary(rows)
        write_json(report, args.json_out)  # after every painting, so an interrupted run keeps its figures

    report["panel"] = None
    if strips:
        report["panel"] = str(args.out / "panel.jpg")
        panel(strips, len(strips) // len(paintings), args.out / "panel.jpg")
    overall = summary(report["per_image"])
    every = report["per_image"]
    overall["all_images"] = {f"{method}_{key}": mean(every, method, key)
                             for method in ("photo", "apply") for key in ("style", "content", "seconds")}
    report["overall"] = overall
    report["target"] = verdict(report["per_painting"])
    write_json(report, args.json_out)

    console.print(table(report["per_painting"], overall))
    removal = overall["removal_ratio"]
    ratio = "undefined (Gatys removed nothing)" if removal is None else f"{removal:.2f}"
    console.print(f"style distance removed, apply / Gatys: {ratio} over all pairs; mean over paintings "
                  f"{report['target']['mean_removal']:.2f} (target ≥ {TARGET_MEAN_REMOVAL}, and ≥ {TARGET_REMOVAL} "
                  f"for each painting at a content distance ≤ Gatys's + {CONTENT_SLACK})")
    for name, why in report["target"]["failures"].items():
        console.print(f"  {name}: {why}")
    console.print(f"seconds per image, Gatys / apply: {overall['speedup']:.0f}×")
    every = overall["all_images"]
    console.print(f"all {len(report['per_image'])} images: style distance photo {every['photo_style']:.3f} → "
                  f"apply {every['apply_style']:.3f}, content distance {every['apply_content']:.3f}")
    reach = overall["gatys_seconds_to_apply_style"]
    if reach is not None:
        console.print(f"Gatys needs {reach:.1f} s per image on average to reach apply's style distance")
    if report["panel"]:
        console.print(f"panel (photo | styleprefs | Gatys per painting and photo): {report['panel']}")
    met = "[green]target met[/green]" if report["target"]["met"] else "[red]target not met[/red]"
    console.print(f"{met}; figures in {args.json_out}, images in {args.out}")
    return 0


def verdict(per_painting: dict[str, dict]) -> dict:
    """Issue 10's targets, checked painting by painting, with what falls short and by how much."""
    failures = {}
    for name, s in per_painting.items():
        removal, slack = s["removal_ratio"], s["apply_content"] - s["gatys_content"]
        why = []
        if removal is None or removal < TARGET_REMOVAL:
            why.append(f"removal {removal if removal is None else round(removal, 3)} < {TARGET_REMOVAL}")
        if slack > CONTENT_SLACK:
            why.append(f"content distance {s['apply_content']:.3f} is {slack:+.3f} from Gatys's {s['gatys_content']:.3f}")
        if why:
            failures[name] = "; ".join(why)
    removals = [s["removal_ratio"] or 0.0 for s in per_painting.values()]
    mean_removal = statistics.fmean(removals)
    return {"removal_each_at_least": TARGET_REMOVAL, "content_slack_at_most": CONTENT_SLACK,
            "mean_removal_at_least": TARGET_MEAN_REMOVAL, "mean_removal": mean_removal, "failures": failures,
            "met": not failures and mean_removal >= TARGET_MEAN_REMOVAL}


def panel(strips: list[torch.Tensor], per_row: int, path: Path) -> None:
    """The photo | apply | Gatys strips in a grid, ``per_row`` strips a row (one painting a row), as a JPEG."""
    height = min(strip.shape[-2] for strip in strips)
    strips = [strip[:, :height] for strip in strips]
    rows = []
    for first in range(0, len(strips), per_row):
        gap = torch.ones(3, height, 8)
        rows.append(torch.cat([x for s in strips[first : first + per_row] for x in (s, gap)][:-1], dim=2))
    width = max(r.shape[-1] for r in rows)
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows]
    save_image(torch.cat([x for r in rows for x in (r, torch.ones(3, 8, width))][:-1], dim=1), path, quality=90)


def overrides(assignments: list[str]) -> dict:
    """``--set name=value`` pairs as keyword arguments of TrainSettings, each value parsed as its default's type."""
    defaults = TrainSettings().to_dict()
    out = {}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        if name not in defaults:
            raise SystemExit(f"--set: no training setting named {name!r}")
        kind = type(defaults[name])
        if kind is bool:  # bool("false") is True
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {name}: true or false, got {value!r}")
            out[name] = value.lower() in ("true", "1")
        else:
            out[name] = tuple(value.split(",")) if kind in (list, tuple) else kind(value)
    return out


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
