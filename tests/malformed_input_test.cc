// Bad bytes from a client close that client's connection, with a logged
// reason, and nothing else: the store and its other clients go on.
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "core/protocol.h"
#include "core/unix_socket.h"
#include "plasmon/client.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

namespace p = protocol;
using testing::StoreProcess;

class MalformedInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store_.started());
    ASSERT_TRUE(good_.Connect(store_.socket()).ok());
    ASSERT_TRUE(good_.CreateAndSeal(kept_, "survivor").ok());
  }

  UniqueFd Raw() {
    auto fd = ConnectUnix(store_.socket());
    EXPECT_TRUE(fd.ok());
    timeval tv{30, 0};
    ::setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return std::move(*fd);
  }

  // A Connect frame as a real client sends it.
  static std::string ConnectFrame() {
    return p::MakeFrame(static_cast<uint16_t>(p::MessageType::kConnect), 1, p::ConnectRequest{});
  }

  static std::string Frame(uint16_t type, std::string body, uint64_t id = 2) {
    std::string f(p::kHeaderSize, '\0');
    p::FrameHeader h{static_cast<uint32_t>(body.size()), type, 0, id};
    p::EncodeHeader(h, f.data());
    return f + body;
  }

  // Reads until EOF; true if the store closed the connection.
  static bool ClosedByStore(int fd) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

  // The store is alive, its data intact, and it serves new clients.
  void ExpectStoreStillServes() {
    ASSERT_TRUE(store_.Alive());
    auto got = good_.Get({kept_}, 0);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_TRUE((*got)[0].valid());
    EXPECT_EQ((*got)[0].view(), "survivor");
    Client fresh;
    ASSERT_TRUE(fresh.Connect(store_.socket()).ok());
    EXPECT_TRUE(*fresh.Contains(kept_));
  }

  void ExpectLogged(const std::string& reason) {
    for (int i = 0; i < 500; i++) {
      if (store_.Log().find(reason) != std::string::npos) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "store log lacks '" << reason << "':\n" << store_.Log();
  }

  StoreProcess store_{{"-m", "16M"}};
  Client good_;
  ObjectID kept_ = ObjectID::Random();
};

