"""Every look a stylisation: the guard, on a real session (pretrained start, a short init) and the real VGG19."""

import shutil

import pytest
import torch

from styleprefs import images
from styleprefs.config import TrainSettings
from styleprefs.guard import STYLISED, Guard, fraction_of
from styleprefs.session import Session
from tests.conftest import EXAMPLES

PAINTING = EXAMPLES / "paintings" / "vangogh_starry_night.jpg"
CAT, COFFEE = EXAMPLES / "photos" / "skimage_chelsea_cat.png", EXAMPLES / "photos" / "skimage_coffee.png"

SHORT = TrainSettings(steps=12, size=48, batch=2, refine_steps=1)  # enough for z = 0 to be a stylisation
WEAKEST = [2.5, -2.5, 2.5]  # largest strokes, least strength, the photo's own colours


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    session = Session.init(root / "s", [PAINTING], [CAT, COFFEE], SHORT, device="cpu", seed=5)
    return root, session, CAT


def guard_for(session: Session, photo: torch.Tensor) -> Guard:
    return session.looks().guard(photo)


def test_the_photo_is_its_own_yardstick_and_the_painting_is_near_zero(made):
    _, session, cat = made
    photo = images.load_image(cat, max_side=256)
    guard = guard_for(session, photo)
    assert guard.ratio(photo) == pytest.approx(1.0)
    assert guard.ratio(images.load_image(PAINTING, max_side=256)) < 0.3


def test_a_weak_look_moves_toward_the_centre_until_it_is_a_stylisation(made):
    _, session, cat = made
    photo = images.load_image(cat, max_side=736)
    guard = guard_for(session, images.shrink(photo, 256))

    def render(look):
        return session.preview(photo, look, 256, 320)

    weak = torch.tensor([*WEAKEST, 2.5])
    assert guard.ratio(render(weak)) > STYLISED  # the corner is a tinted photo, without the guard
    moved, picture = guard.stylised(weak, render)
    assert guard.ratio(picture) <= STYLISED
    assert torch.equal(picture, render(moved))  # the picture is the look's own
    fraction = float(moved[0] / weak[0])
    assert 0.0 <= fraction < 1.0 and torch.allclose(moved, fraction * weak)  # toward the centre, the default look

    fine = torch.tensor([-1.0, 1.0, -0.5, 0.0])
    kept, _ = guard.stylised(fine, render)
    assert torch.equal(kept, fine)


@pytest.mark.slow
def test_a_user_who_picks_the_subtlest_gets_stylisations_not_tinted_photos(made):
    root, session, cat = made
    folder = root / "subtle"
    shutil.copytree(session.store.root, folder)
    s = Session.open(folder, "cpu")
    first = s.propose(n=16, size=256, preview=cat)
    photo = images.load_image(cat, max_side=256)
    guard = guard_for(s, photo)
    ratios = [guard.ratio(images.load_image(c)) for c in first.candidates]
    assert max(ratios) <= STYLISED + 0.02  # as saved: 8-bit PNGs
    subtlest = sorted(range(16), key=lambda i: -ratios[i])[:3]
    s.select([i + 1 for i in subtlest])
    s.refine(steps=0)

    best = s.preference().best_z()
    big = images.load_image(cat, max_side=736)
    assert guard.ratio(s.preview(big, best, 256, 320)) > STYLISED  # what the choice model alone would apply
    preferred = s.preferred_z()
    assert guard.ratio(s.preview(big, preferred, 256, 320)) <= STYLISED
    # apply starts from a look the user picked (the one the choice model rates highest), not the model's
    # extrapolation: the look it applies is one of the picks, or one moved part of the way toward the centre (not all
    # of it: every look's move to the centre is the same, and says nothing of where it started)
    assert any(fraction_of(first.z[i], preferred) for i in subtlest)
    again = s.propose(n=8, size=256, preview=cat)
    assert all(guard.ratio(images.load_image(c)) <= STYLISED + 0.02 for c in again.candidates)


def test_when_no_look_passes_a_candidate_stays_and_the_applied_look_is_the_nearest_the_painting(made, monkeypatch):
    _, session, cat = made
    photo = images.load_image(cat, max_side=736)
    guard = guard_for(session, images.shrink(photo, 256))
    rendered = {}

    def render(look):
        rendered[tuple(look.tolist())] = picture = session.preview(photo, look, 256, 320)
        return picture

    monkeypatch.setattr("styleprefs.guard.STYLISED", 0.05)  # a bar no picture of this generator clears
    weak = torch.tensor([*WEAKEST, 2.5])
    kept, _ = guard.stylised(weak, render)
    assert torch.equal(kept, weak)
    chosen, picture = guard.stylised(weak, render, or_nearest=True)
    ratios = {key: guard.ratio(p) for key, p in rendered.items()}
    assert len(ratios) == 5  # the look and its four moves toward the centre, each rendered
    assert tuple(chosen.tolist()) == min(ratios, key=ratios.get)
    assert torch.equal(picture, rendered[tuple(chosen.tolist())])


