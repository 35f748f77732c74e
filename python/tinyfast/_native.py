"""Loads tinyfast._C and checks that it can exchange arrays with MLX."""

from __future__ import annotations

import mlx.core as mx

from tinyfast import _C


def _check_mlx_interop() -> None:
    # _C must be built with the nanobind ABI and domain MLX uses, or every op
    # taking an mx.array would fail later with an opaque signature error.
    try:
        _C._mlx_array_ndim(mx.zeros((1,)))
    except TypeError as exc:  # pragma: no cover - only on a broken build
        raise ImportError(
            "tinyfast._C cannot read mlx arrays: it was built against a different "
            f"MLX/nanobind than the installed mlx {mx.__version__}. Reinstall tinyfast "
            "in this environment (pip install --force-reinstall --no-deps tinyfast)."
        ) from exc


_check_mlx_interop()
