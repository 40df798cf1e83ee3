"""Pretrain the shipped starting generator: one generator on many paintings, which a session's ``init`` fine-tunes.

A maintainer's tool, not part of the package: run it from the repository root as ``python tools/pretrain.py``. What a
session needs at run time (reading the file, starting from it) is :mod:`styleprefs.start`; docs/pretraining.md says
what the file is and how it was made.

A session that started G from random weights would spend its 300 steps learning both how to encode a photo and
how to paint. Pretraining learns the first part once, for everyone. As in Dumoulin et al. (2017), the
convolutions are shared by all paintings and each painting gets its own norm parameters; here G's norms
already take a code from z (FiLM), so each pretraining painting adds a learned embedding to that code.

Exporting writes only where it is told (``--export-to FILE``); to replace the shipped file, name it. Reproduce the
shipped file (resumable: rerun the same command after an interruption; the earlier 2540-step file is in git at
e7b9b3f, and thread counts change the last digits, so it is reproduced up to rounding)::

    git show e7b9b3f:src/styleprefs/data/pretrained_generator.safetensors > .bench/start-2540.safetensors
    python tools/pretraining_photos.py --out .bench/gcompris
    python tools/pretrain.py --data ../shared/data --out .bench/pretrain --from .bench/start-2540.safetensors \
        --max-steps 3020 --minutes 999
    python tools/pretrain.py --data ../shared/data --data .bench/gcompris --out .bench/pretrain \
        --max-steps 4780 --minutes 999
    python tools/pretrain.py --data ../shared/data --data .bench/gcompris --out .bench/pretrain \
        --export-to src/styleprefs/data/pretrained_generator.safetensors

The quality benchmark's paintings and evaluation photos are held out (``HELD_OUT_*``; a test pins them
to ``benchmarks/quality.py``), so its figures measure paintings and photos pretraining never saw.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from styleprefs import controls, files, images
from styleprefs.config import ConfigError, TrainSettings
from styleprefs.device import Runtime, resolve
from styleprefs.networks import Discriminator, Generator
from styleprefs.start import SHIPPED, decode_meta, descriptor, read_export, shipped_path
from styleprefs.training import CropSampler, StopSignals, Trainer, gram_stats, loss_network

# The quality benchmark's four paintings and eight evaluation photos: never seen by pretraining.
HELD_OUT_PAINTINGS = ("vangogh_starry_night", "hokusai_great_wave", "vangogh_cafe_terrace_at_night",
                      "gauguin_arearea")
HELD_OUT_PHOTOS = ("gc_monument_greatWallofChina", "gc_monument_neuschwansteinCastle", "gc_farm_dog",
                   "gc_erase_horse", "gc_erase_alpaca", "gc_TowerBridgeLondon", "gc_monument_statueofLiberty",
                   "gc_monument_cabrillo")
# Not colour photos: a greyscale one, and an RGBA cut-out on a flat background.
SKIPPED_PHOTOS = ("skimage_camera_gray", "opencv_dog_rgba")
# The shipped file's (styleprefs.start.SHIPPED); tests/test_pretrain.py checks it
SHIPPED_SHA256 = "beaa15f47db6794ec1fb16cea76a90e0dfe488b4d42bc385d7935afe976e03ec"
STATE = "pretrain.safetensors"  # the resumable training state in --out
EXPORT_SECONDS = 60.0  # how often the resumable state is saved
CHUNK = 20  # steps between looks at the clock


class MultiStyle(nn.Module):
    """G plus one code embedding per pretraining painting. Its z is G's z with the painting's index appended,
    so the unchanged training loop (:class:`~styleprefs.training.Trainer`) can train it."""

    def __init__(self, generator: Generator, n_paintings: int):
        super().__init__()
        self.g = generator
        self.embedding = nn.Embedding(n_paintings, generator.code_dim)
        nn.init.normal_(self.embedding.weight, std=0.1)

    def forward(self, content: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.g(content, z[:, :-1], code_shift=self.embedding(z[:, -1].long()))


def folders(data: Path | list[Path]) -> list[Path]:
    return [data] if isinstance(data, Path) else list(data)


def pretraining_data(data: Path | list[Path]) -> tuple[list[Path], list[Path]]:
    """The paintings and photos that pretraining may see in the data folders (each with style/, content/ or
    both), sorted by file name across the folders, so one folder or several give the same order."""
    def found(kind: str, left_out: tuple[str, ...]) -> list[Path]:
        subfolders = [folder / kind for folder in folders(data) if (folder / kind).is_dir()]
        return sorted((p for p in images.find_images(subfolders) if p.stem not in left_out),
                      key=lambda p: p.name) if subfolders else []
    return found("style", HELD_OUT_PAINTINGS), found("content", HELD_OUT_PHOTOS + SKIPPED_PHOTOS)


def seed_from(model: MultiStyle, path: Path, names: list[str]) -> int:
    """Start ``model`` from a file :func:`export` wrote (the shipped one, say) pretrained on the same paintings in
    the same order; returns the steps that file had. Its optimiser state and discriminator are not in it, so
    those start afresh."""
    try:
        weights, shipped, meta = read_export(path)
        if meta["paintings"] != names:
            raise ValueError(f"pretrained on {meta['paintings']}, not on {names}")
        model.g.load_state_dict(weights)
        model.embedding.weight.data.copy_(shipped["embeddings"])
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"{path}: cannot continue pretraining from it ({exc})") from None
    return int(meta["steps"])


def read_state(path: Path, names: list[str], style_layers: list[str]) -> dict[str, torch.Tensor]:
    """The resumable state in ``path``, checked against the run that would continue it: the same paintings in the same
    order (row k of the embedding table is painting k's code) and the same style layers. Photos may differ: a state
    can go on with more of them."""
    try:
        saved = load_file(path)
        meta = decode_meta(saved["meta"])
        if meta["paintings"] != names:
            missing, extra = sorted(set(meta["paintings"]) - set(names)), sorted(set(names) - set(meta["paintings"]))
            raise ValueError("it was pretrained on other paintings than these data folders hold"
                             + (f" (missing here: {', '.join(missing)})" if missing else "")
                             + (f" (new here: {', '.join(extra)})" if extra else "")
                             + ("" if missing or extra else " (the same ones in another order)"))
        if meta["style_layers"] != style_layers:
            raise ValueError(f"it was pretrained on style layers {meta['style_layers']}, not {style_layers}")
        int(saved["step"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"{path}: cannot resume pretraining from it: {exc}") from None
    return saved


def pretrain(data: Path | list[Path], out: Path, minutes: float, settings: TrainSettings, runtime: Runtime, seed: int = 0,
             max_steps: int | None = None, log=print, start_from: Path | None = None) -> Path:
    """Train (or continue training) the multi-painting generator for ``minutes`` more (or until ``max_steps`` in
    all), saving a resumable state to ``out`` at least every minute; returns the state's path. A new run
    (no state in ``out`` yet) starts from ``start_from``, a file :func:`export` wrote, when it is given: its step
    count carries on from that file's."""
    paintings, photos = pretraining_data(data)
    if not paintings or not photos:
        raise SystemExit(f"no paintings or photos to pretrain on in {', '.join(map(str, folders(data)))}")
    net = loss_network(runtime, settings.style_layers)
    styles = [images.load_image(p, max_side=settings.style_size) for p in paintings]
    contents = [images.load_image(p, max_side=4 * settings.size) for p in photos]
    grams = gram_stats(net, styles, runtime, settings.style_layers)
    torch.manual_seed(seed)
    model = MultiStyle(Generator(controls.z_dim(1), settings.generator_width, settings.generator_blocks),
                       len(paintings))
    names = [p.stem for p in paintings]
    state_path, step = out / STATE, 0
    if start_from is not None and not state_path.exists():
        step = seed_from(model, start_from, names)
        log(f"starting from {start_from} at step {step}")
    trainer = Trainer(runtime.module(model), runtime.module(Discriminator()), net, settings, runtime, 1, settings.lr)
    rng = torch.Generator().manual_seed(seed + step)
    if state_path.exists():
        saved = read_state(state_path, names, list(settings.style_layers))
        trainer.load_state_tensors(saved)
        rng.set_state(saved["rng"])
        step = int(saved["step"])
        log(f"resuming at step {step}")

    def sample_z(batch: int, g: torch.Generator) -> torch.Tensor:
        return torch.cat([torch.randn(batch, 3, generator=g),
                          torch.randint(len(paintings), (batch, 1), generator=g).float()], 1)

    def targets(z: torch.Tensor) -> dict[str, torch.Tensor]:
        index = z[:, -1].long().cpu()
        return {name: layer[index].to(z.device) for name, layer in grams.items()}

    def save() -> None:
        out.mkdir(parents=True, exist_ok=True)
        meta = {"paintings": names, "photos": [p.stem for p in photos], "style_layers": list(settings.style_layers),
                "settings": settings.to_dict(), "seed": seed}
        tensors = {**trainer.state_tensors(), "rng": rng.get_state(), "step": torch.tensor(step),
                   "descriptors": descriptor(grams), "meta": torch.tensor(list(json.dumps(meta).encode()),
                                                                        dtype=torch.uint8)}
        files.atomic_write(state_path, lambda tmp: save_file({k: v.detach().cpu().contiguous()
                                                               for k, v in tensors.items()}, tmp))

    start = last_save = time.perf_counter()
    deadline = start + 60 * minutes
    content, real = CropSampler(contents, settings.size), CropSampler(styles, settings.size)
    with StopSignals() as stop:
        # Trainer.run counts to a total; here the clock decides, so run open-ended chunks of steps.
        while time.perf_counter() < deadline and not stop.requested and (max_steps is None or step < max_steps):
            chunk_end = step + CHUNK if max_steps is None else min(step + CHUNK, max_steps)
            for progress in trainer.run("pretrain", chunk_end, content, real, sample_z, targets, rng,
                                        first_step=step):
                step = progress.step
            log(f"step {step} ({time.perf_counter() - start:.0f} s): "
                + ", ".join(f"{k} {v:.3f}" for k, v in progress.losses.items()))
            if time.perf_counter() - last_save > EXPORT_SECONDS:
                save()
                last_save = time.perf_counter()
    save()
    log(f"step {step}, saved {state_path}")
    return state_path


def data_list(data: Path | list[Path], meta: dict) -> str:
    """The pretraining data as a Markdown table: each file with its package, path there and licence, taken from
    the data folders' SOURCES.md (whose rows start `` | `style/NAME.ext` | subject | package | path | size | licence``)."""
    rows = {}
    sources = [line for folder in folders(data) if (folder / "SOURCES.md").is_file()
               for line in (folder / "SOURCES.md").read_text(encoding="utf-8").splitlines()]
    for line in sources:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0].startswith("`") and "/" in cells[0]:
            rows[Path(cells[0].strip("`")).stem] = cells
    where = " and ".join(f"`{folder}`" for folder in folders(data))
    lines = [f"# What the shipped generator was pretrained on ({meta['steps']} steps)", "",
             f"Everything below comes from {where} (the SOURCES.md there has the full provenance). The quality",
             "benchmark's paintings and evaluation photos are held out: "
             + ", ".join(HELD_OUT_PAINTINGS + HELD_OUT_PHOTOS) + ".", "",
             "| kind | file | subject | package | path in the package | licence |", "|---|---|---|---|---|---|"]
    for kind, names in (("painting", meta["paintings"]), ("photo", meta["photos"])):
        for name in names:
            cells = rows.get(name, [f"`{name}`", "?", "?", "?", "?", "not listed in SOURCES.md"])
            lines.append(f"| {kind} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {cells[5]} |")
    return "\n".join(lines) + "\n"


