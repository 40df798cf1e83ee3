"""Full-size rendering: a photo of any size becomes the candidate picked on the sheet, with the photo's own
fine detail kept sharp; the working resolution follows the preview and ``stroke_scale``."""

import itertools
import random

import pytest
import torch
import torch.nn.functional as F

from styleprefs import images, render
from styleprefs.config import METRIC_STYLE_LAYERS, TrainSettings
from styleprefs.device import resolve
from styleprefs.losses import gram
from styleprefs.networks import Generator
from styleprefs.start import load_start
from styleprefs.training import gram_stats, loss_network
from styleprefs.vgg import VGG19Features
from tests.conftest import EXAMPLES, assert_equal_up_to_rounding

RT = resolve("cpu", "fp32")
SIDE = 96  # the preview's long side in these tests (the product's is 256)


@pytest.fixture(scope="module")
def generator():
    """The shipped pretrained generator at Starry Night's nearest embedding: a real, trained network whose z
    changes the look."""
    settings = TrainSettings()
    painting = images.load_image(EXAMPLES / "paintings" / "vangogh_starry_night.jpg", max_side=settings.style_size)
    grams = gram_stats(loss_network(RT, settings.style_layers), [painting], RT, settings.style_layers)
    g = Generator(3, settings.generator_width, settings.generator_blocks)
    assert load_start(g, grams, "pretrained") is not None
    return g.eval()


@pytest.fixture(scope="module")
def cat():
    return images.load_image(EXAMPLES / "photos" / "skimage_chelsea_cat.png")  # 451×300, whiskers and fur


def stylise_with(generator, z):
    def stylise(batch):
        with torch.inference_mode():
            return generator(batch, z.reshape(1, -1).expand(len(batch), -1))
    return stylise


def style_distance(net, a, b) -> float:
    """The benchmarks' symmetrised style distance (mean over relu1_1…relu5_1) between two images."""
    with torch.no_grad():
        ga = {k: gram(v) for k, v in net(a[None]).items()}
        gb = {k: gram(v) for k, v in net(b[None]).items()}
    one_way = lambda x, y: torch.stack([(x[k] - y[k]).norm() / y[k].norm() for k in METRIC_STYLE_LAYERS]).mean()
    return float(one_way(ga, gb) + one_way(gb, ga)) / 2


def test_working_size_keeps_the_aspect_and_follows_the_stroke_scale():
    assert render.working_size(3000, 4000, 256) == (192, 256)
    assert render.working_size(4000, 3000, 256, stroke_scale=2) == (128, 96)
    assert render.working_size(300, 400, 256, stroke_scale=0.5) == (384, 512)  # small photos are rendered larger
    assert render.working_size(100, 4000, 256) == (render.MIN_WORKING_SIDE, 256)  # a panorama keeps a usable height
    with pytest.raises(ValueError):
        render.working_size(100, 100, 256, stroke_scale=0)
    # strokes finer than the photo's pixels are not drawn: a tiny scale stops at the photo's own grid ...
    assert render.working_size(3000, 4000, 256, stroke_scale=0.015) == (3000, 4000)
    # ... or, for a photo smaller than that, at the smallest strokes a look has
    assert render.working_size(375, 500, 256, stroke_scale=0.015) == (441, 588)  # 256 px ÷ SMALLEST_STROKES


def test_working_size_on_a_trace_s_sizes_is_the_same():
    """Export computes the working grid from the photo's sizes as int64 scalar tensors: the grid must be apply's for
    every size (the same float64 arithmetic, the same rounding of halves to even)."""
    rng = random.Random(0)
    for _ in range(500):
        height, width = rng.randint(1, 6000), rng.randint(1, 6000)
        side, scale = rng.choice([64, 320, 1000]), rng.uniform(0.1, 3)
        got = render.working_size(torch.tensor(height), torch.tensor(width), side, scale)
        assert all(size.dtype == torch.int64 for size in got)
        assert (int(got[0]), int(got[1])) == render.working_size(height, width, side, scale)


def test_the_exportable_resample_is_resample():
    for source, size in [((100, 80), (50, 40)), ((57, 91), (40, 101)), ((30, 40), (90, 120)), ((64, 64), (64, 64))]:
        batch = torch.rand(2, 3, *source)
        assert (render.resample_exportable(batch, *size) - render.resample(batch, size)).abs().max() < 1e-4


