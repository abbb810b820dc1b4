#include "store/object_table.h"

#include <gtest/gtest.h>

#include <vector>

#include "core/digest.h"

namespace plasmon {
namespace {

// Records what the table reports.
struct Recorder : TableListener {
  std::vector<Notification> events;
  void OnSealed(const ObjectEntry& e) override {
    events.push_back({Notification::Kind::kSealed, e.id, e.data_size, e.metadata_size});
  }
  void OnRemoved(const ObjectEntry& e, Notification::Kind kind) override {
    events.push_back({kind, e.id, e.data_size, e.metadata_size});
  }
};

class ObjectTableTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kCapacity = 64 * 1024;
  ObjectTableTest() : memory_(kCapacity), table_(memory_.data(), kCapacity, &rec_) {}

  ObjectID Put(uint64_t size, uint32_t client = 1) {
    ObjectID id = ObjectID::Random();
    auto e = table_.Create(id, size, 0, client);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_TRUE(table_.Seal(id, client).ok());
    return id;
  }

  std::vector<uint8_t> memory_;
  Recorder rec_;
  ObjectTable table_;
};

TEST_F(ObjectTableTest, CreateThenSealMakesTheObjectVisible) {
  ObjectID id = ObjectID::Random();
  auto e = table_.Create(id, 100, 10, 7);
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE((*e)->visible());
  EXPECT_EQ((*e)->offset % 64, 0u);
  ASSERT_TRUE(table_.Seal(id, 7).ok());
  EXPECT_TRUE(table_.Find(id)->visible());
  ASSERT_EQ(rec_.events.size(), 1u);
  EXPECT_EQ(rec_.events[0].kind, Notification::Kind::kSealed);
  EXPECT_EQ(rec_.events[0].data_size, 100u);
  EXPECT_EQ(rec_.events[0].metadata_size, 10u);
}

TEST_F(ObjectTableTest, DuplicateIdIsObjectExists) {
  ObjectID id = Put(10);
  EXPECT_TRUE(table_.Create(id, 10, 0, 1).status().IsObjectExists());
}

TEST_F(ObjectTableTest, OnlyTheCreatorSealsOrAborts) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(table_.Create(id, 10, 0, 1).ok());
  EXPECT_TRUE(table_.Seal(id, 2).IsInvalidArgument());
  EXPECT_TRUE(table_.Abort(id, 2).IsInvalidArgument());
  EXPECT_TRUE(table_.Seal(id, 1).ok());
  EXPECT_EQ(table_.Seal(id, 1).code(), StatusCode::kAlreadySealed);
  EXPECT_EQ(table_.Abort(id, 1).code(), StatusCode::kAlreadySealed);
  EXPECT_TRUE(table_.Seal(ObjectID::Random(), 1).IsObjectNotFound());
}

TEST_F(ObjectTableTest, AbortFreesTheMemory) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(table_.Create(id, 1000, 0, 1).ok());
  EXPECT_GT(table_.Stats().used, 0u);
  ASSERT_TRUE(table_.Abort(id, 1).ok());
  EXPECT_EQ(table_.Stats().used, 0u);
  EXPECT_EQ(table_.Find(id), nullptr);
  EXPECT_TRUE(rec_.events.empty());  // never visible, nothing to report
}

TEST_F(ObjectTableTest, DigestIsXxh3OfDataThenMetadata) {
  ObjectID id = ObjectID::Random();
  auto e = table_.Create(id, 5, 3, 1);
  ASSERT_TRUE(e.ok());
  std::memcpy(memory_.data() + (*e)->offset, "helloabc", 8);
  ASSERT_TRUE(table_.Seal(id, 1).ok());
  ObjectEntry* entry = table_.Find(id);
  ASSERT_TRUE(entry->digest_valid);
  const uint8_t* p = reinterpret_cast<const uint8_t*>("helloabc");
  EXPECT_EQ(entry->digest, ObjectDigest(p, 5, p + 5, 3));
}

