// Cooperative-lane runtime of the Metal emulator.
//
// Every GPU thread of a threadgroup is a fiber (ucontext). A fiber runs until
// it reaches a barrier or a SIMD-group collective and then yields. The
// scheduler releases a simdgroup when all its lanes wait at the same
// collective (same call site), and the threadgroup when every lane waits at
// the same threadgroup_barrier. Anything else -- a lane that finished, or
// waits at another call site -- is reported as an error instead of hanging.
//
// Why this catches missing barriers: the schedule is adversarial. Between
// threadgroup barriers one simdgroup runs as far as it can before the next
// one starts (simdgroups in a seeded random order), and within a simdgroup
// the lanes run one at a time in a random order between SIMD synchronization
// points. Threadgroup memory starts as 0xFF bytes (NaN as float/half). A
// kernel that reads another lane's or simdgroup's threadgroup write without a
// barrier in between reads poison or stale data, or has its data overwritten
// early, so its parity check fails.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace tfemu {

constexpr int kSimdWidth = 32;
constexpr int kSlotBytes = 256;  // largest value a SIMD collective exchanges

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// Per-lane ids handed to a kernel entry point.
struct LaneIds {
  void* threadgroup_memory;
  Dim3 tgid, tid, tgsize;
  unsigned lane, simdgroup;
};

struct LaunchConfig {
  Dim3 grid;      // threadgroups per grid
  Dim3 group;     // threads per threadgroup
  size_t threadgroup_bytes = 0;
  uint64_t seed = 0;  // lane order between synchronization points
};

// Runs `body` for every lane of every threadgroup; throws std::runtime_error
// with a description on a synchronization error.
void run_grid(const LaunchConfig& cfg, const std::function<void(const LaneIds&)>& body);

// --- used by the shim (metal_shim.h) -----------------------------------------
enum class Sync : int { Simd, SimdBarrier, ThreadgroupBarrier };

int lane_in_simdgroup();
int lanes_in_simdgroup();  // 32 except in a partial last simdgroup
// This lane's slot for the collective it is about to enter.
void* simd_slot_for_write();
// After simd_sync returned: the slot `lane` wrote for that collective.
const void* simd_slot_for_read(int lane);
// Yields until the whole simdgroup (Simd, SimdBarrier) or threadgroup
// (ThreadgroupBarrier) waits at `site`.
void sync(Sync kind, const void* site);
// simdgroup_matrix operations run per lane (each lane keeps the whole 8x8
// tile) without yielding; they are counted, and lanes of one simdgroup must
// agree on the count at every synchronization point and at exit.
void note_matrix_op(int kind);

// IEEE binary16 conversions for the shim's `half`.
float half_bits_to_float(uint16_t h);
uint16_t float_to_half_bits(float f);

}  // namespace tfemu
