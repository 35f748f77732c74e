"""Which MLX device the kernel tests run on (set by conftest.py's --device)."""

import mlx.core as mx


def on_gpu() -> bool:
    return mx.default_device() == mx.gpu
