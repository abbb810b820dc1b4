// The event loop: timers fire in deadline order and can be cancelled, other
// threads' closures run on the loop's thread, a handler may remove its own
// descriptor, Stop ends Run from anywhere, and the loop busy-polls only
// while a PollWindow is open and its time is not up.
#include "core/event_loop.h"

#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"

namespace plasmon {
namespace {

std::unique_ptr<EventLoop> NewLoop() {
  auto loop = EventLoop::Create();
  EXPECT_TRUE(loop.ok()) << loop.status().ToString();
  return std::move(*loop);
}

TEST(EventLoopTest, TimersRunInDeadlineOrderAndCancelledOnesNever) {
  auto loop = NewLoop();
  std::vector<int> order;
  const int64_t now = MonoMicros();
  // Added out of order, with ties (ties run in the order they were added).
  std::mt19937 rng(7);
  std::vector<int> slots(200);
  for (int i = 0; i < 200; i++) slots[i] = i;
  std::shuffle(slots.begin(), slots.end(), rng);
  std::vector<EventLoop::TimerId> ids(200);
  for (int slot : slots)
    ids[slot] = loop->AddTimer(now + 1000 + (slot / 2) * 50, [&order, slot] { order.push_back(slot); });
  for (int i = 0; i < 200; i += 3) EXPECT_TRUE(loop->CancelTimer(ids[i]));
  EXPECT_FALSE(loop->CancelTimer(ids[0]));  // already cancelled
  loop->AddTimer(now + 30000, [&] { loop->Stop(); });
  ASSERT_TRUE(loop->Run().ok());
  // By deadline; two timers of one deadline in the order they were added.
  std::vector<int> expected;
  for (int i = 0; i < 200; i++)
    if (i % 3 != 0) expected.push_back(i);
  std::stable_sort(expected.begin(), expected.end(), [&](int a, int b) {
    return a / 2 != b / 2 ? a / 2 < b / 2 : ids[a] < ids[b];
  });
  EXPECT_EQ(order, expected);
  EXPECT_EQ(loop->timers(), 0u);
}

TEST(EventLoopTest, ATimerDoesNotRunBeforeItsDeadline) {
  auto loop = NewLoop();
  int64_t ran_at = 0;
  const int64_t deadline = MonoMicros() + 20000;
  loop->AddTimer(deadline, [&] {
    ran_at = MonoMicros();
    loop->Stop();
  });
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_GE(ran_at, deadline);
}

TEST(EventLoopTest, ATimerAddedByATimerForNowRunsInTheNextRound) {
  // A timer that re-arms itself at once must not starve the descriptors.
  auto loop = NewLoop();
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  int rearmed = 0;
  bool read_seen = false;
  std::function<void()> again = [&] {
    rearmed++;
    if (!read_seen) loop->AddTimer(0, again);
  };
  loop->AddTimer(0, again);
  ASSERT_TRUE(loop->Add(a.get(), EPOLLIN, [&](uint32_t) {
                    char c;
                    ASSERT_EQ(::read(a.get(), &c, 1), 1);
                    read_seen = true;
                    loop->Stop();
                  }).ok());
  ASSERT_EQ(::write(b.get(), "x", 1), 1);
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_TRUE(read_seen);
  EXPECT_GE(rearmed, 1);
}

TEST(EventLoopTest, PostFromOtherThreadsRunsOnTheLoopThread) {
  auto loop = NewLoop();
  std::mutex dispatch;
  loop->SetDispatchLock(&dispatch);
  const std::thread::id loop_thread = std::this_thread::get_id();
  std::atomic<int> ran{0};
  int on_loop = 0;  // touched only on the loop's thread
  constexpr int kThreads = 4, kEach = 500;
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; t++) {
    posters.emplace_back([&] {
      for (int i = 0; i < kEach; i++) {
        loop->Post([&] {
          EXPECT_EQ(std::this_thread::get_id(), loop_thread);
          EXPECT_FALSE(dispatch.try_lock());  // the loop holds it while closures run
          on_loop++;
          if (ran.fetch_add(1) + 1 == kThreads * kEach) loop->Stop();
        });
      }
    });
  }
  ASSERT_TRUE(loop->Run().ok());
  for (std::thread& t : posters) t.join();
  EXPECT_EQ(on_loop, kThreads * kEach);
}

TEST(EventLoopTest, AHandlerMayRemoveItsOwnAndOtherDescriptors) {
  auto loop = NewLoop();
  int p1[2], p2[2];
  ASSERT_EQ(::pipe(p1), 0);
  ASSERT_EQ(::pipe(p2), 0);
  UniqueFd r1(p1[0]), w1(p1[1]), r2(p2[0]), w2(p2[1]);
  int first = 0, second = 0;
  // Both ready in the same round; whichever runs first removes both.
  auto handler = [&](int* counter) {
    return [&, counter](uint32_t) {
      (*counter)++;
      loop->Remove(r1.get());
      loop->Remove(r2.get());
      loop->AddTimerAfter(20000, [&] { loop->Stop(); });
    };
  };
  ASSERT_TRUE(loop->Add(r1.get(), EPOLLIN, handler(&first)).ok());
  ASSERT_TRUE(loop->Add(r2.get(), EPOLLIN, handler(&second)).ok());
  EXPECT_FALSE(loop->Add(r1.get(), EPOLLIN, handler(&first)).ok());  // one registration each
  ASSERT_EQ(::write(w1.get(), "x", 1), 1);
  ASSERT_EQ(::write(w2.get(), "x", 1), 1);
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_EQ(first + second, 1);  // the other's readiness was dropped
}

TEST(EventLoopTest, StopFromAnotherThreadEndsAnIdleLoop) {
  auto loop = NewLoop();
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    loop->Stop();
  });
  ASSERT_TRUE(loop->Run().ok());  // no timer, no descriptor: would wait forever
  stopper.join();
  EXPECT_TRUE(loop->stopping());
}

