"""Polish: the generator's picture finished by optimisation toward its look's own loss, on the real VGG19 and a real
generator at tiny sizes, from Python and the command line."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleprefs import controls, edges, images, losses, polish, training
from styleprefs.applying import polish_network
from styleprefs.cli import app
from styleprefs.config import MAX_POLISH_STEPS, POLISH_STEPS, POLISH_STYLE_GAIN, POLISH_STYLE_LAYERS, TrainSettings
from styleprefs.device import resolve
from styleprefs.errors import BadInput
from styleprefs.export import export
from styleprefs.session import Session
from styleprefs.training import loss_network
from tests.conftest import make_photo

runner = CliRunner()


@pytest.fixture
def folder(tmp_path):
    photos = tmp_path / "photos"
    for name, seed in (("a.png", 1), ("b.png", 2), ("c.png", 3)):
        make_photo(photos / name, seed=seed)
    return photos


def state_of(session_dir):
    return {p.relative_to(session_dir): p.read_bytes() for p in sorted(session_dir.rglob("*")) if p.is_file()}


def test_polishing_lowers_the_looks_own_loss_and_gives_a_picture(one_round):
    session = Session.open(one_round, "cpu")
    photo = images.load_image(make_photo(one_round.parent / "p.png", size=(64, 48), seed=5))[None]
    look = session.rounds()[0].z[2]
    goal = session.goal(look)
    net, rt = polish_network(session.runtime), session.runtime
    with torch.inference_mode():  # as apply's render calls it
        start = session.stylise_batch(photo, look)
        steps = []
        finished = polish.polish(net, rt, photo, start, goal, 8, on_step=lambda k, n: steps.append((k, n)))
    with torch.no_grad():
        target = net(rt.images(photo))["relu4_1"]
        before = float(polish.loss(net, rt.images(start), rt.images(photo), target, goal, rt))
        after = float(polish.loss(net, rt.images(finished), rt.images(photo), target, goal, rt))
    assert after < 0.8 * before, (before, after)
    assert finished.shape == photo.shape and torch.isfinite(finished).all()
    assert finished.min() >= 0 and finished.max() <= 1
    assert steps == [(k, 8) for k in range(1, 9)]  # one report per evaluation, no more than the budget


def test_the_objective_is_the_loss_training_gives_that_look():
    settings = TrainSettings()
    grams = {"relu1_1": torch.stack([torch.eye(64), 3 * torch.eye(64)]), "relu2_1": torch.ones(2, 128, 128)}
    z = torch.tensor([0.5, -1.0, 2.0, 1.0, -1.0])  # stroke, strength, colour, two blend coordinates
    goal = polish.objective(z, grams, settings, n_styles=2)
    weights = controls.loss_weights(z[None], 2, 2, settings.colour_centre)
    blend = weights.blend[0]
    assert torch.allclose(goal.grams["relu1_1"], (blend[0] + 3 * blend[1]) * torch.eye(64))
    trained = training.blended_targets(grams, n_styles=2)(z[None])  # what init aims this z at
    assert all(torch.allclose(goal.grams[name], trained[name][0]) for name in grams)
    assert torch.allclose(goal.layer_weights, weights.layers[0])
    assert goal.style == pytest.approx(POLISH_STYLE_GAIN * settings.style_weight * float(weights.strength[0]))
    assert goal.colour == pytest.approx(settings.colour_weight * float(weights.colour[0]))
    assert (goal.content, goal.tv) == (settings.content_weight, settings.tv_weight)
    own = polish.objective(z, {"relu1_1": torch.eye(64)}, settings, n_styles=2)  # a target of its own: as it is
    assert torch.equal(own.grams["relu1_1"], torch.eye(64))


@pytest.mark.parametrize("steps", [0, -3, MAX_POLISH_STEPS + 1, 2.5, True])
def test_unusable_step_counts_are_refused(steps):
    with pytest.raises(BadInput, match=f"polish steps must be a whole number from 1 to {MAX_POLISH_STEPS}"):
        polish.check_steps(steps)


def test_apply_polishes_every_photo_and_reports_each_step(one_round, folder, tmp_path):
    session = Session.open(one_round, "cpu")
    reports, photos = [], []
    result = session.apply([folder], tmp_path / "out", polish_steps=6, on_step=lambda k, n: reports.append((k, n)),
                           on_progress=lambda k, n, path: photos.append(path.name))
    assert sorted(p.name for p in result.outputs) == ["a.png", "b.png", "c.png"]
    assert reports == [(k, 6) for k in range(1, 7)] * 3  # exactly the budget, whatever L-BFGS's line search wants
    assert photos == ["a.png", "b.png", "c.png"]
    session.apply([folder], tmp_path / "plain")
    for name in ("a.png", "b.png", "c.png"):
        done = torch.tensor(np.asarray(Image.open(tmp_path / "out" / name)), dtype=torch.float32)
        fast = torch.tensor(np.asarray(Image.open(tmp_path / "plain" / name)), dtype=torch.float32)
        assert done.shape == fast.shape and (done - fast).abs().mean() > 0.5  # finished, not the generator's alone


def test_the_learned_look_is_polished_toward_the_personal_target(one_round):
    session = Session.open(one_round, "cpu")
    session.select([1, 2])
    with Session.editing(one_round, "cpu") as editing:
        editing.refine(steps=1)
    session = Session.open(one_round, "cpu")
    look = session.preferred_z()
    personal = session.store.read_tensors(f"{session.checkpoint}/personal_grams.safetensors")
    learned, painted = session.goal(look, learned=True), session.goal(look, learned=False)
    assert all(torch.equal(learned.grams[k], personal[k].float()) for k in personal)
    assert not torch.equal(learned.grams["relu1_1"], painted.grams["relu1_1"])


def test_an_interrupt_leaves_the_finished_photos_and_skip_existing_resumes(one_round, folder, tmp_path):
    session = Session.open(one_round, "cpu")
    out = tmp_path / "out"
    reports = []

    def stop_in_the_second_photo(k, n):
        reports.append(k)
        if len(reports) == n + 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        session.apply([folder], out, polish_steps=3, on_step=stop_in_the_second_photo)
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no partial or temporary file
    first = (out / "a.png").read_bytes()
    result = session.apply([folder], out, polish_steps=3, skip_existing=True)
    assert [p.name for p in result.existing] == ["a.png"]
    assert sorted(p.name for p in result.outputs) == ["b.png", "c.png"]
    assert (out / "a.png").read_bytes() == first
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]


def run(*args, expect=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
    return result


def test_the_command_line_polishes_with_a_default_or_a_chosen_count(one_round, folder, tmp_path, monkeypatch):
    counted = []
    real = polish.polish

    def counting(net, runtime, photo, start, goal, steps=POLISH_STEPS, on_step=None):
        counted.append(steps)  # the count asked for is recorded; one step keeps the test short
        return real(net, runtime, photo, start, goal, 1, on_step)
    monkeypatch.setattr(polish, "polish", counting)
    run("apply", folder / "a.png", "--out", tmp_path / "o1", "--polish", "--session", one_round)
    run("apply", folder / "a.png", "--out", tmp_path / "o2", "--polish-steps", 2, "--session", one_round)
    answer = json.loads(run("apply", folder, "--out", tmp_path / "o3", "--polish-steps", 2, "--shard", "1/2",
                            "--session", one_round, "--json").stdout)
    assert counted == [POLISH_STEPS, 2] + [2] * len(answer["outputs"])
    assert 1 <= len(answer["outputs"]) <= 2  # a deterministic half of three photos


@pytest.mark.parametrize("steps", ["0", "-1", "100000", "ten"])
def test_the_command_line_refuses_bad_step_counts_in_one_line_touching_nothing(one_round, folder, tmp_path, steps):
    before = state_of(one_round)
    result = run("apply", folder, "--out", tmp_path / "o", "--polish-steps", steps, "--session", one_round, expect=2)
    assert "polish" in result.output and "Traceback" not in result.output
    if steps != "ten":  # a number out of range: one line (a word is Typer's usage error, with its box)
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert state_of(one_round) == before


def test_polish_on_a_session_whose_init_was_interrupted_says_what_to_do(tmp_path, folder, painting):
    from styleprefs.checkpoints import Interrupted

    def stop(progress):
        if progress.step == 1:
            os.kill(os.getpid(), __import__("signal").SIGINT)
    with pytest.raises(Interrupted):
        Session.init(tmp_path / "s", [painting], [folder / "a.png"], TrainSettings(steps=3, size=48, batch=2,
                     checkpoint_seconds=0.0), device="cpu", on_progress=stop)
    before = state_of(tmp_path / "s")
    result = run("apply", folder, "--out", tmp_path / "o", "--polish", "--session", tmp_path / "s", expect=2)
    assert "init --resume" in result.output
    assert not (tmp_path / "o").exists() and state_of(tmp_path / "s") == before


def test_a_disk_that_fills_mid_folder_ends_in_one_line_and_leaves_no_partial_file(one_round, folder, tmp_path,
                                                                                  monkeypatch):
    import errno

    real, written = images.atomic_write, []

    def full_on_the_second(path, write):
        if written:
            def half(tmp):
                tmp.write_bytes(b"\x89PNG half")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real(path, half)
        written.append(path)
        return real(path, write)
    monkeypatch.setattr(images, "atomic_write", full_on_the_second)
    before = state_of(one_round)
    result = run("apply", folder, "--out", tmp_path / "o", "--polish-steps", 1, "--session", one_round, expect=1)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png"]
    assert state_of(one_round) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_polish_runs_on_cuda(one_round, tmp_path):
    session = Session.open(one_round, "cuda")
    photo = images.load_image(make_photo(tmp_path / "p.png", size=(64, 48), seed=5))
    look = session.rounds()[0].z[0]
    fast = session.stylise(photo, look)
    goal = session.goal(look)
    done = session.stylise_batch(photo[None], look, finish=(goal, 5, None))[0]
    assert done.device.type == "cpu" and torch.isfinite(done).all() and done.shape == fast.shape
    assert (done - fast).abs().mean() > 1e-3


def test_a_copy_is_left_untouched(one_round, tmp_path, folder):
    """Polishing only reads the session: its files are byte for byte as before."""
    before = state_of(one_round)
    Session.open(one_round, "cpu").apply([folder / "a.png"], tmp_path / "o", polish_steps=2)
    assert state_of(one_round) == before
    shutil.rmtree(tmp_path / "o")


def test_a_look_too_fine_to_polish_is_refused_before_any_photo(one_round, folder, tmp_path):
    """--stroke-scale 0.02 asks for a grid of thousands of pixels a side: polish would need gigabytes; one line, no
    output, instead."""
    result = run("apply", folder, "--out", tmp_path / "o", "--polish", "--stroke-scale", 0.02, "--session", one_round,
                 expect=2)
    assert "choose a larger stroke scale" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_polish_works_whoever_built_the_loss_network_first(one_round):
    """The loss network is cached per runtime: built first inside inference mode (as a render is), its weights could
    not take part in a backward pass, and every later polish in the process failed (in fp32: bf16 autocast casts the
    weights to new tensors, which hid it)."""
    session = Session.open(one_round, "cpu", "fp32")
    loss_network.cache_clear()
    with torch.inference_mode():
        net = polish_network(session.runtime)
    photo = images.load_image(make_photo(one_round.parent / "q.png", size=(48, 40), seed=6))[None]
    look = session.rounds()[0].z[0]
    with torch.inference_mode():
        start = session.stylise_batch(photo, look)
        done = polish.polish(net, session.runtime, photo, start, session.goal(look), 3)
    assert torch.isfinite(done).all() and done.shape == photo.shape



def test_training_shows_the_loss_network_a_picture_in_a_mirrored_frame_and_keeps_its_own_positions():
    """The loss network pads with zeros, a black frame that pushed the edge pixels into a line; training shows it
    each crop inside a mirror of itself, and keeps the features at the crop's own positions, each pixel once."""
    picture = torch.rand(1, 3, 48, 32)
    framed = edges.framed(picture)
    m = edges.MARGIN
    assert framed.shape == (1, 3, 48 + 2 * m, 32 + 2 * m)
    assert torch.equal(framed[..., m:-m, m:-m], picture)
    assert torch.equal(framed[..., m - 1, m:-m], picture[..., 1, :])  # mirrored about the edge row
    assert torch.equal(framed[..., m:-m, -m], picture[..., :, -2])
    pooled = {f"relu{n}_1": torch.nn.functional.avg_pool2d(framed, 2 ** (n - 1)) for n in range(1, 6)}
    for n, (name, x) in enumerate(edges.inside(pooled).items(), start=1):  # a position of reluN_k is 2^(N−1) px
        assert torch.equal(x, torch.nn.functional.avg_pool2d(picture, 2 ** (n - 1))), name
    tiny = torch.rand(1, 3, 5, 9)  # smaller than the margin: its edges repeated, its own positions kept
    assert torch.equal(edges.inside({"relu1_1": edges.framed(tiny)})["relu1_1"], tiny)


