"""Seconds per training step of the default ``init`` on this CPU, fp32 against bf16 autocast, in one run.

Tells what the default ``init`` costs on a CPU without bf16 matrix units (fp32, what ``precision auto`` picks
there) when the machine at hand has them, and the other way round.

    python benchmarks/step_time.py            # 3 × 10 steps each, after 3 warm-up steps
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from styleprefs.config import TrainSettings
from styleprefs.device import Runtime, cpu_has_fast_bf16
from styleprefs.networks import Discriminator, Generator
from styleprefs.training import CropSampler, Trainer, blended_targets, gram_stats, loss_network


def seconds_per_step(runtime: Runtime, settings: TrainSettings, steps: int, repeats: int) -> list[float]:
    torch.manual_seed(0)
    photos = [torch.rand(3, 256, 320) for _ in range(4)]
    painting = torch.rand(3, 200, 256)
    net = loss_network(runtime, settings.style_layers)
    grams = gram_stats(net, [painting], runtime, settings.style_layers)
    trainer = Trainer(runtime.module(Generator(3, settings.generator_width, settings.generator_blocks)),
                      runtime.module(Discriminator()), net, settings, runtime, 1, settings.lr)
    content, real = CropSampler(photos, settings.size), CropSampler([painting], settings.size)
    rng = torch.Generator().manual_seed(0)

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in trainer.run("init", n, content, real, lambda b, g: torch.randn(b, 3, generator=g),
                             blended_targets(grams, 1), rng):
            pass
        return (time.perf_counter() - start) / n

    run(3)  # warm-up: allocator, oneDNN kernel choice
    return [run(steps) for _ in range(repeats)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    settings = TrainSettings()
    print(f"CPU has bf16 matrix units: {cpu_has_fast_bf16()}; threads {torch.get_num_threads()}")
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        times = seconds_per_step(Runtime(torch.device("cpu"), bf16), settings, args.steps, args.repeats)
        print(f"{name}: {statistics.median(times):.3f} s/step (min {min(times):.3f}); "
              f"{settings.steps} steps ≈ {settings.steps * statistics.median(times):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
