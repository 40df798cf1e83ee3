"""export's round trip: the exported ONNX, torch.export and TorchScript files against what apply computes, at real
photo sizes.

For the learned look and one pick of a session, the three files are written with ``styleprefs export`` and run (ONNX
in onnxruntime on the CPU, pt2 with ``torch.export.load``, TorchScript with ``torch.jit.load``) on a bundled photo at
its own size (451×300), the same photo turned to portrait, and enlarged to 4000×3000 (12 megapixels). Each output is compared with
``Session.stylise`` in fp32 (what apply computes with ``precision fp32``), and, for reference, with apply's default
on this machine (bf16 where the CPU has it). Also reported: file sizes and seconds (one call after a warm-up).

    python benchmarks/export_check.py                      # makes a small session first (init 3 steps at 64 px)
    python benchmarks/export_check.py --session S --pick 1:2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from styleprefs import images
from styleprefs.config import TrainSettings
from styleprefs.device import resolve
from styleprefs.session import Session
from styleprefs.store import Store

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "photos" / "skimage_chelsea_cat.png"


def photos() -> dict[str, torch.Tensor]:
    photo = images.load_image(PHOTO)
    big = F.interpolate(photo[None], size=(3000, 4000), mode="bicubic", align_corners=False).clamp(0, 1)[0]
    return {"own size": photo, "portrait": photo.transpose(1, 2).flip(2).contiguous(), "12 MP": big}


def timed(fn):
    fn()
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--session", type=Path)
    parser.add_argument("--pick", default="1:2")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="export-check-"))
    if args.session is None:
        args.session = work / "session"
        contents = sorted((ROOT / "examples" / "photos").iterdir())
        Session.init(args.session, [ROOT / "examples" / "paintings" / "vangogh_starry_night.jpg"], contents,
                     TrainSettings(steps=3, size=64), device="cpu").propose(n=4)
    import onnxruntime as ort

    fp32 = Session(Store(args.session), resolve("cpu", "fp32"))
    default = Session.open(args.session, "cpu")
    rows = []
    for pick in (None, args.pick):
        look, side = fp32.look_to_apply(pick)
        files = {}
        for fmt, suffix in (("onnx", "onnx"), ("pt2", "pt2"), ("torchscript", "pt")):
            files[fmt] = work / f"look-{pick or 'learned'}.{suffix}".replace(":", "-")
            subprocess.run([sys.executable, "-m", "styleprefs", "export", "--format", fmt, "--out", str(files[fmt]),
                            "--session", str(args.session), *(["--pick", pick] if pick else [])], check=True)
        onnx = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
        script = torch.jit.load(str(files["torchscript"]))
        exported = torch.export.load(str(files["pt2"])).module()
        for name, photo in photos().items():
            with torch.inference_mode():
                reference, apply_s = timed(lambda: fp32.stylise(photo, look, side=side))
                applied = default.stylise(photo, look, side=side)
            (from_onnx,), onnx_s = timed(lambda: onnx.run(None, {"photo": photo[None].numpy()}))
            with torch.no_grad():
                from_script, script_s = timed(lambda: script(photo[None])[0])
                from_pt2, pt2_s = timed(lambda: exported(photo[None])[0])
            row = {"look": pick or "learned", "photo": name, "size": list(photo.shape[1:]),
                   "onnx_max_abs": float(np.abs(from_onnx[0] - reference.numpy()).max()),
                   "torchscript_max_abs": float((from_script - reference).abs().max()),
                   "pt2_max_abs": float((from_pt2 - reference).abs().max()),
                   "default_apply_bf16": default.runtime.bf16,
                   "onnx_vs_default_apply_max_abs": float(np.abs(from_onnx[0] - applied.numpy()).max()),
                   "onnx_vs_default_apply_mean_abs": float(np.abs(from_onnx[0] - applied.numpy()).mean()),
                   "seconds": {"stylise_fp32": round(apply_s, 3), "onnx": round(onnx_s, 3),
                               "torchscript": round(script_s, 3), "pt2": round(pt2_s, 3)},
                   "bytes": {fmt: path.stat().st_size for fmt, path in files.items()}}
            rows.append(row)
            print(json.dumps(row))
    args.out.write_text(json.dumps({"session": str(args.session), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
