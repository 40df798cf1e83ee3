"""Creating a session (``init``): its inputs decoded before the folder is touched, the folder written whole or not at
all, and the base generator and discriminator trained, resumably.

A session that ``--force`` replaces is kept aside until the new one has trained: put back if the init fails, kept
while an interrupted init waits to be resumed (``--resume``), deleted once it has finished.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from . import __version__, checkpoints, controls, images, inputs, start
from .checkpoints import Interrupted, ProgressFn
from .config import ProposalSettings, TrainSettings
from .device import Runtime, resolve
from .errors import BadInput
from .networks import Discriminator, Generator
from .preference import Posterior
from .store import SCHEMA_VERSION, Store, create, restore, sha256
from .training import (CropSampler, Trainer, aimed_grams, blended_targets, content_sampler, gram_stats, loss_network,
                       picture_network)

Decoded = tuple[list[torch.Tensor], list[torch.Tensor]]  # (photos, paintings) as training uses them
TrainFn = Callable[[Store, Runtime, Decoded], None]  # trains the new session, under its lock


def make(root: Path, styles: list[Path], contents: list[Path], settings: TrainSettings | None,
         proposals: ProposalSettings | None, seed: int, force: bool, max_pixels: int, device: str, precision: str,
         train: TrainFn) -> None:
    """Create the session folder at ``root`` from the paintings ``styles`` and the photos ``contents`` and ``train`` it;
    a session already there is replaced only with ``force``."""
    settings = (settings or TrainSettings()).validate()
    proposals = (proposals or ProposalSettings()).validate()
    _check_folder(root, force)
    style_paths = images.find_paintings(styles)
    content_paths = images.find_images(list(contents))
    runtime = resolve(device, precision)
    # Decode everything before touching the folder: a bad input fails here, changing nothing.
    decoded = inputs.decode(content_paths, style_paths, settings, max_pixels)
    preview = images.load_image(content_paths[0], max_side=inputs.PREVIEW_SIDE, max_pixels=max_pixels)
    style_grams = gram_stats(loss_network(runtime, settings.style_layers), decoded[1], runtime, settings.style_layers)
    config = {"schema_version": SCHEMA_VERSION, "styleprefs_version": __version__, "torch_version": torch.__version__,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": seed, "device": runtime.name,
              "bf16": runtime.bf16, "styles": _inputs(style_paths), "contents": _inputs(content_paths),
              "settings": settings.to_dict(), "proposal_settings": asdict(proposals),
              "z_names": controls.look_names(len(style_paths))}

    def write(new: Store) -> None:
        new.write_json("config.json", config)
        new.write_tensors("style_grams.safetensors", style_grams)
        inputs.keep(new, *decoded, preview)
        new.write_json("state.json", {"checkpoint": None, "rounds": [], "refines": [],
                                      "steps": {"init": 0, "refine": 0}, "files": new.manifest(),
                                      "training": {"phase": "init", "steps": settings.steps}})

    replaced = create(root, write, force)  # a session it replaces is aside until the new one has trained
    _train_replacing(root, replaced, lambda store: train(store, runtime, decoded))


def _check_folder(root: Path, force: bool) -> None:
    if root.exists() and not root.is_dir():
        raise BadInput(f"{root}: is a file, not a session folder")
    if Store(root).exists() and not force:
        raise BadInput(f"a session already exists at {root} (use --force to replace it, "
                       "or --resume to continue an interrupted init)")
    if root.is_dir() and not Store(root).exists() and any(root.iterdir()):
        raise BadInput(f"{root}: folder is not empty and is not a styleprefs session; choose another --session")


def _inputs(paths: list[Path]) -> list[dict]:
    return [{"path": str(p.resolve()), "sha256": sha256(p)} for p in paths]


def _train_replacing(root: Path, replaced: Path | None, train: Callable[[Store], None]) -> None:
    """``train`` the new session at ``root`` under its lock; the session it replaces (in ``replaced``) goes once that
    has finished, is put back if it fails, and waits for ``--resume`` if it was interrupted."""
    store = Store(root)
    try:
        with store.lock():
            train(store)
    except Interrupted as stop:  # resumable: the old session waits until the new one is done
        if replaced is None:
            raise
        raise Interrupted(f"{stop} (the session it replaces is kept in {replaced} until this init "
                          "finishes)") from None
    except BaseException as failure:
        if replaced is None:
            raise
        restore(replaced, root, failure, ours=True)
    if replaced is not None:
        shutil.rmtree(replaced.parent, ignore_errors=True)


def check_resumable(state: dict, config: dict, settings: TrainSettings, root: Path, styles: list[Path],
                    asked: TrainSettings | None) -> None:
    """Refuse to resume an init that has finished, or to resume one with other paintings (``styles``) or another step
    count (``asked``) than it started with (``config``, ``settings``)."""
    if (state["training"] or {}).get("phase") != "init":
        raise BadInput(f"nothing to resume: the init of {root} has finished")
    if asked is not None and asked.steps != settings.steps:
        raise BadInput(f"the interrupted init trains {settings.steps} steps, not {asked.steps}: resume it "
                       "as it was, or start again with --force")
    recorded = sorted(Path(entry["path"]) for entry in config["styles"])
    if styles and sorted(p.resolve() for p in images.find_paintings(styles)) != recorded:
        raise BadInput(f"the interrupted init was started with other paintings "
                       f"({', '.join(p.name for p in recorded)}): resume it as it was, or start again with --force")


def drop_replaced(root: Path) -> None:
    """Delete the session a finished init at ``root`` replaced, kept aside while it could still fail."""
    for replaced in root.parent.glob(f".{root.name}.replaced-*"):
        shutil.rmtree(replaced, ignore_errors=True)


def train_base(store: Store, config: dict, state: dict, settings: TrainSettings, working_side: int, runtime: Runtime,
          decoded: Decoded | None, on_progress: ProgressFn | None) -> dict:
    """Train the base generator and discriminator over the whole look space (from the shipped pretrained generator
    unless ``settings.start`` says otherwise), resumably, on the photos and paintings ``decoded`` (default: those the
    session keeps); write them as ``checkpoints/000`` with the choice model's prior and commit. The state committed."""
    s, n_styles, seed = settings, len(config["styles"]), config["seed"]
    contents, styles = decoded or inputs.load(store, config)
    style_grams = store.read_tensors("style_grams.safetensors")
    torch.manual_seed(seed)
    generator = Generator(controls.z_dim(n_styles), s.generator_width, s.generator_blocks)
    started_from = None if s.start == "scratch" else start.load_start(generator, style_grams, s.start)
    discriminator = Discriminator()
    trainer = Trainer(runtime.module(generator), runtime.module(discriminator),
                      picture_network(runtime, s.style_layers, s.edges), s, runtime, n_styles, s.lr)
    rng = torch.Generator().manual_seed(seed)
    dim = controls.z_dim(n_styles)
    seconds = checkpoints.train(store, trainer, "init", s.steps, content_sampler(contents, s, working_side),
                                CropSampler(styles, s.size), lambda b, g: torch.randn(b, dim, generator=g),
                                blended_targets(aimed_grams(style_grams, styles, runtime, s), n_styles), rng,
                                on_progress, s.checkpoint_seconds,
                                norms_only_steps=s.norm_only_steps if started_from else 0)
    checkpoints.write(store, "checkpoints/000", generator, discriminator, Posterior.prior(len(config["z_names"])))
    state = store.commit({**state, "checkpoint": "checkpoints/000", "training": None,
                          "steps": {**state["steps"], "init": s.steps}},
                         {"command": "init", "steps": s.steps, "seconds": round(seconds, 1),
                          "started_from": f"pretrained ({started_from})" if started_from else "scratch"})
    checkpoints.finished(store)
    return state
