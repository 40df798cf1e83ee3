"""Training-settings sweep: which defaults make ``init``'s generator stylise unseen photos best?

Each configuration trains G from scratch on the quality benchmark's 8 training photos, once per
painting, then scores the 8 evaluation photos at z = 0 (what ``apply`` uses after ``init``) exactly as
``quality.py`` does: style distance over relu1_1…relu5_1, content distance at relu4_1, and the removal
ratio against Gatys on the first 2 photos; plus a diversity figure (mean pairwise style distance of 8
random z on one photo). Mosaics (rows: Gatys, then each configuration; columns: paintings) go to --out.

Made for a GPU (each configuration takes ~20 s per painting on an H100, 4 paintings in parallel); on
the 2-core CPU a configuration costs ~30 min.

    python benchmarks/sweep.py --round 1 --device cuda
    python benchmarks/sweep.py --round 2 --device cuda --budget 270

Some variants reach past the settings: ``style_layers``/``content_layer`` swap the training module's
layer constants for the run, ``skip`` feeds the input photo to G's last convolution, ``test_scale``
takes crops at the scale of a 256-px evaluation photo instead of downscaled ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from gatys import DATA, ROOT, gatys
from quality import PAINTINGS, split_photos
from torch import nn

from styleprefs import controls, losses, training
from styleprefs.config import METRIC_STYLE_LAYERS, TrainSettings
from styleprefs.device import resolve
from styleprefs.images import find_images, load_image, save_image
from styleprefs.networks import Discriminator, Generator
from styleprefs.vgg import VGG19Features

L5 = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
SW2C50 = {"style_weight": 2.0, "colour_weight": 50.0}
# name → (TrainSettings overrides, variant options); the settings are the defaults of the time (colour 200).
ROUNDS = {
    1: [
        ("base", {}, {}),
        ("sw3", {"style_weight": 3.0}, {}),
        ("relu5", {}, {"style_layers": L5}),
        ("narrowz", {}, {"z_scale": 0.5}),
        ("w32", {"generator_width": 32}, {}),
        ("s96_500", {"size": 96, "steps": 500}, {}),
        ("c31", {}, {"content_layer": "relu3_1"}),
        ("col50", {"colour_weight": 50.0}, {}),
        ("lr5e3", {"lr": 5e-3}, {}),
        ("sw3_relu5_narrow", {"style_weight": 3.0}, {"style_layers": L5, "z_scale": 0.5}),
        ("base_1000", {"steps": 1000}, {}),
    ],
    2: [
        ("B_skip_scale1_sw2c50", {"steps": 400, **SW2C50}, {"skip": True, "test_scale": True}),
        ("A_scale1_sw2c50", {"steps": 400, **SW2C50}, {"test_scale": True}),
        ("skip", {"steps": 400}, {"skip": True}),
        ("scale1", {"steps": 400}, {"test_scale": True}),
        ("sw2c50", {"steps": 400, **SW2C50}, {}),
        ("base400", {"steps": 400}, {}),
        ("C_B_b2_800", {"steps": 800, "batch": 2, **SW2C50}, {"skip": True, "test_scale": True}),
        ("b2_800", {"steps": 800, "batch": 2}, {}),
    ],
}
# Settings as they were when the sweeps ran, before colour_weight became 50 (round 1 found it).
THEN = {"colour_weight": 200.0}


class TestScaleCrops(training.CropSampler):
    """Crops at the scale of a 256-px-short-side photo: side = size × U(0.8, 1.25), then resized to size."""

    def __init__(self, images: list[torch.Tensor], size: int):
        super().__init__(images, size)
        self.images = [self._fit(image, 256) for image in images]

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        crops = []
        for _ in range(batch):
            image = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            h, w = image.shape[-2:]
            side = min(h, w, round(self.size * (0.8 + 0.45 * float(torch.rand(1, generator=generator)))))
            top = int(torch.randint(h - side + 1, (1,), generator=generator))
            left = int(torch.randint(w - side + 1, (1,), generator=generator))
            crop = F.interpolate(image[None, :, top:top + side, left:left + side], size=(self.size, self.size),
                                 mode="bilinear", antialias=True, align_corners=False)[0]
            crops.append((crop.flip(-1) if float(torch.rand(1, generator=generator)) < 0.5 else crop).clamp(0, 1))
        return torch.stack(crops)


def add_input_skip(g: Generator) -> Generator:
    """Let G's last convolution also see the input photo (a skip from input to output)."""
    conv = g.to_rgb.conv
    g.to_rgb.conv = nn.Conv2d(conv.in_channels + 3, conv.out_channels, conv.kernel_size, conv.stride)
    seen: dict[str, torch.Tensor] = {}

    def remember(module, args):
        seen["content"] = args[0]

    def concatenate(module, args):
        x, photo = args[0], seen["content"] * 2 - 1
        photo = F.pad(photo, (0, x.shape[-1] - photo.shape[-1], 0, x.shape[-2] - photo.shape[-2]), mode="replicate")
        return (torch.cat([x, photo.to(x.dtype).contiguous(memory_format=torch.channels_last)], 1),)

    g.register_forward_pre_hook(remember)
    g.to_rgb.register_forward_pre_hook(concatenate)
    return g


