// The shared-memory fast path against a real store process: what a user
// sees of it (no round trip where the index answers; the socket otherwise),
// and the ways to turn it off. The protocol's pieces in one process:
// store/fast_path_test.cc; many processes at once: fast_path_stress_test.cc.
#include <signal.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "client/frame_reader.h"
#include "core/clock.h"
#include "core/protocol.h"
#include "core/shm_index.h"
#include "core/unix_socket.h"
#include "plasmon/client.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using testing::StoreProcess;
namespace p = protocol;

TEST(SharedIndexTest, AStoppedStoreStillServesSealedObjectsFromTheIndex) {
  StoreProcess store;
  ASSERT_TRUE(store.started());
  Client c;
  ASSERT_TRUE(c.Connect(store.socket(), ConnectOptions{500}).ok());
  ASSERT_TRUE(c.shared_index());
  ObjectID id = ObjectID::Random(), missing = ObjectID::Random();
  ASSERT_TRUE(c.CreateAndSeal(id, "sealed bytes").ok());
  // A store that runs no instruction cannot answer a request: whatever
  // succeeds now took no round trip.
  ASSERT_EQ(::kill(store.pid(), SIGSTOP), 0);
  for (int i = 0; i < 100; i++) {
    auto got = c.Get({id}, 0);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_TRUE((*got)[0].valid());
    EXPECT_EQ((*got)[0].view(), "sealed bytes");
  }
  EXPECT_TRUE(*c.Contains(id));
  EXPECT_FALSE(*c.Contains(missing));  // the index lacks nothing it could hold
  // What the index does not have goes to the store, which does not answer.
  EXPECT_TRUE(c.Get({missing}, 0).status().IsTimeout());
  ASSERT_EQ(::kill(store.pid(), SIGCONT), 0);
  Result<StoreStats> st = c.Stats();
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->shm_gets, 100u);
  EXPECT_EQ(st->shm_contains, 2u);
}

TEST(SharedIndexTest, AGetMixesIndexAndStoreAndAWaitingGetStillWaitsForTheSeal) {
  StoreProcess store;
  ASSERT_TRUE(store.started());
  Client c, writer;
  ASSERT_TRUE(c.Connect(store.socket()).ok());
  ASSERT_TRUE(writer.Connect(store.socket()).ok());
  ObjectID here = ObjectID::Random(), later = ObjectID::Random();
  ASSERT_TRUE(writer.CreateAndSeal(here, "here").ok());
  auto b = writer.Create(later, 5);
  ASSERT_TRUE(b.ok());
  std::memcpy(b->data, "later", 5);
  std::thread sealer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(writer.Seal(later).ok());
  });
  auto got = c.Get({here, later}, 5000);
  sealer.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE((*got)[0].valid() && (*got)[1].valid());
  EXPECT_EQ((*got)[0].view(), "here");
  EXPECT_EQ((*got)[1].view(), "later");
  // Both hold the objects, whichever path took them.
  auto deleted = writer.Delete({here, later});
  ASSERT_TRUE(deleted.ok());
  EXPECT_TRUE((*deleted)[0].code() == StatusCode::kObjectInUse) << (*deleted)[0].ToString();
  EXPECT_TRUE((*deleted)[1].code() == StatusCode::kObjectInUse) << (*deleted)[1].ToString();
  EXPECT_FALSE(*c.Contains(here));  // deleted: invisible at once
  got->clear();
  for (int i = 0; i < 200 && writer.Stats()->object_count > 0; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(writer.Stats()->object_count, 0u);
  EXPECT_EQ(writer.Stats()->used, 0u);
}

TEST(SharedIndexTest, WithoutTheSharedIndexEverythingTakesTheSocket) {
  for (bool store_side : {true, false}) {
    SCOPED_TRACE(store_side ? "--no-shared-index" : "ConnectOptions::shared_index = false");
    StoreProcess store(store_side ? std::vector<std::string>{"-m", "64M", "--no-shared-index"}
                                  : std::vector<std::string>{"-m", "64M"});
    ASSERT_TRUE(store.started());
    Client c;
    ConnectOptions o;
    o.shared_index = store_side;  // off on one side or the other
    ASSERT_TRUE(c.Connect(store.socket(), o).ok());
    EXPECT_FALSE(c.shared_index());
    ObjectID id = ObjectID::Random();
    ASSERT_TRUE(c.CreateAndSeal(id, "x").ok());
    auto got = c.Get({id}, 0);
    ASSERT_TRUE(got.ok() && (*got)[0].valid());
    EXPECT_TRUE(*c.Contains(id));
    Result<StoreStats> st = c.Stats();
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->shm_gets, 0u);
    EXPECT_EQ(st->shm_contains, 0u);
  }
}

