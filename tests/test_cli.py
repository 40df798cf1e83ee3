"""The whole loop through the command line, on real networks at tiny sizes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from styleprefs.cli import app
from tests.conftest import make_photo

runner = CliRunner()


def run(*args, expect=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
    return result


def run_json(*args, expect=0):
    """The command's --json answer: stdout must hold exactly one JSON object and nothing else."""
    result = run(*args, "--json", expect=expect)
    answer = json.loads(result.stdout)
    assert isinstance(answer, dict), result.stdout
    return answer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A session trained for a few steps at 64 px on two made photos and a real painting; never changed: each
    test works on its own copy (``session``)."""
    root = tmp_path_factory.mktemp("cli")
    photos = root / "photos"
    make_photo(photos / "a.png", seed=1)
    make_photo(photos / "sub" / "b.jpg", seed=2)
    painting = Path(__file__).resolve().parents[1] / "examples" / "paintings" / "vangogh_starry_night.jpg"
    s = root / "session"
    out = run_json("init", "--style", painting, "--content", photos, "--steps", 3, "--size", 64,
                   "--device", "cpu", "--session", s)
    return {"session": s, "photos": photos, "painting": painting, "init": out}


@pytest.fixture
def session(trained, tmp_path):
    """This test's own copy of the trained session, so that no test depends on what another did before it."""
    shutil.copytree(trained["session"], tmp_path / "session")
    return {**trained, "session": tmp_path / "session"}


def test_init_creates_a_complete_session(trained):
    s = trained["session"]
    assert trained["init"]["steps"] == 3 and trained["init"]["contents"] == 2
    for name in ("config.json", "state.json", "history.json", "style_grams.safetensors",
                 "checkpoints/000/generator.safetensors", "checkpoints/000/discriminator.safetensors",
                 "checkpoints/000/preference.safetensors"):
        assert (s / name).is_file(), name
    config = json.loads((s / "config.json").read_text())
    assert config["schema_version"] == 3 and len(config["contents"]) == 2
    assert all(len(c["sha256"]) == 64 for c in config["contents"] + config["styles"])
    assert config["settings"]["steps"] == 3
    assert not [p for p in s.parent.iterdir() if p.name.startswith(".session")]  # no staging left


def test_the_whole_loop(session, tmp_path):
    s, root = session["session"], tmp_path
    first = run_json("propose", "--n", 4, "--size", 64, "--session", s)
    assert first["round"] == 1 and len(first["candidates"]) == 4
    assert [Path(p).name for p in first["candidates"]] == [f"candidate-0{i}.png" for i in range(1, 5)]
    for p in first["candidates"] + [first["sheet"]]:
        assert Image.open(p).size[0] > 0
    picked = run_json("select", 1, 3, "--session", s)
    assert picked["chosen"] == [1, 3]
    picked = run_json("select", 2, 3, "--session", s)  # selecting again replaces
    assert picked["chosen"] == [2, 3]
    assert (Path(picked["selection"]).parent / "chosen_grams.safetensors").is_file()
    assert Path(picked["selection"]).parent.name == "picks-2-3"

    refined = run_json("refine", "--steps", 2, "--device", "cpu", "--session", s)
    assert refined["checkpoint"] == "checkpoints/001" and refined["rounds"] == [1]
    assert (s / "checkpoints/001/generator.safetensors").is_file()
    assert (s / "checkpoints/000/generator.safetensors").is_file()  # the previous state is kept

    second = run_json("propose", "--n", 4, "--size", 64, "--session", s)
    assert second["round"] == 2

    out = root / "styled"
    applied = run_json("apply", session["photos"], "--out", out, "--size", 80, "--session", s)
    assert sorted(Path(p).relative_to(out).as_posix() for p in applied["outputs"]) == ["a.png", "sub/b.png"]
    assert Image.open(out / "a.png").size == (80, 60)  # aspect ratio kept, long side capped
    picked = run_json("apply", session["photos"] / "a.png", "--out", root / "pick", "--pick", "1:2",
                      "--format", "jpg", "--session", s)
    assert Path(picked["outputs"][0]).name == "a.jpg"

    status = run_json("status", "--session", s)
    assert status["round"] == 2 and status["refines"] == 1 and status["proposals"] == 8
    assert status["selections"] == {"1": [2, 3]}
    assert status["steps"] == {"init": 3, "refine": 2}
    history = json.loads((s / "history.json").read_text())["events"]
    assert [e["command"] for e in history] == ["init", "propose", "select", "select", "refine", "propose"]


