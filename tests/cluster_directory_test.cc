// Stores in a cluster publish where their objects are: a real redis-server,
// real store processes (issue 3, the directory part).
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "plasmon/client.h"
#include "tests/redis_process.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using namespace std::chrono_literals;
using testing::RedisProcess;
using testing::StoreProcess;

std::vector<std::string> NodeArgs(const RedisProcess& redis, const std::string& node) {
  return {"-m", "64M", "--redis", redis.address(), "--node-id", node, "--node-ttl-ms", "1000"};
}

// Polls Where on `c` until `pred` holds (20 s at most).
template <typename P>
bool WhereEventually(Client& c, const ObjectID& id, P pred) {
  for (int i = 0; i < 2000; i++) {
    auto w = c.Where(id);
    if (w.ok() && pred(*w)) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

bool HeldBy(const std::vector<ObjectHolder>& hs, const std::string& node, bool alive = true) {
  for (const ObjectHolder& h : hs)
    if (h.node_id == node && h.alive == alive) return true;
  return false;
}

class ClusterDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.started());
    ASSERT_TRUE(a_.started() && b_.started());
    ASSERT_TRUE(ca_.Connect(a_.socket()).ok());
    ASSERT_TRUE(cb_.Connect(b_.socket()).ok());
  }
  RedisProcess redis_;
  StoreProcess a_{NodeArgs(redis_, "node-a")};
  StoreProcess b_{NodeArgs(redis_, "node-b")};
  Client ca_, cb_;
};

TEST_F(ClusterDirectoryTest, SealPublishesAndDeleteWithdraws) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(ca_.CreateAndSeal(id, "hello", "m").ok());
  ASSERT_TRUE(WhereEventually(cb_, id, [](const auto& hs) { return HeldBy(hs, "node-a"); }));
  auto w = cb_.Where(id);
  ASSERT_EQ(w->size(), 1u);
  EXPECT_EQ((*w)[0].data_size, 5u);
  EXPECT_EQ((*w)[0].metadata_size, 1u);
  EXPECT_TRUE((*w)[0].digest_valid);
  ASSERT_TRUE((*ca_.Delete({id}))[0].ok());
  EXPECT_TRUE(WhereEventually(cb_, id, [](const auto& hs) { return hs.empty(); }));
}

TEST_F(ClusterDirectoryTest, CliWhereNamesTheHolders) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(ca_.CreateAndSeal(id, "12345").ok());
  ASSERT_TRUE(WhereEventually(cb_, id, [](const auto& hs) { return !hs.empty(); }));
  auto r = testing::RunCommand({testing::CliBinary(), "--socket", b_.socket(), "where", id.Hex()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "node-a\t5 bytes\n");
  auto none = testing::RunCommand(
      {testing::CliBinary(), "--socket", b_.socket(), "where", ObjectID::Random().Hex()});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("is on no node"), std::string::npos);
}

TEST_F(ClusterDirectoryTest, BothHoldersAreListedAndEvictionWithdraws) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(ca_.CreateAndSeal(id, "x").ok());
  ASSERT_TRUE(cb_.CreateAndSeal(id, "x").ok());
  ASSERT_TRUE(WhereEventually(ca_, id, [](const auto& hs) {
    return HeldBy(hs, "node-a") && HeldBy(hs, "node-b");
  }));
  ASSERT_TRUE(cb_.Evict(1).ok());
  EXPECT_TRUE(WhereEventually(ca_, id, [](const auto& hs) {
    return hs.size() == 1 && HeldBy(hs, "node-a");
  }));
}

