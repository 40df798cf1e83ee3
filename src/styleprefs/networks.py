"""The networks: the generator G(content, z) and the PatchGAN discriminator D.

G follows Johnson et al.'s transformation network (encoder → residual blocks → upsample-then-conv
decoder) with every instance norm's scale and shift predicted from z (conditional instance norm /
FiLM), and per-channel scaled noise whose pattern is seeded by z, so one z always gives one image.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from . import kernels


class FiLMNorm(nn.Module):
    """Instance norm whose per-channel scale and shift are a linear function of the style code.

    With ``keep_stats`` set (see :func:`shared_norm_stats`) the first forward records the per-channel
    mean and variance it normalised with, and later forwards reuse them instead of their input's own:
    this is how the tiles of one large image are all normalised as the whole image is. Its statistics come from
    :func:`styleprefs.kernels.mean_var`."""

    eps = 1e-5

    def __init__(self, channels: int, code_dim: int):
        super().__init__()
        self.to_scale_shift = nn.Linear(code_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)
        self.keep_stats = False
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, var), each (B, C, 1, 1), fp32

    def forward(self, x: torch.Tensor, code: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """``in_place``: overwrite ``x`` (fp32, needed by nothing else) instead of making a new image."""
        scale, shift = self.to_scale_shift(code)[:, :, None, None].float().chunk(2, dim=1)
        if self.stats is None:
            mean, var = kernels.mean_var(x)
            if self.keep_stats:
                self.stats = mean, var
        else:
            mean, var = self.stats
        # (x − μ)/σ·(1 + s) + t folded into one multiply-add over the image, x·a + b: about 1.4× faster than
        # InstanceNorm2d then FiLM on a CPU (fewer passes, no copies out of channels_last).
        a = (1 + scale) * torch.rsqrt(var + self.eps)
        if in_place:
            return torch.addcmul(shift - mean * a, x, a, out=x)
        return torch.addcmul(shift - mean * a, x, a).to(x.dtype)


@contextlib.contextmanager
def shared_norm_stats(generator: nn.Module) -> Iterator[None]:
    """Within: the first forward of ``generator`` records every FiLMNorm's statistics, later ones reuse them."""
    norms = [m for m in generator.modules() if isinstance(m, FiLMNorm)]
    for m in norms:
        m.keep_stats, m.stats = True, None
    try:
        yield
    finally:
        for m in norms:
            m.keep_stats, m.stats = False, None


class Conv(nn.Module):
    """Reflection-padded convolution (padding by reflection reduces edge artefacts). A CPU forward without gradients
    takes :func:`styleprefs.kernels.reflection_padded_conv`, the same result without the padded copy."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.cpu_inference(x):
            return kernels.reflection_padded_conv(x, self.conv.weight, self.conv.bias, self.conv.stride,
                                                  self.pad.padding[0])
        return self.conv(self.pad(x))


class ToRGB(Conv):
    """The last, wide-kernel convolution to 3 channels. oneDNN computes it at under half its usual rate, so on a CPU
    it runs as :func:`styleprefs.kernels.conv_by_phases` in inference where the image's sides allow, otherwise as
    :func:`styleprefs.kernels.conv_by_rows`: the same weights and, up to rounding, the same result."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        block = kernels.rgb_block()
        if kernels.cpu_inference(x) and x.shape[-2] % block[0] == 0 and x.shape[-1] % block[1] == 0:
            return kernels.conv_by_phases(x, self.conv.weight, self.conv.bias, block, self.pad.padding[0])
        return kernels.conv_by_rows(self.pad(x), self.conv.weight, self.conv.bias)


