// What an Arrow Plasma user expects beside create/get/release, through a real
// store: per-client memory quotas, Refresh, CreateAndSeal of a batch, the
// digest of any object, and how long each object took to seal.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/digest.h"
#include "plasmon/client.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using namespace std::chrono_literals;
using testing::StoreProcess;

constexpr uint64_t kMiB = 1 << 20;

// Creates a sealed object of `size` bytes of `byte`.
Status Put(Client& c, const ObjectID& id, uint64_t size, char byte = 'x') {
  Result<MutableBuffer> b = c.Create(id, size);
  if (!b.ok()) return b.status();
  std::memset(b->data, byte, size);
  return c.Seal(id);
}

bool Present(Client& c, const ObjectID& id) {
  auto r = c.Contains(id);
  return r.ok() && *r;
}

// ---- quotas ----

class QuotaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store_.started());
    ASSERT_TRUE(producer_.Connect(store_.socket()).ok());
    ASSERT_TRUE(other_.Connect(store_.socket()).ok());
  }
  StoreProcess store_{{"-m", "64M"}};
  Client producer_, other_;
};

TEST_F(QuotaTest, AProducerThatHoldsEverythingFillsItsQuotaAndNoMore) {
  // Without a quota, a client that creates and holds objects takes the whole
  // store; with one it stops at its quota and the others keep the rest.
  ASSERT_TRUE(producer_.SetOptions({.memory_quota = 16 * kMiB}).ok());
  std::vector<ObjectBuffer> held;
  int made = 0;
  for (;;) {
    ObjectID id = ObjectID::Random();
    Status st = Put(producer_, id, kMiB);
    if (!st.ok()) {
      EXPECT_TRUE(st.IsOutOfMemory()) << st.ToString();
      EXPECT_NE(st.message().find("quota"), std::string::npos) << st.message();
      break;
    }
    auto got = producer_.Get({id}, 0);
    ASSERT_TRUE(got.ok() && (*got)[0].valid());
    held.push_back((*got)[0]);  // referenced: never evicted
    ASSERT_LT(++made, 64) << "the quota did not stop it";
  }
  EXPECT_EQ(made, 16);
  // The other client, holding what it makes too, still has the 48 MiB the
  // quota leaves.
  int others = 0;
  for (;;) {
    ObjectID id = ObjectID::Random();
    if (!Put(other_, id, kMiB).ok()) break;
    auto got = other_.Get({id}, 0);
    ASSERT_TRUE(got.ok() && (*got)[0].valid());
    held.push_back((*got)[0]);
    ASSERT_LT(++others, 64);
  }
  EXPECT_EQ(others, 48);
}

TEST_F(QuotaTest, AQuotaEvictsItsOwnObjectsNeverOthers) {
  ASSERT_TRUE(producer_.SetOptions({.memory_quota = 8 * kMiB}).ok());
  // Another client's working set, sealed and unreferenced (evictable).
  std::vector<ObjectID> theirs;
  for (int i = 0; i < 8; i++) {
    theirs.push_back(ObjectID::Random());
    ASSERT_TRUE(Put(other_, theirs.back(), 4 * kMiB).ok());
  }
  // The producer streams 40 MiB through its 8 MiB quota.
  std::vector<ObjectID> mine;
  for (int i = 0; i < 40; i++) {
    mine.push_back(ObjectID::Random());
    Status st = Put(producer_, mine.back(), kMiB);
    ASSERT_TRUE(st.ok()) << i << ": " << st.ToString();
  }
  for (const ObjectID& id : theirs) EXPECT_TRUE(Present(other_, id)) << "another's object evicted";
  // Its own oldest went, its newest 8 stay.
  for (int i = 0; i < 32; i++) EXPECT_FALSE(Present(producer_, mine[i])) << i;
  for (int i = 32; i < 40; i++) EXPECT_TRUE(Present(producer_, mine[i])) << i;
  auto stats = other_.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->evictions, 32u);
}

