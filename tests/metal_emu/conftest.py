"""Session fixture: the emulator library, built once (cached by content hash)."""

import pytest

from metal_emu import emu, params


@pytest.fixture(scope="session")
def emulator() -> emu.Emulator:
    if emu.find_clang() is None:
        pytest.skip("clang++ is not installed (apt-get install clang): the Metal emulator needs it")
    lib = emu.Emulator(emu.build())
    for struct in params.ALL:
        assert lib.param_size(struct.__name__) == __import__("ctypes").sizeof(struct), struct.__name__
    return lib


