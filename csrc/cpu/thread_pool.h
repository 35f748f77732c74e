#pragma once
// One small pool shared by every CPU kernel. parallel_for splits [0, n) into
// contiguous chunks; the calling thread runs chunks too, so a pool of size 1
// means "no extra threads". Each index is processed by exactly one call, and a
// kernel must make its result for an index independent of the chunking (that is
// what keeps outputs batch-invariant and deterministic).
//
// Waiting spins briefly before sleeping. A decode step is hundreds of short ops
// (a Gemma 270M layer's matvecs take tens of microseconds each); waking a
// sleeping worker through the kernel for every one of them costs about as much
// as the op itself. Workers poll for the next job for `spin_us` microseconds
// (TINYFAST_SPIN_US, default 50; 0 = always sleep) and only then block, and the
// caller polls for its workers' chunks the same way.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tinyfast::cpu {

class ThreadPool {
 public:
  // fn(begin, end) over disjoint chunks covering [0, n): at most one chunk per
  // thread, none smaller than `min_chunk` indices.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk = 1);

  int num_threads() const { return num_threads_; }
  // Resizes the pool (>= 1). Not to be called while a parallel_for runs.
  void set_num_threads(int n);

  // Microseconds a thread polls before blocking (see above); safe to change at
  // any time (threads read it when they next wait).
  void set_spin_us(int us) { spin_us_.store(us < 0 ? 0 : us, std::memory_order_relaxed); }
  int spin_us() const { return spin_us_.load(std::memory_order_relaxed); }

  static ThreadPool& global();
  ~ThreadPool();

 private:
  explicit ThreadPool(int num_threads);
  void start_workers();
  void stop_workers();
  void worker_loop(int worker_index);
  // Polls `ready` for up to spin_us_; true when it became true.
  template <class Ready>
  bool spin_until(Ready ready) const;

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::mutex call_mutex_;  // one parallel_for at a time; nested calls run inline
  std::condition_variable wake_, done_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0, job_chunk_ = 0, job_chunks_ = 0;
  int64_t next_chunk_ = 0;
  // Read without the mutex while spinning; written with it held.
  std::atomic<int64_t> chunks_done_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  int sleeping_workers_ = 0;  // guarded by mutex_
  bool caller_sleeping_ = false;  // guarded by mutex_
  std::atomic<int> spin_us_{50};
};

}  // namespace tinyfast::cpu
