"""Every setting, as dataclasses that are saved into the session and validated once at the edge."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from numbers import Integral
from pathlib import Path

from .errors import BadInput

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
# relu4_1 rather than relu4_2: it is already computed for the style loss, so the loss network can be
# truncated there (about a third cheaper than running on to relu4_2/relu5_1), and AdaIN-style work
# shows it keeps the photo's layout while leaving room for strokes.
CONTENT_LAYER = "relu4_1"
# The metric of the benchmarks (style distance) also looks at relu5_1, which training never sees.
METRIC_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_RELUS = tuple(f"relu{block}_{conv}" for block, convs in enumerate((2, 2, 4, 4, 4), 1)
                  for conv in range(1, convs + 1))
MAX_BATCH = 8  # the most photos of one size in one forward of apply (pipeline.py says why)
DEFAULT_MAX_PIXELS = 100_000_000  # images larger than this are refused before decoding (decompression bombs)
MAX_APPLY_SIDE = 8192  # apply keeps a photo's own size up to this long side
MIN_WORKING_SIDE, MAX_WORKING_SIDE = 32, 2048  # the working sides a session may have, px
MIN_SHEET_SIDE, MAX_SHEET_SIDE = 32, 2048  # a contact sheet's candidates, long side in px
MIN_CANDIDATES, MAX_CANDIDATES = 1, 64  # candidates in a round
# Polish's style layers: training's and relu5_1, where a painting's largest forms show. The generator trains without
# it (its loss network stops at relu4_1, a third cheaper); finishing one picture can afford it, and without it a
# polished picture kept the photo's large-scale statistics (0.75–0.85 of the photo's relu5_1 distance to the painting,
# Gatys 0.25).
POLISH_STYLE_LAYERS = METRIC_STYLE_LAYERS
# Outputs of up to this many times the working grid's pixels (a 256-px photo of any aspect up to 2.5:1) are polished at
# their own size, from the generator's full-size picture; larger ones on the working grid, before the full-size
# composition, so the cost stays bounded. Resampling a finished picture blurs the finest strokes it was finished with:
# even 320 → 341 px cost a fifth of the style it had gained.
POLISH_OWN_GRID = 2.5
# Polish weighs the look's style term this much more than training does. On benchmarks/quality.py's 4 paintings × 4
# unseen photos, 40 steps at the default look removed 0.94–0.96 of Gatys's style distance at ×1.25, at content
# distances 0.05–0.07 below Gatys's; ×1.5 spends part of that margin on style.
POLISH_STYLE_GAIN = 1.5
# The most pixels polish works on at once (a forward and backward of VGG19 to relu5_1 over them): outputs polished at
# their own size stay under it, and a look whose working grid could pass it (strokes made very small with
# --stroke-scale) is refused before any photo is read. The default looks' largest grid is 735×551.
POLISH_MAX_PIXELS = 1 << 20
# Steps of polish (loss evaluations, each a forward and backward of the loss network over the picture): by default, and
# at most.
POLISH_STEPS, MAX_POLISH_STEPS = 40, 1000


class ConfigError(BadInput):
    """A setting out of range: reported to the user as bad input."""


def _check_range(value: int, low: int, high: int, what: str, option: str | None, unit: str = "") -> int:
    """``value``, refused unless it is a whole number from ``low`` to ``high``; ``option`` names the argument."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
        raise ConfigError(f"{what} must be between {low} and {high}{unit}, got {value}", option)
    return value


def check_candidates(n: int, option: str | None = "n") -> int:
    """A round's number of candidates."""
    return _check_range(n, MIN_CANDIDATES, MAX_CANDIDATES, "the number of candidates", option)


def check_sheet_side(size: int, option: str | None = "size") -> int:
    """The long side of a contact sheet's candidates."""
    return _check_range(size, MIN_SHEET_SIDE, MAX_SHEET_SIDE, "the sheet's size", option, " px")


def check_working_side(side: int, option: str | None = "working_side") -> int:
    """The long side the generator works at."""
    return _check_range(side, MIN_WORKING_SIDE, MAX_WORKING_SIDE, "the working side", option, " px")


