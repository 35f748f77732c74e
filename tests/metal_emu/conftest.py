"""Session fixture: the emulator library, built once (cached by content hash)."""

import ctypes

import pytest

from metal_emu import emu, params


@pytest.fixture(scope="session")
def emulator() -> emu.Emulator:
    if emu.find_clang() is None:
        pytest.skip("clang++ is not installed (apt-get install clang): the Metal emulator needs it")
    lib = emu.Emulator(emu.build())
    for struct in params.ALL:
        assert lib.param_size(struct.__name__) == ctypes.sizeof(struct), struct.__name__
        for field, _ in struct._fields_:
            assert lib.param_offset(struct.__name__, field) == getattr(struct, field).offset, (struct.__name__, field)
    mirrors = {"kWriteKVThreads": params.WRITE_KV_THREADS, "kDecodeMaxHeads": params.DECODE_MAX_HEADS,
               "kPrefillSimdgroups": params.PREFILL_SIMDGROUPS, "kPrefillRows": params.PREFILL_ROWS,
               "kPrefillKeys": params.PREFILL_KEYS, "kQMatvecSimdgroups": params.QMATVEC_SIMDGROUPS,
               "kQMatvecRows": params.QMATVEC_ROWS}
    for name, value in mirrors.items():
        assert lib.constant(name) == value, f"params.py {name} differs from metal/kernels/params.h"
    return lib


