// Cross-node Fetch: a real redis-server and three real stores, each in its
// own network namespace, pulling objects from each other over TCP (issue 3).
// Waits are bounded and generous; nothing here asserts a duration.
#include <fstream>
#include <memory>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "plasmon/client.h"
#include "tests/cluster_util.h"
#include "tests/netns.h"
#include "tests/redis_process.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using namespace std::chrono_literals;
using testing::NetNamespaces;
using testing::RedisProcess;
using testing::StoreProcess;
using testing::Bytes;
using testing::FetchOne;
using testing::HasBytes;
using testing::kTimeoutMs;
using testing::Put;

class ClusterFetchTest : public ::testing::Test {
 protected:
  static constexpr int kNodes = 3;

  void SetUp() override {
    ASSERT_TRUE(net_.ok()) << net_.error();
    ASSERT_TRUE(redis_.started());
    secret_ = testing::TempDir() + "/secret";
    std::ofstream(secret_) << "a shared secret for the test cluster\n";
    for (int i = 1; i <= kNodes; i++) ASSERT_TRUE(StartNode(i));
  }

  // `extra`: more flags (not those given here).
  std::vector<std::string> NodeArgs(int i, int port = 7400, int ttl_ms = 1000,
                                    const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"-m",          "256M",
                                     "--redis",     redis_.address(),
                                     "--node-id",   "node-" + std::to_string(i),
                                     "--node-ttl-ms", std::to_string(ttl_ms),
                                     "--listen",    net_.address(i) + ":" + std::to_string(port),
                                     "--cluster-secret-file", secret_};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  bool StartNode(int i, int port = 7400, int ttl_ms = 1000,
                 const std::vector<std::string>& extra = {}) {
    clients_[i] = std::make_unique<Client>();
    stores_[i] = std::make_unique<StoreProcess>(NodeArgs(i, port, ttl_ms, extra), net_.ns(i));
    return stores_[i]->started() && clients_[i]->Connect(stores_[i]->socket()).ok();
  }
  Client& c(int i) { return *clients_[i]; }
  StoreProcess& store(int i) { return *stores_[i]; }

  // Waits until the directory lists `node` as a live holder of `id`.
  bool Published(int via, const ObjectID& id, const std::string& node) {
    return testing::Published(c(via), id, node);
  }

  NetNamespaces net_{kNodes};
  RedisProcess redis_;
  std::string secret_;
  std::unique_ptr<StoreProcess> stores_[kNodes + 1];
  std::unique_ptr<Client> clients_[kNodes + 1];
};

TEST_F(ClusterFetchTest, FetchesEverySizeClassIntact) {
  // Empty, tiny, one page, past the seal-digest cap, one chunk, just past it
  // (two chunks), and many chunks over parallel connections.
  const std::vector<size_t> sizes = {0, 1, 4096, (64u << 10) + 1, 1u << 20, (4u << 20) + 1, 40u << 20};
  for (size_t i = 0; i < sizes.size(); i++) {
    SCOPED_TRACE("size " + std::to_string(sizes[i]));
    ObjectID id = ObjectID::Random();
    std::string data = Bytes(sizes[i], i), meta = i % 2 ? "meta-" + std::to_string(i) : "";
    ASSERT_TRUE(Put(c(1), id, data, meta).ok());
    Status st = FetchOne(c(2), id);
    ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << store(2).Log();
    EXPECT_TRUE(HasBytes(c(2), id, data, meta));
    // The fetched copy is an ordinary local object, and is published.
    EXPECT_TRUE(Published(3, id, "node-2"));
  }
}

