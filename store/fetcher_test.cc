// The fetcher's location cache: entries expire, and beyond its capacity the
// least recently used one goes (not the whole cache, as it once did).
#include <gtest/gtest.h>

#include "store/fetcher.h"

namespace plasmon {
namespace {

std::vector<FetchCandidate> Holder(const std::string& node) { return {{node, node + ":7000", 0, 1, 0}}; }

TEST(LocationCacheTest, EntriesExpire) {
  LocationCache c;
  ObjectID id = ObjectID::Random();
  c.Put(id, Holder("a"), 1000);
  ASSERT_NE(c.Find(id, 1000 + LocationCache::kTtlUs), nullptr);
  EXPECT_EQ((*c.Find(id, 1000 + LocationCache::kTtlUs))[0].node_id, "a");
  EXPECT_EQ(c.Find(id, 1001 + LocationCache::kTtlUs), nullptr);
  EXPECT_EQ(c.size(), 0u);
}

TEST(LocationCacheTest, BeyondCapacityTheLeastRecentlyUsedGoes) {
  LocationCache c(3);
  ObjectID a = ObjectID::Random(), b = ObjectID::Random(), d = ObjectID::Random(),
           e = ObjectID::Random();
  c.Put(a, Holder("a"), 0);
  c.Put(b, Holder("b"), 0);
  c.Put(d, Holder("d"), 0);
  ASSERT_NE(c.Find(a, 1), nullptr);  // a is now the most recently used
  c.Put(e, Holder("e"), 2);          // b goes
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.Find(b, 3), nullptr);
  EXPECT_NE(c.Find(a, 3), nullptr);
  EXPECT_NE(c.Find(d, 3), nullptr);
  EXPECT_NE(c.Find(e, 3), nullptr);
  c.Put(e, Holder("e2"), 4);  // replacing keeps the size
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ((*c.Find(e, 5))[0].node_id, "e2");
  c.Drop(e);
  EXPECT_EQ(c.Find(e, 6), nullptr);
  EXPECT_EQ(c.size(), 2u);
}

}  // namespace
}  // namespace plasmon
