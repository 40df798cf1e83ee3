"""Where the networks run and in which precision and memory layout.

bf16 autocast is a large win on CPUs with AMX or AVX512-BF16 and on CUDA, and a 20–30× *loss* on CPUs
without them (measured on an AVX2-only EPYC), so it is chosen by what the hardware supports.
channels_last is faster for these convolutions on both kinds of CPU measured, and on CUDA.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from dataclasses import dataclass
from functools import lru_cache

import torch

from .errors import BadInput


class DeviceError(BadInput):
    """The requested device is not available."""


BF16_FLAGS = {"amx_bf16", "avx512_bf16"}  # /proc/cpuinfo's names for AMX and AVX512-BF16
# oneDNN's ISA ceilings (ONEDNN_MAX_CPU_ISA) under which it has no bf16 dot products: held there, it emulates bf16 at
# about 1/12 of fp32's rate on a Sapphire Rapids (10.5 s a training step against 0.85 s; docs/benchmarks.md).
SLOW_BF16_ISAS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU in the text of /proc/cpuinfo."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def fast_bf16(flags: set[str]) -> bool:
    """True for a CPU with bf16 matrix instructions. Not for AVX512BW alone: oneDNN (and so
    torch.ops.mkldnn._is_mkldnn_bf16_supported) counts it, but it only emulates bf16, slowly."""
    return bool(BF16_FLAGS & flags)


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""  # not Linux: no flags, so fp32, the safe side


def _onednn_ceiling(environ: dict[str, str]) -> str:
    """ONEDNN_MAX_CPU_ISA (DNNL_MAX_CPU_ISA before oneDNN 2), upper case; "" when unset."""
    return (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()


def onednn_allows_bf16(environ: dict[str, str] = os.environ) -> bool:
    """False when ONEDNN_MAX_CPU_ISA holds oneDNN below its bf16 instructions, as a user may to match an older machine;
    the CPU's own flags then do not say what oneDNN will run."""
    return _onednn_ceiling(environ) not in SLOW_BF16_ISAS


NARROW_VECTOR_ISAS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2"}  # oneDNN's ceilings below AVX-512


def vector_floats(flags: set[str], environ: dict[str, str] = os.environ) -> int:
    """How many fp32 values oneDNN's vector registers hold on a CPU with these flags: 16 with AVX-512 (its core set,
    which oneDNN needs: F and BW), unless ONEDNN_MAX_CPU_ISA holds oneDNN below it; otherwise 8 (AVX2)."""
    wide = {"avx512f", "avx512bw"} <= flags
    return 16 if wide and _onednn_ceiling(environ) not in NARROW_VECTOR_ISAS else 8


@lru_cache(maxsize=1)
def cpu_vector_floats() -> int:
    """:func:`vector_floats` of this CPU."""
    return vector_floats(cpu_flags(_cpuinfo()))


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU has AMX or AVX512-BF16 and oneDNN is allowed to use them."""
    return fast_bf16(cpu_flags(_cpuinfo())) and onednn_allows_bf16()


ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")  # how a run may hold oneDNN and ATen below the CPU's own


def cpu_report(environ: dict[str, str] = os.environ) -> dict:
    """What a benchmark's figures were measured on: the CPU's model, whether it has bf16 units, whether oneDNN may use
    them, and the instruction-set limits set in the environment (a figure from a Xeon held to AVX2 is not a Xeon's)."""
    cpuinfo = _cpuinfo()
    model = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines()
                  if line.partition(":")[0].strip() == "model name"), platform.processor() or platform.machine())
    return {"cpu": model, "cores": os.cpu_count(), "bf16_units": fast_bf16(cpu_flags(cpuinfo)),
            "onednn_allows_bf16": onednn_allows_bf16(environ),
            "isa_limits": {name: environ[name] for name in ISA_LIMITS if environ.get(name)}}


# glibc's mallopt parameters: memory handed back is kept by the process for its next allocation.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_FREED = 1 << 30  # bytes free at the top of the heap before glibc hands them back to the system


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next allocation instead of returning it to the system, for the
    rest of the process; False where the C library is not glibc (nothing is changed there).

    By default glibc maps every block over its threshold (at most 32 MB) from the system and unmaps it when freed, so
    each new one is touched page by page again: a 736×736 image of 16 channels (33 MB) is copied in 12 ms into a new
    tensor against 4 ms into one already used, and the generator's forward at that size makes a dozen of them. Served
    from the heap and kept there, the forward at 736×736 took 0.39–0.41 s against 0.52–0.58 s (``benchmarks/speed.py``
    measures apply). Peak memory is the same; the process keeps it until it exits."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED))


@dataclass(frozen=True)
class Runtime:
    """A device plus the precision and layout used on it."""

    device: torch.device
    bf16: bool
    channels_last: bool = True

    @property
    def name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)})"
        return "cpu"

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch of images to the device in the chosen layout."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def module(self, m: torch.nn.Module) -> torch.nn.Module:
        m = m.to(self.device)
        return m.to(memory_format=torch.channels_last) if self.channels_last else m


def resolve(device: str = "auto", precision: str = "auto") -> Runtime:
    """Pick the device ("auto", "cpu", "cuda", "cuda:N") and precision ("auto", "bf16", "fp32")."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no CUDA device is available (use --device cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise DeviceError(f"unknown device {device!r}: use auto, cpu or cuda")
    dev = torch.device(device)
    keep_freed_memory()  # the host's full-size images and, on a CPU, the networks' activations
    if precision == "auto":
        bf16 = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_has_fast_bf16()
    elif precision in ("bf16", "fp32"):
        bf16 = precision == "bf16"
    else:
        raise DeviceError(f"unknown precision {precision!r}: use auto, bf16 or fp32")
    return Runtime(dev, bf16)
