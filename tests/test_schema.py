"""A session handed to you cannot touch files outside it, and a damaged one fails with one line naming the file."""

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from styleprefs.cli import app
from styleprefs.config import TrainSettings
from styleprefs.session import Session
from tests.conftest import make_photo, record_files

TINY = TrainSettings(steps=2, size=48, batch=2, refine_steps=1)


@pytest.fixture(scope="module")
def proposed(tmp_path_factory):
    """A session with one round of 4 candidates, not yet selected."""
    root = tmp_path_factory.mktemp("schema")
    photo = make_photo(root / "photo.png", seed=3)
    painting = make_photo(root / "painting.png", seed=4, size=(80, 80))
    s = Session.init(root / "s", [painting], [photo], TINY, device="cpu", seed=5)
    s.propose(n=4, size=48)
    return root / "s"


def handed(proposed, tmp_path, edit) -> tuple:
    """A copy of the session as someone might hand it over, with ``edit(state)`` applied to its state.json."""
    folder = tmp_path / "handed"
    shutil.copytree(proposed, folder)
    state = json.loads((folder / "state.json").read_text())
    edit(state)
    (folder / "state.json").write_text(json.dumps(state))
    return folder, CliRunner().invoke(app, ["select", "1", "2", "--session", str(folder)])


def one_line_naming_state(result) -> str:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    message = result.output.strip()
    assert "\n" not in message and "state.json" in message and "damaged" in message, message
    return message


@pytest.mark.parametrize("folder", ["../../outside", "/tmp/outside", "rounds/../../outside", ""])
def test_a_round_folder_outside_the_session_is_refused_and_nothing_is_written_there(proposed, tmp_path, folder):
    target = tmp_path / "outside"
    target.mkdir()
    (target / "candidate-01.png").write_bytes(b"keep me")

    def edit(state):
        state["rounds"][0]["folder"] = folder if folder != "/tmp/outside" else str(target)

    _, result = handed(proposed, tmp_path, edit)
    assert "inside the session" in one_line_naming_state(result)
    assert sorted(p.name for p in target.iterdir()) == ["candidate-01.png"]  # no grams, no selection written
    assert (target / "candidate-01.png").read_bytes() == b"keep me"


def test_a_candidate_name_that_climbs_out_is_refused(proposed, tmp_path):
    def edit(state):
        state["rounds"][0]["candidates"][0] = "../../../photo.png"

    _, result = handed(proposed, tmp_path, edit)
    assert "candidate" in one_line_naming_state(result)


def test_a_round_folder_that_is_a_link_out_of_the_session_is_refused(proposed, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(proposed / "rounds" / "001", outside)
    folder, _ = handed(proposed, tmp_path, lambda state: None)
    shutil.rmtree(folder / "rounds" / "001")
    os.symlink(outside, folder / "rounds" / "001")
    result = CliRunner().invoke(app, ["select", "1", "2", "--session", str(folder)])
    assert "leads outside the session" in one_line_naming_state(result)
    assert not (outside / "selection.json").exists() and not (outside / "chosen_grams.safetensors").exists()


@pytest.mark.parametrize("edit, what", [
    (lambda s: s["rounds"][0].pop("candidates"), "no round 1's 'candidates'"),
    (lambda s: s["rounds"][0].update(n="4"), "round 1's 'n' has the wrong type"),
    (lambda s: s["rounds"][0].update(n=5), "lists 4 candidates"),
    (lambda s: s["rounds"][0].update(selection=[9]), "'selection'"),
    (lambda s: s["rounds"][0].update(polish_steps=0), "round 1's 'polish_steps'"),
    (lambda s: s["rounds"][0].update(polish_steps="40"), "round 1's 'polish_steps' has the wrong type"),
    (lambda s: s.update(rounds={"1": {}}), "'rounds' has the wrong type"),
    (lambda s: s.update(checkpoint="../../x"), "'checkpoint'"),
    (lambda s: s["steps"].pop("init"), "no 'steps'.'init'"),
    (lambda s: s.update(training={"phase": "x", "steps": 1}), "'training'.'phase'"),
    (lambda s: s.update(refines=[{"checkpoint": "checkpoints/001", "rounds": [7], "steps": 1}]), "refine 1's"),
])
def test_a_wrong_type_or_a_missing_key_is_one_line_naming_the_file(proposed, tmp_path, edit, what):
    _, result = handed(proposed, tmp_path, edit)
    assert what in one_line_naming_state(result)


def test_status_of_a_damaged_state_is_one_line_too(proposed, tmp_path):
    folder, _ = handed(proposed, tmp_path, lambda s: s["rounds"][0].pop("folder"))
    result = CliRunner().invoke(app, ["status", "--session", str(folder)])
    assert "no round 1's 'folder'" in one_line_naming_state(result)


def test_an_untouched_session_passes_the_checks(proposed, tmp_path):
    folder, result = handed(proposed, tmp_path, lambda state: None)
    assert result.exit_code == 0, result.output
    assert Session.open(folder, "cpu").state["rounds"][0]["selection"] == [1, 2]


@pytest.mark.parametrize("key, value", [("n", 0), ("size", 10**6), ("working_side", 1)])
def test_a_damaged_proposal_setting_is_named_as_damage_not_as_an_option_the_user_typed(proposed, tmp_path, key,
                                                                                       value):
    folder = tmp_path / "handed"
    shutil.copytree(proposed, folder)
    config = json.loads((folder / "config.json").read_text())
    config["proposal_settings"][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    record_files(folder)
    result = CliRunner().invoke(app, ["propose", "--session", str(folder)])
    assert result.exit_code != 0
    assert "config.json: damaged" in result.output and f"'{key}'" in result.output
    assert "(--" not in result.output
