"""Building the MLX-free kernel files for aarch64 and running them under qemu-user."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
HERE = Path(__file__).resolve().parent

CROSS_CXX = "aarch64-linux-gnu-g++"
CROSS_NM = "aarch64-linux-gnu-nm"
QEMU = "qemu-aarch64"
# -O3 and -ffp-contract=off as the Release build in CMakeLists.txt; -Wno-psabi: GCC
# notes the 32-byte vector ABI of the attention kernel's baseline x86 build.
COMMON = ["-std=c++20", "-O3", "-Wall", "-Wextra", "-Werror", "-Wno-psabi", "-ffp-contract=off", f"-I{CSRC}"]

_missing = [t for t in (CROSS_CXX, CROSS_NM, QEMU) if shutil.which(t) is None]
skip_without_cross_tools = pytest.mark.skipif(
    bool(_missing),
    reason=f"needs {', '.join(_missing)} (Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu qemu-user)",
)


def clang_cross() -> list[str] | None:
    """clang++ targeting aarch64 Linux with the cross GCC's headers (closer to
    Apple clang's code generation than GCC is), or None when unavailable."""
    if shutil.which("clang++") is None:
        return None
    version = subprocess.run([CROSS_CXX, "-dumpversion"], capture_output=True, text=True).stdout.strip()
    inc = Path("/usr/aarch64-linux-gnu/include")
    cxx_inc = inc / "c++" / version
    if not cxx_inc.is_dir():
        return None
    return ["clang++", "--target=aarch64-linux-gnu", "-isystem", str(cxx_inc),
            "-isystem", str(cxx_inc / "aarch64-linux-gnu"), "-isystem", str(inc)]


def build(cxx: str | list[str], sources: dict[str, list[str]], main: Path, out: Path, link: list[str],
          linker: str | None = None) -> Path:
    """Compiles each csrc file with its own flags plus `main` (two at a time) and
    links `out` (with `linker`, default the compiler)."""
    cxx = [cxx] if isinstance(cxx, str) else cxx
    out.parent.mkdir(parents=True, exist_ok=True)

    def compile_one(item):
        src, flags = item
        path = Path(src) if Path(src).is_absolute() else CSRC / src
        obj = out.parent / (path.stem + ".o")
        subprocess.run([*cxx, *COMMON, *flags, "-c", str(path), "-o", str(obj)], check=True,
                       capture_output=True, text=True)
        return obj

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            objs = list(pool.map(compile_one, [*sources.items(), (str(main), [])]))
        subprocess.run([linker or cxx[0], *map(str, objs), *link, "-o", str(out)], check=True, capture_output=True,
                       text=True)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"build failed:\n{' '.join(e.cmd)}\n{e.stderr}")
    return out


def clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TINYFAST_CPU_DISABLE", "TINYFAST_NUM_THREADS")}
    env.update(extra or {})
    return env


def qemu(binary: Path, cpu: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Runs an aarch64 static binary on an emulated `cpu` (qemu-aarch64 -cpu help lists them)."""
    return subprocess.run([QEMU, "-cpu", cpu, str(binary), *args], capture_output=True, text=True,
                          env=clean_env(env_extra), timeout=900)
