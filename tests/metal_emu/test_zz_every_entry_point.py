"""Every [[kernel]] entry point of metal/*.metal was launched by the parity
tests of this directory (named test_zz_ so it runs after them)."""

from pathlib import Path

import pytest

PARITY_MODULES = {"test_write_kv.py", "test_paged_attention_decode.py", "test_paged_attention_prefill.py",
                  "test_qmatmul.py"}


def test_every_entry_point_ran(emulator, request):
    collected = {Path(str(item.fspath)).name for item in request.session.items}
    if not PARITY_MODULES <= collected:
        pytest.skip("needs the whole tests/metal_emu directory in the run")
    names = emulator.kernel_names()  # everything the TF_INSTANTIATE tables registered
    assert names
    missing = sorted(names - emulator.launched_names())
    assert not missing, f"entry points no test launched: {missing}"
