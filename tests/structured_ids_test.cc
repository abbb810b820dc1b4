// Object IDs that share most of their bytes (a job prefix, a counter, an
// index) must cost what random IDs cost: a real store with a real Redis
// directory takes 100,000 of them, lists them, serves them and publishes
// them all. With a hash that ignored bytes 8-15 every table the store keeps
// turned into a list and this ran for many minutes (issue 15). How long it
// takes is measured by `plasmon-bench local --fill`, not asserted here.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "plasmon/client.h"
#include "tests/redis_process.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using namespace std::chrono_literals;

// IDs that differ only in bytes 8-15: prefix, counter, index.
ObjectID StructuredId(const ObjectID& base, uint64_t counter) {
  ObjectID id = base;
  for (int b = 0; b < 8; b++) id.mutable_data()[8 + b] = static_cast<uint8_t>(counter >> (8 * b));
  return id;
}

TEST(StructuredIdsTest, AHundredThousandIdsDifferingInBytes8To15) {
  const char* env = std::getenv("PLASMON_TEST_STRUCTURED_OBJECTS");
  const uint64_t kObjects = env != nullptr ? std::strtoull(env, nullptr, 10) : 100000;
  ASSERT_GT(kObjects, 0u);
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  testing::StoreProcess store(
      {"-m", "256M", "--redis", redis.address(), "--node-id", "node-s", "--node-ttl-ms", "60000"});
  ASSERT_TRUE(store.started());
  Client c;
  ASSERT_TRUE(c.Connect(store.socket()).ok());

  const ObjectID base = ObjectID::Random();
  for (uint64_t i = 0; i < kObjects; i++) {
    Status st = c.CreateAndSeal(StructuredId(base, i), std::string(1, static_cast<char>(i)));
    ASSERT_TRUE(st.ok()) << i << ": " << st.ToString();
  }

  // The store holds every one, lists each once, and finds each by its ID.
  auto stats = c.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->sealed_count, kObjects);
  EXPECT_EQ(stats->evictions, 0u);
  auto list = c.List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), kObjects);
  std::unordered_set<ObjectID, ObjectIDHash> listed;
  for (const ObjectInfo& o : *list) listed.insert(o.id);
  EXPECT_EQ(listed.size(), kObjects);
  for (uint64_t i = 0; i < kObjects; i += 997) {
    ObjectID id = StructuredId(base, i);
    EXPECT_TRUE(listed.count(id)) << i;
    auto got = c.Get({id}, 0);
    ASSERT_TRUE(got.ok() && (*got)[0].valid()) << i;
    EXPECT_EQ((*got)[0].view(), std::string(1, static_cast<char>(i)));
  }
  auto missing = c.Contains(StructuredId(base, kObjects));
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(*missing);

  // The directory publishes all of them (its thread works off the client's
  // path: wait for it, generously).
  std::optional<long long> held;
  for (int i = 0; i < 3000; i++) {
    held = redis.Integer({"SCARD", "plasmon:held:node-s"});
    if (held && *held == static_cast<long long>(kObjects)) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(*held, static_cast<long long>(kObjects));
  auto where = c.Where(StructuredId(base, kObjects / 2));
  ASSERT_TRUE(where.ok()) << where.status().ToString();
  ASSERT_EQ(where->size(), 1u);
  EXPECT_EQ((*where)[0].node_id, "node-s");
}

}  // namespace
}  // namespace plasmon