def test_polish_sees_a_flat_picture_as_flat_everywhere_inside_its_mirror():
    """With VGG19's zero padding beyond the 16-px mirror, relu4_1 and relu5_1 reach the zeros near the picture's edges
    (a flat picture's features there are up to 0.98 of their size away from its centre's), and optimised against
    that, polish draws a faint straight line one relu5_1 position inside the edges of a large photo's working grid.
    Padded by reflection at every convolution, a flat picture is flat to polish at every layer, its edges included."""
    runtime = resolve("cpu", "fp32")
    flat = torch.full((1, 3, 213, 320), 0.4)

    def spread(net):
        return {name: float((x - x[..., x.shape[-2] // 2, x.shape[-1] // 2][..., None, None]).abs().max()
                            / x.abs().max()) for name, x in net(flat).items()}

    assert max(spread(polish_network(runtime)).values()) < 1e-4
    assert spread(edges.Mirrored(loss_network(runtime, POLISH_STYLE_LAYERS)))["relu5_1"] > 0.5  # as VGG19 pads


def test_polish_aims_at_the_paintings_surface_not_at_its_edges():
    """Over a whole painting kept at 256 px, a deep layer's Grams are largely the zero padding's response along its
    edges (straight lines), which polish then painted into pictures. Its targets come from the interior: for a
    painting that is one texture throughout, they barely depend on how much of it there is, as a surface's should.
    (relu5_1 is left out here: on a painting this small, 6 positions a side, none is far from the padding.)"""
    runtime = resolve("cpu", "fp32")
    net = loss_network(runtime, POLISH_STYLE_LAYERS)
    torch.manual_seed(0)
    tile = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 35, 35), 4, stride=1)[0]  # a smooth 32-px texture
    small, large = tile.repeat(1, 3, 3), tile.repeat(1, 8, 8)  # 96 and 256 px of it
    whole = {name: gram[0] for name, gram in training.gram_stats(net, [small], runtime, POLISH_STYLE_LAYERS).items()}
    reference = training.gram_stats(edges.Interior(net), [large], runtime, POLISH_STYLE_LAYERS)
    interior = training.gram_stats(edges.Interior(net), [small], runtime, POLISH_STYLE_LAYERS)
    for name in ("relu3_1", "relu4_1"):  # measured: 0.0000 and 0.0005 from the interior, 0.044 and 0.15 from the whole
        from_interior = losses.relative_error(interior[name], reference[name]).item()
        from_whole = losses.relative_error(whole[name][None], reference[name]).item()
        assert from_interior < 0.1 * from_whole, (name, from_interior, from_whole)


