// Fetching against holders that do not answer, lie about sizes, or do not
// exist yet (issue 10): a real redis-server, two real stores on loopback,
// and records written into Redis as an attacker (or a hung node) leaves
// them. Bounds are deadlines with wide margins, never speeds.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "core/fd.h"
#include "plasmon/client.h"
#include "tests/cluster_util.h"
#include "tests/redis_process.h"
#include "tests/store_process.h"
#include "tools/cluster/services.h"
#include "transport/test_source.h"

namespace plasmon {
namespace {

using namespace std::chrono_literals;
using testing::Bytes;
using testing::FetchOne;
using testing::HasBytes;
using testing::Put;
using testing::RedisProcess;
using testing::StoreProcess;

// A TCP listener that accepts connections and never says a word (a tarpit,
// or a hung node whose record has not expired yet).
class Tarpit {
 public:
  Tarpit() {
    fd_ = ListenOnLoopback(&port_);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        held_.emplace_back(c);
        accepted_++;
      }
    });
  }
  ~Tarpit() {
    stop_ = true;
    thread_.join();
  }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }
  int accepted() const { return accepted_; }

 private:
  UniqueFd fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<UniqueFd> held_;  // the accept thread's alone
  std::thread thread_;
};

class FetchHardeningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.started());
    secret_ = testing::TempDir() + "/secret";
    std::ofstream(secret_) << "a shared secret for the test cluster\n";
    holder_ = std::make_unique<StoreProcess>(Args("node-b", "64M"));
    ASSERT_TRUE(holder_->started());
    ASSERT_TRUE(cb_.Connect(holder_->socket()).ok());
  }
  void StartFetcher(const std::string& memory = "64M", std::vector<std::string> more = {}) {
    std::vector<std::string> args = Args("node-a", memory);
    args.insert(args.end(), more.begin(), more.end());
    fetcher_ = std::make_unique<StoreProcess>(args);
    ASSERT_TRUE(fetcher_->started());
    ASSERT_TRUE(ca_.Connect(fetcher_->socket()).ok());
  }
  std::vector<std::string> Args(const std::string& node, const std::string& memory) {
    return {"-m",
            memory,
            "--redis",
            redis_.address(),
            "--node-id",
            node,
            "--node-ttl-ms",
            "1000",
            "--listen",
            "127.0.0.1:0",
            "--cluster-secret-file",
            secret_};
  }
  // One command to Redis, as anyone who can write to it could send.
  std::vector<std::string> Redis(const std::vector<std::string>& argv) {
    auto r = cluster::RedisQuery(redis_.socket(), argv);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<std::string>{};
  }
  // A node record that never expires, and `id` listed on it with these sizes.
  void ListOn(const std::string& node, const std::string& endpoint, const ObjectID& id,
              uint64_t data_size) {
    Redis({"HSET", "plasmon:node:" + node, "node_id", node, "ep:tcp", endpoint});
    Redis({"HSET", "plasmon:obj:" + id.Hex(), node, std::to_string(data_size) + ":0:-"});
  }
  long long CommandsProcessed() {
    std::vector<std::string> info = Redis({"INFO", "stats"});
    const std::string key = "total_commands_processed:";
    size_t at = info.empty() ? std::string::npos : info[0].find(key);
    return at == std::string::npos ? -1 : std::atoll(info[0].c_str() + at + key.size());
  }

  RedisProcess redis_;
  std::string secret_;
  std::unique_ptr<StoreProcess> holder_, fetcher_;
  Client ca_, cb_;
};

TEST_F(FetchHardeningTest, AnUnresponsiveHolderDoesNotStallOthersFetches) {
  // Eight IDs whose only listed holder accepts and never answers; a healthy
  // 4 KiB object on node-b. Transfers time out after 10 s of silence (the
  // default); the healthy fetch gets 5 s.
  StartFetcher();
  Tarpit tarpit;
  std::vector<ObjectID> stuck;
  for (int i = 0; i < 8; i++) {
    stuck.push_back(ObjectID::Random());
    ListOn("tarpit", tarpit.endpoint(), stuck.back(), 4096);
  }
  ObjectID healthy = ObjectID::Random();
  std::string data = Bytes(4096, 7);
  ASSERT_TRUE(Put(cb_, healthy, data).ok());
  ASSERT_TRUE(testing::Published(ca_, healthy, "node-b"));

  Result<std::vector<Status>> stuck_results = Status::OK();
  std::thread stuck_fetch([&] {
    Client c;
    ASSERT_TRUE(c.Connect(fetcher_->socket()).ok());
    stuck_results = c.Fetch(stuck, 8000);
  });
  for (int i = 0; i < 500 && tarpit.accepted() == 0; i++) std::this_thread::sleep_for(10ms);
  EXPECT_GT(tarpit.accepted(), 0) << "the stuck pulls never reached the tarpit";

  Status st = FetchOne(ca_, healthy, 5000);
  EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << fetcher_->Log();
  EXPECT_TRUE(HasBytes(ca_, healthy, data));

  // The stuck ones fail (the holder is unreachable) before their deadline,
  // rather than each waiting its turn for a silent holder.
  stuck_fetch.join();
  ASSERT_TRUE(stuck_results.ok()) << stuck_results.status().ToString();
  for (const Status& s : *stuck_results) EXPECT_TRUE(s.IsDisconnected()) << s.ToString();
  EXPECT_TRUE(fetcher_->Alive());
}

