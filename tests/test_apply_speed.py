"""apply's pipeline: decoding and writing on threads and same-size batches change no output, keep the
input order, and still skip and list bad files."""

import numpy as np
import pytest
import torch
from PIL import Image

from styleprefs import images, pipeline
from styleprefs.config import TrainSettings
from styleprefs.session import Session
from tests.conftest import assert_equal_up_to_rounding, make_photo


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    photos = root / "photos"
    for i in range(5):
        make_photo(photos / f"a{i}.png", seed=i)                        # 96×72, one batch
    make_photo(photos / "b.png", size=(64, 80), seed=7)                  # another size between …
    make_photo(photos / "c.png", seed=8)                                # … and the first size again
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    painting = make_photo(root / "painting.png", seed=4, size=(80, 80))
    session = Session.init(root / "s", [painting], [photos / "a0.png"],
                           TrainSettings(steps=2, size=48, batch=2, refine_steps=1), device="cpu", seed=5)
    return root, photos, session


def test_one_at_a_time_is_the_old_path_and_batches_differ_only_by_rounding(made, tmp_path):
    root, photos, session = made
    batched = session.apply([photos], tmp_path / "batched")
    single = session.apply([photos], tmp_path / "single", max_batch=1)
    names = sorted(p.name for p in batched.outputs)
    assert names == sorted(p.name for p in single.outputs) == ["a0.png", "a1.png", "a2.png", "a3.png", "a4.png",
                                                                "b.png", "c.png"]
    assert [p for p, _ in batched.skipped] == [p for p, _ in single.skipped] == [photos / "broken.jpg"]
    for name in names:
        one = np.asarray(Image.open(tmp_path / "single" / name)).astype(int)
        # what stylising the decoded photo on its own and saving it gives, as apply did before the pipeline
        images.save_image(session.stylise(images.load_image(photos / name)), tmp_path / "direct.png")
        assert np.array_equal(one, np.asarray(Image.open(tmp_path / "direct.png")))
        # A batch runs other convolution kernels: the same up to rounding (conftest's bounds, from the arithmetic).
        many = np.array(Image.open(tmp_path / "batched" / name))  # a copy torch may share
        assert_equal_up_to_rounding(torch.from_numpy(many), torch.from_numpy(one.astype(np.uint8)),
                                    session.runtime.bf16)
    # The floats themselves, before the rounding to levels, and a batch's photos kept apart.
    batch = torch.stack([images.load_image(photos / f"a{i}.png") for i in range(5)])
    together = session.stylise_batch(batch)
    alone = torch.stack([session.stylise_batch(photo[None])[0] for photo in batch])
    assert_equal_up_to_rounding(together, alone, session.runtime.bf16)
    with pytest.raises(AssertionError):  # the bounds would see a mix-up of photos
        assert_equal_up_to_rounding(together[:1], alone[1:2], session.runtime.bf16)


def test_same_size_neighbours_share_a_forward_and_order_is_kept(made, tmp_path):
    _, photos, _ = made
    sources = sorted(photos.iterdir())  # a0…a4, b, broken, c
    shapes = []

    def render(batch: torch.Tensor) -> torch.Tensor:  # photos as decoded, bytes, to bytes
        assert batch.dtype == torch.uint8
        shapes.append(tuple(batch.shape))
        return 255 - batch

    pairs = [(s, tmp_path / f"{s.stem}.png") for s in sources]
    items = list(pipeline.stylise_files(pairs, render, max_side=2048, max_pixels=10**8, max_batch=3))
    assert [i.source for i in items] == sources
    assert shapes == [(3, 3, 72, 96), (2, 3, 72, 96), (1, 3, 80, 64), (1, 3, 72, 96)]
    assert [i.error is not None for i in items] == [False] * 6 + [True, False]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a1.png")), 255 - np.asarray(Image.open(photos / "a1.png")))


def test_batches_count_the_pixels_of_the_grid_the_model_runs_on(made, tmp_path):
    """apply's generator runs on the working grid, whatever the photo's size: that, not the photo, fills a batch."""
    _, photos, _ = made
    sources = sorted(photos.glob("a*.png"))  # five 96×72 photos: 34560 pixels of photo, each
    shapes = []

    def render(batch):
        shapes.append(tuple(batch.shape))
        return batch

    pairs = [(s, tmp_path / f"{s.stem}.png") for s in sources]
    list(pipeline.stylise_files(pairs, render, max_side=2048, max_pixels=10**8, batch_pixels=2 * 96 * 72))
    assert shapes == [(2, 3, 72, 96), (2, 3, 72, 96), (1, 3, 72, 96)]
    shapes.clear()
    list(pipeline.stylise_files(pairs, render, max_side=2048, max_pixels=10**8, batch_pixels=2 * 96 * 72,
                                grid=lambda height, width: (height // 2, width // 2)))
    assert shapes == [(5, 3, 72, 96)]


def test_a_failed_write_is_raised_not_swallowed(made, tmp_path):
    _, photos, _ = made
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError):
        list(pipeline.stylise_files([(photos / "a0.png", blocker / "a0.png")], lambda b: b, 2048, 10**8))
