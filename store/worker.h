// Threads that run blocking jobs (Redis lookups, transfers) off the store's
// event loop. Jobs start in the order they were queued; with one thread they
// also finish in that order.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace plasmon {

class Worker {
 public:
  explicit Worker(int threads = 1) {
    for (int i = 0; i < threads; i++) threads_.emplace_back([this] { Run(); });
  }
  ~Worker() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();  // finishes the jobs already queued
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Drops the jobs not started yet: they never run. The running ones finish.
  void DiscardQueued() {
    std::deque<std::function<void()>> dropped;
    {
      std::lock_guard<std::mutex> l(mu_);
      dropped.swap(jobs_);
    }
  }

  void Submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> l(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      cv_.wait(l, [&] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stop_ and nothing left
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      l.unlock();
      job();
      l.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
};

}  // namespace plasmon
