"""A session an older styleprefs wrote is upgraded once, when it is opened, and gives the pictures it gave.

The version-1 session in fixtures/v1 was made by the code of schema 1 (fixtures/v1/make.py): two rounds with picks
and a refine after each, then stripped of what older version-1 sessions lacked. Beside it, what that code gave
applying it to one photo, in fp32.
"""

import errno
import json
import os
import shutil
import tarfile
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from styleprefs import images, migrate
from styleprefs.cli import app
from styleprefs.preference import Posterior
from styleprefs.session import Session
from styleprefs.store import SessionError, Store
from tests.conftest import EXAMPLES, assert_equal_up_to_rounding, record_files

FIXTURE = Path(__file__).parent / "fixtures" / "v1"
APPLIED_TO = EXAMPLES / "photos" / "skimage_camera_gray.png"
APPLIED = {None: "applied.png", "1:3": "applied-1-3.png"}  # apply's look (the learned one, or a pick) → its output
FOUR_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]


def version_1(tmp_path):
    """A copy of the version-1 session, its recorded photo and painting paths leading to examples/ here."""
    with tarfile.open(FIXTURE / "session.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    root = tmp_path / "session"
    recorded = json.loads((root / "config.json").read_text())["contents"][0]["path"]
    old = recorded[: -len("/photos/mpl_grace_hopper.jpg")]
    for name in ("config.json", "state.json", "checkpoints/001/state_before.json"):
        (root / name).write_text((root / name).read_text().replace(old, str(EXAMPLES)))
    return root


def files(root):
    """Every file of a session folder, name → bytes (the lock file aside)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def applied(session, pick, out):
    result = session.apply([APPLIED_TO], out, size=64, pick=pick)
    return images.load_image_with_alpha(result.outputs[0], as_bytes=True)[0]


def assert_gives_what_version_1_gave(root, tmp_path):
    session = Session.open(root, "cpu", precision="fp32")
    for pick, name in APPLIED.items():
        expected = images.load_image_with_alpha(FIXTURE / name, as_bytes=True)[0]
        assert_equal_up_to_rounding(applied(session, pick, tmp_path / f"out-{name}"), expected, bf16=False)


def upgrades(root):
    return [e for e in json.loads((root / "history.json").read_text())["events"] if e["command"] == "upgrade"]


def test_a_version_1_session_is_upgraded_once_and_gives_the_pictures_it_gave(tmp_path):
    root = version_1(tmp_path)
    s = Session.open(root, "cpu", precision="fp32")
    config, state = s.config, s.state
    assert config["schema_version"] == 3 and config["z_names"] == ["stroke", "strength", "colour", "scale"]
    assert config["proposal_settings"]["working_side"] == 320  # what rounds without their own were shown at
    assert config["settings"]["start"] == "scratch" and config["settings"]["colour_centre"] == 0.0
    assert [r["working_side"] for r in state["rounds"]] == [320, 32]
    # The photo each sheet showed, now kept in the round; looks with the dial at scale 1, learnt from as the pictures
    # the sheet showed (their renders are not reproducible: no checkpoint to render them from).
    assert [r["preview"] for r in state["rounds"]] == ["rounds/001/preview.jpg", "rounds/002/preview.jpg"]
    assert (root / "rounds/001/preview.jpg").read_bytes() == (EXAMPLES / "photos/mpl_grace_hopper.jpg").read_bytes()
    assert [r["checkpoint"] for r in state["rounds"]] == [None, None]
    for r in s.rounds():
        assert r.z.shape == (4, 4) and torch.equal(r.z[:, 3], torch.zeros(4))
    assert [s.split(look)[1] for look in s.rounds()[0].z] == [1.0] * 4
    assert state["refines"][0]["fine_tuning_kept"] is True and state["training"] is None
    assert (root / "rounds/001/picks-1-3/chosen_grams.safetensors").is_file()
    assert not any((root / "rounds/001" / name).exists() for name in ("selection.json", "passed_grams.safetensors"))
    assert json.loads((root / "rounds/001/picks-1-3/selection.json").read_text())["looks"] == {}
    for name in ("inputs.safetensors", "preview.png", "rounds/001/index.html", "checkpoints/002/state_before.json",
                 *(f"checkpoints/{k:03d}/preference.safetensors" for k in range(3))):
        assert (root / name).is_file(), name
    assert s.store.damage(state["files"]) == [] and set(files(root)) - set(state["files"]) == {"state.json",
                                                                                                "history.json"}
    posterior = s.preference()
    assert posterior.picks == 3 and posterior.dim == 4 and float(posterior.mean[3]) == float(posterior.mean[7]) == 0.0

    # Opened again, it is not upgraded again: nothing is written.
    before = files(root)
    assert not migrate.upgrade(Store(root))
    Session.open(root, "cpu")
    assert files(root) == before and len(upgrades(root)) == 1 and not (root / migrate.STAGING).exists()
    assert_gives_what_version_1_gave(root, tmp_path)
    status = s.status()
    assert status["taste"]["picks"] == 3 and status["damaged"] == []
    assert all(row["refine"]["taste"] for row in s.history())


def test_undo_after_the_upgrade_restores_each_state_a_refine_started_from(tmp_path):
    root = version_1(tmp_path)
    with Session.editing(root, "cpu") as s:  # refine 2's state before it: rebuilt, as undo rebuilt it
        assert s.undo() == {"undone": "checkpoints/002", "checkpoint": "checkpoints/001", "rounds": 2}
        assert s.state["steps"]["refine"] == 1 and s.preference().picks == 2
        assert s.state["rounds"][1]["selection"] == [2]
    with Session.editing(root, "cpu") as s:  # refine 1's: as saved
        assert s.undo() == {"undone": "checkpoints/001", "checkpoint": "checkpoints/000", "rounds": 1}
        assert s.state["steps"]["refine"] == 0 and s.state["rounds"][0]["working_side"] == 320
        assert s.preference().picks == 0 and torch.equal(s.preferred_z(), torch.zeros(4))
        assert s.store.damage(s.state["files"]) == []


def test_the_choice_model_gains_the_dial_as_its_prior():
    fitted = Posterior(torch.arange(6, dtype=torch.float64), torch.eye(6, dtype=torch.float64) * 0.5, 3, 2)
    grown = migrate.with_dial(fitted)
    assert grown.dim == 4 and grown.picks == 2
    assert grown.mean.tolist() == [0, 1, 2, 0, 3, 4, 5, 0]
    assert torch.equal(grown.cov.diagonal(), torch.tensor([0.5, 0.5, 0.5, 4, 0.5, 0.5, 0.5, 4], dtype=torch.float64))
    assert torch.equal(grown.best_z()[:3], fitted.best_z()) and float(grown.best_z()[3]) == 0.0  # scale 1
    assert torch.equal(migrate.with_dial(Posterior.prior(3)).cov, Posterior.prior(4).cov)


@pytest.mark.parametrize("where", ["staging", "moving in"])
def test_an_interrupted_upgrade_is_finished_by_the_next_open(tmp_path, monkeypatch, where):
    root = version_1(tmp_path)
    before = files(root)
    if where == "staging":
        def fail(store, name, data):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Store, "write_json", fail)  # midway: after the kept inputs and round 1's looks
    else:
        replace, moved = migrate.os.replace, []

        def fail(source, target):
            if f"/{migrate.STAGING}/" in str(source) and not Path(source).name.startswith("."):  # a move, not a write
                moved.append(target)
                if len(moved) == 5:
                    raise KeyboardInterrupt  # as Ctrl-C would, midway
            replace(source, target)

        monkeypatch.setattr(migrate.os, "replace", fail)
    with pytest.raises((SessionError, KeyboardInterrupt)) as stopped:
        Session.open(root, "cpu")
    monkeypatch.undo()
    if where == "staging":  # nothing moved yet: the version-1 session as it was
        assert "\n" not in str(stopped.value) and "tries again" in str(stopped.value)
        assert files(root) == before and not (root / migrate.STAGING).exists()
    else:
        assert json.loads((root / "config.json").read_text())["schema_version"] == 1
    assert_gives_what_version_1_gave(root, tmp_path)
    assert len(upgrades(root)) == 1 and not (root / migrate.STAGING).exists()


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])  # a read-only folder, a read-only file system
def test_an_older_session_that_cannot_be_written_is_refused_in_one_line_that_says_how_to_use_it(tmp_path, monkeypatch,
                                                                                            code):
    root = version_1(tmp_path)
    before = files(root)

    def unwritable(store, timeout=30.0):
        raise PermissionError(code, os.strerror(code))

    monkeypatch.setattr(Store, "lock", unwritable)
    result = CliRunner().invoke(app, ["status", "--session", str(root)])
    assert result.exit_code != 0 and "open it once where it can be, or copy it" in result.output
    assert "tries again" not in result.output and len(result.output.strip().splitlines()) == 1
    assert files(root) == before


@pytest.mark.parametrize("change, words", [("delete", "gone since init"), ("edit", "changed since init")])
def test_a_session_whose_recorded_photo_went_is_refused_in_one_line_and_left_as_it_was(tmp_path, change, words):
    root = version_1(tmp_path)
    photo = tmp_path / "photos" / "mpl_grace_hopper.jpg"
    photo.parent.mkdir()
    if change == "edit":
        photo.write_bytes((EXAMPLES / "photos" / "mpl_grace_hopper.jpg").read_bytes()[:-1])
    config = root / "config.json"
    config.write_text(config.read_text().replace(str(EXAMPLES / "photos" / photo.name), str(photo)))
    before = files(root)
    result = CliRunner().invoke(app, ["status", "--session", str(root)])
    assert result.exit_code == 1
    message = result.output.strip()
    assert "\n" not in message and words in message and str(photo) in message, message
    assert files(root) == before and not (root / migrate.STAGING).exists() and not upgrades(root)


def test_two_commands_opening_it_at_once_upgrade_it_once(tmp_path):
    root = version_1(tmp_path)
    opened = []
    threads = [threading.Thread(target=lambda: opened.append(Session.open(root, "cpu"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 2 and len(upgrades(root)) == 1
    assert all(s.config["schema_version"] == 3 and s.store.damage(s.state["files"]) == [] for s in opened)


def made_version_1(proposed_session, tmp_path, edit):
    """A copy of a session made now, turned into a version-1 one by ``edit`` of its config."""
    root = tmp_path / "s"
    shutil.copytree(proposed_session, root)
    config = json.loads((root / "config.json").read_text())
    edit(config)
    (root / "config.json").write_text(json.dumps({**config, "schema_version": 1}))
    record_files(root)
    return root


def test_settings_saved_before_a_key_existed_get_the_value_they_were_made_with(proposed_session, tmp_path):
    def older(config):
        for key in ("style_layers", "start", "colour_centre"):
            del config["settings"][key]
        del config["proposal_settings"]
        for item in config["contents"] + config["styles"]:  # on another machine: its own copy is all it reads
            item["path"] = str(tmp_path / "nowhere" / "gone.png")

    s = Session.open(made_version_1(proposed_session, tmp_path, older), "cpu")
    assert s.settings.style_layers == tuple(FOUR_LAYERS) and s.settings.start == "scratch"
    assert s.settings.colour_centre == 0.0 and s.proposal_settings.working_side == 320
    assert {k: s.config["settings"][k] for k in ("style_layers", "start", "colour_centre")} == {
        "style_layers": FOUR_LAYERS, "start": "scratch", "colour_centre": 0.0}
    photo = torch.rand(3, 40, 40)
    assert torch.equal(s.stylise(photo), Session.open(proposed_session, "cpu").stylise(photo))


@pytest.mark.parametrize("version, words", [(4, "newer than this styleprefs"), (0, "not one styleprefs has written"),
                                            (True, "not one styleprefs has written"),
                                            ("1", "not one styleprefs has written")])
def test_other_versions_are_refused_in_one_line(proposed_session, tmp_path, version, words):
    root = tmp_path / "s"
    shutil.copytree(proposed_session, root)
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**config, "schema_version": version}))
    before = files(root)
    with pytest.raises(SessionError, match=words) as refused:
        Session.open(root, "cpu")
    assert "\n" not in str(refused.value) and files(root) == before


@pytest.mark.parametrize("what, words", [
    ("names", "'z_names' does not fit 1 painting"),
    ("damage", "damaged session files: rounds/001/candidate-02.png (missing)")])
def test_a_version_1_session_that_cannot_be_read_is_refused_in_one_line_and_left_as_it_was(proposed_session, tmp_path,
                                                                                            what, words):
    def edit(config):
        if what == "names":
            config["z_names"] = ["stroke", "blend1"]

    root = made_version_1(proposed_session, tmp_path, edit)
    if what == "damage":
        (root / "rounds/001/candidate-02.png").unlink()
    before = files(root)
    with pytest.raises(SessionError, match=words.replace("(", r"\(").replace(")", r"\)")) as refused:
        Session.open(root, "cpu")
    assert "\n" not in str(refused.value) and files(root) == before and not (root / migrate.STAGING).exists()


def test_a_version_2_session_is_upgraded_to_say_it_was_trained_inside_zero_padding(proposed_session, tmp_path):
    """Version 3 records how training saw edges; a version-2 session was trained inside VGG19's zero padding, and
    refining it must go on seeing it so, not as new sessions see theirs."""
    root = tmp_path / "s"
    shutil.copytree(proposed_session, root)
    config = json.loads((root / "config.json").read_text())
    del config["settings"]["edges"]
    (root / "config.json").write_text(json.dumps({**config, "schema_version": 2}))
    record_files(root)
    s = Session.open(root, "cpu")
    assert s.config["schema_version"] == 3 and s.settings.edges == "zero"
    assert s.store.damage(s.state["files"]) == []
    photo = torch.rand(3, 40, 40)
    assert torch.equal(s.stylise(photo), Session.open(proposed_session, "cpu").stylise(photo))
    before = files(root)
    Session.open(root, "cpu")
    assert files(root) == before  # upgraded once
    assert Session.open(proposed_session, "cpu").settings.edges == "mirror"  # what a new session trains with


def test_an_upgrade_to_version_2_left_half_done_by_an_older_styleprefs_goes_on_to_version_3(proposed_session,
                                                                                             tmp_path):
    """An older styleprefs staged a version-1 session's upgrade to version 2 and was stopped: its staged config says
    version 2, without `edges`. Moved in as it is, the session goes on to version 3 in the same open, trained inside
    zero padding as it was."""
    root = tmp_path / "s"
    shutil.copytree(proposed_session, root)
    config = json.loads((root / "config.json").read_text())
    del config["settings"]["edges"]
    staged = root / migrate.STAGING
    staged.mkdir()
    (staged / "state.json").write_text((root / "state.json").read_text())
    (staged / "config.json").write_text(json.dumps({**config, "schema_version": 2}))
    (root / "config.json").write_text(json.dumps({**config, "schema_version": 1}))
    record_files(root)
    s = Session.open(root, "cpu")
    assert s.config["schema_version"] == 3 and s.settings.edges == "zero"
    assert not staged.exists() and len(upgrades(root)) == 1 and s.store.damage(s.state["files"]) == []