@dataclass
class TrainSettings:
    """How the generator is trained by ``init`` and fine-tuned by ``refine``."""

    steps: int = 300               # optimisation steps of ``init``
    refine_steps: int = 100        # optimisation steps of ``refine``
    size: int = 128                # training crop side, px
    batch: int = 4                 # crops per step
    style_size: int = 256          # long side the paintings are seen at (sets the stroke scale)
    lr: float = 2e-3               # Adam learning rate of G
    lr_discriminator: float = 2e-4
    refine_lr: float = 5e-4
    content_weight: float = 1.0    # λ_c
    style_weight: float = 1.0      # λ_s, multiplied by each sample's strength from z
    colour_weight: float = 50.0    # λ_col, × each sample's colour from z (200 held strokes back: a GPU sweep, README)
    colour_centre: float = 1.5     # z's colour dial pulls to the photo's colours half-way here: z = 0 keeps the
                                   # painting's palette (at 0, the old centre, the default look was a tinted photo)
    content_crop: int = 0          # G's training crops: 0, ``size`` px crops of the photos resized; N, crops of up to
                                   # N×N px of the photos at the working scale, unresized (training.content_sampler)
    tv_weight: float = 0.5         # λ_tv
    adversarial_weight: float = 0.01  # λ_adv (small: the discriminator sharpens, the Grams steer)
    diff_augment: bool = False     # D sees real and generated crops through the same random colour, translation and
                                   # cutout (Zhao et al.'s DiffAugment; screened, off by default)
    style_layers: tuple[str, ...] = STYLE_LAYERS  # VGG layers whose Grams the style loss matches
    edges: str = "mirror"          # how the loss network sees edges (``edges.py``): "mirror", G's crops inside a mirror
                                   # of themselves toward the paintings' interiors (with "zero", VGG19's zero padding
                                   # over whole crops and paintings, G drew blocky rectangles: docs/benchmarks.md)
    start: str = "pretrained"      # G's initial weights: the shipped pretrained generator, "scratch" (random) or a
                                   # file that ``python tools/pretrain.py --export-to`` wrote
    norm_only_steps: int = 100     # the first steps of init from a pretrained start adapt only the norms
    generator_width: int = 16
    generator_blocks: int = 5
    preference_step: float = 1.0   # γ: how far refine's target moves past the current look (chosen − passed)
    preference_reach: float = 0.15  # ... but by at most this fraction of each layer's Gram norm per refine
    checkpoint_seconds: float = 30.0  # how often init/refine save a resumable checkpoint

    def __post_init__(self) -> None:
        self.style_layers = tuple(self.style_layers)  # JSON gives a list; loss_network's cache needs a tuple

    def validate(self) -> TrainSettings:
        for name in ("steps", "refine_steps", "batch", "generator_width", "generator_blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.norm_only_steps < 0:
            raise ConfigError(f"norm-only steps must be at least 0, got {self.norm_only_steps}")
        if not 32 <= self.size <= 1024:
            raise ConfigError(f"size must be between 32 and 1024 px, got {self.size}")
        if self.content_crop and not 32 <= self.content_crop <= 1024:
            raise ConfigError(f"content crop must be 0 or between 32 and 1024 px, got {self.content_crop}")
        if not 32 <= self.style_size <= 2048:
            raise ConfigError(f"style size must be between 32 and 2048 px, got {self.style_size}")
        if self.start not in ("pretrained", "scratch") and not Path(self.start).is_file():
            raise ConfigError(f"start must be 'pretrained', 'scratch' or a pretrained generator's file, "
                              f"got {self.start!r}")
        unknown = [name for name in self.style_layers if name not in VGG_RELUS]
        if not self.style_layers or unknown or len(set(self.style_layers)) != len(self.style_layers):
            raise ConfigError(f"style layers must be distinct VGG19 relu layers (relu1_1 … relu5_4), got "
                              f"{', '.join(self.style_layers) or 'none'}")
        if self.edges not in ("mirror", "zero"):
            raise ConfigError(f"edges must be 'mirror' or 'zero', got {self.edges!r}")
        if not 0.0 < self.preference_reach <= 1.0:
            raise ConfigError(f"preference reach must be in (0, 1], got {self.preference_reach}")
        if not 0.0 <= self.preference_step <= 4.0:
            raise ConfigError(f"preference step must be in [0, 4], got {self.preference_step}")
        return self

    @classmethod
    def from_dict(cls, data: dict) -> TrainSettings:
        return _from_dict(cls, data)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProposalSettings:
    """How candidates are rendered."""

    n: int = 16
    size: int = 256  # long side of the candidates on the sheet, px
    working_side: int = 320  # long side the generator works at, for the candidates and for apply at any size: it fixes
                             # the strokes relative to the image (at 256, each apply's output came up 1.5× to the
                             # quality benchmark's photos and lost fine texture; at 384 round 1 spans fewer looks)

    def validate(self) -> ProposalSettings:
        check_candidates(self.n)
        check_sheet_side(self.size)
        check_working_side(self.working_side)
        return self

    @classmethod
    def from_dict(cls, data: dict) -> ProposalSettings:
        return _from_dict(cls, data)


def _from_dict(cls, data: dict):
    """A settings dataclass from saved JSON: keys this version does not know are ignored, missing
    ones take their defaults (sessions stay readable across versions of the same schema)."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})
