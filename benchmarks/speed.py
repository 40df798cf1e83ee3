"""Speed benchmark: apply, init, refine and propose against the bare generator and the hardware's limit.

Every measurement runs in its own process (so its peak resident memory is its own, read from the
kernel's rusage of that child), is repeated, and is reported as median, min and max. In the same run,
as baselines: the bare generator forward at each size (the overhead of I/O and bookkeeping is the
difference), and an estimate of the physical limit: the generator's FLOPs per image (counted with
FlopCounterMode) over this machine's measured matrix-multiply rate. The Gatys baseline's time to reach
apply's style distance is measured by quality.py; its last figure is read from results/quality.json.

    python benchmarks/speed.py                  # about 4 minutes on 2 idle CPU cores with bf16 units
    python benchmarks/speed.py --quick          # a smoke run, under 2 minutes
    python benchmarks/speed.py --full           # also run the default init and refine end to end
    python benchmarks/speed.py --device cuda    # the same on a GPU (fp32 and bf16 rows)
    python benchmarks/speed.py --only pipeline --session S   # only apply end to end against its model work
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PAINTING = EXAMPLES / "paintings" / "vangogh_starry_night.jpg"
BIG_PHOTO = ROOT / ".." / "shared" / "data" / "content" / "gc_erase_horse.jpg"
TARGET_APPLY_512 = 0.4       # s per image, end to end
TARGET_OVERHEAD = 0.15       # apply within 15 % of the bare forward
TARGET_BF16 = 1.8            # bf16 at least this much faster than fp32
TARGET_TILED_RSS_MB = 3000   # a 4096² photo
TARGET_GPU_RATE = 50         # images/s at 1024 px on a GPU
TARGET_PIPELINE = 0.10       # apply end to end within 10 % of its model work with no I/O
TARGET_GPU_PIPELINE = 0.8    # ... on a GPU, at least 0.8× its throughput, and ≥ 100 photos/s at 1024 px


# ---------------------------------------------------------------------------------------- workers
# Each runs in a fresh process: ``speed.py --worker NAME --spec JSON`` prints one JSON object.

def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _open(spec: dict):
    from styleprefs.device import resolve
    from styleprefs.session import Session
    started = time.perf_counter()
    session = Session.open(Path(spec["session"]), spec["device"])
    session.runtime = resolve(spec["device"], spec["precision"])
    session.generator()
    return session, time.perf_counter() - started


def worker_apply(spec: dict) -> dict:
    """apply on a folder of same-size photos, ``repeats`` times, then the bare generator forward on the same batches at
    the working grid apply runs it on (the rest of apply is decoding, resampling, the guided upsampling and writing).

    ``strokes``: "look" (the learned look's own stroke scale), "smallest" (the smallest a look can have: the largest
    working grid, the dearest case) or "own grid" (the generator on the photo's own pixels, without full-size
    rendering; over 4 megapixels that runs in tiles)."""
    import torch
    from styleprefs import pipeline, render, tiling
    from styleprefs.controls import SMALLEST_STROKES
    session, load_s = _open(spec)
    folder, out, n = Path(spec["folder"]), Path(spec["out"]), spec["images"]
    side = spec["size"]
    look = session.preferred_z()  # once, as apply does (finding it can take longer than a forward)
    z, scale = session.split(look)
    extra_scale = {"look": 1.0, "smallest": SMALLEST_STROKES / scale,
                   "own grid": session.working_side() / side / scale}[spec.get("strokes", "look")]
    grid = render.working_size(side, side, session.working_side(), scale * extra_scale)
    per_image = []
    for r in range(spec["repeats"]):
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        result = session.apply([folder], out / str(r), size=side, stroke_scale=extra_scale)
        per_image.append((time.perf_counter() - started) / n)
        assert len(result.outputs) == n, result.skipped
    forward = []
    if not tiling.needs_tiles(*grid):
        batch_pixels = pipeline.BATCH_PIXELS[session.runtime.device.type]
        batch = max(1, min(n, pipeline.MAX_BATCH, batch_pixels // (side * side)))
        x = torch.rand(batch, 3, *grid)
        # Without gradients, as apply runs it (with autograd on, the forward would take the training routes and
        # run slower than apply itself with the smallest strokes).
        with torch.inference_mode():
            for _ in range(spec["repeats"] + 1):  # the first is a warm-up
                _sync(spec["device"])
                started = time.perf_counter()
                session._generate(x, z)
                _sync(spec["device"])
                forward.append((time.perf_counter() - started) / batch)
        forward = forward[1:]
    extra = {}
    if spec["device"].startswith("cuda"):
        extra["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if spec.get("crop"):
        extra["crop"] = str(tile_boundary_crop(session, folder, out / "0", side, Path(spec["crop"])))
    return {"apply": per_image, "forward": forward, "load_s": load_s, "grid": list(grid), **extra}


def worker_pipeline(spec: dict) -> dict:
    """apply end to end on a folder of same-size photos against the same model work with no I/O, in turns, in one
    process. The model work is everything between the decoder and the encoder: the decoded photos' bytes, in the
    batches apply forms, through ``Session.stylise_batch`` to the bytes apply writes (shrinking to the working grid,
    the generator, the guided composition at full size). End to end adds decoding, encoding, the atomic write and
    the pipeline's own bookkeeping."""
    import torch
    from styleprefs import images, pipeline, render
    session, load_s = _open(spec)
    folder, out = Path(spec["folder"]), Path(spec["out"])
    look, side = session.look_to_apply()
    _, scale = session.split(look)
    decoded = [images.load_image_with_alpha(p, max_side=8192, as_bytes=True)[0] for p in sorted(folder.iterdir())]
    height, width = decoded[0].shape[-2:]
    grid = render.working_size(height, width, side, scale)
    device = session.runtime.device.type
    per_batch = pipeline.batch_size(height, width, grid, pipeline.BATCH_PIXELS[device],
                                    pipeline.BATCH_PHOTO_PIXELS[device])
    batches = [torch.stack(decoded[i:i + per_batch]) for i in range(0, len(decoded), per_batch)]
    model, end_to_end = [], []
    for r in range(spec["repeats"] + 1):  # the first round is a warm-up
        started = time.perf_counter()
        for batch in batches:
            session.stylise_batch(batch, look, side=side, as_bytes=True)
        _sync(spec["device"])
        model.append((time.perf_counter() - started) / len(decoded))
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        result = session.apply([folder], out / str(r), fmt=spec["format"])
        end_to_end.append((time.perf_counter() - started) / len(decoded))
        assert len(result.outputs) == len(decoded), result.skipped
    return {"model": model[1:], "apply": end_to_end[1:], "load_s": load_s, "grid": list(grid), "batch": per_batch,
            "threads": torch.get_num_threads()}


