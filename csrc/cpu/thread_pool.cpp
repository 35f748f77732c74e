#include "cpu/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <stdexcept>

#include "cpu/cpu_features.h"

namespace tinyfast::cpu {
namespace {
thread_local bool in_pool_job = false;

int default_threads() {
  if (const char* env = std::getenv("TINYFAST_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1, cpu_features().num_cores);
}
}  // namespace

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(default_threads());
  return pool;
}

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) { start_workers(); }

ThreadPool::~ThreadPool() { stop_workers(); }

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
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait(lock, [&] { return stopping_ || (generation_ != seen && next_chunk_ < job_chunks_); });
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
      if (++chunks_done_ == job_chunks_) done_.notify_all();
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
  chunks_done_ = 0;
  ++generation_;
  wake_.notify_all();
  // The caller works too.
  while (next_chunk_ < job_chunks_) {
    int64_t c = next_chunk_++;
    int64_t begin = c * job_chunk_, end = std::min(job_n_, begin + job_chunk_);
    lock.unlock();
    in_pool_job = true;
    fn(begin, end);
    in_pool_job = false;
    lock.lock();
    ++chunks_done_;
  }
  done_.wait(lock, [&] { return chunks_done_ == job_chunks_; });
  job_ = nullptr;
}

}  // namespace tinyfast::cpu