TEST_F(FetchHardeningTest, ASuspectHolderGoesLastWhileOthersHoldTheObject) {
  // A pull from the tarpit fails (by the dial deadline): it is suspect. For
  // the next eight objects, listed on the tarpit and on node-b, node-b goes
  // first: every fetch succeeds, and none dials the tarpit again.
  StartFetcher("64M", {"--dial-timeout-ms", "500"});
  Tarpit tarpit;
  ObjectID first = ObjectID::Random();
  ListOn("tarpit", tarpit.endpoint(), first, 4096);
  Status st = FetchOne(ca_, first, 15000);
  EXPECT_TRUE(st.IsDisconnected()) << st.ToString();
  const int dialed = tarpit.accepted();
  EXPECT_GT(dialed, 0);

  std::vector<ObjectID> ids;
  std::vector<std::string> datas;
  for (int i = 0; i < 8; i++) {
    ids.push_back(ObjectID::Random());
    datas.push_back(Bytes(4096, 300 + i));
    ASSERT_TRUE(Put(cb_, ids.back(), datas.back()).ok());
    ListOn("tarpit", tarpit.endpoint(), ids.back(), 4096);
  }
  ASSERT_TRUE(testing::Published(ca_, ids.back(), "node-b"));
  auto r = ca_.Fetch(ids, 5000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (size_t i = 0; i < ids.size(); i++) {
    EXPECT_TRUE((*r)[i].ok()) << (*r)[i].ToString();
    EXPECT_TRUE(HasBytes(ca_, ids[i], datas[i]));
  }
  EXPECT_EQ(tarpit.accepted(), dialed);
}

TEST_F(FetchHardeningTest, AFailedHolderIsNotDialledAgainByTheNextQueuedPull) {
  // Four objects on node-b (8 KiB each), each also listed on the tarpit at
  // 4 KiB: the smaller claim goes first, and one pull at a time per holder,
  // so three queue behind the first. When the first fails (the dial
  // deadline), the three move on to node-b at once: none of them dials the
  // tarpit as the suspect holder's probe (one did, and burned another dial
  // deadline and a transfer slot on a holder that had just failed).
  StartFetcher("64M", {"--dial-timeout-ms", "500", "--transfer-threads-per-holder", "1"});
  Tarpit tarpit;
  std::vector<ObjectID> ids;
  std::vector<std::string> datas;
  for (int i = 0; i < 4; i++) {
    ids.push_back(ObjectID::Random());
    datas.push_back(Bytes(8192, 400 + i));
    ASSERT_TRUE(Put(cb_, ids.back(), datas.back()).ok());
    ListOn("tarpit", tarpit.endpoint(), ids.back(), 4096);
  }
  ASSERT_TRUE(testing::Published(ca_, ids.back(), "node-b"));
  auto r = ca_.Fetch(ids, 10000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (size_t i = 0; i < ids.size(); i++) {
    EXPECT_TRUE((*r)[i].ok()) << (*r)[i].ToString();
    EXPECT_TRUE(HasBytes(ca_, ids[i], datas[i]));
  }
  EXPECT_EQ(tarpit.accepted(), 1) << fetcher_->Log();
}

TEST_F(FetchHardeningTest, ADialDeadlinePastTheHandshakeCutIsWarnedAbout) {
  // Holders cut a handshake at --peer-handshake-timeout-ms: a longer dial
  // deadline buys nothing, and the store says so at start (node-b, with the
  // defaults alike, does not).
  StartFetcher("64M", {"--dial-timeout-ms", "5000", "--peer-handshake-timeout-ms", "1000"});
  EXPECT_NE(fetcher_->Log().find("--dial-timeout-ms 5000 is longer than "
                                 "--peer-handshake-timeout-ms 1000"),
            std::string::npos)
      << fetcher_->Log();
  EXPECT_EQ(holder_->Log().find("--dial-timeout-ms"), std::string::npos) << holder_->Log();
}

TEST_F(FetchHardeningTest, AHolderClaimingATerabyteIsSkipped) {
  // node-b really holds eight objects. A fake holder claims 1 TiB for each;
  // for the last four, two fake holders do (so they outnumber the real one
  // and are tried first: their create fails, and the fetch moves on).
  StartFetcher();
  std::vector<ObjectID> ids;
  std::vector<std::string> datas;
  for (int i = 0; i < 8; i++) {
    ids.push_back(ObjectID::Random());
    datas.push_back(Bytes(64u << 10, 100 + i));
    ASSERT_TRUE(Put(cb_, ids.back(), datas.back()).ok());
  }
  ASSERT_TRUE(testing::Published(ca_, ids.back(), "node-b"));
  for (int i = 0; i < 8; i++) {
    ListOn("liar", "127.0.0.1:1", ids[i], 1ull << 40);
    if (i >= 4) ListOn("liar-2", "127.0.0.1:1", ids[i], 1ull << 40);
  }
  auto r = ca_.Fetch(ids, 10000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (size_t i = 0; i < ids.size(); i++) {
    EXPECT_TRUE((*r)[i].ok()) << (*r)[i].ToString();
    EXPECT_TRUE(HasBytes(ca_, ids[i], datas[i]));
  }
  EXPECT_NE(fetcher_->Log().find("disagree on its size"), std::string::npos) << fetcher_->Log();
}

TEST_F(FetchHardeningTest, AHolderLyingAboutTheSizeEvictsNothing) {
  // A 128 MiB store caches eight 8 MiB objects. Each of eight objects on
  // node-b is also claimed, at 100 MiB, by a fake holder: making room for
  // that would evict the cache.
  StartFetcher("128M");
  std::vector<ObjectID> cached;
  for (int i = 0; i < 8; i++) {
    cached.push_back(ObjectID::Random());
    ASSERT_TRUE(Put(ca_, cached.back(), Bytes(8u << 20, 50 + i)).ok());
  }
  std::vector<ObjectID> ids;
  std::vector<std::string> datas;
  for (int i = 0; i < 8; i++) {
    ids.push_back(ObjectID::Random());
    datas.push_back(Bytes(4096, 200 + i));
    ASSERT_TRUE(Put(cb_, ids.back(), datas.back()).ok());
  }
  ASSERT_TRUE(testing::Published(ca_, ids.back(), "node-b"));
  for (const ObjectID& id : ids) ListOn("liar", "127.0.0.1:1", id, 100u << 20);
  auto r = ca_.Fetch(ids, 10000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (size_t i = 0; i < ids.size(); i++) {
    EXPECT_TRUE((*r)[i].ok()) << (*r)[i].ToString();
    EXPECT_TRUE(HasBytes(ca_, ids[i], datas[i]));
  }
  for (const ObjectID& id : cached) {
    auto has = ca_.Contains(id);
    ASSERT_TRUE(has.ok());
    EXPECT_TRUE(*has) << id.Hex() << " was evicted";
  }
}

TEST_F(FetchHardeningTest, WaitingFetchesCostRedisAlmostNothing) {
  // One Fetch of 4096 IDs that exist nowhere, without a timeout. Once its
  // first lookups and subscriptions are done, Redis is asked far less than
  // once per waiting ID per recheck period (2 s)...
  StartFetcher();
  constexpr size_t kIds = 4096;
  std::vector<ObjectID> ids;
  for (size_t i = 0; i < kIds; i++) ids.push_back(ObjectID::Random());
  std::thread waiting([&] {
    Client c;
    ASSERT_TRUE(c.Connect(fetcher_->socket()).ok());
    (void)c.Fetch(ids, -1);  // ends when the store stops
  });
  // Settled: the first lookups (two per ID: before and after subscribing).
  long long before = CommandsProcessed();
  for (int i = 0; i < 40; i++) {
    std::this_thread::sleep_for(500ms);
    long long now = CommandsProcessed();
    bool quiet = now - before < 200;
    before = now;
    if (quiet && i >= 1) break;
  }
  std::this_thread::sleep_for(4s);  // two recheck periods
  long long during = CommandsProcessed() - before;
  EXPECT_LT(during, static_cast<long long>(kIds / 4));

  // ...and an object sealed meanwhile on another node still reaches it
  // through its seal channel.
  ASSERT_TRUE(Put(cb_, ids[17], "late").ok());
  bool arrived = false;
  for (int i = 0; i < 500 && !arrived; i++) {
    auto has = ca_.Contains(ids[17]);
    arrived = has.ok() && *has;
    if (!arrived) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(arrived) << fetcher_->Log();
  EXPECT_TRUE(HasBytes(ca_, ids[17], "late"));
  fetcher_->Terminate();
  waiting.join();
}

}  // namespace
}  // namespace plasmon
