"""export: the look as an ONNX, torch.export or TorchScript file gives what apply gives, at any size, without
styleprefs."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from styleprefs import export, images
from styleprefs.cli import app
from styleprefs.device import resolve
from styleprefs.networks import z_noise
from styleprefs.session import Session
from styleprefs.store import Store
from tests.conftest import make_photo

# apply runs in fp32 here too, so what differs is the order of sums (the resizes as matrix products, the composition
# in one piece rather than in bands): some 1e-5, under a quarter of an 8-bit level.
TOLERANCE = 1e-3
# (width, height), none of them the size traced (export.TRACE_SIZE): a photo smaller than the working grid (rendered
# larger, then shrunk), a landscape and a portrait one larger than it (guided upsampling), and a strip whose short
# side is the working grid's minimum.
SIZES = [(96, 72), (420, 300), (230, 410), (900, 60)]
FILES = {"torchscript": "look.pt", "pt2": "look.pt2", "onnx": "look.onnx"}


def test_noise_map_is_z_noise_at_every_size():
    z = torch.randn(1, 7)
    normals, uniforms = export.noise_tables(z, 48 * 48)
    for height, width in [(8, 8), (8, 9), (9, 13), (17, 23), (31, 48), (48, 48)]:
        for size in (int, torch.tensor):  # as numbers, and as a trace's tensors
            rebuilt = export.noise_map(normals, uniforms, size(height), size(width))
            assert torch.allclose(rebuilt, z_noise(z, height, width), atol=1e-5), (height, width)


@pytest.fixture(scope="module")
def exported(proposed_session, tmp_path_factory):
    """Every format's file for pick 1:2 of the shared session, written by the command line, and what apply computes
    for photos of every SIZES, in fp32."""
    root = tmp_path_factory.mktemp("export")
    runner = CliRunner()
    files = {}
    for fmt, name in FILES.items():
        if fmt == "onnx" and not _has("onnx"):
            continue
        result = runner.invoke(app, ["export", "--format", fmt, "--out", str(root / name), "--pick", "1:2",
                                     "--session", str(proposed_session)])
        assert result.exit_code == 0, result.output
        megabytes = (root / name).stat().st_size / 1e6
        assert "".join(result.output.split()) == f"wrote{root / name}({fmt},{megabytes:.1f}MB)", result.output
        files[fmt] = root / name
    session = Session(Store(proposed_session), resolve("cpu", "fp32"))
    look, side = session.look_to_apply("1:2")
    photos = [images.load_image(make_photo(root / f"{w}x{h}.png", size=(w, h), seed=w)) for w, h in SIZES]
    return {"files": files, "root": root, "photos": photos,
            "applied": [session.stylise(photo, look, side=side) for photo in photos]}


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def gives_what_apply_gives(run, exported):
    """``run`` (a float32 batch → the styled batch) gives apply's picture for every photo of SIZES, and for a batch
    of two of one size, both for a photo smaller than the working grid and a larger one."""
    for photo, applied in zip(exported["photos"], exported["applied"]):
        styled = run(photo[None])[0]
        assert styled.shape == photo.shape and styled.dtype == torch.float32
        assert (styled - applied).abs().max() < TOLERANCE, photo.shape
    for k in (0, 1):
        both = run(torch.stack([exported["photos"][k]] * 2))
        assert both.shape == (2, *exported["photos"][k].shape)
        assert (both - exported["applied"][k]).abs().max() < TOLERANCE, k


def test_torchscript_gives_what_apply_gives(exported):
    model = torch.jit.load(str(exported["files"]["torchscript"]))
    with torch.no_grad():
        gives_what_apply_gives(model, exported)


def test_torch_export_archive_gives_what_apply_gives(exported):
    model = torch.export.load(exported["files"]["pt2"]).module()
    with torch.no_grad():
        gives_what_apply_gives(model, exported)


def test_onnx_in_onnxruntime_gives_what_apply_gives(exported):
    ort = pytest.importorskip("onnxruntime")
    if "onnx" not in exported["files"]:
        pytest.skip("onnx is not installed (pip install -e '.[export]')")
    model = ort.InferenceSession(str(exported["files"]["onnx"]), providers=["CPUExecutionProvider"])

    def run(batch):
        (styled,) = model.run(None, {"photo": batch.numpy()})
        assert isinstance(styled, np.ndarray) and styled.dtype == np.float32
        return torch.from_numpy(styled)
    gives_what_apply_gives(run, exported)


def test_the_file_is_written_whole_and_alone(exported):
    assert sorted(p.name for p in exported["root"].iterdir() if p.name.startswith(".")) == []
    for path in exported["files"].values():
        assert path.stat().st_size > 100_000


def test_export_refuses_bad_input_in_one_line(one_round, tmp_path):
    runner = CliRunner()
    for args, message in [
        (["--format", "tflite", "--out", str(tmp_path / "x")],
         "the format must be onnx, pt2 or torchscript, got 'tflite' (--format)"),
        (["--format", "torchscript", "--out", str(tmp_path)], "is a folder"),
        (["--format", "torchscript", "--out", str(tmp_path / "x.pt"), "--pick", "9:1"], "no round 9"),
        (["--format", "torchscript", "--out", str(tmp_path / "x.pt"), "--pick", "1:99"], "no candidate 99"),
        (["--format", "torchscript", "--out", str(tmp_path / "x.pt"), "--stroke-scale", "0"], "--stroke-scale"),
        (["--format", "torchscript", "--out", str(tmp_path / "x.pt"), "--stroke-scale", "0.02"], "export supports"),
    ]:
        result = runner.invoke(app, ["export", *args, "--session", str(one_round)])
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: ") and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not list(tmp_path.glob("x*"))


def test_the_exported_file_carries_apply_s_strength_and_colours(proposed_session, tmp_path):
    result = CliRunner().invoke(app, ["export", "--format", "torchscript", "--out", str(tmp_path / "look.pt"),
                                      "--pick", "1:2", "--strength", "0.6", "--keep-colours",
                                      "--session", str(proposed_session)])
    assert result.exit_code == 0, result.output
    session = Session(Store(proposed_session), resolve("cpu", "fp32"))
    look, side = session.look_to_apply("1:2")
    photo = images.load_image(make_photo(tmp_path / "p.png", size=(90, 70), seed=3))
    applied = session.stylise_batch(photo[None], look, side=side, strength=0.6, keep_colours=True)[0]
    with torch.no_grad():
        styled = torch.jit.load(str(tmp_path / "look.pt"))(photo[None])[0]
    assert (styled - applied).abs().max() < TOLERANCE
