"""Damage is noticed when a command starts, not rounds later: the manifest in state.json (size and SHA-256 of every
session file, committed with the state), checked by every command that builds on the files, listed by status."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from styleprefs.cli import app
from styleprefs.config import TrainSettings
from styleprefs.session import Session
from tests.conftest import make_photo, record_files

TINY = TrainSettings(steps=2, size=48, batch=2, refine_steps=1)


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """A session with one round of 4 candidates, 2 of them picked."""
    root = tmp_path_factory.mktemp("damage")
    photo = make_photo(root / "photo.png", seed=3)
    painting = make_photo(root / "painting.png", seed=4, size=(80, 80))
    s = Session.init(root / "s", [painting], [photo], TINY, device="cpu", seed=5)
    s.propose(n=4, size=48)
    with Session.editing(root / "s", "cpu") as s:
        s.select([1, 3])
    return root


def copy(root, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(root / "s", folder)
    return folder


def cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def run(*args):
    return CliRunner().invoke(app, [*map(str, args)])


def test_every_command_commits_a_manifest_of_the_files_it_left(selected, tmp_path):
    folder = copy(selected, tmp_path)
    with Session.editing(folder, "cpu") as s:
        s.refine(steps=1)
    state = json.loads((folder / "state.json").read_text())
    files = state["files"]
    assert {"config.json", "style_grams.safetensors", "checkpoints/000/generator.safetensors",
            "checkpoints/001/generator.safetensors", "rounds/001/candidate-01.png",
            "rounds/001/picks-1-3/chosen_grams.safetensors", "rounds/001/picks-1-3/selection.json",
            "rounds/001/picks-1-3/passed_grams.safetensors", "inputs.safetensors", "preview.png"} <= set(files)
    assert "state.json" not in files and "history.json" not in files and ".lock" not in files
    assert Session.open(folder, "cpu").store.damage(files) == []


def test_a_halved_style_grams_stops_propose_before_it_writes_a_round(selected, tmp_path):
    folder = copy(selected, tmp_path)
    cut_in_half(folder / "style_grams.safetensors")
    result = run("propose", "--n", "2", "--size", "48", "--session", folder)
    assert result.exit_code != 0
    message = result.output.strip()
    assert "\n" not in message and "style_grams.safetensors" in message and "recorded" in message, message
    assert len(json.loads((folder / "state.json").read_text())["rounds"]) == 1
    assert sorted(p.name for p in (folder / "rounds").iterdir()) == ["001"]


@pytest.mark.parametrize("command", [["select", "2"], ["refine", "--steps", "1"], ["refine", "--undo"]])
def test_a_command_that_changes_the_session_checks_every_file_first(selected, tmp_path, command):
    folder = copy(selected, tmp_path)
    (folder / "rounds" / "001" / "candidate-04.png").write_bytes(b"not a png any more")
    before = (folder / "state.json").read_text()
    result = run(*command, "--session", folder)
    assert result.exit_code != 0 and "candidate-04.png (" in result.output, result.output
    assert (folder / "state.json").read_text() == before


def test_apply_checks_what_it_reads_and_not_an_old_round(selected, tmp_path):
    folder = copy(selected, tmp_path)
    photo = make_photo(tmp_path / "in" / "p.png", seed=9)
    (folder / "rounds" / "001" / "sheet.png").unlink()  # not read by apply
    ok = run("apply", photo.parent, "--out", tmp_path / "out", "--session", folder)
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out" / "p.png").exists()
    cut_in_half(folder / "checkpoints" / "000" / "generator.safetensors")
    bad = run("apply", photo.parent, "--out", tmp_path / "out2", "--session", folder)
    assert bad.exit_code != 0 and "checkpoints/000/generator.safetensors" in bad.output, bad.output
    assert not (tmp_path / "out2" / "p.png").exists()


def test_status_lists_each_damaged_or_missing_file_by_name(selected, tmp_path):
    folder = copy(selected, tmp_path)
    cut_in_half(folder / "style_grams.safetensors")
    (folder / "rounds" / "001" / "candidate-02.png").unlink()
    result = run("status", "--json", "--session", folder)
    assert result.exit_code == 0, result.output
    damaged = json.loads(result.stdout)["damaged"]
    assert len(damaged) == 2
    assert any(d.startswith("style_grams.safetensors (") for d in damaged)
    assert "rounds/001/candidate-02.png (missing)" in damaged
    assert json.loads(run("status", "--json", "--session", selected / "s").stdout)["damaged"] == []
    shown = run("status", "--session", folder)
    assert shown.exit_code == 0
    assert "damaged: rounds/001/candidate-02.png (missing)" in shown.output
    assert "damaged: style_grams.safetensors (" in shown.output


@pytest.mark.parametrize("name, keep", [("rounds/001/proposals.safetensors", "other"),
                                        ("checkpoints/000/preference.safetensors", "mean")])
def test_a_tensor_file_without_the_tensor_it_needs_is_one_line_naming_it(selected, tmp_path, name, keep):
    from safetensors.torch import load_file, save_file
    folder = copy(selected, tmp_path)
    tensors = load_file(folder / name)
    save_file({keep: next(iter(tensors.values()))}, folder / name)
    listed = run("status", "--json", "--session", folder)  # the manifest names it, and status goes on
    assert listed.exit_code == 0 and any(d.startswith(f"{name} (") for d in json.loads(listed.stdout)["damaged"])
    record_files(folder)  # recorded as it is now, so only reading it can tell: that must fail cleanly too
    result = run("status", "--session", folder)
    assert result.exit_code == 1, result.output
    message = result.output.strip()
    assert "\n" not in message and name in message and "damaged" in message, message


def test_history_lists_a_damaged_session_instead_of_failing_on_it(selected, tmp_path):
    """What an earlier refine had learned is read from its checkpoint: with that file gone, history still lists the
    rounds (and status names the damage)."""
    folder = copy(selected, tmp_path)
    with Session.editing(folder, "cpu") as s:
        s.refine()
    Session.open(folder, "cpu").propose(n=4, size=48)  # takes the lock itself
    with Session.editing(folder, "cpu") as s:
        s.select([2])
        s.refine()
    (folder / "checkpoints" / "001" / "preference.safetensors").unlink()
    result = run("history", "--json", "--session", folder)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rounds"]
    assert [row["round"] for row in rows] == [1, 2]
    assert rows[0]["refine"]["taste"] == "unknown: the session is damaged"
    assert "checkpoints/001/preference.safetensors (missing)" in json.loads(
        run("status", "--json", "--session", folder).stdout)["damaged"]
