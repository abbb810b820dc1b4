#include "core/log_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace plasmon {
namespace {

struct FakeClock {
  int64_t now = 1000;
  std::function<int64_t()> fn() {
    return [this] { return now; };
  }
};

LogLimiter::Options Small() {
  LogLimiter::Options o;
  o.window_ms = 10000;
  o.per_key = 3;
  o.total = 10;
  o.max_keys = 4;
  return o;
}

int AdmitN(LogLimiter* l, const std::string& key, int n) {
  int logged = 0;
  for (int i = 0; i < n; i++) logged += l->Admit(key) ? 1 : 0;
  return logged;
}

TEST(LogLimiterTest, EachKeyLogsItsBurstPerWindowAndTheRestIsCounted) {
  FakeClock clock;
  LogLimiter l(Small(), clock.fn());
  EXPECT_EQ(AdmitN(&l, "a", 100), 3);
  EXPECT_EQ(AdmitN(&l, "b", 2), 2) << "another key has its own budget";
  EXPECT_EQ(l.suppressed(), 97u);
  EXPECT_TRUE(l.TakeSummaries().empty()) << "a's window is still open";

  clock.now += 10000;  // the window rolls over
  EXPECT_TRUE(l.Admit("a"));
  std::vector<LogLimiter::Summary> s = l.TakeSummaries();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].key, "a");
  EXPECT_EQ(s[0].suppressed, 97u);
  EXPECT_TRUE(l.TakeSummaries().empty()) << "reported once";
  EXPECT_EQ(AdmitN(&l, "a", 5), 2) << "a fresh window, one line already used";
}

TEST(LogLimiterTest, AKeyThatGoesQuietIsStillSummarized) {
  FakeClock clock;
  LogLimiter l(Small(), clock.fn());
  AdmitN(&l, "quiet", 10);
  clock.now += 10001;
  std::vector<LogLimiter::Summary> s = l.TakeSummaries();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].key, "quiet");
  EXPECT_EQ(s[0].suppressed, 7u);
  // A window without suppressed lines says nothing.
  AdmitN(&l, "fine", 2);
  clock.now += 10001;
  EXPECT_TRUE(l.TakeSummaries().empty());
}

TEST(LogLimiterTest, AllKeysTogetherShareATotalBudget) {
  FakeClock clock;
  LogLimiter::Options o = Small();
  o.max_keys = 100;
  LogLimiter l(o, clock.fn());
  int logged = 0;
  for (int k = 0; k < 50; k++) logged += AdmitN(&l, "key" + std::to_string(k), 3);
  EXPECT_EQ(logged, 10);
  EXPECT_EQ(l.suppressed(), 140u);
  clock.now += 10000;
  EXPECT_TRUE(l.Admit("key0")) << "the total budget is per window too";
}

TEST(LogLimiterTest, AFloodOfDistinctKeysStaysInABoundedTable) {
  FakeClock clock;
  LogLimiter l(Small(), clock.fn());  // max_keys 4
  int logged = 0;
  for (int k = 0; k < 100000; k++) logged += l.Admit("peer" + std::to_string(k)) ? 1 : 0;
  // 4 keys of their own, then one shared entry: 4 + 3 lines.
  EXPECT_EQ(logged, 7);
  EXPECT_EQ(l.suppressed(), 100000u - 7);
  std::vector<LogLimiter::Summary> s = l.TakeSummaries(/*all=*/true);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].key, LogLimiter::kOverflowKey);
  EXPECT_EQ(s[0].suppressed, 100000u - 7);
  // Once the windows end, new keys get entries of their own again.
  clock.now += 10000;
  EXPECT_TRUE(l.Admit("late"));
  EXPECT_EQ(AdmitN(&l, "late", 5), 2);
}

TEST(LogLimiterTest, ThreadsCountEveryLine) {
  LogLimiter l(Small());
  std::vector<std::thread> threads;
  std::atomic<int> logged{0};
  for (int t = 0; t < 4; t++)
    threads.emplace_back([&] { logged += AdmitN(&l, "same", 1000); });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(logged.load(), 3);
  EXPECT_EQ(l.suppressed(), 3997u);
  std::vector<LogLimiter::Summary> s = l.TakeSummaries(/*all=*/true);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].suppressed, 3997u);
}

}  // namespace
}  // namespace plasmon