def test_propose_polish_shows_finished_candidates_and_select_learns_from_them(one_round):
    """What the sheet shows is what is picked and learned from: each candidate finished toward its own look's loss,
    and the picks' Grams those of the finished pictures, not of the generator's alone."""
    session = Session.open(one_round, "cpu")
    r = session.propose(n=3, size=48, polish_steps=3)
    entry = session.state["rounds"][-1]
    assert entry["polish_steps"] == 3
    shown = [images.load_image(path) for path in r.candidates]
    raw = session.looks().on_sheet(entry, [session.split(look)[0] for look in r.z])
    net, rt = polish_network(session.runtime), session.runtime
    photo = images.shrink(images.load_image(one_round / entry["preview"]), 48)[None]  # as the sheet shows it
    with torch.no_grad():
        target = net(rt.images(photo))["relu4_1"]
        for look, finished, started in zip(r.z, shown, raw):
            goal = session.goal(look)
            before = float(polish.loss(net, rt.images(started[None]), rt.images(photo), target, goal, rt))
            after = float(polish.loss(net, rt.images(finished[None]), rt.images(photo), target, goal, rt))
            assert after < before, (before, after)
    session = Session.open(one_round, "cpu")
    session.select([1, 3])
    learned = session.looks().learning_images(session.state["rounds"][-1], [1, 3])
    assert all(torch.equal(a, shown[k]) for a, k in zip(learned, (0, 2)))


