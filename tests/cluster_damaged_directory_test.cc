// A poisoned or damaged directory (issue 10): real stores, a real
// redis-server whose records a test damages, and real fetches between the
// stores (each in its own network namespace).
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "plasmon/client.h"
#include "tests/cluster_util.h"
#include "tests/netns.h"
#include "tests/redis_process.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using testing::FetchOne;
using testing::HasBytes;
using testing::Put;
using testing::StoreProcess;

class DamagedDirectoryTest : public ::testing::Test {
 protected:
  static constexpr int kNodes = 2;

  void SetUp() override {
    ASSERT_TRUE(net_.ok()) << net_.error();
    ASSERT_TRUE(redis_.started());
    secret_ = testing::TempDir() + "/secret";
    std::ofstream(secret_) << "a shared secret for the test cluster\n";
    for (int i = 1; i <= kNodes; i++) {
      clients_[i] = std::make_unique<Client>();
      stores_[i] = std::make_unique<StoreProcess>(
          std::vector<std::string>{"-m", "64M", "--redis", redis_.address(), "--node-id",
                                   "node-" + std::to_string(i), "--node-ttl-ms", "1000",
                                   "--listen", net_.address(i) + ":7400",
                                   "--cluster-secret-file", secret_},
          net_.ns(i));
      ASSERT_TRUE(stores_[i]->started());
      ASSERT_TRUE(clients_[i]->Connect(stores_[i]->socket()).ok());
    }
  }
  Client& c(int i) { return *clients_[i]; }
  // One command to Redis; true if it answered without an error.
  bool Redis(const std::vector<std::string>& argv) {
    return cluster::RedisQuery(redis_.socket(), argv).ok();
  }
  std::string ObjectKey(const ObjectID& id) { return "plasmon:obj:" + id.Hex(); }
  testing::CommandResult Cli(int i, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {testing::CliBinary(), "--socket", stores_[i]->socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv);
  }

  testing::NetNamespaces net_{kNodes};
  testing::RedisProcess redis_;
  std::string secret_;
  std::unique_ptr<StoreProcess> stores_[kNodes + 1];
  std::unique_ptr<Client> clients_[kNodes + 1];
};

// Found by trying: a node key holding a string failed every lookup of the
// objects it was listed for; fetches timed out with "the directory (Redis)
// is unavailable".
TEST_F(DamagedDirectoryTest, AFetchSkipsAPoisonedNodeRecordAndFindsTheHealthyHolder) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), id, "held by node 1").ok());
  ASSERT_TRUE(testing::Published(c(2), id, "node-1"));
  ASSERT_TRUE(Redis({"HSET", ObjectKey(id), "evil", "14:0:-", "garbage", "14:0:-"}));
  ASSERT_TRUE(Redis({"SET", "plasmon:node:evil", "not a hash"}));
  ASSERT_TRUE(Redis({"HSET", "plasmon:node:garbage", "ep:tcp", std::string(4000, 'x')}));
  Status st = FetchOne(c(2), id, 10000);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << stores_[2]->Log();
  EXPECT_TRUE(HasBytes(c(2), id, "held by node 1"));
  // Where lists the healthy holders and says how many records it skipped.
  HoldersLeftOut left_out;
  auto w = c(2).Where(id, &left_out);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(left_out.malformed, 2u);
  auto r = Cli(2, {"where", id.Hex()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("node-1\t14 bytes\n"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("skipped 2 malformed directory records"), std::string::npos) << r.err;
}

// Found by trying: a malformed object record was reported as Redis being
// unavailable.
TEST_F(DamagedDirectoryTest, WhereOfAMalformedObjectRecordSaysWhatIsWrong) {
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(Redis({"SET", ObjectKey(id), "not a hash"}));
  auto w = c(1).Where(id);
  ASSERT_FALSE(w.ok());
  EXPECT_TRUE(w.status().IsCorruption()) << w.status().ToString();
  EXPECT_NE(w.status().message().find(ObjectKey(id)), std::string::npos) << w.status().ToString();
  EXPECT_EQ(w.status().message().find("unavailable"), std::string::npos) << w.status().ToString();
  auto r = Cli(1, {"where", id.Hex()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is malformed: a string, not a hash"), std::string::npos) << r.err;
  // A Fetch of it says the same at once, not "unavailable" at its deadline.
  auto f = c(1).Fetch({id}, 20000);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE((*f)[0].IsCorruption()) << (*f)[0].ToString();
  EXPECT_NE((*f)[0].message().find(ObjectKey(id)), std::string::npos) << (*f)[0].ToString();
  // The store is fine, and so is Redis: other lookups work.
  ObjectID other = ObjectID::Random();
  ASSERT_TRUE(Put(c(1), other, "x").ok());
  EXPECT_TRUE(testing::Published(c(2), other, "node-1"));
}

// Found by trying: with 5000 holders the store sent a Where reply of 5000,
// past the protocol's limit, and the client failed with ProtocolError.
TEST_F(DamagedDirectoryTest, WhereOfTooManyHoldersSaysHowManyWereLeftOut) {
  ObjectID id = ObjectID::Random();
  std::vector<std::string> hset = {"HSET", ObjectKey(id)};
  for (int i = 0; i < 5000; i++) {
    hset.push_back("node-x" + std::to_string(i));
    hset.push_back("3:0:-");
  }
  ASSERT_TRUE(Redis(hset));
  HoldersLeftOut left_out;
  auto w = c(1).Where(id, &left_out);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->size(), 4096u);
  EXPECT_EQ(left_out.not_shown, 904u);
  EXPECT_EQ(left_out.malformed, 0u);
  auto r = Cli(1, {"where", id.Hex()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\n... and 904 more holders not shown\n"), std::string::npos);
}

// Found by trying: after a FLUSHALL the node records came back at the next
// heartbeat, but no location was ever published again.
TEST_F(DamagedDirectoryTest, AfterAFlushTheLocationsComeBackAndFetchesWork) {
  std::vector<ObjectID> ids;
  for (int i = 0; i < 3; i++) {
    ids.push_back(ObjectID::Random());
    ASSERT_TRUE(Put(c(1), ids.back(), "object " + std::to_string(i)).ok());
    ASSERT_TRUE(testing::Published(c(2), ids.back(), "node-1"));
  }
  ASSERT_TRUE(Redis({"FLUSHALL"}));
  for (int i = 0; i < 3; i++) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(testing::Published(c(2), ids[i], "node-1")) << stores_[1]->Log();
    Status st = FetchOne(c(2), ids[i], 10000);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_TRUE(HasBytes(c(2), ids[i], "object " + std::to_string(i)));
  }
}

}  // namespace
}  // namespace plasmon
