"""Interruptions: Ctrl-C / SIGTERM stop at a step boundary with a checkpoint; kill -9 loses nothing."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from styleprefs.config import TrainSettings
from styleprefs.checkpoints import TRAINING, Interrupted
from styleprefs.errors import BadInput
from styleprefs.session import Session
from tests.conftest import make_photo

SMALL = TrainSettings(steps=3, refine_steps=6, size=48, batch=2, checkpoint_seconds=0.0)


@pytest.fixture
def selected(tmp_path, painting):
    """A session with one round proposed and two candidates chosen, ready to refine."""
    photo = make_photo(tmp_path / "photo.png", seed=1)
    s = Session.init(tmp_path / "s", [painting], [photo], SMALL, device="cpu", seed=2)
    s.propose(n=4, size=48)
    s.select([1, 3])
    return Session.open(tmp_path / "s", device="cpu")


def generator_weights(session_dir) -> dict[str, torch.Tensor]:
    s = Session.open(session_dir, device="cpu")
    return {k: v.clone() for k, v in s.generator().state_dict().items()}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_at_a_step_and_resume_gives_the_same_result(selected, tmp_path, sig):
    import shutil
    twin = tmp_path / "twin"
    shutil.copytree(selected.store.root, twin)
    Session.open(twin, device="cpu").refine()  # uninterrupted reference
    expected = generator_weights(twin)

    def interrupt(progress):
        if progress.step == 2:
            os.kill(os.getpid(), sig)
    with pytest.raises(Interrupted, match="stopped at step 2 of 6.*refine --resume"):
        selected.refine(on_progress=interrupt)
    reopened = Session.open(selected.store.root, device="cpu")
    assert reopened.status()["unfinished"] == {"phase": "refine", "steps": 6, "completed": 2,
                                               "resume": "styleprefs refine --resume"}
    assert reopened.status()["refines"] == 0  # the old checkpoint is still the current one
    reopened.refine(resume=True)
    resumed = generator_weights(selected.store.root)
    assert all(torch.allclose(resumed[k], expected[k], atol=1e-6) for k in expected)
    assert Session.open(selected.store.root).status()["unfinished"] is None


def test_a_refused_refine_keeps_the_interrupted_ones_progress(selected):
    """A mistyped step count after an interrupted refine is refused before anything is touched: the saved training
    stays, and --resume still continues from it."""
    def interrupt(progress):
        if progress.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(Interrupted):
        selected.refine(on_progress=interrupt)
    saved = selected.store.path(TRAINING).read_bytes()
    reopened = Session.open(selected.store.root, device="cpu")
    with pytest.raises(BadInput, match="at least 0"):
        reopened.refine(steps=-1)
    assert selected.store.path(TRAINING).read_bytes() == saved
    assert Session.open(selected.store.root).status()["unfinished"]["completed"] == 2


def checkpoint_written_since(path, before, proc, timeout: float = 300.0) -> None:
    """Wait until ``proc`` has written a new ``path`` (another file, or the same one rewritten) since ``before``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stat = path.stat()
            if (stat.st_ino, stat.st_mtime_ns) != before:
                return
        except FileNotFoundError:
            pass
        assert proc.poll() is None, f"refine ended (exit {proc.returncode}) before it wrote a training checkpoint"
        assert time.monotonic() < deadline, "no training checkpoint in time"
        time.sleep(0.02)


def file_id(path):
    return (path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None


@pytest.mark.slow
def test_kill_9_inside_training_never_breaks_the_session(selected):
    """Each kill lands at a random moment after training has checkpointed (it passed even when none did: killed
    before training began or after it ended), and each leaves an unfinished refine that resumes."""
    root = selected.store.root
    training = root / TRAINING
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random(7)
    for attempt in range(2):  # a fresh refine, then its resume, each killed mid-training
        command = ["refine", "--steps", "20"] if attempt == 0 else ["refine", "--resume"]
        before = file_id(training)
        proc = subprocess.Popen([sys.executable, "-m", "styleprefs", *command, "--device", "cpu",
                                 "--session", str(root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        checkpoint_written_since(training, before, proc)
        time.sleep(rng.uniform(0.0, 0.3))  # a random moment a few steps in: maybe mid-step, maybe mid-write
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "refine finished before the kill: it did not land inside training"
        status = Session.open(root, device="cpu").status()  # loads, whatever moment it died at
        assert status["refines"] == 0
        assert status["unfinished"]["phase"] == "refine" and 1 <= status["unfinished"]["completed"] < 20
    with Session.editing(root, device="cpu") as s:  # as the CLI's refine does: under the lock
        s.refine(resume=True)
    final = Session.open(root, device="cpu").status()
    assert final["refines"] == 1 and final["unfinished"] is None and final["steps"]["refine"] == 20
    assert not list(root.rglob("*.tmp"))  # no temporary file left visible as state


def test_an_interrupted_init_resumes(tmp_path, painting):
    photo = make_photo(tmp_path / "photo.png", seed=1)
    settings = TrainSettings(steps=5, size=48, batch=2, checkpoint_seconds=0.0)

    def interrupt(progress):
        if progress.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(Interrupted, match="init stopped at step 3 of 5"):
        Session.init(tmp_path / "s", [painting], [photo], settings, device="cpu", on_progress=interrupt)
    half = Session.open(tmp_path / "s", device="cpu")
    assert half.status()["unfinished"]["completed"] == 3
    with pytest.raises(Exception, match="init --resume"):
        half.propose(n=2, size=48)
    done = Session.init(tmp_path / "s", [], [], device="cpu", resume=True)
    assert done.status()["steps"]["init"] == 5 and done.status()["unfinished"] is None


def test_an_interrupted_forced_init_says_where_the_old_session_is(selected, painting, tmp_path):
    root = selected.store.root
    photo = make_photo(tmp_path / "other.png", seed=5)

    def interrupt(progress):
        if progress.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(Interrupted, match=r"kept in .*\.s\.replaced-.*/session"):
        Session.init(root, [painting], [photo], SMALL, device="cpu", force=True, on_progress=interrupt)
    old = next(root.parent.glob(".s.replaced-*")) / "session"
    assert Session.open(old, device="cpu").status()["round"] == 1  # the replaced session is whole


def test_a_killed_writer_s_temporary_files_go_at_the_next_locked_command(selected):
    root = selected.store.root
    leftovers = [root / ".state.json.k1l2.tmp", root / "checkpoints" / "000" / ".generator.safetensors.x9.tmp"]
    rendering = root / "rounds" / ".pending-abc" / ".candidate-01.png.q7.tmp"  # a propose at work, without the lock
    for path in [*leftovers, rendering]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    with Session.editing(root, device="cpu"):
        pass
    assert not any(path.exists() for path in leftovers)
    assert rendering.exists()
    rendering.parent.joinpath(rendering.name).unlink()
    rendering.parent.rmdir()