def test_the_composition_in_one_piece_is_the_banded_one():
    """Export composes a batch in one piece, from the same planes and per-pixel maths as the bands."""
    torch.manual_seed(1)
    photo = F.avg_pool2d(torch.rand(2, 3, 301, 205), 3, 1, 1)
    small = render.resample(photo, (61, 41))
    styled = torch.sigmoid(F.avg_pool2d(torch.randn(2, 3, 61, 41), 3, 1, 1) * 3)
    planes = F.interpolate(render.guided_planes(small, styled), size=(301, 205), mode="bicubic", align_corners=False)
    whole = render.compose(planes, photo)
    for k in range(2):
        assert (whole[k] - render.guided_upsample(photo[k], small[k], styled[k])).abs().max() < 1e-5


def test_a_large_photo_becomes_the_candidate_that_was_picked(generator, cat):
    """The bug a user hit: the look picked on the sheet was gone at full size (strokes fixed in pixels)."""
    zs = torch.randn(6, 3, generator=torch.Generator().manual_seed(3)) * 1.5
    preview = images.load_image(EXAMPLES / "photos" / "skimage_chelsea_cat.png", max_side=SIDE)
    candidates = [render.render(stylise_with(generator, z), preview[None], SIDE)[0] for z in zs]
    net = VGG19Features(METRIC_STYLE_LAYERS)
    pairwise = [style_distance(net, a, b) for a, b in itertools.combinations(candidates, 2)]
    spread = sum(pairwise) / len(pairwise)
    large = F.interpolate(cat[None], scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)  # 902×600
    for k, z in enumerate(zs):
        full = render.render(stylise_with(generator, z), large, SIDE)[0]
        assert full.shape == large.shape[1:]
        seen = images.shrink(full, SIDE)  # as the preview photo was made
        distances = [style_distance(net, seen, c) for c in candidates]
        assert min(range(len(zs)), key=distances.__getitem__) == k, distances
        assert distances[k] < spread / 2, (distances[k], spread)
    # What apply did before: the generator on the photo's own grid. That look is not the candidate.
    with torch.inference_mode():
        old = generator(large, zs[:1])[0]
    old_seen = images.shrink(old, SIDE)
    assert style_distance(net, old_seen, candidates[0]) > spread / 2


def high_frequencies(image: torch.Tensor) -> torch.Tensor:
    """The luminance minus its 3×3 mean: 1-px detail."""
    lum = render.luminance(image)[None]
    return (lum - F.avg_pool2d(lum, 3, 1, 1, count_include_pad=False))[0]


def test_full_resolution_detail_stays_sharp(generator, cat):
    z = torch.zeros(3)
    full = render.render(stylise_with(generator, z), cat[None], SIDE)[0]  # working grid 96×64, 4.7× smaller
    kept = float(high_frequencies(full).std() / high_frequencies(cat).std())
    # An upscale of the working-resolution picture, for scale: it has lost the whiskers and the fur.
    small = render.resample(cat[None], render.working_size(300, 451, SIDE))
    blurry = render.resample(stylise_with(generator, z)(small), cat.shape[-2:])[0]
    lost = float(high_frequencies(blurry).std() / high_frequencies(cat).std())
    assert kept >= 0.9 and lost < 0.4, (kept, lost)
    # ... and the detail is the photo's, in place: it correlates with the photo's own.
    a, b = high_frequencies(full).flatten(), high_frequencies(cat).flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.6


def test_bands_change_nothing(generator, cat, monkeypatch):
    stylise = stylise_with(generator, torch.tensor([0.3, -0.5, 1.0]))
    whole = render.render(stylise, cat[None], SIDE)
    monkeypatch.setattr(render, "BAND", 7)  # bands that do not divide the height
    assert torch.allclose(render.render(stylise, cat[None], SIDE), whole, atol=1e-6)
    # uint8 photos (as apply decodes them) give the float photo's result
    as_bytes = (cat * 255).round().to(torch.uint8)
    small = render.resample(as_bytes[None].float() / 255, render.working_size(300, 451, SIDE))
    assert torch.allclose(render.guided_upsample(as_bytes, small[0], stylise(small)[0]),
                          render.guided_upsample(as_bytes.float() / 255, small[0], stylise(small)[0]), atol=1e-6)


