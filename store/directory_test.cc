// The directory against a real redis-server.
#include "store/directory.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>

#include "core/clock.h"
#include "core/event_loop.h"
#include "tests/redis_process.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using namespace std::chrono_literals;

DirectoryOptions Options(const testing::RedisProcess& redis, const std::string& node) {
  DirectoryOptions o;
  o.redis = redis.address();
  o.prefix = "test";
  o.node_id = node;
  o.endpoints = {{"tcp", "127.0.0.1:7000"}};
  o.ttl_ms = 1000;
  o.heartbeat_ms = 200;
  return o;
}

// Polls `pred` for up to 20 s.
template <typename P>
bool Eventually(P pred) {
  for (int i = 0; i < 2000; i++) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

TEST(DirectoryTest, ParsesRedisAddresses) {
  std::string host, path;
  int port = 0;
  EXPECT_TRUE(ParseRedisAddress("127.0.0.1:6379", &host, &port, &path).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 6379);
  EXPECT_TRUE(ParseRedisAddress("unix:/tmp/r.sock", &host, &port, &path).ok());
  EXPECT_EQ(path, "/tmp/r.sock");
  for (const char* bad : {"", "host", "host:", ":1", "h:0", "h:70000", "h:12x", "unix:"})
    EXPECT_TRUE(ParseRedisAddress(bad, &host, &port, &path).IsInvalidArgument()) << bad;
  // Found by directory_fuzz: a NUL cut the path hiredis gets, and strtol took
  // spaces (and signs) before the port.
  using namespace std::string_literals;
  for (const std::string& bad : {"h:\t1"s, "h: 80"s, "h:+80"s, "h:-1"s, "h:80\0x"s, "h\0x:80"s,
                                 "unix:/tmp/a\0b"s})
    EXPECT_TRUE(ParseRedisAddress(bad, &host, &port, &path).IsInvalidArgument()) << bad;
  EXPECT_TRUE(ParseRedisAddress("::1:6379", &host, &port, &path).ok());
  EXPECT_EQ(host, "::1");
}

TEST(DirectoryTest, LocationValuesRoundTripAndAreParsedStrictly) {
  ObjectLocationRecord r;
  ASSERT_TRUE(ParseLocationValue(LocationValue(100, 4, true, 0xabcdef), &r));
  EXPECT_EQ(r.data_size, 100u);
  EXPECT_EQ(r.metadata_size, 4u);
  EXPECT_TRUE(r.digest_valid);
  EXPECT_EQ(r.digest, 0xabcdefu);
  ASSERT_TRUE(ParseLocationValue(LocationValue(UINT64_MAX, 0, false, 0), &r));
  EXPECT_EQ(r.data_size, UINT64_MAX);
  EXPECT_FALSE(r.digest_valid);
  // Found by directory_fuzz: sscanf took leading spaces; and signs (a "-1"
  // size wrapped), a 0x prefix and, saturating, numbers past 64 bits.
  for (const char* bad : {" 0:0:9", "0: 0:9", "0:0: 9", "-1:0:-", "+1:0:-", "1:2:0x10", "1:2:-5",
                          "18446744073709551616:0:-", "1:2:10000000000000000", "1:2", "1:2:",
                          "1:2:-:", "1:2:g", ":2:-", "1::-", "1:2:- "})
    EXPECT_FALSE(ParseLocationValue(bad, &r)) << bad;
}

TEST(DirectoryTest, LookupRepliesPairNodesWithTheirRecords) {
  LookupReply reply;
  reply.object = {"a", "10:2:ff", "b", "bad", "c", "10:2:-", "d", "1:1:-", "odd"};
  reply.nodes = {std::vector<std::string>{"node_id", "a", "ep:tcp", "10.0.0.1:7000", "ep:"},
                 std::vector<std::string>{"ep:tcp", "unused"},  // b's: b is skipped
                 std::vector<std::string>{},                    // c's record expired
                 std::nullopt};
  reply.fields = 10;
  reply.malformed_nodes = 2;
  reply.problem = "test:node:x is a string, not a node record";
  LookupResult found = ParseLookupReply(ObjectID(), reply);
  EXPECT_EQ(found.malformed, 3u);  // the script's two, and b's location
  EXPECT_EQ(found.omitted, 4u);    // 10 fields: 3 holders, 3 malformed
  EXPECT_EQ(found.problem, reply.problem);
  const std::vector<ObjectLocationRecord>& out = found.holders;
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].node_id, "a");
  EXPECT_TRUE(out[0].alive);
  EXPECT_EQ(out[0].digest, 0xffu);
  EXPECT_EQ(out[0].endpoints, (std::map<std::string, std::string>{{"tcp", "10.0.0.1:7000"}}));
  EXPECT_EQ(out[1].node_id, "c");
  EXPECT_FALSE(out[1].alive);
  EXPECT_FALSE(out[1].digest_valid);
  EXPECT_EQ(out[2].node_id, "d");
  EXPECT_FALSE(out[2].alive);
  EXPECT_TRUE(out[2].endpoints.empty());
}

