"""apply on a local Ray instance writes what the local apply writes: every output once, atomically, skipping
what is there."""

import time

import pytest

from styleprefs.session import Session
from tests.conftest import make_photo

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[test,ray]")')


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_apply_writes_what_apply_writes(local_ray, one_round, tmp_path):
    from styleprefs.ray_apply import apply_on_ray

    photos = tmp_path / "photos"
    for k in range(8):  # two sizes, one in a sub-folder
        make_photo(photos / ("sub" if k % 3 == 0 else "") / f"p{k}.png", size=(80, 60) if k % 2 else (72, 96), seed=k)
    local = Session.open(one_round, "cpu").apply([photos], tmp_path / "local", pick="1:3", max_batch=1)
    assert len(local.outputs) == 8

    started = time.perf_counter()
    result = apply_on_ray(one_round, [photos], tmp_path / "ray", pick="1:3", max_batch=1, actors=2)
    seconds = time.perf_counter() - started
    print(f"ray apply of 8 photos: {seconds:.1f} s")
    written = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
    expected = sorted(p.relative_to(tmp_path / "local") for p in local.outputs)
    assert written == expected and len(result.outputs) == 8 and not result.skipped  # each once, no temporary left
    for name in expected:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name

    (tmp_path / "ray" / expected[0]).unlink()
    before = {name: (tmp_path / "ray" / name).stat().st_mtime_ns for name in expected[1:]}
    again = apply_on_ray(one_round, [photos], tmp_path / "ray", pick="1:3", max_batch=1, skip_existing=True,
                         shard="1/1")
    assert [p.relative_to(tmp_path / "ray") for p in again.outputs] == [expected[0]] and len(again.existing) == 7
    assert all((tmp_path / "ray" / name).stat().st_mtime_ns == t for name, t in before.items())
