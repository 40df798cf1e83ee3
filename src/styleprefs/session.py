"""The Session: init / propose / select / refine / apply / status, usable from Python without the CLI.

On disk (docs/session-format.md):

    config.json                 how the session was made: settings, inputs and their sha256, versions
    state.json                  rounds, selections, steps so far, the current checkpoint (written last)
    style_grams.safetensors     the paintings' Gram matrices, layer → (K, C, C)
    checkpoints/NNN/            generator, discriminator and the choice model's posterior after init / each
                                refine; a refine's folder also keeps the state before it (for undo)
    rounds/NNN/                 proposals.safetensors (their looks), candidate-XX.png, sheet.png, index.html (the
                                sheet as a page to pick from), preview.png,
                                and in picks-A-B-C/: selection.json, chosen_grams and passed_grams.safetensors
    history.json                every command that changed the session

Files are written first and ``state.json`` is replaced last, atomically, so an interrupted command
leaves the previous state whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from . import applying, checkpoints, controls, creating, images, inputs, migrate, outputs, pipeline, polish
from . import refining, reporting, rounds, schema, tiling
from .applying import ApplyResult, Finish
from .checkpoints import ProgressFn
from .config import ProposalSettings, TrainSettings, check_candidates, check_sheet_side
from .device import Runtime, resolve
from .errors import BadInput, StyleprefsError
from .looks import CountFn, Finisher, Looks, best_look, sheet_photo, split
from .networks import Generator
from .preference import Posterior, fit
from .rounds import Round, choices, parse_pick, picks_file
from .store import NoSession, SessionError, Store


class Session:
    """A styleprefs session folder, loaded: its settings, state and networks. Each command opens it (under its lock
    if it changes it) and tells its story in calls to the rooms that own the parts."""

    def __init__(self, store: Store, runtime: Runtime):
        self.store, self.runtime = store, runtime
        self.config = schema.config(store)
        self.state = schema.state(store)
        self.settings = TrainSettings.from_dict(self.config["settings"])
        self.proposal_settings = ProposalSettings.from_dict(self.config["proposal_settings"])
        self.n_styles = len(self.config["styles"])
        self.z_dim, self.look_dim = controls.z_dim(self.n_styles), len(self.config["z_names"])
        self._polish_grams: dict[str, torch.Tensor] | None = None  # the paintings' Grams at polish's layers
        self._forget()  # the current checkpoint's generator, choice model and preferred look, each read once

    # ----------------------------------------------------------------- creation and loading
    @classmethod
    def open(cls, path: Path, device: str = "auto", precision: str = "auto") -> Session:
        """The session at ``path``, its networks to run on ``device`` in ``precision`` (``device.resolve``). A session
        in an older format is first upgraded in place, once, under its lock (``migrate.opened``)."""
        return cls(migrate.opened(path), resolve(device, precision))

    @classmethod
    @contextmanager
    def editing(cls, path: Path, device: str = "auto", wait: float = 30.0,
                precision: str = "auto") -> Iterator[Session]:
        """Open the session for a command that changes it: the state is read under the session's lock (waiting up
        to ``wait`` seconds for another command to let go of it)."""
        store = migrate.opened(path, wait)
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
                creating.check_resumable(session.state, session.config, session.settings, root, styles, settings)
                session._train_init(None, on_progress)
            creating.drop_replaced(root)
        else:
            creating.make(root, styles, contents, settings, proposals, seed, force, max_pixels, device, precision,
                          lambda store, runtime, decoded: cls(store, runtime)._train_init(decoded, on_progress))
        return cls.open(root, device, precision)

    def _train_init(self, decoded: creating.Decoded | None, on_progress: ProgressFn | None) -> None:
        self.state = creating.train_base(self.store, self.config, self.state, self.settings,
                                         self.proposal_settings.working_side, self.runtime, decoded, on_progress)

    # ----------------------------------------------------------------- networks and state
    @property
    def checkpoint(self) -> str:
        self._require_init()
        return self.state["checkpoint"]

    def check_files(self, names: list[str] | None = None) -> None:
        """Refuse to build on damage: the recorded files (those under ``names``, default all) must be as the last
        command left them."""
        self.store.check_damage(self.state["files"], names)

    def _require_init(self) -> None:
        if self.state["checkpoint"] is None:
            raise BadInput(f"the init of {self.store.root} did not finish; continue it with `styleprefs init --resume`")

    def generator(self) -> Generator:
        """The current generator, loaded once and kept (``refine`` trains this object)."""
        if self._generator is None:
            self._generator = checkpoints.load_generator(self.store, self.checkpoint, self.z_dim, self.settings,
                                                         self.runtime)
        return self._generator

    def preference(self) -> Posterior:
        """The choice model's posterior as of the current checkpoint."""
        if self._posterior is None:
            self._posterior = checkpoints.load_posterior(self.store, self.checkpoint, self.look_dim)
        return self._posterior

    def preferred_z(self, remember: bool = True) -> torch.Tensor:
        """The look ``apply`` uses by default: of the looks picked in the rounds the choice model has learned from, the
        one it rates highest (0 before any pick; ``looks.best_look``), moved toward the centre where its picture would
        not be a stylisation (``guard``). ``remember=False`` keeps the verdict out of the user's cache folder (a read
        that writes nothing, as ``status`` is)."""
        if self._preferred is None:
            posterior, learned = self.preference(), rounds.learned(self.state)
            picked = [r for r in self.rounds() if r.index in learned]
            self._preferred = self.stylised(best_look(posterior, picked), remember)
        return self._preferred

    def stylised(self, look: torch.Tensor, remember: bool = True) -> torch.Tensor:
        """``look``, or the nearest look toward the centre whose picture is a stylisation (``Looks.stylised``)."""
        self._require_init()
        return self.looks().stylised(look, remember)

    def looks(self) -> Looks:
        """The session's looks as its sheets show them, rendered by its generator."""
        return Looks(self.store, self.state["rounds"], self.proposal_settings, self.state["checkpoint"], self.runtime,
                     self.settings.style_layers, self.settings.edges, self.z_dim, self.look_dim,
                     lambda photo, look, working: self.stylise(photo, look, side=working))

    def split(self, look: torch.Tensor) -> tuple[torch.Tensor, float]:
        """A look → the generator's z and the stroke scale (1 for a z given alone)."""
        return split(look, self.z_dim, self.look_dim)

    def rounds(self) -> list[Round]:
        """Every round as stored (``rounds.load``)."""
        return rounds.load(self.store, self.state, self.look_dim)

    def _commit(self, state: dict, event: dict, leaving: tuple[str, ...] = ()) -> None:
        """Write ``state`` and log ``event`` (``Store.commit``); it is the session's state from now on."""
        self.state = self.store.commit(state, event, leaving)

    def _write_state(self, state: dict) -> None:
        """``state`` as the session's, written as it is: a command under way, recorded for ``--resume``."""
        self.state = state
        self.store.write_json("state.json", state)

    def _forget(self) -> None:
        """Drop what was read from the current checkpoint: another one has become current."""
        self._generator, self._posterior, self._preferred = None, None, None

    # ----------------------------------------------------------------- the loop
    def stylise(self, image: torch.Tensor, look: torch.Tensor | None = None, stroke_scale: float = 1.0,
                side: int | None = None) -> torch.Tensor:
        """Stylise one (3, H, W) image in [0, 1] with ``look`` (default: the preferred one): :meth:`stylise_batch`."""
        return self.stylise_batch(image[None], look, stroke_scale, side)[0]

    @torch.inference_mode()
    def stylise_batch(self, batch: torch.Tensor, look: torch.Tensor | None = None, stroke_scale: float = 1.0,
                      side: int | None = None, as_bytes: bool = False, finish: Finish | None = None,
                      strength: float = 1.0, keep_colours: bool = False) -> torch.Tensor:
        """Stylise (B, 3, H, W) images of one size (in [0, 1], or uint8 as decoded) with one ``look`` (a z, or z and
        its stroke scale), as the contact sheet shows it whatever their size: the generator runs at the working
        resolution (long side ``side``, default :meth:`working_side`, ÷ the look's stroke scale × ``stroke_scale``)
        and the full-resolution photo guides the result back to (B, 3, H, W), fp32 on the CPU (uint8 with
        ``as_bytes``); ``finish`` polishes it, ``strength`` and ``keep_colours`` adjust it (``applying.stylise``)."""
        z, scale = self.split(self.preferred_z() if look is None else look)
        return applying.stylise(batch, lambda small: self._generate(small, z), side or self.working_side(),
                                scale * stroke_scale, self.runtime, as_bytes, finish, strength, keep_colours)

    def _generate(self, batch: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The generator on (B, 3, H, W) at its own grid (``tiling.generate``)."""
        return tiling.generate(self.generator(), batch, z, self.runtime)

    def working_side(self, round_index: int | None = None) -> int:
        """The long side (px) the generator works at for round ``round_index`` (``Looks.working_side``)."""
        return self.looks().working_side(round_index)

    def preview(self, photo: torch.Tensor, look: torch.Tensor, size: int, working: int) -> torch.Tensor:
        """A candidate as the sheet shows it (``Looks.preview``)."""
        return self.looks().preview(photo, look, size, working)

    def propose(self, n: int | None = None, size: int | None = None, preview: Path | None = None,
                on_progress: CountFn | None = None, polish_steps: int | None = None) -> Round:
        """Render ``n`` candidates, each from its own z, plus a numbered contact sheet; start a round. Each candidate
        rendered is reported to ``on_progress(done, n)``. ``polish_steps`` finishes each candidate with that many
        steps of polish at the sheet's size, toward its look's loss, as ``apply --pick`` finishes a photo: the sheet
        shows the finished pictures, and refine learns from them.

        Rendering only reads the session, so it runs without the lock (several ``propose`` can render
        at once); the lock is taken just to number the round, move its folder in place and record it. Where another
        propose (or a refine) committed meanwhile, this round, drawn for the number it would have had, would repeat
        that one: it is drawn again for its new number, outside the lock too (polished candidates take minutes)."""
        n = check_candidates(self.proposal_settings.n if n is None else n)
        size = check_sheet_side(self.proposal_settings.size if size is None else size)
        if polish_steps is not None:
            polish.check_steps(polish_steps)
            applying.check_polish_sheet(size)
        self.check_files()  # a new round must not be built on damage
        working = self.proposal_settings.working_side
        photo = sheet_photo(Path(preview) if preview else inputs.default_preview(self.store), size, working)
        finish = self._finisher(photo, size, polish_steps)
        with rounds.rendering(self.store) as folder:
            images.save_image(photo, folder / inputs.PREVIEW)  # the round keeps the photo its sheet shows
            while True:
                checkpoint, index = self.checkpoint, len(self.state["rounds"]) + 1
                z, rendered = self._draw(n, index, photo, size, working, on_progress, finish)
                rounds.write_looks(folder, z, rendered)
                with self.store.lock():
                    self.state = schema.state(self.store)  # as it is now, under the lock
                    if (len(self.state["rounds"]) + 1, self.state["checkpoint"]) == (index, checkpoint):
                        entry = rounds.place(self.store, folder, index, rendered, size, working, checkpoint,
                                             polish_steps)
                        self._commit({**self.state, "rounds": [*self.state["rounds"], entry]},
                                     {"command": "propose", "round": index, "n": n})
                        return self.rounds()[-1]
                self._forget()  # drawn for another number or checkpoint: again, for this one

    def _draw(self, n: int, index: int, photo: torch.Tensor, size: int, working: int,
              on_progress: CountFn | None, finish: Finisher | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Round ``index``'s looks, seeded by its number, and their pictures (``Looks.draw``)."""
        return self.looks().draw(self.preference(), n, self.config["seed"] * 1000 + index, photo, size, working,
                                 on_progress, finish)

    def _finisher(self, photo: torch.Tensor, size: int, steps: int | None) -> Finisher | None:
        """A sheet's candidates (``size`` px long, of ``photo``) finished with ``steps`` of polish, each toward its
        own look's loss (``apply --pick``'s); None for ``steps`` None."""
        if steps is None:
            return None
        shown = images.shrink(photo, size)[None]
        return lambda look, picture: applying.polished(self.runtime, shown, picture[None], self.goal(look), steps,
                                                       None)[0]

    def select(self, indices: list[int]) -> Round:
        """Record the chosen candidates (1-based) of the latest round and their Gram statistics."""
        entry = rounds.to_pick(self.state, indices)
        earlier = rounds.write_picks(self.store, entry, indices, self.looks().learning_grams(entry, indices))
        self._commit({**self.state, "rounds": [*self.state["rounds"][:-1], {**entry, "selection": indices}]},
                     {"command": "select", "round": entry["index"], "chosen": indices}, leaving=earlier)
        rounds.remove(self.store, earlier)
        return self.rounds()[-1]

    def refine(self, steps: int | None = None, resume: bool = False, on_progress: ProgressFn | None = None) -> dict:
        """Learn from all selections: fit the choice model to every round's picks (chosen and unchosen),
        build the personal style target from the chosen images' Grams at the posterior's best z,
        fine-tune G and D there; saves a new checkpoint, keeping the state before it for ``undo``.

        ``resume=True`` continues an interrupted refine from its last checkpoint; a fresh refine
        discards such a partial one."""
        self._require_init()
        steps = refining.steps_to_run(self.state["training"], steps, resume, self.settings.refine_steps)
        selected = refining.rounds_to_learn(self.rounds(), rounds.learned(self.state))
        if not resume:  # a fresh refine, past its checks: an interrupted one's saved training goes
            checkpoints.finished(self.store)
        before, looks = {**self.state, "training": None}, self.looks()
        posterior = fit(choices(selected), self.look_dim)
        best, unrefined, _ = looks.judged(best_look(posterior, selected))  # what apply gives without it
        refining.keep_passed_grams(self.store, looks, selected)
        # The stroke scale is exact at render time, so training learns z's part of the taste: the current look is
        # rendered at scale 1 (at its own scale, the strokes would be enlarged twice: once by G, once by the render).
        best_z, _ = self.split(best)
        personal = self.personal_target(selected, best_z)
        generator, picks = self.generator(), [r.candidates[i - 1] for r in selected for i in r.selection]
        discriminator, seconds = refining.fine_tune(
            self.store, self.config, self.state, self.settings, self.runtime, generator, picks, best_z, personal,
            steps, self.working_side(), self._write_state, on_progress)
        kept, nearer = True, None  # nearer: the picture's style distance to the personal target, before and after
        if steps:
            _, refined, ratio = looks.judged(best_look(posterior, selected))
            kept, nearer = refining.keeps_fine_tuning(unrefined, refined, ratio, personal, self.runtime,
                                                      self.settings.style_layers, self.settings.edges)
        state, refine = refining.save(self.store, self.state, before, generator, discriminator, posterior, personal,
                                      {"rounds": [r.index for r in selected], "steps": steps, "fine_tuning_kept": kept,
                                       "distance_to_target": nearer, "seconds": round(seconds, 1)})
        self._commit(state, {"command": "refine", **refine})
        checkpoints.finished(self.store)
        self._forget()
        return refine

    def undo(self) -> dict:
        """Return the session to the state before the last refine (an interrupted one counts as the last).

        The undone checkpoint's folder stays on disk until a new refine takes its number; rounds
        proposed after that refine leave the state, and the picks of the rounds it learned from can
        be changed again with ``select``."""
        self._require_init()
        state, event = refining.undone(self.store, self.state)
        self._commit(state, event)
        self._forget()
        return {"undone": event["undone"], "checkpoint": self.checkpoint, "rounds": len(self.state["rounds"])}

    def personal_target(self, selected: list[Round], z: torch.Tensor) -> dict[str, torch.Tensor]:
        """What refine trains the looks near ``z`` toward, from the picks of ``selected`` (``refining.target_of``)."""
        return refining.target_of(self.store, self.looks(), selected, z, self.runtime, self.settings)

    def selection_file(self, r: Round) -> Path:
        """Where round ``r``'s picks and how they differ from the rest are written down (``selection.json``)."""
        return self.store.path(picks_file(self.state["rounds"][r.index - 1], "selection.json"))

    def look_to_apply(self, pick: str | None = None) -> tuple[torch.Tensor, int]:
        """The look ``apply`` renders (``pick``'s, ``ROUND:INDEX``, else the learned one) and its working side."""
        # What it reads: the settings, the paintings' Grams, the current checkpoint; a pick's round, or the photo the
        # guard judges the learned look on.
        reads = ["rounds"] if pick else [self.looks().judged_on()[0].relative_to(self.store.root).as_posix()]
        self.check_files(["config.json", "style_grams.safetensors", self.checkpoint, *reads])
        look, round_index = parse_pick(pick, self.rounds()) if pick else (self.preferred_z(), None)
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
            applying.check_polish_grid(side, self.split(look)[1], stroke_scale)
            finish = (self.goal(look, learned=pick is None), polish_steps, on_step)
        result = applying.run(outputs.plan(inputs, out, fmt, shard), skip_existing,
                              lambda todo: self.stylise_files(todo, look, side, stroke_scale, size, max_pixels,
                                                              max_batch, finish, strength, keep_colours),
                              on_progress)
        if polish_steps is None:
            result.warnings += rounds.unpolished(self.state, pick, "these photos are not polished")
        return result

    def goal(self, look: torch.Tensor, learned: bool = False) -> polish.Objective:
        """The loss ``look`` stands for (:func:`polish.objective`), over ``POLISH_STYLE_LAYERS``: toward the paintings
        blended as its z says, or for the learned look, once a refine has built one, toward the personal target of the
        picks (at the layers it was built for; the paintings' at the others: ``applying.goal_grams``)."""
        personal = f"{self.checkpoint}/personal_grams.safetensors"
        self.check_files([inputs.KEPT, personal])  # what it reads (apply has checked the checkpoint itself)
        if self._polish_grams is None:
            self._polish_grams = applying.painting_grams(self.store, self.config, self.runtime)
        grams = applying.goal_grams(self.store, self._polish_grams, personal if learned else None,
                                    self.settings.style_layers)
        return polish.objective(self.split(look)[0], grams, self.settings, self.n_styles)

    def stylise_files(self, pairs: list[tuple[Path, Path]], look: torch.Tensor, side: int, stroke_scale: float = 1.0,
                      size: int | None = None, max_pixels: int = images.DEFAULT_MAX_PIXELS,
                      max_batch: int = pipeline.MAX_BATCH, finish: Finish | None = None,
                      strength: float = 1.0, keep_colours: bool = False) -> Iterator[pipeline.Item]:
        """Stylise each (input, output) pair with ``look`` at the working side ``side`` and write the output
        atomically (``applying.stylise_files``); yields each item, in order, once written or skipped. ``finish``:
        polish each photo toward an objective, in so many steps, reporting each (:meth:`stylise_batch`)."""
        self.generator()  # a damaged checkpoint fails here, before any photo is read
        return applying.stylise_files(
            pairs, lambda batch: self.stylise_batch(batch, look, stroke_scale, side, as_bytes=True, finish=finish,
                                                    strength=strength, keep_colours=keep_colours),
            side, self.split(look)[1] * stroke_scale, size, max_pixels, max_batch, self.runtime.device.type)

    # ----------------------------------------------------------------- reading
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
        taste = reporting.taste(self.store, self.state, self.config, self.preference() if usable else None, look)
        after = reporting.tastes_after(self.store, self.state, self.config, taste) if with_history and usable else {}
        return reporting.Snapshot(self.store.root.resolve(), self.state, self.config, self.runtime.name,
                                  self.runtime.bf16, damaged, reporting.unfinished(self.store, self.state), taste, look,
                                  None if look is None else self.split(look)[1], after)


__all__ = ["ApplyResult", "NoSession", "Round", "Session", "SessionError", "StyleprefsError"]
