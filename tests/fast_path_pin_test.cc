// A pin taken through the shared index (issue 12) holds its object as a
// reference does: no eviction takes it, a Delete hides it but frees nothing
// until it is released, and the bytes stay intact meanwhile. A SIGKILLed
// holder's pins end as soon as the store sees its connection close.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/allocator.h"
#include "plasmon/client.h"
#include "tests/child_process.h"
#include "tests/store_checks.h"
#include "tests/store_process.h"
#include "tests/versioned_object.h"

namespace plasmon {
namespace {

using testing::CheckVersioned;

constexpr uint64_t kMiB = 1 << 20;

// A sealed object of `size` bytes, version 1 of key `key`.
void Put(Client& c, const ObjectID& id, uint64_t size, uint32_t key) {
  auto b = c.Create(id, size);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  testing::WriteVersioned(b->data, size, key, 1);
  ASSERT_TRUE(c.Seal(id).ok());
}

bool Intact(const ObjectBuffer& b, uint32_t key) {
  uint64_t v = 0;
  return CheckVersioned(b.data(), b.size(), key, &v) && v == 1;
}

const ObjectInfo* Find(const std::vector<ObjectInfo>& list, const ObjectID& id) {
  for (const ObjectInfo& o : list)
    if (o.id == id) return &o;
  return nullptr;
}

TEST(FastPathPinTest, AHeldPinKeepsItsObjectFromEvictionAndDeleteUntilReleased) {
  testing::StoreProcess store({"-m", "8M"});
  ASSERT_TRUE(store.started());
  Client observer, reader;
  ASSERT_TRUE(observer.Connect(store.socket()).ok());
  ASSERT_TRUE(reader.Connect(store.socket()).ok());
  ASSERT_TRUE(reader.shared_index());
  const ObjectID x = ObjectID::Random(), y = ObjectID::Random();
  Put(observer, x, kMiB, 1);
  Put(observer, y, kMiB, 2);

  const uint64_t gets_before = observer.Stats()->shm_gets;
  auto got = reader.Get({x}, 0);
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE((*got)[0].valid());
  const ObjectBuffer& held = (*got)[0];
  EXPECT_EQ(observer.Stats()->shm_gets, gets_before + 1) << "the get did not take the fast path";
  EXPECT_TRUE(Intact(held, 1));

  // Eviction takes what is not pinned, and only that.
  auto cap = observer.Stats()->capacity;
  auto freed = observer.Evict(cap);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(*freed, Allocator::RoundUp(kMiB));
  auto list = observer.List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  ASSERT_NE(Find(*list, x), nullptr);
  EXPECT_EQ(Find(*list, x)->ref_count, 1u) << "the pin counts as a reference";
  EXPECT_TRUE(Intact(held, 1));

  // Delete hides it at once, and frees nothing while the pin stands.
  auto del = observer.Delete({x});
  ASSERT_TRUE(del.ok());
  EXPECT_EQ((*del)[0].code(), StatusCode::kObjectInUse);
  EXPECT_FALSE(*observer.Contains(x));
  auto again = observer.Get({x}, 0);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)[0].valid()) << "a deleted object was got again";
  // Fill the rest of the arena with objects that cannot be evicted
  // (unsealed), written all over: the held bytes stay what was sealed.
  std::vector<ObjectID> fill;
  for (int i = 0; i < 16; i++) {
    const ObjectID id = ObjectID::Random();
    auto b = observer.Create(id, kMiB);
    if (!b.ok()) {
      EXPECT_EQ(b.status().code(), StatusCode::kOutOfMemory) << b.status().ToString();
      break;
    }
    std::memset(b->data, 0xee, kMiB);
    fill.push_back(id);
  }
  ASSERT_LT(fill.size(), 16u) << "the arena never filled";
  EXPECT_TRUE(Intact(held, 1)) << "the memory of a pinned object was reused";
  EXPECT_EQ(observer.Stats()->object_count, fill.size() + 1);

  // Released: the object goes, and its memory is free for the next Create.
  got->clear();
  ASSERT_TRUE(reader.Stats().ok());  // the release rides along with the reader's next request
  auto st = observer.Stats();
  EXPECT_EQ(st->object_count, fill.size());
  EXPECT_EQ(st->used, fill.size() * Allocator::RoundUp(kMiB));
  EXPECT_EQ(Find(*observer.List(), x), nullptr);
  auto reuse = observer.Create(ObjectID::Random(), kMiB);
  EXPECT_TRUE(reuse.ok()) << reuse.status().ToString();
}

TEST(FastPathPinTest, AKilledHoldersPinsEndWhenItsConnectionCloses) {
  testing::StoreProcess store({"-m", "8M"});
  ASSERT_TRUE(store.started());
  Client observer;
  ASSERT_TRUE(observer.Connect(store.socket()).ok());
  const ObjectID x = ObjectID::Random(), y = ObjectID::Random();
  Put(observer, x, kMiB, 1);
  Put(observer, y, kMiB, 2);
  const std::string sock = store.socket();
  pid_t pid = testing::SpawnUntilCheckpoint([&](auto checkpoint) {
    Client c;
    if (!c.Connect(sock).ok()) ::_exit(2);
    if (!c.shared_index()) ::_exit(3);
    auto got = c.Get({x, y}, 0);
    if (!got.ok() || !(*got)[0].valid() || !(*got)[1].valid()) ::_exit(4);
    if (!Intact((*got)[0], 1) || !Intact((*got)[1], 2)) ::_exit(5);
    checkpoint();
    testing::HangForever();
  });
  ASSERT_GT(pid, 0) << "the child failed before its checkpoint";
  EXPECT_EQ(observer.Stats()->shm_gets, 2u) << "the child's gets did not take the fast path";
  // Held by the child's pins: x is deleted (pending), y cannot be evicted.
  auto del = observer.Delete({x});
  ASSERT_TRUE(del.ok());
  EXPECT_EQ((*del)[0].code(), StatusCode::kObjectInUse);
  EXPECT_EQ(*observer.Evict(8 * kMiB), 0u);
  EXPECT_EQ(observer.Stats()->object_count, 2u);

  testing::Kill(pid);
  testing::WaitForOnlyClient(observer);
  // The moment the store has closed the connection, and with no wait after:
  // x is gone, and y is free to evict.
  auto st = observer.Stats();
  EXPECT_EQ(st->object_count, 1u);
  EXPECT_EQ(st->used, Allocator::RoundUp(kMiB));
  auto list = observer.List();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, y);
  EXPECT_EQ((*list)[0].ref_count, 0u);
  testing::ExpectAllEvictable(observer);
}

}  // namespace
}  // namespace plasmon