TEST_F(ClusterFetchTest, AFetchReportsWhereItsTimeWent) {
  // Stages the store measured must fit inside its own time for the request
  // (each is cut to whole microseconds: at most 1 us each is lost).
  auto consistent = [](const FetchReport& r) {
    const FetchReport::Id& x = r.ids.at(0);
    uint64_t sum = uint64_t{x.lookup_us} + x.queue_us + x.dispatch_us + x.transfer_us +
                   x.digest_us + x.back_us + x.seal_us;
    return sum <= uint64_t{r.in_store_us} + 7;
  };
  auto fetch = [&](const ObjectID& id, FetchReport* r) {
    auto res = c(2).Fetch({id}, kTimeoutMs, r);
    return res.ok() && (*res)[0].ok() && r->ids.size() == 1;
  };
  // The first pull from node 1 makes a connection (on a transfer thread);
  // the next small ones use it from the store's loop, without a hand-off.
  ObjectID first = ObjectID::Random(), small = ObjectID::Random(), large = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), first, Bytes(4096, 1)).ok());
  ASSERT_TRUE(Put(c(1), small, Bytes(4096, 2)).ok());
  ASSERT_TRUE(Put(c(1), large, Bytes(1u << 20, 3)).ok());
  FetchReport r;
  ASSERT_TRUE(fetch(first, &r));
  EXPECT_TRUE(r.ids[0].pulled);
  EXPECT_FALSE(r.ids[0].on_loop);
  EXPECT_FALSE(r.ids[0].cached_location);
  EXPECT_TRUE(consistent(r));
  ASSERT_TRUE(fetch(small, &r));
  EXPECT_TRUE(r.ids[0].pulled);
  EXPECT_TRUE(r.ids[0].on_loop);
  EXPECT_FALSE(r.ids[0].rdma);
  EXPECT_EQ(r.ids[0].bytes, 4096u);
  EXPECT_TRUE(consistent(r));
  EXPECT_TRUE(HasBytes(c(2), small, Bytes(4096, 2)));
  // Deleted here and fetched again: its holder is in the location cache.
  auto del = c(2).Delete({small});
  ASSERT_TRUE(del.ok() && (*del)[0].ok());
  ASSERT_TRUE(fetch(small, &r));
  EXPECT_TRUE(r.ids[0].pulled);
  EXPECT_TRUE(r.ids[0].cached_location);
  // A large object goes to a transfer thread.
  ASSERT_TRUE(fetch(large, &r));
  EXPECT_TRUE(r.ids[0].pulled);
  EXPECT_FALSE(r.ids[0].on_loop);
  EXPECT_GT(r.ids[0].transfer_us, 0u);
  EXPECT_TRUE(consistent(r));
  EXPECT_TRUE(HasBytes(c(2), large, Bytes(1u << 20, 3)));
  // Local already: nothing was pulled.
  ASSERT_TRUE(fetch(large, &r));
  EXPECT_FALSE(r.ids[0].pulled);
}

TEST_F(ClusterFetchTest, LookupsGoOnAfterRedisForgetsTheirScript) {
  // Lookups name their script by its SHA1; a Redis that restarted, failed
  // over or flushed its scripts answers NOSCRIPT, and they send it again.
  ObjectID first = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), first, "before the flush").ok());
  ASSERT_TRUE(FetchOne(c(2), first).ok());
  for (int round = 0; round < 2; round++) {
    redis_.Integer({"SCRIPT", "FLUSH"});
    std::vector<ObjectID> ids;
    for (int i = 0; i < 6; i++) {  // several lookups in flight at once
      ids.push_back(ObjectID::Random());
      ASSERT_TRUE(Put(c(1), ids.back(), Bytes(100, 10 * round + i)).ok());
    }
    auto r = c(2).Fetch(ids, kTimeoutMs);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (size_t i = 0; i < ids.size(); i++) {
      EXPECT_TRUE((*r)[i].ok()) << (*r)[i].ToString() << "\n" << store(2).Log();
      EXPECT_TRUE(HasBytes(c(2), ids[i], Bytes(100, 10 * round + static_cast<int>(i))));
    }
  }
}

TEST_F(ClusterFetchTest, ASmallFetchFromARestartedHolderDialsAgain) {
  // Node 2 keeps its connection to node 1 for the next pull; node 1 then
  // restarts on the same address. The store's loop takes that connection
  // without checking it, finds it dead before any answer, and the pull goes
  // again on a new connection: the fetch succeeds.
  ObjectID before = ObjectID::Random(), after = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), before, Bytes(4096, 1)).ok());
  ASSERT_TRUE(FetchOne(c(2), before).ok());
  store(1).Kill();
  ASSERT_TRUE(StartNode(1));
  ASSERT_TRUE(Put(c(1), after, Bytes(4096, 2)).ok());
  ASSERT_TRUE(Published(2, after, "node-1"));
  Status st = FetchOne(c(2), after);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << store(2).Log();
  EXPECT_TRUE(HasBytes(c(2), after, Bytes(4096, 2)));
}