def test_refine_without_a_new_selection_is_refused(session):
    s = session["session"]
    run_json("propose", "--n", 2, "--size", 48, "--session", s)
    result = run("refine", "--steps", 1, "--session", s, expect=2)
    assert "no new selection" in result.output


@pytest.mark.parametrize("args,message", [
    (["0"], "no candidate 0"), (["5"], "no candidate 5"), (["-1"], "no candidate -1"),
    (["1", "1"], "repeat"), (["x"], "whole numbers"),
])
def test_bad_indices_are_refused(session, args, message):
    s = session["session"]
    run_json("propose", "--n", 4, "--size", 48, "--session", s)
    before = (s / "state.json").read_bytes()
    result = run("select", *args, "--session", s, expect=2)
    assert message in result.output
    assert (s / "state.json").read_bytes() == before


@pytest.mark.parametrize("typo", ["--sesion", "--jsn", "-x"])
def test_a_mistyped_option_to_select_is_named_as_an_unknown_option(session, typo):
    result = run("select", 1, typo, "elsewhere", "--session", session["session"], expect=2)
    assert f"no such option: {typo}" in result.output and "whole numbers" not in result.output


def test_commands_before_init_say_what_to_do(tmp_path):
    for args in (["propose"], ["select", "1"], ["refine"], ["status"], ["apply", tmp_path, "--out", tmp_path / "o"]):
        result = run(*args, "--session", tmp_path / "none", expect=2)
        assert "no session" in result.output and "styleprefs init" in result.output


def test_init_refuses_to_overwrite_and_missing_inputs(session, tmp_path):
    result = run("init", "--style", session["painting"], "--content", session["photos"],
                 "--session", session["session"], expect=2)
    assert "already exists" in result.output and "--force" in result.output
    result = run("init", "--style", tmp_path / "missing.jpg", "--content", session["photos"],
                 "--session", tmp_path / "new", expect=2)
    assert "missing.jpg: no such file" in result.output
    assert not (tmp_path / "new").exists()


def test_apply_never_writes_over_its_inputs(session, tmp_path):
    photos = tmp_path / "in"
    make_photo(photos / "p.png")
    before = (photos / "p.png").read_bytes()
    result = run("apply", photos, "--out", photos, "--session", session["session"], expect=2)
    assert "would write over the input" in result.output
    assert (photos / "p.png").read_bytes() == before


def test_apply_skips_bad_images_and_exits_1(session, tmp_path):
    photos = tmp_path / "mixed"
    make_photo(photos / "good.png")
    (photos / "bad.jpg").write_text("not a jpeg")
    data = run_json("apply", photos, "--out", tmp_path / "o", "--session", session["session"], expect=1)
    assert [Path(p).name for p in data["outputs"]] == ["good.png"]
    assert "bad.jpg" in data["failed"][0]["input"]