TEST_F(ClusterDirectoryTest, LocalWorkGoesOnWithoutRedisAndLocationsComeBack) {
  ObjectID before = ObjectID::Random(), during = ObjectID::Random();
  ASSERT_TRUE(ca_.CreateAndSeal(before, "1").ok());
  ASSERT_TRUE(WhereEventually(cb_, before, [](const auto& hs) { return !hs.empty(); }));
  redis_.Kill();
  // The store serves as before; only Where reports the outage.
  ASSERT_TRUE(ca_.CreateAndSeal(during, "2").ok());
  EXPECT_EQ((*ca_.Get({during}, 0))[0].view(), "2");
  auto w = ca_.Where(before);
  EXPECT_TRUE(w.status().IsDisconnected()) << w.status().ToString();
  ASSERT_TRUE(redis_.Start());  // empty: everything must be published again
  EXPECT_TRUE(WhereEventually(cb_, before, [](const auto& hs) { return HeldBy(hs, "node-a"); }));
  EXPECT_TRUE(WhereEventually(cb_, during, [](const auto& hs) { return HeldBy(hs, "node-a"); }));
}

TEST_F(ClusterDirectoryTest, AKilledStoresRecordExpires) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(ca_.CreateAndSeal(id, "x").ok());
  ASSERT_TRUE(WhereEventually(cb_, id, [](const auto& hs) { return HeldBy(hs, "node-a"); }));
  ::kill(a_.pid(), SIGKILL);
  EXPECT_TRUE(
      WhereEventually(cb_, id, [](const auto& hs) { return HeldBy(hs, "node-a", /*alive=*/false); }));
}

TEST(ClusterDirectorySingleNodeTest, WhereOnAStoreOutsideAClusterIsAClearError) {
  StoreProcess store({"-m", "16M"});
  ASSERT_TRUE(store.started());
  Client c;
  ASSERT_TRUE(c.Connect(store.socket()).ok());
  auto w = c.Where(ObjectID::Random());
  EXPECT_TRUE(w.status().IsInvalidArgument());
  EXPECT_NE(w.status().message().find("--redis"), std::string::npos);
}

TEST(ClusterDirectorySingleNodeTest, AStoreStartsEvenWhenRedisIsDown) {
  StoreProcess store({"-m", "16M", "--redis", "unix:/tmp/plasmon-no-redis-here.sock",
                      "--node-id", "lonely"});
  ASSERT_TRUE(store.started());
  Client c;
  ASSERT_TRUE(c.Connect(store.socket()).ok());
  ObjectID id = ObjectID::Random();
  EXPECT_TRUE(c.CreateAndSeal(id, "works").ok());
  EXPECT_TRUE(*c.Contains(id));
  EXPECT_TRUE(c.Where(id).status().IsDisconnected());
}

TEST(ClusterDirectorySingleNodeTest, RedisAuthWithTheRightPasswordAndAClearErrorWithAWrongOne) {
  testing::RedisProcess redis("a redis password");
  ASSERT_TRUE(redis.started());
  std::string pw = testing::TempDir() + "/pw";
  std::ofstream(pw) << "a redis password\n";
  StoreProcess good({"-m", "16M", "--redis", redis.address(), "--redis-password-file", pw,
                     "--node-id", "authed"});
  ASSERT_TRUE(good.started());
  Client c;
  ASSERT_TRUE(c.Connect(good.socket()).ok());
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(c.CreateAndSeal(id, "published").ok());
  bool listed = false;
  for (int i = 0; i < 500 && !listed; i++) {
    auto w = c.Where(id);
    listed = w.ok() && w->size() == 1 && (*w)[0].node_id == "authed";
    if (!listed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(listed) << good.Log();
  // A wrong password: local work goes on, and the log says why Redis is out.
  StoreProcess bad({"-m", "16M", "--redis", redis.address(), "--redis-password", "wrong",
                    "--node-id", "intruder"});
  ASSERT_TRUE(bad.started());
  Client cb;
  ASSERT_TRUE(cb.Connect(bad.socket()).ok());
  EXPECT_TRUE(cb.CreateAndSeal(ObjectID::Random(), "local").ok());
  bool logged = false;
  for (int i = 0; i < 500 && !logged; i++) {
    logged = bad.Log().find("refused the password") != std::string::npos;
    if (!logged) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(logged) << bad.Log();
  EXPECT_FALSE(cb.Where(id).ok());
}

}  // namespace
}  // namespace plasmon