// How many times `store`'s log says a pull of `id` failed.
size_t FailedPulls(StoreProcess& store, const ObjectID& id) {
  const std::string log = store.Log(), needle = "fetch " + id.Hex() + ": pull from";
  size_t n = 0;
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) n++;
  return n;
}

// Waits (asking Redis itself, not a store: a store's Where would renew its
// cache of node records) until `node` is listed as a holder of `id`.
bool ListedInRedis(const RedisProcess& redis, const ObjectID& id, const std::string& node) {
  for (int i = 0; i < 2000; i++) {
    auto r = cluster::RedisQuery(redis.socket(), {"HEXISTS", "plasmon:obj:" + id.Hex(), node});
    if (r.ok() && !r->empty() && (*r)[0] == "1") return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

TEST_F(ClusterFetchTest, AHolderThatMovedIsFoundAtItsNewAddress) {
  // Node 2's lookups reuse node 1's record (its endpoint; cached for a
  // minute here, so that a slow machine cannot let it expire); node 1 then
  // restarts on another port. The first pull goes to the old address, is
  // refused, and the fetch looks up afresh: it succeeds.
  store(2).Kill();
  ASSERT_TRUE(StartNode(2, 7400, 1000, {"--node-cache-ms", "60000"}));
  ObjectID before = ObjectID::Random(), after = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), before, Bytes(4096, 1)).ok());
  ASSERT_TRUE(ListedInRedis(redis_, before, "node-1"));
  ASSERT_TRUE(FetchOne(c(2), before).ok());
  store(1).Kill();
  ASSERT_TRUE(StartNode(1, 7401));
  ASSERT_TRUE(Put(c(1), after, Bytes(4096, 3)).ok());
  ASSERT_TRUE(ListedInRedis(redis_, after, "node-1"));
  Status st = FetchOne(c(2), after);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << store(2).Log();
  EXPECT_TRUE(HasBytes(c(2), after, Bytes(4096, 3)));
  EXPECT_EQ(FailedPulls(store(2), after), 1u) << store(2).Log();  // the old address, once
}

TEST_F(ClusterFetchTest, AHolderDeadAtTheAddressItStillClaimsIsTriedOnce) {
  // Node 1 dies; its record lives on (10 s here) with the same endpoint. A
  // fetch that used the cached record fails there, looks up afresh, finds the
  // same holder at the same address, and reports the failure at once rather
  // than trying it a second time.
  store(1).Kill();
  ASSERT_TRUE(StartNode(1, 7400, 10000));
  store(2).Kill();
  ASSERT_TRUE(StartNode(2, 7400, 1000, {"--node-cache-ms", "60000"}));
  ObjectID before = ObjectID::Random(), id = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), before, Bytes(4096, 1)).ok());
  ASSERT_TRUE(Put(c(1), id, Bytes(4096, 2)).ok());
  ASSERT_TRUE(ListedInRedis(redis_, id, "node-1"));
  ASSERT_TRUE(FetchOne(c(2), before).ok());  // node 2 caches node 1's record
  store(1).Kill();
  Status st = FetchOne(c(2), id);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("failed from every holder"), std::string::npos) << st.ToString();
  EXPECT_EQ(FailedPulls(store(2), id), 1u) << store(2).Log();
}

TEST_F(ClusterFetchTest, GetWithFetchOptionPullsWhatIsMissing) {
  ObjectID here = ObjectID::Random(), there = ObjectID::Random(), nowhere = ObjectID::Random();
  ASSERT_TRUE(Put(c(2), here, "local").ok());
  ASSERT_TRUE(Put(c(1), there, "remote").ok());
  auto got = c(2).Get({here, there, nowhere}, 2000, GetOptions{true});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)[0].view(), "local");
  EXPECT_EQ((*got)[1].view(), "remote");
  EXPECT_FALSE((*got)[2].valid());
  EXPECT_TRUE((*got)[2].status().IsTimeout()) << (*got)[2].status().ToString();
}

