#include "core/event_loop.h"

#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <climits>

#include "core/clock.h"

namespace plasmon {

namespace {
constexpr uint64_t kWakeToken = 0;
constexpr int kMaxEvents = 256;
}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::Create() {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep.valid()) return Status::FromErrno("epoll_create1", errno);
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return Status::FromErrno("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0)
    return Status::FromErrno("epoll_ctl", errno);
  return std::unique_ptr<EventLoop>(new EventLoop(std::move(ep), std::move(wake)));
}

EventLoop::EventLoop(UniqueFd epoll_fd, UniqueFd wake_fd)
    : epoll_fd_(std::move(epoll_fd)), wake_fd_(std::move(wake_fd)) {}

EventLoop::~EventLoop() = default;

Status EventLoop::Add(int fd, uint32_t events, IoHandler handler) {
  if (tokens_.count(fd) > 0) return Status::InvalidArgument("descriptor already watched");
  uint64_t token = next_token_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return Status::FromErrno("epoll_ctl add", errno);
  handlers_.emplace(token, std::move(handler));
  tokens_.emplace(fd, token);
  return Status::OK();
}

Status EventLoop::Modify(int fd, uint32_t events) {
  auto it = tokens_.find(fd);
  if (it == tokens_.end()) return Status::InvalidArgument("descriptor not watched");
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = it->second;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
    return Status::FromErrno("epoll_ctl mod", errno);
  return Status::OK();
}

void EventLoop::Remove(int fd) {
  auto it = tokens_.find(fd);
  if (it == tokens_.end()) return;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
  handlers_.erase(it->second);
  tokens_.erase(it);
}

// ---- timers ----

bool EventLoop::Less(size_t a, size_t b) const {
  const Timer &x = heap_[a], &y = heap_[b];
  return x.deadline_us != y.deadline_us ? x.deadline_us < y.deadline_us : x.id < y.id;
}

void EventLoop::Swap(size_t a, size_t b) {
  std::swap(heap_[a], heap_[b]);
  timer_pos_[heap_[a].id] = a;
  timer_pos_[heap_[b].id] = b;
}

void EventLoop::SiftUp(size_t i) {
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!Less(i, parent)) return;
    Swap(i, parent);
    i = parent;
  }
}

void EventLoop::SiftDown(size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < heap_.size() && Less(l, m)) m = l;
    if (r < heap_.size() && Less(r, m)) m = r;
    if (m == i) return;
    Swap(i, m);
    i = m;
  }
}

EventLoop::Timer EventLoop::PopAt(size_t i) {
  size_t last = heap_.size() - 1;
  if (i != last) Swap(i, last);
  Timer t = std::move(heap_.back());
  heap_.pop_back();
  timer_pos_.erase(t.id);
  if (i < heap_.size()) {
    SiftDown(i);
    SiftUp(i);
  }
  return t;
}

EventLoop::TimerId EventLoop::AddTimer(int64_t deadline_us, std::function<void()> fn) {
  TimerId id = next_timer_++;
  heap_.push_back(Timer{deadline_us, id, std::move(fn)});
  timer_pos_[id] = heap_.size() - 1;
  SiftUp(heap_.size() - 1);
  return id;
}

EventLoop::TimerId EventLoop::AddTimerAfter(int64_t delay_us, std::function<void()> fn) {
  return AddTimer(MonoMicros() + delay_us, std::move(fn));
}

bool EventLoop::CancelTimer(TimerId id) {
  auto it = timer_pos_.find(id);
  if (it == timer_pos_.end()) return false;
  PopAt(it->second);
  return true;
}

int EventLoop::NextTimeoutMs() const {
  if (heap_.empty()) return -1;
  int64_t wait_us = heap_.front().deadline_us - MonoMicros();
  if (wait_us <= 0) return 0;
  return static_cast<int>(std::min<int64_t>((wait_us + 999) / 1000, INT_MAX));
}

void EventLoop::RunDueTimers() {
  const int64_t now = MonoMicros();
  // Timers added by a timer's function for `now` or earlier run in the next
  // round, not in this one: a timer that re-arms itself cannot starve I/O.
  const TimerId last = next_timer_;
  while (!heap_.empty() && heap_.front().deadline_us <= now && heap_.front().id < last) {
    Timer t = PopAt(0);
    t.fn();
  }
}

// ---- cross-thread ----

void EventLoop::Wake() {
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)n;  // full (2^64 - 1 wake-ups pending) means awake anyway
}

void EventLoop::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> l(posted_mu_);
    posted_.push_back(std::move(fn));
  }
  Wake();
}

void EventLoop::RunPosted() {
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard<std::mutex> l(posted_mu_);
    fns.swap(posted_);
  }
  for (auto& fn : fns) fn();
}

// ---- busy-polling ----

EventLoop::PollWindow EventLoop::ExpectSoon() {
  if (busy_poll_us_ <= 0) return PollWindow();
  windows_++;
  poll_until_us_ = std::max(poll_until_us_, MonoMicros() + busy_poll_us_);
  return PollWindow(this);
}

void EventLoop::PollWindow::Close() {
  if (loop_ != nullptr) loop_->windows_--;
  loop_ = nullptr;
}

void EventLoop::Stop() {
  stop_.store(true);
  Wake();
}

Status EventLoop::Run() {
  epoll_event events[kMaxEvents];
  while (!stop_.load()) {
    const bool poll = windows_ > 0 && MonoMicros() < poll_until_us_;
    int n = ::epoll_wait(epoll_fd_.get(), events, kMaxEvents, poll ? 0 : NextTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("epoll_wait", errno);
    }
    if (poll) {
      if (n == 0) {
        empty_polls_++;
        ::sched_yield();
        if (heap_.empty() || heap_.front().deadline_us > MonoMicros()) continue;
      } else {
        fruitful_polls_++;
      }
    }
    std::unique_lock<std::mutex> lock;
    if (dispatch_mu_ != nullptr) lock = std::unique_lock<std::mutex>(*dispatch_mu_);
    for (int i = 0; i < n; i++) {
      uint64_t token = events[i].data.u64;
      if (token == kWakeToken) {
        uint64_t count;
        ssize_t r = ::read(wake_fd_.get(), &count, sizeof(count));
        (void)r;
        RunPosted();
        continue;
      }
      auto t = handlers_.find(token);
      if (t == handlers_.end()) continue;  // removed earlier in this round
      // A copy: the handler may Remove its own descriptor.
      IoHandler h = t->second;
      h(events[i].events);
    }
    RunDueTimers();
  }
  return Status::OK();
}

}  // namespace plasmon
