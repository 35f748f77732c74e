#include "cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "cpu/cpu_features.h"

namespace tinyfast::cpu {
namespace {
thread_local bool in_pool_job = false;

int env_int(const char* name, int fallback) {
  if (const char* env = std::getenv(name)) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 0 && v <= 1000000) return static_cast<int>(v);
  }
  return fallback;
}

int default_threads() {
  int n = env_int("TINYFAST_NUM_THREADS", 0);
  return n > 0 ? n : std::max(1, cpu_features().num_cores);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}
}  // namespace

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(default_threads());
  return pool;
}

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  spin_us_.store(env_int("TINYFAST_SPIN_US", spin_us_.load()));
  start_workers();
}

ThreadPool::~ThreadPool() { stop_workers(); }

template <class Ready>
bool ThreadPool::spin_until(Ready ready) const {
  const int us = spin_us();
  if (us <= 0) return ready();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

void ThreadPool::start_workers() {
  stopping_ = false;
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("number of threads must be at least 1");
  std::lock_guard<std::mutex> call(call_mutex_);
  stop_workers();
  num_threads_ = n;
  start_workers();
}

void ThreadPool::worker_loop(int) {
  uint64_t seen = 0;
  for (;;) {
    auto has_news = [&] { return stopping_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; };
    spin_until(has_news);
    std::unique_lock<std::mutex> lock(mutex_);
    if (!has_news()) {
      // Sleeping is announced under the mutex, and parallel_for bumps the
      // generation under it too, so a wake-up cannot be missed.
      ++sleeping_workers_;
      wake_.wait(lock, has_news);
      --sleeping_workers_;
    }
    if (stopping_) return;
    seen = generation_;
    while (next_chunk_ < job_chunks_) {
      int64_t c = next_chunk_++;
      const auto* fn = job_;
      int64_t begin = c * job_chunk_, end = std::min(job_n_, begin + job_chunk_);
      lock.unlock();
      in_pool_job = true;
      (*fn)(begin, end);  // kernels do not throw; parallel_for callers validate first
      in_pool_job = false;
      lock.lock();
      if (chunks_done_.fetch_add(1, std::memory_order_acq_rel) + 1 == job_chunks_ && caller_sleeping_)
        done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  int64_t chunks = std::min<int64_t>(num_threads_, (n + min_chunk - 1) / min_chunk);
  if (chunks <= 1 || in_pool_job) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call(call_mutex_);
  std::unique_lock<std::mutex> lock(mutex_);
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = (n + chunks - 1) / chunks;
  job_chunks_ = (n + job_chunk_ - 1) / job_chunk_;
  next_chunk_ = 0;
  chunks_done_.store(0, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  if (sleeping_workers_ > 0) wake_.notify_all();  // spinning workers see the generation change
  // The caller works too.
  while (next_chunk_ < job_chunks_) {
    int64_t c = next_chunk_++;
    int64_t begin = c * job_chunk_, end = std::min(job_n_, begin + job_chunk_);
    lock.unlock();
    in_pool_job = true;
    fn(begin, end);
    in_pool_job = false;
    lock.lock();
    chunks_done_.fetch_add(1, std::memory_order_acq_rel);
  }
  const int64_t total = job_chunks_;
  auto all_done = [&] { return chunks_done_.load(std::memory_order_acquire) == total; };
  if (!all_done()) {
    lock.unlock();
    spin_until(all_done);
    lock.lock();
    caller_sleeping_ = true;
    done_.wait(lock, all_done);
    caller_sleeping_ = false;
  }
  job_ = nullptr;
}

}  // namespace tinyfast::cpu