TEST_F(ClusterFetchTest, SeveralFetchersOfOneObjectAllGetIt) {
  ObjectID id = ObjectID::Random();
  std::string data = Bytes(24u << 20, 7);
  ASSERT_TRUE(Put(c(1), id, data).ok());
  // Six fetches at once on node 2 (they share one transfer) and two on node 3.
  std::vector<std::thread> threads;
  std::vector<Status> results(8);
  for (int t = 0; t < 8; t++) {
    threads.emplace_back([&, t] { results[t] = FetchOne(c(t < 6 ? 2 : 3), id); });
  }
  for (auto& t : threads) t.join();
  for (const Status& st : results) EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(HasBytes(c(2), id, data));
  EXPECT_TRUE(HasBytes(c(3), id, data));
  auto stats = c(2).Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->object_count, 1u);  // node 2 holds the object once
}

TEST_F(ClusterFetchTest, ChainFetchesFromTheNodeThatFetchedIt) {
  ObjectID id = ObjectID::Random();
  std::string data = Bytes(3u << 20, 11);
  ASSERT_TRUE(Put(c(1), id, data).ok());
  ASSERT_TRUE(FetchOne(c(2), id).ok());
  ASSERT_TRUE(Published(3, id, "node-2"));
  // Node 1 lets go of it: node 3 can only get it from node 2. Node 1 may
  // still hold a pin of node 2's pull (released just after the bytes went):
  // then the delete is deferred (ObjectInUse), the object invisible at once.
  auto del = c(1).Delete({id});
  ASSERT_TRUE(del.ok());
  ASSERT_TRUE((*del)[0].ok() || (*del)[0].code() == StatusCode::kObjectInUse) << (*del)[0].ToString();
  Status st = FetchOne(c(3), id);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << store(3).Log();
  EXPECT_TRUE(HasBytes(c(3), id, data));
}

TEST_F(ClusterFetchTest, WaitsForAnObjectSealedLaterElsewhere) {
  ObjectID id = ObjectID::Random();
  Status st;
  std::thread fetcher([&] { st = FetchOne(c(2), id); });
  std::this_thread::sleep_for(300ms);  // the fetch is parked, subscribed
  ASSERT_TRUE(Put(c(1), id, "late").ok());
  fetcher.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(HasBytes(c(2), id, "late"));
}

TEST_F(ClusterFetchTest, AnIdThatNeverAppearsTimesOut) {
  ObjectID id = ObjectID::Random();
  Status st = FetchOne(c(2), id, 500);
  EXPECT_TRUE(st.IsTimeout()) << st.ToString();
  // Timeout 0: no waiting for it to appear.
  st = FetchOne(c(2), id, 0);
  EXPECT_TRUE(st.IsObjectNotFound()) << st.ToString();
  EXPECT_TRUE(store(2).Alive());
  auto contains = c(2).Contains(id);
  ASSERT_TRUE(contains.ok());
  EXPECT_FALSE(*contains);
}

TEST_F(ClusterFetchTest, FallsBackToAnotherHolderWhenOneIsDead) {
  // Twenty objects on nodes 1 and 2; node 1 then dies without a word. Its
  // record lives on until its TTL passes, so node 3 sees two candidates and
  // (picking at random) tries the dead one first for about half of them.
  std::vector<ObjectID> ids;
  std::vector<std::string> datas;
  for (int i = 0; i < 20; i++) {
    ids.push_back(ObjectID::Random());
    datas.push_back(Bytes(64u << 10, 100 + i));
    ASSERT_TRUE(Put(c(1), ids.back(), datas.back()).ok());
    ASSERT_TRUE(FetchOne(c(2), ids.back()).ok());
  }
  ASSERT_TRUE(Published(3, ids.back(), "node-2"));
  store(1).Kill();
  auto r = c(3).Fetch(ids, kTimeoutMs);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (size_t i = 0; i < ids.size(); i++) {
    EXPECT_TRUE((*r)[i].ok()) << (*r)[i].ToString();
    EXPECT_TRUE(HasBytes(c(3), ids[i], datas[i]));
  }
}