def test_real_entry_point_prints_one_line_and_no_traceback(tmp_path):
    env = {**os.environ, "STYLEPREFS_SESSION": str(tmp_path / "nowhere")}
    proc = subprocess.run([sys.executable, "-m", "styleprefs", "status"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "no session" in proc.stderr


@pytest.mark.parametrize("scale", ["0", "0.01", "-1", "9", "nan"])
def test_apply_refuses_a_stroke_scale_out_of_range(session, tmp_path, scale):
    result = run("apply", session["photos"], "--out", tmp_path / "o", "--stroke-scale", scale,
                 "--session", session["session"], expect=2)
    assert "the stroke scale must be between 0.015 and 8" in result.output and "(--stroke-scale)" in result.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_apply_keeps_a_large_photo_at_its_own_size(session, tmp_path):
    """Up to 8192 px by default (it was capped at 2048); the look comes from the working resolution."""
    big = make_photo(tmp_path / "in" / "big.png", size=(2600, 1200))
    data = run_json("apply", big, "--out", tmp_path / "o", "--stroke-scale", "2", "--session", session["session"])
    assert Image.open(data["outputs"][0]).size == (2600, 1200)


def test_status_prints_to_stdout_and_writes_nothing(session, tmp_path, monkeypatch):
    """`styleprefs status > f` keeps what status shows; status is a read: no session file and nothing in the user's
    cache folder changes (the guard's verdict on the look is computed, not remembered)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("STYLEPREFS_CACHE", str(cache))
    before = {p: p.read_bytes() for p in session["session"].rglob("*") if p.is_file()}
    plain = run("status", "--session", session["session"])
    assert "styleprefs session" in plain.stdout and plain.stderr == ""
    assert run_json("status", "--session", session["session"])["command"] == "status"
    assert {p: p.read_bytes() for p in session["session"].rglob("*") if p.is_file()} == before
    assert not cache.exists() or not any(cache.rglob("*"))


def test_a_folder_as_style_is_refused_not_searched(session, tmp_path):
    """Every image in it silently became one more painting, each a blend axis of z."""
    folder = tmp_path / "paintings"
    folder.mkdir()
    shutil.copy(session["painting"], folder / "starry.jpg")
    make_photo(folder / "sketch.png")
    result = run("init", "--style", folder, "--content", session["photos"], "--steps", 1, "--size", 48,
                 "--session", tmp_path / "new", expect=2)
    assert f"{folder}: is a folder" in result.output and "name each painting on its own" in result.output
    assert result.output.rstrip().endswith("(--style)")
    assert not (tmp_path / "new").exists()


def test_paths_with_markup_brackets_are_printed_not_parsed(session, tmp_path):
    """A path holding "[/x]" went into rich markup as a closing tag: MarkupError, even inside the error handler."""
    odd = tmp_path / "a[" / "x]b"  # .../a[/x]b
    wide = {"COLUMNS": "1000"}  # no wrapping, so a path can be looked for in the output whole

    def run_wide(*args, expect=0):
        result = runner.invoke(app, [str(a) for a in args], env=wide)
        assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
        return result.output

    error = run_wide("init", "--style", odd / "missing.jpg", "--content", session["photos"],
                     "--session", tmp_path / "new", expect=2)
    assert f"error: {odd / 'missing.jpg'}: no such file" in error
    shutil.copytree(session["session"], odd / "session")
    assert str(odd / "session" / "rounds" / "001" / "sheet.png") in run_wide(
        "propose", "--n", 2, "--size", 48, "--session", odd / "session")
    assert str(odd / "session") in run_wide("status", "--session", odd / "session")
    make_photo(odd / "in" / "good.png")
    (odd / "in" / "bad.png").write_text("not a png")
    applied = run_wide("apply", odd / "in", "--out", odd / "out", "--session", odd / "session", expect=1)
    assert f"skipped {odd / 'in' / 'bad.png'}: not a readable image" in applied
    assert f"wrote 1 image(s) to {odd / 'out'}" in applied


def test_status_and_history_read_as_sentences_and_tables(session):
    """No raw JSON in the human output (status printed {"1": [2, 7, 11]} and {"init": 300, "refine": 100})."""
    s = session["session"]
    run_json("propose", "--n", 4, "--size", 48, "--session", s)
    run_json("select", 2, 4, "--session", s)
    run_json("refine", "--steps", 1, "--device", "cpu", "--session", s)
    run_json("propose", "--n", 4, "--size", 48, "--session", s)
    wide = {"COLUMNS": "300"}
    status = runner.invoke(app, ["status", "--session", str(s)], env=wide).stdout
    assert not any(mark in status for mark in ("{", "}", '"', "[2")), status
    assert "3 steps at init, 1 in 1 refine" in status and "2 rounds so far, 8 candidates in all" in status
    assert "Learned so far: " in status
    history = runner.invoke(app, ["history", "--session", str(s)], env=wide)
    assert history.exit_code == 0 and history.stderr == ""
    lines = history.stdout.splitlines()
    round1 = next(line for line in lines if str(s / "rounds" / "001" / "sheet.png") in line)
    assert "2 4" in round1 and "1 steps" in round1
    assert "than the default look" in round1 or "close to the default look" in round1
    round2 = next(line for line in lines if str(s / "rounds" / "002" / "sheet.png") in line)
    assert "none" in round2 and "not yet" in round2
    rows = run_json("history", "--session", s)["rounds"]
    assert [(r["round"], r["picks"], r["refine"] and r["refine"]["steps"]) for r in rows] == [(1, [2, 4], 1),
                                                                                           (2, None, None)]
    assert rows[0]["page"] == str(s / "rounds" / "001" / "index.html")
    assert rows[0]["refine"]["taste"] == run_json("status", "--session", s)["taste"]["summary"]


def test_quiet_silences_the_chatter_but_not_errors(session):
    s = session["session"]
    quiet = run("--quiet", "propose", "--n", 2, "--size", 48, "--session", s)
    assert quiet.stderr == "" and quiet.stdout == ""
    assert "round 2" in run("propose", "--n", 2, "--size", 48, "--session", s).stderr
    failed = run("-q", "select", "9", "--session", s, expect=2)
    assert "error: no candidate 9" in failed.stderr


@pytest.mark.parametrize("no_color", [False, True])
def test_no_color_is_honoured(tmp_path, no_color):
    """rich reads NO_COLOR when the console is made; FORCE_COLOR makes a pipe count as a terminal, so the test sees
    the colour it would otherwise print."""
    env = {**os.environ, "STYLEPREFS_SESSION": str(tmp_path / "nowhere"), "FORCE_COLOR": "1"}
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    proc = subprocess.run([sys.executable, "-m", "styleprefs", "status"], capture_output=True, text=True, env=env)
    coloured = "\x1b[1;31m" in proc.stderr  # bold red "error:"
    assert coloured is not no_color and "no session" in proc.stderr


def test_shell_completion_is_offered():
    script = Path(sys.executable).parent / "styleprefs"  # completion is keyed to the installed command's name
    if not script.is_file():
        pytest.skip("styleprefs is not installed as a command beside this Python")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    # --show-completion prints the script for the shell it runs under, found among its parent processes: run it under
    # bash (a second command keeps bash from exec-ing into it), not under whatever started the tests.
    shown = subprocess.run(["bash", "-c", '"$0" --show-completion; true', script], capture_output=True, text=True)
    assert "complete -o default -F _styleprefs_completion styleprefs" in shown.stdout
    env = {**os.environ, "_STYLEPREFS_COMPLETE": "complete_bash", "COMP_WORDS": "styleprefs hi", "COMP_CWORD": "1"}
    assert subprocess.run([script], capture_output=True, text=True, env=env).stdout.split() == ["history"]


def test_a_usage_error_or_help_answers_without_importing_torch():
    """Importing torch takes seconds; a mistyped option or ``--help`` in a shell script must not wait for it."""
    code = ("import sys; from styleprefs.cli import app; from typer.testing import CliRunner; "
            "result = CliRunner().invoke(app, ['apply', '--quiet']); "
            "print(result.exit_code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["2", "False"]


def test_precision_can_be_chosen_for_the_commands_that_run_the_networks(session, tmp_path):
    from styleprefs.session import Session
    s = session["session"]
    assert Session.open(s, "cpu", "fp32").runtime.bf16 is False
    make_photo(tmp_path / "in" / "p.png", seed=3)
    run("apply", tmp_path / "in", "--out", tmp_path / "fp32", "--precision", "fp32", "--device", "cpu", "--session", s)
    Session.open(s, "cpu", "fp32").apply([tmp_path / "in"], tmp_path / "python")
    assert (tmp_path / "fp32" / "p.png").read_bytes() == (tmp_path / "python" / "p.png").read_bytes()
    bad = run("apply", tmp_path / "in", "--out", tmp_path / "o", "--precision", "fp16", "--session", s, expect=2)
    assert "unknown precision 'fp16'" in bad.output and len(bad.output.strip().splitlines()) == 1
    for command in (["propose", "--n", 1, "--size", 48], ["refine", "--undo"], ["init", "--resume"]):
        assert "--precision" in run(*command[:1], "--help").output


def test_an_unexpected_error_is_one_line_unless_the_traceback_is_asked_for(session, tmp_path, monkeypatch):
    from styleprefs.session import Session

    def broken(self, *args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
    monkeypatch.setattr(Session, "propose", broken)
    result = run("propose", "--session", session["session"], expect=1)
    assert result.output.strip().splitlines() == [
        "error: CUDA out of memory. Tried to allocate 2.00 GiB (RuntimeError; --debug or STYLEPREFS_DEBUG=1 shows "
        "where)"]
    for shown in (["--debug"], []):
        if not shown:
            monkeypatch.setenv("STYLEPREFS_DEBUG", "1")
        traced = runner.invoke(app, ["propose", "--session", str(session["session"]), *shown])
        assert isinstance(traced.exception, RuntimeError)  # raised, so Python prints where


def test_init_resume_refuses_other_steps_paintings_photos_or_size(tmp_path, painting):
    import signal

    from styleprefs.checkpoints import Interrupted
    from styleprefs.config import TrainSettings
    from styleprefs.session import Session
    photo = make_photo(tmp_path / "p.png", seed=1)

    def stop(progress):
        if progress.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(Interrupted):
        Session.init(tmp_path / "s", [painting], [photo], TrainSettings(steps=3, size=48, batch=2,
                     checkpoint_seconds=0.0), device="cpu", on_progress=stop)
    other = Path(__file__).resolve().parents[1] / "examples" / "paintings" / "vangogh_cafe_terrace_at_night.jpg"
    for args, said in ((["--steps", 5], "trains 3 steps, not 5"), (["--style", other], "other paintings"),
                       (["--content", photo], "--content and --crop cannot"), (["--size", 64], "cannot change")):
        result = run("init", "--resume", *args, "--device", "cpu", "--session", tmp_path / "s", expect=2)
        assert said in result.output, result.output
    done = run_json("init", "--resume", "--steps", 3, "--style", painting, "--device", "cpu", "--session",
                    tmp_path / "s")
    assert done["steps"] == 3


def test_propose_reports_each_candidate(session):
    from styleprefs.session import Session
    seen = []
    Session.open(session["session"], "cpu").propose(n=3, size=48, on_progress=lambda k, n: seen.append((k, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_the_quickstart_never_replaces_a_session_it_did_not_make(tmp_path):
    """It runs `init --force` on its own folder: someone's session there (or anything else) stops it, untouched,
    before it installs anything."""
    script = Path(__file__).resolve().parents[1] / "examples" / "quickstart.sh"
    (tmp_path / "examples").mkdir()
    shutil.copy(script, tmp_path / "examples" / "quickstart.sh")
    theirs = tmp_path / "quickstart-session"
    theirs.mkdir()
    (theirs / "state.json").write_text("{}")
    proc = subprocess.run(["bash", str(tmp_path / "examples" / "quickstart.sh")], capture_output=True, text=True)
    assert proc.returncode == 2 and "was not made by this script" in proc.stderr
    assert [p.name for p in theirs.iterdir()] == ["state.json"] and not (tmp_path / ".venv").exists()
