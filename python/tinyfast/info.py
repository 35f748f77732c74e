"""What `tinyfast info` reports: versions, CPU features, MLX device, memory."""

from __future__ import annotations

import os
import platform

import mlx.core as mx

import tinyfast


def _total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return None


def collect() -> dict:
    features = tinyfast.cpu_features()
    memory = _total_memory_bytes()
    return {
        "tinyfast": tinyfast.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "mlx": mx.__version__,
        "mlx_default_device": str(mx.default_device()),
        "metal_available": bool(mx.metal.is_available()),
        "cpu_kernel_level": features["kernel_level"],
        "cpu_features": sorted(k for k, v in features.items() if v is True),
        "cpu_cores": features["num_cores"],
        "memory_gib": round(memory / 2**30, 1) if memory else None,
    }


def format_report(info: dict) -> str:
    width = max(len(k) for k in info)
    lines = []
    for key, value in info.items():
        if isinstance(value, list):
            value = " ".join(value) if value else "-"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)
