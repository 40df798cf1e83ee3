"""Where issue 10's gap to Gatys lies: what the generator can represent, what a session's training generalises to,
and what a crop's Gram matrix can match.

Measurements on the quality benchmark's split (``quality.py``: seed 0, 8 training photos, the first unseen
photos), with the benchmark's metric (style distance over relu1_1…relu5_1, content distance at relu4_1):

    python benchmarks/fit_gap.py crops                  # per-crop style distance of the cached Gatys results
    python benchmarks/fit_gap.py fit --photos one       # G fitted to ONE photo, scored on that photo
    python benchmarks/fit_gap.py fit --photos train     # G trained on the 8 photos, scored on 2 unseen ones
    python benchmarks/fit_gap.py render                 # Gatys's results through apply's full-size rendering
    python benchmarks/fit_gap.py looks                  # the quality sessions' other looks, against Gatys

``fit`` trains G from the shipped pretrained start at a fixed z = 0 (apply's default look) with no discriminator and
no colour term: content + style (relu1_1…relu4_1, or ``--layers 5`` for relu5_1 too) + total variation, Adam, on
crops of up to ``--crop`` px at the working scale; ``--style-weight 2 --layers 5`` is Gatys's balance. ``crops`` needs the Gatys cache that ``quality.py
--gatys-cache`` fills.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from gatys import DATA, ROOT, features, loss_network, targets
from quality import PAINTINGS, cached_gatys, score, split_photos

from styleprefs import render
from styleprefs.config import CONTENT_LAYER, ProposalSettings, TrainSettings
from styleprefs.images import load_image, save_image
from styleprefs.losses import content_loss, relative_error, style_loss, total_variation
from styleprefs.networks import Generator
from styleprefs.pretrain import load_start
from styleprefs.session import Session
from styleprefs.training import WorkingScaleSampler

WORKING_SIDE = ProposalSettings().working_side  # apply's, in a default session


def layer_distances(net, image: torch.Tensor, grams: dict, content_target: torch.Tensor) -> list[float]:
    """The style distance of each metric layer, then the content distance (quality.py's ``score``)."""
    scored = score(net, image, grams, content_target)
    return [*scored["style_layers"].values(), scored["content"]]


def line(label: str, per_layer: list[float], content: float | None = None) -> str:
    text = f"{label:32s} style {sum(per_layer) / len(per_layer):.3f}"
    if content is not None:
        text += f" content {content:.3f}"
    return text + "  layers " + " ".join(f"{d:.2f}" for d in per_layer)


def crops(args: argparse.Namespace) -> None:
    """Gatys's results scored whole, and as the training sees them: crops of half and 0.8 of the short side resized to
    128 px (the default init), and unresized crops of the short side."""
    net = loss_network()
    style = load_image(args.data / "style" / f"{args.painting}.jpg", max_side=TrainSettings().style_size)
    found = sorted(args.gatys_cache.glob(f"{args.painting}__*.png"))
    if not found:
        raise SystemExit(f"no Gatys results for {args.painting} in {args.gatys_cache} (run quality.py first)")
    generator = torch.Generator().manual_seed(0)
    for path in found:
        image = load_image(path)
        grams, own = targets(net, image, style)
        print(line(f"{path.name.split('__')[1][:20]} whole", layer_distances(net, image, grams, own)[:-1]))
        height, width = image.shape[-2:]
        for fraction, resize in ((0.5, 128), (0.8, 128), (1.0, None)):
            side = int(min(height, width) * fraction)
            rows = []
            for _ in range(args.samples):
                top = int(torch.randint(height - side + 1, (1,), generator=generator))
                left = int(torch.randint(width - side + 1, (1,), generator=generator))
                crop = image[:, top : top + side, left : left + side]
                if resize:
                    crop = F.interpolate(crop[None], size=(resize, resize), mode="bilinear", antialias=True)[0]
                rows.append(layer_distances(net, crop, grams, features(net, crop)[CONTENT_LAYER])[:-1])
            print(line(f"  crops {side} px → {resize or side} px", torch.tensor(rows).mean(0).tolist()))


def rendering(args: argparse.Namespace) -> None:
    """What apply's full-size rendering alone costs a perfect generator: each cached Gatys result, shrunk to the
    working grid as the generator's output would be and brought back to the photo's size as apply brings it
    (``render.render``: guided by the photo; for a photo smaller than the grid, rendered larger and shrunk), scored
    like quality.py. The removal ratio of that picture is the most any generator can reach at this
    working side on this benchmark."""
    net = loss_network()
    found = sorted(args.gatys_cache.glob("*__*.png"))
    if not found:
        raise SystemExit(f"no Gatys results in {args.gatys_cache} (run quality.py --gatys-cache first)")
    by_painting: dict[str, list[tuple[float, float]]] = {}
    for path in found:
        painting, photo_name = path.name.split("__")[:2]
        style = load_image(args.data / "style" / f"{painting}.jpg", max_side=TrainSettings().style_size)
        photo = load_image(next((args.data / "content").glob(f"{photo_name}.*")), short_side=256)
        result = load_image(path)
        grams, own = targets(net, photo, style)
        photo_style = score(net, photo, grams, own)["style"]
        whole = score(net, result, grams, own)
        cells = []
        for side in args.sides:
            # apply's own rendering, with Gatys's result shrunk to the working grid in place of the generator's output
            out = render.render(lambda small: render.resample(result[None], tuple(small.shape[-2:])), photo[None],
                                side)[0]
            rendered = score(net, out, grams, own)
            removal = (photo_style - rendered["style"]) / (photo_style - whole["style"])
            cells.append(f"@{side}: style {rendered['style']:.3f} content {rendered['content']:.3f} removal {removal:.2f}")
            if side == WORKING_SIDE:
                by_painting.setdefault(painting, []).append((photo_style - rendered["style"],
                                                             photo_style - whole["style"]))
        print(f"{painting[:22]:22s} {photo_name[:30]:30s} photo {photo_style:.3f} Gatys {whole['style']:.3f} "
              f"content {whole['content']:.3f} | " + " | ".join(cells), flush=True)
    print(f"the ceiling at the default working side ({WORKING_SIDE} px): removal of the paired photos, per painting")
    for painting, pairs in by_painting.items():
        print(f"  {painting:32s} {sum(p[0] for p in pairs) / sum(p[1] for p in pairs):.2f}")


# Looks of a session's family other than apply's default (0): [stroke, strength, colour, stroke scale] coordinates.
LOOKS = {"default": (0, 0, 0, 0), "strength +0.5": (0, 0.5, 0, 0), "strength +1": (0, 1, 0, 0),
         "deep layers +1": (1, 0, 0, 0), "smaller strokes": (0, 0, 0, -1), "larger strokes": (0, 0, 0, 1)}


def looks(args: argparse.Namespace) -> None:
    """How far each quality session's own family of looks reaches, with no more training: the sessions that
    ``quality.py`` left in ``--sessions`` render the photos that have a Gatys result at the looks in LOOKS, scored
    and compared as quality.py compares apply's default look."""
    net = loss_network()
    eval_photos = split_photos(args.data / "content", 8, 8, 0)[1][:2]
    for painting in PAINTINGS:
        session = Session.open(args.sessions / painting, "cpu")
        style = load_image(args.data / "style" / f"{painting}.jpg", max_side=TrainSettings().style_size)
        rows: dict[str, list[tuple[float, ...]]] = {name: [] for name in LOOKS}
        for path in eval_photos:
            photo = load_image(path, short_side=256)
            grams, own = targets(net, photo, style)
            baseline = cached_gatys(args.gatys_cache, painting, path.stem, photo, style, 80, net)[0]
            photo_style, gatys = score(net, photo, grams, own)["style"], score(net, baseline, grams, own)
            for name, look in LOOKS.items():
                applied = score(net, session.stylise(photo, torch.tensor(look, dtype=torch.float32)), grams, own)
                rows[name].append((photo_style, applied["style"], gatys["style"], applied["content"],
                                   gatys["content"]))
        for name, values in rows.items():
            photo_style, style_, gatys_style, content, gatys_content = torch.tensor(values).mean(0).tolist()
            print(f"{painting[:24]:24s} {name:16s} removal {(photo_style - style_) / (photo_style - gatys_style):.2f} "
                  f"style {style_:.3f} content {content:.3f} ({content - gatys_content:+.3f} from Gatys's)", flush=True)


def mean_cov(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample channel mean (B, C) and covariance (B, C, C) of (B, C, H, W) features, in fp32."""
    flat = activations.float().flatten(2)
    mean = flat.mean(2)
    centred = flat - mean[:, :, None]
    return mean, centred @ centred.transpose(1, 2) / flat.shape[2]


def mean_cov_loss(activations: dict, painting: dict, layers: list[str], weight: float) -> torch.Tensor:
    """Σ_l ‖μ_l(x) − μ_l(s)‖²/‖μ_l(s)‖² + ‖Σ_l(x) − Σ_l(s)‖²/‖Σ_l(s)‖², per sample: the mean and the
    covariance matched separately (a Gram, Σ + μμᵀ, is dominated by μμᵀ for post-ReLU features)."""
    total = 0
    for name in layers:
        mean, cov = mean_cov(activations[name])
        target_mean, target_cov = painting[name]
        total = total + relative_error(mean, target_mean.expand_as(mean)) + relative_error(cov, target_cov.expand_as(cov))
    return weight * total


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The square root of symmetric positive semi-definite matrices (…, C, C), through their eigendecomposition."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(1e-8).sqrt()) @ vectors.transpose(-1, -2)


def wasserstein_loss(activations: dict, painting: dict, layers: list[str], weight: float) -> torch.Tensor:
    """Σ_l W₂²(N(μ_l(x), Σ_l(x)), N(μ_l(s), Σ_l(s))) / (‖μ_l(s)‖² + tr Σ_l(s)), per sample: the squared
    2-Wasserstein distance between the Gaussians the features fit, ‖μx − μs‖² + tr Σx + tr Σs − 2 tr (Σs^½ Σx Σs^½)^½
    (as crowsonkb/style-transfer-pytorch's W₂ style loss), relative to the painting's own second moment."""
    total = 0
    for name in layers:
        mean, cov = mean_cov(activations[name])
        target_mean, target_cov, root = painting[name]
        cross = psd_sqrt(root @ cov @ root).diagonal(dim1=-2, dim2=-1).sum(-1)
        trace_x, trace_s = cov.diagonal(dim1=-2, dim2=-1).sum(-1), target_cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        distance = (mean - target_mean).square().sum(-1) + trace_x + trace_s - 2 * cross
        total = total + distance / (target_mean.square().sum(-1) + trace_s)
    return weight * total


@torch.no_grad()
def grow(small: Generator, width: int, blocks: int) -> Generator:
    """A wider and/or deeper generator that computes exactly what ``small`` computes (Net2Net's idea, padded with
    new units rather than copied ones): every old weight kept, new channels' incoming weights random, the weights
    from new channels into old ones zero, and each new residual block's last norm scaled to 0, so the block adds
    nothing until training moves it. Gradients reach every new weight from the first step."""
    big = Generator(small.z_dim, width, blocks, small.code_dim)
    mine, theirs = big.state_dict(), small.state_dict()
    for name, old in theirs.items():
        new = mine[name]
        if name.endswith("to_scale_shift.weight") or name.endswith("to_scale_shift.bias"):
            half, big_half = old.shape[0] // 2, new.shape[0] // 2
            new.zero_()
            new[:half] = old[:half]  # the scale rows, then the shift rows
            new[big_half:big_half + half] = old[half:]
            continue
        new[tuple(slice(0, n) for n in old.shape)] = old
        if new.dim() == 4 and new.shape[1] > old.shape[1]:  # a convolution: old outputs see only old inputs
            new[: old.shape[0], old.shape[1]:] = 0
    for block in big.residual[len(small.residual):]:
        channels = block.norm2.to_scale_shift.bias.shape[0] // 2
        block.norm2.to_scale_shift.bias[:channels] = -1  # (1 + s) = 0: the block's output is its input
    big.load_state_dict(mine)
    return big


DILATIONS = (2, 4, 8, 4, 2)  # --dilate: the new blocks' dilations, cycled (5 new blocks add 160 px of radius)


@torch.no_grad()
def dilate_new_blocks(big: Generator, old_blocks: int) -> int:
    """Make the residual blocks added by :func:`grow` dilated (their 3×3 convolutions' taps spread DILATIONS apart, the
    reflection padding widened to match), so they widen the receptive field rather than only deepen the network.
    They add nothing until trained, as :func:`grow` leaves them. Returns the generator's receptive-field radius in px."""
    radius = 54  # the shipped generator's, measured (README, *Speed*)
    for k, block in enumerate(big.residual[old_blocks:]):
        d = DILATIONS[k % len(DILATIONS)]
        for conv in (block.conv1, block.conv2):
            conv.conv.dilation, conv.pad = (d, d), torch.nn.ReflectionPad2d(d)
        radius += 2 * 4 * d  # two 3×3 convolutions at a quarter of the resolution
    return radius


def fit(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    net = loss_network()
    style = load_image(args.data / "style" / f"{args.painting}.jpg", max_side=TrainSettings().style_size)
    train_paths, eval_paths = split_photos(args.data / "content", 8, 2, 0)
    unseen = [load_image(p, short_side=256) for p in eval_paths]
    if args.photos == "one":
        scored = unseen[-1:]  # the castle: trained on and scored on
        training = scored
    else:
        scored = unseen
        training = [load_image(p, max_side=4 * TrainSettings().size) for p in train_paths]
    sampler = WorkingScaleSampler(training, args.crop, args.working, args.jitter)
    painting_grams = targets(net, style, style)[0]
    layers = list(painting_grams)[: args.layers]
    with torch.no_grad():
        painting_stats = {k: mean_cov(v) for k, v in net(style[None]).items() if k in layers}
        painting_roots = ({k: (*stats, psd_sqrt(stats[1])) for k, stats in painting_stats.items()}
                          if args.loss == "w2" else {})
    generator = Generator(3, args.width, TrainSettings().generator_blocks)
    if args.scratch:
        print(f"start: random weights, width {args.width}")
    else:
        print(f"start: the embedding of {load_start(generator, painting_grams, 'pretrained')}")
    if args.grow:
        old_blocks = len(generator.residual)
        generator = grow(generator, *args.grow)
        print(f"grown to width {args.grow[0]}, {args.grow[1]} residual blocks")
        if args.dilate:
            print(f"new blocks dilated {DILATIONS}: receptive-field radius {dilate_new_blocks(generator, old_blocks)} px")
    optimiser = torch.optim.Adam(generator.parameters(), lr=args.lr)
    weights = torch.full((args.batch, len(layers)), args.style_weight)
    rng = torch.Generator().manual_seed(0)

    # --score-train: also scored on 2 of the photos trained on, as the unseen ones are (256 px short side), to tell
    # a generator that cannot fit its photos from one that fits them but does not carry to others.
    groups = [("", scored)] + ([("  trained-on", [load_image(p, short_side=256) for p in train_paths[:2]])]
                               if args.score_train and args.photos == "train" else [])

    def report(step: int, seconds: float) -> None:
        generator.eval()
        for label, photos in groups:
            rows = []
            with torch.no_grad():
                for photo in photos:
                    out = render.render(lambda small: generator(small, torch.zeros(len(small), 3)), photo[None],
                                        args.working)[0]
                    rows.append(layer_distances(net, out, *targets(net, photo, style)))
                if args.save and step == args.steps and not label:
                    save_image(torch.cat([photo, out], dim=2), args.save)
            mean = torch.tensor(rows).mean(0).tolist()
            print(line(label or f"step {step} ({seconds:.0f} s)", mean[:-1], mean[-1]), flush=True)
        generator.train()

    start = time.perf_counter()
    def loss_of(photos: torch.Tensor) -> torch.Tensor:
        out = generator(photos, torch.zeros(args.batch, 3))
        activations = net(out)
        with torch.no_grad():
            content_target = net(photos, until=CONTENT_LAYER)[CONTENT_LAYER]
        if args.loss == "meancov":
            l_style = mean_cov_loss(activations, painting_stats, layers, args.style_weight)
        elif args.loss == "w2":
            l_style = wasserstein_loss(activations, painting_roots, layers, args.style_weight)
        else:
            l_style = style_loss(activations, {k: painting_grams[k].expand(args.batch, -1, -1) for k in layers}, weights)
        return (content_loss(activations[CONTENT_LAYER], content_target) + l_style
                + args.tv * total_variation(out)).mean()

    report(0, 0.0)
    if args.optimiser == "lbfgs":  # a fixed batch (with --crop 512 --jitter 0: the whole photo), so the loss is one function
        photos = sampler.sample(args.batch, rng).contiguous(memory_format=torch.channels_last)
        lbfgs = torch.optim.LBFGS(generator.parameters(), lr=1, max_iter=args.every, max_eval=args.every,
                                  history_size=50, tolerance_grad=0.0, tolerance_change=0.0,
                                  line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            lbfgs.zero_grad()
            loss = loss_of(photos)
            loss.backward()
            return loss

        for done in range(args.every, args.steps + 1, args.every):  # evaluations, not iterations
            lbfgs.step(closure)
            report(done, time.perf_counter() - start)
        return
    for step in range(1, args.steps + 1):
        loss = loss_of(sampler.sample(args.batch, rng).contiguous(memory_format=torch.channels_last))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % args.every == 0:
            report(step, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("crops", "fit", "render", "looks"))
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--painting", default="vangogh_starry_night")
    p.add_argument("--gatys-cache", type=Path, default=ROOT / ".bench" / "q" / "gatys-cache")
    p.add_argument("--sessions", type=Path, default=ROOT / ".bench" / "quality" / "sessions",
                   help="looks: the sessions quality.py trained (its --out, then sessions/)")
    p.add_argument("--samples", type=int, default=6, help="crops: random crops per size")
    p.add_argument("--photos", choices=("one", "train"), default="train")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--layers", type=int, default=4, choices=(4, 5))
    p.add_argument("--lr", type=float, default=TrainSettings().lr)
    p.add_argument("--style-weight", type=float, default=1.0,
                   help="λ_s per layer (1: init's at z = 0; 2 with --layers 5: Gatys's, benchmarks/gatys.py)")
    p.add_argument("--width", type=int, default=TrainSettings().generator_width,
                   help="G's width (the shipped start is 16; other widths start from random weights)")
    p.add_argument("--scratch", action="store_true", help="start from random weights")
    p.add_argument("--grow", type=int, nargs=2, metavar=("WIDTH", "BLOCKS"),
                   help="fit: grow the shipped start to this width and number of residual blocks, keeping its function")
    p.add_argument("--dilate", action="store_true",
                   help="fit --grow: the new residual blocks dilated (2, 4, 8, 4, 2), for a wider receptive field")
    p.add_argument("--loss", choices=("gram", "meancov", "w2"), default="gram",
                   help="the style term: Gram matrices (init's), channel means and covariances matched apart, or the "
                        "2-Wasserstein distance between the Gaussians they fit")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--working", type=int, default=WORKING_SIDE,
                   help=f"fit: the working side G trains and renders at (default {WORKING_SIDE}, a default session's)")
    p.add_argument("--score-train", action="store_true",
                   help="fit --photos train: also score 2 of the photos it trains on")
    p.add_argument("--optimiser", choices=("adam", "lbfgs"), default="adam",
                   help="fit: Adam on fresh crops each step (init's), or L-BFGS on one fixed batch (steps = evaluations)")
    p.add_argument("--jitter", type=float, default=0.25, help="fit: the crops' scale jitter, in octaves (init's: 0.25)")
    p.add_argument("--tv", type=float, default=TrainSettings().tv_weight,
                   help="fit: the total-variation weight (init's; Gatys's loss has none)")
    p.add_argument("--save", type=Path, help="fit: write photo | last output of the last scored photo to this PNG")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int)
    p.add_argument("--sides", type=int, nargs="+", default=[256, WORKING_SIDE, 384, 512],
                   help="render: the working sides tried")
    args = p.parse_args(argv)
    if not (args.data / "style").is_dir():
        print(f"skipped: no benchmark images at {args.data.resolve()}")
        return 0
    args.scratch = args.scratch or args.width != TrainSettings().generator_width
    if args.threads:
        torch.set_num_threads(args.threads)
    {"crops": crops, "fit": fit, "render": rendering, "looks": looks}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
