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

from .device import cpu_vector_floats


class FiLMNorm(nn.Module):
    """Instance norm whose per-channel scale and shift are a linear function of the style code.

    With ``keep_stats`` set (see :func:`shared_norm_stats`) the first forward records the per-channel
    mean and variance it normalised with, and later forwards reuse them instead of their input's own:
    this is how the tiles of one large image are all normalised as the whole image is."""

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
            mean, var = _mean_var(x)
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


# Up to this many channels E[x²] comes from the Gram matrix (C multiply-adds a value, but one pass over the image)
# rather than squaring into a new image (two more passes): 0.27× the time for 16 channels at 736×736 (the image out of
# cache), 1.6× for 32 at 368×368 and 2× for 64 at 184×184, held to AVX2.
GRAM_STATS_CHANNELS = 16


def _mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and variance over the image, (B, C, 1, 1) each, in fp32: E[x] as a
    matrix-vector product, E[x²] as another or, up to GRAM_STATS_CHANNELS channels, as the diagonal of the channels'
    Gram matrix; about 3× faster on a CPU than ``torch.var_mean``'s reduction over H and W. In fp32 under bf16
    autocast too: E[x²] − E[x]² from bf16 products lost 2.4 % of the variance where a channel's mean was twice its
    spread."""
    x = x.float()
    b, c, h, w = x.shape
    with torch.autocast(x.device.type, enabled=False):
        average = x.new_full((b, 1, h * w), 1 / (h * w))
        if x.is_contiguous():
            flat = x.reshape(b, c, h * w).transpose(1, 2)
        else:  # channels_last: (B, H·W, C) is a view
            flat = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        mean = torch.bmm(average, flat)
        if c <= GRAM_STATS_CHANNELS:  # x read once, no x² written
            mean_sq = torch.bmm(flat.transpose(1, 2), flat).diagonal(dim1=1, dim2=2).unsqueeze(1) / (h * w)
        else:
            mean_sq = torch.bmm(average, flat * flat)
    return mean.reshape(b, c, 1, 1), (mean_sq - mean * mean).clamp_min(0).reshape(b, c, 1, 1)


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
    takes :func:`_reflection_padded_conv`, the same result without the padded copy for large images."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _cpu_inference(x):
            return _reflection_padded_conv(x, self.conv.weight, self.conv.bias, self.conv.stride, self.pad.padding[0])
        return self.conv(self.pad(x))


MEND_VALUES = 2**22  # an image (per sample) this large pads with zeros and mends its borders (_reflection_padded_conv)


def _reflection_padded_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, int],
                            pad: int) -> torch.Tensor:
    """conv2d(reflection_pad(x, pad), weight, bias, stride) without the padded copy: a convolution padded with zeros
    (which oneDNN pads as it goes), then the outputs the padding reaches, a few rows and columns at each edge,
    recomputed from reflection-padded strips of x.

    The plain route (pad a copy, then convolve) is taken for images under MEND_VALUES values a sample or under four
    kernels a side, kernels not wider than twice the padding (whose first strip could not be padded by reflection),
    and anything but plain fp32. Why: at 736×736, 16 channels, channels last, a CPU pads by reflection at a third of
    its memory rate (10.8 ms to pad for a 7.5 ms stride-2 convolution, held to AVX2), while the strips' convolutions
    cost about 0.8 ms there, more than padding a small image (64 channels at 184×184: 0.4 ms); and with AMX, oneDNN's
    bf16 convolution of a strip a few pixels wide gave NaNs (PyTorch 2.14)."""
    k_rows, k_cols = weight.shape[-2:]
    if (pad == 0 or x.shape[1:].numel() < MEND_VALUES or min(k_rows, k_cols) <= 2 * pad
            or min(x.shape[-2:]) < 4 * max(k_rows, k_cols) + 2 * max(stride)
            or x.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type)):
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect") if pad else x, weight, bias, stride)
    out = F.conv2d(x, weight, bias, stride, padding=pad)
    for dim, kernel, step in ((2, k_rows, stride[0]), (3, k_cols, stride[1])):
        size, n = x.shape[dim], out.shape[dim]
        first = -(-pad // step)  # outputs before this one reach into the padding before the image
        last = -(-(size + pad - kernel + 1) // step)  # this output and those after reach into the padding after it
        bands = [(0, first, 0, (first - 1) * step + kernel - pad, pad, 0)]  # outputs, input rows, padding before/after
        if last < n:
            bands.append((last, n, last * step - pad, size, 0, (n - 1) * step + kernel - pad - size))
        for out_from, out_to, in_from, in_to, before, after in bands:
            strip = x.narrow(dim, in_from, in_to - in_from)
            pads = (pad, pad, before, after) if dim == 2 else (before, after, pad, pad)
            out.narrow(dim, out_from, out_to - out_from).copy_(
                F.conv2d(F.pad(strip, pads, mode="reflect"), weight, bias, stride))
    return out


def _cpu_inference(x: torch.Tensor) -> bool:
    """Whether ``x`` goes through a CPU forward with no gradient, not being traced (for export): where the layers below
    take their faster routes, which autograd and a trace's dynamic sizes are left out of."""
    return x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.jit.is_tracing()