@pytest.mark.parametrize("rows_at_once", [render.ROWS_AT_ONCE, 5])
@pytest.mark.parametrize("source,length,start,end", [(9, 50, 0, 50), (9, 101, 13, 77), (24, 300, 250, 300),
                                                     (240, 3000, 0, 256)])
def test_a_bands_rows_are_bicubic_interpolation(source, length, start, end, rows_at_once, monkeypatch):
    """The composition's rows come from matrix products of each few rows' weights with their source rows: they must
    be PyTorch's bicubic enlargement (a = −0.75, edge rows repeated) of those rows, at the edges too."""
    monkeypatch.setattr(render, "ROWS_AT_ONCE", rows_at_once)
    torch.manual_seed(2)
    coefficients = torch.randn(source, 3, 11)  # (h, planes, W), as guided_upsample stores them
    want = F.interpolate(coefficients.permute(1, 0, 2)[None], size=(length, 11), mode="bicubic",
                         align_corners=False)[0].permute(1, 0, 2)[start:end]
    taps, weights = render.bicubic_taps(source, length)
    torch.testing.assert_close(render._interpolated_rows(coefficients, taps[start:end], weights[start:end]), want,
                               atol=1e-5, rtol=1e-5)


def test_the_stroke_scale_sets_the_working_grid(generator, cat):
    seen = []

    def stylise(batch):
        seen.append(tuple(batch.shape[-2:]))
        return stylise_with(generator, torch.zeros(3))(batch)

    for scale in (1.0, 2.0, 0.5):
        out = render.render(stylise, cat[None], SIDE, stroke_scale=scale)
        assert out.shape == (1, 3, 300, 451)
    assert seen == [(64, 96), (32, 48), (128, 192)]
    # At the working grid's own size nothing is resampled: the candidate is the generator's output itself.
    preview = render.resample(cat[None], (64, 96))
    assert torch.equal(render.render(stylise, preview, SIDE), stylise(preview))


def test_bytes_as_decoded_render_what_the_float_photo_renders_to_within_a_level(generator, cat):
    """apply hands render the photo's bytes and writes the bytes it returns: the photo shrunk to the working grid as
    bytes, and the full-size result composed straight into bytes. That is the float path's picture rounded, and
    shrinking bytes rounds the working grid's input, which the generator passes on: a rare 3/255 apart."""
    stylise = stylise_with(generator, torch.tensor([0.3, -0.5, 1.0]))
    as_bytes = (cat * 255).round().to(torch.uint8)
    small_photo = render.to_bytes(render.resample(cat[None], (60, 90)))[0]
    # working grids 4.7× and 1.4× smaller than the photo (guided up), and one larger (rendered there, then shrunk)
    for photo, scale in ((as_bytes, 1.0), (as_bytes, 0.3), (small_photo, 1.0)):
        floats = render.render(stylise, (photo.float() / 255)[None], SIDE, scale)
        got = render.render(stylise, photo[None], SIDE, scale, as_bytes=True)
        assert got.dtype == torch.uint8 and got.shape == (1, *photo.shape)
        assert images.to_pil(got[0]).size == (photo.shape[2], photo.shape[1])
        difference = (got.float() - render.to_bytes(floats).float()).abs()
        assert difference.max() <= 3 and (difference > 1).float().mean() < 0.01 and difference.mean() < 0.3, \
            (scale, difference.max(), difference.mean())
    # Photos as floats and no shrinking of bytes: the bytes are exactly the float picture rounded.
    floats = render.render(stylise, cat[None], SIDE)
    assert torch.equal(render.render(stylise, cat[None], SIDE, as_bytes=True), render.to_bytes(floats))
    assert torch.equal(render.to_bytes(floats)[0], (floats[0] * 255).round().to(torch.uint8))


def test_bytes_are_enlarged_to_exactly_what_their_floats_are():
    """A photo smaller than its working grid is enlarged from its bytes (channels last, as decoded) in another memory
    layout, which is faster: the values must not change."""
    photo = render.to_bytes(torch.rand(2, 3, 30, 40))
    assert not photo.is_contiguous()
    floats = photo.float() / 255
    assert torch.equal(render.resample(photo, (45, 61)), render.resample(floats, (45, 61)))
    plain = F.interpolate(floats.contiguous(memory_format=torch.channels_last), size=(45, 61), mode="bicubic",
                          align_corners=False).clamp(0, 1)
    assert torch.equal(render.resample(floats, (45, 61)), plain)


