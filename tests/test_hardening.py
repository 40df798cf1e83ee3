"""Bad input never damages anything: each case gets one clear line, the right exit status, and a
session that is byte-for-byte what it was (unless the command was meant to change it)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleprefs import images
from styleprefs.cli import app
from styleprefs.session import Session
from tests.conftest import make_photo

runner = CliRunner()


def tree_hash(root: Path) -> str:
    """A hash of every file's path and bytes below root (the lock file's pid note aside)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".lock"):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A trained session (tiny) with one proposal round, plus a folder of good photos."""
    root = tmp_path_factory.mktemp("hard")
    photos = root / "photos"
    for i in range(4):
        make_photo(photos / f"p{i}.png", seed=i)
    painting = Path(__file__).resolve().parents[1] / "examples" / "paintings" / "vangogh_starry_night.jpg"
    session = root / "session"
    assert invoke("init", "--style", painting, "--content", photos, "--steps", 2, "--size", 48,
                  "--device", "cpu", "--session", session).exit_code == 0
    assert invoke("propose", "--n", 4, "--size", 48, "--session", session).exit_code == 0
    return {"root": root, "photos": photos, "session": session, "painting": painting}


@pytest.fixture
def session(base, tmp_path):
    copy = tmp_path / "session"
    shutil.copytree(base["session"], copy)
    return copy


def bad_image_files(folder: Path) -> dict[str, Path]:
    """Every kind of unusable image file a photo folder might hold."""
    folder.mkdir(parents=True, exist_ok=True)
    good = make_photo(folder / "good.png")
    cases = {
        "zero bytes": folder / "empty.jpg",
        "truncated png": folder / "cut.png",
        "text named .jpg": folder / "text.jpg",
        "1×1 image": folder / "dot.png",
        "smaller than the network's minimum": folder / "tiny.png",
        "over the pixel limit": folder / "huge.png",
    }
    cases["zero bytes"].write_bytes(b"")
    cases["truncated png"].write_bytes(good.read_bytes()[:300])
    cases["text named .jpg"].write_text("hello, I am not a photo")
    Image.new("RGB", (1, 1)).save(cases["1×1 image"])
    Image.new("RGB", (12, 9)).save(cases["smaller than the network's minimum"])
    Image.new("L", (2000, 1000)).save(cases["over the pixel limit"])
    good.unlink()
    return cases


def test_each_bad_image_is_refused_by_init_with_its_name(base, tmp_path):
    """Each in one line naming the file; the over-limit case used to be skipped, asserting nothing."""
    cases = bad_image_files(tmp_path / "bad")
    for what, path in cases.items():
        result = invoke("init", "--style", base["painting"], "--content", path, "--steps", 1, "--size", 48,
                        "--max-pixels", 1_000_000, "--session", tmp_path / f"s-{path.stem}")  # huge.png is 2 MP
        assert result.exit_code == 2, (what, result.output)
        assert len(result.output.strip().splitlines()) == 1, (what, result.output)
        assert path.name in result.output and "Traceback" not in result.output, what
        assert not (tmp_path / f"s-{path.stem}").exists(), what
    over = invoke("init", "--style", base["painting"], "--content", cases["over the pixel limit"], "--steps", 1,
                  "--size", 48, "--max-pixels", 1_000_000, "--session", tmp_path / "s-over")
    assert "huge.png: 2000×1000 is over the limit of 1,000,000 pixels" in over.output


def test_apply_skips_each_bad_image_reports_it_and_exits_1(base, session, tmp_path):
    cases = bad_image_files(tmp_path / "mixed")
    (tmp_path / "mixed" / "folder.png").mkdir()  # a folder named like an image is not an input
    make_photo(tmp_path / "mixed" / "fine.png")
    before = tree_hash(session)
    result = invoke("apply", tmp_path / "mixed", "--out", tmp_path / "out", "--max-pixels", 1_000_000,
                    "--session", session, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [Path(p).name for p in data["outputs"]] == ["fine.png"]
    failed = {Path(f["input"]).name: f["error"] for f in data["failed"]}
    assert set(failed) == {p.name for p in cases.values()}
    assert "over the limit" in failed["huge.png"] and "too small" in failed["tiny.png"]
    assert tree_hash(session) == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fine.png"]  # nothing half-written


def test_image_modes_transparency_and_animation(session, tmp_path):
    src = tmp_path / "modes"
    make_photo(src / "cmyk.jpg", mode="CMYK")
    make_photo(src / "grey.png", mode="L")
    make_photo(src / "palette.png", mode="P")
    Image.fromarray((np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)).save(src / "deep.png")
    rgba = Image.open(make_photo(src / "rgba.png")).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(src / "rgba.png")
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue")]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    (src / "space and ünïcode").mkdir()
    make_photo(src / "space and ünïcode" / "my photo é.png")
    result = invoke("apply", src, "--out", tmp_path / "out", "--session", session, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["outputs"]) == 7 and not data["failed"]
    assert any("anim.gif" in w and "first frame" in w for w in data["warnings"])
    kept = Image.open(tmp_path / "out" / "rgba.png")
    assert kept.mode == "RGBA"
    assert np.array_equal(np.asarray(kept.getchannel("A")), np.asarray(Image.open(src / "rgba.png").getchannel("A")))
    assert (tmp_path / "out" / "space and ünïcode" / "my photo é.png").is_file()
    jpg = invoke("apply", src / "rgba.png", "--out", tmp_path / "jpg", "--format", "jpg", "--session", session)
    assert jpg.exit_code == 0 and Image.open(tmp_path / "jpg" / "rgba.jpg").mode == "RGB"  # flattened onto white


MISUSE = [
    (["select"], "at least one"),
    (["select", "0"], "no candidate 0"),
    (["select", "5"], "no candidate 5"),
    (["select", "-2"], "no candidate -2"),
    (["select", "2", "2"], "repeat"),
    (["select", "two"], "whole numbers"),
    (["refine"], "no new selection"),
    (["refine", "--resume"], "nothing to resume"),
    (["propose", "--n", "0"], "the number of candidates must be between 1 and 64, got 0 (--n)"),
    (["propose", "--sheet-size", "8"], "the sheet's size must be between 32 and 2048 px, got 8 (--sheet-size)"),
    (["apply", "PHOTOS", "--out", "OUT", "--max-side", "8"], "(--max-side)"),
    (["propose", "--preview", "/no/such/photo.jpg"], "no such file"),
    (["apply", "/no/such/folder", "--out", "OUT"], "no such file or folder"),
    (["apply", "PHOTOS", "--out", "PHOTOS"], "would write over the input"),
    (["apply", "PHOTOS", "--out", "OUT", "--pick", "9:1"], "no round 9"),
    (["apply", "PHOTOS", "--out", "OUT", "--pick", "x"], "ROUND:INDEX"),
    (["apply", "PHOTOS", "--out", "OUT", "--shard", "3/2"], "K must be between"),
    (["apply", "PHOTOS", "--out", "OUT", "--format", "gif"], "png or jpg"),
    (["apply", "PHOTOS", "--out", "FILE"], "not a folder"),
    (["init", "--style", "PAINTING", "--content", "PHOTOS"], "already exists"),
    (["init", "--content", "PHOTOS"], "needs --style"),
    (["init", "--resume"], "nothing to resume"),
    (["init", "--style", "PAINTING", "--content", "PHOTOS", "--size", "8", "--force"], "size must be between"),
    (["init", "--style", "PAINTING", "--content", "PHOTOS", "--device", "tpu", "--force"], "unknown device"),
]


@pytest.mark.parametrize("args,message", MISUSE, ids=[" ".join(a) for a, _ in MISUSE])
def test_misuse_is_one_line_exit_2_and_changes_nothing(base, session, tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    names = {"PHOTOS": base["photos"], "OUT": tmp_path / "out", "PAINTING": base["painting"], "FILE": tmp_path / "file"}
    args = [str(names.get(a, a)) for a in args]
    photos_before = tree_hash(base["photos"])
    before = tree_hash(session)
    result = invoke(*args, "--session", session)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert tree_hash(session) == before
    assert tree_hash(base["photos"]) == photos_before


DAMAGE = {
    "truncated generator": ("checkpoints/000/generator.safetensors", lambda p: p.write_bytes(p.read_bytes()[:999])),
    "edited generator": ("checkpoints/000/generator.safetensors", lambda p: p.write_bytes(
        p.read_bytes().replace(b"to_rgb", b"to_xyz"))),
    "invalid state JSON": ("state.json", lambda p: p.write_text("{\"rounds\": [")),
    "state without rounds": ("state.json", lambda p: p.write_text(json.dumps(
        {k: v for k, v in json.loads(p.read_text()).items() if k != "rounds"}))),
    "truncated preference": ("checkpoints/000/preference.safetensors", lambda p: p.write_bytes(p.read_bytes()[:40])),
    "newer schema": ("config.json", lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "schema_version": 99}))),
}


@pytest.mark.parametrize("what", list(DAMAGE))
def test_a_damaged_session_is_named_never_reset(base, session, tmp_path, what):
    name, damage = DAMAGE[what]
    damage(session / name)
    before = tree_hash(session)
    result = invoke("apply", base["photos"], "--out", tmp_path / "out", "--session", session)
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert Path(name).name in result.output, result.output
    assert tree_hash(session) == before


def test_session_pointing_at_a_file_or_unrelated_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "docs").mkdir()
    for target, message in ((tmp_path / "notes.txt", "is a file"), (tmp_path / "docs", "no session")):
        result = invoke("status", "--session", target)
        assert result.exit_code == 2 and message in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine" and not any((tmp_path / "docs").iterdir())


def test_outputs_cannot_escape_out_through_a_symlink(session, tmp_path):
    src = tmp_path / "in"
    make_photo(src / "sub" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "sub")
    result = invoke("apply", src, "--out", out, "--session", session)
    assert result.exit_code == 2 and "outside the output folder" in result.output and "(--out)" in result.output
    assert not any((tmp_path / "elsewhere").iterdir())


def test_skip_existing_makes_reruns_idempotent(base, session, tmp_path):
    out = tmp_path / "out"
    first = json.loads(invoke("apply", base["photos"], "--out", out, "--session", session, "--json").stdout)
    stamps = {p: Path(p).stat().st_mtime_ns for p in first["outputs"]}
    again = json.loads(invoke("apply", base["photos"], "--out", out, "--skip-existing", "--session", session,
                              "--json").stdout)
    assert again["outputs"] == [] and sorted(again["existing"]) == sorted(first["outputs"])
    assert all(Path(p).stat().st_mtime_ns == t for p, t in stamps.items())


@pytest.mark.slow
def test_two_concurrent_shards_write_every_output_exactly_once(base, session, tmp_path):
    photos = tmp_path / "many"
    for i in range(8):
        make_photo(photos / f"img{i}.png", seed=10 + i)
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "styleprefs", "apply", str(photos), "--out", str(out),
                               "--shard", f"{k}/2", "--session", str(session), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    written = [Path(o).name for r in results for o in r["outputs"]]
    assert sorted(written) == sorted(f"img{i}.png" for i in range(8))  # each exactly once
    assert all(Image.open(out / name).size == (96, 72) for name in written)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_init_refuses_a_photo_over_the_pixel_limit_unless_raised(base, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200), "white").save(big)
    refused = invoke("init", "--style", base["painting"], "--content", big, "--max-pixels", 50_000,
                     "--steps", 1, "--size", 48, "--session", tmp_path / "s")
    assert refused.exit_code == 2 and "over the limit of 50,000 pixels" in refused.output
    assert not (tmp_path / "s").exists()
    raised = invoke("init", "--style", base["painting"], "--content", big, "--max-pixels", 500_000,
                    "--steps", 1, "--size", 48, "--session", tmp_path / "s")
    assert raised.exit_code == 0, raised.output


@pytest.mark.slow
def test_two_parallel_proposes_make_two_whole_rounds_each_of_its_own_looks(session):
    """It only counted the rounds: each must be whole, and its candidates must be the renderings of its own looks
    (not the other round's, nor a mix of the two)."""
    procs = [subprocess.Popen([sys.executable, "-m", "styleprefs", "propose", "--n", "3", "--size", "48",
                               "--session", str(session), "--json"], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    answers = sorted((json.loads(p.communicate(timeout=300)[0]) for p in procs), key=lambda a: a["round"])
    assert [p.returncode for p in procs] == [0, 0]
    assert [a["round"] for a in answers] == [2, 3]  # round 1 was made by the fixture
    s = Session.open(session, device="cpu")
    rounds = s.rounds()
    assert [r.index for r in rounds] == [1, 2, 3]
    assert rounds[1].folder != rounds[2].folder
    for r, answer, entry in zip(rounds[1:], answers, s.state["rounds"][1:], strict=True):
        assert [str(c) for c in r.candidates] == answer["candidates"] and str(r.sheet) == answer["sheet"]
        assert len(r.z) == len(r.candidates) == 3 and r.sheet.is_file()
        photo = images.load_image(s.store.path(entry["preview"]))
        for look, candidate in zip(r.z, r.candidates, strict=True):
            shown = images.shrink(s.stylise(photo, look, side=s.working_side(r.index)), 48)
            assert (shown - images.load_image(candidate)).abs().mean() < 1 / 255, candidate
    # Each drawn for the number it got, under the lock: with the seed read before it, both drew the same looks.
    assert not torch.equal(rounds[1].z, rounds[2].z)
    assert not list((session / "rounds").glob(".pending-*"))