TEST(DirectoryTest, PublishedLocationsAreFoundWithTheirNodesEndpoints) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  DirectoryOptions ob = Options(redis, "node-b");
  ob.endpoints = {{"tcp", "10.0.0.2:7000"}};
  Directory a(Options(redis, "node-a")), b(ob);
  a.Start();
  b.Start();
  ObjectID id = ObjectID::Random();
  a.Publish(id, 100, 4, true, 0xabcdef);
  b.Publish(id, 100, 4, false, 0);
  std::vector<ObjectLocationRecord> found;
  ASSERT_TRUE(Eventually([&] {
    auto r = a.Lookup(id);
    if (r.ok()) found = *r;
    return found.size() == 2;
  }));
  std::sort(found.begin(), found.end(),
            [](const auto& x, const auto& y) { return x.node_id < y.node_id; });
  EXPECT_EQ(found[0].node_id, "node-a");
  EXPECT_EQ(found[0].endpoints.at("tcp"), "127.0.0.1:7000");
  EXPECT_EQ(found[1].endpoints.at("tcp"), "10.0.0.2:7000");
  EXPECT_EQ(found[1].data_size, 100u);
  EXPECT_EQ(found[1].metadata_size, 4u);
  EXPECT_TRUE(found[0].digest_valid);
  EXPECT_EQ(found[0].digest, 0xabcdefu);
  EXPECT_FALSE(found[1].digest_valid);  // published before its digest was known
  EXPECT_TRUE(found[1].alive);

  a.Withdraw(id);
  ASSERT_TRUE(Eventually([&] {
    auto r = b.Lookup(id);
    return r.ok() && r->size() == 1 && (*r)[0].node_id == "node-b";
  }));
  EXPECT_TRUE(b.Lookup(ObjectID::Random())->empty());
}

TEST(DirectoryTest, AStoppedNodesRecordExpires) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  Directory reader(Options(redis, "reader"));
  ObjectID id = ObjectID::Random();
  {
    Directory a(Options(redis, "node-a"));
    a.Start();
    a.Publish(id, 1, 0, true, 1);
    ASSERT_TRUE(Eventually([&] {
      auto r = reader.Lookup(id);
      return r.ok() && r->size() == 1 && (*r)[0].alive;
    }));
  }  // stops: no more heartbeats
  EXPECT_TRUE(Eventually([&] {
    auto r = reader.Lookup(id);
    return r.ok() && r->size() == 1 && !(*r)[0].alive;
  }));
}

TEST(DirectoryTest, RepublishesEverythingWhenRedisComesBack) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  Directory a(Options(redis, "node-a"));
  a.Start();
  ObjectID before = ObjectID::Random(), during = ObjectID::Random(), gone = ObjectID::Random();
  a.Publish(before, 1, 0, true, 1);
  a.Publish(gone, 1, 0, true, 1);
  ASSERT_TRUE(Eventually([&] { return a.synced() && a.Lookup(gone).ok() && a.Lookup(gone)->size() == 1; }));
  redis.Kill();
  // Local work goes on while Redis is down: these calls do not block.
  a.Publish(during, 1, 0, true, 1);
  a.Withdraw(gone);
  EXPECT_FALSE(a.Lookup(before).ok());
  ASSERT_TRUE(redis.Start());  // empty: it lost everything
  Directory reader(Options(redis, "reader"));
  EXPECT_TRUE(Eventually([&] {
    auto x = reader.Lookup(before), y = reader.Lookup(during), z = reader.Lookup(gone);
    return x.ok() && y.ok() && z.ok() && x->size() == 1 && y->size() == 1 && z->empty();
  }));
}

// One command to `redis`; its reply as strings.
Result<std::vector<std::string>> Query(const testing::RedisProcess& redis,
                                       const std::vector<std::string>& argv) {
  return cluster::RedisQuery(redis.socket(), argv);
}

