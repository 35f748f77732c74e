#include "runtime.h"

#include <ucontext.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace tfemu {
namespace {

constexpr size_t kStackBytes = 256 << 10;

enum class State : int { Ready, Waiting, Done };

struct Lane {
  ucontext_t ctx;
  State state = State::Ready;
  Sync kind = Sync::Simd;
  const void* site = nullptr;
  uint64_t collectives = 0;  // simd collectives completed
  uint64_t matrix_ops = 0;   // hash of simdgroup_matrix operations
  int index = 0, lane = 0, sg = 0;
};

struct Group {
  std::vector<Lane> lanes;
  int simd_groups = 0;
  std::vector<unsigned char> slots;  // [2][lanes][kSlotBytes]
  ucontext_t scheduler;
  const std::function<void(const LaneIds&)>* body = nullptr;
  LaneIds base;
  Dim3 group_dims;
  int current = -1;
};

Group* g_group = nullptr;  // the threadgroup being run (one at a time)

std::vector<std::unique_ptr<char[]>>& stacks(size_t n) {
  static std::vector<std::unique_ptr<char[]>> pool;
  while (pool.size() < n) pool.emplace_back(new char[kStackBytes]);
  return pool;
}

Lane& cur() { return g_group->lanes[g_group->current]; }

void lane_main() {
  Group& g = *g_group;
  Lane& l = g.lanes[g.current];
  LaneIds ids = g.base;
  const Dim3 d = g.group_dims;
  ids.tid = {static_cast<unsigned>(l.index % d.x), static_cast<unsigned>(l.index / d.x % d.y),
             static_cast<unsigned>(l.index / (d.x * d.y))};
  ids.lane = l.lane;
  ids.simdgroup = l.sg;
  (*g.body)(ids);
  cur().state = State::Done;
  // returning resumes uc_link (the scheduler)
}

std::string where(const Lane& l) {
  std::ostringstream os;
  os << "thread " << l.index << " (simdgroup " << l.sg << ", lane " << l.lane << ")";
  return os.str();
}

const char* kind_name(Sync k) {
  switch (k) {
    case Sync::Simd: return "a SIMD-group collective";
    case Sync::SimdBarrier: return "simdgroup_barrier";
    case Sync::ThreadgroupBarrier: return "threadgroup_barrier";
  }
  return "?";
}

[[noreturn]] void fail(const Group& g, const std::string& msg) {
  std::ostringstream os;
  os << "threadgroup (" << g.base.tgid.x << ", " << g.base.tgid.y << ", " << g.base.tgid.z << "): " << msg;
  throw std::runtime_error(os.str());
}

// Releases simdgroup `sg` if all its lanes wait at the same SIMD collective or
// simdgroup_barrier; reports lanes of the simdgroup that disagree.
bool release_simdgroup(Group& g, int sg) {
  const int lo = sg * kSimdWidth, hi = std::min<int>(lo + kSimdWidth, g.lanes.size());
  const Lane* waiting = nullptr;
  for (int i = lo; i < hi; ++i) {
    const Lane& l = g.lanes[i];
    if (l.state == State::Waiting && l.kind != Sync::ThreadgroupBarrier) waiting = &l;
  }
  if (!waiting) return false;
  for (int i = lo; i < hi; ++i) {
    const Lane& l = g.lanes[i];
    if (l.state == State::Done)
      fail(g, where(*waiting) + " waits at " + kind_name(waiting->kind) + " that " + where(l) +
                  " never reaches (it finished): divergent control flow around a SIMD-group operation");
    if (l.kind != waiting->kind || l.site != waiting->site)
      fail(g, where(*waiting) + " waits at " + kind_name(waiting->kind) + " while " + where(l) + " waits at " +
                  kind_name(l.kind) + " elsewhere: divergent control flow in a simdgroup");
    if (l.matrix_ops != waiting->matrix_ops)
      fail(g, where(l) + " and " + where(*waiting) +
                  " ran different simdgroup_matrix operations before meeting: divergent control flow");
  }
  for (int i = lo; i < hi; ++i) {
    g.lanes[i].state = State::Ready;
    if (g.lanes[i].kind == Sync::Simd) ++g.lanes[i].collectives;
  }
  return true;
}

// Runs simdgroup `sg` as far as it can go on its own: until each of its lanes
// has finished or waits at a threadgroup barrier. Its lanes run one at a time
// in a random order per step, so a lane reads threadgroup memory before its
// neighbours wrote it unless a barrier orders them.
void run_simdgroup_ahead(Group& g, int sg, std::mt19937_64& rng) {
  const int lo = sg * kSimdWidth, hi = std::min<int>(lo + kSimdWidth, g.lanes.size());
  std::vector<int> order;
  for (int i = lo; i < hi; ++i) order.push_back(i);
  do {
    std::shuffle(order.begin(), order.end(), rng);
    for (int i : order) {
      if (g.lanes[i].state != State::Ready) continue;
      g.current = i;
      swapcontext(&g.scheduler, &g.lanes[i].ctx);
      g.current = -1;
    }
  } while (release_simdgroup(g, sg));
}

// Simdgroups run ahead of each other, in a random order per barrier phase:
// a simdgroup reaches its next threadgroup barrier (or the end) before the
// next one starts, so threadgroup memory another simdgroup still needs is
// overwritten unless a threadgroup barrier protects it.
void run_group(Group& g, std::mt19937_64& rng) {
  std::vector<int> sgs(g.simd_groups);
  for (int i = 0; i < g.simd_groups; ++i) sgs[i] = i;
  for (;;) {
    std::shuffle(sgs.begin(), sgs.end(), rng);
    for (int sg : sgs) run_simdgroup_ahead(g, sg, rng);
    // No simdgroup can move: either everybody is done, or at a threadgroup barrier.
    const Lane* at_barrier = nullptr;
    const Lane* done = nullptr;
    for (const Lane& l : g.lanes) {
      if (l.state == State::Done) done = &l;
      else if (l.kind == Sync::ThreadgroupBarrier) at_barrier = &l;
    }
    if (!at_barrier) break;  // all done
    if (done)
      fail(g, where(*at_barrier) + " waits at threadgroup_barrier that " + where(*done) +
                  " never reaches (it finished): divergent control flow around a barrier");
    for (const Lane& l : g.lanes) {
      if (l.site != at_barrier->site)
        fail(g, where(l) + " and " + where(*at_barrier) + " wait at different threadgroup_barrier calls");
    }
    for (int sg = 0; sg < g.simd_groups; ++sg) {
      const int lo = sg * kSimdWidth, hi = std::min<int>(lo + kSimdWidth, g.lanes.size());
      for (int i = lo + 1; i < hi; ++i)
        if (g.lanes[i].matrix_ops != g.lanes[lo].matrix_ops)
          fail(g, where(g.lanes[i]) + " and " + where(g.lanes[lo]) +
                      " ran different simdgroup_matrix operations: divergent control flow");
    }
    for (Lane& l : g.lanes) l.state = State::Ready;
  }
  for (int sg = 0; sg < g.simd_groups; ++sg) {
    const int lo = sg * kSimdWidth, hi = std::min<int>(lo + kSimdWidth, g.lanes.size());
    for (int i = lo + 1; i < hi; ++i)
      if (g.lanes[i].matrix_ops != g.lanes[lo].matrix_ops || g.lanes[i].collectives != g.lanes[lo].collectives)
        fail(g, where(g.lanes[i]) + " and " + where(g.lanes[lo]) +
                    " finished after different SIMD-group operations: divergent control flow");
  }
}

}  // namespace