TEST(SharedIndexTest, AVersion4ClientIsServedWithoutTheIndex) {
  StoreProcess store;
  ASSERT_TRUE(store.started());
  Client modern;
  ASSERT_TRUE(modern.Connect(store.socket()).ok());
  ASSERT_TRUE(modern.CreateAndSeal(ObjectID::Random(), "x").ok());
  // An older client: its Connect has no flags, and every reply must be in
  // its own format (a longer Stats reply would fail its parse).
  Result<UniqueFd> fd = ConnectUnix(store.socket());
  ASSERT_TRUE(fd.ok());
  p::ConnectRequest old;
  old.version = 4;
  std::string frames =
      p::MakeFrame(static_cast<uint16_t>(p::MessageType::kConnect), 1, old) +
      p::MakeFrame(static_cast<uint16_t>(p::MessageType::kStats), 2, p::EmptyRequest{});
  ASSERT_TRUE(WriteAll(fd->get(), frames).ok());
  internal::FrameReader reader(p::kMaxReplyBody);
  p::FrameHeader h;
  std::string body;
  std::vector<UniqueFd> fds;
  ASSERT_TRUE(reader.Read(fd->get(), &h, &body, &fds, DeadlineAfterMs(5000)).ok());
  p::ConnectReply rep;
  ASSERT_TRUE(p::ParseBody(body, &rep));
  EXPECT_TRUE(rep.status.ok()) << rep.status.ToString();
  EXPECT_EQ(rep.version, 4);
  EXPECT_EQ(fds.size(), 1u);  // the arena alone
  ASSERT_TRUE(reader.Read(fd->get(), &h, &body, nullptr, DeadlineAfterMs(5000)).ok());
  p::StatsReply stats;
  stats.version = 4;
  ASSERT_TRUE(p::ParseBody(body, &stats));
  EXPECT_EQ(stats.stats.sealed_count, 1u);
  // And one from the future is refused clearly.
  Result<UniqueFd> fd2 = ConnectUnix(store.socket());
  ASSERT_TRUE(fd2.ok());
  p::ConnectRequest future;
  future.version = p::kVersion + 1;
  ASSERT_TRUE(
      WriteAll(fd2->get(), p::MakeFrame(static_cast<uint16_t>(p::MessageType::kConnect), 1, future)).ok());
  internal::FrameReader reader2(p::kMaxReplyBody);
  ASSERT_TRUE(reader2.Read(fd2->get(), &h, &body, nullptr, DeadlineAfterMs(5000)).ok());
  p::ConnectReply refused;
  ASSERT_TRUE(p::ParseBody(body, &refused));
  EXPECT_TRUE(refused.status.IsInvalidArgument());
  EXPECT_NE(refused.status.message().find("4 to 6"), std::string::npos) << refused.status.message();
}

// How many pin pages the store process has mapped.
size_t PinPagesMapped(pid_t store) {
  std::ifstream maps("/proc/" + std::to_string(store) + "/maps");
  size_t n = 0;
  for (std::string line; std::getline(maps, line);)
    if (line.find("memfd:plasmon-pins") != std::string::npos) n++;
  return n;
}

TEST(SharedIndexTest, AClientThatNeverUsesTheIndexCostsTheStoreNoPinPage) {
  StoreProcess store;
  ASSERT_TRUE(store.started());
  std::vector<Client> clients(8);
  for (Client& c : clients) {
    ASSERT_TRUE(c.Connect(store.socket()).ok());
    ASSERT_TRUE(c.Stats().ok());  // the socket: no index needed
  }
  EXPECT_EQ(PinPagesMapped(store.pid()), 0u);
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(clients[0].CreateAndSeal(id, "x").ok());
  for (Client& c : clients) {
    Result<bool> has = c.Contains(id);  // the first use attaches the index
    ASSERT_TRUE(has.ok() && *has);
    EXPECT_TRUE(c.shared_index());
  }
  // One page each (and perhaps one made ahead for the next client).
  EXPECT_GE(PinPagesMapped(store.pid()), clients.size());
  EXPECT_LE(PinPagesMapped(store.pid()), clients.size() + 1);
  Result<StoreStats> st = clients[0].Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->shm_contains, clients.size());
}

