"""The emulator catches kernel bugs: each case copies metal/ to a temporary
directory, plants one bug by text substitution in a kernel header, builds the
emulator for the affected entry-point file and runs a parity check from the
test modules. The check must fail -- with a mismatch against the NumPy
reference, or with the runtime reporting a synchronization error.

The unmodified kernels pass the same checks in test_paged_attention_*.py and
test_qmatmul.py."""

import shutil
from dataclasses import dataclass
from typing import Callable

import pytest

from metal_emu import emu
from metal_emu.test_paged_attention_decode import check as decode_check
from metal_emu.test_paged_attention_prefill import check as prefill_check
from metal_emu.test_qmatmul import check as qmatmul_check


@dataclass
class Plant:
    name: str
    header: str        # under metal/kernels/
    entry_file: str    # the .metal file to build
    original: str      # must occur exactly once
    planted: str
    run: Callable      # parity check(emulator)
    error: type = AssertionError  # how the failure shows


def decode_window(e):
    decode_check(e, 8, 2, 64, 16, "float32", [1, 15, 17, 40], window=7)


def decode_plain(e):
    decode_check(e, 8, 2, 64, 16, "float32", [1, 15, 17, 40])


def prefill_causal(e):
    prefill_check(e, 4, 2, 64, 16, "float32", [(40, 40), (20, 5)])


def qmatmul_q4_k(e):
    qmatmul_check(e, "q4_k", "float32", 1, 4, 512, kind="random")


PLANTS = [
    Plant("off-by-one: sliding window one key too long", "paged_kv.h", "paged_attention_decode.metal",
          "max(0, qpos - p.sliding_window + 1)", "max(0, qpos - p.sliding_window)", decode_window),
    Plant("off-by-one: causal mask sees the next token", "paged_attention_prefill.h",
          "paged_attention_prefill.metal", "(!p.causal || pos <= qpos)", "(!p.causal || pos <= qpos + 1)",
          prefill_causal),
    Plant("off-by-one: Q4_K high scale bits from the wrong byte", "qmatmul.h", "qmatmul.metal",
          "((sc[j - 4] >> 6) << 4)", "((sc[j - 3] >> 6) << 4)", qmatmul_q4_k),
    Plant("missing threadgroup barrier: V overwrites K another simdgroup still reads",
          "paged_attention_prefill.h", "paged_attention_prefill.metal",
          "threadgroup_barrier(mem_flags::mem_threadgroup);  // all simdgroups are done with K", "",
          prefill_causal),
    Plant("missing simdgroup barrier: probabilities read before all lanes wrote them",
          "paged_attention_decode.h", "paged_attention_decode.metal",
          "    simdgroup_barrier(mem_flags::mem_threadgroup);\n    const int n = min(kSimd, hi - base);",
          "    const int n = min(kSimd, hi - base);", decode_plain),
    Plant("wrong SIMD reduction: softmax sum of the lane's own key only", "paged_attention_decode.h",
          "paged_attention_decode.metal", "l[g] * alpha + simd_sum(pr)", "l[g] * alpha + pr", decode_plain),
    Plant("wrong SIMD reduction: row sum shuffles with another row's lanes", "paged_attention_prefill.h",
          "paged_attention_prefill.metal", "row_sum += simd_shuffle_xor(row_sum, 2);",
          "row_sum += simd_shuffle_xor(row_sum, 4);", prefill_causal),
    Plant("divergent barrier: a simdgroup_barrier only some lanes reach", "paged_attention_decode.h",
          "paged_attention_decode.metal", "    if (valid) {\n      const device T* krow",
          "    if (valid) {\n      simdgroup_barrier(mem_flags::mem_none);\n      const device T* krow",
          decode_plain, emu.EmulatorError),
]


@pytest.mark.parametrize("plant", PLANTS, ids=[p.name.split(":")[0].replace(" ", "-") + f"-{i}"
                                              for i, p in enumerate(PLANTS)])
def test_planted_bug_is_caught(emulator, plant, tmp_path):
    metal = tmp_path / "metal"
    shutil.copytree(emu.METAL_DIR, metal)
    header = metal / "kernels" / plant.header
    text = header.read_text()
    assert text.count(plant.original) == 1, f"pattern to replace not found once in {plant.header}"
    header.write_text(text.replace(plant.original, plant.planted))
    bugged = emu.Emulator(emu.build(metal, only=[plant.entry_file]))
    with pytest.raises(plant.error) as info:
        plant.run(bugged)
    if plant.error is emu.EmulatorError:
        assert "divergent" in str(info.value)