void run_grid(const LaunchConfig& cfg, const std::function<void(const LaneIds&)>& body) {
  const size_t n = static_cast<size_t>(cfg.group.x) * cfg.group.y * cfg.group.z;
  if (n == 0 || n > 1024) throw std::runtime_error("threadgroup size must be 1..1024 threads");
  if (cfg.threadgroup_bytes > 32768) throw std::runtime_error("threadgroup memory above 32 KB (the Metal limit)");
  auto& pool = stacks(n);
  std::vector<unsigned char> smem(cfg.threadgroup_bytes + 16);
  std::mt19937_64 rng(cfg.seed);
  Group g;
  g.lanes.resize(n);
  g.simd_groups = static_cast<int>((n + kSimdWidth - 1) / kSimdWidth);
  g.slots.assign(2 * n * kSlotBytes, 0);
  g.body = &body;
  g.group_dims = cfg.group;
  for (unsigned z = 0; z < cfg.grid.z; ++z)
    for (unsigned y = 0; y < cfg.grid.y; ++y)
      for (unsigned x = 0; x < cfg.grid.x; ++x) {
        std::memset(smem.data(), 0xFF, smem.size());
        g.base = LaneIds{smem.data(), {x, y, z}, {}, cfg.group, 0, 0};
        for (size_t i = 0; i < n; ++i) {
          Lane& l = g.lanes[i];
          l = Lane{};
          l.index = static_cast<int>(i);
          l.lane = static_cast<int>(i % kSimdWidth);
          l.sg = static_cast<int>(i / kSimdWidth);
          getcontext(&l.ctx);
          l.ctx.uc_stack.ss_sp = pool[i].get();
          l.ctx.uc_stack.ss_size = kStackBytes;
          l.ctx.uc_link = &g.scheduler;
          makecontext(&l.ctx, lane_main, 0);
        }
        g_group = &g;
        try {
          run_group(g, rng);
        } catch (...) {
          g_group = nullptr;
          throw;
        }
        g_group = nullptr;
      }
}

int lane_in_simdgroup() { return cur().lane; }

int lanes_in_simdgroup() {
  const int lo = cur().sg * kSimdWidth;
  return std::min<int>(kSimdWidth, static_cast<int>(g_group->lanes.size()) - lo);
}

void* simd_slot_for_write() {
  const Lane& l = cur();
  return g_group->slots.data() + ((l.collectives % 2) * g_group->lanes.size() + l.index) * kSlotBytes;
}

const void* simd_slot_for_read(int lane) {
  const Lane& l = cur();
  const size_t idx = static_cast<size_t>(l.sg) * kSimdWidth + lane;
  return g_group->slots.data() + (((l.collectives - 1) % 2) * g_group->lanes.size() + idx) * kSlotBytes;
}

void sync(Sync kind, const void* site) {
  Lane& l = cur();
  l.state = State::Waiting;
  l.kind = kind;
  l.site = site;
  swapcontext(&l.ctx, &g_group->scheduler);
}

void note_matrix_op(int kind) {
  Lane& l = cur();
  l.matrix_ops = l.matrix_ops * 1000003u + static_cast<uint64_t>(kind) + 1;
}

}  // namespace tfemu

namespace tfemu {

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    float f = static_cast<float>(mant) * 5.9604644775390625e-08f;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// Round to nearest even, like Metal's float -> half conversion.
uint16_t float_to_half_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t a = bits & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;
  if (a >= 0x477ff000u) return sign | 0x7c00u;
  if (a >= 0x38800000u) {
    uint32_t h = (a >> 13) - (112u << 10);
    const uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (a <= 0x33000000u) return sign;
  const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126u - e;
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

}  // namespace tfemu
