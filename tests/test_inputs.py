"""A session is self-contained: copied elsewhere with the original photos gone, it refines, proposes and applies."""

import json
import shutil

import pytest
import torch

from styleprefs import inputs
from styleprefs.config import TrainSettings
from styleprefs.session import Session
from tests.conftest import make_photo, record_files

TINY = TrainSettings(steps=2, size=48, batch=2, refine_steps=1)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A session with one refined round, and its inputs in their own folder."""
    root = tmp_path_factory.mktemp("inputs")
    photos = [make_photo(root / "photos" / f"p{i}.png", seed=i, size=(120, 90)) for i in range(2)]
    painting = make_photo(root / "paintings" / "painting.png", seed=4, size=(80, 80))
    Session.init(root / "s", [painting], photos, TINY, device="cpu", seed=5)
    Session.open(root / "s", "cpu").propose(n=4, size=48)  # it takes the lock itself
    with Session.editing(root / "s", "cpu") as s:
        s.select([2, 3])
        s.refine(steps=1)
    return root


def moved(made, tmp_path):
    """The session copied to another place."""
    folder = tmp_path / "elsewhere" / "session"
    shutil.copytree(made / "s", folder)
    return folder


def test_the_kept_inputs_are_what_init_trained_on(made):
    s = Session.open(made / "s", "cpu")
    paths = [made / "photos" / "p0.png", made / "photos" / "p1.png"]
    contents, styles = inputs.decode(paths, [made / "paintings" / "painting.png"], s.settings)
    kept_contents, kept_styles = inputs.load(s.store, s.config)
    assert all(torch.equal(a, b) for a, b in zip(contents + styles, kept_contents + kept_styles, strict=True))
    assert inputs.default_preview(s.store) == s.store.path("preview.png")
    assert all(not e["preview"].startswith("/") for e in s.state["rounds"])  # each round keeps its photo


def test_a_session_moved_to_another_machine_refines_proposes_and_applies(made, tmp_path):
    folder = moved(made, tmp_path)
    # The recorded paths lead nowhere, as on a machine where the photos never were.
    config = json.loads((folder / "config.json").read_text())
    for item in config["contents"] + config["styles"]:
        item["path"] = str(tmp_path / "nowhere" / "gone.png")
    (folder / "config.json").write_text(json.dumps(config))
    record_files(folder)  # the edit above is ours, not damage
    Session.open(folder, "cpu").propose(n=3, size=48)
    with Session.editing(folder, "cpu") as s:
        s.select([1])
        s.refine(steps=1)
    out = tmp_path / "styled"
    photo = make_photo(tmp_path / "new" / "holiday.png", seed=9)
    s = Session.open(folder, "cpu")
    assert s.apply([photo], out).outputs and s.apply([photo], tmp_path / "picked", pick="2:1").outputs
    assert s.state["refines"][-1]["steps"] == 1 and len(s.state["rounds"]) == 2