TEST_F(QuotaTest, ClientsWithoutAQuotaShareWhatTheQuotasLeave) {
  ASSERT_TRUE(producer_.SetOptions({.memory_quota = 48 * kMiB}).ok());
  // 16 MiB left to share: a 20 MiB object cannot be made, even by evicting.
  Status st = Put(other_, ObjectID::Random(), 20 * kMiB);
  EXPECT_TRUE(st.IsOutOfMemory()) << st.ToString();
  EXPECT_TRUE(Put(other_, ObjectID::Random(), 16 * kMiB).ok());
}

TEST_F(QuotaTest, BadQuotasAreRefusedClearly) {
  Status st = producer_.SetOptions({.memory_quota = 65 * kMiB});
  EXPECT_TRUE(st.IsInvalidArgument()) << st.ToString();
  ASSERT_TRUE(producer_.SetOptions({.memory_quota = 40 * kMiB}).ok());
  st = producer_.SetOptions({.memory_quota = 8 * kMiB});
  EXPECT_TRUE(st.IsInvalidArgument()) << st.ToString();  // once per connection
  st = other_.SetOptions({.memory_quota = 32 * kMiB});   // 24 MiB are left
  EXPECT_TRUE(st.IsInvalidArgument()) << st.ToString();
  EXPECT_TRUE(other_.SetOptions({.memory_quota = 24 * kMiB}).ok());
  // An object larger than its quota.
  st = Put(producer_, ObjectID::Random(), 41 * kMiB);
  EXPECT_TRUE(st.IsOutOfMemory()) << st.ToString();
}

TEST_F(QuotaTest, WhenTheClientGoesItsQuotaEndsAndItsObjectsStay) {
  ASSERT_TRUE(producer_.SetOptions({.memory_quota = 48 * kMiB}).ok());
  ObjectID kept = ObjectID::Random();
  ASSERT_TRUE(Put(producer_, kept, 8 * kMiB).ok());
  producer_.Disconnect();
  // The reservation is gone: the other client may use the whole store,
  // evicting the object the producer left if it must.
  for (int i = 0; i < 20; i++) {
    if (Present(other_, kept) && i > 0) break;
    std::this_thread::sleep_for(10ms);  // the store sees the disconnect
  }
  EXPECT_TRUE(Present(other_, kept));
  Status st;
  for (int i = 0; i < 100; i++) {
    st = Put(other_, ObjectID::Random(), 60 * kMiB);
    if (st.ok()) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_FALSE(Present(other_, kept));  // evicted to make room
}

// ---- refresh, batches, digests, seal times ----

class PlasmaFeaturesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store_.started());
    ASSERT_TRUE(c_.Connect(store_.socket()).ok());
  }
  StoreProcess store_{{"-m", "16M"}};
  Client c_;
};

TEST_F(PlasmaFeaturesTest, RefreshKeepsAnObjectFromBeingEvictedFirst) {
  std::vector<ObjectID> ids;
  for (int i = 0; i < 4; i++) {
    ids.push_back(ObjectID::Random());
    ASSERT_TRUE(Put(c_, ids.back(), 4 * kMiB).ok());  // fills the store, oldest first
  }
  auto r = c_.Refresh({ids[0], ids[1]});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*r)[0].ok());
  EXPECT_TRUE((*r)[1].ok());
  // Room for 8 MiB: the two oldest not refreshed go.
  ASSERT_TRUE(Put(c_, ObjectID::Random(), 8 * kMiB).ok());
  EXPECT_TRUE(Present(c_, ids[0]));
  EXPECT_TRUE(Present(c_, ids[1]));
  EXPECT_FALSE(Present(c_, ids[2]));
  EXPECT_FALSE(Present(c_, ids[3]));
}

TEST_F(PlasmaFeaturesTest, RefreshOfMissingOrUnsealedObjectsSaysSo) {
  ObjectID unsealed = ObjectID::Random();
  ASSERT_TRUE(c_.Create(unsealed, 10).ok());
  auto r = c_.Refresh({ObjectID::Random(), unsealed});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((*r)[0].IsObjectNotFound()) << (*r)[0].ToString();
  EXPECT_TRUE((*r)[1].IsObjectNotSealed()) << (*r)[1].ToString();
}