// Speaks the protocol by hand on one connection.
class RawConnection {
 public:
  explicit RawConnection(const std::string& socket) : reader_(p::kMaxReplyBody) {
    Result<UniqueFd> fd = ConnectUnix(socket);
    if (fd.ok()) fd_ = std::move(*fd);
  }
  template <typename Req, typename Rep>
  ::testing::AssertionResult Call(p::MessageType type, const Req& req, Rep* rep,
                                  std::vector<UniqueFd>* fds) {
    if (!fd_.valid()) return ::testing::AssertionFailure() << "not connected";
    if (!WriteAll(fd_.get(), p::MakeFrame(static_cast<uint16_t>(type), ++id_, req)).ok())
      return ::testing::AssertionFailure() << "write failed";
    p::FrameHeader h;
    std::string body;
    Status st = reader_.Read(fd_.get(), &h, &body, fds, DeadlineAfterMs(5000));
    if (!st.ok()) return ::testing::AssertionFailure() << st.ToString();
    if (h.type != p::ReplyType(type) || h.request_id != id_ || !p::ParseBody(body, rep))
      return ::testing::AssertionFailure() << "unexpected reply of type " << h.type;
    return ::testing::AssertionSuccess();
  }

 private:
  UniqueFd fd_;
  uint64_t id_ = 0;
  internal::FrameReader reader_;
};

TEST(SharedIndexTest, ConnectOffersTheIndexAndAttachIndexPassesItsDescriptorsOnce) {
  StoreProcess store;
  ASSERT_TRUE(store.started());
  p::ConnectRequest req;
  req.flags = p::kConnectSharedIndex;
  {
    // Version 6: Connect passes the arena alone and says what is offered.
    RawConnection c(store.socket());
    p::ConnectReply rep;
    std::vector<UniqueFd> fds;
    ASSERT_TRUE(c.Call(p::MessageType::kConnect, req, &rep, &fds));
    ASSERT_TRUE(rep.status.ok()) << rep.status.ToString();
    EXPECT_EQ(fds.size(), 1u);
    EXPECT_GT(rep.index_size, 0u);
    EXPECT_EQ(rep.pin_page_size, shm::kPinPageBytes);
    p::AttachIndexReply att;
    fds.clear();
    ASSERT_TRUE(c.Call(p::MessageType::kAttachIndex, p::EmptyRequest{}, &att, &fds));
    ASSERT_TRUE(att.status.ok()) << att.status.ToString();
    EXPECT_EQ(att.index_size, rep.index_size);
    EXPECT_EQ(att.pin_page_size, rep.pin_page_size);
    EXPECT_EQ(fds.size(), 2u);  // the index, then this client's pin page
    // A second attach is refused, and the connection goes on.
    fds.clear();
    ASSERT_TRUE(c.Call(p::MessageType::kAttachIndex, p::EmptyRequest{}, &att, &fds));
    EXPECT_TRUE(att.status.IsInvalidArgument()) << att.status.ToString();
    EXPECT_TRUE(fds.empty());
    p::StatsReply stats;
    ASSERT_TRUE(c.Call(p::MessageType::kStats, p::EmptyRequest{}, &stats, nullptr));
    EXPECT_TRUE(stats.status.ok());
  }
  {
    // Not asked for at Connect: not attachable.
    RawConnection c(store.socket());
    p::ConnectRequest plain;
    p::ConnectReply rep;
    std::vector<UniqueFd> fds;
    ASSERT_TRUE(c.Call(p::MessageType::kConnect, plain, &rep, &fds));
    EXPECT_EQ(rep.index_size, 0u);
    p::AttachIndexReply att;
    fds.clear();
    ASSERT_TRUE(c.Call(p::MessageType::kAttachIndex, p::EmptyRequest{}, &att, &fds));
    EXPECT_TRUE(att.status.IsInvalidArgument()) << att.status.ToString();
    EXPECT_TRUE(fds.empty());
  }
  {
    // A version 5 client, which would want the descriptors with the Connect
    // reply, is served without the index.
    RawConnection c(store.socket());
    p::ConnectRequest v5 = req;
    v5.version = 5;
    p::ConnectReply rep;
    rep.version = 5;
    std::vector<UniqueFd> fds;
    ASSERT_TRUE(c.Call(p::MessageType::kConnect, v5, &rep, &fds));
    ASSERT_TRUE(rep.status.ok()) << rep.status.ToString();
    EXPECT_EQ(rep.version, 5);
    EXPECT_EQ(rep.index_size, 0u);
    EXPECT_EQ(fds.size(), 1u);
  }
}