// Found by trying: one node key holding a string made the lookup's script
// fail with WRONGTYPE, and every fetch that touched it said "the directory
// (Redis) is unavailable".
TEST(DirectoryTest, MalformedNodeRecordsAreSkippedAndCounted) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  Directory a(Options(redis, "node-a"));
  a.Start();
  ObjectID id = ObjectID::Random();
  a.Publish(id, 5, 0, true, 7);
  ASSERT_TRUE(Eventually([&] {
    auto r = a.Lookup(id);
    return r.ok() && r->size() == 1;
  }));
  const std::string obj = a.ObjectKey(id);
  std::vector<std::string> wide = {"HSET", "test:node:wide"};
  for (int i = 0; i < 100; i++) {
    wide.push_back("f" + std::to_string(i));
    wide.push_back("v");
  }
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"HSET", obj, "string", "5:0:-", "wide", "5:0:-", "huge", "5:0:-", "set", "5:0:-",
            "garbled", "five:0:-", std::string(300, 'n'), "5:0:-", "long", std::string(100, '1')},
           {"SET", "test:node:string", "not a hash"},
           wide,
           {"HSET", "test:node:huge", "ep:tcp", std::string(5000, 'x')},
           {"SADD", "test:node:set", "x"},
           {"HSET", "test:node:garbled", "ep:tcp", "10.0.0.9:1"}})
    ASSERT_TRUE(Query(redis, cmd).ok()) << cmd[0] << " " << cmd[1];

  auto found = a.Lookup(id);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].node_id, "node-a");
  EXPECT_TRUE((*found)[0].alive);
  EXPECT_EQ((*found)[0].endpoints.at("tcp"), "127.0.0.1:7000");
  auto counted = a.LookupForClient(id);
  ASSERT_TRUE(counted.ok()) << counted.status().ToString();
  EXPECT_EQ(counted->holders.size(), 1u);
  EXPECT_EQ(counted->malformed, 7u);
  EXPECT_EQ(counted->omitted, 0u);
  EXPECT_FALSE(counted->problem.empty());
}

// How many times Redis ran `command` (INFO commandstats); -1 if unknown.
long long Calls(const testing::RedisProcess& redis, const std::string& command) {
  auto info = Query(redis, {"INFO", "commandstats"});
  if (!info.ok() || info->empty()) return -1;
  const std::string key = "cmdstat_" + command + ":calls=";
  const size_t at = (*info)[0].find(key);
  if (at == std::string::npos) return 0;
  return std::atoll((*info)[0].c_str() + at + key.size());
}

