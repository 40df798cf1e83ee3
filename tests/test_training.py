"""The training loop on real networks at tiny sizes: crops, targets, and that it actually learns."""

import torch

from styleprefs import controls, images
from styleprefs.config import CONTENT_LAYER, STYLE_LAYERS, TrainSettings
from styleprefs.device import resolve
from styleprefs.losses import content_loss, style_loss
from styleprefs.networks import Discriminator, Generator
from styleprefs.training import (CropSampler, Trainer, WorkingScaleSampler, blended_targets, content_sampler, diff_augment,
                                gram_stats, loss_network)


def test_crops_have_the_training_size_and_range():
    sampler = CropSampler([torch.rand(3, 300, 200), torch.rand(3, 50, 70)], size=64)
    crops = sampler.sample(6, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 64, 64) and 0 <= crops.min() and crops.max() <= 1
    # Big images are shrunk once, up front, so each crop covers a sensible part of the picture.
    assert min(sampler.images[0].shape[-2:]) == 128


def test_working_scale_crops_are_unresized_pieces_of_the_photo_as_apply_sees_it():
    # A wide 400×1000 photo and a tall 900×300 one, as apply's generator would see them at a 320-px working side:
    # 128×320 and 320×107, give or take the jitter. A crop of up to 256² takes the batch's common shape, unresized.
    wide, tall = torch.rand(3, 400, 1000), torch.rand(3, 900, 300)
    sampler = WorkingScaleSampler([wide, tall], size=256, working_side=320, jitter=0.0)
    alone = sampler.sample(1, torch.Generator().manual_seed(3))
    assert alone.shape[-2:] in ((128, 256), (256, 107))
    both = sampler.sample(8, torch.Generator().manual_seed(0))
    assert both.shape == (8, 3, 128, 107) and 0 <= both.min() and both.max() <= 1
    # A photo seen at exactly its working scale is cropped, not resampled: the crop is found in it pixel for pixel.
    exact = torch.rand(3, 240, 320)
    crop = WorkingScaleSampler([exact], size=200, working_side=320, jitter=0.0).sample(1, torch.Generator())[0]
    windows = exact.unfold(1, 200, 1).unfold(2, 200, 1)  # (3, 41, 121, 200, 200)
    matches = [(windows[:, i, j] - c).abs().max() < 1e-5 for c in (crop, crop.flip(-1))
               for i in range(41) for j in range(121) if (windows[:, i, j, 0, 0] - c[:, 0, 0]).abs().max() < 1e-6]
    assert any(matches)


def test_sessions_without_a_content_crop_keep_their_resized_crops():
    photos = [torch.rand(3, 300, 200)]
    assert isinstance(content_sampler(photos, TrainSettings(content_crop=0), 320), CropSampler)
    assert isinstance(content_sampler(photos, TrainSettings(content_crop=256), 320), WorkingScaleSampler)
    assert TrainSettings.from_dict({}).content_crop == 0


