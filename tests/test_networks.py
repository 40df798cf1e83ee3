import math

import pytest
import torch

from styleprefs import controls, kernels
from styleprefs.kernels import GRAM_STATS_CHANNELS, RGB_BLOCKS, conv_by_phases, reflection_padded_conv
from styleprefs.networks import ConvNormReLU, Discriminator, FiLMNorm, Generator, ResidualBlock, ToRGB


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    g = Generator(z_dim=3, width=8, n_residual=2).eval()
    # Give FiLM non-zero weights, as training would, so z reaches the output.
    for name, p in g.named_parameters():
        if "to_scale_shift" in name or "noise_scale" in name:
            torch.nn.init.normal_(p, std=0.3)
    return g


@pytest.mark.parametrize("h,w", [(64, 64), (65, 67), (33, 90), (17, 21)])
def test_generator_keeps_any_size(generator, h, w):
    out = generator(torch.rand(1, 3, h, w), torch.zeros(1, 3))
    assert out.shape == (1, 3, h, w)
    assert out.min() >= 0 and out.max() <= 1


def test_same_z_same_output_and_different_z_different_output(generator):
    x = torch.rand(1, 3, 48, 48)
    z1, z2 = torch.randn(1, 3), torch.randn(1, 3)
    with torch.no_grad():
        a, b, c = generator(x, z1), generator(x, z1), generator(x, z2)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3


def test_batch_matches_single_samples(generator):
    x = torch.rand(2, 3, 40, 40)
    z = torch.randn(2, 3)
    with torch.no_grad():
        batch = generator(x, z)
        singles = torch.cat([generator(x[i : i + 1], z[i : i + 1]) for i in range(2)])
    assert torch.allclose(batch, singles, atol=1e-5)


def test_channels_last_gives_the_same_image(generator):
    x = torch.rand(1, 3, 40, 40)
    z = torch.randn(1, 3)
    with torch.no_grad():
        a = generator(x, z)
        g_cl = Generator(3, 8, 2).eval()
        g_cl.load_state_dict(generator.state_dict())
        g_cl = g_cl.to(memory_format=torch.channels_last)
        b = g_cl(x.contiguous(memory_format=torch.channels_last), z)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_row_split_output_conv_equals_the_plain_convolution(channels_last):
    """ToRGB's CPU path (one-row convolutions and a shifted sum) must be the k×k convolution, values and gradients."""
    torch.manual_seed(1)
    layer = ToRGB(8, 3, 9)
    x = torch.rand(2, 8, 23, 31)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = layer(x)
    expected = layer.conv(layer.pad(x))
    assert out.shape == expected.shape == (2, 3, 23, 31)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (x, layer.conv.weight, layer.conv.bias))
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, layer.conv.weight, layer.conv.bias))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("h,w", [(24, 32), (22, 30), (23, 31)])
def test_the_inference_routes_are_the_plain_layers(channels_last, h, w):
    """Without gradients a CPU forward takes other routes (ToRGB as one strided convolution to the output phases of
    its blocks of pixels, where the sides allow; the decoder's upsampling folded into a transposed convolution of the
    small image): each must be the layer as trained, to rounding."""
    torch.manual_seed(2)
    rgb = ToRGB(8, 3, 9)
    up = ConvNormReLU(8, 6, 3, code_dim=4, upsample=True)
    torch.nn.init.normal_(up.norm.to_scale_shift.weight, std=0.3)
    x, code = torch.rand(2, 8, h, w), torch.randn(2, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast_rgb, fast_up = rgb(x), up(x, code)
        plain_up = up.norm(up.conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")), code).relu()
        plain_rgb = rgb.conv(rgb.pad(x))
    assert fast_rgb.shape == (2, 3, h, w) and fast_up.shape == (2, 6, 2 * h, 2 * w)
    torch.testing.assert_close(fast_rgb, plain_rgb, atol=1e-5, rtol=1e-5)
    for block in RGB_BLOCKS.values():  # every block shape, not only the one this CPU's vectors choose
        if h % block[0] == 0 and w % block[1] == 0:
            with torch.no_grad():
                phases = conv_by_phases(x, rgb.conv.weight, rgb.conv.bias, block, rgb.pad.padding[0])
            torch.testing.assert_close(phases, plain_rgb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_up, plain_up, atol=1e-5, rtol=1e-5)
    with torch.enable_grad():  # training's route, the same layer
        torch.testing.assert_close(up(x, code), fast_up, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [3, GRAM_STATS_CHANNELS, GRAM_STATS_CHANNELS + 1, 64])
def test_the_norm_without_film_is_instance_norm(channels_last, channels, autocast):
    """The norm's statistics take two routes by channel count (E[x²] from the Gram matrix or from x²); both must be
    instance norm's, on images whose channels have means up to twice their spread, as a convolution's outputs do
    (E[x²] − E[x]² in fp32 loses digits to channels whose mean is hundreds of times their spread; in bf16, as
    autocast made the products, 2.4 % of the variance)."""
    torch.manual_seed(4)
    norm = FiLMNorm(channels, code_dim=4)  # FiLM starts at zero: scale 1, shift 0
    spread = 0.5 + 1.5 * torch.rand(2, channels, 1, 1)
    x = torch.randn(2, channels, 37, 29) * spread + (4 * torch.rand(2, channels, 1, 1) - 2) * spread
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        got = norm(x, torch.randn(2, 4))
    torch.testing.assert_close(got, torch.nn.functional.instance_norm(x, eps=norm.eps), atol=1e-5, rtol=1e-5)


def test_a_residual_block_in_place_without_gradients_is_the_trained_block_and_leaves_its_input():
    torch.manual_seed(3)
    block = ResidualBlock(6, code_dim=4)
    for p in (block.noise_scale, block.norm1.to_scale_shift.weight, block.norm2.to_scale_shift.weight):
        torch.nn.init.normal_(p, std=0.5)
    x = torch.rand(2, 6, 9, 11).contiguous(memory_format=torch.channels_last)
    code, noise = torch.randn(2, 4), torch.randn(2, 1, 9, 11)
    before = x.clone()
    with torch.no_grad():
        fast = block(x, code, noise)
    assert torch.equal(x, before)  # the residual sum is written into the block's own tensor, not into x
    torch.testing.assert_close(fast, block(x, code, noise).detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel,stride,pad,h,w", [
    ((3, 3), (1, 1), 1, 20, 23),     # the residual blocks'
    ((3, 3), (2, 2), 1, 40, 41),     # the encoder's downsampling, even and odd sides
    ((9, 9), (1, 1), 4, 45, 50),     # the first layer's
    ((12, 10), (4, 2), 4, 64, 58),   # ToRGB's 4×2 blocks
    ((10, 10), (2, 2), 4, 60, 62),   # ToRGB's 2×2 blocks
])
def test_a_convolution_padded_with_zeros_then_mended_at_the_borders_is_the_reflection_padded_one(
        channels_last, kernel, stride, pad, h, w, monkeypatch):
    """Inference's convolutions of large images pad with zeros and recompute the outputs the padding reaches from
    reflection-padded strips: every output, at every edge and corner, must be the reflection-padded convolution's."""
    monkeypatch.setattr(kernels, "MEND_VALUES", 0)  # these small images too
    torch.manual_seed(5)
    # Weights of a trained layer's scale (outputs about ±1), so that fp32 rounding stays far below the tolerance
    # whatever kernels this CPU runs (2e-5 apart at 9×9 with unit weights on the AVX2 EPYC), and a wrong border
    # (off by about the outputs' own size) far above it.
    x, bias = torch.randn(2, 5, h, w), torch.randn(7)
    weight = torch.randn(7, 5, *kernel) / math.sqrt(5 * math.prod(kernel))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (pad,) * 4, mode="reflect"), weight, bias, stride)
        got = reflection_padded_conv(x, weight, bias, stride, pad)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_the_mended_convolution_leaves_bf16_and_empty_batches_to_the_plain_route(monkeypatch):
    """Under bf16 autocast the plain route's very result (oneDNN's AMX bf16 convolution of a narrow strip gave NaNs),
    and an empty batch as the plain route shapes it."""
    monkeypatch.setattr(kernels, "MEND_VALUES", 0)
    torch.manual_seed(6)
    x, weight, bias = torch.randn(1, 4, 40, 44), torch.randn(6, 4, 3, 3) / 6, torch.randn(6)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        plain = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1,) * 4, mode="reflect"), weight, bias)
        assert torch.equal(reflection_padded_conv(x, weight, bias, (1, 1), 1), plain)
    with torch.inference_mode():
        assert reflection_padded_conv(x[:0], weight, bias, (2, 2), 1).shape == (0, 6, 20, 22)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("h,w", [(52, 37), (64, 72)])