TEST_F(MalformedInputTest, RandomGarbageClosesTheConnection) {
  std::mt19937 rng(7);
  for (int round = 0; round < 20; round++) {
    UniqueFd fd = Raw();
    std::string junk(1 + rng() % 4096, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    (void)WriteAll(fd.get(), junk);  // the store may hang up before all is written
    ::shutdown(fd.get(), SHUT_WR);  // and EOF, so a short junk cannot just sit there
    EXPECT_TRUE(ClosedByStore(fd.get()));
  }
  ExpectStoreStillServes();
}

TEST_F(MalformedInputTest, HugeLengthIsRefusedBeforeBuffering) {
  UniqueFd fd = Raw();
  std::string h(p::kHeaderSize, '\0');
  p::EncodeHeader({0xfffffff0u, static_cast<uint16_t>(p::MessageType::kConnect), 0, 1}, h.data());
  ASSERT_TRUE(WriteAll(fd.get(), h).ok());
  EXPECT_TRUE(ClosedByStore(fd.get()));
  ExpectLogged("exceeds the limit");
  ExpectStoreStillServes();
}

TEST_F(MalformedInputTest, RequestBeforeConnectIsRefused) {
  UniqueFd fd = Raw();
  ASSERT_TRUE(WriteAll(fd.get(), p::MakeFrame(static_cast<uint16_t>(p::MessageType::kContains), 1,
                                              p::IdRequest{kept_}))
                  .ok());
  EXPECT_TRUE(ClosedByStore(fd.get()));
  ExpectLogged("first message must be Connect");
  ExpectStoreStillServes();
}

TEST_F(MalformedInputTest, WrongMagicOrVersionIsRefused) {
  {
    UniqueFd fd = Raw();
    p::ConnectRequest r;
    r.magic = 0x12345678;
    ASSERT_TRUE(
        WriteAll(fd.get(), p::MakeFrame(static_cast<uint16_t>(p::MessageType::kConnect), 1, r)).ok());
    EXPECT_TRUE(ClosedByStore(fd.get()));
  }
  {
    UniqueFd fd = Raw();
    p::ConnectRequest r;
    r.version = 99;
    ASSERT_TRUE(
        WriteAll(fd.get(), p::MakeFrame(static_cast<uint16_t>(p::MessageType::kConnect), 1, r)).ok());
    EXPECT_TRUE(ClosedByStore(fd.get()));
  }
  ExpectLogged("protocol version mismatch");
  ExpectStoreStillServes();
}

TEST_F(MalformedInputTest, TruncatedBodiesAndBadFieldsCloseTheConnection) {
  ObjectID id = ObjectID::Random();
  std::string create = p::MakeFrame(static_cast<uint16_t>(p::MessageType::kCreate), 2,
                                    p::CreateRequest{id, 100, 0});
  std::string body = create.substr(p::kHeaderSize);
  std::vector<std::string> bad = {
      // A Create body cut short, with the header saying so.
      Frame(static_cast<uint16_t>(p::MessageType::kCreate), body.substr(0, 10)),
      // A Create body with trailing junk.
      Frame(static_cast<uint16_t>(p::MessageType::kCreate), body + "junk"),
      // A Get claiming a million IDs.
      Frame(static_cast<uint16_t>(p::MessageType::kGet), std::string(8, '\0') + "\x40\x42\x0f\x00"),
      // A Get with a timeout below -1.
      Frame(static_cast<uint16_t>(p::MessageType::kGet),
            std::string("\xfe\xff\xff\xff\xff\xff\xff\xff", 8) + std::string(4, '\0')),
      // CreateAndSeal whose data length runs past the frame.
      Frame(static_cast<uint16_t>(p::MessageType::kCreateAndSeal),
            id.Binary() + "\xff\xff\x00\x00" + "abc"),
      // Metadata over the limit.
      Frame(static_cast<uint16_t>(p::MessageType::kCreate),
            id.Binary() + std::string(8, '\0') + std::string("\x00\x00\x00\x01\x00\x00\x00\x00", 8)),
      // An unknown type, a reply type, nonzero flags.
      Frame(999, ""),
      Frame(p::ReplyType(p::MessageType::kStats), ""),
      Frame(static_cast<uint16_t>(p::MessageType::kStats), "x"),
      // A second Connect.
      ConnectFrame(),
  };
  std::string flagged = Frame(static_cast<uint16_t>(p::MessageType::kStats), "");
  flagged[6] = 1;
  bad.push_back(flagged);
  for (size_t i = 0; i < bad.size(); i++) {
    UniqueFd fd = Raw();
    ASSERT_TRUE(WriteAll(fd.get(), ConnectFrame() + bad[i]).ok());
    EXPECT_TRUE(ClosedByStore(fd.get())) << "case " << i;
  }
  ExpectLogged("protocol error");
  ExpectStoreStillServes();
  // Nothing half-made was left behind.
  EXPECT_EQ(good_.Stats()->object_count, 1u);
}

TEST_F(MalformedInputTest, AFloodOfMalformedClientsLogsABoundedNumberOfLines) {
  // One process, 500 connections, each closed for a protocol error.
  for (int i = 0; i < 500; i++) {
    UniqueFd fd = Raw();
    ASSERT_TRUE(WriteAll(fd.get(), ConnectFrame() + Frame(999, "")).ok());
    EXPECT_TRUE(ClosedByStore(fd.get())) << "connection " << i;
  }
  ExpectLogged("protocol error");
  ExpectStoreStillServes();
  EXPECT_EQ(store_.Terminate(), 0);  // says what it suppressed
  std::string log = store_.Log();
  size_t lines = 0, at = 0;
  while ((at = log.find("closing client", at)) != std::string::npos) {
    lines++;
    at++;
  }
  EXPECT_LE(lines, 10u) << log;
  EXPECT_NE(log.find("closed for errors: suppressed 495 similar warnings"), std::string::npos)
      << log;
}

TEST_F(MalformedInputTest, FrameCutMidwayThenHangUpLosesNothing) {
  std::string create = p::MakeFrame(static_cast<uint16_t>(p::MessageType::kCreate), 2,
                                    p::CreateRequest{ObjectID::Random(), 100, 0});
  for (size_t cut : {size_t{1}, p::kHeaderSize - 1, p::kHeaderSize, create.size() - 1}) {
    UniqueFd fd = Raw();
    ASSERT_TRUE(WriteAll(fd.get(), ConnectFrame() + create.substr(0, cut)).ok());
  }
  ExpectStoreStillServes();
  EXPECT_EQ(good_.Stats()->object_count, 1u);
}

TEST_F(MalformedInputTest, ImpossibleSizesGetAnErrorReplyNotACrash) {
  // Valid frames with absurd values are errors, not protocol violations.
  auto r = good_.Create(ObjectID::Random(), UINT64_MAX);
  EXPECT_TRUE(r.status().IsOutOfMemory());
  auto r2 = good_.Create(ObjectID::Random(), UINT64_MAX - 10, std::string(100, 'm'));
  EXPECT_TRUE(r2.status().IsOutOfMemory());
  EXPECT_TRUE(good_.Get(std::vector<ObjectID>(p::kMaxBatch + 1), 0).status().IsInvalidArgument());
  ExpectStoreStillServes();
}

TEST_F(MalformedInputTest, ReleaseOfAnUnheldObjectIsIgnored) {
  UniqueFd fd = Raw();
  ASSERT_TRUE(WriteAll(fd.get(), ConnectFrame() +
                                     p::MakeFrame(static_cast<uint16_t>(p::MessageType::kRelease), 0,
                                                  p::IdRequest{kept_}) +
                                     p::MakeFrame(static_cast<uint16_t>(p::MessageType::kRelease), 0,
                                                  p::IdRequest{ObjectID::Random()}))
                  .ok());
  ::close(fd.Release());
  ExpectStoreStillServes();
  auto list = good_.List();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].ref_count, 0u);
}

}  // namespace
}  // namespace plasmon
