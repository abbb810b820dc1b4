// Clients killed with SIGKILL at any moment: the store releases what they
// held, aborts what they left unsealed, leaks no byte and keeps serving.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "core/allocator.h"
#include "plasmon/client.h"
#include "tests/child_process.h"
#include "tests/store_checks.h"
#include "tests/store_process.h"
#include "tests/versioned_object.h"

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


// ---- The shared-memory fast path (issue 12) ----

constexpr uint32_t kSharedKeys = 16;

ObjectID SharedKey(uint32_t key) {
  ObjectID id;
  std::snprintf(reinterpret_cast<char*>(id.mutable_data()), ObjectID::kSize, "crash-shared-%u", key);
  return id;
}

// What the children saw, in memory shared with the test.
struct FastPathCounters {
  std::atomic<uint64_t> gets{0};  // valid buffers of shared objects
  std::atomic<uint64_t> bad{0};   // of those, reads that were not what was sealed
};

// Creates a new version of shared object `key` (a child that deleted it
// puts it back; if another got there first, or it is still being deleted,
// nothing).
void RecreateShared(Client& c, uint32_t key, std::mt19937& r) {
  const uint64_t size = testing::kVersionedHeader + r() % (32 << 10);
  const uint64_t version = r();
  if (r() % 2) {
    auto b = c.Create(SharedKey(key), size);
    if (!b.ok()) return;
    testing::WriteVersioned(b->data, size, key, version);
    (void)c.Seal(SharedKey(key));
  } else {
    std::string bytes(size, '\0');
    testing::WriteVersioned(reinterpret_cast<uint8_t*>(bytes.data()), size, key, version);
    (void)c.CreateAndSeal(SharedKey(key), bytes);
  }
}

// A client's random work on the shared objects, through the fast path:
// gets (some held across iterations), releases, Contains, deletes and
// re-creations, and objects of its own created and sealed (or left unsealed),
// half of the clients in leases of arena space (killed holding one).
// Never returns: it is killed.
template <typename Checkpoint>
[[noreturn]] void FastPathChaos(const std::string& sock, uint32_t seed, FastPathCounters* n,
                                Checkpoint checkpoint) {
  std::mt19937 r(seed);
  Client c;
  ConnectOptions o;
  o.leased_creates = seed % 2 == 0;  // half of them place their small creates in a lease
  if (!c.Connect(sock, o).ok()) ::_exit(2);
  if (!c.shared_index()) ::_exit(3);
  checkpoint();
  std::vector<ObjectBuffer> held;
  std::vector<uint32_t> held_keys;
  for (;;) {
    switch (r() % 8) {
      case 0:
      case 1:
      case 2: {  // get 1-4 shared objects, check them, keep some
        std::vector<ObjectID> ids;
        std::vector<uint32_t> keys;
        for (uint32_t k = 0, count = 1 + r() % 4; k < count; k++) {
          keys.push_back(r() % kSharedKeys);
          ids.push_back(SharedKey(keys.back()));
        }
        auto got = c.Get(ids, 0);
        if (!got.ok()) ::_exit(4);
        for (size_t i = 0; i < ids.size(); i++) {
          const ObjectBuffer& b = (*got)[i];
          if (!b.valid()) continue;
          n->gets++;
          uint64_t v;
          if (!testing::CheckVersioned(b.data(), b.size(), keys[i], &v)) n->bad++;
          if (r() % 2 && held.size() < 32) {
            held.push_back(b);
            held_keys.push_back(keys[i]);
          }
        }
        break;
      }
      case 3:  // release one held (checked again first), by Release or by its buffer's end
        if (!held.empty()) {
          uint64_t v;
          if (!testing::CheckVersioned(held.back().data(), held.back().size(), held_keys.back(), &v))
            n->bad++;
          if (r() % 2) (void)c.Release(held.back().id());
          held.pop_back();
          held_keys.pop_back();
        }
        break;
      case 4:
        if (!c.Contains(SharedKey(r() % kSharedKeys)).ok()) ::_exit(5);
        break;
      case 5: {  // an object of its own: create, write, seal (or not)
        const ObjectID id = ObjectID::Random();
        const uint64_t size = 1 + r() % (64 << 10);
        auto b = c.Create(id, size);
        if (!b.ok()) break;
        std::memset(b->data, static_cast<int>(r()), size);
        if (r() % 4 != 0) (void)c.Seal(id);
        break;
      }
      case 6:
        (void)c.CreateAndSeal(ObjectID::Random(), std::string(r() % 8192, 'a'));
        break;
      case 7: {  // delete a shared object (held by others' pins, often) and put it back
        const uint32_t key = r() % kSharedKeys;
        if (!c.Delete({SharedKey(key)}).ok()) ::_exit(6);
        RecreateShared(c, key, r);
        break;
      }
    }
  }
}

// A smaller store: it fills, and evicts, within the test.
class FastPathCrashTest : public ClientCrashTest {
 protected:
  FastPathCrashTest() : ClientCrashTest({"-m", "32M"}) {}
};

// Clients working through the fast path are SIGKILLed at random moments,
// 1200 times, eight at once: their pins end with them, what they
// created unsealed is aborted, no byte leaks, nothing stays referenced, and
// every object can be evicted afterwards.

TEST_F(FastPathCrashTest, ClientsKilledAtRandomLeakNothingAndHoldNothing) {
  testing::SharedMemory<FastPathCounters> n;
  ASSERT_TRUE(n.ok());
  std::mt19937 rng(4242);
  for (uint32_t k = 0; k < kSharedKeys; k++) RecreateShared(observer_, k, rng);
  const int rounds = testing::kUnderSanitizer ? 20 : 150;
  constexpr int kChildren = 8;
  int kills = 0;
  const std::string sock = store_.socket();
  for (int round = 0; round < rounds; round++) {
    std::vector<uint32_t> seeds;
    for (int k = 0; k < kChildren; k++) seeds.push_back(static_cast<uint32_t>(rng()));
    std::vector<pid_t> kids = testing::SpawnManyUntilCheckpoint(kChildren, [&](int i, auto checkpoint) {
      FastPathChaos(sock, seeds[i], &*n, checkpoint);
    });
    if (std::count(kids.begin(), kids.end(), -1) > 0) {
      for (pid_t pid : kids)
        if (pid > 0) Kill(pid);
      FAIL() << "a child failed before its checkpoint";
    }
    // Each is killed somewhere in its loop.
    for (pid_t pid : kids) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 600));
      Kill(pid);
      kills++;
    }
  }
  WaitForCleanup();
  auto stats = observer_.Stats();
  ASSERT_TRUE(stats.ok());
  std::printf("%d kills; %lu gets of shared objects (%lu by the shared index); %lu objects, %lu "
              "evictions\n",
              kills, n->gets.load(), stats->shm_gets, stats->object_count, stats->evictions);
  EXPECT_EQ(n->bad.load(), 0u) << "reads that were not the bytes sealed under their ID";
  EXPECT_GT(n->gets.load(), 0u);
  EXPECT_GT(stats->shm_gets, 0u) << "no get went through the shared index";
  EXPECT_GT(stats->sealed_count, 0u);
  testing::ExpectExactAccounts(observer_);
  testing::ExpectAllEvictable(observer_);
  // And it still serves, by the fast path too.
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(observer_.CreateAndSeal(id, "alive").ok());
  EXPECT_EQ((*observer_.Get({id}, 0))[0].view(), "alive");
  EXPECT_EQ(observer_.Stats()->shm_gets, stats->shm_gets + 1);
}

}  // namespace
}  // namespace plasmon
