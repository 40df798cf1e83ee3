import torch

from styleprefs import losses


def test_gram_matches_hand_computation():
    # One sample, two channels, 2×2 pixels: G_ij = Σ_p F_ip F_jp / (C·H·W).
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, -1.0]]]])
    expected = torch.tensor([[1 + 4 + 9 + 16, 0 + 2 + 0 - 4], [0 + 2 + 0 - 4, 0 + 1 + 0 + 1]]) / (2 * 2 * 2)
    assert torch.allclose(losses.gram(f)[0], expected)


def test_gram_is_fp32_and_symmetric_for_bf16_input():
    f = torch.randn(3, 8, 5, 7).to(torch.bfloat16)
    g = losses.gram(f)
    assert g.dtype == torch.float32 and g.shape == (3, 8, 8)
    assert torch.allclose(g, g.transpose(1, 2))


def test_content_loss_is_zero_at_target_and_relative():
    t = torch.randn(2, 4, 6, 6)
    assert torch.allclose(losses.content_loss(t, t), torch.zeros(2))
    # Relative: scaling both by 10 leaves the loss unchanged.
    x = t + 0.1 * torch.randn_like(t)
    assert torch.allclose(losses.content_loss(10 * x, 10 * t), losses.content_loss(x, t), rtol=1e-4)


def test_style_loss_weights_layers_per_sample():
    a = {"l1": torch.randn(2, 3, 4, 4), "l2": torch.randn(2, 5, 2, 2)}
    targets = {k: losses.gram(torch.randn_like(v)) for k, v in a.items()}
    only_first = losses.style_loss(a, targets, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    only_second = losses.style_loss(a, targets, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    both = losses.style_loss(a, targets, torch.ones(2, 2))
    assert torch.allclose(both, only_first + only_second)
    assert losses.style_loss(a, {k: losses.gram(v) for k, v in a.items()}, torch.ones(2, 2)).abs().max() < 1e-6


def test_colour_loss_ignores_brightness_but_sees_hue():
    photo = torch.rand(1, 3, 32, 32)
    grey_shift = (photo + 0.1).clamp(0, 1)
    red = photo.clone()
    red[:, 0] = 1.0
    assert losses.colour_loss(grey_shift, photo) < 1e-3
    assert losses.colour_loss(red, photo) > 10 * losses.colour_loss(grey_shift, photo)


def test_total_variation_of_flat_image_is_zero():
    assert losses.total_variation(torch.full((1, 3, 8, 8), 0.3)).item() == 0.0
    assert losses.total_variation(torch.rand(1, 3, 8, 8)).item() > 0.1


def test_adversarial_losses_point_the_right_way():
    confident_real = torch.full((4, 1, 3, 3), 5.0)
    confident_fake = torch.full((4, 1, 3, 3), -5.0)
    assert losses.discriminator_loss(confident_real, confident_fake) < 0.02
    assert losses.discriminator_loss(confident_fake, confident_real) > 9.0
    # G's loss is low when D believes its output is real.
    assert (losses.generator_adversarial_loss(confident_real) < losses.generator_adversarial_loss(confident_fake)).all()


def test_style_distance_is_zero_for_the_style_itself_and_grows_with_difference():
    f = {"a": torch.rand(1, 4, 8, 8), "b": torch.rand(1, 6, 4, 4)}
    grams = {k: losses.gram(v) for k, v in f.items()}
    assert losses.style_distance(f, grams).item() < 1e-4
    g = {k: v * 2 for k, v in f.items()}  # Gram ×4 → relative distance 3 per layer
    assert abs(losses.style_distance(g, grams).item() - 3.0) < 1e-4