def test_blended_targets_mix_the_paintings_grams():
    grams = {"relu1_1": torch.stack([torch.eye(4), 3 * torch.eye(4)])}
    targets = blended_targets(grams, n_styles=2)
    z = torch.tensor([[0.0, 0.0, 0.0, 9.0, -9.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    t = targets(z)["relu1_1"]
    assert torch.allclose(t[0], torch.eye(4), atol=1e-3)  # all painting 1
    assert torch.allclose(t[1], 2 * torch.eye(4), atol=1e-3)  # an even blend


def painting_targets(painting, side: int):
    """The CPU runtime, the loss network, the painting at ``side`` px and its Grams, on a fixed seed."""
    torch.manual_seed(0)
    rt = resolve("cpu")
    net = loss_network(rt, STYLE_LAYERS)
    style = images.load_image(painting, max_side=side)
    return rt, net, style, gram_stats(net, [style], rt, STYLE_LAYERS)


def test_a_short_training_moves_g_toward_the_style(painting, photos):
    rt, net, style, grams = painting_targets(painting, 96)
    settings = TrainSettings(size=64, batch=2)
    assert grams["relu3_1"].shape == (1, 256, 256)
    g, d = Generator(controls.z_dim(1), 8, 2), Discriminator(width=8)
    trainer = Trainer(rt.module(g), rt.module(d), net, settings, rt, 1, lr=settings.lr)
    test_photo = images.load_image(photos[1], max_side=64)[None]
    z = torch.zeros(1, 3)
    weights = controls.loss_weights(z, len(STYLE_LAYERS), 1).layers

    def style_and_content() -> tuple[float, float]:
        with torch.no_grad():
            out, ref = net(g(test_photo, z)), net(test_photo)
            return (style_loss(out, {k: v for k, v in grams.items()}, weights).item(),
                    content_loss(out[CONTENT_LAYER], ref[CONTENT_LAYER]).item())

    style_before, content_before = style_and_content()
    progress = list(trainer.run("init", 40, CropSampler([images.load_image(p, max_side=96) for p in photos], 64),
                                CropSampler([style], 64), lambda b, gen: torch.randn(b, 3, generator=gen),
                                blended_targets(grams, 1), torch.Generator().manual_seed(0)))
    assert [p.step for p in progress] == list(range(1, 41)) and progress[-1].total == 40
    assert set(progress[0].losses) >= {"content", "style", "colour", "adv", "disc"}
    style_after, content_after = style_and_content()
    # The objective at z = 0 on a photo it never trained on: content + style, as weighted in training.
    strength = controls.loss_weights(z, len(STYLE_LAYERS), 1).strength.item()
    before = content_before + settings.style_weight * strength * style_before
    after = content_after + settings.style_weight * strength * style_after
    assert after < 0.8 * before, (content_before, style_before, content_after, style_after)


def test_norm_only_steps_leave_the_convolutions_alone(painting, photos):
    rt, net, style, grams = painting_targets(painting, 64)
    settings = TrainSettings(size=32, batch=1)
    g = Generator(controls.z_dim(1), 4, 1)
    trainer = Trainer(g, Discriminator(width=4), net, settings, rt, 1, lr=1e-2)
    before = {k: v.clone() for k, v in g.state_dict().items()}

    def train(first: int, steps: int) -> None:
        list(trainer.run("init", steps, CropSampler([images.load_image(photos[0], max_side=64)], 32),
                         CropSampler([style], 32), lambda b, gen: torch.randn(b, 3, generator=gen),
                         blended_targets(grams, 1), torch.Generator().manual_seed(0), first_step=first,
                         norms_only_steps=2))

    train(0, 2)
    after = g.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("to_scale_shift" in k or "mapping" in k for k in changed)
    assert all(p.requires_grad for p in g.parameters())  # unfrozen again at the end
    train(2, 3)  # past the norm-only steps everything learns
    assert not torch.equal(before["encoder.0.conv.conv.weight"], g.state_dict()["encoder.0.conv.conv.weight"])


def test_diff_augment_shows_d_shifted_recoloured_cut_out_crops_and_passes_gradients(painting, photos):
    photo = images.load_image(photos[0], max_side=64)[None].repeat(3, 1, 1, 1).requires_grad_(True)
    out = diff_augment(photo, torch.Generator().manual_seed(0))
    assert out.shape == photo.shape
    cut = (out == 0).all(1).float().mean((1, 2))  # the cutout (a quarter of the crop, less at the border) and shift
    assert ((cut > 0.05) & (cut < 0.6)).all(), cut
    assert not torch.allclose(out[0], out[1])  # each sample its own draw
    out.sum().backward()
    assert photo.grad.abs().sum() > 0
    # With it, D sees augmented crops (cut out: zero in every channel) and only with it; a training step runs and G
    # still learns.
    rt, net, style, grams = painting_targets(painting, 64)
    for augmented in (True, False):
        settings = TrainSettings(size=32, batch=2, diff_augment=augmented)
        g, d = Generator(controls.z_dim(1), 4, 1), Discriminator(width=4)
        seen = []
        d.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach()))
        trainer = Trainer(g, d, net, settings, rt, 1, lr=1e-2)
        before = {k: v.clone() for k, v in g.state_dict().items()}
        progress = list(trainer.run("init", 2, CropSampler([images.load_image(photos[0], max_side=64)], 32),
                                    CropSampler([style], 32), lambda b, gen: torch.randn(b, 3, generator=gen),
                                    blended_targets(grams, 1), torch.Generator().manual_seed(0)))
        assert all(torch.isfinite(torch.tensor(list(p.losses.values()))).all() for p in progress)
        assert any(not torch.equal(before[k], v) for k, v in g.state_dict().items())
        cut_out = [float((crops == 0).all(1).float().mean()) for crops in seen]
        assert seen and (all(c > 0.05 for c in cut_out) if augmented else all(c == 0 for c in cut_out)), cut_out
