"""The AVX-512 VNNI qmatmul level: chosen by 'auto' where the CPU has it, lowered
by TINYFAST_CPU_DISABLE, held to the reference on its own, and built so that no
AVX-512 code can leak into baseline callers.

Every test of test_qmatmul.py that loops over KERNELS already runs this level
when the CPU has it (KERNELS = kernels()); the sweep here names it explicitly so
a machine without it reports a skip with the reason instead of silently
testing less."""

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyfast
from kernels.test_qmatmul import FORMATS, activations, as_qweight, check_close, weight
from tinyfast.ops import qmatmul
from tinyfast.ops.quant import kernels

CSRC = Path(__file__).resolve().parents[2] / "csrc"
AVX512_FLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"]

pytestmark = pytest.mark.cpu_only("CPU kernel selection")


def cpu_has_avx512_vnni() -> bool:
    f = tinyfast.cpu_features()
    return all(f.get(k) for k in ("avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx2", "fma", "f16c"))


needs_avx512 = pytest.mark.skipif(not cpu_has_avx512_vnni(),
                                  reason="CPU lacks AVX-512 F/BW/VL/VNNI: the avx512 level cannot run here")


def subprocess_info(disable: str | None) -> dict:
    env = dict(os.environ)
    env.pop("TINYFAST_CPU_DISABLE", None)
    if disable is not None:
        env["TINYFAST_CPU_DISABLE"] = disable
    code = ("import json, tinyfast\nfrom tinyfast.ops.quant import kernels\n"
            "print(json.dumps({'kernels': kernels(), 'level': tinyfast.cpu_features()['kernel_level']}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@needs_avx512
def test_auto_picks_avx512_here():
    assert kernels()[0] == "avx512"
    assert subprocess_info(None)["kernels"] == ["avx512", "avx2", "scalar"]


@needs_avx512
@pytest.mark.parametrize("disable", ["avx512vnni", "avx512f", "avx512bw"])
def test_disable_lowers_avx512_to_avx2(disable):
    assert subprocess_info(disable)["kernels"] == ["avx2", "scalar"]


@needs_avx512
@pytest.mark.parametrize("m", [1, 3, 4, 6, 8, 9, 13])
@pytest.mark.parametrize("fmt", FORMATS)
def test_avx512_matches_reference(fmt, m):
    """Odd and even block counts per row (k/32 = 7 and 64) and tile heights 1-8 (avx512 tiles take 8 rows)."""
    for n, k in ((29, 224 if fmt in ("q4_0", "q5_0", "q8_0") else 256), (66, 2048)):
        t, w = weight(fmt, n, k)
        x, x32 = activations(m, k)
        check_close(qmatmul(x, w, kernel="avx512"), x32, t)


@needs_avx512
@pytest.mark.parametrize("fmt", FORMATS)
def test_avx512_random_blocks_odd_blocks(fmt):
    """Random bytes (every code value, subnormal scales) with an odd block count."""
    k = 224 if fmt in ("q4_0", "q5_0", "q8_0") else 512
    t, w = weight(fmt, 31, k, kind="random")
    x, x32 = activations(6, k)
    check_close(qmatmul(x, w, kernel="avx512"), x32, t)
    for i in range(6):   # each row alone equals its row in the batch
        np.testing.assert_array_equal(np.array(qmatmul(x[i:i + 1], w, kernel="avx512"))[0],
                                      np.array(qmatmul(x, w, kernel="avx512"))[i])


@needs_avx512
@pytest.mark.parametrize("fmt", ["q4_0", "q5_0", "q8_0"])
def test_avx512_legacy_tails_and_row_groups(fmt):
    """Legacy formats run four blocks per step and several weight rows per step:
    every tail length (k/32 = 1, 2, 3, 5, 6), row counts around the group sizes,
    and each weight row computed alone gives bit for bit its column of the full
    product (grouping rows does not change a row's result)."""
    for k in (32, 64, 96, 160, 192):
        for n in (1, 3, 5, 7, 9):
            t, w = weight(fmt, n, k, kind="random")
            x, x32 = activations(5, k)
            full = np.array(qmatmul(x, w, kernel="avx512"))
            check_close(qmatmul(x, w, kernel="avx512"), x32, t)
            for j in range(n):
                one = dict(t, shape=(1, k), raw=t["raw"][j:j + 1])
                alone = np.array(qmatmul(x, as_qweight(one), kernel="avx512"))
                np.testing.assert_array_equal(alone[:, 0], full[:, j], err_msg=f"{fmt} k={k} n={n} row {j}")


@needs_avx512
@pytest.mark.parametrize("fmt", ["q4_0", "q5_0", "q8_0"])
def test_avx512_legacy_long_rows(fmt):
    """Rows too long for the prepared-activation buffer at 8 rows of x (k/32 = 260) or even
    at 4 (k/32 = 513, a tail block): the unprepared kernel in 4-row halves gives the same
    results, bit for bit, as one row of x at a time."""
    for n, k in ((5, 8320), (3, 16416)):
        t, w = weight(fmt, n, k, kind="random")
        x, x32 = activations(13, k)
        full = np.array(qmatmul(x, w, kernel="avx512"))
        check_close(qmatmul(x, w, kernel="avx512"), x32, t)
        for i in (0, 5, 12):
            np.testing.assert_array_equal(np.array(qmatmul(x[i:i + 1], w, kernel="avx512"))[0], full[i])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("g++") is None
                    or shutil.which("nm") is None, reason="needs x86-64 g++ and nm")
def test_avx512_object_exports_nothing_shared(tmp_path):
    """Weak (inline/template) symbols compiled with AVX-512 could be picked by the
    linker for baseline callers and fault on CPUs without it: the object may
    define only names that say avx512."""
    obj = tmp_path / "avx512.o"
    subprocess.run(["g++", "-std=c++20", "-O2", "-ffp-contract=off", f"-I{CSRC}", *AVX512_FLAGS, "-c",
                    str(CSRC / "cpu/qmatmul_avx512.cpp"), "-o", str(obj)], check=True)
    syms = subprocess.run(["nm", "--defined-only", "--extern-only", str(obj)], check=True,
                          capture_output=True, text=True).stdout.split("\n")
    names = [line.split()[-1] for line in syms if line.strip()]
    assert names and all("avx512" in n for n in names), names