TEST_F(PlasmaFeaturesTest, CreateAndSealABatchInOneCall) {
  std::vector<ObjectID> ids;
  std::vector<std::string> bytes;
  for (int i = 0; i < 200; i++) {
    ids.push_back(ObjectID::Random());
    bytes.push_back("object " + std::to_string(i));
  }
  ids.push_back(ids[7]);  // the same ID twice: the second is refused
  bytes.push_back("again");
  std::vector<std::string_view> data(bytes.begin(), bytes.end());
  std::vector<std::string_view> meta(ids.size(), "m");
  auto r = c_.CreateAndSeal(ids, data, meta);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), ids.size());
  for (int i = 0; i < 200; i++) EXPECT_TRUE((*r)[i].ok()) << i << ": " << (*r)[i].ToString();
  EXPECT_TRUE(r->back().IsObjectExists()) << r->back().ToString();
  auto got = c_.Get({ids[0], ids[7], ids[199]}, 0);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0].view(), "object 0");
  EXPECT_EQ((*got)[1].view(), "object 7");
  EXPECT_EQ((*got)[2].view(), "object 199");
  EXPECT_EQ((*got)[2].metadata_view(), "m");
}

TEST_F(PlasmaFeaturesTest, ABatchBeyondItsLimitsIsRefusedWholeAndClearly) {
  std::string big(600 * 1024, 'b');
  auto r = c_.CreateAndSeal({ObjectID::Random(), ObjectID::Random()}, {big, big});
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  r = c_.CreateAndSeal({ObjectID::Random(), ObjectID::Random()}, {"one"});
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  auto stats = c_.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->object_count, 0u);  // nothing half-made
}

TEST_F(PlasmaFeaturesTest, DigestOfSmallAndLargeObjects) {
  // Small objects get their digest at seal; large ones when first asked for
  // (hashed off the store's loop).
  for (uint64_t size : {uint64_t{100}, 8 * kMiB}) {
    ObjectID id = ObjectID::Random();
    Result<MutableBuffer> b = c_.Create(id, size, "meta");
    ASSERT_TRUE(b.ok());
    for (uint64_t i = 0; i < size; i++) b->data[i] = static_cast<uint8_t>(i * 7 + 3);
    const uint64_t expected = ObjectDigest(b->data, size, reinterpret_cast<const uint8_t*>("meta"), 4);
    ASSERT_TRUE(c_.Seal(id).ok());
    auto d = c_.Digest(id);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(*d, expected) << size;
    auto again = c_.Digest(id);  // known now
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, expected);
    auto list = c_.List();
    ASSERT_TRUE(list.ok());
    for (const ObjectInfo& o : *list)
      if (o.id == id) {
        EXPECT_TRUE(o.digest_valid && o.digest == expected);
      }
    // The object is not left pinned: it can be deleted now.
    auto del = c_.Delete({id});
    ASSERT_TRUE(del.ok());
    EXPECT_TRUE((*del)[0].ok()) << (*del)[0].ToString();
  }
}

TEST_F(PlasmaFeaturesTest, DigestOfMissingOrUnsealedObjectsSaysSo) {
  EXPECT_TRUE(c_.Digest(ObjectID::Random()).status().IsObjectNotFound());
  ObjectID unsealed = ObjectID::Random();
  ASSERT_TRUE(c_.Create(unsealed, 10).ok());
  EXPECT_TRUE(c_.Digest(unsealed).status().IsObjectNotSealed());
}

TEST_F(PlasmaFeaturesTest, ListShowsHowLongEachObjectTookToSeal) {
  ObjectID slow = ObjectID::Random(), open = ObjectID::Random();
  ASSERT_TRUE(c_.Create(slow, 10).ok());
  ASSERT_TRUE(c_.Create(open, 10).ok());
  std::this_thread::sleep_for(30ms);
  ASSERT_TRUE(c_.Seal(slow).ok());
  auto list = c_.List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  for (const ObjectInfo& o : *list) {
    if (o.id == slow) {
      EXPECT_GE(o.create_to_seal_us(), 30000);
      EXPECT_GE(o.seal_time_us, o.create_time_us);
    } else {
      EXPECT_EQ(o.create_to_seal_us(), -1);  // not sealed
      EXPECT_EQ(o.seal_time_us, 0);
    }
  }
}

}  // namespace
}  // namespace plasmon