def test_the_picture_hardly_depends_on_the_number_of_threads(proposed_session, cat):
    """Ray's actors stylise on one thread each and ``apply`` on all the cores, and ``ray_apply`` promises apply's
    pictures. oneDNN's and MKL's sums split by thread, so the bytes are not always identical, but no layer may make
    the split matter more than rounding does (norm statistics summed in chunks, tried for a 2 % faster forward,
    moved 6.6 % of this session's pixels by a level). The look's own strokes and the smallest (a grid
    larger than the photo)."""
    from styleprefs.controls import SMALLEST_STROKES
    from styleprefs.session import Session
    session = Session.open(proposed_session, "cpu")
    look = session.preferred_z()
    photo = render.to_bytes(images.shrink(cat, 320)[None])
    scales = (1.0, SMALLEST_STROKES / session.split(look)[1])
    threads_before = torch.get_num_threads()
    try:
        outputs = {}
        for threads, scale in itertools.product((1, 2), scales):
            torch.set_num_threads(threads)
            outputs[threads, scale] = session.stylise_batch(photo, look, stroke_scale=scale, as_bytes=True).int()
    finally:
        torch.set_num_threads(threads_before)
    for scale in scales:
        assert_equal_up_to_rounding(outputs[1, scale].to(torch.uint8), outputs[2, scale].to(torch.uint8),
                                    session.runtime.bf16)


def chroma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) → (B, 2, H, W): B − Y and R − Y, what keep-colours keeps of the photo."""
    y = render.luminance(x)
    return torch.cat([x[:, 2:3] - y, x[:, 0:1] - y], dim=1)


def test_the_strength_and_keep_colours_dials_are_exact():
    torch.manual_seed(0)
    photo, styled = torch.rand(2, 3, 20, 30) * 0.8 + 0.1, torch.rand(2, 3, 20, 30) * 0.8 + 0.1
    assert torch.equal(render.adjusted(styled, photo), styled)
    assert torch.allclose(render.adjusted(styled, photo, strength=0.0), photo)
    assert torch.allclose(render.adjusted(styled, photo, strength=0.25), 0.75 * photo + 0.25 * styled)
    kept = render.adjusted(styled, photo, keep_colours=True)
    unclamped = photo + render.luminance(styled) - render.luminance(photo)
    inside = ((unclamped >= 0) & (unclamped <= 1)).all(1, keepdim=True)  # the pixels the clamp to [0, 1] leaves alone
    assert inside.float().mean() > 0.3
    assert torch.allclose(chroma(kept)[inside.expand(-1, 2, -1, -1)], chroma(photo)[inside.expand(-1, 2, -1, -1)],
                          atol=1e-6)  # the photo's colours
    assert torch.allclose(render.luminance(kept)[inside], render.luminance(styled)[inside], atol=1e-6)  # the look's light
    with pytest.raises(ValueError):
        render.adjusted(styled, photo, strength=1.5)


def test_apply_with_the_dials_gives_the_photo_at_strength_0_and_its_colours_when_kept(proposed_session, tmp_path):
    from styleprefs.session import Session
    session = Session.open(proposed_session, "cpu")
    photo = (images.load_image(EXAMPLES / "photos" / "skimage_coffee.png", max_side=96) * 255).round().byte()[None]
    look = session.rounds()[0].z[1]
    none = session.stylise_batch(photo, look, strength=0.0, as_bytes=True)
    assert torch.equal(none, photo)  # at strength 0, the photo's own bytes
    full = session.stylise_batch(photo, look)
    half = session.stylise_batch(photo, look, strength=0.5)
    assert torch.allclose(half, (full + photo.float() / 255) / 2, atol=1e-5)
    kept = session.stylise_batch(photo, look, keep_colours=True)
    inside = ((kept > 0) & (kept < 1)).all(1, keepdim=True)  # pixels whose photo colours fit at the look's light
    assert inside.float().mean() > 0.5
    assert torch.allclose(render.luminance(kept)[inside], render.luminance(full)[inside], atol=1e-5)
    colours = inside.expand(-1, 2, -1, -1)
    assert torch.allclose(chroma(kept)[colours], chroma(photo.float() / 255)[colours], atol=1e-5)  # the photo's