def export(state_path: Path, target: Path, data: Path | list[Path] | None = None) -> str:
    """Write a pretrained generator's file like the shipped one (G's weights, the paintings' embeddings and
    descriptors, what made it) from a pretraining state to ``target``, and beside it the data list with licences when ``data`` is given; returns its SHA-256."""
    state = load_file(state_path)
    meta = decode_meta(state["meta"])
    meta["steps"] = int(state["step"])
    shipped = {k[2:]: v for k, v in state.items() if k.startswith("g.g.")}
    shipped["embeddings"] = state["g.embedding.weight"]
    shipped["descriptors"] = state["descriptors"]
    shipped["meta"] = torch.tensor(list(json.dumps(meta, sort_keys=True).encode()), dtype=torch.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(target, lambda tmp: save_file(shipped, tmp))
    if data is not None:
        text = data_list(data, meta)
        files.atomic_write(target.with_name("PRETRAINING.md"), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return hashlib.sha256(target.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="folder with style/, content/ or both, and a SOURCES.md; repeat it for several")
    parser.add_argument("--out", type=Path, required=True, help="folder for the resumable training state")
    parser.add_argument("--minutes", type=float, default=30.0, help="train this many more minutes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--from", dest="start_from", type=Path, metavar="FILE",
                        help="start a new run from this exported file (the shipped one: 'shipped') instead of random weights")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--max-steps", type=int, help="stop at this step count in all (the file's own included)")
    # No default target: an export writes only the file it is given, never the installed package's by itself.
    parser.add_argument("--export-to", "--export", dest="export_to", type=Path, metavar="FILE",
                        help="write an exported file from the state to FILE (for --set start=FILE), with its "
                             f"PRETRAINING.md beside it; to replace the shipped one, name src/styleprefs/data/{SHIPPED}")
    args = parser.parse_args(argv)
    try:
        if args.export_to is not None:
            target = args.export_to
            if not (args.out / STATE).is_file():
                raise ConfigError(f"{args.out / STATE}: no pretraining state to export")
            digest = export(args.out / STATE, target, args.data)
            print(f"wrote {target} (sha256 {digest})")
            return 0
        if args.threads:
            torch.set_num_threads(args.threads)
        start_from = shipped_path() if args.start_from == Path("shipped") else args.start_from
        pretrain(args.data, args.out, args.minutes, TrainSettings(), resolve(args.device), max_steps=args.max_steps,
                 start_from=start_from)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