// The script runs a command per holder on Redis's one thread; a fetch's
// lookup whose holders' node records are cached asks only for the object's
// record. What it returns must be what the script would, and a cached record
// must never outlive a fresh lookup that saw it change.
TEST(DirectoryTest, ACachedLookupAsksOnlyForTheObjectsRecordAndFreshLookupsRenewIt) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  DirectoryOptions o = Options(redis, "reader");
  o.node_cache_ms = 60000;
  Directory reader(o);
  const ObjectID id = ObjectID::Random(), other = ObjectID::Random();
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"HSET", "test:node:n1", "ep:tcp", "10.0.0.5:1"},
           {"HSET", reader.ObjectKey(id), "n1", "5:0:-"},
           {"HSET", reader.ObjectKey(other), "n1", "6:1:ab"}})
    ASSERT_TRUE(Query(redis, cmd).ok());
  auto scripts = [&] { return Calls(redis, "evalsha") + Calls(redis, "eval"); };
  auto first = reader.Lookup(id, NodeRecords::kCached);  // nothing cached: the script
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ(first->size(), 1u);
  EXPECT_FALSE((*first)[0].node_cached);
  const long long s0 = scripts(), h0 = Calls(redis, "hscan");
  ASSERT_GT(s0, 0);

  auto cached = reader.Lookup(other, NodeRecords::kCached);
  ASSERT_TRUE(cached.ok()) << cached.status().ToString();
  ASSERT_EQ(cached->size(), 1u);
  EXPECT_TRUE((*cached)[0].node_cached);
  EXPECT_TRUE((*cached)[0].alive);
  EXPECT_EQ((*cached)[0].endpoints.at("tcp"), "10.0.0.5:1");
  EXPECT_EQ((*cached)[0].data_size, 6u);
  EXPECT_EQ((*cached)[0].metadata_size, 1u);
  EXPECT_TRUE((*cached)[0].digest_valid);
  EXPECT_EQ((*cached)[0].digest, 0xabu);
  EXPECT_EQ(scripts(), s0);
  EXPECT_EQ(Calls(redis, "hscan"), h0 + 1);
  EXPECT_EQ(reader.counters().lookups_scanned, 1u);
  EXPECT_EQ(reader.counters().lookups_scripted, 1u);
  EXPECT_TRUE(reader.Lookup(ObjectID::Random(), NodeRecords::kCached)->empty());
  EXPECT_EQ(scripts(), s0);

  // The node restarted elsewhere: a cached lookup still says where it was
  // (a fetch that fails there looks up fresh), a fresh one where it is, and
  // the cache follows the fresh one.
  ASSERT_TRUE(Query(redis, {"HSET", "test:node:n1", "ep:tcp", "10.0.0.5:2"}).ok());
  EXPECT_EQ((*reader.Lookup(id, NodeRecords::kCached))[0].endpoints.at("tcp"), "10.0.0.5:1");
  auto fresh = reader.Lookup(id);
  EXPECT_FALSE((*fresh)[0].node_cached);
  EXPECT_EQ((*fresh)[0].endpoints.at("tcp"), "10.0.0.5:2");
  EXPECT_EQ((*reader.Lookup(id, NodeRecords::kCached))[0].endpoints.at("tcp"), "10.0.0.5:2");

  // A holder not cached yet: the script, with both holders.
  ASSERT_TRUE(Query(redis, {"HSET", "test:node:n2", "ep:tcp", "10.0.0.6:1"}).ok());
  ASSERT_TRUE(Query(redis, {"HSET", reader.ObjectKey(id), "n2", "5:0:-"}).ok());
  long long s = scripts();
  auto both = reader.Lookup(id, NodeRecords::kCached);
  ASSERT_EQ(both->size(), 2u);
  EXPECT_EQ(scripts(), s + 1);
  EXPECT_FALSE((*both)[0].node_cached);

  // A node whose record is gone (dead) is cached as such: its objects'
  // lookups do not run the script each time.
  ASSERT_TRUE(Query(redis, {"DEL", "test:node:n2"}).ok());
  auto gone = reader.Lookup(id);  // fresh: n2 not alive
  ASSERT_EQ(gone->size(), 2u);
  s = scripts();
  auto again = reader.Lookup(id, NodeRecords::kCached);
  ASSERT_EQ(again->size(), 2u);
  EXPECT_EQ(scripts(), s);
  for (const ObjectLocationRecord& r : *again) {
    EXPECT_EQ(r.alive, r.node_id == "n1") << r.node_id;
    EXPECT_TRUE(r.node_cached);
  }

  // Replies of lookups on other connections can be handled late: a record
  // never replaces the cached one of a later start of that node.
  ASSERT_TRUE(Query(redis, {"HSET", "test:node:n1", "start_time_ms", "2000", "ep:tcp",
                            "10.0.0.5:3"}).ok());
  ASSERT_TRUE(reader.Lookup(id).ok());
  ASSERT_TRUE(Query(redis, {"HSET", "test:node:n1", "start_time_ms", "1000", "ep:tcp",
                            "10.0.0.5:4"}).ok());
  EXPECT_EQ(reader.Lookup(other)->front().endpoints.at("tcp"), "10.0.0.5:4");  // fresh: Redis's
  EXPECT_EQ(reader.Lookup(other, NodeRecords::kCached)->front().endpoints.at("tcp"), "10.0.0.5:3");

  // A damaged object record reads the same either way.
  const ObjectID damaged = ObjectID::Random();
  ASSERT_TRUE(Query(redis, {"SET", reader.ObjectKey(damaged), "not a hash"}).ok());
  auto bad = reader.Lookup(damaged, NodeRecords::kCached);
  ASSERT_TRUE(bad.status().IsCorruption()) << bad.status().ToString();
  EXPECT_NE(bad.status().message().find(reader.ObjectKey(damaged)), std::string::npos);
  EXPECT_NE(bad.status().message().find("string"), std::string::npos);

  // Records age out of the cache, and with node_cache_ms 0 nothing is cached.
  DirectoryOptions shortlived = o;
  shortlived.node_cache_ms = 50;
  DirectoryOptions uncached = o;
  uncached.node_cache_ms = 0;
  for (const DirectoryOptions& opts : {shortlived, uncached}) {
    SCOPED_TRACE(opts.node_cache_ms);
    Directory d(opts);
    ASSERT_TRUE(d.Lookup(other).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(opts.node_cache_ms + 10));
    s = scripts();
    const long long h = Calls(redis, "hscan");
    auto r = d.Lookup(other, NodeRecords::kCached);
    ASSERT_EQ(r->size(), 1u);
    EXPECT_FALSE((*r)[0].node_cached);
    EXPECT_EQ(scripts(), s + 1);
    // The script's own HSCAN counts too.
    EXPECT_EQ(Calls(redis, "hscan"), h + 1 + (opts.node_cache_ms > 0 ? 1 : 0));
  }
}

// Found by trying: a malformed object record was reported as Redis being
// unavailable.
TEST(DirectoryTest, AMalformedObjectRecordIsCorruptionNamingTheKey) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  Directory a(Options(redis, "node-a"));
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Query(redis, {"SET", a.ObjectKey(id), "not a hash"}).ok());
  auto r = a.Lookup(id);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(a.ObjectKey(id)), std::string::npos);
  EXPECT_NE(r.status().message().find("string"), std::string::npos);
  EXPECT_TRUE(a.LookupForClient(id).status().IsCorruption());
}