def _may_overwrite(x: torch.Tensor) -> bool:
    """Whether a layer may overwrite its fresh fp32 intermediate images: a CPU inference forward (bf16 autocast keeps
    the plain layers, whose promotions to fp32 it relies on)."""
    return _cpu_inference(x) and x.dtype == torch.float32


# ToRGB's inference route computes blocks of r × c output pixels as 3·r·c channels of one convolution; the block is
# chosen by how many floats the CPU's vectors hold (cpu_vector_floats), as measured at 736×736: with AVX2's 8, 4×2
# blocks (24 channels, three full vectors; 0.90× the time of 2×2 held to AVX2); with AVX-512's 16, 2×2 blocks (12
# channels in one vector, the least arithmetic; 0.86× the time of 4×2).
RGB_BLOCKS = {8: (4, 2), 16: (2, 2)}


class ToRGB(Conv):
    """The last, wide-kernel convolution to 3 channels. oneDNN computes a k×k convolution with 3 outputs at under
    half its usual rate, so on a CPU it runs another way, with the same weights and, up to rounding, the same result:

    - in inference on an image whose sides are multiples of its block (RGB_BLOCKS), as one strided convolution to
      the 3 values of each of a block's output pixels, put in place by one reshape: 0.55× the plain layer's time at
      736×736 on two threads held to AVX2 (4×2 blocks: 1.5× the arithmetic, at the full rate);
    - otherwise (training, other sides) as k one-row convolutions to 3·k channels plus a shifted sum over the rows,
      ~40% less time than the plain convolution.

    ``benchmarks/speed.py`` measures the forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        block = RGB_BLOCKS[cpu_vector_floats()]
        if _cpu_inference(x) and x.shape[-2] % block[0] == 0 and x.shape[-1] % block[1] == 0:
            return self._phases(x, block)
        weight, bias = self.conv.weight, self.conv.bias
        c_out, c_in, k, _ = weight.shape
        rows = F.conv2d(self.pad(x), weight.transpose(1, 2).reshape(c_out * k, c_in, 1, k))
        height = rows.shape[-2] - k + 1
        rows = rows.unflatten(1, (c_out, k))  # (B, C_out, k, H + k − 1, W): row dy of every kernel
        out = rows[:, :, 0, :height] + bias.view(1, -1, 1, 1)
        for dy in range(1, k):
            out.add_(rows[:, :, dy, dy : dy + height])
        return out

    def _phases(self, x: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
        """Output pixel (r·i + p, c·j + q) = Σ w[dy, dx]·x_padded[r·i + p + dy, c·j + q + dx] for blocks of r × c
        pixels (``block``): for each phase (p, q), a convolution of stride (r, c) with the kernel shifted by (p, q)
        inside a (k + r − 1) × (k + c − 1) window. All phases are the output channels of one such convolution,
        which is faster on a CPU than the same convolution on the image's space-to-depth, with no rearranged copy of
        the input."""
        weight, bias = self.conv.weight, self.conv.bias
        c_out, c_in, k, _ = weight.shape
        r, c = block
        shifted = weight.new_zeros(c_out, r, c, c_in, k + r - 1, k + c - 1)
        for p in range(r):
            for q in range(c):
                shifted[:, p, q, :, p:p + k, q:q + k] = weight
        out = _reflection_padded_conv(x, shifted.reshape(r * c * c_out, c_in, k + r - 1, k + c - 1),
                                      bias.repeat_interleave(r * c), (r, c), self.pad.padding[0])
        b, _, h, w = out.shape
        return out.reshape(b, c_out, r, c, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c_out, r * h, c * w)


class ConvNormReLU(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, code_dim: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.conv = Conv(c_in, c_out, kernel, stride)
        self.norm = FiLMNorm(c_out, code_dim)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if not self.upsample:
            x = self.conv(x)
        elif _cpu_inference(x) and self.conv.conv.kernel_size == (3, 3):
            x = _upsampled_conv(x, self.conv.conv)
        else:
            # Upsample-then-conv avoids a learned transposed convolution's checkerboard; the route above is a
            # transposed convolution whose taps are tied to the 3×3 weights: the same layer.
            x = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        # Without gradients the convolution's fresh output is normalised where it lies.
        return F.relu(self.norm(x, code, in_place=_may_overwrite(x)), inplace=True)


# Nearest 2× upsampling then a 3-tap filter, as one 4-tap filter of stride 2 on the small signal:
# y[2i] = w0·x[i − 1] + (w1 + w2)·x[i] and y[2i + 1] = (w0 + w1)·x[i] + w2·x[i + 1], so x[j] reaches
# y[2j − 1 … 2j + 2] through (w2, w1 + w2, w0 + w1, w0). Row k of this matrix is that kernel's tap k over
# (w0, w1, w2).
_UPSAMPLING_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _upsampled_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(reflection_pad(nearest_2×(x))) for a 3×3 ``conv``, computed on x itself (same result up to rounding).

    The upsampled image repeats each pixel twice, so each of x's pixels reaches a 4×4 patch of the output through
    4×4 taps summed from the 3×3 weights (``_UPSAMPLING_TAPS``), and the upsampled image's one-pixel reflection
    border is x's edge repeated. So one transposed convolution of stride 2 on x with its edge repeated writes the
    output in place, at 4/9 of the arithmetic and without the 4× upsampled copy and its padding: 0.80× the time at
    368×368 to 736×736 (16 channels) of the four-phase 2×2 convolution it replaces, which then interleaved its
    phases by copying."""
    taps = _UPSAMPLING_TAPS.to(conv.weight)
    weight = torch.einsum("ak,oikl,bl->ioab", taps, conv.weight, taps)  # (C_in, C_out, 4, 4), as the transpose takes
    # Padding 3 trims the output to the image: 1 for the kernel's reach back (y[2j − 1]), 2 for the repeated edge.
    return F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, conv.bias, stride=2, padding=3)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, code_dim: int):
        super().__init__()
        self.conv1 = Conv(channels, channels, 3)
        self.norm1 = FiLMNorm(channels, code_dim)
        self.noise_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.conv2 = Conv(channels, channels, 3)
        self.norm2 = FiLMNorm(channels, code_dim)

    def forward(self, x: torch.Tensor, code: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if _may_overwrite(x):
            return self._in_place(x, code, noise)
        h = self.conv1(x) + self.noise_scale * noise
        h = F.relu(self.norm1(h, code))
        return x + self.norm2(self.conv2(h), code)

    def _in_place(self, x: torch.Tensor, code: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The same block where no gradient needs the intermediate images: the noise is added into the convolution's
        output, the ReLU and the residual sum overwrite the tensors they read, so the block makes three full-size
        tensors instead of six, and two fewer passes over them."""
        h = self.conv1(x).addcmul_(self.noise_scale, noise)
        h = F.relu(self.norm1(h, code, in_place=True), inplace=True)
        return self.norm2(self.conv2(h), code, in_place=True).add_(x)


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

    def __init__(self, z_dim: int, width: int = 32, n_residual: int = 5, code_dim: int = 64):
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
        norms' code: pretraining's per-painting embedding (:mod:`styleprefs.pretrain`)."""
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