TEST_F(ClusterFetchTest, HolderKilledMidTransferFailsCleanly) {
  // Node 1 alone holds 64 MiB and sends at 100 Mbit/s: the transfer takes
  // about 5 s, and node 1 is killed one second into it.
  ASSERT_TRUE(net_.LimitRate(1, "100mbit"));
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), id, Bytes(64u << 20, 3)).ok());
  ASSERT_TRUE(Published(2, id, "node-1"));
  Status st;
  std::thread fetcher([&] { st = FetchOne(c(2), id); });
  std::this_thread::sleep_for(1s);
  store(1).Kill();
  fetcher.join();
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(st.IsDisconnected()) << st.ToString();
  // Nothing partial is visible and no memory is held.
  auto contains = c(2).Contains(id);
  ASSERT_TRUE(contains.ok());
  EXPECT_FALSE(*contains);
  auto stats = c(2).Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->object_count, 0u);
  EXPECT_EQ(stats->used, 0u);
  EXPECT_TRUE(store(2).Alive());
}

TEST_F(ClusterFetchTest, HolderKilledMidTransferFallsBackToTheOther) {
  // Both 1 and 3 hold it, both send slowly; whichever node 2 pulls from
  // first is killed mid-transfer.
  ASSERT_TRUE(net_.LimitRate(1, "200mbit"));
  ASSERT_TRUE(net_.LimitRate(3, "200mbit"));
  ObjectID id = ObjectID::Random();
  std::string data = Bytes(32u << 20, 5);
  ASSERT_TRUE(Put(c(1), id, data).ok());
  ASSERT_TRUE(Put(c(3), id, data).ok());
  ASSERT_TRUE(Published(2, id, "node-1"));
  ASSERT_TRUE(Published(2, id, "node-3"));
  Status st;
  std::thread fetcher([&] { st = FetchOne(c(2), id); });
  std::this_thread::sleep_for(500ms);
  store(1).Kill();  // if node 2 was pulling from 3, this changes nothing
  fetcher.join();
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << store(2).Log();
  EXPECT_TRUE(HasBytes(c(2), id, data));
}

TEST_F(ClusterFetchTest, DeadStoreRecordExpiresAndFetchesSkipIt) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), id, "only on node 1").ok());
  ASSERT_TRUE(Published(2, id, "node-1"));
  store(1).Kill();
  // The record expires (TTL 1 s): node 1 is listed as dead, then not tried.
  bool dead = false;
  for (int i = 0; i < 1000 && !dead; i++) {
    auto w = c(2).Where(id);
    dead = w.ok() && !w->empty() && !(*w)[0].alive;
    if (!dead) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(dead);
  Status st = FetchOne(c(2), id, 0);
  EXPECT_TRUE(st.IsObjectNotFound()) << st.ToString();
  // Another copy appears on node 3: now the fetch succeeds from there.
  ASSERT_TRUE(Put(c(3), id, "only on node 1").ok());
  st = FetchOne(c(2), id);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(HasBytes(c(2), id, "only on node 1"));
}

TEST_F(ClusterFetchTest, RedisRestartLocalWorkGoesOnAndLocationsComeBack) {
  ObjectID before = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), before, "published before the outage").ok());
  ASSERT_TRUE(Published(2, before, "node-1"));
  redis_.Kill();
  // Local work goes on.
  ObjectID during = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), during, "sealed during the outage").ok());
  EXPECT_TRUE(HasBytes(c(1), during, "sealed during the outage"));
  // A fetch cannot find anything: it fails in time, with a reason.
  Status st = FetchOne(c(2), during, 1000);
  EXPECT_TRUE(st.IsTimeout()) << st.ToString();
  ASSERT_TRUE(redis_.Start());  // empty: the stores must re-publish
  ASSERT_TRUE(Published(2, before, "node-1"));
  ASSERT_TRUE(Published(2, during, "node-1"));
  st = FetchOne(c(2), during);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(HasBytes(c(2), during, "sealed during the outage"));
}

