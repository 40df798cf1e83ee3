"""The CUDA path: the same loop on a GPU, and the GPU agreeing with the CPU (skipped without CUDA)."""

import pytest
import torch

from styleprefs import device
from styleprefs.config import TrainSettings
from styleprefs.session import Session
from tests.conftest import make_photo

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TINY = TrainSettings(steps=3, size=64, batch=2, refine_steps=2)


def test_auto_picks_cuda_with_bf16_where_supported():
    runtime = device.resolve("auto")
    assert runtime.device.type == "cuda"
    assert runtime.bf16 == torch.cuda.is_bf16_supported()


def test_the_whole_loop_runs_on_cuda(tmp_path, painting):
    photo = make_photo(tmp_path / "photo.png", seed=1)
    s = Session.init(tmp_path / "s", [painting], [photo], TINY, device="cuda", seed=3)
    assert s.status()["device"].startswith("cuda")
    round_ = s.propose(n=4, size=64)
    assert len(round_.candidates) == 4 and all(p.exists() for p in round_.candidates)
    s.select([1, 3])
    s.refine()
    result = Session.open(tmp_path / "s", device="cuda").apply([photo], tmp_path / "out")
    assert [p.name for p in result.outputs] == ["photo.png"] and not result.skipped


def test_a_session_trained_on_cuda_renders_the_same_on_the_cpu(tmp_path, painting):
    photo = make_photo(tmp_path / "photo.png", seed=2)
    Session.init(tmp_path / "s", [painting], [photo], TINY, device="cuda", seed=4)
    on_gpu = Session.open(tmp_path / "s", device="cuda")
    on_cpu = Session.open(tmp_path / "s", device="cpu")
    image, z = torch.rand(3, 72, 96), torch.randn(3)
    # The GPU renders in bf16 autocast where supported: agreement within bf16 noise, not bit-exact.
    difference = (on_gpu.stylise(image, z) - on_cpu.stylise(image, z)).abs().mean().item()
    assert difference < 0.02
