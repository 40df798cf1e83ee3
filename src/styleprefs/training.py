"""The training loops of ``init`` and ``refine``; they yield progress and never print.

One step: draw content crops and a z per crop, let z set each sample's loss weights
(:mod:`styleprefs.controls`), and minimise

    λ_c·L_content + λ_s·strength(z)·Σ_l w_l(z)·L_style,l + λ_col·colour(z)·L_colour + λ_tv·L_tv + λ_adv·L_adv

for G, then one non-saturating GAN step for the PatchGAN D on crops of the paintings (and, after
``select``, of the chosen images) against the generated batch.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from . import controls, edges, losses
from .config import CONTENT_LAYER, TrainSettings
from .device import Runtime
from .networks import Discriminator, Generator
from .vgg import VGG19Features

# Draws a batch of z; the batch size and the random generator are given.
ZSampler = Callable[[int, torch.Generator], torch.Tensor]
# Maps a batch of z to its per-sample target Grams, layer → (B, C, C).
TargetFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]
# Maps a batch of z to its per-sample loss weights (by default what z means: controls.loss_weights).
WeightsFn = Callable[[torch.Tensor], controls.LossWeights]


@dataclass
class Progress:
    """One training step's report, for a progress bar or a log."""

    phase: str
    step: int
    total: int
    seconds: float
    losses: dict[str, float]


