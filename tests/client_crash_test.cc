// Clients killed with SIGKILL at any moment: the store releases what they
// held, aborts what they left unsealed, leaks no byte and keeps serving.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "core/allocator.h"
#include "plasmon/client.h"
#include "tests/child_process.h"
#include "tests/store_checks.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using testing::StoreProcess;

using testing::HangForever;
using testing::Kill;
using testing::Spawn;
using testing::SpawnUntilCheckpoint;

class ClientCrashTest : public ::testing::Test {
 protected:
  explicit ClientCrashTest(std::vector<std::string> store_args = {"-m", "256M"})
      : store_(std::move(store_args)) {}

  void SetUp() override {
    ASSERT_TRUE(store_.started());
    ASSERT_TRUE(observer_.Connect(store_.socket()).ok());
  }

  void WaitForCleanup() { testing::WaitForOnlyClient(observer_); }

  // Nothing leaked: no unsealed object, no reference, and the used bytes are
  // exactly those of the sealed objects that remain; deleting everything
  // returns every byte.
  void ExpectNoLeak() {
    testing::ExpectExactAccounts(observer_);
    auto list = observer_.List();
    ASSERT_TRUE(list.ok());
    std::vector<ObjectID> ids;
    for (const ObjectInfo& o : *list) ids.push_back(o.id);
    for (size_t i = 0; i < ids.size(); i += 1000) {
      std::vector<ObjectID> batch(ids.begin() + i, ids.begin() + std::min(ids.size(), i + 1000));
      ASSERT_TRUE(observer_.Delete(batch).ok());
    }
    EXPECT_EQ(observer_.Stats()->used, 0u);
  }

  StoreProcess store_;
  Client observer_;
};

TEST_F(ClientCrashTest, KilledDuringCreateAbortsTheUnsealedObject) {
  for (int round = 0; round < 20; round++) {
    std::string sock = store_.socket();
    pid_t pid = SpawnUntilCheckpoint([&](auto checkpoint) {
      Client c;
      if (!c.Connect(sock).ok()) ::_exit(2);
      auto b = c.Create(ObjectID::Random(), 1 << 20);
      if (!b.ok()) ::_exit(2);
      std::memset(b->data, 7, 4096);  // half-written
      checkpoint();
      HangForever();
    });
    ASSERT_GT(pid, 0) << "the child failed before its checkpoint";
    EXPECT_EQ(observer_.Stats()->object_count, 1u);
    Kill(pid);
    WaitForCleanup();
    EXPECT_EQ(observer_.Stats()->object_count, 0u);
    EXPECT_EQ(observer_.Stats()->used, 0u);
  }
}

TEST_F(ClientCrashTest, KilledWhileHoldingReferencesReleasesThem) {
  std::vector<ObjectID> ids;
  for (int i = 0; i < 5; i++) {
    ids.push_back(ObjectID::Random());
    ASSERT_TRUE(observer_.CreateAndSeal(ids.back(), "held").ok());
  }
  for (int round = 0; round < 20; round++) {
    std::string sock = store_.socket();
    pid_t pid = SpawnUntilCheckpoint([&](auto checkpoint) {
      Client c;
      if (!c.Connect(sock).ok()) ::_exit(2);
      auto a = c.Get(ids, 0);
      auto b = c.Get(ids, 0);  // two references each
      if (!a.ok() || !b.ok()) ::_exit(2);
      checkpoint();
      HangForever();
    });
    ASSERT_GT(pid, 0) << "the child failed before its checkpoint";
    for (const ObjectInfo& o : *observer_.List()) EXPECT_EQ(o.ref_count, 2u);
    Kill(pid);
    WaitForCleanup();
    for (const ObjectInfo& o : *observer_.List()) EXPECT_EQ(o.ref_count, 0u);
  }
  // Unreferenced again, so evictable again.
  EXPECT_GT(*observer_.Evict(1), 0u);
}

TEST_F(ClientCrashTest, KilledWhileWaitingInGetLeavesNoWaiterBehind) {
  ObjectID later = ObjectID::Random();
  std::string sock = store_.socket();
  pid_t pid = SpawnUntilCheckpoint([&](auto checkpoint) {
    Client c;
    if (!c.Connect(sock).ok()) ::_exit(2);
    checkpoint();
    auto got = c.Get({later}, -1);  // waits forever
    ::_exit(got.ok() ? 0 : 2);
  });
  ASSERT_GT(pid, 0) << "the child failed before its checkpoint";
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Kill(pid);
  WaitForCleanup();
  // The seal that the dead client waited for finds nobody to serve.
  ASSERT_TRUE(observer_.CreateAndSeal(later, "x").ok());
  auto list = observer_.List();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].ref_count, 0u);
}

// Many clients doing random work, killed at random moments, many times.
TEST_F(ClientCrashTest, RandomKillsLeakNothing) {
  std::mt19937 rng(12345);
  constexpr int kRounds = 40, kChildren = 3;
  for (int round = 0; round < kRounds; round++) {
    std::vector<pid_t> kids;
    for (int k = 0; k < kChildren; k++) {
      uint32_t seed = static_cast<uint32_t>(rng());
      std::string sock = store_.socket();
      kids.push_back(Spawn([sock, seed] {
        std::mt19937 r(seed);
        Client c;
        if (!c.Connect(sock).ok()) ::_exit(2);
        std::vector<ObjectID> mine;
        std::vector<ObjectBuffer> held;
        for (;;) {
          ObjectID id = ObjectID::Random();
          uint64_t size = 1ull << (r() % 21);  // 1 B to 1 MiB
          switch (r() % 5) {
            case 0:
            case 1: {  // create, write, maybe seal
              auto b = c.Create(id, size, "meta");
              if (!b.ok()) break;
              std::memset(b->data, static_cast<int>(r()), size);
              if (r() % 4 != 0 && c.Seal(id).ok()) mine.push_back(id);
              break;
            }
            case 2:
              if (c.CreateAndSeal(id, std::string(size % 4096, 'c')).ok()) mine.push_back(id);
              break;
            case 3:
              if (!mine.empty()) {
                auto g = c.Get({mine[r() % mine.size()]}, 0);
                if (g.ok() && (*g)[0].valid()) held.push_back((*g)[0]);
              }
              break;
            case 4:
              if (!held.empty() && r() % 2) held.pop_back();
              if (!mine.empty() && r() % 3 == 0) (void)c.Delete({mine[r() % mine.size()]});
              break;
          }
        }
      }));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 30000));
    for (pid_t pid : kids) {
      Kill(pid);
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    }
  }
  WaitForCleanup();
  EXPECT_GT(observer_.Stats()->sealed_count, 0u) << "the children never got to seal anything";
  ExpectNoLeak();
  // And it still serves.
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(observer_.CreateAndSeal(id, "alive").ok());
  EXPECT_EQ((*observer_.Get({id}, 0))[0].view(), "alive");
}


}  // namespace
}  // namespace plasmon