// A damaged object record costs only that object's update: the writer stays
// registered, publishes the rest, and lands the update once the key is
// deleted. (It used to fail the whole batch, reconnect and re-publish
// everything every 2 s, forever.)
TEST(DirectoryTest, ADamagedObjectRecordDoesNotStopTheWriter) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  Directory a(Options(redis, "node-a"));
  ObjectID poisoned = ObjectID::Random(), healthy = ObjectID::Random();
  ASSERT_TRUE(Query(redis, {"SET", a.ObjectKey(poisoned), "not a hash"}).ok());
  a.Start();
  a.Publish(poisoned, 1, 0, true, 1);
  a.Publish(healthy, 2, 0, true, 2);
  ASSERT_TRUE(Eventually([&] { return a.synced(); }));
  ASSERT_TRUE(Eventually([&] {
    auto r = a.Lookup(healthy);
    return r.ok() && r->size() == 1;
  }));
  ASSERT_TRUE(Query(redis, {"DEL", a.ObjectKey(poisoned)}).ok());
  EXPECT_TRUE(Eventually([&] {
    auto r = a.Lookup(poisoned);
    return r.ok() && r->size() == 1 && (*r)[0].node_id == "node-a";
  }));
  EXPECT_TRUE(a.synced());
}

// Records that stay damaged do not keep the others' retries from coming:
// each heartbeat retries the next few in turn (it retried the first few of
// a set in its stable order, so once as many stayed damaged as one beat
// retries, the rest were never retried, even after their keys were fixed).
TEST(DirectoryTest, RecordsThatStayDamagedDoNotStarveTheOthersRetries) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  DirectoryOptions o = Options(redis, "node-a");
  o.damaged_retries_per_heartbeat = 4;
  Directory a(o);
  std::vector<ObjectID> stay, fixed;
  for (int i = 0; i < 16; i++) stay.push_back(ObjectID::Random());
  for (int i = 0; i < 8; i++) fixed.push_back(ObjectID::Random());
  for (const auto* ids : {&stay, &fixed})
    for (const ObjectID& id : *ids)
      ASSERT_TRUE(Query(redis, {"SET", a.ObjectKey(id), "not a hash"}).ok());
  a.Start();
  for (const auto* ids : {&stay, &fixed})
    for (const ObjectID& id : *ids) a.Publish(id, 1, 0, true, 1);
  ObjectID healthy = ObjectID::Random();
  a.Publish(healthy, 2, 0, true, 2);  // in the same batch as the damaged ones, or after
  ASSERT_TRUE(Eventually([&] {
    auto r = a.Lookup(healthy);
    return r.ok() && r->size() == 1;
  }));
  for (const ObjectID& id : fixed) ASSERT_TRUE(Query(redis, {"DEL", a.ObjectKey(id)}).ok());
  size_t landed = 0;
  EXPECT_TRUE(Eventually([&] {
    landed = 0;
    for (const ObjectID& id : fixed) {
      auto r = a.Lookup(id);
      landed += r.ok() && r->size() == 1 && (*r)[0].node_id == "node-a";
    }
    return landed == fixed.size();
  })) << "only " << landed << " of the " << fixed.size() << " fixed records were updated";
  EXPECT_TRUE(a.synced());
}

// This node's own keys, damaged, are replaced: the node record and the set
// of what it published.
TEST(DirectoryTest, ItsOwnDamagedKeysAreReplaced) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  Directory a(Options(redis, "node-a")), reader(Options(redis, "reader"));
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Query(redis, {"SET", a.HeldKey(), "not a set"}).ok());
  a.Start();
  a.Publish(id, 1, 0, true, 1);
  ASSERT_TRUE(Eventually([&] {
    auto r = reader.Lookup(id);
    return r.ok() && r->size() == 1 && (*r)[0].alive;
  }));
  EXPECT_EQ(redis.Integer({"SISMEMBER", a.HeldKey(), id.Hex()}), 1);
  ASSERT_TRUE(Query(redis, {"SET", a.NodeKey("node-a"), "not a hash"}).ok());
  EXPECT_TRUE(Eventually([&] {
    auto r = reader.Lookup(id);
    return r.ok() && r->size() == 1 && (*r)[0].alive && (*r)[0].endpoints.count("tcp");
  }));
}

TEST(DirectoryTest, ALookupReturnsAtMostMaxHoldersAndSaysHowManyMore) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  Directory a(Options(redis, "node-a"));
  ObjectID id = ObjectID::Random();
  std::vector<std::string> hset = {"HSET", a.ObjectKey(id)};
  for (int i = 0; i < 5000; i++) {
    hset.push_back("node-" + std::to_string(i));
    hset.push_back("10:0:-");
  }
  ASSERT_TRUE(Query(redis, hset).ok());
  auto r = a.LookupForClient(id);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->holders.size(), kMaxLookupHolders);
  EXPECT_EQ(r->omitted, 5000 - kMaxLookupHolders);
  EXPECT_EQ(r->malformed, 0u);
  EXPECT_EQ(a.Lookup(id)->size(), kMaxLookupHolders);
}

