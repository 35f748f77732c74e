"""The NEON qmatmul kernels, built for aarch64 and run under qemu user-mode emulation.

No ARM hardware is involved: qemu-aarch64 executes the static binary
instruction by instruction and reports the emulated CPU's features through
getauxval(AT_HWCAP), so `-cpu max` (has SDOT), `-cpu neoverse-n1` (has SDOT)
and `-cpu cortex-a57` (ARMv8.0, no SDOT: executing one raises SIGILL) exercise
both NEON builds and the run-time choice between them. Timings under qemu mean
nothing; nothing here measures speed.

qmatmul_check.cpp holds the NEON levels to the AVX2 contract of
tests/kernels/test_qmatmul.py (activation bytes equal to the scalar
quantizer's, outputs within the derived fp32 bound of x_tilde @ W.T, batch and
thread invariance bit for bit) and additionally requires the SDOT and baseline
NEON builds to agree bit for bit. The scalar kernels it compares against are
the ones tests/kernels checks against the NumPy reference.
"""

from __future__ import annotations

import platform
import shutil
import subprocess

import pytest

from .crossbuild import (COMMON, CROSS_CXX, CROSS_NM, CSRC, HERE, build, clang_cross, clean_env, qemu,
                         skip_without_cross_tools)

# Kernel files with their own flags, as in CMakeLists.txt.
QMATMUL_SOURCES = {
    "cpu/cpu_features.cpp": [],
    "cpu/thread_pool.cpp": [],
    "cpu/qmatmul.cpp": [],
    "cpu/qmatmul_scalar.cpp": [],
    "cpu/qmatmul_avx2.cpp": [],                       # a stub on arm64
    "cpu/qmatmul_avx512.cpp": [],                     # a stub on arm64 (and without its flags)
    "cpu/qmatmul_neon.cpp": [],
    "cpu/qmatmul_neon_dotprod.cpp": ["-march=armv8.2-a+dotprod"],
}

pytestmark = skip_without_cross_tools


@pytest.fixture(scope="session")
def arm_check(tmp_path_factory):
    return build(CROSS_CXX, QMATMUL_SOURCES, HERE / "qmatmul_check.cpp",
                 tmp_path_factory.mktemp("aarch64") / "qmatmul_check", ["-static", "-pthread"])


def features(binary, cpu: str, **env) -> dict:
    out = qemu(binary, cpu, "features", env_extra=env)
    assert out.returncode == 0, out.stderr
    fields = dict(kv.split("=", 1) for kv in out.stdout.split())
    fields["levels"] = fields["levels"].split(",")
    return fields


@pytest.mark.parametrize("cpu, sdot", [("max", True), ("neoverse-n1", True), ("cortex-a72", False),
                                       ("cortex-a57", False)])
def test_runtime_detection_follows_the_emulated_cpu(arm_check, cpu, sdot):
    f = features(arm_check, cpu)
    assert f["arch"] == "arm64" and f["neon"] == "1" and f["kernel_level"] == "neon"
    assert f["neon_dotprod"] == ("1" if sdot else "0")
    assert f["levels"] == (["neon_dotprod", "neon", "scalar"] if sdot else ["neon", "scalar"])


def test_disable_list_lowers_the_level(arm_check):
    assert features(arm_check, "max", TINYFAST_CPU_DISABLE="neon_dotprod")["levels"] == ["neon", "scalar"]
    f = features(arm_check, "max", TINYFAST_CPU_DISABLE="neon")
    assert f["kernel_level"] == "scalar" and f["levels"] == ["scalar"] and f["neon_dotprod"] == "0"


def test_sdot_build_faults_without_dotprod(arm_check):
    """The emulation really enforces the feature: the SDOT kernels run on `max`
    and die with SIGILL on cortex-a57, so the sweep below passing on
    cortex-a57 shows the dispatch never enters them there."""
    ok = qemu(arm_check, "max", "force-dotprod")
    assert ok.returncode == 0 and "SDOT kernels ran" in ok.stdout, ok.stderr
    bad = qemu(arm_check, "cortex-a57", "force-dotprod")
    assert bad.returncode != 0 and "Illegal instruction" in bad.stderr, (bad.returncode, bad.stderr)


@pytest.mark.parametrize("cpu, levels", [("max", "neon_dotprod,neon,scalar"), ("cortex-a57", "neon,scalar")])
def test_every_format_and_shape_against_scalar_and_exact(arm_check, cpu, levels):
    """Q4_0/Q5_0/Q8_0 (K 32..640), Q4_K/Q6_K (K 256..768), affine4/8 (group
    32/64/128, scales f32/f16/bf16); N 1, 7, 64, 130; M 1, 2, 3, 4, 7, 8, 16;
    x f32/f16/bf16; non-finite inputs."""
    out = qemu(arm_check, cpu)
    assert f"levels={levels}\n" in out.stdout
    assert out.returncode == 0 and "failures=0" in out.stdout, out.stdout[-3000:] + out.stderr


def test_clang_build_passes_the_same_sweep(tmp_path):
    """clang's NEON code generation (Apple builds use clang), SDOT and baseline."""
    clang = clang_cross()
    if clang is None:
        pytest.skip("clang++ (with the aarch64 cross GCC headers) is not installed")
    binary = build(clang, QMATMUL_SOURCES, HERE / "qmatmul_check.cpp", tmp_path / "qmatmul_check",
                   ["-static", "-pthread"], linker=CROSS_CXX)
    out = qemu(binary, "max")
    assert "levels=neon_dotprod,neon,scalar\n" in out.stdout
    assert out.returncode == 0 and "failures=0" in out.stdout, out.stdout[-3000:] + out.stderr


def test_sdot_object_exports_nothing_shared(tmp_path):
    """Weak (inline/template) symbols compiled with +dotprod could be picked by
    the linker for baseline callers and fault on CPUs without SDOT: the SDOT
    object may define only names in its own namespace."""
    obj = tmp_path / "dotprod.o"
    subprocess.run([CROSS_CXX, *COMMON, "-march=armv8.2-a+dotprod", "-c",
                    str(CSRC / "cpu/qmatmul_neon_dotprod.cpp"), "-o", str(obj)], check=True)
    syms = subprocess.run([CROSS_NM, "--defined-only", "--extern-only", str(obj)], check=True,
                          capture_output=True, text=True).stdout.split("\n")
    names = [line.split()[-1] for line in syms if line.strip()]
    assert names and all("neon_dotprod" in n for n in names), names


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("g++") is None,
                    reason="native check of the harness itself runs on x86-64 with g++")
def test_harness_on_the_host_avx2_path(tmp_path):
    """The same harness built natively holds AVX2 (and AVX-512 VNNI where the CPU
    has it: available_levels() decides) to the same contract, which
    tests/kernels/test_qmatmul.py checks through MLX: the harness agrees with it."""
    sources = {**QMATMUL_SOURCES, "cpu/qmatmul_avx2.cpp": ["-mavx2", "-mfma", "-mf16c"],
               "cpu/qmatmul_avx512.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx2",
                                          "-mfma", "-mf16c"],
               "cpu/qmatmul_neon_dotprod.cpp": []}
    binary = build("g++", sources, HERE / "qmatmul_check.cpp", tmp_path / "qmatmul_check", ["-pthread"])
    out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=900,
                         env=clean_env())
    assert out.returncode == 0 and "failures=0" in out.stdout, out.stdout[-3000:]