@pytest.mark.parametrize("bar, stylised", [(STYLISED, True), (0.05, False)])
def test_refine_keeps_its_fine_tuning_only_while_the_learned_look_is_a_stylisation_nearer_the_picks(
        made, tmp_path, monkeypatch, bar, stylised):
    from safetensors.torch import load_file
    root, session, cat = made
    folder = tmp_path / "s"
    shutil.copytree(session.store.root, folder)
    Session.open(folder, "cpu").propose(n=4, size=256, preview=cat)
    monkeypatch.setattr("styleprefs.refining.STYLISED", bar)  # 0.05: a bar no picture of this generator clears
    monkeypatch.setattr("styleprefs.guard.STYLISED", bar)
    with Session.editing(folder, "cpu") as s:
        s.select([1, 2])
        refine = s.refine(steps=2)
    # What apply gives, before and after the fine-tuning, measured against the target the picks set.
    distance = refine["distance_to_target"]
    assert set(distance) == {"before", "after"} and distance["before"] != distance["after"]
    kept = stylised and distance["after"] < distance["before"]
    assert refine["fine_tuning_kept"] is kept
    before, after = (load_file(folder / c / "generator.safetensors") for c in ("checkpoints/000", "checkpoints/001"))
    assert all(torch.equal(before[k], after[k]) for k in before) is not kept


@pytest.mark.slow
def test_the_verdict_on_apply_s_look_is_remembered_for_the_next_process_and_never_trusted_blindly(
        made, tmp_path, monkeypatch):
    import json

    from styleprefs import guard
    monkeypatch.setenv("STYLEPREFS_CACHE", str(tmp_path / "cache"))
    _, session, cat = made
    folder = tmp_path / "s"
    shutil.copytree(session.store.root, folder)
    Session.open(folder, "cpu").propose(n=2, size=256, preview=cat)
    weak = torch.tensor([*WEAKEST, 2.5])  # fails as it is: the guard moves it toward the centre
    judged = Session.open(folder, "cpu").stylised(weak, remember=False)  # judged, and nothing kept
    assert not torch.equal(judged, weak)
    built = []  # the guard's judgements (each a loss network and VGG passes)
    real = guard.Guard.stylised
    monkeypatch.setattr(guard.Guard, "stylised", lambda self, *a, **k: built.append(1) or real(self, *a, **k))

    def judge_in_a_new_process(where=folder) -> torch.Tensor:
        built.clear()
        return Session.open(where, "cpu").stylised(weak)

    assert not (tmp_path / "cache" / "verdicts").exists() or not any((tmp_path / "cache" / "verdicts").iterdir())
    files_before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    assert torch.equal(judge_in_a_new_process(), judged) and built  # judged, then remembered
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == files_before  # not in the session
    [verdict] = (tmp_path / "cache" / "verdicts").iterdir()
    entry = json.loads(verdict.read_text())
    assert entry["fraction"] == float(judged[0] / weak[0]) < 1
    assert torch.equal(judge_in_a_new_process(), judged) and not built  # the next process does not judge again
    shutil.copytree(folder, tmp_path / "copy")
    assert torch.equal(judge_in_a_new_process(tmp_path / "copy"), judged) and not built  # nor does a copy

    # A remembered fraction that is not one of the guard's options, or garbage, is ignored: judged afresh.
    for text in (json.dumps({**entry, "fraction": 0.3}), json.dumps({**entry, "fraction": "1"}),
                 json.dumps({**entry, "key": "another"}), "{not json", "[]"):
        verdict.write_text(text)
        assert torch.equal(judge_in_a_new_process(), judged) and built, text
    # A new round on another photo is judged there, not given the old photo's verdict; so is another generator.
    Session.open(folder, "cpu").propose(n=2, size=256, preview=COFFEE)
    judge_in_a_new_process()
    assert built and len(list(verdict.parent.iterdir())) == 2
    generators = [folder / "checkpoints/000/generator.safetensors", folder / "style_grams.safetensors"]
    assert guard.verdict_key(weak, generators[:1], {}) != guard.verdict_key(weak, generators[1:], {})
    # An unwritable cache only means judging each time.
    monkeypatch.setenv("STYLEPREFS_CACHE", str(folder / "config.json"))  # a file, so no folder can be made there
    assert torch.equal(judge_in_a_new_process(), judge_in_a_new_process()) and built
