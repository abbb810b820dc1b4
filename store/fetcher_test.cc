// The fetcher's location cache: entries expire, and beyond its capacity the
// least recently used one goes (not the whole cache, as it once did). And
// the fetcher itself against a real redis-server and a holder that never
// answers, where what is checked is internal (its queues).
#include "store/fetcher.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "core/fd.h"
#include "tests/redis_process.h"
#include "tools/cluster/services.h"
#include "transport/tcp_transport.h"
#include "transport/test_source.h"

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

class NoListener : public TableListener {
  void OnSealed(const ObjectEntry&) override {}
  void OnRemoved(const ObjectEntry&, Notification::Kind) override {}
};

// A holder at its limit (one pull at a time, that one hung on a holder that
// never answers its handshake) while a client fetches another object of it
// again and again, each Fetch expiring in its queue: the queue keeps no more
// stale entries than live ones (it kept one per expired Fetch, until the
// hung pull ended).
TEST(FetcherTest, AHolderAtItsLimitCollectsNoStaleQueueEntries) {
  using namespace std::chrono_literals;
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  // Listens and never accepts: connects complete, handshakes never do.
  uint16_t port = 0;
  UniqueFd silent = ListenOnLoopback(&port);
  const std::string endpoint = "127.0.0.1:" + std::to_string(port);
  ObjectID hung = ObjectID::Random(), waits = ObjectID::Random(), again = ObjectID::Random();
  auto query = [&](const std::vector<std::string>& argv) {
    ASSERT_TRUE(cluster::RedisQuery(redis.socket(), argv).ok()) << argv[0];
  };
  query({"HSET", "test:node:silent", "node_id", "silent", "ep:tcp", endpoint});
  for (const ObjectID& id : {hung, waits, again})
    query({"HSET", "test:obj:" + id.Hex(), "silent", "4096:0:-"});

  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  std::vector<uint8_t> arena(1 << 20);
  NoListener listener;
  ObjectTable table(arena.data(), arena.size(), &listener);
  DirectoryOptions o;
  o.redis = redis.address();
  o.prefix = "test";
  o.node_id = "node-a";
  Directory directory(o);
  TcpTransportOptions t;
  t.dial_timeout_ms = 60000;  // the hung pull lasts the test
  auto tcp = TcpTransport::Create(t);
  ASSERT_TRUE(tcp.ok());
  std::shared_ptr<Transport> transport = std::move(*tcp);
  std::atomic<int> replies{0};
  auto fetcher = std::make_unique<Fetcher>(
      loop->get(), &table, &directory, std::vector<std::shared_ptr<Transport>>{transport}, 2, 1,
      [&](uint32_t, uint64_t, protocol::FetchReply) { replies++; });
  std::thread run([&] { (void)(*loop)->Run(); });
  auto fetch = [&](uint32_t session, const ObjectID& id, int64_t timeout_ms) {
    (*loop)->Post([&fetcher, session, id, timeout_ms] {
      protocol::FetchRequest r;
      r.timeout_ms = timeout_ms;
      r.ids = {id};
      fetcher->Request(session, 1, std::move(r));
    });
  };
  auto queued_entries = [&] {
    std::promise<size_t> p;
    (*loop)->Post([&] { p.set_value(fetcher->QueuedEntries()); });
    return p.get_future().get();
  };
  fetch(2, hung, -1);  // takes the holder's one slot, for a minute
  fetch(4, waits, -1);  // queued behind it: one live entry
  for (int i = 0; i < 500 && queued_entries() == 0; i++) std::this_thread::sleep_for(10ms);
  const bool queued = queued_entries() == 1;
  EXPECT_TRUE(queued) << "the second fetch never queued";
  // Fetched again and again, each Fetch expiring while queued: its job is
  // dropped, and the next Fetch starts another (from the location cache).
  constexpr int kCycles = 40;
  for (int i = 0; queued && i < kCycles; i++) {
    const int before = replies;
    fetch(3, again, 20);
    for (int w = 0; w < 500 && replies == before; w++) std::this_thread::sleep_for(2ms);
  }
  std::this_thread::sleep_for(50ms);  // the last sweep
  EXPECT_LE(queued_entries(), 2u);

  (*loop)->Stop();
  run.join();
  fetcher->StopWatcher();
  transport->Shutdown();  // ends the hung pull
  fetcher->StopWorkers();
  fetcher.reset();
}

}  // namespace
}  // namespace plasmon