TEST(SharedIndexTest, CopiesShareOnePinAndReleaseByIdTakesTheNewest) {
  // Copies of a buffer share one pin; Release by ID takes the newest.
  StoreProcess store;
  ASSERT_TRUE(store.started());
  Client c;
  ASSERT_TRUE(c.Connect(store.socket()).ok());
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(c.CreateAndSeal(id, "kept").ok());
  auto first = c.Get({id}, 0);
  auto second = c.Get({id}, 0);
  ASSERT_TRUE(first.ok() && second.ok());
  auto refs = [&] {
    for (const ObjectInfo& o : *c.List())
      if (o.id == id) return o.ref_count;
    return 999u;
  };
  EXPECT_EQ(refs(), 2u);
  EXPECT_TRUE(c.Release(id).ok());  // the second Get's
  EXPECT_EQ(refs(), 1u);
  ObjectBuffer copy = (*first)[0];
  first->clear();
  EXPECT_EQ(refs(), 1u);
  EXPECT_EQ(copy.view(), "kept");
  copy = ObjectBuffer();
  EXPECT_EQ(refs(), 0u);
  second->clear();  // released already: nothing more
  EXPECT_EQ(refs(), 0u);
  EXPECT_TRUE(c.Release(id).IsInvalidArgument());
}