// Whether `reader` finds `id` on exactly one node, alive.
bool HeldByOneLiveNode(Directory& reader, const ObjectID& id) {
  auto r = reader.Lookup(id);
  return r.ok() && r->size() == 1 && (*r)[0].alive;
}

// Found by trying: after a FLUSHALL the node record came back at the next
// heartbeat, but no location was ever published again (no Redis error, so
// no re-publication).
TEST(DirectoryTest, RepublishesEverythingAfterAFlush) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  Directory a(Options(redis, "node-a")), reader(Options(redis, "reader"));
  a.Start();
  ObjectID id = ObjectID::Random();
  a.Publish(id, 1, 0, true, 1);
  auto found = [&] { return HeldByOneLiveNode(reader, id); };
  ASSERT_TRUE(Eventually(found));
  ASSERT_TRUE(Query(redis, {"FLUSHALL"}).ok());
  EXPECT_TRUE(Eventually(found));
  EXPECT_EQ(redis.Integer({"SCARD", a.HeldKey()}), 1);
}

// The same for a Redis that fails over to an empty replica: the store's
// Redis becomes a replica of an empty server (which empties it), then is
// promoted, on the same address.
TEST(DirectoryTest, RepublishesEverythingAfterAFailoverToAnEmptyReplica) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  // The empty server, on TCP (a replica reaches its master over TCP).
  const std::string dir = testing::TempDir();
  int port = 20000 + ::getpid() % 20000;
  cluster::RedisOptions o;
  o.dir = dir;
  o.extra = {"--port", std::to_string(port), "--bind", "127.0.0.1", "--loglevel", "warning",
             "--repl-diskless-sync-delay", "0"};
  cluster::Redis empty(o);
  ASSERT_TRUE(empty.Start().ok());
  // Heartbeats far apart: the failover most likely happens between two, and
  // no write of the store meets the read-only replica (which would be an
  // error, and re-publish as after an outage).
  DirectoryOptions ao = Options(redis, "node-a");
  ao.heartbeat_ms = 2000;
  ao.ttl_ms = 8000;
  Directory a(ao), reader(Options(redis, "reader"));
  a.Start();
  ObjectID id = ObjectID::Random();
  a.Publish(id, 1, 0, true, 1);
  auto found = [&] { return HeldByOneLiveNode(reader, id); };
  ASSERT_TRUE(Eventually(found));
  ASSERT_TRUE(Query(redis, {"REPLICAOF", "127.0.0.1", std::to_string(port)}).ok());
  ASSERT_TRUE(Eventually([&] {
    auto info = Query(redis, {"INFO", "replication"});
    return info.ok() && !info->empty() &&
           (*info)[0].find("master_link_status:up") != std::string::npos &&
           redis.Integer({"DBSIZE"}) == 0;
  }));
  ASSERT_TRUE(Query(redis, {"REPLICAOF", "NO", "ONE"}).ok());
  EXPECT_TRUE(Eventually(found));
  empty.Kill();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(DirectoryTest, WrongPasswordIsAClearError) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  DirectoryOptions o = Options(redis, "n");
  o.password = "secret";
  Directory d(o);
  auto r = d.Lookup(ObjectID::Random());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("password"), std::string::npos) << r.status().ToString();
}

}  // namespace
}  // namespace plasmon

