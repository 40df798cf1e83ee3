"""The CPU kernels: faster ways to compute layers of :mod:`styleprefs.networks` on a CPU, each equal to the plain
layer there up to rounding.

They exist for the speed of apply on a CPU, where the plain layers spend much of their time copying and padding
images, or run oneDNN at a fraction of its rate. ``networks`` decides when to take each (mostly in a CPU forward
without gradients, :func:`cpu_inference`); the kernels here only compute. ``benchmarks/speed.py`` times apply, which
runs them; ``tests/test_networks.py`` holds each to its plain layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .device import cpu_vector_floats


def cpu_inference(x: torch.Tensor) -> bool:
    """Whether ``x`` goes through a CPU forward with no gradient, not being traced (for export): where the layers take
    their faster routes, which autograd and a trace's dynamic sizes are left out of."""
    return x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.jit.is_tracing()


def may_overwrite(x: torch.Tensor) -> bool:
    """Whether a layer may overwrite its fresh fp32 intermediate images: a CPU inference forward (bf16 autocast keeps
    the plain layers, whose promotions to fp32 it relies on)."""
    return cpu_inference(x) and x.dtype == torch.float32


# Up to this many channels E[x²] comes from the Gram matrix (C multiply-adds a value, but one pass over the image)
# rather than squaring into a new image (two more passes): 0.27× the time for 16 channels at 736×736 (the image out of
# cache), 1.6× for 32 at 368×368 and 2× for 64 at 184×184, held to AVX2.
GRAM_STATS_CHANNELS = 16


def mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


MEND_VALUES = 2**22  # an image (per sample) this large pads with zeros and mends its borders (reflection_padded_conv)


def reflection_padded_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, int],
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


# The output convolution (ToRGB: k×k, to 3 channels) runs on a CPU one of two other ways, because oneDNN computes a
# k×k convolution with 3 outputs at under half its usual rate. In inference, on an image whose sides are multiples of
# the block, conv_by_phases computes blocks of r × c output pixels as 3·r·c channels of one convolution: 0.55× the
# plain layer's time at 736×736 on two threads held to AVX2 (4×2 blocks: 1.5× the arithmetic, at the full rate). The
# block is chosen by how many floats the CPU's vectors hold (cpu_vector_floats), as measured at 736×736: with AVX2's
# 8, 4×2 blocks (24 channels, three full vectors; 0.90× the time of 2×2 held to AVX2); with AVX-512's 16, 2×2 blocks
# (12 channels in one vector, the least arithmetic; 0.86× the time of 4×2). Otherwise (training, other sides)
# conv_by_rows, ~40% less time than the plain convolution.
RGB_BLOCKS = {8: (4, 2), 16: (2, 2)}


def rgb_block() -> tuple[int, int]:
    """The block of output pixels, rows × columns, that conv_by_phases takes on this CPU (RGB_BLOCKS)."""
    return RGB_BLOCKS[cpu_vector_floats()]


def conv_by_phases(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, block: tuple[int, int],
                   pad: int) -> torch.Tensor:
    """conv2d(reflection_pad(x, pad), weight, bias) for a square kernel, by blocks of r × c output pixels
    (``block``), whose sides must divide x's.

    Output pixel (r·i + p, c·j + q) = Σ w[dy, dx]·x_padded[r·i + p + dy, c·j + q + dx]: for each phase (p, q), a
    convolution of stride (r, c) with the kernel shifted by (p, q) inside a (k + r − 1) × (k + c − 1) window. All
    phases are the output channels of one such convolution, which is faster on a CPU than the same convolution on the
    image's space-to-depth, with no rearranged copy of the input; one reshape puts them in place."""
    c_out, c_in, k, _ = weight.shape
    r, c = block
    shifted = weight.new_zeros(c_out, r, c, c_in, k + r - 1, k + c - 1)
    for p in range(r):
        for q in range(c):
            shifted[:, p, q, :, p:p + k, q:q + k] = weight
    out = reflection_padded_conv(x, shifted.reshape(r * c * c_out, c_in, k + r - 1, k + c - 1),
                                 bias.repeat_interleave(r * c), (r, c), pad)
    b, _, h, w = out.shape
    return out.reshape(b, c_out, r, c, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c_out, r * h, c * w)


def conv_by_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv2d(x, weight, bias), unpadded, for a square kernel: k one-row convolutions to C_out·k channels plus a
    shifted sum over the rows. With gradients too (training takes it)."""
    c_out, c_in, k, _ = weight.shape
    rows = F.conv2d(x, weight.transpose(1, 2).reshape(c_out * k, c_in, 1, k))
    height = rows.shape[-2] - k + 1
    rows = rows.unflatten(1, (c_out, k))  # (B, C_out, k, H + k − 1, W): row dy of every kernel
    out = rows[:, :, 0, :height] + bias.view(1, -1, 1, 1)
    for dy in range(1, k):
        out.add_(rows[:, :, dy, dy : dy + height])
    return out


# Nearest 2× upsampling then a 3-tap filter, as one 4-tap filter of stride 2 on the small signal:
# y[2i] = w0·x[i − 1] + (w1 + w2)·x[i] and y[2i + 1] = (w0 + w1)·x[i] + w2·x[i + 1], so x[j] reaches
# y[2j − 1 … 2j + 2] through (w2, w1 + w2, w0 + w1, w0). Row k of this matrix is that kernel's tap k over
# (w0, w1, w2).
UPSAMPLING_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def upsampled_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv2d(reflection_pad(nearest_2×(x), 1), weight, bias) for a 3×3 ``weight``, computed on x itself.

    The upsampled image repeats each pixel twice, so each of x's pixels reaches a 4×4 patch of the output through
    4×4 taps summed from the 3×3 weights (UPSAMPLING_TAPS), and the upsampled image's one-pixel reflection border is
    x's edge repeated. So one transposed convolution of stride 2 on x with its edge repeated writes the output in
    place, at 4/9 of the arithmetic and without the 4× upsampled copy and its padding: 0.80× the time at 368×368 to
    736×736 (16 channels) of the four-phase 2×2 convolution it replaces, which then interleaved its phases by
    copying."""
    taps = UPSAMPLING_TAPS.to(weight)
    weight = torch.einsum("ak,oikl,bl->ioab", taps, weight, taps)  # (C_in, C_out, 4, 4), as the transpose takes
    # Padding 3 trims the output to the image: 1 for the kernel's reach back (y[2j − 1]), 2 for the repeated edge.
    return F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, bias, stride=2, padding=3)


Layer = Callable[..., torch.Tensor]


def residual_block_in_place(x: torch.Tensor, code: torch.Tensor, noise: torch.Tensor, conv1: Layer, norm1: Layer,
                            noise_scale: torch.Tensor, conv2: Layer, norm2: Layer) -> torch.Tensor:
    """x + norm2(conv2(relu(norm1(conv1(x) + noise_scale·noise)))), a residual block, where no gradient needs the
    intermediate images: the noise is added into the convolution's output, the norms, the ReLU and the residual sum
    overwrite the tensors they read, so the block makes three full-size tensors instead of six, and two fewer passes
    over them. x itself is left as it was."""
    h = conv1(x).addcmul_(noise_scale, noise)
    h = F.relu(norm1(h, code, in_place=True), inplace=True)
    return norm2(conv2(h), code, in_place=True).add_(x)