TEST(SharedIndexTest, LeasedCreatesNeedNoRoundTripUntilTheirSeal) {
  StoreProcess store;
  ASSERT_TRUE(store.started());
  Client c, reader;
  ConnectOptions o{1000};
  o.leased_creates = true;
  ASSERT_TRUE(c.Connect(store.socket(), o).ok());
  ASSERT_TRUE(reader.Connect(store.socket()).ok());
  const uint64_t used_before = reader.Stats()->used;
  ObjectID first = ObjectID::Random();
  ASSERT_TRUE(c.Create(first, 100).ok());  // takes the lease: a round trip
  ASSERT_TRUE(c.Abort(first).ok());
  // The store stopped: Creates that succeed now took no round trip.
  ASSERT_EQ(::kill(store.pid(), SIGSTOP), 0);
  std::vector<ObjectID> ids;
  for (int i = 0; i < 20; i++) {
    ids.push_back(ObjectID::Random());
    Result<MutableBuffer> b = c.Create(ids.back(), 4096, "meta");
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    std::memset(b->data, 'a' + i, b->size);
  }
  EXPECT_TRUE(c.Create(ids[0], 10).status().IsObjectExists());  // being created here
  ASSERT_EQ(::kill(store.pid(), SIGCONT), 0);
  EXPECT_FALSE(*reader.Contains(ids[0]));  // the store knows nothing of it before its Seal
  ASSERT_TRUE(c.Abort(ids[19]).ok());
  ids.pop_back();
  for (const ObjectID& id : ids) ASSERT_TRUE(c.Seal(id).ok());
  for (size_t i = 0; i < ids.size(); i++) {
    auto got = reader.Get({ids[i]}, 0);
    ASSERT_TRUE(got.ok() && (*got)[0].valid());
    EXPECT_EQ((*got)[0].view(), std::string(4096, static_cast<char>('a' + i)));
    EXPECT_EQ((*got)[0].metadata_view(), "meta");
  }
  EXPECT_TRUE(c.Create(ids[0], 10).status().IsObjectExists());  // sealed: the index says so
  // Another client took the ID first: the Seal says so, and nothing leaks.
  ObjectID raced = ObjectID::Random();
  ASSERT_TRUE(c.Create(raced, 10).ok());
  ASSERT_TRUE(reader.CreateAndSeal(raced, "first").ok());
  EXPECT_TRUE(c.Seal(raced).IsObjectExists());
  EXPECT_EQ((*reader.Get({raced}, 0))[0].view(), "first");
  // Gone with the client: the lease's rest and what was never sealed.
  c.Disconnect();
  ASSERT_TRUE(reader.Delete(ids).ok());
  ASSERT_TRUE(reader.Delete({raced}).ok());
  uint64_t used = 0;
  for (int i = 0; i < 200 && (used = reader.Stats()->used) != used_before; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(used, used_before);
}

TEST(SharedIndexTest, ALeasedSealIsVisibleToEveryClientWhenItReturnsThousandsOfTimes) {
  // Such a Seal returns once the index shows the object (the store answers
  // after publishing it) and leaves the store's reply to be read later
  // (most of them here): each object must be there for a socket client at
  // once, the replies nobody waited for must not break the connection, and
  // an error still comes back.
  StoreProcess store({"-m", "64M", "--max-client-backlog", "64K"});
  ASSERT_TRUE(store.started());
  Client c, reader;
  ConnectOptions o{2000};
  o.leased_creates = true;
  ASSERT_TRUE(c.Connect(store.socket(), o).ok());
  ConnectOptions socket_only{2000};
  socket_only.shared_index = false;
  ASSERT_TRUE(reader.Connect(store.socket(), socket_only).ok());
  const uint64_t used_before = reader.Stats()->used;
  constexpr int kObjects = 8000;  // 64 B each: 4096 to a lease, so few Lease round trips
  std::vector<ObjectID> ids;
  for (int i = 0; i < kObjects; i++) {
    ids.push_back(ObjectID::Random());
    Result<MutableBuffer> b = c.Create(ids.back(), 64);
    ASSERT_TRUE(b.ok()) << i << ": " << b.status().ToString();
    std::memset(b->data, static_cast<char>(i), 64);
    ASSERT_TRUE(c.Seal(ids.back()).ok()) << i;
    if (i % 97 == 0) {  // through the store, right after the Seal returned
      Result<bool> there = reader.Contains(ids.back());
      ASSERT_TRUE(there.ok() && *there) << i;
    }
  }
  EXPECT_TRUE(c.connected());
  Result<StoreStats> st = reader.Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->sealed_count, static_cast<uint64_t>(kObjects));
  auto got = reader.Get({ids[kObjects - 1]}, 0);
  ASSERT_TRUE(got.ok() && (*got)[0].valid());
  EXPECT_EQ((*got)[0].view(), std::string(64, static_cast<char>(kObjects - 1)));
  // The error of a Seal still comes back (the index shows another object).
  ObjectID raced = ObjectID::Random();
  ASSERT_TRUE(c.Create(raced, 10).ok());
  ASSERT_TRUE(reader.CreateAndSeal(raced, "first").ok());
  EXPECT_TRUE(c.Seal(raced).IsObjectExists());
  got.value().clear();
  ASSERT_TRUE(reader.Delete(ids).ok());
  ASSERT_TRUE(reader.Delete({raced}).ok());
  c.Disconnect();
  uint64_t used = 0;
  for (int i = 0; i < 200 && (used = reader.Stats()->used) != used_before; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(used, used_before);
}

TEST(SharedIndexTest, ThreadsSealingLeasedObjectsWhileOthersRenewTheLeaseLoseNoByte) {
  // A Seal takes its object out of the lease's book before its message is
  // written; a thread that renewed the lease in between would end this one,
  // and the store could hand the same space out again under the Seal.
  StoreProcess store({"-m", "256M"});
  ASSERT_TRUE(store.started());
  Client c;
  ConnectOptions o{5000};
  o.leased_creates = true;
  ASSERT_TRUE(c.Connect(store.socket(), o).ok());
  constexpr int kThreads = 4, kEach = 1500;
  constexpr uint64_t kSize = 4096;  // 64 to a lease: it is renewed all the time
  std::vector<std::vector<ObjectID>> ids(kThreads);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; i++) {
        ObjectID id = ObjectID::Random();
        Result<MutableBuffer> b = c.Create(id, kSize);
        if (!b.ok()) {
          failures++;
          continue;
        }
        std::memset(b->data, 'a' + (t * 7 + i) % 26, kSize);
        if (!c.Seal(id).ok()) failures++;
        ids[t].push_back(id);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  Client reader;
  ConnectOptions socket_only{5000};
  socket_only.shared_index = false;
  ASSERT_TRUE(reader.Connect(store.socket(), socket_only).ok());
  int wrong = 0;
  for (int t = 0; t < kThreads; t++) {
    for (int i = 0; i < static_cast<int>(ids[t].size()); i++) {
      auto got = reader.Get({ids[t][i]}, 0);
      ASSERT_TRUE(got.ok());
      if (!(*got)[0].valid() ||
          (*got)[0].view() != std::string(kSize, static_cast<char>('a' + (t * 7 + i) % 26)))
        wrong++;
    }
  }
  EXPECT_EQ(wrong, 0) << "objects whose bytes another thread's object overwrote";
}

}  // namespace
}  // namespace plasmon
