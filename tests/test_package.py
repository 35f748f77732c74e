"""The installed package: native module, CPU feature detection, CLI, stubs."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import tinyfast


def _cpuinfo_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_version_is_package_metadata():
    from importlib.metadata import version

    assert tinyfast.__version__ == version("tinyfast")


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64", reason="compares with /proc/cpuinfo on x86-64 Linux"
)
def test_cpu_features_agree_with_proc_cpuinfo():
    flags = _cpuinfo_flags()
    f = tinyfast.cpu_features()
    assert f["arch"] == "x86_64"
    for ours, kernel_name in [
        ("avx2", "avx2"),
        ("fma", "fma"),
        ("f16c", "f16c"),
        ("avx512f", "avx512f"),
        ("avx512bw", "avx512bw"),
        ("avx512vl", "avx512vl"),
        ("avx512vnni", "avx512_vnni"),
    ]:
        assert f[ours] == (kernel_name in flags), ours
    expected = (
        "avx512"
        if {"avx512f", "avx512bw", "avx512vl", "fma", "f16c"} <= flags
        else "avx2"
        if {"avx2", "fma", "f16c"} <= flags
        else "scalar"
    )
    assert f["kernel_level"] == expected
    assert 1 <= f["num_cores"] <= os.cpu_count()


def _features_in_subprocess(env_extra: dict) -> dict:
    env = dict(os.environ, **env_extra)
    out = subprocess.run(
        [sys.executable, "-c", "import json, tinyfast; print(json.dumps(tinyfast.cpu_features()))"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout)


def test_disabling_features_lowers_the_kernel_level():
    f = _features_in_subprocess({"TINYFAST_CPU_DISABLE": "avx512f,avx2,neon_dotprod"})
    assert not f["avx2"] and not f["avx512f"] and not f["avx512vnni"]
    assert f["kernel_level"] in ("scalar", "neon")


def test_cli_info_json_reports_the_machine():
    out = subprocess.run(
        [sys.executable, "-m", "tinyfast.cli", "info", "--json"], capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout)
    assert info["tinyfast"] == tinyfast.__version__
    assert info["cpu_kernel_level"] == tinyfast.cpu_features()["kernel_level"]
    import mlx.core as mx

    assert info["mlx"] == mx.__version__
    assert info["mlx_default_device"] == str(mx.default_device())


def test_cli_without_command_fails_with_usage():
    out = subprocess.run([sys.executable, "-m", "tinyfast.cli"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "usage" in out.stderr.lower()


def test_type_stubs_ship_with_the_module():
    stub = Path(tinyfast._C.__file__).with_name("_C.pyi")
    text = stub.read_text()
    for name in ("class Scheduler", "class BlockManager", "def cpu_features"):
        assert name in text


def test_thread_count_is_settable_and_validated():
    before = tinyfast.num_threads()
    assert before == (int(os.environ["TINYFAST_NUM_THREADS"]) if "TINYFAST_NUM_THREADS" in os.environ else tinyfast.cpu_features()["num_cores"])
    try:
        tinyfast.set_num_threads(3)
        assert tinyfast.num_threads() == 3
        with pytest.raises(ValueError):
            tinyfast.set_num_threads(0)
    finally:
        tinyfast.set_num_threads(before)
