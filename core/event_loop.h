// EventLoop: one thread's epoll loop, with a timer heap and a queue of
// closures posted from other threads. In the spirit of Redis's ae.c: the
// loop waits in epoll_wait until a descriptor is ready, the earliest timer is
// due or another thread posts work, then runs the handlers inline.
//
// Written here rather than taken from a library (libevent, libuv, asio)
// because it is the heart of the store's latency: one thread, no hand-offs,
// timers cancelled in O(log n) by id, and a hook that holds the store's
// table lock exactly while handlers run (not while the loop sleeps).
//
// Everything but Post, Stop and RequestStop must be called on the loop's
// thread (or before Run starts).
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/fd.h"
#include "plasmon/status.h"

namespace plasmon {

class EventLoop {
 public:
  using IoHandler = std::function<void(uint32_t events)>;  // EPOLLIN, EPOLLOUT, EPOLLHUP, ...
  using TimerId = uint64_t;                                // 0: no timer
  static constexpr TimerId kNoTimer = 0;

  static Result<std::unique_ptr<EventLoop>> Create();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Watches `fd` (not owned) for `events`; `handler` runs on the loop's
  // thread when some are ready. One registration per descriptor.
  Status Add(int fd, uint32_t events, IoHandler handler);
  Status Modify(int fd, uint32_t events);
  // Stops watching `fd`. Safe from inside any handler, its own included: a
  // readiness already collected for it in this round is dropped.
  void Remove(int fd);

  // Runs `fn` once at the monotonic time `deadline_us` (core/clock.h's
  // MonoMicros), or at once in the next round if that has passed.
  TimerId AddTimer(int64_t deadline_us, std::function<void()> fn);
  TimerId AddTimerAfter(int64_t delay_us, std::function<void()> fn);
  // Whether it was still pending (false: it ran, or was cancelled before).
  bool CancelTimer(TimerId id);
  size_t timers() const { return heap_.size(); }

  // Runs `fn` on the loop's thread, soon. From any thread.
  void Post(std::function<void()> fn);

  // While handlers, timers and posted closures run, the loop holds `mu`
  // (nullptr: none). It never holds it while waiting.
  void SetDispatchLock(std::mutex* mu) { dispatch_mu_ = mu; }

  // Serves until Stop. Returns an error only if epoll itself fails.
  Status Run();
  // Makes Run return after the current round. From any thread, and
  // async-signal-safe (one atomic store and one write).
  void Stop();
  bool stopping() const { return stop_.load(std::memory_order_relaxed); }

  // Runs what is posted now (for a final drain after Run returned).
  void RunPosted();

 private:
  struct Timer {
    int64_t deadline_us;
    TimerId id;
    std::function<void()> fn;
  };
  EventLoop(UniqueFd epoll_fd, UniqueFd wake_fd);
  int NextTimeoutMs() const;
  void RunDueTimers();
  // The binary min-heap of timers by (deadline, id), with each timer's
  // position kept in `timer_pos_` so that cancelling is O(log n).
  bool Less(size_t a, size_t b) const;
  void Swap(size_t a, size_t b);
  void SiftUp(size_t i);
  void SiftDown(size_t i);
  Timer PopAt(size_t i);
  void Wake();

  UniqueFd epoll_fd_, wake_fd_;
  std::atomic<bool> stop_{false};
  std::mutex* dispatch_mu_ = nullptr;

  // A registration is known by a token (epoll's data), never reused: a
  // readiness collected for a descriptor removed meanwhile finds no token.
  std::unordered_map<uint64_t, IoHandler> handlers_;  // token -> handler
  std::unordered_map<int, uint64_t> tokens_;          // fd -> token
  uint64_t next_token_ = 1;

  std::vector<Timer> heap_;
  std::unordered_map<TimerId, size_t> timer_pos_;
  TimerId next_timer_ = 1;

  std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;
};

}  // namespace plasmon
