"""Losses: Gram matrices, content, style, colour, total variation, adversarial, and the style distance.

Feature and Gram errors are *relative* (divided by the target's squared norm), so every layer and
every term is of order one and the loss weights that z sets read as plain ratios.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Grams = dict[str, torch.Tensor]  # a picture's (or a target's) Gram matrices, by layer name


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix G = F Fᵀ / (C·H·W) of (B, C, H, W) features, in fp32 whatever the input dtype."""
    b, c, h, w = features.shape
    flat = features.float().reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def relative_error(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖x − t‖² / ‖t‖², reduced over all but the batch dimension, in fp32."""
    x, target = x.float().flatten(1), target.float().flatten(1)
    return (x - target).pow(2).sum(1) / target.pow(2).sum(1).clamp_min(1e-12)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Content loss: feature MSE at the content layer, relative to the target's energy; shape (B,)."""
    return relative_error(features, target)


def style_loss(
    features: dict[str, torch.Tensor],
    target_grams: dict[str, torch.Tensor],
    layer_weights: torch.Tensor,
) -> torch.Tensor:
    """Σ_l w_l ‖G_l(x) − T_l‖² / ‖T_l‖², per sample; ``layer_weights`` is (B, L) in ``target_grams`` order."""
    terms = [relative_error(gram(features[name]), target) for name, target in target_grams.items()]
    return (torch.stack(terms, 1) * layer_weights).sum(1)


def _chroma(rgb: torch.Tensor) -> torch.Tensor:
    """The two chroma channels (U, V of YUV, BT.601) of an RGB image."""
    r, g, b = rgb.float().unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack((b - y, r - y), 1)


def colour_loss(output: torch.Tensor, content: torch.Tensor, blur: int = 8) -> torch.Tensor:
    """MSE between the blurred chroma of output and photo, per sample: keeps the photo's own colours."""
    def smooth(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(_chroma(x), blur, blur, ceil_mode=True)
    return (smooth(output) - smooth(content)).pow(2).flatten(1).mean(1)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per sample."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for D: −log σ(D(real)) − log(1 − σ(D(fake)))."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for G, per sample: −log σ(D(G(x)))."""
    return F.softplus(-fake_logits.float()).flatten(1).mean(1)


def style_distance(features: dict[str, torch.Tensor], style_grams: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over layers of ‖G_l(x) − G_l(s)‖_F / ‖G_l(s)‖_F, per sample (the benchmarks' metric)."""
    terms = [relative_error(gram(features[name]), target).sqrt() for name, target in style_grams.items()]
    return torch.stack(terms, 1).mean(1)


def content_distance(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖F(x) − F(c)‖ / ‖F(c)‖ at the content layer, per sample."""
    return relative_error(features, target).sqrt()
