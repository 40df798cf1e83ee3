"""The command line: parse options, call the Session, render progress and results with rich (``terminal``)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from . import __version__, terminal
from .config import (DEFAULT_MAX_PIXELS, MAX_APPLY_SIDE, MAX_BATCH, MAX_CANDIDATES, MAX_POLISH_STEPS, POLISH_STEPS,
                     ProposalSettings, TrainSettings)
from .errors import BadInput, StyleprefsError
from .terminal import err, say

app = typer.Typer(
    help="Learn your own version of a painting's style from the candidates you pick, then stylise folders with it.",
    no_args_is_help=True, pretty_exceptions_enable=False)

SessionOpt = Annotated[Path, typer.Option(
    "--session", envvar="STYLEPREFS_SESSION",
    help="Session folder (default: $STYLEPREFS_SESSION, else ./styleprefs-session).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object describing what was done on stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu or cuda.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="auto (bf16 where the GPU or CPU has bf16 units, else fp32), fp32 (full precision, "
                        "slower where bf16 units are) or bf16.")]
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels",
                                           help="Refuse larger images, from their header, before decoding.")]
OldSizeOpt = Annotated[Optional[int], typer.Option("--size", hidden=True)]  # the old name of a size option
# apply's options that take more than a line to explain (export words the look's options its own way)
MaxSideOpt = Annotated[Optional[int], typer.Option(
    "--max-side", help=f"Shrink larger photos to this long side in px (default: each photo's own size, up to "
                       f"{MAX_APPLY_SIDE}). "
                       "The look is the same at any size.", show_default=False)]
PickOpt = Annotated[Optional[str], typer.Option(help="Use one candidate's look, ROUND:INDEX as on its sheet (e.g. "
                                                     "2:7), instead of the learned one.", show_default=False)]
StrokeScaleOpt = Annotated[float, typer.Option(help="Strokes this many times larger (2) or smaller (0.5) relative to "
                                                    "the image than on the contact sheet.")]
KeepColoursOpt = Annotated[bool, typer.Option("--keep-colours", help="Keep the photo's own colours under the look's "
                                              "light and strokes.")]
SkipExistingOpt = Annotated[bool, typer.Option("--skip-existing",
                                               help="Leave outputs that already exist (cheap reruns).")]
BatchOpt = Annotated[int, typer.Option(help="Most photos of one size per forward pass (1: one at a time, which gives "
                                            "the same bytes on every run whatever the folder holds).")]
PolishOpt = Annotated[bool, typer.Option("--polish", help=f"Finish every photo with {POLISH_STEPS} steps of "
                                         "optimisation toward its look: painterly as a slow per-photo method, "
                                         "seconds a photo on a CPU.")]
PolishStepsOpt = Annotated[Optional[int], typer.Option(
    "--polish-steps", help=f"Steps of --polish (implies it; 1 to {MAX_POLISH_STEPS}; more: nearer the painting, "
                           "slower).", show_default=False)]
DEFAULT_SESSION = Path("styleprefs-session")
# The flag of each argument the core names when it refuses one (``BadInput.option``): the core speaks of values, the
# command line adds what the user typed.
FLAGS = {"n": "--n", "fmt": "--format", "max_batch": "--batch", "stroke_scale": "--stroke-scale",
         "strength": "--strength", "polish_steps": "--polish-steps", "steps": "--steps", "pick": "--pick",
         "shard": "--shard", "out": "--out", "styles": "--style"}
DEBUG_ENV = "STYLEPREFS_DEBUG"  # set (to anything) to see the traceback of an unexpected error


def _run(as_json: bool, debug: bool, work: Callable[[], dict], human: Callable[[dict], None],
         flags: dict[str, str] | None = None) -> None:
    """Run a command body: one JSON object or human output, one clear line on error (naming the flag at fault, from
    FLAGS or this command's own ``flags``)."""
    try:
        result = work()
    except StyleprefsError as exc:
        if debug:
            raise
        flag = {**FLAGS, **(flags or {})}.get(getattr(exc, "option", None) or "")
        err.print(f"[bold red]error:[/] {escape(str(exc))}" + (f" ({flag})" if flag else ""), highlight=False,
                  soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]: the session is as it was before this command")
        raise typer.Exit(130) from None
    except Exception as exc:  # a full disk, a GPU out of memory, a bug: one line, unless asked for the traceback
        if debug or os.environ.get(DEBUG_ENV):
            raise
        err.print(f"[bold red]error:[/] {escape(_what_failed(exc))} ({type(exc).__name__}; --debug or {DEBUG_ENV}=1 "
                  "shows where)", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        human(result)
    if result.get("failed"):
        raise typer.Exit(1)


def _what_failed(exc: Exception) -> str:
    """One line on an unexpected error: the file and the system's words for an OSError (a full disk), else the
    message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return " ".join(str(exc).split()) or "an unexpected error"


@app.command()
def init(
    style: Annotated[Optional[list[Path]], typer.Option(
        "--style", help="A painting file (repeat for a blend of several; a folder is refused).")] = None,
    content: Annotated[Optional[list[Path]], typer.Option(
        "--content", help="Photos: files or folders (searched recursively).")] = None,
    steps: Annotated[Optional[int], typer.Option(help=f"Training steps (default {TrainSettings().steps}; more: "
                                                      "sharper looks, longer).", show_default=False)] = None,
    crop: Annotated[Optional[int], typer.Option("--crop", help=f"Side of the training crops in px (default "
                                                f"{TrainSettings().size}).", show_default=False)] = None,
    size: OldSizeOpt = None,  # the old name of --crop
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same session).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing session.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted init from its last checkpoint.")] = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    precision: PrecisionOpt = "auto",
    session: SessionOpt = DEFAULT_SESSION,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Create a session: learn a whole family of looks of your painting(s) on your photos (minutes on a CPU)."""
    from .session import Session

    def work() -> dict:
        settings = _init_settings(style, content, steps, crop if crop is not None else size, resume)
        started = time.perf_counter()
        with terminal.progress_bars() as progress:
            s = Session.init(session, style or [], content or [], settings, device=device, seed=seed, force=force,
                             resume=resume, max_pixels=max_pixels,
                             on_progress=terminal.training_reporter(progress, "init"), precision=precision)
        return {"command": "init", "session": str(s.store.root.resolve()), "steps": s.settings.steps,
                "seconds": round(time.perf_counter() - started, 1), "device": s.runtime.name, "bf16": s.runtime.bf16,
                "styles": [x["path"] for x in s.config["styles"]], "contents": len(s.config["contents"])}
    _run(as_json, debug, work, terminal.show_init)


def _init_settings(style: list[Path] | None, content: list[Path] | None, steps: int | None, size: int | None,
                   resume: bool) -> TrainSettings | None:
    """init's training settings, from the defaults; on --resume, those the interrupted init started with (None),
    unless other steps are asked for (and then refused)."""
    if not resume and (not style or not content):
        raise BadInput("init needs --style PAINTING and --content PHOTOS (or --resume)")
    if resume and (content or size is not None):
        raise BadInput("init --resume continues with the photos and crop size it started with; "
                       "--content and --crop cannot change them (start again with --force)")
    if resume:
        return None if steps is None else TrainSettings(steps=steps)
    defaults = TrainSettings()
    return TrainSettings(steps=steps if steps is not None else defaults.steps,
                         size=size if size is not None else defaults.size)


@app.command()
def propose(
    n: Annotated[int, typer.Option("--n", help=f"Number of candidates (1 to {MAX_CANDIDATES}).")
                 ] = ProposalSettings().n,
    sheet_size: Annotated[Optional[int], typer.Option("--sheet-size", help=f"Long side of each candidate on the sheet "
                                                      f"in px (default {ProposalSettings().size}); "
                                                      "the looks do not depend on it.", show_default=False)] = None,
    size: OldSizeOpt = None,  # the old name of --sheet-size
    preview: Annotated[Optional[Path], typer.Option(
        help="Photo to render the candidates on (default: the first content photo).")] = None,
    polish: Annotated[bool, typer.Option("--polish", help=f"Finish every candidate with {POLISH_STEPS} steps of "
                                         "polish at the sheet's size, as apply --polish finishes a photo: seconds a "
                                         "candidate on a CPU.")] = False,
    polish_steps: PolishStepsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    session: SessionOpt = DEFAULT_SESSION,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show N candidate looks on your photo: a numbered contact sheet, and a page to pick from by clicking."""
    from .page import PAGE
    from .session import Session

    def work() -> dict:
        started = time.perf_counter()
        with terminal.progress_bars() as progress:
            task = progress.add_task("propose", total=None, info="")
            r = Session.open(session, device, precision).propose(
                n=n, size=sheet_size if sheet_size is not None else size, preview=preview,
                on_progress=lambda k, total: progress.update(task, completed=k, total=total, info="candidates"),
                polish_steps=steps)
        return {"command": "propose", "round": r.index, "candidates": [str(p) for p in r.candidates],
                "sheet": str(r.sheet), "page": str(r.folder / PAGE), "polish_steps": steps,
                "seconds": round(time.perf_counter() - started, 2)}
    steps = polish_steps if polish_steps is not None else (POLISH_STEPS if polish else None)
    _run(as_json, debug, work, terminal.show_propose, flags={"size": "--sheet-size"})


@app.command(context_settings={"ignore_unknown_options": True})
def select(
    indices: Annotated[Optional[list[str]], typer.Argument(
        help="Numbers of the candidates you like (as on the contact sheet).")] = None,
    session: SessionOpt = DEFAULT_SESSION,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Record the candidates you like in the latest round (selecting again replaces the choice)."""
    from .session import Session

    def work() -> dict:
        numbers = _candidate_numbers(indices or [])
        with Session.editing(session, "cpu") as s:
            r = s.select(numbers)
        return {"command": "select", "round": r.index, "chosen": r.selection,
                "selection": str(s.selection_file(r))}
    _run(as_json, debug, work, terminal.show_select)


def _candidate_numbers(indices: list[str]) -> list[int]:
    """select's arguments as numbers. Unknown options reach here too (so that "-1" is answered as a number out of
    range): a word after a dash is a mistyped option, not a candidate."""
    unknown = [i for i in indices if i.startswith("-") and not i[1:].isdigit()]
    if unknown:
        raise BadInput(f"no such option: {unknown[0]} (select takes candidate numbers, --session, --json and --debug)")
    try:
        return [int(i) for i in indices]
    except ValueError:
        raise BadInput(f"candidate numbers must be whole numbers, got {' '.join(indices)}") from None


@app.command()
def refine(
    steps: Annotated[Optional[int], typer.Option(help=f"Fine-tuning steps (default {TrainSettings().refine_steps}, or "
                                                      "the session's own setting).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted refine from its last checkpoint.")] = False,
    undo: Annotated[bool, typer.Option(
        "--undo", help="Return the session to the state before the last refine.")] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    session: SessionOpt = DEFAULT_SESSION,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Learn from your picks and from the candidates you passed over: the next round and apply follow your taste."""
    from .session import Session

    def work() -> dict:
        if undo and (resume or steps is not None):
            raise BadInput("--undo takes no --resume or --steps")
        with Session.editing(session, device, precision=precision) as s:
            if undo:
                return {"command": "refine --undo", **s.undo(), "taste": s.status()["taste"]}
            with terminal.progress_bars() as progress:
                r = s.refine(steps, resume=resume, on_progress=terminal.training_reporter(progress, "refine"))
            status = s.status()
            return {"command": "refine", **r, "preferred_z": status["preferred_z"], "taste": status["taste"]}
    _run(as_json, debug, work, terminal.show_refine)


@app.command()
def apply(
    inputs: Annotated[list[Path], typer.Argument(help="Photos: files or folders.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (names mirror the inputs).")],
    max_side: MaxSideOpt = None,
    size: OldSizeOpt = None,  # the old name of --max-side
    pick: PickOpt = None,
    stroke_scale: StrokeScaleOpt = 1.0,
    fmt: Annotated[str, typer.Option("--format", help="png or jpg.")] = "png",
    skip_existing: SkipExistingOpt = False,
    shard: Annotated[Optional[str], typer.Option(help="Process only shard K of N (K/N), for parallel jobs.")] = None,
    batch: BatchOpt = MAX_BATCH,
    strength: Annotated[float, typer.Option(help="How much of the look over the photo, 0 to 1.")] = 1.0,
    keep_colours: KeepColoursOpt = False,
    polish: PolishOpt = False,
    polish_steps: PolishStepsOpt = None,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    session: SessionOpt = DEFAULT_SESSION,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Stylise photos with the learned look: fast with the generator alone, painterly with --polish."""
    from .session import Session

    steps = polish_steps if polish_steps is not None else (POLISH_STEPS if polish else None)

    def work() -> dict:
        s = Session.open(session, device, precision)
        with terminal.apply_bars(steps) as (report, step):
            r = s.apply(inputs, out, size=max_side if max_side is not None else size, pick=pick,
                        stroke_scale=stroke_scale, fmt=fmt, skip_existing=skip_existing, shard=shard,
                        max_pixels=max_pixels, max_batch=batch, on_progress=report, polish_steps=steps,
                        on_step=step, strength=strength, keep_colours=keep_colours)
        return {"command": "apply", "outputs": [str(p) for p in r.outputs], "seconds": round(r.seconds, 2),
                "existing": [str(p) for p in r.existing], "warnings": r.warnings,
                "failed": [{"input": str(p), "error": e} for p, e in r.skipped]}
    _run(as_json, debug, work, lambda r: terminal.show_apply(r, out), flags={"size": "--max-side"})


# The help as one line: a docstring would have to break it, and the list of commands would show the break.
@app.command(help="Write the look apply uses as one model file, photo in, stylised photo out: float32 RGB NCHW in "
                  "[0, 1], any size.")
def export(
    fmt: Annotated[str, typer.Option("--format", help="onnx (for onnxruntime), pt2 (for torch.export.load) or "
                                                      "torchscript (for torch.jit.load).")],
    out: Annotated[Path, typer.Option("--out", help="The file to write.")],
    pick: Annotated[Optional[str], typer.Option(help="Export one candidate's look, ROUND:INDEX as on its sheet, "
                                                     "instead of the learned one.", show_default=False)] = None,
    stroke_scale: Annotated[float, typer.Option(help="Strokes this many times larger or smaller, as apply's.")] = 1.0,
    strength: Annotated[float, typer.Option(help="How much of the look over the photo, 0 to 1, as apply's.")] = 1.0,
    keep_colours: Annotated[bool, typer.Option("--keep-colours", help="Keep the photo's own colours, as apply's.")
                            ] = False,
    session: SessionOpt = DEFAULT_SESSION,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    from .export import export as export_look
    from .session import Session

    def work() -> dict:
        return {"command": "export", **export_look(Session.open(session, "cpu"), fmt, out, pick, stroke_scale, strength,
                                                   keep_colours)}
    _run(as_json, debug, work, terminal.show_export)


@app.command()
def status(
    session: SessionOpt = DEFAULT_SESSION,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show the session: rounds, selections, the taste learned so far, training, device and paths."""
    from .session import Session

    _run(as_json, debug, lambda: {"command": "status", **Session.open(session, "cpu").status()}, terminal.show_status)


@app.command()
def history(
    session: SessionOpt = DEFAULT_SESSION,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List every round: its sheet, the picks, the refine that learned from them and the taste it learned."""
    from .session import Session

    _run(as_json, debug, lambda: {"command": "history", "rounds": Session.open(session, "cpu").history()},
         terminal.show_history)


@app.command()
def pick(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = 0,
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open the page in a browser.")] = True,
    steps: Annotated[Optional[int], typer.Option(
        help="Steps for the page's refine (default from the session).")] = None,
    device: DeviceOpt = "auto",
    session: SessionOpt = DEFAULT_SESSION,
    debug: DebugOpt = False,
) -> None:
    """Pick in a browser: serve the latest round's page on 127.0.0.1, where "Use these" runs select and "Refine and
    show the next round" runs refine then propose."""
    from .server import Picker, serve

    def work() -> dict:
        picker = Picker(session, device, steps, on_job=terminal.show_job)
        entry = picker.latest()  # refuses a missing session or one without a round before anything is served
        server = serve(picker, port)
        url = f"http://127.0.0.1:{server.server_port}/"
        err.print(f"serving round {entry['index']} of {escape(str(session))} at [bold]{url}[/] (Ctrl-C to stop)",
                  highlight=False)
        if browser:
            _open_browser(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            say.print("stopping" + (f": asking the {picker.job.phase} to stop" if picker.job.phase else ""))
            picker.stop()
        finally:
            server.server_close()
        return {"command": "pick", "url": url}
    _run(False, debug, work, lambda r: say.print("stopped"))


def _open_browser(url: str) -> None:
    """A graphical browser where there is one; on Linux without a display, Python would start a text browser in this
    terminal, so there only the address is printed."""
    import webbrowser

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    webbrowser.open(url)


def _version(value: bool) -> None:
    if value:
        print(f"styleprefs {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, confirmations or hints on stderr (errors, "
                                        "warnings and what status and history show stay).")] = False,
) -> None:
    """styleprefs: init → propose → select → refine → … → apply."""
    say.quiet = quiet


def main() -> None:
    os.environ.setdefault("KMP_WARNINGS", "0")
    app()