TEST_F(ClusterFetchTest, PeerWithoutTheSecretIsRefused) {
  std::string wrong = testing::TempDir() + "/wrong";
  std::ofstream(wrong) << "not the cluster's secret\n";
  // An intruder in node 3's namespace, on another port, with the wrong secret.
  StoreProcess intruder({"-m", "64M", "--redis", redis_.address(), "--node-id", "intruder",
                         "--listen", net_.address(3) + ":7401", "--cluster-secret-file", wrong},
                        net_.ns(3));
  ASSERT_TRUE(intruder.started());
  Client ci;
  ASSERT_TRUE(ci.Connect(intruder.socket()).ok());
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), id, "secret data").ok());
  Status st = FetchOne(ci, id, 5000);
  EXPECT_TRUE(st.IsPermissionDenied()) << st.ToString();
  auto contains = ci.Contains(id);
  ASSERT_TRUE(contains.ok());
  EXPECT_FALSE(*contains);
  // The holder logs the refusal when it sees the intruder hang up: wait for it.
  bool logged = false;
  for (int i = 0; i < 1000 && !logged; i++) {
    logged = store(1).Log().find("failed the handshake") != std::string::npos;
    if (!logged) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(logged) << store(1).Log();
  // The cluster's own members still fetch from node 1.
  EXPECT_TRUE(FetchOne(c(2), id).ok());
}

TEST_F(ClusterFetchTest, AnObjectBeingSentIsNotEvicted) {
  // Node 1 sends a 64 MiB object slowly while its client fills the store
  // (256 MiB) three times over: the pinned object must survive, intact.
  ASSERT_TRUE(net_.LimitRate(1, "200mbit"));
  ObjectID id = ObjectID::Random();
  std::string data = Bytes(64u << 20, 9);
  ASSERT_TRUE(Put(c(1), id, data).ok());
  ASSERT_TRUE(Published(2, id, "node-1"));
  Status st;
  std::thread fetcher([&] { st = FetchOne(c(2), id); });
  std::this_thread::sleep_for(500ms);
  int created = 0;
  for (int i = 0; i < 24; i++) {
    auto b = c(1).Create(ObjectID::Random(), 32u << 20);
    if (!b.ok()) continue;  // no room: the pinned object is not evictable
    std::memset(b->data, i, 32u << 20);
    ASSERT_TRUE(c(1).Seal(b->id).ok());
    created++;
  }
  EXPECT_GT(created, 0);
  fetcher.join();
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << store(2).Log();
  EXPECT_TRUE(HasBytes(c(2), id, data));
}

TEST_F(ClusterFetchTest, AFetchWaitingOnALocalCreatorFetchesWhenItAborts) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), id, "the real one").ok());
  // A client of node 2 is creating the same ID.
  Client creator;
  ASSERT_TRUE(creator.Connect(store(2).socket()).ok());
  ASSERT_TRUE(creator.Create(id, 5).ok());
  // A fetch that would not wait is told at once.
  Status st = FetchOne(c(2), id, 0);
  EXPECT_TRUE(st.IsObjectNotSealed()) << st.ToString();
  // One that waits gets node 1's copy once the local creator gives up.
  std::thread fetcher([&] { st = FetchOne(c(2), id); });
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(creator.Abort(id).ok());
  fetcher.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(HasBytes(c(2), id, "the real one"));
}

TEST_F(ClusterFetchTest, AStaleCachedHolderFallsBackToTheDirectory) {
  // Node 2 learns (and caches) that node 1 holds the object, then lets its
  // copy go; node 1 dies and node 3 gets a copy. The cached location is dead:
  // the fetch must ask the directory again rather than fail.
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), id, "cached").ok());
  ASSERT_TRUE(FetchOne(c(2), id).ok());
  auto del = c(2).Delete({id});
  ASSERT_TRUE(del.ok() && (*del)[0].ok());
  store(1).Kill();
  ASSERT_TRUE(Put(c(3), id, "cached").ok());
  ASSERT_TRUE(Published(2, id, "node-3"));
  Status st = FetchOne(c(2), id);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(HasBytes(c(2), id, "cached"));
}

TEST_F(ClusterFetchTest, StopsCleanlyWithFetchesWaiting) {
  // Fetches parked on IDs no node holds; the store is stopped while a seal
  // of one of them arrives.
  std::vector<ObjectID> ids;
  for (int i = 0; i < 5; i++) ids.push_back(ObjectID::Random());
  std::thread fetcher([&] { (void)c(2).Fetch(ids, -1); });
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(Put(c(1), ids[0], "x").ok());
  EXPECT_EQ(store(2).Terminate(), 0);  // exit status 0: no crash
  fetcher.join();
}

}  // namespace
}  // namespace plasmon
