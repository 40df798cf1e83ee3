"""What a figure measured on another machine with earlier code would be for this code: the same `apply` case run
here with both codes, each in fresh processes, in turns; the ratio (this / earlier) scales the other machine's figure.

For a machine that cannot be had (such as the AVX2 EPYC the project targets), its last figure for a case
and the commit it was measured on give the estimate, provided that what the code changed since costs alike on both.
Each code makes its own small session (5 init steps on the bundled examples, one round): `apply`'s time does not
depend on how far the generator was trained, and the smallest strokes a look has fix the working grid. The base's
tree and session are kept under ``--out``, named by its commit, for the next run; "this" session is made once too
(delete it after a change to the session format).

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python tools/calibrate.py --base 8db1ff7 --figure 0.748
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from speed import PAINTING, make_photos  # noqa: E402


def run(root: Path, *args: str) -> str:
    """A command of the package at ``root`` (its ``src`` first on the path), in a fresh process; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    proc = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} at {root} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def make_session(root: Path, session: Path) -> None:
    """5 init steps on the bundled examples and a round of 4, by the code at ``root``; made beside ``session`` and moved
    there when complete, so a run stopped half-way is made again, not reused."""
    if session.exists():
        return
    building = session.with_name(session.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    cli = ["-m", "styleprefs"]
    run(root, *cli, "init", "--style", str(PAINTING), "--content", str(ROOT / "examples" / "photos"), "--steps", "5",
        "--session", str(building), "--device", "cpu", "--json")
    run(root, *cli, "propose", "--n", "4", "--session", str(building), "--device", "cpu", "--json")
    run(root, *cli, "select", "1", "2", "--session", str(building), "--json")
    building.rename(session)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the commit the other machine's figure was measured on")
    p.add_argument("--figure", type=float, help="that figure, s per photo, to scale")
    p.add_argument("--strokes", default="smallest", choices=("smallest", "look", "own grid"))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "calibrate")
    args = p.parse_args(argv)
    out = args.out.resolve()  # the workers run in the two trees' own folders
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", f"{args.base}^{{commit}}"], check=True,
                            capture_output=True, text=True).stdout.strip()
    base_root = out / f"base-{commit[:12]}"
    if not base_root.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(base_root), commit],
                       check=True, capture_output=True)
    photos = make_photos(out / f"photos-{args.size}", 4, args.size, args.size)
    roots = {"earlier": base_root, "this": ROOT}
    sessions = {"earlier": out / f"session-{commit[:12]}", "this": out / "session-this"}
    for name, root in roots.items():
        make_session(root, sessions[name])
    medians: dict[str, list[float]] = {name: [] for name in roots}
    for round_ in range(args.rounds):
        order = list(roots) if round_ % 2 == 0 else list(roots)[::-1]  # so that drift within a round falls on both
        for name in order:
            root = roots[name]
            spec = {"session": str(sessions[name]), "device": "cpu", "precision": "fp32",
                    "folder": str(photos), "out": str(out / f"applied-{name}"), "images": 4, "size": args.size,
                    "repeats": 3, "strokes": args.strokes}
            result = json.loads(run(root, "benchmarks/speed.py", "--worker", "apply", "--spec",
                                    json.dumps(spec)).strip().splitlines()[-1])
            medians[name].append(statistics.median(result["apply"]))
            print(f"{name:8s} apply {args.size} px, {args.strokes} strokes (grid {result['grid'][1]}×{result['grid'][0]}):"
                  f" {statistics.median(result['apply']):.3f} s a photo", flush=True)
        for name in roots:
            shutil.rmtree(out / f"applied-{name}", ignore_errors=True)
    ratios = [t / e for e, t in zip(medians["earlier"], medians["this"], strict=True)]
    print(f"this / earlier: {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}–{max(ratios):.2f})")
    if args.figure:
        print(f"the other machine's {args.figure:.3f} s with this code: about {args.figure * min(ratios):.2f}–"
              f"{args.figure * max(ratios):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
