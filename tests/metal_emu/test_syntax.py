"""Syntax-only compiles that keep typos from hiding until a Mac build:

* metal/*.metal through the Metal shim (entry points, attributes mapped by
  -Wno-unknown-attributes, TF_INSTANTIATE tables and their template
  instantiations type-checked);
* the Metal host code (csrc/metal/*.cpp) and the ops' eval_gpu wiring
  (csrc/ops/*.cpp with TINYFAST_METAL) against the real MLX headers plus
  minimal stubs of metal-cpp and MLX's Metal backend (host_stubs/), whose
  declarations are checked against the installed MLX header."""

import re
import subprocess
from pathlib import Path

import pytest

from metal_emu import emu

STUBS = emu.HERE / "host_stubs"


def clang_or_skip() -> str:
    clang = emu.find_clang()
    if clang is None:
        pytest.skip("clang++ is not installed (apt-get install clang)")
    return clang


def mlx_include() -> Path:
    mlx = pytest.importorskip("mlx.core")
    path = Path(mlx.__file__).resolve().parent / "include"
    if not (path / "mlx" / "array.h").exists():
        pytest.skip("the installed MLX has no C++ headers")
    return path


def syntax_check(args):
    res = subprocess.run([clang_or_skip(), "-fsyntax-only", "-std=c++20", *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-6000:]


@pytest.mark.parametrize("metal_file", sorted(p.name for p in emu.METAL_DIR.glob("*.metal")))
def test_metal_entry_points_type_check_through_the_shim(metal_file):
    syntax_check(["-Wall", "-Wno-unknown-attributes", "-Wno-unused-parameter", "-x", "c++",
                  "-include", str(emu.HERE / "metal_shim.h"), f"-I{emu.HERE}", f"-I{emu.METAL_DIR}",
                  str(emu.METAL_DIR / metal_file)])


HOST_FILES = sorted(str(p.relative_to(emu.REPO)) for p in (emu.REPO / "csrc" / "metal").glob("*.cpp")) + [
    "csrc/ops/write_kv.cpp", "csrc/ops/paged_attention.cpp", "csrc/ops/qmatmul.cpp"]


@pytest.mark.parametrize("source", HOST_FILES)
def test_metal_host_code_compiles_syntactically(source):
    include = mlx_include()
    # Stubs first: they shadow MLX's real Metal backend header, which needs metal-cpp.
    syntax_check(["-DTINYFAST_METAL=1", "-Wall", f"-I{STUBS}", f"-I{emu.REPO / 'csrc'}", f"-I{emu.REPO}",
                  f"-I{include}", str(emu.REPO / source)])


def _normalize(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\( ", "(", re.sub(r" \)", ")", text))


def test_stub_declarations_match_the_real_mlx_header():
    real = _normalize((mlx_include() / "mlx/backend/metal/device.h").read_text())
    stub = (STUBS / "mlx/backend/metal/device.h").read_text()
    body = stub[stub.index("namespace mlx::core::metal {"):]
    decls = [d.strip() for d in _normalize(body).split(";")]
    decls = [d.split("public: ")[-1] for d in decls if "(" in d]
    assert len(decls) >= 10
    for d in decls:
        assert d.rstrip(")") in real or d in real, f"stub declaration not in MLX's device.h: {d}"