class CropSampler:
    """Random crops, flips and scales of images decoded once and kept in memory."""

    def __init__(self, images: list[torch.Tensor], size: int, min_scale: float = 0.6):
        # Scale each image so its short side is at most 2×size: a crop covers a sensible part of it.
        self.images = [self._fit(img, 2 * size) for img in images]
        self.size = size
        self.min_scale = min_scale

    @staticmethod
    def _fit(image: torch.Tensor, short: int) -> torch.Tensor:
        h, w = image.shape[-2:]
        scale = short / min(h, w)
        if scale >= 1:
            return image
        return F.interpolate(image[None], scale_factor=scale, mode="area", recompute_scale_factor=False)[0]

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        crops = []
        for _ in range(batch):
            image = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            h, w = image.shape[-2:]
            short = min(h, w)
            side = max(1, round(short * (self.min_scale + (1 - self.min_scale) * float(torch.rand(1, generator=generator)))))
            top = int(torch.randint(h - side + 1, (1,), generator=generator))
            left = int(torch.randint(w - side + 1, (1,), generator=generator))
            crop = image[:, top : top + side, left : left + side]
            crop = F.interpolate(crop[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                                 align_corners=False)[0]
            if float(torch.rand(1, generator=generator)) < 0.5:
                crop = crop.flip(-1)
            crops.append(crop.clamp(0, 1))
        return torch.stack(crops)


class WorkingScaleSampler:
    """Crops of the photos as ``apply``'s generator sees them: each photo scaled so its long side is about the working
    side (× 2^U(−jitter, jitter)), then an unresized crop of up to ``size``×``size`` px (all crops of a batch share the
    smallest image's shape), randomly flipped. Large crops at the working scale make each crop's Gram matrix the
    picture's own rather than a fragment's, and G learns its strokes at the grid it renders on."""

    def __init__(self, images: list[torch.Tensor], size: int, working_side: int, jitter: float = 0.25):
        self.images, self.size, self.working_side, self.jitter = images, size, working_side, jitter

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        picked = []
        for _ in range(batch):
            image = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            long_side = self.working_side * 2.0 ** (self.jitter * (2 * float(torch.rand(1, generator=generator)) - 1))
            scale = long_side / max(image.shape[-2:])
            size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
            picked.append(F.interpolate(image[None], size=size, mode="bilinear", antialias=True,
                                        align_corners=False)[0].clamp(0, 1))
        height = min(self.size, *(img.shape[-2] for img in picked))
        width = min(self.size, *(img.shape[-1] for img in picked))
        crops = []
        for image in picked:
            top = int(torch.randint(image.shape[-2] - height + 1, (1,), generator=generator))
            left = int(torch.randint(image.shape[-1] - width + 1, (1,), generator=generator))
            crop = image[:, top : top + height, left : left + width]
            crops.append(crop.flip(-1) if float(torch.rand(1, generator=generator)) < 0.5 else crop)
        return torch.stack(crops)


def diff_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DiffAugment (Zhao et al., 2020), differentiable: per sample a random brightness, saturation and contrast, a
    shift of up to 1/8 of the side (zero-filled) and a cutout of half the side. D sees real and generated crops
    through it alike, so it cannot learn the painting's crops by heart (``TrainSettings.diff_augment``)."""
    b, _, h, w = images.shape
    def draw(*shape):
        return torch.rand(*shape, generator=generator).to(images.device, images.dtype)
    x = images + (draw(b, 1, 1, 1) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (2 * draw(b, 1, 1, 1)) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (draw(b, 1, 1, 1) + 0.5) + mean
    out = torch.zeros_like(x)
    dy, dx = ((draw(2, b) * 2 - 1) * torch.tensor([[h / 8], [w / 8]])).round().long().tolist()
    for i in range(b):
        ty, tx = dy[i], dx[i]
        out[i, :, max(ty, 0):h + min(ty, 0), max(tx, 0):w + min(tx, 0)] = \
            x[i, :, max(-ty, 0):h + min(-ty, 0), max(-tx, 0):w + min(-tx, 0)]
    cy, cx = (draw(2, b) * torch.tensor([[h], [w]])).long().tolist()
    mask = torch.ones(b, 1, h, w, device=images.device, dtype=images.dtype)
    for i in range(b):
        mask[i, :, max(cy[i] - h // 4, 0):cy[i] + h // 4, max(cx[i] - w // 4, 0):cx[i] + w // 4] = 0
    return out * mask


def content_sampler(images: list[torch.Tensor], settings: TrainSettings,
                    working_side: int) -> CropSampler | WorkingScaleSampler:
    """G's training photos: ``content_crop`` px crops at the working scale, or (0, the default) ``size`` px crops of
    the photos at up to twice that short side, resized."""
    if settings.content_crop:
        return WorkingScaleSampler(images, settings.content_crop, working_side)
    return CropSampler(images, settings.size)


def loss_network(runtime: Runtime, style_layers: tuple[str, ...], padding: str = "zeros") -> VGG19Features:
    """VGG19 truncated after the deepest layer that training uses, its convolutions padded with ``padding``; built
    once per device and padding (it is frozen)."""
    return _built(runtime, tuple(dict.fromkeys((*style_layers, CONTENT_LAYER))), padding)


@lru_cache(maxsize=4)
def _built(runtime: Runtime, layers: tuple[str, ...], padding: str) -> VGG19Features:
    """The cached network of :func:`loss_network` (every argument given, so that one network is one key). Built
    outside inference mode whoever asks first, so that polish and training can take gradients through it."""
    with torch.inference_mode(False):
        return runtime.module(VGG19Features(layers, padding))


loss_network.cache_clear = _built.cache_clear  # as an lru_cache'd function offers it


def picture_network(runtime: Runtime, style_layers: tuple[str, ...], seen: str) -> VGG19Features | edges.Mirrored:
    """The loss network as training sees the pictures the generator makes (``TrainSettings.edges``, ``seen``): inside
    a mirror of themselves ("mirror"), or inside VGG19's zero padding ("zero")."""
    net = loss_network(runtime, style_layers)
    return edges.Mirrored(net) if seen == "mirror" else net


def aimed_grams(stored: dict[str, torch.Tensor], paintings: list[torch.Tensor], runtime: Runtime,
                settings: TrainSettings) -> dict[str, torch.Tensor]:
    """The paintings' Grams as training aims at them (``settings.edges``), layer → (K, C, C): over their interiors
    ("mirror"), else the session's ``stored`` Grams of the whole paintings (which the guard and the pretrained start's
    choice read)."""
    if settings.edges != "mirror":
        return stored
    return gram_stats(edges.Interior(loss_network(runtime, settings.style_layers)), paintings, runtime,
                      settings.style_layers)


@torch.no_grad()
def gram_stats(net: VGG19Features | edges.Interior | edges.Mirrored, images: list[torch.Tensor], runtime: Runtime,
               layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Gram matrices of each image, layer → (N, C, C), fp32 on the CPU (computed one image at a time)."""
    per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for image in images:
        with runtime.autocast():
            features = net(runtime.images(image[None]))
        for name in layers:
            per_layer[name].append(losses.gram(features[name])[0].float().cpu())
    return {name: torch.stack(grams) for name, grams in per_layer.items()}


def blended_targets(style_grams: dict[str, torch.Tensor], n_styles: int) -> TargetFn:
    """Targets for ``init``: each sample's Grams are its z's blend of the paintings' Grams."""
    def targets(z: torch.Tensor) -> dict[str, torch.Tensor]:
        blend = controls.loss_weights(z, len(style_grams), n_styles).blend.to(z.device)
        return {name: torch.einsum("bk,kij->bij", blend, grams.to(z.device)) for name, grams in style_grams.items()}
    return targets


class StopSignals:
    """While active, SIGINT and SIGTERM only *request* a stop, which the loop honours between steps,
    so a checkpoint is always taken at a step boundary (never half-way through an optimiser update)."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _augmenter(settings: TrainSettings) -> Callable[[torch.Tensor], torch.Tensor]:
    """What D sees of a batch: the batch itself, or with ``diff_augment`` a DiffAugment of it (its own random stream,
    seeded once per trainer)."""
    if not settings.diff_augment:
        return lambda images: images
    generator = torch.Generator().manual_seed(0)
    return lambda images: diff_augment(images, generator)


class Trainer:
    """Holds G, D, the loss network and their optimisers; ``run`` yields one Progress per step."""

    def __init__(self, generator: Generator, discriminator: Discriminator, net: VGG19Features | edges.Mirrored,
                 settings: TrainSettings, runtime: Runtime, n_styles: int, lr: float):
        self.g, self.d, self.net = generator, discriminator, net
        self.settings, self.runtime, self.n_styles = settings, runtime, n_styles
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=lr)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=settings.lr_discriminator, betas=(0.5, 0.999))
        self.augment = _augmenter(settings)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to continue training exactly: both networks and both optimisers."""
        out = {f"g.{k}": v for k, v in self.g.state_dict().items()}
        out.update({f"d.{k}": v for k, v in self.d.state_dict().items()})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            for index, state in opt.state_dict()["state"].items():
                out.update({f"{name}.{index}.{k}": torch.as_tensor(v) for k, v in state.items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.g.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g.")})
        self.d.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d.")})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith(f"{name}."):
                    _, index, field = key.split(".", 2)
                    state.setdefault(int(index), {})[field] = value
            full = opt.state_dict()
            full["state"] = state
            opt.load_state_dict(full)

    def step(self, content: torch.Tensor, real: torch.Tensor, z: torch.Tensor, targets: dict[str, torch.Tensor],
             weights: controls.LossWeights | None = None) -> dict[str, float]:
        s, rt = self.settings, self.runtime
        if weights is None:
            weights = controls.loss_weights(z, len(targets), self.n_styles, s.colour_centre)
        # D is frozen for G's update: the gradient flows through it to G, none is spent on its weights.
        self.d.requires_grad_(False)
        with rt.autocast():
            with torch.no_grad():
                content_features = self.net(content, until=CONTENT_LAYER)[CONTENT_LAYER]
            output = self.g(content, z)
            features = self.net(output)
            fake_logits = self.d(self.augment(output))
        l_content = losses.content_loss(features[CONTENT_LAYER], content_features)
        l_style = losses.style_loss(features, targets, weights.layers)
        l_colour = losses.colour_loss(output, content)
        l_tv = losses.total_variation(output)
        l_adv = losses.generator_adversarial_loss(fake_logits)
        total = (s.content_weight * l_content + s.style_weight * weights.strength * l_style
                 + s.colour_weight * weights.colour * l_colour + s.tv_weight * l_tv
                 + s.adversarial_weight * l_adv).mean()
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()

        # The discriminator learns to tell painting (and chosen) crops from generated ones.
        self.d.requires_grad_(True)
        with rt.autocast():
            l_d = losses.discriminator_loss(self.d(self.augment(real)), self.d(self.augment(output.detach())))
        self.opt_d.zero_grad(set_to_none=True)
        l_d.backward()
        self.opt_d.step()
        names = ("total", "content", "style", "colour", "adv", "disc")
        values = torch.stack([total, l_content.mean(), l_style.mean(), l_colour.mean(), l_adv.mean(), l_d]).detach().tolist()
        return dict(zip(names, values))  # one device sync per step, not six

    def train_norms_only(self, only: bool) -> None:
        """Let only the norms' parameters (the FiLM layers and the mapping from z that feeds them) learn, or all.
        Frozen weights get no gradient, so Adam leaves them, and their moments, as they are."""
        for name, parameter in self.g.named_parameters():
            parameter.requires_grad_(not only or "to_scale_shift" in name or "mapping" in name)

    def run(self, phase: str, steps: int, content: CropSampler, real: CropSampler,
            sample_z: ZSampler, targets: TargetFn, generator: torch.Generator,
            first_step: int = 0, weights: WeightsFn | None = None, norms_only_steps: int = 0) -> Iterator[Progress]:
        """Train from ``first_step`` to ``steps``; the first ``norms_only_steps`` adapt only the norms (Dumoulin et
        al.'s way to a new style, from a pretrained start)."""
        self.g.train()
        self.d.train()
        rt, batch = self.runtime, self.settings.batch
        start = time.perf_counter()
        for step in range(first_step, steps):
            if step in (first_step, norms_only_steps):
                self.train_norms_only(step < norms_only_steps)
            crops = rt.images(content.sample(batch, generator))
            real_crops = rt.images(real.sample(batch, generator))
            z = sample_z(batch, generator).to(rt.device)
            report = self.step(crops, real_crops, z, targets(z), weights(z) if weights else None)
            yield Progress(phase, step + 1, steps, time.perf_counter() - start, report)
        self.train_norms_only(False)
        self.g.eval()
        self.d.eval()