@contextlib.contextmanager
def content_layer(name: str):
    """Train with another content layer: the training module's constant, swapped for the run."""
    saved = training.CONTENT_LAYER
    training.CONTENT_LAYER = name
    training.loss_network.cache_clear()
    try:
        yield
    finally:
        training.CONTENT_LAYER = saved
        training.loss_network.cache_clear()


def train(painting: Path, photos: list[Path], settings: TrainSettings, variant: dict, runtime) -> tuple[Generator, float]:
    style_layers = tuple(variant.get("style_layers", settings.style_layers))
    settings = TrainSettings.from_dict({**settings.to_dict(), "style_layers": style_layers})
    with content_layer(variant.get("content_layer", training.CONTENT_LAYER)):
        net = training.loss_network(runtime, style_layers)
        style = load_image(painting, max_side=settings.style_size)
        contents = [load_image(p, max_side=1024) for p in photos]
        grams = training.gram_stats(net, [style], runtime, layers=style_layers)
        torch.manual_seed(0)
        g = Generator(controls.z_dim(1), settings.generator_width, settings.generator_blocks)
        g = add_input_skip(g) if variant.get("skip") else g
        trainer = training.Trainer(runtime.module(g), runtime.module(Discriminator()), net, settings, runtime, 1,
                                   settings.lr)
        crops = (TestScaleCrops if variant.get("test_scale") else training.CropSampler)(contents, settings.size)
        scale = variant.get("z_scale", 1.0)
        start = time.perf_counter()
        for _ in trainer.run("init", settings.steps, crops, training.CropSampler([style], settings.size),
                             lambda b, gen: scale * torch.randn(b, 3, generator=gen),
                             training.blended_targets(grams, 1), torch.Generator().manual_seed(0)):
            pass
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        return g.eval(), time.perf_counter() - start


def worker(args: argparse.Namespace) -> None:
    """All configurations of one round for one painting; figures to OUT/PAINTING.json, images to OUT/PAINTING/."""
    runtime = resolve(args.device, "fp32")
    painting = next(p for p in find_images([args.data / "style"]) if p.stem == args.worker)
    train_photos, eval_photos = split_photos(args.data / "content", 8, 8, 0)
    metric = runtime.module(VGG19Features(tuple(dict.fromkeys(METRIC_STYLE_LAYERS + ("relu4_1",))))).eval()
    style = load_image(painting, max_side=TrainSettings().style_size)
    photos = [load_image(p, short_side=256) for p in eval_photos]
    folder = args.out / args.worker
    folder.mkdir(parents=True, exist_ok=True)

    @torch.no_grad()
    def features(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return metric(runtime.images(image[None]))

    style_grams = {k: losses.gram(v) for k, v in features(style).items() if k in METRIC_STYLE_LAYERS}
    content_targets = [features(photo)["relu4_1"] for photo in photos]

    def score(image: torch.Tensor, k: int) -> tuple[float, float]:
        f = features(image)
        return (losses.style_distance(f, style_grams).item(),
                losses.content_distance(f["relu4_1"], content_targets[k]).item())

    result = {"painting": args.worker, "photo": [score(p.to(runtime.device), k) for k, p in enumerate(photos)],
              "gatys": [], "configs": {}}
    for k in range(2):
        image, _ = gatys(photos[k].to(runtime.device), style.to(runtime.device), steps=80, net=metric)
        result["gatys"].append(score(image, k))
        save_image(image.cpu(), folder / f"gatys_{k}.png")
    for name, overrides, variant in ROUNDS[args.round]:
        if time.time() > args.deadline:
            break
        g, seconds = train(painting, train_photos, TrainSettings(**{**THEN, **overrides}), variant, runtime)
        with torch.no_grad():
            zero = torch.zeros(1, 3, device=runtime.device)
            rows = []
            for k, photo in enumerate(photos):
                out = g(runtime.images(photo[None]), zero)[0].float()
                rows.append(score(out, k))
                if k < 2:
                    save_image(out.cpu(), folder / f"{name}_{k}.png")
            zs = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)).to(runtime.device)
            outs = [g(runtime.images(photos[0][None]), zs[i:i + 1])[0].float() for i in range(8)]
            grams = [{k: losses.gram(v) for k, v in features(o).items() if k in METRIC_STYLE_LAYERS} for o in outs]
            pairs = [losses.style_distance(features(outs[i]), grams[j]).item()
                     for i in range(8) for j in range(i + 1, 8)]
        result["configs"][name] = {"rows": rows, "train_seconds": seconds, "diversity": sum(pairs) / len(pairs)}
        (args.out / f"{args.worker}.json").write_text(json.dumps(result))
        print(f"{args.worker} {name}: {seconds:.0f} s, style {sum(r[0] for r in rows) / len(rows):.3f}", flush=True)