namespace plasmon {
namespace {

// Runs lookups of `ids` with LoopLookups on a loop of their own until all
// are answered (or 20 s pass); each result in *out, in order. Start refuses
// until the connection (made at the first Start) is up: it is tried every
// 10 ms for 2 s. Returns whether the lookups were started on the loop.
bool LookUpOnALoop(Directory* d, const std::vector<ObjectID>& ids,
                   std::vector<Result<std::vector<ObjectLocationRecord>>>* out,
                   NodeRecords nodes = NodeRecords::kFresh) {
  auto loop = EventLoop::Create();
  EXPECT_TRUE(loop.ok());
  EventLoop* l = loop->get();
  LoopLookups lookups(l, d);
  bool started = false;
  size_t answered = 0;
  out->assign(ids.size(), Status::Timeout("not answered"));
  const int64_t give_up_starting = MonoMicros() + 2'000'000, deadline = MonoMicros() + 20'000'000;
  std::function<void()> tick = [&] {
    if (!started) {
      started = lookups.Start(
          ids[0],
          [&](Result<std::vector<ObjectLocationRecord>> r) {
            (*out)[0] = std::move(r);
            answered++;
          },
          nodes);
      for (size_t i = 1; started && i < ids.size(); i++) {
        EXPECT_TRUE(lookups.Start(
            ids[i],
            [&, i](Result<std::vector<ObjectLocationRecord>> r) {
              (*out)[i] = std::move(r);
              answered++;
            },
            nodes));
      }
      if (!started && MonoMicros() > give_up_starting) {
        l->Stop();
        return;
      }
    }
    if ((started && answered == ids.size()) || MonoMicros() > deadline) {
      l->Stop();
      return;
    }
    l->AddTimerAfter(10'000, tick);
  };
  l->Post(tick);
  EXPECT_TRUE(l->Run().ok());
  return started;
}

// A lookup started from another's answer (as the fetcher's next queued one
// is) is sent from inside hiredis's reply loop, where it is not written at
// once but when the loop sees the socket writable: it is answered, fresh and
// from the cache the first answer filled. (What a failed write there would
// do is ALookupOnAConnectionRedisDroppedFailsCleanly's.)
TEST(LoopLookupsTest, ALookupStartedFromAnAnswerIsAnswered) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  Directory publisher(Options(redis, "node-a"));
  publisher.Start();
  const ObjectID first = ObjectID::Random(), second = ObjectID::Random();
  publisher.Publish(first, 1, 0, true, 1);
  publisher.Publish(second, 2, 0, true, 2);
  ASSERT_TRUE(Eventually([&] {
    auto r = publisher.Lookup(second);
    return r.ok() && r->size() == 1;
  }));
  Directory reader(Options(redis, "reader"));
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  EventLoop* l = loop->get();
  LoopLookups lookups(l, &reader);
  std::optional<Result<std::vector<ObjectLocationRecord>>> a;
  std::vector<Result<std::vector<ObjectLocationRecord>>> b;  // fresh, then cached
  bool started = false;
  const int64_t deadline = MonoMicros() + 20'000'000;
  std::function<void()> tick = [&] {
    if (!started) {
      // Refused until the connection (made at the first Start) is up.
      started = lookups.Start(first, [&](Result<std::vector<ObjectLocationRecord>> r) {
        a = std::move(r);
        for (NodeRecords n : {NodeRecords::kFresh, NodeRecords::kCached}) {
          const bool sent = lookups.Start(
              second, [&](Result<std::vector<ObjectLocationRecord>> r2) { b.push_back(std::move(r2)); },
              n);
          if (!sent) b.push_back(Status::Disconnected("refused"));
        }
      });
    }
    if (b.size() == 2 || MonoMicros() > deadline) {
      l->Stop();
      return;
    }
    l->AddTimerAfter(1000, tick);
  };
  l->Post(tick);
  ASSERT_TRUE(l->Run().ok());
  ASSERT_TRUE(a && a->ok());
  ASSERT_EQ(b.size(), 2u);
  for (const auto& r : b) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ((*r)[0].data_size, 2u);
  }
  EXPECT_FALSE(b[0]->front().node_cached);
  EXPECT_TRUE(b[1]->front().node_cached);  // the first answer cached node-a's record
  publisher.Stop();
}

// Redis drops the loop's connection before the loop has seen it. A lookup
// sent then fails, and says so: from inside a reply callback (hiredis 0.14
// would free the connection under its own reply loop if we wrote there),
// and from outside one, where the write fails in Start and its Done must
// still run later, not inside Start.
TEST(LoopLookupsTest, ALookupOnAConnectionRedisDroppedFailsCleanly) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  const ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Query(redis, {"HSET", "test:obj:" + id.Hex(), "n1", "1:0:-"}).ok());
  auto kill = [&] {
    ASSERT_TRUE(Query(redis, {"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}).ok());
    std::this_thread::sleep_for(20ms);  // the close reaches our side
  };
  for (bool from_reply : {true, false}) {
    SCOPED_TRACE(from_reply ? "from a reply" : "from a timer");
    Directory reader(Options(redis, "reader"));
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok());
    EventLoop* l = loop->get();
    LoopLookups lookups(l, &reader);
    std::optional<Result<std::vector<ObjectLocationRecord>>> first, second;
    bool started = false, in_start = false, done_in_start = false;
    auto start_second = [&] {
      in_start = true;
      const bool sent = lookups.Start(id, [&](Result<std::vector<ObjectLocationRecord>> r) {
        done_in_start = in_start;
        second = std::move(r);
      });
      in_start = false;
      if (!sent) second = Status::Disconnected("refused at once");
    };
    const int64_t deadline = MonoMicros() + 20'000'000;
    std::function<void()> tick = [&] {
      if (!started) {
        started = lookups.Start(id, [&](Result<std::vector<ObjectLocationRecord>> r) {
          first = std::move(r);
          kill();
          if (from_reply) start_second();
        });
      } else if (first && !from_reply && !second) {
        start_second();
      }
      if (second || MonoMicros() > deadline) {
        l->Stop();
        return;
      }
      l->AddTimerAfter(1000, tick);
    };
    l->Post(tick);
    ASSERT_TRUE(l->Run().ok());
    ASSERT_TRUE(first && first->ok()) << (first ? first->status().ToString() : "no answer");
    ASSERT_TRUE(second.has_value());
    EXPECT_FALSE(second->ok());
    EXPECT_FALSE(done_in_start);
  }
}

TEST(LoopLookupsTest, FindOnTheLoopWhatTheBlockingLookupFinds) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  // The same server over TCP too (a second listener of its own).
  const std::string dir = testing::TempDir();
  int port = 20000 + (::getpid() + 7919) % 20000;
  cluster::RedisOptions o;
  o.dir = dir;
  o.extra = {"--port", std::to_string(port), "--bind", "127.0.0.1", "--loglevel", "warning"};
  cluster::Redis tcp(o);
  ASSERT_TRUE(tcp.Start().ok());
  DirectoryOptions po = Options(redis, "node-a");
  po.redis = "127.0.0.1:" + std::to_string(port);
  Directory publisher(po);
  publisher.Start();
  std::vector<ObjectID> ids;
  for (int i = 0; i < 5; i++) {
    ids.push_back(ObjectID::Random());
    publisher.Publish(ids.back(), 100 + i, 0, true, 7);
  }
  ObjectID nowhere = ObjectID::Random();
  ASSERT_TRUE(Eventually([&] {
    auto r = publisher.Lookup(ids.back());
    return r.ok() && r->size() == 1;
  }));
  for (const std::string& addr : {po.redis, std::string("localhost:") + std::to_string(port)}) {
    SCOPED_TRACE(addr);
    DirectoryOptions ro = po;
    ro.node_id = "reader";
    ro.redis = addr;
    ro.node_cache_ms = 60000;  // the passes below rely on it, however slow the machine
    Directory reader(ro);
    std::vector<ObjectID> asked = ids;
    asked.push_back(nowhere);
    std::vector<Result<std::vector<ObjectLocationRecord>>> got;
    bool on_loop = LookUpOnALoop(&reader, asked, &got);
    if (addr.rfind("localhost", 0) == 0) {
      // A host name would be resolved on the loop, blocking: refused, the
      // worker looks it up.
      EXPECT_FALSE(on_loop);
      continue;
    }
    ASSERT_TRUE(on_loop);
    // Fresh, then with the node records the fresh lookups cached (an HSCAN
    // each), then with a damaged record among them (the HSCAN's error sends
    // that one to the script, behind the others).
    for (int pass = 0; pass < 3; pass++) {
      SCOPED_TRACE(pass);
      std::vector<ObjectID> these = asked;
      const ObjectID damaged = ObjectID::Random();
      if (pass == 2) {
        ASSERT_TRUE(cluster::RedisQuery(tcp.socket(), {"SET", reader.ObjectKey(damaged), "x"}).ok());
        these.insert(these.begin() + 2, damaged);
      }
      if (pass > 0) {
        got.clear();
        ASSERT_TRUE(LookUpOnALoop(&reader, these, &got, NodeRecords::kCached));
      }
      if (pass == 2) {
        EXPECT_TRUE(got[2].status().IsCorruption()) << got[2].status().ToString();
        got.erase(got.begin() + 2);
      }
      for (size_t i = 0; i < ids.size(); i++) {
        ASSERT_TRUE(got[i].ok()) << got[i].status().ToString();
        ASSERT_EQ(got[i]->size(), 1u);
        EXPECT_EQ((*got[i])[0].node_id, "node-a");
        EXPECT_EQ((*got[i])[0].data_size, 100u + i);
        EXPECT_TRUE((*got[i])[0].alive);
        EXPECT_EQ((*got[i])[0].node_cached, pass > 0);
      }
      ASSERT_TRUE(got.back().ok()) << got.back().status().ToString();
      EXPECT_TRUE(got.back()->empty());
    }
  }
  // Nobody listening: nothing hangs, Start keeps refusing (the worker
  // looks up and says why).
  {
    DirectoryOptions ro = po;
    ro.redis = "127.0.0.1:1";
    Directory reader(ro);
    std::vector<Result<std::vector<ObjectLocationRecord>>> got;
    EXPECT_FALSE(LookUpOnALoop(&reader, {ids[0]}, &got));
  }
  publisher.Stop();
  tcp.Kill();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace plasmon
