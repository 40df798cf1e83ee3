"""apply on a Ray cluster: the same outputs as ``styleprefs apply``, stylised by a pool of Ray actors.

The driver lists the (input, output) pairs as apply does (:func:`styleprefs.outputs.plan`: names mirroring the inputs'
under ``out``, ``--shard``, outputs already there left when ``skip_existing``) and hands them to ``ray.data``;
``map_batches`` gives each batch of pairs to a :class:`Stylist`, a callable class that opens the session and its
generator once per actor and writes every output atomically through :meth:`Session.stylise_files`, apply's own
decode → stylise → write path. A retried batch finds its finished outputs and leaves them.

The session folder, the inputs and ``out`` must be paths every node of the cluster sees (a shared file system).

    import ray
    from styleprefs.ray_apply import apply_on_ray
    ray.init()                                # or ray.init(address="auto") on a cluster
    result = apply_on_ray("styleprefs-session", ["photos/"], "styled/", actors=4)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import outputs, rounds
from .applying import ApplyResult, partition
from .session import Session

PAIRS_PER_BATCH = 8  # pairs handed to an actor at a time: a forward's worth of same-size photos


class Stylist:
    """One Ray actor's worker: the session opened once, then each batch of pairs stylised and written."""

    def __init__(self, session: str, pick: str | None = None, stroke_scale: float = 1.0, size: int | None = None,
                 max_batch: int = 8, skip_existing: bool = False, device: str = "auto"):
        self.session = Session.open(Path(session), device)
        self.look, self.side = self.session.look_to_apply(pick)
        self.options = {"stroke_scale": stroke_scale, "size": size, "max_batch": max_batch}
        self.skip_existing = skip_existing

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pairs = [(Path(s), Path(t)) for s, t in zip(batch["source"], batch["target"], strict=True)]
        left, todo = partition(pairs, self.skip_existing)
        existing = {t for _, t in left}
        done = {item.target: item for item in self.session.stylise_files(todo, self.look, self.side, **self.options)}
        return {"source": np.array([str(s) for s, _ in pairs]), "target": np.array([str(t) for _, t in pairs]),
                "status": np.array(["existing" if t in existing else "written" if done[t].error is None else "failed"
                                    for _, t in pairs]),
                "error": np.array([(done[t].error or "") if t in done else "" for _, t in pairs])}


def apply_on_ray(session: Path | str, inputs: list[Path | str], out: Path | str, pick: str | None = None,
                 fmt: str = "png", skip_existing: bool = False, shard: str | None = None, stroke_scale: float = 1.0,
                 size: int | None = None, max_batch: int = 8, actors: int = 1,
                 gpus_per_actor: float | None = None) -> ApplyResult:
    """``Session.apply`` with the stylising spread over ``actors`` Ray actors (one GPU each where the cluster has
    GPUs, unless ``gpus_per_actor`` says otherwise). Needs ``ray.init()`` first, or starts a local Ray."""
    import ray

    opened = Session.open(Path(session), "cpu")
    opened.look_to_apply(pick)  # a bad pick or a damaged session is refused here, not on every actor
    jobs = outputs.plan([Path(p) for p in inputs], Path(out), fmt, shard)
    existing, todo = partition(jobs, skip_existing)
    result = ApplyResult(existing=[t for _, t in existing],
                         warnings=rounds.unpolished(opened.state, pick, "Ray's actors do not polish"))
    if not todo:
        return result
    if not ray.is_initialized():
        ray.init()
    if gpus_per_actor is None:
        gpus_per_actor = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    dataset = ray.data.from_items([{"source": str(s), "target": str(t)} for s, t in todo])
    rows = dataset.map_batches(
        Stylist, batch_size=PAIRS_PER_BATCH, batch_format="numpy", concurrency=actors, num_gpus=gpus_per_actor,
        fn_constructor_kwargs={"session": str(Path(session).resolve()), "pick": pick, "stroke_scale": stroke_scale,
                               "size": size, "max_batch": max_batch, "skip_existing": skip_existing,
                               "device": "cuda" if gpus_per_actor else "cpu"}).take_all()
    for row in sorted(rows, key=lambda r: r["target"]):
        if row["status"] == "written":
            result.outputs.append(Path(row["target"]))
        elif row["status"] == "existing":
            result.existing.append(Path(row["target"]))
        else:
            result.skipped.append((Path(row["source"]), str(row["error"])))
    return result
