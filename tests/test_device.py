"""Where the networks run: bf16 autocast only where the CPU computes bf16 natively."""

import pytest

from styleprefs import device

SKYLAKE_X = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6148\n"
             "flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw "
             "avx512vl\n\nprocessor\t: 1\nflags\t\t: fpu avx2 avx512f avx512bw\n")
AVX512 = {"avx2", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"}


@pytest.mark.parametrize("flags,fast", [
    (set(), False),
    ({"sse4_2", "avx", "avx2", "fma"}, False),       # an AVX2-only EPYC: bf16 there is a 20–30× loss
    (AVX512, False),                                 # AVX512BW emulates bf16, slowly
    (AVX512 | {"avx512_vnni"}, False),
    (AVX512 | {"avx512_bf16"}, True),                # Cooper Lake, Zen 4
    (AVX512 | {"amx_bf16", "amx_tile"}, True),       # Sapphire Rapids
])
def test_bf16_is_chosen_by_the_bf16_instructions_not_by_avx512bw(flags, fast):
    assert device.fast_bf16(flags) is fast


def test_cpuinfo_flags_are_read_from_the_flags_line():
    assert device.cpu_flags(SKYLAKE_X) == {"fpu", "vme", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "avx", "avx2",
                                           "fma", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"}
    assert device.cpu_flags("processor\t: 0\nFeatures\t: fp asimd bf16\n") == set()  # an ARM CPU: fp32


def test_an_avx512bw_cpu_without_bf16_runs_in_fp32(monkeypatch):
    """The old check, oneDNN's ``_is_mkldnn_bf16_supported``, says yes for any AVX512BW CPU."""
    monkeypatch.setattr(device, "_cpuinfo", lambda: SKYLAKE_X)
    device.cpu_has_fast_bf16.cache_clear()
    try:
        assert device.resolve("cpu").bf16 is False
        monkeypatch.setattr(device, "_cpuinfo", lambda: SKYLAKE_X.replace("avx512vl", "avx512vl avx512_bf16"))
        device.cpu_has_fast_bf16.cache_clear()
        assert device.resolve("cpu").bf16 is True
    finally:
        device.cpu_has_fast_bf16.cache_clear()
    assert device.resolve("cpu", "fp32").bf16 is False and device.resolve("cpu", "bf16").bf16 is True


@pytest.mark.parametrize("environ,allowed", [
    ({}, True),
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),            # a Sapphire Rapids held to an AVX2 machine's kernels
    ({"ONEDNN_MAX_CPU_ISA": "avx512_core"}, False),     # oneDNN reads the value in any case
    ({"DNNL_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, False),  # the name before oneDNN 2
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, True),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, True),
    ({"ONEDNN_MAX_CPU_ISA": "ALL"}, True),
])
def test_a_onednn_held_below_its_bf16_instructions_runs_in_fp32(environ, allowed, monkeypatch):
    assert device.onednn_allows_bf16(environ) is allowed
    monkeypatch.setattr(device, "_cpuinfo", lambda: SKYLAKE_X.replace("avx512vl", "avx512vl amx_bf16"))
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    device.cpu_has_fast_bf16.cache_clear()
    try:
        assert device.resolve("cpu").bf16 is allowed  # precision auto
    finally:
        device.cpu_has_fast_bf16.cache_clear()



@pytest.mark.skipif(not device.keep_freed_memory(), reason="the C library is not glibc")
def test_a_large_image_freed_is_reused_without_touching_the_system_again():
    # Without it, glibc maps every 64 MB block afresh and faults in its 16384 pages on each use, forward after forward.
    import resource

    import torch

    def faults_filling_a_new_block() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(16 * 1024 * 1024).fill_(1.0)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    settled = [faults_filling_a_new_block() for _ in range(12)][-3:]
    assert max(settled) < 1000, settled


def test_every_runtime_keeps_freed_memory():
    device.keep_freed_memory.cache_clear()
    device.resolve("cpu", "fp32")
    assert device.keep_freed_memory.cache_info().currsize == 1


def test_a_cpu_report_names_the_limits_a_run_was_held_to(monkeypatch):
    monkeypatch.setattr(device, "_cpuinfo", lambda: SKYLAKE_X.replace("avx512vl", "avx512vl amx_bf16"))
    held = device.cpu_report({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "PATH": "/bin"})
    assert held == {"cpu": "Intel(R) Xeon(R) Gold 6148", "cores": held["cores"], "bf16_units": True,
                    "onednn_allows_bf16": False,
                    "isa_limits": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
    assert device.cpu_report({})["isa_limits"] == {} and device.cpu_report({})["onednn_allows_bf16"] is True


@pytest.mark.parametrize("flags,environ,floats", [
    ({"avx2", "fma"}, {}, 8),
    ({"avx2", "avx512f", "avx512bw"}, {}, 16),
    ({"avx2", "avx512f"}, {}, 8),  # AVX-512 without BW (Knights Landing): not oneDNN's AVX-512 level
    ({"avx2", "avx512f", "avx512bw"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, 8),  # a Xeon held to what the EPYC has
    ({"avx2", "avx512f", "avx512bw"}, {"DNNL_MAX_CPU_ISA": "avx2_vnni"}, 8),
    ({"avx2", "avx512f", "avx512bw"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, 16),
    (set(), {}, 8),  # no /proc/cpuinfo
])
def test_the_vector_width_follows_avx512_and_onednns_ceiling(flags, environ, floats):
    """ToRGB's blocks are chosen by it (kernels.RGB_BLOCKS): the wrong one costs 10–16 % of that layer."""
    assert device.vector_floats(flags, environ) == floats