def summarise(out: Path, names: list[str]) -> dict:
    """Means over paintings; removal2 = (photo − apply) / (photo − Gatys) on the 2 photos Gatys ran on."""
    results = [json.loads((out / f"{p}.json").read_text()) for p in PAINTINGS if (out / f"{p}.json").exists()]
    summary = {}
    for name in names:
        per = []
        for r in results:
            if name in r["configs"]:
                rows = r["configs"][name]["rows"]
                per.append({"style8": sum(x[0] for x in rows) / len(rows), "content8": sum(x[1] for x in rows) / len(rows),
                            "photo2": sum(x[0] for x in r["photo"][:2]) / 2, "gatys2": sum(x[0] for x in r["gatys"]) / 2,
                            "apply2": sum(x[0] for x in rows[:2]) / 2, "div": r["configs"][name]["diversity"],
                            "secs": r["configs"][name]["train_seconds"]})
        if per:
            m = {k: sum(p[k] for p in per) / len(per) for k in per[0]}
            m["removal2"] = (m["photo2"] - m["apply2"]) / (m["photo2"] - m["gatys2"])
            summary[name] = {**m, "n": len(per)}
            print(f"{name:22s} style {m['style8']:.3f}  content {m['content8']:.3f}  removal {m['removal2']:.2f}  "
                  f"diversity {m['div']:.3f}  {m['secs']:.0f} s")
    return summary


def mosaic(out: Path, names: list[str], k: int) -> None:
    from PIL import Image, ImageDraw
    rows = [[out / p / f"{name}_{k}.png" for p in PAINTINGS] for name in ["gatys", *names]]
    tiles = [[Image.open(f).convert("RGB") if f.exists() else None for f in row] for row in rows]
    w = max(t.width for row in tiles for t in row if t)
    h = max(t.height for row in tiles for t in row if t)
    sheet = Image.new("RGB", (w * len(PAINTINGS), h * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, row) in enumerate(zip(["gatys", *names], tiles)):
        for j, tile in enumerate(row):
            if tile:
                sheet.paste(tile, (j * w, i * h))
        draw.text((4, i * h + 4), name, fill="red")
    sheet.save(out / f"mosaic_{k}.jpg", quality=88)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--round", type=int, choices=sorted(ROUNDS), default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget", type=float, default=600, help="seconds after which no new configuration starts")
    p.add_argument("--parallel", type=int, default=4, help="paintings trained at once (one process each)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "sweep")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not (args.data / "style").is_dir():
        print(f"skipped: no benchmark images at {args.data.resolve()} (use --data)")
        return 0
    if args.worker:
        worker(args)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    common = [sys.executable, __file__, "--round", str(args.round), "--device", args.device, "--data", str(args.data),
              "--out", str(args.out), "--deadline", str(deadline)]
    for start in range(0, len(PAINTINGS), args.parallel):
        procs = [subprocess.Popen([*common, "--worker", name]) for name in PAINTINGS[start:start + args.parallel]]
        for proc in procs:
            proc.wait()
    names = [name for name, _, _ in ROUNDS[args.round]]
    summary = summarise(args.out, names)
    (ROOT / "benchmarks" / "results" / f"sweep-round{args.round}.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
         "configs": {n: [o, v] for n, o, v in ROUNDS[args.round]}, "summary": summary}, indent=1, default=str) + "\n")
    for k in (0, 1):
        mosaic(args.out, names, k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