class ConvNormReLU(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, code_dim: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.conv = Conv(c_in, c_out, kernel, stride)
        self.norm = FiLMNorm(c_out, code_dim)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if not self.upsample:
            x = self.conv(x)
        elif kernels.cpu_inference(x) and self.conv.conv.kernel_size == (3, 3):
            x = kernels.upsampled_conv(x, self.conv.conv.weight, self.conv.conv.bias)
        else:
            # Upsample-then-conv avoids a learned transposed convolution's checkerboard; the route above is a
            # transposed convolution whose taps are tied to the 3×3 weights: the same layer.
            x = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        # Without gradients the convolution's fresh output is normalised where it lies.
        return F.relu(self.norm(x, code, in_place=kernels.may_overwrite(x)), inplace=True)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, code_dim: int):
        super().__init__()
        self.conv1 = Conv(channels, channels, 3)
        self.norm1 = FiLMNorm(channels, code_dim)
        self.noise_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.conv2 = Conv(channels, channels, 3)
        self.norm2 = FiLMNorm(channels, code_dim)

    def forward(self, x: torch.Tensor, code: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if kernels.may_overwrite(x):  # the same block, overwriting its own intermediate images
            return kernels.residual_block_in_place(x, code, noise, self.conv1, self.norm1, self.noise_scale,
                                                   self.conv2, self.norm2)
        h = self.conv1(x) + self.noise_scale * noise
        h = F.relu(self.norm1(h, code))
        return x + self.norm2(self.conv2(h), code)


def z_seed(z: torch.Tensor) -> int:
    """The seed of one z's noise map: a hash of its bytes as fp32."""
    digest = hashlib.blake2b(z.detach().float().cpu().reshape(-1).numpy().tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def z_noise(z: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One (B, 1, H, W) standard-normal noise map per sample, seeded by the bytes of its z."""
    maps = [torch.randn(1, height, width, generator=torch.Generator().manual_seed(z_seed(row))) for row in z]
    return torch.stack(maps).to(device=z.device)


class Generator(nn.Module):
    """G(content, z) → stylised image of the same size; content and output are RGB in [0, 1]."""

    def __init__(self, z_dim: int, width: int, n_residual: int, code_dim: int = 64):
        super().__init__()
        self.z_dim, self.code_dim = z_dim, code_dim
        self.mapping = nn.Sequential(nn.Linear(z_dim, code_dim), nn.ReLU(), nn.Linear(code_dim, code_dim), nn.ReLU())
        self.encoder = nn.ModuleList([
            ConvNormReLU(3, width, 9, code_dim),
            ConvNormReLU(width, 2 * width, 3, code_dim, stride=2),
            ConvNormReLU(2 * width, 4 * width, 3, code_dim, stride=2),
        ])
        self.residual = nn.ModuleList([ResidualBlock(4 * width, code_dim) for _ in range(n_residual)])
        self.decoder = nn.ModuleList([
            ConvNormReLU(4 * width, 2 * width, 3, code_dim, upsample=True),
            ConvNormReLU(2 * width, width, 3, code_dim, upsample=True),
        ])
        self.to_rgb = ToRGB(width, 3, 9)

    def forward(self, content: torch.Tensor, z: torch.Tensor, noise: torch.Tensor | None = None,
                code_shift: torch.Tensor | None = None) -> torch.Tensor:
        """``noise``: the residual blocks' noise map (B, 1, ⌈H/4⌉, ⌈W/4⌉); by default ``z_noise`` of this size
        (tiling passes each tile its crop of the whole image's map). ``code_shift`` (B, code_dim) is added to the
        norms' code: pretraining's per-painting embedding (``tools/pretrain.py``; :mod:`styleprefs.start`)."""
        height, width = content.shape[-2:]
        # Two stride-2 convolutions: pad to a multiple of 4 so the output matches the input's size.
        pad_h, pad_w = -height % 4, -width % 4
        x = F.pad(content * 2 - 1, (0, pad_w, 0, pad_h), mode="replicate")
        code = self.mapping(z.to(x.dtype))
        if code_shift is not None:
            code = code + code_shift.to(code.dtype)
        for layer in self.encoder:
            x = layer(x, code)
        noise = (z_noise(z, x.shape[-2], x.shape[-1]) if noise is None else noise).to(x.device, x.dtype)
        noise = noise.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
            memory_format=torch.channels_last) and not x.is_contiguous() else noise
        for block in self.residual:
            x = block(x, code, noise)
        for layer in self.decoder:
            x = layer(x, code)
        return torch.sigmoid(self.to_rgb(x).float())[..., :height, :width]


class Discriminator(nn.Module):
    """PatchGAN: a few strided, spectrally normalised convolutions; one logit per overlapping patch."""

    def __init__(self, width: int = 32, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(n_layers):
            c_out = width * 2**i
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers.append(spectral_norm(nn.Conv2d(c_in, 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)