def test_a_generator_forward_without_gradients_is_the_one_training_runs(generator, channels_last, h, w, monkeypatch):
    """Every inference route at once (the residual blocks' in-place one too, with noise and FiLM weights as trained),
    in both layouts apply uses, on sides too small for the convolutions' border strips and large enough for them
    and ToRGB's blocks; and the input is left as it was."""
    monkeypatch.setattr(kernels, "MEND_VALUES", 0)  # the border strips at these sizes too
    x, z = torch.rand(2, 3, h, w), torch.randn(2, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    before = x.clone()
    with torch.inference_mode():
        fast = generator(x, z)
    torch.testing.assert_close(fast, generator(x, z).detach(), atol=1e-5, rtol=1e-5)
    assert torch.equal(x, before)


def test_discriminator_gives_a_grid_of_patch_logits():
    d = Discriminator(width=8)
    logits = d(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 1, 8, 8)


def test_loss_weights_from_z():
    z = torch.tensor([[-3.0, -3.0, -3.0, 2.0, 0.0], [3.0, 3.0, 3.0, 0.0, 2.0]])
    w = controls.loss_weights(z, n_layers=4, n_styles=2)
    assert torch.allclose(w.layers.mean(1), torch.ones(2))
    assert w.layers[0, 0] > w.layers[0, -1]  # negative stroke: fine strokes, shallow layers weigh more
    assert w.layers[1, -1] > w.layers[1, 0]
    assert w.strength[1] > 5 * w.strength[0]
    assert 0 < w.colour[0] < 0.01 < 0.99 < w.colour[1] < 1
    assert torch.allclose(w.blend.sum(1), torch.ones(2))
    assert w.blend[0, 0] > 0.9 and w.blend[1, 1] > 0.9
    assert controls.z_dim(1) == 3 and controls.z_dim(3) == 6


def test_the_colour_centre_moves_where_the_photo_colour_pull_is_half_on():
    z = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.5]])
    assert torch.allclose(controls.loss_weights(z, 4, 1).colour[0], torch.tensor(0.5))
    shifted = controls.loss_weights(z, 4, 1, colour_centre=1.5).colour
    assert shifted[0] < 0.05 and torch.allclose(shifted[1], torch.tensor(0.5))