TEST(ObjectTableLargeTest, LargeObjectsGetTheirDigestWhenFirstNeeded) {
  constexpr uint64_t kSize = ObjectTable::kDigestAtSealMax + 1;
  std::vector<uint8_t> memory(2 * kSize);
  Recorder rec;
  ObjectTable table(memory.data(), memory.size(), &rec);
  ObjectID id = ObjectID::Random();
  auto e = table.Create(id, kSize, 0, 1);
  ASSERT_TRUE(e.ok());
  for (uint64_t i = 0; i < kSize; i++) memory[(*e)->offset + i] = static_cast<uint8_t>(i * 31);
  ASSERT_TRUE(table.Seal(id, 1).ok());
  EXPECT_FALSE((*e)->digest_valid);  // not paid for at seal
  uint64_t d = table.EnsureDigest(*e);
  EXPECT_TRUE((*e)->digest_valid);
  EXPECT_EQ(d, ObjectDigest(memory.data() + (*e)->offset, kSize, nullptr, 0));
}

TEST_F(ObjectTableTest, CreateEvictsLeastRecentlyUsedFirst) {
  // Four 16 KiB objects fill the table.
  ObjectID a = Put(16384), b = Put(16384), c = Put(16384), d = Put(16384);
  // Touch `a` so that `b` becomes the oldest.
  table_.AddRef(table_.Find(a));
  table_.Release(table_.Find(a));
  rec_.events.clear();
  ObjectID e = Put(16384);
  EXPECT_EQ(table_.Find(b), nullptr);
  for (const ObjectID& id : {a, c, d, e}) EXPECT_NE(table_.Find(id), nullptr);
  ASSERT_GE(rec_.events.size(), 1u);
  EXPECT_EQ(rec_.events[0].kind, Notification::Kind::kEvicted);
  EXPECT_EQ(rec_.events[0].id, b);
  EXPECT_EQ(table_.Stats().evictions, 1u);
}

TEST_F(ObjectTableTest, ReferencedAndUnsealedObjectsAreNeverEvicted) {
  ObjectID held = Put(16384);
  table_.AddRef(table_.Find(held));
  ObjectID unsealed = ObjectID::Random();
  ASSERT_TRUE(table_.Create(unsealed, 16384, 0, 1).ok());
  ObjectID free1 = Put(16384);
  // 48 KiB in use, 16 KiB free: a 32 KiB create must evict free1 only.
  ASSERT_TRUE(table_.Create(ObjectID::Random(), 32768, 0, 1).ok());
  EXPECT_EQ(table_.Find(free1), nullptr);
  EXPECT_NE(table_.Find(held), nullptr);
  EXPECT_NE(table_.Find(unsealed), nullptr);
  // Now nothing is evictable.
  auto r = table_.Create(ObjectID::Random(), 64, 0, 1);
  EXPECT_TRUE(r.status().IsOutOfMemory()) << r.status().ToString();
}

// Eight 8 KiB objects fill the table; every other one is referenced, so no
// two free neighbours can ever meet: 32 KiB are evictable, but no more than
// 8 KiB in one piece.
TEST_F(ObjectTableTest, CreateThatEvictionCannotPlaceFailsAtOnceAndKeepsTheCache) {
  std::vector<ObjectID> held, evictable;
  for (int i = 0; i < 8; i++) {
    ObjectID id = Put(8192);
    if (i % 2 == 0) {
      table_.AddRef(table_.Find(id));
      held.push_back(id);
    } else {
      evictable.push_back(id);
    }
  }
  rec_.events.clear();
  // 32 KiB evictable, yet fragmented: 16 KiB cannot fit, and nothing goes.
  auto r = table_.Create(ObjectID::Random(), 16384, 0, 1);
  EXPECT_TRUE(r.status().IsOutOfMemory()) << r.status().ToString();
  EXPECT_EQ(table_.Stats().evictions, 0u);
  EXPECT_TRUE(rec_.events.empty());
  for (const ObjectID& id : evictable) EXPECT_NE(table_.Find(id), nullptr);
  // More than all the evictable bytes: the same.
  r = table_.Create(ObjectID::Random(), 40000, 0, 1);
  EXPECT_TRUE(r.status().IsOutOfMemory()) << r.status().ToString();
  EXPECT_EQ(table_.Stats().evictions, 0u);
  // What one eviction places still evicts, the oldest only.
  ASSERT_TRUE(table_.Create(ObjectID::Random(), 8192, 0, 1).ok());
  EXPECT_EQ(table_.Find(evictable[0]), nullptr);
  for (size_t i = 1; i < evictable.size(); i++) EXPECT_NE(table_.Find(evictable[i]), nullptr);
  EXPECT_EQ(table_.Stats().evictions, 1u);
}

