"""The Session: init / propose / select / refine / apply / status, usable from Python without the CLI.

On disk (see README, "The session directory"):

    config.json                 how the session was made: settings, inputs and their sha256, versions
    state.json                  rounds, selections, steps so far, the current checkpoint (written last)
    style_grams.safetensors     the paintings' Gram matrices, layer → (K, C, C)
    checkpoints/NNN/            generator, discriminator and the choice model's posterior after init / each
                                refine; a refine's folder also keeps the state before it (for undo)
    rounds/NNN/                 proposals.safetensors (their z), candidate-XX.png, sheet.png, index.html (the
                                sheet as a page to pick from), preview.png,
                                and in picks-A-B-C/: selection.json, chosen_grams and passed_grams.safetensors
    history.json                every command that changed the session

Files are written first and ``state.json`` is replaced last, atomically, so an interrupted command
leaves the previous state whole.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import torch

from . import (__version__, applying, checkpoints, controls, guard, images, inputs, migrate, outputs, page, pipeline,
               polish, refining, render, reporting, schema, start, tiling)
from .applying import MAX_APPLY_SIDE, ApplyResult
from .checkpoints import Interrupted, ProgressFn
from .config import (MAX_CANDIDATES, MAX_SHEET_SIDE, MIN_SHEET_SIDE, POLISH_MAX_PIXELS, POLISH_OWN_GRID,
                     POLISH_STYLE_LAYERS, ProposalSettings, TrainSettings)
from .device import Runtime, resolve
from .errors import BadInput, StyleprefsError
from .guard import STYLISED, Guard, distance_to
from .networks import Discriminator, Generator
from .preference import Posterior, contrast_looks, describe_taste, fit, looks
from .rounds import (PASSED_GRAMS, Round, chosen_and_passed, choices, parse_pick, picks_file, picks_folder, preview_of)
from .rounds import load as load_rounds
from .store import SCHEMA_VERSION, NoSession, SessionError, Store, create, remove_abandoned, restore, sha256
from .training import CropSampler, Trainer, WeightsFn, blended_targets, content_sampler, gram_stats, loss_network


def _inputs(paths: list[Path]) -> list[dict]:
    return [{"path": str(p.resolve()), "sha256": sha256(p)} for p in paths]


def _opened(path: Path, wait: float = 30.0) -> Store:
    """The session folder at ``path``, checked; upgraded first (under its lock) if an older styleprefs wrote it."""
    store = Store(Path(path))
    store.check()
    migrate.upgrade(store, wait)
    return store


class Session:
    """A styleprefs session folder, loaded: its settings, state and networks."""

    def __init__(self, store: Store, runtime: Runtime):
        self.store, self.runtime = store, runtime
        self.config = schema.config(store)
        self.state = schema.state(store)
        self.settings = TrainSettings.from_dict(self.config["settings"])
        self.proposal_settings = ProposalSettings.from_dict(self.config["proposal_settings"])
        self.n_styles = len(self.config["styles"])
        self.z_dim = controls.z_dim(self.n_styles)
        if self.config["z_names"] != controls.look_names(self.n_styles):  # a look is z, then the stroke scale
            raise SessionError(f"{store.path('config.json')}: damaged ('z_names' does not fit {self.n_styles} "
                               "painting(s))")
        self.look_dim = len(self.config["z_names"])
        self._generator: Generator | None = None
        self._posterior: Posterior | None = None
        self._preferred: torch.Tensor | None = None
        self._polish_grams: dict[str, torch.Tensor] | None = None  # the paintings' Grams at polish's layers

    # ----------------------------------------------------------------- creation and loading
    @classmethod
    def open(cls, path: Path, device: str = "auto", precision: str = "auto") -> Session:
        """The session at ``path``, its networks to run on ``device`` in ``precision`` (``device.resolve``)."""
        return cls(_opened(path), resolve(device, precision))

    @classmethod
    @contextmanager
    def editing(cls, path: Path, device: str = "auto", wait: float = 30.0,
                precision: str = "auto") -> Iterator[Session]:
        """Open the session for a command that changes it: the state is read under the session's lock (waiting up
        to ``wait`` seconds for another command to let go of it)."""
        store = _opened(path, wait)
        with store.lock(wait):
            session = cls(store, resolve(device, precision))
            session.check_files()
            yield session

    @classmethod
    def init(cls, path: Path, styles: list[Path], contents: list[Path], settings: TrainSettings | None = None,
             device: str = "auto", seed: int = 0, force: bool = False, resume: bool = False,
             max_pixels: int = images.DEFAULT_MAX_PIXELS, on_progress: ProgressFn | None = None,
             proposals: ProposalSettings | None = None, precision: str = "auto") -> Session:
        """Create the session folder at ``path`` and train the base generator and discriminator (at the working side of
        ``proposals``, default :class:`ProposalSettings`'s).

        Training saves a checkpoint every ``settings.checkpoint_seconds``; ``resume=True`` continues an init that was
        interrupted (Ctrl-C, SIGTERM, a crash or kill -9) from its last checkpoint, with the paintings, photos and
        settings it started with: ``styles`` or ``settings.steps`` that differ from them are refused.
        """
        root = Path(path)
        if resume:
            with cls.editing(root, device, precision=precision) as session:
                if (session.state["training"] or {}).get("phase") != "init":
                    raise BadInput(f"nothing to resume: the init of {root} has finished")
                session.check_resumable(styles, settings)
                session._train_init(None, on_progress)
            for replaced in root.parent.glob(f".{root.name}.replaced-*"):  # the session this one replaced
                shutil.rmtree(replaced, ignore_errors=True)
            return cls.open(root, device, precision)
        settings = (settings or TrainSettings()).validate()
        proposals = (proposals or ProposalSettings()).validate()
        if root.exists() and not root.is_dir():
            raise BadInput(f"{root}: is a file, not a session folder")
        if Store(root).exists() and not force:
            raise BadInput(f"a session already exists at {root} (use --force to replace it, "
                           "or --resume to continue an interrupted init)")
        if root.is_dir() and not Store(root).exists() and any(root.iterdir()):
            raise BadInput(f"{root}: folder is not empty and is not a styleprefs session; choose another --session")
        style_paths = images.find_paintings(styles)
        content_paths = images.find_images(list(contents))
        runtime = resolve(device, precision)
        # Decode everything before touching the folder: a bad input fails here, changing nothing.
        content_images, style_images = inputs.decode(content_paths, style_paths, settings, max_pixels)
        preview = images.load_image(content_paths[0], max_side=inputs.PREVIEW_SIDE, max_pixels=max_pixels)
        style_grams = gram_stats(loss_network(runtime, settings.style_layers), style_images, runtime,
                                 settings.style_layers)
        n_styles = len(style_paths)

        def write(new: Store) -> None:
            new.write_json("config.json", {
                "schema_version": SCHEMA_VERSION, "styleprefs_version": __version__,
                "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seed": seed, "device": runtime.name, "bf16": runtime.bf16, "styles": _inputs(style_paths),
                "contents": _inputs(content_paths), "settings": settings.to_dict(),
                "proposal_settings": asdict(proposals), "z_names": controls.look_names(n_styles),
            })
            new.write_tensors("style_grams.safetensors", style_grams)
            inputs.keep(new, content_images, style_images, preview)
            new.write_json("state.json", {"checkpoint": None, "rounds": [], "refines": [],
                                          "steps": {"init": 0, "refine": 0}, "files": new.manifest(),
                                          "training": {"phase": "init", "steps": settings.steps}})

        replaced = create(root, write, force)  # a session it replaces is aside until the new one has trained
        store = Store(root)
        try:
            with store.lock():
                cls(store, runtime)._train_init((content_images, style_images), on_progress)
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
        return cls.open(root, device, precision)

    def check_resumable(self, styles: list[Path], settings: TrainSettings | None) -> None:
        """Refuse to resume the interrupted init with other paintings or another step count than it started with."""
        if settings is not None and settings.steps != self.settings.steps:
            raise BadInput(f"the interrupted init trains {self.settings.steps} steps, not {settings.steps}: resume it "
                           "as it was, or start again with --force")
        recorded = sorted(Path(entry["path"]) for entry in self.config["styles"])
        if styles and sorted(p.resolve() for p in images.find_paintings(styles)) != recorded:
            raise BadInput(f"the interrupted init was started with other paintings "
                           f"({', '.join(p.name for p in recorded)}): resume it as it was, or start again with --force")

    def _train_init(self, decoded: tuple[list[torch.Tensor], list[torch.Tensor]] | None,
                    on_progress: ProgressFn | None) -> None:
        s, rt = self.settings, self.runtime
        contents, styles = decoded or self._decode_inputs()
        style_grams = self.store.read_tensors("style_grams.safetensors")
        torch.manual_seed(self.config["seed"])
        generator = Generator(self.z_dim, s.generator_width, s.generator_blocks)
        started_from = None if s.start == "scratch" else start.load_start(generator, style_grams, s.start)
        discriminator = Discriminator()
        trainer = Trainer(rt.module(generator), rt.module(discriminator), self._loss_network(), s, rt,
                          self.n_styles, s.lr)
        rng = torch.Generator().manual_seed(self.config["seed"])
        dim = self.z_dim
        photos = content_sampler(contents, s, self.proposal_settings.working_side)
        seconds = self._train(trainer, "init", s.steps, photos, CropSampler(styles, s.size),
                              lambda b, g: torch.randn(b, dim, generator=g), blended_targets(style_grams, self.n_styles),
                              rng, on_progress, norms_only_steps=s.norm_only_steps if started_from else 0)
        checkpoints.write(self.store, "checkpoints/000", generator, discriminator, Posterior.prior(self.look_dim))
        state = {**self.state, "checkpoint": "checkpoints/000", "training": None,
                 "steps": {**self.state["steps"], "init": s.steps}}
        self._commit(state, {"command": "init", "steps": s.steps, "seconds": round(seconds, 1),
                             "started_from": f"pretrained ({started_from})" if started_from else "scratch"})
        checkpoints.finished(self.store)

    def _decode_inputs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return inputs.load(self.store, self.config)

    def _preview_of(self, entry: dict) -> Path:
        return preview_of(self.store, entry)

    def _train(self, trainer: Trainer, phase: str, steps: int, content: CropSampler, real: CropSampler,
               sample_z, targets, rng: torch.Generator, on_progress: ProgressFn | None,
               weights: WeightsFn | None = None, norms_only_steps: int = 0) -> float:
        """Run a training phase, resumable (``checkpoints.run_phase``); its seconds."""
        return checkpoints.run_phase(
            self.store, phase, steps,
            lambda first: trainer.run(phase, steps, content, real, sample_z, targets, rng, first_step=first,
                                      weights=weights, norms_only_steps=norms_only_steps),
            trainer, rng, on_progress, self.settings.checkpoint_seconds)

    # ----------------------------------------------------------------- networks and state
    @property
    def checkpoint(self) -> str:
        self._require_init()
        return self.state["checkpoint"]

    def check_files(self, names: list[str] | None = None) -> None:
        """Refuse to build on damage: the recorded files (those under ``names``, default all) must be as the last
        command left them."""
        damage = self.store.damage(self.state["files"], names)
        if damage:
            raise SessionError(f"{self.store.root}: damaged session files: {', '.join(damage)}; restore them from a "
                               "copy of the session")

    def _require_init(self) -> None:
        if self.state["checkpoint"] is None:
            raise BadInput(f"the init of {self.store.root} did not finish; continue it with `styleprefs init --resume`")

    def generator(self) -> Generator:
        """The current generator, loaded once and kept.

        Built outside inference mode even when ``stylise`` asks first, so ``refine`` can train the same object."""
        if self._generator is None:
            with torch.inference_mode(False):
                g = Generator(self.z_dim, self.settings.generator_width,
                              self.settings.generator_blocks)
                checkpoints.load(g, self.store, f"{self.checkpoint}/generator.safetensors")
                self._generator = self.runtime.module(g).eval()
        return self._generator

    def _loss_network(self):
        return loss_network(self.runtime, self.settings.style_layers)

    def preference(self) -> Posterior:
        """The choice model's posterior as of the current checkpoint."""
        if self._posterior is None:
            name = f"{self.checkpoint}/preference.safetensors"
            tensors = self.store.read_tensors(name, required=("mean", "cov", "picks"))
            dim = tensors["mean"].numel() // 2
            if tensors["mean"].shape != (2 * self.look_dim,) or tensors["cov"].shape != (2 * dim, 2 * dim):
                raise SessionError(f"{self.store.path(name)}: damaged (a choice model of the wrong shape)")
            self._posterior = Posterior.from_tensors(tensors)
        return self._posterior

    def learned_rounds(self) -> set[int]:
        """The indices of the rounds a refine has learned from."""
        return {i for refine in self.state["refines"] for i in refine["rounds"]}

    def preferred_z(self, remember: bool = True) -> torch.Tensor:
        """The look ``apply`` uses by default: of the looks picked in the rounds the choice model has learned from, the
        one it rates highest (0 before any pick; :meth:`_best_look`), moved toward the centre where its picture would
        not be a stylisation (``guard``). ``remember=False`` keeps the verdict out of the user's cache folder (a read
        that writes nothing, as ``status`` is)."""
        if self._preferred is None:
            learned = self.learned_rounds()
            self._preferred = self.stylised(self._best_look(
                self.preference(), [r for r in self.rounds() if r.index in learned]), remember)
        return self._preferred

    @staticmethod
    def _best_look(posterior: Posterior, rounds: list[Round]) -> torch.Tensor:
        """Of the looks picked in ``rounds``, the one with the highest posterior mean utility: a look the user was shown
        and chose, not the choice model's extrapolation to the edge of z (which each round offers as candidate 1, for
        the user to pick or pass over). Before any pick, the posterior's best: the centre."""
        picked = [r.z[i - 1] for r in rounds if r.selection for i in r.selection if 1 <= i <= len(r.z)]
        if posterior.picks == 0 or not picked:
            return posterior.best_z()
        picked = torch.stack(picked)
        return picked[int(posterior.utility(picked).argmax())].clone()

    def _guard(self, photo: torch.Tensor) -> Guard:
        """What counts as a stylisation of ``photo`` (as a sheet shows it) in this session."""
        return Guard(self._loss_network(), self.runtime, self.store.read_tensors("style_grams.safetensors"), photo)

    def stylised(self, look: torch.Tensor, remember: bool = True) -> torch.Tensor:
        """``look``, or the nearest look toward the centre whose picture is a stylisation (failing that, the one whose
        picture is nearest the painting), judged as the latest round's sheet shows it (the session's preview photo
        before any round). The verdict is recalled from the user's cache folder
        (``guard.recall``) and, with ``remember``, kept there for the next process while nothing it depends on changes:
        the look, the generator, the paintings, the photo, the sizes and the runtime."""
        preview, size, working = self._judged_on()
        key = guard.verdict_key(look, [self.store.path(f"{self.checkpoint}/generator.safetensors"),
                                       self.store.path("style_grams.safetensors"), preview],
                                {"size": size, "working": working, "device": self.runtime.device.type,
                                 "bf16": self.runtime.bf16})
        remembered = guard.recall(key)
        if remembered is not None:
            return look * remembered
        judged = self._judged(look)[0]
        fraction = guard.fraction_of(look, judged)
        if fraction is not None and remember:
            guard.remember(key, fraction)
        return judged

    def _judged_on(self) -> tuple[Path, int, int]:
        """Where a look is judged: the photo of the latest round's sheet (the session's preview photo before any
        round), the sheet's size and its working side."""
        entry = self.state["rounds"][-1] if self.state["rounds"] else {
            "index": None, "size": self.proposal_settings.size, "preview": inputs.PREVIEW}
        return self._preview_of(entry), entry["size"], self.working_side(entry["index"])

    def _judged(self, look: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The look :meth:`stylised` gives (judged now), its picture as the sheet shows it and that picture's distance
        to the painting over the photo's."""
        preview, size, working = self._judged_on()
        photo = _sheet_photo(preview, size, working)
        judge = self._guard(images.shrink(photo, size))
        look, picture = judge.stylised(look, lambda candidate: self.preview(photo, candidate, size, working),
                                       or_nearest=True)
        return look, picture, judge.ratio(picture)

    def split(self, look: torch.Tensor) -> tuple[torch.Tensor, float]:
        """A look → the generator's z and the stroke scale (1 for a z given alone)."""
        look = look.reshape(-1)
        if look.numel() not in (self.z_dim, self.look_dim):
            raise BadInput(f"a look of this session has {self.look_dim} numbers, got {look.numel()}")
        scale = controls.stroke_scale(float(look[self.z_dim])) if look.numel() > self.z_dim else 1.0
        return look[: self.z_dim], scale

    def rounds(self) -> list[Round]:
        """Every round as stored (``rounds.load``)."""
        return load_rounds(self.store, self.state, self.look_dim)

    def _commit(self, state: dict, event: dict, leaving: tuple[str, ...] = ()) -> None:
        """Write ``state`` (with the manifest of the files it uses; those under the folders ``leaving`` are about to go)
        atomically, then log ``event``."""
        files = {name: f for name, f in self.store.manifest().items() if not name.startswith(leaving)}
        state = {**state, "files": files}  # committed with the state it describes
        self.store.write_json("state.json", state)
        self.state = state
        self.store.append_history(event)

    # ----------------------------------------------------------------- the loop
    def stylise(self, image: torch.Tensor, look: torch.Tensor | None = None, stroke_scale: float = 1.0,
                side: int | None = None) -> torch.Tensor:
        """Stylise one (3, H, W) image in [0, 1] with ``look`` (default: the preferred one); see :meth:`stylise_batch`."""
        return self.stylise_batch(image[None], look, stroke_scale, side)[0]

    @torch.inference_mode()
    def stylise_batch(self, batch: torch.Tensor, look: torch.Tensor | None = None, stroke_scale: float = 1.0,
                      side: int | None = None, as_bytes: bool = False,
                      finish: tuple[polish.Objective, int, polish.StepFn | None] | None = None,
                      strength: float = 1.0, keep_colours: bool = False) -> torch.Tensor:
        """Stylise (B, 3, H, W) images of one size (in [0, 1], or uint8 as decoded) with one ``look`` (a z, or z and
        its stroke scale), as the contact sheet shows it whatever their size: the generator runs at the working
        resolution (long side ``side``, default :meth:`working_side`, ÷ the look's stroke scale × ``stroke_scale``)
        and the full-resolution photo guides the result back to (B, 3, H, W), fp32 on the CPU (uint8 with
        ``as_bytes``).

        ``finish`` = (objective, steps, on_step) polishes each picture from the generator's (:func:`polish.polish`): at
        its own size up to ``POLISH_OWN_GRID`` times the working grid's pixels, else on the working grid before the
        full-size composition.

        ``strength`` and ``keep_colours`` are :func:`render.adjusted`'s dials, on the finished full-size picture."""
        if strength != 1.0 or keep_colours:
            out = self.stylise_batch(batch, look, stroke_scale, side, False, finish)
            out = render.adjusted(out, render.resample(batch, tuple(batch.shape[-2:])), strength, keep_colours)
            return render.to_bytes(out) if as_bytes else out
        z, scale = self.split(self.preferred_z() if look is None else look)
        side, scale = side or self.working_side(), scale * stroke_scale
        if finish is None:
            return render.render(lambda small: self._generate(small, z), batch, side, scale, as_bytes)
        height, width = batch.shape[-2:]
        grid = render.working_size(height, width, side, scale)
        if height * width > min(POLISH_OWN_GRID * grid[0] * grid[1], POLISH_MAX_PIXELS):  # on the working grid
            return render.render(lambda small: self._polished(small, self._generate(small, z), *finish), batch, side,
                                 scale, as_bytes)
        started = render.render(lambda small: self._generate(small, z), batch, side, scale)
        finished = self._polished(render.resample(batch, (height, width)), started, *finish)
        return render.to_bytes(finished) if as_bytes else finished

    def _polished(self, photos: torch.Tensor, started: torch.Tensor, goal: polish.Objective, steps: int,
                  on_step: polish.StepFn | None) -> torch.Tensor:
        """``started``, the generator's pictures of ``photos`` (B, 3, h, w), each finished by ``steps`` of polish."""
        return torch.cat([polish.polish(self._polish_network(), self.runtime, photo[None], start[None], goal, steps,
                                        on_step) for photo, start in zip(photos, started, strict=True)])

    def _generate(self, batch: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The generator on (B, 3, H, W) at its own grid; over ``tiling.TILE_ABOVE`` pixels in tiles, in bounded
        memory."""
        generator = self.generator()
        if tiling.needs_tiles(*batch.shape[-2:]):
            return torch.stack([tiling.stylise_tiled(generator, image, z, self.runtime) for image in batch])
        with self.runtime.autocast():
            z = z.reshape(1, -1).expand(len(batch), -1).to(self.runtime.device)
            return generator(self.runtime.images(batch), z).float().cpu()

    def working_side(self, round_index: int | None = None) -> int:
        """The long side (px) the generator works at: where round ``round_index`` (1-based; default the latest) was
        rendered, so its picks look as they did on its sheet; before any round, the session's ``working_side``
        setting."""
        rounds = self.state["rounds"]
        if not rounds:
            return self.proposal_settings.working_side
        return rounds[-1 if round_index is None else round_index - 1]["working_side"]

    def preview(self, photo: torch.Tensor, look: torch.Tensor, size: int, working: int) -> torch.Tensor:
        """A candidate as the sheet shows it: ``photo`` rendered with ``look`` at the working side ``working``, then
        shrunk to the long side ``size`` as any output is for viewing (what apply gives at any size, seen small)."""
        return images.shrink(self.stylise(photo, look, side=working), size)

    def propose(self, n: int | None = None, size: int | None = None, preview: Path | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> Round:
        """Render ``n`` candidates, each from its own z, plus a numbered contact sheet; start a round. Each candidate
        rendered is reported to ``on_progress(done, n)``.

        Rendering only reads the session, so it runs without the lock (several ``propose`` can render
        at once); the lock is taken just to number the round, move its folder in place and record it."""
        n = self.proposal_settings.n if n is None else n
        size = self.proposal_settings.size if size is None else size
        if not 1 <= n <= MAX_CANDIDATES:
            raise BadInput(f"the number of candidates must be between 1 and {MAX_CANDIDATES}, got {n}", "n")
        if not MIN_SHEET_SIDE <= size <= MAX_SHEET_SIDE:
            raise BadInput(f"the sheet's size must be between {MIN_SHEET_SIDE} and {MAX_SHEET_SIDE} px, got {size}",
                           "size")
        self.check_files()  # a new round must not be built on damage
        preview_path = Path(preview) if preview else inputs.default_preview(self.store)
        working = self.proposal_settings.working_side
        photo = _sheet_photo(preview_path, size, working)
        checkpoint, expected = self.checkpoint, len(self.state["rounds"]) + 1
        z, rendered = self._draw(n, expected, photo, size, working, on_progress)
        candidates = [f"candidate-{i:02d}.png" for i in range(1, n + 1)]
        self.store.path("rounds").mkdir(exist_ok=True)
        remove_abandoned(self.store.path("rounds"), ".pending-")
        pending = Path(tempfile.mkdtemp(prefix=f".pending-{os.getpid()}-", dir=self.store.path("rounds")))
        pending.chmod(images.plain_mode(folder=True))  # it becomes the round's folder; mkdtemp makes it 0700

        def write(z: torch.Tensor, rendered: list[torch.Tensor]) -> None:
            Store(pending).write_tensors("proposals.safetensors", {"z": z})
            for image, file in zip(rendered, candidates, strict=True):
                images.save_image(image, pending / file)

        try:
            write(z, rendered)
            images.save_image(photo, pending / inputs.PREVIEW)  # the round keeps the photo its sheet shows
            with self.store.lock():
                self.state = schema.state(self.store)  # as it is now, under the lock
                index = len(self.state["rounds"]) + 1
                if (index, self.state["checkpoint"]) != (expected, checkpoint):
                    # Another propose (or a refine) committed while this one rendered: drawn for the number it would
                    # have had, this round would repeat that one. Drawn again for its own number, under the lock.
                    self._generator, self._posterior, self._preferred = None, None, None
                    checkpoint = self.state["checkpoint"]
                    z, rendered = self._draw(n, index, photo, size, working, on_progress)
                    write(z, rendered)
                sheet = images.contact_sheet(rendered, [str(i) for i in range(1, n + 1)],
                                             title=f"round {index}: styleprefs select N [N ...]")
                images.save_image(sheet, pending / "sheet.png")
                page.write(pending, index, candidates, self.store.root)  # the sheet as a page to pick from
                name = f"rounds/{index:03d}"
                # A folder with this number but no entry in the state is what a killed propose left.
                shutil.rmtree(self.store.path(name), ignore_errors=True)
                pending.rename(self.store.path(name))
                entry = {"index": index, "folder": name, "candidates": candidates, "n": n, "size": size,
                         "working_side": working,
                         "preview": f"{name}/{inputs.PREVIEW}", "checkpoint": checkpoint, "selection": None}
                self._commit({**self.state, "rounds": [*self.state["rounds"], entry]},
                             {"command": "propose", "round": index, "n": n})
        finally:
            shutil.rmtree(pending, ignore_errors=True)
        return self.rounds()[-1]

    def _draw(self, n: int, index: int, photo: torch.Tensor, size: int, working: int,
              on_progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Round ``index``'s ``n`` looks (seeded by its number; before any pick, ``controls.first_round``'s design) and
        their pictures, each a stylisation (``guard``).
        After picks, candidate 1 is the choice model's own best look (``Posterior.best_z``, moved toward the centre as
        :meth:`preferred_z` moves a look), offered for the user to pick or pass over."""
        posterior = self.preference()
        proposed = posterior.propose(n, seed=self.config["seed"] * 1000 + index)
        if posterior.picks == 0:
            proposed = controls.first_round(proposed)
        judge = self._guard(images.shrink(photo, size))
        shown = []
        for i, look in enumerate(proposed):
            shown.append(judge.stylised(look, lambda candidate: self.preview(photo, candidate, size, working),
                                        or_nearest=i == 0 and posterior.picks > 0))
            if on_progress:
                on_progress(i + 1, n)
        return torch.stack([look for look, _ in shown]), [picture for _, picture in shown]  # as shown: learned from

    def select(self, indices: list[int]) -> Round:
        """Record the chosen candidates (1-based) of the latest round and their Gram statistics."""
        if not self.state["rounds"]:
            raise BadInput("nothing to select from: run `styleprefs propose` first")
        entry = self.state["rounds"][-1]
        if not indices:
            raise BadInput("select needs at least one candidate number")
        bad = [i for i in indices if not 1 <= i <= entry["n"]]
        if bad:
            raise BadInput(f"no candidate {bad[0]} in round {entry['index']}: choose from 1 to {entry['n']}")
        if len(set(indices)) != len(indices):
            raise BadInput(f"candidate numbers repeat: {' '.join(map(str, indices))}")
        if any(entry["index"] in refine["rounds"] for refine in self.state["refines"]):
            raise BadInput(f"round {entry['index']} has already been learned from: `styleprefs propose` a new "
                           "round, or `styleprefs refine --undo` to change its picks")
        folder = self.store.path(entry["folder"])
        chosen, passed = chosen_and_passed(folder, entry["candidates"], indices)
        grams = gram_stats(self._loss_network(), self._learning_images(entry, indices), self.runtime,
                           self.settings.style_layers)
        # The picks' files go to a folder of their own, beside any earlier picks' (still the state's until the commit
        # below), so an interrupted select leaves the old picks whole. The passed-over candidates' Grams are left to
        # refine (a dozen more VGG passes, ~3 s here).
        picks = f"{entry['folder']}/{picks_folder(indices)}"
        self.store.write_tensors(f"{picks}/chosen_grams.safetensors", grams)
        contrast = contrast_looks([looks(x) for x in chosen], [looks(x) for x in passed])
        self.store.write_json(f"{picks}/selection.json", {"round": entry["index"], "chosen": indices, "looks": contrast})
        rounds = [*self.state["rounds"][:-1], {**entry, "selection": indices}]
        replaced = [p for p in folder.glob("picks-*") if p.name != picks_folder(indices)]
        self._commit({**self.state, "rounds": rounds}, {"command": "select", "round": entry["index"], "chosen": indices},
                     leaving=tuple(f"{entry['folder']}/{p.name}/" for p in replaced))
        for earlier in replaced:
            shutil.rmtree(earlier, ignore_errors=True)
        return self.rounds()[-1]

    def refine(self, steps: int | None = None, resume: bool = False, on_progress: ProgressFn | None = None) -> dict:
        """Learn from all selections: fit the choice model to every round's picks (chosen and unchosen),
        build the personal style target from the chosen images' Grams at the posterior's best z,
        fine-tune G and D there; saves a new checkpoint, keeping the state before it for ``undo``.

        ``resume=True`` continues an interrupted refine from its last checkpoint; a fresh refine
        discards such a partial one."""
        self._require_init()
        training = self.state["training"] or {}
        if resume:
            if training.get("phase") != "refine":
                raise BadInput("nothing to resume: no refine was interrupted")
            steps = training["steps"]
        else:
            checkpoints.finished(self.store)
        steps = self.settings.refine_steps if steps is None else steps
        if steps < 0:
            raise BadInput(f"refine steps must be at least 0, got {steps}", "steps")
        selected = [r for r in self.rounds() if r.selection]
        consumed = self.learned_rounds()
        if not selected or all(r.index in consumed for r in selected):
            raise BadInput("no new selection to learn from: run `styleprefs propose`, then `styleprefs select N ...`")
        before = {**self.state, "training": None}
        posterior = fit(choices(selected), self.look_dim)
        best, unrefined, _ = self._judged(self._best_look(posterior, selected))  # what apply gives without it
        style_grams = self.store.read_tensors("style_grams.safetensors")
        for r in selected:  # computed once per round, at its first refine
            if not self.store.path(self.in_round(r.index, PASSED_GRAMS)).exists():
                passed = self._passed_grams(r)
                if passed is not None:
                    self.store.write_tensors(self.in_round(r.index, PASSED_GRAMS), passed)
        # The stroke scale is exact at render time, so training learns z's part of the taste: the current look is
        # rendered at scale 1 (at its own scale, the strokes would be enlarged twice: once by G, once by the render).
        best_z, _ = self.split(best)
        personal = self.personal_target(selected, best_z)

        # A batch holds at least one sample near the learned look and one from the prior (init may train on one large
        # crop a step).
        rt, s = self.runtime, replace(self.settings, batch=max(2, self.settings.batch))
        generator = self.generator()
        discriminator = Discriminator()
        checkpoints.load(discriminator, self.store, f"{self.checkpoint}/discriminator.safetensors")
        net = self._loss_network()
        trainer = Trainer(generator, rt.module(discriminator), net, s, rt, self.n_styles, s.refine_lr)
        contents, styles = self._decode_inputs()
        chosen_images = [images.load_image(r.candidates[i - 1]) for r in selected for i in r.selection]
        plan = refining.BatchPlan(best_z, personal, blended_targets(style_grams, self.n_styles), half=s.batch // 2,
                                  n_layers=len(s.style_layers), n_styles=self.n_styles, colour_centre=s.colour_centre)
        rng = torch.Generator().manual_seed(self.config["seed"] + 7919 * (len(self.state["refines"]) + 1))
        self.state = {**self.state, "training": {"phase": "refine", "steps": steps}}
        self.store.write_json("state.json", self.state)
        seconds = self._train(trainer, "refine", steps, content_sampler(contents, s, self.working_side()),
                              CropSampler(styles + chosen_images, s.size), plan.sample_z, plan.targets, rng,
                              on_progress, plan.loss_weights)
        # The fine-tuning is kept only while the look it serves is still a stylisation, and only if what apply then
        # gives is nearer the personal target than what it gave before. Tastes that want what the painting lacks (warm
        # against a blue painting, "subtle") drove the generator toward the edge of the stylisations; the guard then
        # pulled the look back, and the user got a picture further from their picks than with no fine-tuning at all
        # (benchmarks/preference.py: warm −2.7 σ, subtle −1.1 σ against the choice model alone).
        nearer = None  # the picture's style distance to the personal target, before and after the fine-tuning
        kept = True
        if steps:
            _, refined, ratio = self._judged(self._best_look(posterior, selected))
            net = self._loss_network()
            nearer = {"before": round(distance_to(net, self.runtime, unrefined, personal), 4),
                      "after": round(distance_to(net, self.runtime, refined, personal), 4)}
            kept = ratio <= STYLISED and nearer["after"] < nearer["before"]
        if not kept:
            checkpoints.load(generator, self.store, f"{self.checkpoint}/generator.safetensors")
            checkpoints.load(discriminator, self.store, f"{self.checkpoint}/discriminator.safetensors")

        name = f"checkpoints/{len(self.state['refines']) + 1:03d}"
        checkpoints.write(self.store, name, generator, discriminator, posterior)
        self.store.write_tensors(f"{name}/personal_grams.safetensors", personal)
        self.store.write_json(f"{name}/state_before.json", before)
        refine = {"checkpoint": name, "rounds": [r.index for r in selected], "steps": steps,
                  "fine_tuning_kept": kept, "distance_to_target": nearer,
                  "seconds": round(seconds, 1), "previous": self.checkpoint}
        state = {**self.state, "checkpoint": name, "refines": [*self.state["refines"], refine], "training": None,
                 "steps": {**self.state["steps"], "refine": self.state["steps"]["refine"] + steps}}
        self._commit(state, {"command": "refine", **refine})
        checkpoints.finished(self.store)
        self._generator, self._posterior, self._preferred = None, None, None
        return refine

    def undo(self) -> dict:
        """Return the session to the state before the last refine (an interrupted one counts as the last).

        The undone checkpoint's folder stays on disk until a new refine takes its number; rounds
        proposed after that refine leave the state, and the picks of the rounds it learned from can
        be changed again with ``select``."""
        self._require_init()
        if (self.state["training"] or {}).get("phase") == "refine":
            checkpoints.finished(self.store)
            self._commit({**self.state, "training": None}, {"command": "undo", "undone": "interrupted refine"})
            return {"undone": "interrupted refine", "checkpoint": self.checkpoint, "rounds": len(self.state["rounds"])}
        if not self.state["refines"]:
            raise BadInput("nothing to undo: no refine has been made")
        last = self.state["refines"][-1]
        before = schema.state(self.store, f"{last['checkpoint']}/state_before.json")
        self._commit(before, {"command": "undo", "undone": last["checkpoint"], "checkpoint": before["checkpoint"]})
        self._generator, self._posterior, self._preferred = None, None, None
        return {"undone": last["checkpoint"], "checkpoint": before["checkpoint"], "rounds": len(before["rounds"])}

    def personal_target(self, selected: list[Round], z: torch.Tensor) -> dict[str, torch.Tensor]:
        """What refine trains the looks near ``z`` toward (``refining.personal_target``): the Grams of the current look
        at the preferred ``z``, rendered on the latest picked round's preview as its sheet would show it, moved along
        the direction the user has been choosing, round by round."""
        net = self._loss_network()
        latest = self.state["rounds"][selected[-1].index - 1]
        preview = self._preview_of(latest)
        chosen = [self.store.read_tensors(self.in_round(r.index, "chosen_grams.safetensors")) for r in selected]
        # as the sheet would show it, like the picks' Grams (``_learning_images``)
        look = gram_stats(net, self._on_sheet(latest, preview, [z]), self.runtime, self.settings.style_layers)
        return refining.personal_target(look, chosen, [self._passed_grams(r) for r in selected],
                                        self.settings.style_layers, self.settings.preference_step,
                                        self.settings.preference_reach)

    def in_round(self, index: int, name: str) -> str:
        """The store name of a file about round ``index``'s current picks (``rounds.picks_file``)."""
        return picks_file(self.state["rounds"][index - 1], name)

    def selection_file(self, r: Round) -> Path:
        """Where round ``r``'s picks and how they differ from the rest are written down (``selection.json``)."""
        return self.store.path(self.in_round(r.index, "selection.json"))

    def _passed_grams(self, r: Round) -> dict[str, torch.Tensor] | None:
        """The mean Grams of a round's passed-over candidates, layer → (1, C, C): as saved by its first refine, else
        computed from the candidate images; None when every candidate was chosen."""
        saved = self.in_round(r.index, PASSED_GRAMS)
        if self.store.path(saved).exists():
            return self.store.read_tensors(saved)
        passed = [i for i in range(1, len(r.candidates) + 1) if i not in r.selection]
        if not passed:
            return None
        grams = gram_stats(self._loss_network(), self._learning_images(self.state["rounds"][r.index - 1], passed),
                           self.runtime, self.settings.style_layers)
        return {k: v.mean(0, keepdim=True) for k, v in grams.items()}

    def _learning_images(self, entry: dict, indices: list[int]) -> list[torch.Tensor]:
        """Candidates ``indices`` (1-based) of a round as refine learns from them: their z alone, rendered at stroke
        scale 1 as the sheet would have shown it. The scale is applied exactly at render time; learnt into G as well,
        a taste for small strokes was applied twice (benchmarks/preference.py: beats random on 3 of 5 tastes, against
        4 this way). Measured on the working grid instead, fine-tuning moved G much further and the outputs stopped
        being stylisations (2 of 5). The candidate images themselves where the renders cannot be reproduced: a round
        proposed from another checkpoint, or rendered by an earlier version (its ``checkpoint`` is null)."""
        folder = self.store.path(entry["folder"])
        if entry["checkpoint"] != self.checkpoint:
            return [images.load_image(folder / entry["candidates"][i - 1]) for i in indices]
        looks = self.store.read_tensors(f"{entry['folder']}/proposals.safetensors", required=("z",))["z"]
        return self._on_sheet(entry, self._preview_of(entry), [self.split(looks[i - 1])[0] for i in indices])

    def _on_sheet(self, entry: dict, preview: Path, looks: list[torch.Tensor]) -> list[torch.Tensor]:
        """``looks`` rendered on ``preview`` as round ``entry``'s sheet shows a candidate (its working side and size)."""
        working = self.working_side(entry["index"])
        photo = images.load_image(preview, max_side=max(entry["size"], working))
        return [self.preview(photo, look, entry["size"], working) for look in looks]

    def resolve_pick(self, pick: str) -> torch.Tensor:
        """The look of ``ROUND:INDEX`` (both 1-based)."""
        return self._pick(pick)[0]

    def _pick(self, pick: str) -> tuple[torch.Tensor, int]:
        return parse_pick(pick, self.rounds())

    def look_to_apply(self, pick: str | None = None) -> tuple[torch.Tensor, int]:
        """The look ``apply`` renders (``pick``'s, ``ROUND:INDEX``, else the learned one) and its working side."""
        # What it reads: the settings, the paintings' Grams, the current checkpoint; a pick's round, or the photo the
        # guard judges the learned look on.
        reads = ["rounds"] if pick else [self._judged_on()[0].relative_to(self.store.root).as_posix()]
        self.check_files(["config.json", "style_grams.safetensors", self.checkpoint, *reads])
        look, round_index = self._pick(pick) if pick else (self.preferred_z(), None)
        return look, self.working_side(round_index)

    def apply(self, inputs: list[Path], out: Path, size: int | None = None, pick: str | None = None,
              fmt: str = "png", skip_existing: bool = False, shard: str | None = None, stroke_scale: float = 1.0,
              max_pixels: int = images.DEFAULT_MAX_PIXELS, max_batch: int = pipeline.MAX_BATCH,
              on_progress: Callable[[int, int, Path], None] | None = None, polish_steps: int | None = None,
              on_step: polish.StepFn | None = None, strength: float = 1.0,
              keep_colours: bool = False) -> ApplyResult:
        """Stylise files and folders into ``out``, mirroring their names; never writes over an input.

        ``shard="K/N"`` takes a deterministic 1/N of the inputs (for parallel jobs sharing a session);
        ``skip_existing`` leaves outputs that are already there. Unusable images are skipped and listed.
        Photos are decoded and written on worker threads while the model runs, and consecutive photos of
        one size go through it together, up to ``max_batch`` (1: one at a time; the outputs are the same).

        Every photo becomes the picked candidate (or the learned look) at its own size: the generator works at the
        preview's scale relative to the image, and ``stroke_scale`` makes the strokes that many times larger.

        ``polish_steps`` finishes each photo with that many steps of optimisation toward its look's loss
        (:mod:`styleprefs.polish`; ``config.POLISH_STEPS`` is the default of ``--polish``), reported to
        ``on_step(step, steps)``; photos are then taken one at a time. ``strength`` (0–1: how much of the look over the
        photo) and ``keep_colours`` (the photo's own colours under the look's strokes) are exact, on the full-size
        picture."""
        applying.check_options(fmt, size, max_batch, stroke_scale, strength)
        if polish_steps is not None:
            polish.check_steps(polish_steps)
            max_batch = 1
        look, side = self.look_to_apply(pick)
        finish = None
        if polish_steps is not None:
            longest = side / (self.split(look)[1] * stroke_scale)  # the longest working grid this look can have
            if longest * longest > POLISH_MAX_PIXELS:
                raise BadInput(f"polish works on at most {POLISH_MAX_PIXELS} pixels at once; this look's strokes "
                               f"at stroke scale {stroke_scale:g} need a grid up to {longest:.0f} px long: choose a "
                               "larger stroke scale")
            finish = (self.goal(look, learned=pick is None), polish_steps, on_step)
        return applying.run(outputs.plan(inputs, out, fmt, shard), skip_existing,
                            lambda todo: self.stylise_files(todo, look, side, stroke_scale, size, max_pixels, max_batch,
                                                            finish, strength, keep_colours),
                            on_progress)

    def goal(self, look: torch.Tensor, learned: bool = False) -> polish.Objective:
        """The loss ``look`` stands for (:func:`polish.objective`), over ``POLISH_STYLE_LAYERS``: toward the paintings
        blended as its z says, or for the learned look, once a refine has built one, toward the personal target of the
        picks (at the layers it was built for; the paintings' at the others)."""
        personal = f"{self.checkpoint}/personal_grams.safetensors"
        self.check_files([inputs.KEPT, personal])  # what it reads (apply has checked the checkpoint itself)
        if self._polish_grams is None:
            _, paintings = inputs.load(self.store, self.config, photos=False)
            self._polish_grams = gram_stats(self._polish_network(), paintings, self.runtime, POLISH_STYLE_LAYERS)
        grams = dict(self._polish_grams)
        if learned and self.store.path(personal).is_file():
            target = self.store.read_tensors(personal)
            for name in self.settings.style_layers:
                if name in grams:
                    if name not in target or target[name].shape != grams[name].shape[-2:]:
                        raise SessionError(f"{self.store.path(personal)}: damaged (no {name} target of its shape)")
                    grams[name] = target[name]
        return polish.objective(self.split(look)[0], grams, self.settings, self.n_styles)

    def _polish_network(self):
        return loss_network(self.runtime, POLISH_STYLE_LAYERS)

    def stylise_files(self, pairs: list[tuple[Path, Path]], look: torch.Tensor, side: int, stroke_scale: float = 1.0,
                      size: int | None = None, max_pixels: int = images.DEFAULT_MAX_PIXELS,
                      max_batch: int = pipeline.MAX_BATCH,
                      finish: tuple[polish.Objective, int, polish.StepFn | None] | None = None,
                      strength: float = 1.0, keep_colours: bool = False) -> Iterator[pipeline.Item]:
        """Stylise each (input, output) pair with ``look`` at the working side ``side`` and write the output
        atomically (``pipeline.stylise_files``); yields each item, in order, once written or skipped. ``finish``:
        polish each photo toward an objective, in so many steps, reporting each (:meth:`stylise_batch`)."""
        self.generator()  # a damaged checkpoint fails here, before any photo is read
        _, scale = self.split(look)
        return pipeline.stylise_files(
            pairs, lambda batch: self.stylise_batch(batch, look, stroke_scale, side, as_bytes=True, finish=finish,
                                                    strength=strength, keep_colours=keep_colours),
            max_side=size or MAX_APPLY_SIDE, max_pixels=max_pixels, max_batch=max_batch,
            batch_pixels=pipeline.BATCH_PIXELS[self.runtime.device.type],
            photo_pixels=pipeline.BATCH_PHOTO_PIXELS[self.runtime.device.type],
            grid=lambda height, width: render.working_size(height, width, side, scale * stroke_scale))

    def training_progress(self) -> dict | None:
        """The unfinished init or refine, if any: its phase, the steps saved so far, and the total."""
        training = self.state["training"]
        if not training:
            return None
        return {**training, "completed": checkpoints.saved_steps(self.store), "resume": f"styleprefs {training['phase']} --resume"}

    def status(self) -> dict:
        """The session as ``status`` shows it (``reporting.status``); reads, and writes nothing."""
        return reporting.status(self.snapshot())

    def history(self) -> list[dict]:
        """Every round, its picks and the refine that learned from it (``reporting.history``)."""
        return reporting.history(self.snapshot(with_history=True))

    def snapshot(self, with_history: bool = False) -> reporting.Snapshot:
        """What ``status`` (and with ``with_history``, ``history``) shows, read from the session as plain data."""
        damaged = self.store.damage(self.state["files"])
        usable = bool(self.state["checkpoint"]) and not damaged
        look = self.preferred_z(remember=False) if usable else None  # a read: nothing written, not even to the cache
        scale = None if look is None else self.split(look)[1]
        taste = describe_taste(self.preference() if usable else None, look, self._style_names(),
                               self.learned_looks() if usable else [], scale)
        after = {}
        if with_history:
            after = {refine["checkpoint"]: (taste if refine["checkpoint"] == self.checkpoint else
                                            self._taste_after(refine))["summary"] for refine in self.state["refines"]}
        return reporting.Snapshot(self.store.root.resolve(), self.state, self.config, self.runtime.name,
                                  self.runtime.bf16, damaged, self.training_progress(), taste, look, scale, after)

    def learned_looks(self, learned: set[int] | None = None) -> list[dict[str, float]]:
        """For each round a refine has learned from (or each of ``learned``), how its picks differ from the passed-over
        candidates (saved by ``select``)."""
        learned = self.learned_rounds() if learned is None else learned
        saved = [self.in_round(r.index, "selection.json") for r in self.rounds() if r.index in learned]
        return [schema.selection(self.store, name)["looks"] for name in saved]

    def _taste_after(self, refine: dict) -> dict:
        """The taste an earlier refine had learned, in words: its choice model's best look."""
        name = f"{refine['checkpoint']}/preference.safetensors"
        posterior = Posterior.from_tensors(self.store.read_tensors(name, required=("mean", "cov", "picks")))
        z = posterior.best_z()
        return describe_taste(posterior, z, self._style_names(), self.learned_looks(set(refine["rounds"])),
                              self.split(z)[1])

    def _style_names(self) -> list[str]:
        """The paintings' names, as the taste words them."""
        return [Path(s["path"]).stem for s in self.config["styles"]]


def _sheet_photo(path: Path, size: int, working: int) -> torch.Tensor:
    """The photo a sheet of ``size`` px is rendered from: sharp enough for the smallest strokes a look has (a working
    grid over the session's). From a smaller copy, those candidates were made from an enlarged photo and showed less
    detail than apply then gave."""
    return images.load_image(path, max_side=max(size, math.ceil(working / controls.SMALLEST_STROKES)))


__all__ = ["ApplyResult", "NoSession", "Round", "Session", "SessionError", "StyleprefsError"]
