"""What the command line shows a person: its consoles, the live progress bars, and each command's result in words."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# stdout carries what was asked for: --json's object, or what status and history show (so `styleprefs status > f`
# works); errors, warnings, progress and hints go to stderr. All consoles honour NO_COLOR.
out = Console()             # what status / history were asked to show
err = Console(stderr=True)  # errors and warnings
say = Console(stderr=True)  # progress, confirmations and hints: silenced by --quiet


@contextmanager
def progress_bars() -> Iterator[Progress]:
    """Live progress bars on a terminal; nothing when stderr is a log file or a pipe."""
    # The info is losses or a file name, and a name may hold "[...]": printed as it is, not read as markup.
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}", markup=False)]
    with Progress(*columns, console=say, disable=not say.is_terminal or say.quiet, transient=True) as progress:
        yield progress


def training_reporter(progress: Progress, description: str):
    """A bar for init's or refine's steps, with the main losses beside it."""
    task = None

    def report(p) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task(description, total=p.total, completed=p.step - 1, info="")
        info = "  ".join(f"{k} {v:.3f}" for k, v in p.losses.items() if k in ("content", "style", "colour", "adv"))
        progress.update(task, completed=p.step, info=info)
    return report


@contextmanager
def apply_bars(polish_steps: int | None) -> Iterator[tuple[Callable[[int, int, Path], None],
                                                          Callable[[int, int], None] | None]]:
    """apply's bars: the photos written, and a picture's polish steps when it polishes. Yields the two reporters."""
    with progress_bars() as progress:
        task = progress.add_task("apply", total=None, info="")
        polishing = None if polish_steps is None else progress.add_task("polish", total=polish_steps, info="")

        def report(k: int, total: int, path: Path) -> None:
            progress.update(task, total=total, completed=k, info=path.name)

        def step(k: int, total: int) -> None:
            progress.update(polishing, total=total, completed=k)
        yield report, None if polish_steps is None else step


def next_step(text: str) -> None:
    say.print(f"next: [bold cyan]{text}[/]")


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def show_init(r: dict) -> None:
    say.print(f"trained {r['steps']} steps in {r['seconds']} s on {r['device']}; session at {escape(r['session'])}")
    next_step("styleprefs propose")


def show_propose(r: dict) -> None:
    finished = f", each finished with {r['polish_steps']} steps of polish" if r.get("polish_steps") else ""
    say.print(f"round {r['round']}: {len(r['candidates'])} candidates in {r['seconds']} s{finished}")
    say.print(f"contact sheet: [bold]{escape(r['sheet'])}[/]", highlight=False)
    say.print(f"to pick by clicking: [bold]{escape(r['page'])}[/] (or styleprefs pick)", highlight=False)
    next_step("styleprefs select N [N ...]   (the numbers on the sheet)")


def show_select(r: dict) -> None:
    say.print(f"round {r['round']}: chose {' '.join(map(str, r['chosen']))}")
    next_step("styleprefs refine")


def show_refine(r: dict) -> None:
    if r["command"] == "refine --undo":
        say.print(f"undid {r['undone']}: back to {r['checkpoint']} with {r['rounds']} round(s)")
        next_step("styleprefs select N [N ...]   to change the latest picks, then styleprefs refine")
        return
    say.print(f"refined for {r['steps']} steps in {r['seconds']} s (rounds {r['rounds']}); "
              f"checkpoint {r['checkpoint']}")
    say.print(f"learned so far: {escape(r['taste']['summary'])}", highlight=False)
    next_step("styleprefs propose   or   styleprefs apply PHOTOS --out DIR   (undo: styleprefs refine --undo)")


def show_apply(r: dict, out_dir: Path) -> None:
    for warning in r["warnings"]:
        err.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)
    for f in r["failed"]:
        err.print(f"[yellow]skipped[/] {escape(f['error'])}", highlight=False)
    say.print(f"wrote {len(r['outputs'])} image(s) to {escape(str(out_dir))} in {r['seconds']} s"
              + (f"; {len(r['existing'])} already there" if r["existing"] else "")
              + (f"; {len(r['failed'])} failed" if r["failed"] else ""))


def show_export(r: dict) -> None:
    for warning in r["warnings"]:
        err.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)
    say.print(f"wrote {escape(r['file'])} ({r['format']}, {r['bytes'] / 1e6:.1f} MB)", highlight=False)


def show_status(r: dict) -> None:
    out.print(f"[bold]styleprefs session[/] at {escape(r['session'])}", highlight=False)
    paintings = ", ".join(Path(p).name for p in r["styles"])
    out.print(f"Trained on {count(r['contents'], 'photo')} and {count(len(r['styles']), 'painting')} "
              f"({escape(paintings)}): {r['steps']['init']} steps at init, "
              + (f"{r['steps']['refine']} in {count(r['refines'], 'refine')}" if r["refines"] else "no refine yet")
              + f"; on {r['device']}{' with bf16' if r['bf16'] else ''}. "
              f"Checkpoint: {r['checkpoint'] or 'none yet'}.", highlight=False)
    out.print(f"{count(r['round'], 'round')} so far, {r['proposals']} candidates in all"
              + (f"; the latest sheet is {escape(r['latest_sheet'])}." if r["latest_sheet"] else "."), highlight=False)
    if r["selections"]:
        table = Table("round", "picks", title="Picks")
        for index, picks in r["selections"].items():
            table.add_row(str(index), " ".join(map(str, picks)))
        out.print(table)
    taste = r["taste"]
    out.print(f"Learned so far: {escape(taste['summary'])}"
              + (f" (from {taste['picks']} picks; {taste['confidence']:.0%} sure it beats round 1's centre)."
                 if taste["picks"] else "."), highlight=False)
    if r["preferred_z"]:
        dials = ", ".join(f"{name} {value:+.2f}" for name, value in r["preferred_z"].items() if name != "scale")
        out.print(f"The look apply uses: {dials}"
                  + (f"; stroke scale ×{r['stroke_scale']:.2f}." if r["stroke_scale"] else "."))
    if r["unfinished"]:
        u = r["unfinished"]
        out.print(f"[yellow]Unfinished:[/] a {u['phase']} stopped after {u['completed']} of {u['steps']} steps; "
                  f"continue it with `{u['resume']}`.")
    for problem in r["damaged"]:
        out.print(f"[red]damaged:[/red] {escape(problem)}")
    if r["damaged"]:
        out.print("Restore these files from a copy of the session; commands that build on them refuse to run.")


def show_history(r: dict) -> None:
    if not r["rounds"]:
        out.print("No rounds yet.")
        next_step("styleprefs propose")
        return
    table = Table("round", "sheet", "picks", "refine", "learned", title="styleprefs history")
    for row in r["rounds"]:
        refine = row["refine"]
        steps = refine and f"{refine['steps']} steps" + ("" if refine["fine_tuning_kept"] else
                                                       " (fine-tuning not kept)")
        table.add_row(str(row["round"]), escape(row["sheet"]),
                      " ".join(map(str, row["picks"])) if row["picks"] else "none",
                      steps or "not yet", escape(refine["taste"]) if refine else "")
    out.print(table)


def show_job(job) -> None:
    """What the picking page shows of its running job, in the terminal (called from the job's thread)."""
    if job.error:
        err.print(f"[bold red]error:[/] {escape(job.error)}", highlight=False)
    elif job.phase and job.step == 0:
        say.print(f"running {escape(job.message)}", highlight=False)
    elif job.phase and (job.step == job.total or job.step % max(1, job.total // 10) == 0):
        say.print(f"{job.phase}: step {job.step} of {job.total}")
    elif not job.phase and job.message:
        say.print(escape(job.message), highlight=False)
