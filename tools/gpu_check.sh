#!/bin/bash
# The GPU checks in one run (for a lent GPU machine with torch, typer, rich, pillow and safetensors;
# pastiche can travel as a folder on PYTHONPATH): CUDA tests, default init, bare generator forward and
# apply throughput at 1024 px, then benchmarks/speed.py --device cuda --quick.
#     bash tools/gpu_check.sh [OUT_DIR]
set -u
OUT=${1:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
echo "== CUDA tests"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -5
echo "== init (defaults) on CUDA"
/usr/bin/time -f "init wall %e s, max RSS %M KB" python3 -m styleprefs init --json --force \
    --style examples/paintings/vangogh_starry_night.jpg --content examples/photos --session "$OUT/s" --device cuda 2>&1 | tail -2
python3 - "$OUT" <<'PY'
import sys, time
from pathlib import Path
import torch
from PIL import Image
from styleprefs.session import Session
out = Path(sys.argv[1])
photo = Image.open(sorted(Path("examples/photos").iterdir())[0]).convert("RGB")
scale = 1024 / max(photo.size)
photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS)
(out / "in").mkdir(exist_ok=True)
for i in range(32):
    photo.save(out / "in" / f"p{i:02d}.png")
print("apply inputs: 32 ×", photo.size)
session = Session.open(out / "s", device="cuda")
g, rt = session.generator(), session.runtime
for batch in (1, 8):
    x = rt.images(torch.rand(batch, 3, photo.height, photo.width))
    z = torch.zeros(batch, g.z_dim, device=rt.device)
    with torch.inference_mode(), rt.autocast():
        for _ in range(3):
            g(x, z)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            g(x, z)
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 10
    print(f"bare forward 1024 px, batch {batch}: {seconds * 1000:.1f} ms, {batch / seconds:.1f} images/s (bf16={rt.bf16})")
PY
/usr/bin/time -f "apply 32 wall %e s, max RSS %M KB" python3 -m styleprefs apply --json "$OUT/in" --out "$OUT/styled" \
    --session "$OUT/s" --device cuda 2>&1 | tail -2 | cut -c1-300
echo "== speed.py --device cuda --quick"
python3 benchmarks/speed.py --device cuda --quick --json-out "$OUT/speed.json" 2>&1 | tail -30