def tile_boundary_crop(session, folder: Path, out: Path, side: int, path: Path) -> Path:
    """Photo | output | output with the tile edges (red) and cross-fade bands (yellow) marked, around the
    point where the first four tiles meet."""
    from PIL import Image, ImageDraw
    from styleprefs import images, tiling
    source = sorted(folder.iterdir())[0]
    photo = images.load_image(source, max_side=side)
    styled = images.to_tensor(Image.open(out / source.with_suffix(".png").name).convert("RGB"))
    margin = -(-tiling.receptive_radius(session.generator(), session.runtime) // tiling.ALIGN) * tiling.ALIGN + tiling.ALIGN
    spans = tiling.tile_spans(side, tiling.TILE, 2 * margin + tiling.FEATHER)
    (_, end), (start, _) = spans[0], spans[1]
    centre, half = (start + end) // 2, 160
    box = (centre - half, centre - half, centre + half, centre + half)
    panels = [images.to_pil(photo).crop(box), images.to_pil(styled).crop(box), images.to_pil(styled).crop(box)]
    draw = ImageDraw.Draw(panels[2])
    for edge, colour in ((start, "red"), (end, "red"), (start + margin, "yellow"), (end - margin, "yellow")):
        p = edge - box[0]
        draw.line([(p, 0), (p, 2 * half)], fill=colour)
        draw.line([(0, p), (2 * half, p)], fill=colour)
    sheet = Image.new("RGB", (3 * 2 * half + 16, 2 * half), "white")
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * (2 * half + 8), 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def worker_train(spec: dict) -> dict:
    """A few init or refine steps at the session's settings; per-step seconds from the progress events."""
    from styleprefs.config import TrainSettings
    from styleprefs.session import Session
    times: list[float] = []
    started = time.perf_counter()
    first = None

    def progress(p) -> None:
        nonlocal first
        first = first if first is not None else time.perf_counter() - started
        times.append(p.seconds)

    if spec["phase"] == "init":
        settings = TrainSettings(steps=spec["steps"])
        Session.init(Path(spec["session"]), [PAINTING], [EXAMPLES / "photos"], settings, device=spec["device"],
                     force=True, on_progress=progress)
        default = TrainSettings().steps
    else:
        with Session.editing(Path(spec["session"]), spec["device"]) as s:
            s.refine(spec["steps"], on_progress=progress)
            default = s.settings.refine_steps
    steps = [b - a for a, b in zip(times, times[1:])]
    # Before the first step's report: decoding, Gram targets, building the networks, the first step itself.
    return {"steps": steps, "before_first_s": first, "first_step_s": times[0], "default_steps": default,
            "total_s": time.perf_counter() - started}


def worker_flops(spec: dict) -> dict:
    """The generator's FLOPs per image at 256 and 512 px, and this machine's matmul rate, fp32 and bf16."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from styleprefs.config import TrainSettings
    from styleprefs.networks import Generator
    s = TrainSettings()
    g = Generator(3, s.generator_width, s.generator_blocks).eval().to(spec["device"])
    flops = {}
    for side in (256, 512):
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            g(torch.rand(1, 3, side, side, device=spec["device"]), torch.zeros(1, 3, device=spec["device"]))
        flops[side] = counter.get_total_flops()
    rates = {}
    n = 2048 if spec["device"].startswith("cuda") else 1024
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=spec["device"], dtype=dtype)
        b = torch.randn(n, n, device=spec["device"], dtype=dtype)
        runs = []
        for _ in range(4 if dtype == torch.float32 or spec["fast_bf16"] else 2):
            _sync(spec["device"])
            started = time.perf_counter()
            for _ in range(10 if spec["device"].startswith("cuda") else 1):
                a @ b
            _sync(spec["device"])
            runs.append((time.perf_counter() - started) / (10 if spec["device"].startswith("cuda") else 1))
        rates[name] = 2 * n**3 / min(runs[1:])
    return {"flops_per_pixel": flops[512] / 512**2, "flops_256": flops[256], "flops_512": flops[512],
            "matmul_flops_per_s": rates}


WORKERS = {"apply": worker_apply, "pipeline": worker_pipeline, "train": worker_train, "flops": worker_flops}


# ---------------------------------------------------------------------------------------- the run

def measure(name: str, spec: dict, env: dict | None = None) -> tuple[dict, float]:
    """Run a worker in a fresh process: its JSON and its peak resident memory (MiB)."""
    return child([sys.executable, __file__, "--worker", name, "--spec", json.dumps(spec)], env)


def child(cmd: list[str], env: dict | None = None) -> tuple[dict, float]:
    """Run a command; its last stdout line as JSON and the peak RSS of that process alone (wait4)."""
    log = ROOT / ".bench" / "speed" / "child.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    return json.loads(text.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def make_photos(folder: Path, n: int, width: int, height: int, sources: list[Path] | None = None,
                grain: float = 0.0) -> Path:
    """``n`` different photos of one size: crops and flips of the bundled examples, saved as JPEG; ``grain``: the
    standard deviation, in 8-bit levels, of noise added to each (an enlarged photo is smoother than a camera's, so
    it would decode and compress faster than a real one of that size)."""
    import numpy as np
    from PIL import Image, ImageOps
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = sources or sorted(p for p in (EXAMPLES / "photos").iterdir() if "gray" not in p.name)
    for i in range(n):
        img = Image.open(sources[i % len(sources)]).convert("RGB")
        img = ImageOps.mirror(img) if (i // len(sources)) % 2 else img
        img = ImageOps.fit(img, (width, height), Image.Resampling.BICUBIC, centering=((i * 0.37) % 1, 0.5))
        if grain:
            noise = np.random.default_rng(i).normal(0, grain, (height, width, 1)).astype(np.float32)
            img = Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).round().astype(np.uint8))
        img.save(folder / f"photo{i:02d}.jpg", quality=92)
    return folder


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def pipeline_rows(args, session: Path, row, cuda: bool, fast_bf16: bool) -> dict:
    """apply end to end against the same model work with no I/O (``worker_pipeline``) at 512 px, 1024 px and 12
    megapixels, JPEG and PNG out; and the process start-up. Returns {(size label, format): (end to end, model)}."""
    precision = "bf16" if cuda and fast_bf16 else "fp32"
    repeats = args.repeats or 3
    cases = [("512 px", 512, 512, 256 if cuda else 32, None, 0.0),
             ("1024 px", 1024, 1024, 256 if cuda else 8, None, 0.0),
             ("12 megapixels", 4000, 3000, 32 if cuda else 8, [args.big_photo] if args.big_photo else None, 2.0)]
    results = {}
    for label, width, height, n, sources, grain in cases:
        folder = make_photos(args.out / f"pipeline-{width}x{height}-{n}", n, width, height, sources, grain)
        for fmt in ("jpg", "png"):
            m, rss = measure("pipeline", {"session": str(session), "device": args.device, "precision": precision,
                                          "folder": str(folder), "out": str(args.out / "applied"), "format": fmt,
                                          "repeats": repeats})
            e = row(f"apply end to end, {label}, {fmt.upper()} out", precision, m["apply"], "s/image", rss,
                    f"{n} photos {width}×{height} a run, {1 / statistics.median(m['apply']):.1f} photos/s; "
                    f"working grid {m['grid'][1]}×{m['grid'][0]}, {m['batch']} a batch")
            w = row(f"  its model work, no I/O, {label}", precision, m["model"], "s/image", None,
                    f"the decoded photos' bytes → the bytes apply writes, same batches, same process; "
                    f"{1 / statistics.median(m['model']):.1f} photos/s; end to end "
                    f"{statistics.median(m['apply']) / statistics.median(m['model']) - 1:+.0%}")
            results[(label, fmt)] = (e, w)
    # What a shell script pays per call: a fresh process (Python, torch, the session) for one 512-px photo.
    folder = make_photos(args.out / "pipeline-512x512-1", 1, 512, 512)
    runs = []
    for r in range(repeats):
        shutil.rmtree(args.out / "applied", ignore_errors=True)
        t0 = time.perf_counter()
        _, rss = child([sys.executable, "-m", "styleprefs", "apply", str(folder), "--out", str(args.out / "applied"),
                        "--session", str(session), "--device", args.device, "--json"])
        runs.append(time.perf_counter() - t0)
    one = results[("512 px", "png")][0]["median"]
    row("apply CLI, one 512-px photo, fresh process", precision, runs, "s", rss,
        f"process start-up and session load ≈ {statistics.median(runs) - one:.2f} s beyond the photo's {one:.3f} s")
    return results


def pipeline_targets(results: dict, cuda: bool) -> list[tuple[str, bool, str]]:
    """The targets for apply end to end against its model work."""
    targets = []
    for (label, fmt), (e, w) in results.items():
        over = e["median"] / w["median"] - 1
        if cuda:
            ratio = w["median"] / e["median"]
            targets.append((f"end to end ≥ {TARGET_GPU_PIPELINE}× the model work's throughput, {label}, {fmt.upper()}",
                            ratio >= TARGET_GPU_PIPELINE, f"{ratio:.2f}×, {1 / e['median']:.0f} photos/s"))
            if label == "1024 px":
                targets.append((f"≥ 100 photos/s end to end at 1024 px, {fmt.upper()}", 1 / e["median"] >= 100,
                                f"{1 / e['median']:.0f} photos/s"))
        elif label != "1024 px":
            targets.append((f"apply within {TARGET_PIPELINE:.0%} of its model work, {label}, {fmt.upper()} out",
                            over <= TARGET_PIPELINE, f"{over:+.0%}"))
    return targets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="auto",
                   help="fp32, bf16 or auto: fp32 rows, plus bf16 rows (measured at every size where the device has "
                        "fast bf16, else at 256 px only, to show the cost)")
    p.add_argument("--quick", action="store_true", help="a smoke run (< 2 min): fewer sizes, steps and repeats")
    p.add_argument("--full", action="store_true", help="also run the default init and refine end to end")
    p.add_argument("--repeats", type=int, help="runs per figure (default 3, --quick 2)")
    p.add_argument("--only", choices=("pipeline",),
                   help="pipeline: only apply end to end against its model work at 512 px, 1024 px and 12 megapixels, "
                        "JPEG and PNG out, and the process start-up (with --session, no init is run)")
    p.add_argument("--session", type=Path,
                   help="copy this trained session instead of making a one-step one (same speed; the saved tile crop "
                        "then shows a real style)")
    p.add_argument("--big-photo", type=Path, default=BIG_PHOTO if BIG_PHOTO.exists() else None,
                   help="the photo scaled to 4096×4096 for the tiled run (default: a 1920×1080 one from the shared data)")
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "speed")
    p.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    p.add_argument("--crop", type=Path, default=ROOT / ".bench" / "speed" / "tile-boundary.png",
                   help="where to save a crop across a tile boundary of the 4096² output")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](json.loads(args.spec))))
        return 0

    import torch
    from rich.console import Console

    from styleprefs.device import cpu_has_fast_bf16, cpu_report

    console = Console(width=None if sys.stdout.isatty() else 200)
    load_start = os.getloadavg()
    console.print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    if load_start[0] > 0.5:
        console.print("[bold yellow]warning[/]: the machine is busy (load > 0.5); timings will be slower and noisier "
                      "than on an idle machine")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    fast_bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_fast_bf16()
    precisions = ["fp32", "bf16"] if args.precision == "auto" else [args.precision]
    repeats = args.repeats or (2 if args.quick else 3)
    sizes = [] if args.only else [256, 512] if args.quick else [256, 512, 1024, 2048]
    per_size = {256: 8, 512: 4, 1024: 2, 2048: 1} if not cuda else {256: 64, 512: 32, 1024: 32, 2048: 8}
    folder_n = 8 if args.quick else 32
    folder_side = 1024 if cuda else 512
    steps = 3 if args.quick else 8
    started = time.perf_counter()
    device_name = torch.cuda.get_device_name() if cuda else "{cpu}, {cores} cores".format(**cpu_report())
    rows: list[dict] = []

    def row(what: str, precision: str, values: list[float] | None, unit: str, rss: float | None, note: str = "",
            **extra) -> dict:
        r = {"what": what, "precision": precision, "unit": unit, "peak_rss_mb": rss, "note": note,
             **(stats(values) if values else {}), **extra}
        rows.append(r)
        console.print(f"  {what} ({precision}): " + (f"{r['median']:.3f} {unit}" if values else "—") + f"  {note}",
                      highlight=False, markup=False)
        return r

    # The init measurement trains a session of the default settings for a few steps; unless --session names a
    # trained one, every other measurement uses that (speed does not depend on how far G was trained).
    session, train_session = args.out / "session", args.out / "train-session"
    if args.session:
        shutil.rmtree(session, ignore_errors=True)
        shutil.copytree(args.session, session)
    init_run = None
    if not (args.only and args.session):
        console.print("init, a few steps …")
        init_run = measure("train", {"phase": "init", "steps": steps, "device": args.device,
                                     "session": str(train_session if args.session else session)})
    # A round at the default preview size: apply's working grid follows the latest round's.
    child([sys.executable, "-m", "styleprefs", "propose", "--n", "4", "--session", str(session),
           "--device", args.device, "--json"])
    child([sys.executable, "-m", "styleprefs", "select", "1", "2", "--session", str(session), "--json"])

    per_pixel, rates = None, None
    if not args.only:
        flops, _ = measure("flops", {"device": args.device, "fast_bf16": fast_bf16})
        per_pixel, rates = flops["flops_per_pixel"], flops["matmul_flops_per_s"]

    # apply at each size, and the bare forward in the same process
    results: dict = {}
    for precision in precisions:
        for side in sizes:
            if precision == "bf16" and not fast_bf16 and (side > 256 or args.quick):
                row(f"apply, {side} px", "bf16", None, "s/image", None,
                    "not run: no bf16 matrix units on this device" + ("" if args.quick else " (see 256 px)"))
                continue
            folder = make_photos(args.out / f"photos-{side}", per_size[side] if fast_bf16 or precision == "fp32" else 2,
                                 side, side)
            n = len(list(folder.iterdir()))
            spec = {"session": str(session), "device": args.device, "precision": precision, "folder": str(folder),
                    "out": str(args.out / "applied"), "images": n, "size": side, "repeats": repeats}
            m, rss = measure("apply", spec)
            grid_limit = per_pixel * m["grid"][0] * m["grid"][1] / rates[precision]
            a = row(f"apply, {side} px", precision, m["apply"], "s/image", rss,
                    f"{n} photos a run; model load {m['load_s']:.1f} s apart; the look's working grid "
                    f"{m['grid'][1]}×{m['grid'][0]}", physical_limit_s=grid_limit)
            f = row(f"  bare generator forward, {side} px", precision, m["forward"], "s/image", None,
                    f"same batches, on the working grid; its FLOP limit {grid_limit:.3f} s", physical_limit_s=grid_limit)
            results[(precision, side)] = (a, f)
            if side == 512 and precision == "fp32":
                m, rss = measure("apply", {**spec, "strokes": "smallest"})
                row("apply, 512 px, the smallest strokes a look has", precision, m["apply"], "s/image", rss,
                    f"working grid {m['grid'][1]}×{m['grid'][0]}: the dearest a look can be")
                m, rss = measure("apply", {**spec, "strokes": "own grid"})
                row("apply, 512 px, on its own grid (no full-size rendering)", precision, m["apply"],
                    "s/image", rss, f"the generator at {m['grid'][1]}×{m['grid'][0]}")

    pipeline = pipeline_rows(args, session, row, cuda, fast_bf16) if args.only or not args.quick else {}

    rate_row = None
    if args.only:
        return report(args, console, rows, pipeline_targets(pipeline, cuda), device_name, load_start, started,
                      fast_bf16, per_pixel, rates)
    folder = make_photos(args.out / f"folder-{folder_n}", folder_n, folder_side, folder_side * 3 // 4)
    spec = {"session": str(session), "device": args.device, "precision": "fp32" if not (cuda and fast_bf16) else "bf16",
            "folder": str(folder), "out": str(args.out / "applied"), "images": folder_n, "size": None,
            "repeats": repeats}
    m, rss = measure("apply", {**spec, "size": folder_side})
    rate_row = row(f"apply, folder of {folder_n} photos {folder_side}×{folder_side * 3 // 4}", spec["precision"],
                   [1 / s for s in m["apply"]], "images/s", rss, "PNG out, JPEG in")

    if not args.quick:
        big = make_photos(args.out / f"photos-4096-{args.big_photo.stem if args.big_photo else 'example'}", 1, 4096, 4096,
                          [args.big_photo] if args.big_photo else None)
        spec = {"session": str(session), "device": args.device, "precision": "fp32", "folder": str(big),
                "out": str(args.out / "applied"), "images": 1, "size": 4096, "repeats": 1}
        m, rss = measure("apply", spec)
        row("apply, one 4096×4096 photo", "fp32", m["apply"], "s/image", rss,
            f"the look's working grid {m['grid'][1]}×{m['grid'][0]}, guided up to full size")
        crop = args.crop.resolve()
        m, rss = measure("apply", {**spec, "strokes": "own grid", "crop": str(crop)})
        row("apply, one 4096×4096 photo on its own grid (tiled)", "fp32", m["apply"], "s/image", rss,
            f"tiles; boundary crop {crop.relative_to(ROOT) if crop.is_relative_to(ROOT) else crop}")

    # training: per step, and the defaults (estimated from the per-step time unless --full)
    for phase in ("init", "refine"):
        if phase == "init":
            m, rss = init_run
        else:
            shutil.rmtree(train_session, ignore_errors=True)
            shutil.copytree(session, train_session)
            m, rss = measure("train", {"phase": phase, "steps": steps, "device": args.device,
                                       "session": str(train_session)})
        per_step = row(f"{phase}, per step", "auto", m["steps"], "s/step", rss,
                       f"{steps} steps, default settings; first {m['first_step_s']:.1f} s apart")
        estimate = m["before_first_s"] + per_step["median"] * (m["default_steps"] - 1)
        row(f"{phase}, default {m['default_steps']} steps", "auto", [estimate], "s", None,
            "estimate: setup + first step + median × the rest")
        if args.full:
            cmd = [sys.executable, "-m", "styleprefs", phase, "--session", str(train_session), "--device", args.device,
                   "--json"]
            if phase == "init":
                cmd[4:4] = ["--style", str(PAINTING), "--content", str(EXAMPLES / "photos"), "--force"]
            else:
                child([sys.executable, "-m", "styleprefs", "propose", "--n", "4", "--size", "64", "--session",
                       str(train_session), "--json"])
                child([sys.executable, "-m", "styleprefs", "select", "1", "--session", str(train_session), "--json"])
            t0 = time.perf_counter()
            _, rss = child(cmd)
            row(f"{phase}, default {m['default_steps']} steps, measured", "auto", [time.perf_counter() - t0], "s", rss,
                "CLI, fresh process")

    propose = []
    rss_max = 0.0
    for _ in range(1 if args.quick else repeats):
        t0 = time.perf_counter()
        _, rss = child([sys.executable, "-m", "styleprefs", "propose", "--n", "16", "--session", str(session),
                        "--device", args.device, "--json"])
        propose.append(time.perf_counter() - t0)
        rss_max = max(rss_max, rss)
    row("propose --n 16", "auto", propose, "s", rss_max, "CLI, fresh process" + (
        "" if args.session else "; a one-step session: the guard redraws its candidates, which are not yet "
                                "stylisations, so this is dearer than a trained session's round (--session)"))

    # Gatys: measured by quality.py (its time to reach apply's style distance), not again here.
    gatys_note = "run benchmarks/quality.py"
    quality = ROOT / "benchmarks" / "results" / "quality.json"
    gatys_s = None
    if quality.exists():
        gatys_s = json.loads(quality.read_text()).get("overall", {}).get("gatys_seconds_to_apply_style")
    if gatys_s and ("fp32", 256) in results:
        apply_256 = results[("fp32", 256)][0]["median"]
        gatys_note = (f"from quality.py's last run (256 px short side); "
                      f"{gatys_s / apply_256:.0f}× apply at 256 px here")
    row("Gatys to reach apply's style distance", "fp32", [gatys_s] if gatys_s else None, "s/image", None, gatys_note)

    targets = []
    if ("fp32", 512) in results:
        a, f = results[("fp32", 512)]
        targets.append(("apply at 512 px ≤ 0.4 s", a["median"] <= TARGET_APPLY_512, f"{a['median']:.3f} s"))
        over = a["median"] / f["median"] - 1
        targets.append(("apply within 15 % of the bare forward at 512 px", over <= TARGET_OVERHEAD, f"{over:+.0%}"))
    if ("bf16", 256) in results and ("fp32", 256) in results:
        ratio = results[("fp32", 256)][0]["median"] / results[("bf16", 256)][0]["median"]
        targets.append(("bf16 ≥ 1.8× faster than fp32 (apply, 256 px)", ratio >= TARGET_BF16,
                        f"{ratio:.2f}×" + ("" if fast_bf16 else " (no bf16 matrix units here)")))
    tiled = next((r for r in rows if "4096" in r["what"]), None)
    if tiled:
        targets.append(("4096² photo in ≤ 3 GB peak RSS", tiled["peak_rss_mb"] <= TARGET_TILED_RSS_MB,
                        f"{tiled['peak_rss_mb']:.0f} MiB"))
    if cuda:
        targets.append((f"≥ {TARGET_GPU_RATE} images/s at {folder_side} px", rate_row["median"] >= TARGET_GPU_RATE,
                        f"{rate_row['median']:.1f} images/s"))
    targets += pipeline_targets(pipeline, cuda)
    return report(args, console, rows, targets, device_name, load_start, started, fast_bf16, per_pixel, rates)


def report(args, console, rows: list[dict], targets: list[tuple[str, bool, str]], device_name: str, load_start,
           started: float, fast_bf16: bool, per_pixel, rates) -> int:
    """Print the table and the targets; write the JSON."""
    import torch
    from rich.table import Table

    from styleprefs.config import TrainSettings
    from styleprefs.device import cpu_report
    load_end = os.getloadavg()
    seconds = time.perf_counter() - started
    table = Table(title=f"styleprefs speed on {device_name} ({args.device}; torch {torch.__version__}, "
                        f"{torch.get_num_threads()} threads); load {load_start[0]:.2f} → {load_end[0]:.2f}; "
                        f"{seconds:.0f} s")
    for col in ("measurement", "precision", "median", "min", "max", "runs", "unit", "peak RSS MiB", "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        figure = (lambda k: f"{r[k]:.3g}" if k in r else "—")
        table.add_row(r["what"], r["precision"], figure("median"), figure("min"), figure("max"), str(r.get("runs", "")),
                      r["unit"], f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "", r["note"])
    console.print(table)

    for what, met, figure in targets:
        console.print(f"{'[green]met[/]' if met else '[red]missed[/]'}  {what}: {figure}")

    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({
        "device": args.device, "device_name": device_name, "cpu": cpu_report(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "fast_bf16": fast_bf16, "quick": args.quick, "full": args.full,
        "load_average_start": load_start, "load_average_end": load_end, "seconds": seconds,
        "generator_flops_per_pixel": per_pixel, "matmul_flops_per_s": rates, "rows": rows,
        "targets": [{"target": w, "met": m, "figure": f} for w, m, f in targets],
        "settings": TrainSettings().to_dict(),
    }, indent=2) + "\n")
    console.print(f"wrote {args.json_out.relative_to(ROOT) if args.json_out.is_relative_to(ROOT) else args.json_out}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
