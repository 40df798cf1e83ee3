"""Large images in tiles: with the whole image's norm statistics the tiles are the whole image, and with
a downscaled pass's statistics no seam shows where tiles meet."""

import pytest
import torch
import torch.nn.functional as F

from styleprefs import tiling
from styleprefs.config import TrainSettings
from styleprefs.device import resolve
from styleprefs.networks import Generator
from styleprefs.session import Session
from tests.conftest import EXAMPLES, make_photo

RT = resolve("cpu", "fp32")


@pytest.fixture(scope="module")
def generator():
    """A real generator whose z really steers every norm (trained ones do; a fresh one's FiLM is zero)."""
    torch.manual_seed(0)
    g = Generator(z_dim=3, width=16, n_residual=5)
    for name, p in g.named_parameters():
        if "to_scale_shift.weight" in name:
            torch.nn.init.normal_(p, std=0.3)
    return RT.module(g).eval()


@pytest.fixture(scope="module")
def photo():
    """300×200, smooth with edges: blurred noise plus a bright disc."""
    noise = torch.rand(1, 3, 200, 300, generator=torch.Generator().manual_seed(1))
    image = F.avg_pool2d(noise, 9, 1, 4, count_include_pad=False)[0]
    y, x = torch.meshgrid(torch.arange(200), torch.arange(300), indexing="ij")
    image[:, (y - 90) ** 2 + (x - 170) ** 2 < 50**2] = torch.tensor([0.9, 0.8, 0.2])[:, None]
    return image


def whole(generator, image, z, runtime=RT):
    with torch.inference_mode():
        return generator(runtime.images(image[None]), z[None])[0]


def seam_score(image: torch.Tensor, columns: list[int]) -> float:
    """The largest step between column c and c+1, over the given c, relative to the mean step of the
    16 columns around it: about 1 where nothing happens, well above where a seam is."""
    steps = (image[:, :, 1:] - image[:, :, :-1]).abs().mean((0, 1))
    return max(float(steps[c] / torch.cat([steps[c - 8:c], steps[c + 1:c + 9]]).mean()) for c in columns)


def test_tile_spans_cover_the_image_aligned_and_overlapping():
    for length in (17, 224, 225, 300, 1000, 4099):
        spans = tiling.tile_spans(length, 224, 152)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(start % tiling.ALIGN == 0 and end - start <= 224 for start, end in spans)
        assert all(a_end - b_start >= 152 for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_the_margin_covers_the_receptive_field(generator):
    # Three stride-1 9×9 / 3×3 layers at full resolution and ten 3×3 at quarter resolution: 54 px.
    assert tiling.receptive_radius(generator, RT) == 54


def test_tiles_with_the_whole_images_statistics_are_the_whole_image(generator, photo):
    z = torch.tensor([0.5, -1.0, 0.8])
    tiled = tiling.stylise_tiled(generator, photo, z, RT, tile=224, stats_image=photo)
    assert len(tiling.tile_spans(300, 224, 2 * 60 + tiling.FEATHER)) == 3  # several tiles each way
    assert (tiled - whole(generator, photo, z)).abs().max() < 1e-4


def test_no_seam_where_tiles_meet(generator, photo):
    z = torch.tensor([0.5, -1.0, 0.8])
    small = F.interpolate(photo[None], scale_factor=0.5, mode="bilinear", antialias=True)[0]
    tiled = tiling.stylise_tiled(generator, photo, z, RT, tile=224, stats_image=small)
    margin = tiling.receptive_radius(generator, RT) // 4 * 4 + 4
    spans = tiling.tile_spans(300, 224, 2 * margin + tiling.FEATHER)
    # Where a tile's edge is, and where its weight starts and stops changing.
    edges = [c for start, end in spans[1:] + spans[:-1] for c in (start, start + margin, start + margin + tiling.FEATHER,
                                                                    end - margin - tiling.FEATHER, end - margin, end)
             if 8 < c < 290]
    # The same image in three tiles, each normalised on its own and butted together: the seam this is about.
    with torch.inference_mode():
        naive = torch.cat([generator(RT.images(photo[None, :, :, x:x + 100]), z[None])[0] for x in (0, 100, 200)], -1)
    assert seam_score(naive, [99, 199]) > 2.0  # the metric sees a real seam
    assert seam_score(tiled, edges) < 1.3  # 0.9–1.15 at columns chosen at random


def test_session_stylise_switches_to_tiles_above_the_threshold(photo, tmp_path, monkeypatch):
    painting = EXAMPLES / "paintings" / "vangogh_starry_night.jpg"
    session = Session.init(tmp_path / "s", [painting], [make_photo(tmp_path / "photo.png", seed=1)],
                           TrainSettings(steps=2, size=48, batch=2), device="cpu", precision="fp32")
    generator, z = session.generator(), torch.tensor([0.5, -1.0, 0.8])
    monkeypatch.setattr(tiling, "TILE_ABOVE", 100 * 100)
    monkeypatch.setattr(tiling, "TILE", 224)
    monkeypatch.setattr(tiling, "STATS_PIXELS", 100 * 150)
    assert tiling.needs_tiles(200, 300) and not tiling.needs_tiles(100, 100)
    tiling.receptive_radius(generator, session.runtime)  # measured once per generator, on a probe of its own
    calls = []
    hook = generator.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    try:
        out = session.stylise_batch(photo[None], z, side=300)  # a working resolution of the photo's own size
    finally:
        hook.remove()
    assert out.shape == (1, 3, 200, 300)
    assert max(s[-2] * s[-1] for s in calls) <= 224 * 224  # no forward saw the whole image
    assert calls[0][-2:] == (100, 150)  # the statistics pass, scaled down to STATS_PIXELS
    assert (out[0] - whole(generator, photo, z, session.runtime)).abs().mean() < 0.1
