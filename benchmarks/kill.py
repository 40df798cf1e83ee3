"""Kill test: `refine` killed with SIGKILL at random moments; after each, the session must load, say
how far the refine got, and `refine --resume` must finish it.

    python benchmarks/kill.py              # 10 kills (a few minutes on 2 cores)
    python benchmarks/kill.py --kills 3
"""

from __future__ import annotations

import argparse
import json
import random
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


def refine_process(session: Path, steps: int, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "styleprefs", "refine", "--device", "cpu", "--session", str(session)]
    args += ["--resume"] if resume else ["--steps", str(steps)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--steps", type=int, default=300, help="refine steps (64 px crops)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "kill")
    p.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results" / "kill.json")
    args = p.parse_args()
    rng = random.Random(args.seed)
    session = args.out / "session"
    settings = TrainSettings(steps=10, size=64, batch=2, checkpoint_seconds=2.0)
    s = Session.init(session, [EXAMPLES / "paintings" / "vangogh_starry_night.jpg"], [EXAMPLES / "photos"],
                     settings, device="cpu", force=True)
    s.propose(n=8, size=96)
    s.select([2, 5])

    rows = []
    resume = False
    for kill in range(1, args.kills + 1):
        proc = refine_process(session, args.steps, resume)
        delay = rng.uniform(1.0, 12.0)
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        started = time.perf_counter()
        try:
            status = Session.open(session, device="cpu").status()
            loads, error = True, ""
        except Exception as exc:  # the figure we want is how often this happens: never
            loads, status, error = False, {}, str(exc)
        unfinished = status.get("unfinished")
        rows.append({"kill": kill, "after_s": round(delay, 1), "finished_before_kill": finished, "loads": loads,
                     "load_s": round(time.perf_counter() - started, 2), "error": error,
                     "refines": status.get("refines"),
                     "saved_step": unfinished["completed"] if unfinished else None})
        if status.get("refines"):
            break  # the refine completed before this kill: nothing left to interrupt
        resume = bool(unfinished)
    before = Session.open(session, device="cpu").status()
    final_ok = True
    if not before["refines"]:  # finish it: resume if a checkpoint was saved, else start again
        final_ok = refine_process(session, args.steps, resume=bool(before["unfinished"])).wait() == 0
    status = Session.open(session, device="cpu").status()

    table = Table(title=f"refine ({args.steps} steps) killed with SIGKILL at random moments")
    for col in ("kill", "after s", "session loads", "refine steps saved", "error"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["kill"]), f"{r['after_s']}", "yes" if r["loads"] else "NO",
                      "—" if r["saved_step"] is None else str(r["saved_step"]), r["error"])
    console = Console()
    console.print(table)
    loads = sum(r["loads"] for r in rows)
    console.print(f"{loads}/{len(rows)} kills left a session that loads; final `refine --resume` "
                  f"{'completed' if final_ok else 'FAILED'}: refines={status['refines']}, "
                  f"steps={status['steps']}, unfinished={status['unfinished']}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"rows": rows, "final_ok": final_ok, "final_status": status}, indent=1) + "\n")
    return 0 if loads == len(rows) and final_ok and status["refines"] == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