TEST(EventLoopTest, NoWindowOpensWhileBusyPollingIsOff) {
  auto loop = NewLoop();
  EXPECT_EQ(loop->busy_poll_us(), 0);  // off unless the owner turns it on
  EventLoop::PollWindow w = loop->ExpectSoon();
  EXPECT_FALSE(w.open());
  loop->set_busy_poll_us(-5);
  EXPECT_EQ(loop->busy_poll_us(), 0);
  loop->AddTimerAfter(20000, [&] { loop->Stop(); });
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_EQ(loop->empty_polls(), 0u);  // it slept until the timer
}

TEST(EventLoopTest, AWindowPollsUntilItsTimeIsUpThenTheLoopSleeps) {
  auto loop = NewLoop();
  loop->set_busy_poll_us(20000);
  EventLoop::PollWindow w = loop->ExpectSoon();  // held through the run: only its time ends it
  ASSERT_TRUE(w.open());
  uint64_t later = 0;
  loop->AddTimerAfter(40000, [&] { later = loop->empty_polls(); });
  loop->AddTimerAfter(80000, [&] { loop->Stop(); });
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_GT(later, 0u);                   // it polled in the first 20 ms
  EXPECT_EQ(loop->empty_polls(), later);  // and not once after
  EXPECT_EQ(loop->fruitful_polls(), 0u);    // nothing came while it polled
}

TEST(EventLoopTest, ClosingTheLastWindowStopsPollingAtOnce) {
  auto loop = NewLoop();
  loop->set_busy_poll_us(10'000'000);
  EventLoop::PollWindow a = loop->ExpectSoon();
  EventLoop::PollWindow b = loop->ExpectSoon();
  EventLoop::PollWindow moved = std::move(b);  // the window goes with the move
  EXPECT_FALSE(b.open());
  uint64_t after_first = 0, after_last = 0;
  loop->AddTimerAfter(5000, [&] {
    a.Close();
    after_first = loop->empty_polls();
  });
  loop->AddTimerAfter(10000, [&] {
    EXPECT_GT(loop->empty_polls(), after_first);  // one still open: still polling
    moved = EventLoop::PollWindow();              // closes it
    after_last = loop->empty_polls();
  });
  loop->AddTimerAfter(30000, [&] { loop->Stop(); });
  ASSERT_TRUE(loop->Run().ok());
  EXPECT_GT(after_first, 0u);
  EXPECT_EQ(loop->empty_polls(), after_last);  // slept from the close to the stop
}

TEST(EventLoopTest, AnAnswerFromAnotherThreadIsTakenByAPoll) {
  auto loop = NewLoop();
  loop->set_busy_poll_us(10'000'000);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  UniqueFd mine(sv[0]), peer(sv[1]);
  EventLoop::PollWindow w;
  std::string got;
  ASSERT_TRUE(loop->Add(mine.get(), EPOLLIN, [&](uint32_t) {
                    char buf[16];
                    ssize_t n = ::read(mine.get(), buf, sizeof buf);
                    if (n > 0) got.assign(buf, static_cast<size_t>(n));
                    w.Close();  // answered
                    loop->Stop();
                  }).ok());
  loop->Post([&] { w = loop->ExpectSoon(); });  // "the request is out"
  std::thread holder([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    ASSERT_EQ(::write(peer.get(), "pong", 4), 4);
  });
  ASSERT_TRUE(loop->Run().ok());
  holder.join();
  EXPECT_EQ(got, "pong");
  EXPECT_GT(loop->empty_polls(), 0u);     // it polled while waiting
  EXPECT_GE(loop->fruitful_polls(), 1u);  // and a poll, not a wake-up, found the answer
}

}  // namespace
}  // namespace plasmon
