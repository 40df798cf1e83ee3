"""Kill test: `init`, `propose`, `propose --polish`, `select` and `refine` killed with SIGKILL at random moments. After each kill the
session must load (or, for an init killed before its session was moved in, not exist at all), `status` must tell
the truth (no damaged file, picks and their files agreeing, every round whole, an unfinished training named), and
the command must complete: `--resume` for an unfinished training, the same command again otherwise.

    python benchmarks/kill.py              # 20 kills, 4 per command (about 10 minutes on 2 cores)
    python benchmarks/kill.py --kills 4
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from styleprefs.config import TrainSettings
from styleprefs.session import Session

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PAINTING = EXAMPLES / "paintings" / "vangogh_starry_night.jpg"
COMMANDS = ("init", "propose", "propose-polish", "select", "refine")  # propose-polish: propose --polish-steps 3


def command(name: str, session: Path, rng: random.Random, resume: bool = False) -> list[str]:
    args = {"init": ["--style", PAINTING, "--content", EXAMPLES / "photos", "--steps", 30, "--size", 64, "--force"],
            "propose": ["--n", 8, "--size", 96],
            "propose-polish": ["--n", 8, "--size", 96, "--polish-steps", 3],
            "select": sorted(rng.sample(range(1, 9), 3)),
            "refine": ["--steps", 30]}[name]
    if resume:
        args = ["--resume"]
    return [sys.executable, "-m", "styleprefs", name.split("-")[0], *map(str, args), "--session", str(session)]


def truth(session: Path) -> tuple[bool, str, dict]:
    """Whether the session loads and its status tells the truth; what is wrong if not; the status."""
    try:
        s = Session.open(session, device="cpu")
        status = s.status()
    except Exception as exc:  # the figure we want is how often this happens: never
        return False, str(exc), {}
    problems = list(status["damaged"])
    for r in s.rounds():
        if len(list(r.folder.glob("candidate-*.png"))) != len(r.z) or not r.sheet.is_file():
            problems.append(f"round {r.index} is not whole")
        if r.selection:
            saved = json.loads(s.selection_file(r).read_text())
            if saved["chosen"] != r.selection:
                problems.append(f"round {r.index}: the state picks {r.selection}, its file {saved['chosen']}")
    training = s.state.get("training")
    if bool(training) != bool(status["unfinished"]):
        problems.append("status does not name the unfinished training")
    return not problems, "; ".join(problems), status


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "kill")
    p.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results" / "kill.json")
    args = p.parse_args()
    rng = random.Random(args.seed)
    base = args.out / "base"
    settings = TrainSettings(steps=10, size=64, batch=2, checkpoint_seconds=2.0)
    Session.init(base, [PAINTING], [EXAMPLES / "photos"], settings, device="cpu", force=True)
    Session.open(base, "cpu").propose(n=8, size=96)

    # How long each command takes whole, so the kills land anywhere in it, start-up included.
    durations = {}
    for name in COMMANDS:
        work = args.out / f"time-{name}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        if name == "refine":
            subprocess.run(command("select", work, rng), check=True, capture_output=True)
        started = time.perf_counter()
        subprocess.run(command(name, work, rng), check=True, capture_output=True)
        durations[name] = time.perf_counter() - started

    rows = []
    for kill in range(1, args.kills + 1):
        name = COMMANDS[(kill - 1) % len(COMMANDS)]
        work = args.out / f"kill-{kill:02d}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        if name == "refine":
            subprocess.run(command("select", work, rng), check=True, capture_output=True)
        proc = subprocess.Popen(command(name, work, rng), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delay = rng.uniform(0.05, 1.0) * durations[name]
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loads, wrong, status = truth(work)
        unfinished = (status.get("unfinished") or {}).get("resume") if status else None
        landed = name == "refine" and status.get("refines") == 1  # committed before the kill: nothing to redo
        again = command(name, work, rng, resume=bool(unfinished))
        completed = landed or subprocess.run(again, capture_output=True).returncode == 0
        after_ok, after_wrong, after = truth(work)
        completed = completed and after_ok and not after.get("unfinished")
        rows.append({"kill": kill, "command": name, "after_s": round(delay, 2), "of_s": round(durations[name], 1),
                     "finished_before_kill": finished, "loads": loads, "truthful": loads and not wrong,
                     "problem": wrong, "unfinished": unfinished, "then": f"{name} --resume" if unfinished else "(had finished)" if landed else name,
                     "completed": completed, "problem_after": after_wrong})

    table = Table(title="SIGKILL at random moments, then the command again (or --resume)")
    for col in ("kill", "command", "at s / whole", "loads", "status true", "then", "completes", "problem"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["kill"]), r["command"], f"{r['after_s']} / {r['of_s']}", "yes" if r["loads"] else "NO",
                      "yes" if r["truthful"] else "NO", r["then"], "yes" if r["completed"] else "NO",
                      r["problem"] or r["problem_after"])
    console = Console()
    console.print(table)
    good = sum(r["loads"] and r["truthful"] and r["completed"] for r in rows)
    console.print(f"{good}/{len(rows)} kills left a session that loads, says what happened, and completes")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"durations_s": durations, "rows": rows}, indent=1) + "\n")
    return 0 if good == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