// A Create that can never fit is refused without walking the eviction list
// each time: when free plus evictable bytes are too few, at once; when they
// are enough but too fragmented, from the verdict of the first walk, kept
// until the arena or the eviction list changes.
TEST_F(ObjectTableTest, RepeatedImpossibleCreatesDoNotEachWalkTheEvictionList) {
  std::vector<ObjectID> held;
  for (int i = 0; i < 64; i++) {  // 1 KiB each: the table is full
    ObjectID id = Put(1024);
    if (i % 2 == 1) {
      table_.AddRef(table_.Find(id));
      held.push_back(id);
    }
  }
  const uint64_t walks = table_.plan_walks();
  // 32 KiB evictable, but in 1 KiB pieces: 2 KiB never fits.
  for (int i = 0; i < 100; i++)
    ASSERT_TRUE(table_.Create(ObjectID::Random(), 2048, 0, 1).status().IsOutOfMemory());
  EXPECT_LE(table_.plan_walks() - walks, 1u);
  // More than free and evictable bytes together: no walk at all.
  const uint64_t walks2 = table_.plan_walks();
  for (int i = 0; i < 100; i++)
    ASSERT_TRUE(table_.Create(ObjectID::Random(), 40000, 0, 1).status().IsOutOfMemory());
  EXPECT_EQ(table_.plan_walks(), walks2);
  EXPECT_EQ(table_.Stats().evictions, 0u);
  // A release changes the verdict: two neighbours and it make 3 KiB.
  table_.Release(table_.Find(held[10]));
  ASSERT_TRUE(table_.Create(ObjectID::Random(), 2048, 0, 1).ok());
  EXPECT_GT(table_.Stats().evictions, 0u);
}

// Freeing in LRU order until a piece is large enough: the two neighbours at
// the end are evicted, and so is the oldest one before them (it was first in
// line), but not the younger ones after them.
TEST_F(ObjectTableTest, CreateEvictsInLruOrderUntilOnePieceFits) {
  std::vector<ObjectID> ids;
  for (int i = 0; i < 8; i++) ids.push_back(Put(8192));
  // Referenced: 1, 3 and 5; evictable in LRU order: 0, 6, 7, 2, 4.
  for (int i : {1, 3, 5}) table_.AddRef(table_.Find(ids[i]));
  for (int i : {2, 4}) {
    table_.AddRef(table_.Find(ids[i]));
    table_.Release(table_.Find(ids[i]));
  }
  ASSERT_TRUE(table_.Create(ObjectID::Random(), 16384, 0, 1).ok());
  for (int i : {0, 6, 7}) EXPECT_EQ(table_.Find(ids[i]), nullptr) << i;
  for (int i : {1, 2, 3, 4, 5}) EXPECT_NE(table_.Find(ids[i]), nullptr) << i;
  EXPECT_EQ(table_.Stats().evictions, 3u);
}

TEST_F(ObjectTableTest, CreateOverAQuotaThatEvictionCannotFreeKeepsTheQuotasObjects) {
  ASSERT_TRUE(table_.SetQuota(5, 16384).ok());
  ObjectID held = Put(8192, 5), cached = Put(8192, 5);
  table_.AddRef(table_.Find(held));
  auto r = table_.Create(ObjectID::Random(), 16384, 0, 5);
  EXPECT_TRUE(r.status().IsOutOfMemory()) << r.status().ToString();
  EXPECT_NE(table_.Find(cached), nullptr);
  EXPECT_EQ(table_.Stats().evictions, 0u);
  ASSERT_TRUE(table_.Create(ObjectID::Random(), 8192, 0, 5).ok());
  EXPECT_EQ(table_.Find(cached), nullptr);
}

