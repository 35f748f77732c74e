#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "cpu/cpu_features.h"
#include "cpu/thread_pool.h"

namespace nb = nanobind;

namespace tinyfast::bindings {

void bind_cpu(nb::module_& m) {
  m.def(
      "cpu_features",
      [] {
        const cpu::CpuFeatures& f = cpu::cpu_features();
        nb::dict d;
        d["arch"] = f.arch;
        d["num_cores"] = f.num_cores;
        d["kernel_level"] = cpu::kernel_level();
        d["avx2"] = f.avx2;
        d["fma"] = f.fma;
        d["f16c"] = f.f16c;
        d["avx512f"] = f.avx512f;
        d["avx512bw"] = f.avx512bw;
        d["avx512vl"] = f.avx512vl;
        d["avx512vnni"] = f.avx512vnni;
        d["avxvnni"] = f.avxvnni;
        d["neon"] = f.neon;
        d["neon_dotprod"] = f.neon_dotprod;
        d["neon_i8mm"] = f.neon_i8mm;
        return d;
      },
      "Instruction-set features detected at run time and the kernel level chosen from them.\n"
      "Set TINYFAST_CPU_DISABLE=avx512f,avx2,... before import to force slower paths.");
  m.def("num_threads", [] { return cpu::ThreadPool::global().num_threads(); },
        "Threads the CPU kernels use (default: usable cores, or TINYFAST_NUM_THREADS).");
  m.def("set_num_threads", [](int n) { cpu::ThreadPool::global().set_num_threads(n); }, nb::arg("n"),
        "Sets the kernels' thread count (>= 1); call it between ops, not during one.");
  m.def("thread_spin_us", [] { return cpu::ThreadPool::global().spin_us(); },
        "Microseconds a kernel thread polls for work before sleeping (default 50, or TINYFAST_SPIN_US).");
  m.def(
      "set_thread_spin_us",
      [](int us) {
        if (us < 0) throw nb::value_error("spin time must be >= 0 microseconds");
        cpu::ThreadPool::global().set_spin_us(us);
      },
      nb::arg("us"), "Sets the polling time (0: sleep at once; for machines with more threads than cores).");
}

}  // namespace tinyfast::bindings
