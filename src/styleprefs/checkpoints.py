"""A session's networks on disk: the checkpoint after init and each refine, and the resumable state of a training
phase that has not finished.

A phase saves ``training.safetensors`` (both networks, both optimisers, the random state, the step) every
``checkpoint_seconds`` and at the step boundary where Ctrl-C or SIGTERM asked it to stop, so ``--resume`` continues
it where it was, whatever moment it was killed at.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch

from .config import TrainSettings
from .device import Runtime
from .errors import StyleprefsError
from .networks import Discriminator, Generator
from .preference import Posterior
from .store import SessionError, Store
from .training import CropSampler, Progress, StopSignals, TargetFn, Trainer, WeightsFn, ZSampler

TRAINING = "training.safetensors"  # the resumable mid-training state of an unfinished init or refine

ProgressFn = Callable[[Progress], None]


class Interrupted(StyleprefsError):
    """Training was asked to stop (Ctrl-C, SIGTERM) and saved a checkpoint to resume from."""

    exit_code = 130


def run_phase(store: Store, phase: str, steps: int, run: Callable[[int], Iterator[Progress]], trainer: Trainer,
              rng: torch.Generator, on_progress: ProgressFn | None, checkpoint_seconds: float) -> float:
    """Run a training phase (``run(first_step)`` yields its steps' progress) with resumable checkpoints: every
    ``checkpoint_seconds``, and at a step boundary when SIGINT/SIGTERM asks to stop. Continues from the saved state of
    ``trainer`` and ``rng`` if there is one. Its seconds."""
    first = 0
    if store.path(TRAINING).exists():
        saved = store.read_tensors(TRAINING, required=("rng", "step"))
        try:
            trainer.load_state_tensors(saved)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise SessionError(f"{store.path(TRAINING)}: does not match the networks "
                               f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        rng.set_state(saved["rng"])
        first = int(saved["step"])

    def save(step: int) -> None:
        store.write_tensors(TRAINING, {**trainer.state_tensors(), "rng": rng.get_state(), "step": torch.tensor(step)})

    started = last_save = time.perf_counter()
    with StopSignals() as stop:
        for progress in run(first):
            step = progress.step
            if on_progress:
                on_progress(progress)
            if stop.requested:
                save(step)
                raise Interrupted(f"{phase} stopped at step {step} of {steps}; the session is intact. "
                                  f"Continue with `styleprefs {phase} --resume`")
            if time.perf_counter() - last_save > checkpoint_seconds and step < steps:
                save(step)
                last_save = time.perf_counter()
    return time.perf_counter() - started


def train(store: Store, trainer: Trainer, phase: str, steps: int, content: CropSampler, real: CropSampler,
          sample_z: ZSampler, targets: TargetFn, rng: torch.Generator, on_progress: ProgressFn | None,
          checkpoint_seconds: float, weights: WeightsFn | None = None, norms_only_steps: int = 0) -> float:
    """``trainer`` through a training phase of ``steps`` (:meth:`Trainer.run`), resumable (:func:`run_phase`); its
    seconds."""
    return run_phase(store, phase, steps,
                     lambda first: trainer.run(phase, steps, content, real, sample_z, targets, rng, first_step=first,
                                               weights=weights, norms_only_steps=norms_only_steps),
                     trainer, rng, on_progress, checkpoint_seconds)


def saved_steps(store: Store) -> int:
    """The steps an unfinished phase has saved (0 before its first save)."""
    if not store.path(TRAINING).exists():
        return 0
    return int(store.read_tensors(TRAINING, required=("step",))["step"])


def finished(store: Store) -> None:
    """The phase is over: its resumable state goes."""
    store.path(TRAINING).unlink(missing_ok=True)


def write(store: Store, name: str, generator: Generator, discriminator: Discriminator, posterior: Posterior) -> None:
    """A checkpoint folder: both networks and the choice model's posterior."""
    store.write_tensors(f"{name}/generator.safetensors", generator.state_dict())
    store.write_tensors(f"{name}/discriminator.safetensors", discriminator.state_dict())
    store.write_tensors(f"{name}/preference.safetensors", posterior.to_tensors())


def load(module: torch.nn.Module, store: Store, name: str) -> None:
    """``module``'s weights from the session file ``name``; a file that does not fit it is named as damaged."""
    tensors = store.read_tensors(name)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as exc:
        raise SessionError(f"{store.path(name)}: does not match the network ({str(exc).splitlines()[0]})") from None


def load_generator(store: Store, name: str, z_dim: int, settings: TrainSettings, runtime: Runtime) -> Generator:
    """Checkpoint ``name``'s generator, on ``runtime``'s device, in eval mode. Built outside inference mode whoever asks
    first, so that ``refine`` can train the same object."""
    with torch.inference_mode(False):
        generator = Generator(z_dim, settings.generator_width, settings.generator_blocks)
        load(generator, store, f"{name}/generator.safetensors")
        return runtime.module(generator).eval()


def load_posterior(store: Store, name: str, look_dim: int) -> Posterior:
    """Checkpoint ``name``'s choice model, checked to be over looks of ``look_dim`` numbers."""
    file = f"{name}/preference.safetensors"
    tensors = store.read_tensors(file, required=("mean", "cov", "picks"))
    dim = tensors["mean"].numel() // 2
    if tensors["mean"].shape != (2 * look_dim,) or tensors["cov"].shape != (2 * dim, 2 * dim):
        raise SessionError(f"{store.path(file)}: damaged (a choice model of the wrong shape)")
    return Posterior.from_tensors(tensors)
