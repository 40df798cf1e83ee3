"""This code against an earlier commit's, in one process and in turns, so that a noisy machine's drift falls on both.

The earlier commit's package is checked out (``git worktree``) and imported under another name beside this one. Each
case runs once for each version in turn, ``--pairs`` times after a warm-up; reported are both medians and the median
of the pairs' ratios (this / earlier), with their range.

    python tools/versus.py --base 3f4ea2e                      # the generator's forward and apply
    python tools/versus.py --base 3f4ea2e --only forward      # the bare forward alone (no session needed)
    python tools/versus.py --base 3f4ea2e --only init --pairs 2   # init's training, 30 steps a turn

The process keeps freed memory (``device.keep_freed_memory``), as ``apply`` does: against a base from before
``apply`` kept it (10dc63b), what keeping it saves is not measured here; ``tools/calibrate.py`` times each code
in its own processes.

``apply`` cases use ``--session`` (a trained session; default the loop benchmark's) on photos that
``benchmarks/speed.py`` makes (``.bench/speed/photos-512`` and ``photos-2048``; run it once first).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from styleprefs.device import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]


def import_base(commit: str, folder: Path):
    """The package at ``commit`` imported as ``styleprefs_base`` (its imports within the package are relative)."""
    tree = folder / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), commit], check=True,
                   capture_output=True)
    shutil.copytree(tree / "src" / "styleprefs", folder / "pkg" / "styleprefs_base")
    sys.path.insert(0, str(folder / "pkg"))
    return importlib.import_module("styleprefs_base")


def in_turns(cases: dict[str, tuple[Callable[[], None], Callable[[], None]]], pairs: int) -> None:
    """Each case's (earlier, this) callables, in turns; prints the medians and the ratio of each pair."""
    times = {name: ([], []) for name in cases}
    for round_ in range(pairs + 1):  # the first is a warm-up
        for name, versions in cases.items():
            for version, run in enumerate(versions):
                started = time.perf_counter()
                run()
                if round_:
                    times[name][version].append(time.perf_counter() - started)
    for name, (base, this) in times.items():
        ratios = [b / a for a, b in zip(base, this, strict=True)]
        print(f"{name:44s} earlier {statistics.median(base):.3f} s  this {statistics.median(this):.3f} s  "
              f"this/earlier {statistics.median(ratios):.2f} (pairs {min(ratios):.2f}–{max(ratios):.2f})", flush=True)


def forward_cases(base) -> dict:
    from styleprefs.networks import Generator
    networks = importlib.import_module(f"{base.__name__}.networks")
    torch.manual_seed(0)
    this = Generator(3, 16, 5).eval()
    for p in this.parameters():  # weights as training leaves them: FiLM and noise not zero
        p.data.normal_(0, 0.1)
    earlier = networks.Generator(3, 16, 5).eval()
    earlier.load_state_dict(this.state_dict())
    this, earlier = (g.to(memory_format=torch.channels_last) for g in (this, earlier))
    cases = {}
    for batch, height, width in ((1, 551, 735), (1, 240, 320), (4, 240, 320), (1, 735, 735)):
        x = torch.rand(batch, 3, height, width).contiguous(memory_format=torch.channels_last)
        z = torch.zeros(batch, 3)

        def run(g, x=x, z=z):
            with torch.inference_mode():
                g(x, z)
        cases[f"forward {batch}×{height}×{width}"] = (lambda run=run: run(earlier), lambda run=run: run(this))
    return cases


def apply_cases(base, session: Path, photos: Path, out: Path) -> dict:
    from styleprefs.controls import SMALLEST_STROKES
    from styleprefs.session import Session
    earlier_session = importlib.import_module(f"{base.__name__}.session")
    sessions = [earlier_session.Session.open(session, "cpu"), Session.open(session, "cpu")]
    looks = [s.preferred_z() for s in sessions]
    cases = {}
    for folder, size, strokes in (("photos-512", 512, "smallest"), ("photos-512", 512, "look"),
                                  ("photos-2048", 2048, "look")):
        n = len(list((photos / folder).iterdir()))

        def run(k, folder=folder, size=size, strokes=strokes, n=n):
            s = sessions[k]
            _, scale = s.split(looks[k])
            extra = SMALLEST_STROKES / scale if strokes == "smallest" else 1.0
            shutil.rmtree(out / str(k), ignore_errors=True)
            s.apply([photos / folder], out / str(k), size=size, stroke_scale=extra)
        cases[f"apply {size} px, {strokes} strokes ({n} photos)"] = (lambda run=run: run(0), lambda run=run: run(1))
    return cases


INIT_STEPS = 30


def init_cases(base, out: Path) -> dict:
    """``init`` on the bundled examples for INIT_STEPS steps (a default init's steps, fewer of them): training's cost
    a step, setup included."""
    from styleprefs.config import TrainSettings
    from styleprefs.session import Session
    earlier = importlib.import_module(f"{base.__name__}.session").Session
    earlier_settings = importlib.import_module(f"{base.__name__}.config").TrainSettings
    styles = [ROOT / "examples" / "paintings" / "vangogh_starry_night.jpg"]
    photos = sorted((ROOT / "examples" / "photos").iterdir())

    def run(k: int) -> None:
        session, settings = ((earlier, earlier_settings), (Session, TrainSettings))[k]
        session.init(out / str(k), styles=styles, contents=photos, settings=settings(steps=INIT_STEPS), device="cpu",
                     force=True)
    return {f"init, {INIT_STEPS} steps, the examples": (lambda: run(0), lambda: run(1))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the earlier commit")
    p.add_argument("--only", choices=("forward", "apply", "init"))
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--session", type=Path, default=ROOT / ".bench" / "loop" / "session")
    p.add_argument("--photos", type=Path, default=ROOT / ".bench" / "speed")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as device.resolve does for apply: fresh images come from memory already touched
    with tempfile.TemporaryDirectory(prefix="versus-") as folder:
        folder = Path(folder)
        try:
            base = import_base(args.base, folder)
            if args.only == "init":  # not by default: a minute a turn
                cases = init_cases(base, folder / "init")
            else:
                cases = {} if args.only == "apply" else forward_cases(base)
                if args.only != "forward":
                    cases |= apply_cases(base, args.session, args.photos, folder / "out")
            in_turns(cases, args.pairs)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder / "tree")],
                           capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
