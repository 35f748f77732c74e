"""`pytest tests/kernels --device gpu` runs these parity tests with MLX's
default device set to the GPU, so the ops run their Metal kernels (macOS with
a tinyfast build that includes tinyfast.metallib). `--device cpu` (the default)
pins the CPU. Tests of CPU-only behaviour carry @pytest.mark.cpu_only."""

import mlx.core as mx
import pytest


def pytest_addoption(parser):
    parser.addoption("--device", choices=["cpu", "gpu"], default="cpu",
                     help="MLX device for tests/kernels (gpu: the Metal kernels; skipped without Metal)")


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu_only(reason): checks behaviour only the CPU kernels have")


def device_option(config) -> str:
    # The option exists only when this conftest was loaded at startup
    # (pytest tests/kernels ...); a plain `pytest` run means the CPU.
    try:
        return config.getoption("--device")
    except ValueError:
        return "cpu"


@pytest.fixture(autouse=True)
def kernel_device(request):
    device = device_option(request.config)
    if device == "gpu":
        if not mx.metal.is_available():
            pytest.skip("--device gpu: Metal is not available here (needs macOS on Apple silicon)")
        marker = request.node.get_closest_marker("cpu_only")
        if marker is not None:
            pytest.skip(f"CPU-only behaviour: {marker.args[0] if marker.args else ''}")
    previous = mx.default_device()
    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    try:
        yield device
    finally:
        mx.set_default_device(previous)