@pytest.mark.parametrize("args", [["--polish-steps", "0"], ["--polish-steps", "-3"],
                                  ["--polish", "--sheet-size", "1100"]])
def test_propose_refuses_a_polish_it_cannot_do_in_one_line_touching_nothing(one_round, args):
    before = state_of(one_round)
    result = run("propose", "--n", 2, *args, "--session", one_round, expect=2)
    assert len(result.output.strip().splitlines()) == 1 and "polish" in result.output
    assert ("--sheet-size" if "--sheet-size" in args else "--polish-steps") in result.output
    assert state_of(one_round) == before


def test_a_polished_round_records_its_steps_through_the_command_line(one_round):
    answer = json.loads(run("propose", "--n", 2, "--sheet-size", 40, "--polish-steps", 2, "--session", one_round,
                            "--json").stdout)
    assert answer["polish_steps"] == 2
    assert Session.open(one_round, "cpu").state["rounds"][-1]["polish_steps"] == 2
    words = run("propose", "--n", 2, "--sheet-size", 40, "--polish-steps", 1, "--session", one_round).output
    assert "finished with 1 steps of polish" in words


def test_applying_a_polished_candidate_without_polish_says_so(one_round, folder, tmp_path):
    """What you pick is what you get: a candidate picked from a polished sheet, applied by the generator alone, is
    less finished than it looked, and apply says so."""
    session = Session.open(one_round, "cpu")
    session.propose(n=2, size=40, polish_steps=1)
    plain = session.apply([folder / "a.png"], tmp_path / "o1", pick="2:1")
    assert any("finished with 1 steps of polish" in w for w in plain.warnings)
    polished = session.apply([folder / "a.png"], tmp_path / "o2", pick="2:1", polish_steps=1)
    earlier = session.apply([folder / "a.png"], tmp_path / "o3", pick="1:1")  # a sheet of the generator's pictures
    assert not any("polish" in w for w in polished.warnings + earlier.warnings)
    # An exported model cannot polish: export says so for such a pick, and only for one.
    assert "unpolished" in " ".join(export(session, "torchscript", tmp_path / "m.pt", pick="2:1")["warnings"])
    assert export(session, "torchscript", tmp_path / "n.pt", pick="1:1")["warnings"] == []


