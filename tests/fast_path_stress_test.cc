// The shared-memory fast path (issue 12) under load, with real processes:
// readers get and release a few IDs at full speed through the shared index
// while a writer deletes and re-creates the same IDs with new contents and a
// filler makes the store evict. Every read must be exactly the bytes sealed
// under that ID (each version checks itself: tests/versioned_object.h), and
// never older than a version the reader already saw (a Delete that returned
// hides the object from every later get).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "plasmon/client.h"
#include "tests/child_process.h"
#include "tests/store_checks.h"
#include "tests/store_process.h"
#include "tests/versioned_object.h"

namespace plasmon {
namespace {

using testing::CheckVersioned;
using testing::ExitCode;
using testing::Spawn;
using testing::WriteVersioned;

constexpr uint32_t kKeys = 8;

ObjectID KeyId(uint32_t key) {
  ObjectID id;
  std::snprintf(reinterpret_cast<char*>(id.mutable_data()), ObjectID::kSize, "fp-stress-%u", key);
  return id;
}

// Sizes from 1 KiB to 61 KiB, changing with every version.
uint64_t VersionSize(uint64_t version) { return 1024 + version * 4099 % 61440; }

// What the children count, in memory shared with the test.
struct Counters {
  std::atomic<bool> stop{false};
  // readers
  std::atomic<uint64_t> gets{0};      // valid buffers got
  std::atomic<uint64_t> misses{0};    // not there (deleted or evicted)
  std::atomic<uint64_t> checks{0};    // reads that checked out (each buffer twice)
  std::atomic<uint64_t> bad{0};       // reads that did not
  std::atomic<uint64_t> stale{0};     // a version older than one seen before
  std::atomic<uint64_t> contains{0};
  // writer
  std::atomic<uint64_t> creates{0};
  std::atomic<uint64_t> deletes_ok{0}, deletes_in_use{0}, deletes_gone{0};
  // filler
  std::atomic<uint64_t> fills{0};
};

// Gets 1-3 keys at once, checks them, holds them a little, checks them again
// while still held, and lets them go.
void ReaderLoop(const std::string& sock, uint32_t seed, Counters* n) {
  Client c;
  if (!c.Connect(sock).ok()) ::_exit(2);
  if (!c.shared_index()) ::_exit(3);
  std::mt19937 r(seed);
  std::vector<uint64_t> seen(kKeys, 0);
  while (!n->stop.load(std::memory_order_relaxed)) {
    std::vector<ObjectID> ids;
    std::vector<uint32_t> keys;
    for (uint32_t k = 0, count = 1 + r() % 3; k < count; k++) {
      keys.push_back(r() % kKeys);
      ids.push_back(KeyId(keys.back()));
    }
    auto got = c.Get(ids, 0);
    if (!got.ok()) ::_exit(4);
    for (size_t i = 0; i < ids.size(); i++) {
      const ObjectBuffer& b = (*got)[i];
      if (!b.valid()) {
        n->misses++;
        continue;
      }
      n->gets++;
      uint64_t v;
      if (!CheckVersioned(b.data(), b.size(), keys[i], &v)) {
        n->bad++;
      } else if (v < seen[keys[i]]) {
        n->stale++;
      } else {
        seen[keys[i]] = v;
        n->checks++;
      }
    }
    if (r() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(r() % 200));
    for (size_t i = 0; i < ids.size(); i++) {  // still intact while held
      const ObjectBuffer& b = (*got)[i];
      uint64_t v;
      if (b.valid()) (CheckVersioned(b.data(), b.size(), keys[i], &v) ? n->checks : n->bad)++;
    }
    got->clear();  // the release: unpin
    if (r() % 8 == 0) {
      if (!c.Contains(KeyId(r() % kKeys)).ok()) ::_exit(5);
      n->contains++;
    }
  }
  ::_exit(0);
}

// Creates version v of `key`, waiting while the previous one is still
// being deleted (a pin holds it). Half by Create/write/Seal, half by
// CreateAndSeal.
void CreateVersion(Client& c, uint32_t key, uint64_t v, Counters* n) {
  const ObjectID id = KeyId(key);
  const uint64_t size = VersionSize(v);
  while (!n->stop.load(std::memory_order_relaxed)) {
    Status st;
    if (v % 2 == 0) {
      auto b = c.Create(id, size);
      st = b.status();
      if (b.ok()) {
        WriteVersioned(b->data, size, key, v);
        if (!c.Seal(id).ok()) ::_exit(6);
      }
    } else {
      std::string bytes(size, '\0');
      WriteVersioned(reinterpret_cast<uint8_t*>(bytes.data()), size, key, v);
      st = c.CreateAndSeal(id, bytes);
    }
    if (st.ok()) {
      n->creates++;
      return;
    }
    if (st.code() != StatusCode::kObjectExists && st.code() != StatusCode::kOutOfMemory) ::_exit(7);
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void WriterLoop(const std::string& sock, uint32_t seed, Counters* n) {
  Client c;
  if (!c.Connect(sock).ok()) ::_exit(2);
  std::mt19937 r(seed);
  std::vector<uint64_t> version(kKeys, 1);
  for (uint32_t k = 0; k < kKeys; k++) CreateVersion(c, k, version[k], n);
  while (!n->stop.load(std::memory_order_relaxed)) {
    const uint32_t key = r() % kKeys;
    auto del = c.Delete({KeyId(key)});
    if (!del.ok()) ::_exit(8);
    switch ((*del)[0].code()) {
      case StatusCode::kOk: n->deletes_ok++; break;
      case StatusCode::kObjectInUse: n->deletes_in_use++; break;
      case StatusCode::kObjectNotFound: n->deletes_gone++; break;  // evicted
      default: ::_exit(9);
    }
    CreateVersion(c, key, ++version[key], n);
    std::this_thread::sleep_for(std::chrono::microseconds(r() % 300));
  }
  ::_exit(0);
}

// Objects of 256 KiB, never deleted: the store must evict to take them.
// Now and then it asks to evict everything, so that the readers' objects
// are taken too whenever no pin holds them (the readers keep them young:
// eviction for room alone would never choose them).
void FillerLoop(const std::string& sock, Counters* n) {
  Client c;
  if (!c.Connect(sock).ok()) ::_exit(2);
  const std::string bytes(256 << 10, 'f');
  for (uint64_t i = 0; !n->stop.load(std::memory_order_relaxed); i++) {
    Status st = c.CreateAndSeal(ObjectID::Random(), bytes);
    if (!st.ok() && st.code() != StatusCode::kOutOfMemory) ::_exit(10);
    if (st.ok()) n->fills++;
    if (i % 8 == 7 && !c.Evict(8 << 20).ok()) ::_exit(11);
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  ::_exit(0);
}

TEST(FastPathStressTest, ReadersSeeExactlyTheSealedBytesWhileObjectsAreDeletedAndEvicted) {
  testing::StoreProcess store({"-m", "8M"});
  ASSERT_TRUE(store.started());
  testing::SharedMemory<Counters> n;
  ASSERT_TRUE(n.ok());
  const std::string sock = store.socket();
  std::vector<pid_t> kids;
  for (uint32_t i = 0; i < 3; i++) kids.push_back(Spawn([&, i] { ReaderLoop(sock, 100 + i, &*n); }));
  kids.push_back(Spawn([&] { WriterLoop(sock, 7, &*n); }));
  kids.push_back(Spawn([&] { FillerLoop(sock, &*n); }));
  std::this_thread::sleep_for(std::chrono::seconds(testing::kUnderSanitizer ? 3 : 5));
  n->stop = true;
  for (pid_t pid : kids) EXPECT_EQ(ExitCode(pid), 0) << "child " << pid;

  Client observer;
  ASSERT_TRUE(observer.Connect(store.socket()).ok());
  auto stats = observer.Stats();
  ASSERT_TRUE(stats.ok());
  std::printf("gets %lu (shm %lu), misses %lu, checks %lu, contains %lu; creates %lu, deletes: "
              "%lu ok, %lu in use, %lu gone; fills %lu, evictions %lu\n",
              n->gets.load(), stats->shm_gets, n->misses.load(), n->checks.load(),
              n->contains.load(), n->creates.load(), n->deletes_ok.load(),
              n->deletes_in_use.load(), n->deletes_gone.load(), n->fills.load(), stats->evictions);
  EXPECT_EQ(n->bad.load(), 0u) << "reads that were not the bytes sealed under their ID";
  EXPECT_EQ(n->stale.load(), 0u) << "reads of a version older than one seen before";
  EXPECT_EQ(n->checks.load(), 2 * n->gets.load());
  EXPECT_GT(n->gets.load(), 0u);
  // Most gets are served by the shared index (the others: an object caught
  // going, or a pin that did not revalidate).
  EXPECT_GT(stats->shm_gets, n->gets.load() / 2);
  EXPECT_GT(stats->shm_contains, 0u);
  EXPECT_GT(n->creates.load(), kKeys);
  EXPECT_GT(n->deletes_in_use.load(), 0u) << "no delete found its object held";
  EXPECT_GT(n->deletes_ok.load(), 0u);
  EXPECT_GT(stats->evictions, 0u);
  EXPECT_GT(n->deletes_gone.load(), 0u) << "the readers' objects were never evicted";
  testing::ExpectExactAccounts(observer);
  testing::ExpectAllEvictable(observer);
}

}  // namespace
}  // namespace plasmon
