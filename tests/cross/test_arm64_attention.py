"""Paged attention's baseline kernel (GCC vector extensions, NEON code on arm64)
built for aarch64 and run under qemu-user: within a float64 reference's
tolerance, and bit-identical to the x86-64 baseline build of the same source
(same operations, no FMA contraction, the kernel's own exp)."""

from __future__ import annotations

import platform
import shutil
import subprocess

import pytest

from .crossbuild import CROSS_CXX, HERE, build, clean_env, qemu, skip_without_cross_tools

pytestmark = skip_without_cross_tools

SOURCES = {"cpu/cpu_features.cpp": [], "cpu/thread_pool.cpp": [], "cpu/paged_attention.cpp": []}


def parse(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.endswith("failures=0"), stdout
    return last.split()[0]  # hash=...


@pytest.fixture(scope="module")
def arm_hash(tmp_path_factory) -> str:
    binary = build(CROSS_CXX, SOURCES, HERE / "attention_check.cpp",
                   tmp_path_factory.mktemp("attn_arm") / "attention_check", ["-static", "-pthread"])
    out = qemu(binary, "max")
    assert out.returncode == 0, out.stdout + out.stderr
    return parse(out.stdout)


def test_arm64_build_matches_reference(arm_hash):
    assert arm_hash.startswith("hash=")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("g++") is None,
                    reason="compares with a native x86-64 build")
def test_arm64_build_bit_identical_to_x86_baseline(arm_hash, tmp_path):
    sources = {**SOURCES, "cpu/paged_attention_avx2.cpp": ["-mavx2", "-mfma", "-mf16c"]}
    binary = build("g++", sources, HERE / "attention_check.cpp", tmp_path / "attention_check", ["-pthread"])
    # the baseline kernels: kernel_level() must report neither avx512 nor avx2
    out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600,
                         env=clean_env({"TINYFAST_CPU_DISABLE": "avx512f,avx2"}))
    assert out.returncode == 0, out.stdout + out.stderr
    assert parse(out.stdout) == arm_hash