def test_relu5_1_fades_out_on_grids_too_small_for_it():
    """On a grid of fewer than 8 relu5_1 positions a side its Gram drew straight lines; it fades in from 128 px to
    192 px of the short side, and the other layers are as the look says."""
    weights = torch.tensor([0.5, 0.8, 1.0, 1.2, 1.5])
    goal = polish.Objective({name: torch.eye(2) for name in POLISH_STYLE_LAYERS}, weights, 1.0, 1.0, 0.0, 0.0)
    for (height, width), kept in (((107, 160), 0.0), ((160, 240), 0.5), ((240, 160), 0.5), ((213, 320), 1.0)):
        faded = polish.on_grid(goal, height, width)
        assert torch.equal(faded[:4], weights[:4]) and float(faded[4]) == pytest.approx(1.5 * kept)
    assert torch.equal(goal.layer_weights, weights)  # the goal itself unchanged


def test_a_picture_too_small_for_relu5_1_is_still_polished(one_round):
    """Under 16 px a side (a sheet's candidate of a wide photo at 32 px), relu5_1 has no position: its Gram would be
    0/0, every loss NaN, and polish would give back the picture it started from. Faded out, it is left out of the
    loss whole. Under 8 px relu4_1, the content layer, has none either: nothing to polish, and no error."""
    session = Session.open(one_round, "cpu")
    torch.manual_seed(0)
    photo, start = torch.rand(1, 3, 8, 32), torch.rand(1, 3, 8, 32)
    look = session.rounds()[0].z[1]
    net, rt = polish_network(session.runtime), session.runtime
    with torch.inference_mode():
        finished = polish.polish(net, rt, photo, start, session.goal(look), 4)
    assert torch.isfinite(finished).all()
    assert not torch.equal(finished, start.clamp(polish.EPSILON, 1 - polish.EPSILON))
    sliver = torch.rand(1, 3, 5, 40)  # no position of the content layer: nothing to polish, and no error
    with torch.inference_mode():
        kept = polish.polish(net, rt, sliver, sliver, session.goal(look), 4)
    assert torch.equal(kept, sliver.clamp(polish.EPSILON, 1 - polish.EPSILON))
