"""Where ``apply`` writes: one output per input, its name mirroring the input's under ``--out``, never over an input
nor outside ``--out``; a deterministic shard of them for parallel jobs sharing a session."""

from __future__ import annotations

import os
from pathlib import Path

from . import files, images
from .errors import BadInput

Job = tuple[Path, Path]  # (input, output)


def plan(inputs: list[Path], out: Path, fmt: str = "png", shard: str | None = None) -> list[Job]:
    """apply's (input, output) pairs: names mirroring the inputs' under ``out``, shard ``K/N`` of them; ``out``
    made, and what killed writers of these outputs left removed (other outputs' are not this run's)."""
    jobs = select_shard(output_names(inputs, Path(out), fmt), shard)
    check_writable(Path(out))
    for _, target in jobs:
        files.remove_leftovers(target)
    return jobs


def output_names(inputs: list[Path], out: Path, fmt: str) -> list[Job]:
    """(input, output) pairs: folder inputs keep their relative paths under ``out``."""
    pairs = []
    root = out.resolve()
    for item in map(Path, inputs):
        found = images.find_images([item])
        for source in found:
            if item.is_dir() and item.resolve() != root and source.resolve().is_relative_to(root):
                continue  # earlier outputs in an output folder inside an input folder are not inputs
            relative = source.relative_to(item) if item.is_dir() else Path(source.name)
            pairs.append((source, out / relative.with_suffix(f".{fmt}")))
    sources = {p.resolve() for p, _ in pairs}
    for source, target in pairs:
        if target.resolve() in sources:
            raise BadInput(f"the output folder {out} would write over the input {source}; choose another folder", "out")
        if not target.resolve().is_relative_to(root):  # e.g. a symlinked sub-folder pointing elsewhere
            raise BadInput(f"the output for {source} would land outside the output folder {out} "
                           f"({target.resolve()})", "out")
    targets = [t.resolve() for _, t in pairs]
    if len(set(targets)) != len(targets):
        duplicate = next(t for t in targets if targets.count(t) > 1)
        raise BadInput(f"two inputs would both be written to {duplicate}; rename one or apply them separately")
    return pairs


def select_shard(pairs: list[Job], shard: str | None) -> list[Job]:
    """Shard K of N (1-based): every N-th input in the sorted order of output paths, from the K-th."""
    if shard is None:
        return pairs
    try:
        k, n = (int(part) for part in shard.split("/"))
    except ValueError:
        raise BadInput(f"a shard must look like K/N (e.g. 2/8), got {shard!r}", "shard") from None
    if not 1 <= k <= n:
        raise BadInput(f"shard {shard}: K must be between 1 and N", "shard")
    ordered = sorted(pairs, key=lambda pair: str(pair[1]))
    return ordered[k - 1 :: n]


def check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out}: is not a folder", "out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"{out}: cannot create the folder ({exc.strerror})", "out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise BadInput(f"{out}: not writable", "out")
