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
#include <utility>
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

  // Busy-polling while an answer is due. A caller that has sent a request
  // whose answer should come within a network round trip (a small pull, a
  // directory lookup) holds a PollWindow; while one is held and its time is
  // not up, the loop polls (epoll_wait with a zero timeout, then
  // sched_yield(), so that whatever else is runnable on this CPU goes first)
  // instead of sleeping. In the VMs plasmon is measured on, waking a thread
  // whose vCPU halted costs 15-70 us, more than the round trip itself; a
  // polling loop takes the answer without that wake-up. The time is
  // bounded: a window polls for at most busy_poll_us() from its opening,
  // so an answer that is late costs a sleep, not a spinning CPU; none is
  // opened while busy_poll_us() is 0. The loop's thread only.
  class PollWindow {
   public:
    PollWindow() = default;
    PollWindow(PollWindow&& o) noexcept : loop_(std::exchange(o.loop_, nullptr)) {}
    PollWindow& operator=(PollWindow&& o) noexcept {
      if (this != &o) {
        Close();
        loop_ = std::exchange(o.loop_, nullptr);
      }
      return *this;
    }
    PollWindow(const PollWindow&) = delete;
    PollWindow& operator=(const PollWindow&) = delete;
    ~PollWindow() { Close(); }
    void Close();
    bool open() const { return loop_ != nullptr; }

   private:
    friend class EventLoop;
    explicit PollWindow(EventLoop* loop) : loop_(loop) {}
    EventLoop* loop_ = nullptr;
  };
  PollWindow ExpectSoon();
  void set_busy_poll_us(int64_t us) { busy_poll_us_ = us < 0 ? 0 : us; }
  int64_t busy_poll_us() const { return busy_poll_us_; }
  // Rounds that polled and found nothing, and rounds that polled and found
  // something to do (the wake-ups saved), since Create.
  uint64_t empty_polls() const { return empty_polls_; }
  uint64_t fruitful_polls() const { return fruitful_polls_; }

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

  int64_t busy_poll_us_ = 0;
  int windows_ = 0;           // PollWindows open
  int64_t poll_until_us_ = 0;  // the latest end of their times
  uint64_t empty_polls_ = 0, fruitful_polls_ = 0;
};

}  // namespace plasmon