TEST_F(ObjectTableTest, ObjectLargerThanCapacityFailsAtOnce) {
  ObjectID keep = Put(1000);
  auto r = table_.Create(ObjectID::Random(), kCapacity + 1, 0, 1);
  EXPECT_TRUE(r.status().IsOutOfMemory());
  EXPECT_NE(r.status().message().find("larger than the store's capacity"), std::string::npos);
  EXPECT_NE(table_.Find(keep), nullptr);  // nothing was evicted for it
  auto overflow = table_.Create(ObjectID::Random(), UINT64_MAX, 2, 1);
  EXPECT_TRUE(overflow.status().IsOutOfMemory());
}

TEST_F(ObjectTableTest, DeleteOfReferencedObjectIsDeferredUntilRelease) {
  ObjectID id = Put(100);
  ObjectEntry* e = table_.Find(id);
  table_.AddRef(e);
  rec_.events.clear();
  EXPECT_EQ(table_.Delete(id), StatusCode::kObjectInUse);
  EXPECT_FALSE(table_.Find(id)->visible());
  EXPECT_EQ(table_.Delete(id), StatusCode::kObjectNotFound);  // already going
  EXPECT_TRUE(rec_.events.empty());
  table_.Release(e);
  EXPECT_EQ(table_.Find(id), nullptr);
  ASSERT_EQ(rec_.events.size(), 1u);
  EXPECT_EQ(rec_.events[0].kind, Notification::Kind::kDeleted);
  EXPECT_EQ(table_.Stats().used, 0u);
}

TEST_F(ObjectTableTest, DeleteReportsMissingAndUnsealed) {
  EXPECT_EQ(table_.Delete(ObjectID::Random()), StatusCode::kObjectNotFound);
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(table_.Create(id, 10, 0, 1).ok());
  EXPECT_EQ(table_.Delete(id), StatusCode::kObjectNotSealed);
  EXPECT_NE(table_.Find(id), nullptr);
}

TEST_F(ObjectTableTest, EvictFreesAtLeastTheBytesAskedInLruOrder) {
  ObjectID a = Put(1000), b = Put(1000), c = Put(1000);
  auto [bytes, count] = table_.Evict(1500);
  EXPECT_EQ(count, 2u);
  EXPECT_GE(bytes, 1500u);
  EXPECT_EQ(table_.Find(a), nullptr);
  EXPECT_EQ(table_.Find(b), nullptr);
  EXPECT_NE(table_.Find(c), nullptr);
}

TEST_F(ObjectTableTest, ListPagesInIdOrder) {
  std::vector<ObjectID> ids;
  for (int i = 0; i < 25; i++) ids.push_back(Put(10));
  std::sort(ids.begin(), ids.end());
  std::vector<ObjectID> seen;
  bool more = true, has_cursor = false;
  ObjectID cursor;
  while (more) {
    auto page = table_.List(has_cursor, cursor, 7, &more);
    for (const ObjectInfo& o : page) seen.push_back(o.id);
    if (page.empty()) break;
    has_cursor = true;
    cursor = page.back().id;
  }
  EXPECT_EQ(seen, ids);
}

TEST_F(ObjectTableTest, ReleasingMoreThanTwoToThe32ReferencesAtOnce) {
  // A client that goes away holding more than 2^32 references to an object
  // (a 64-bit count): they are all released in one call, and the deferred
  // delete completes. (Taking that many through the socket would take hours;
  // the count is set directly.)
  ObjectID id = Put(100);
  ObjectEntry* e = table_.Find(id);
  table_.AddRef(e);
  const uint64_t kRefs = (uint64_t{1} << 32) + 3;
  e->ref_count = kRefs;
  EXPECT_EQ(table_.Delete(id), StatusCode::kObjectInUse);
  table_.Release(e, kRefs - 1);
  ASSERT_NE(table_.Find(id), nullptr);
  EXPECT_EQ(table_.Find(id)->ref_count, 1u);
  table_.Release(e, 1);
  EXPECT_EQ(table_.Find(id), nullptr);  // deleted at the last release
  EXPECT_EQ(rec_.events.back().kind, Notification::Kind::kDeleted);
  EXPECT_EQ(table_.Stats().used, 0u);
}

}  // namespace
}  // namespace plasmon
