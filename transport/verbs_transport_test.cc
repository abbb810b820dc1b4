// VerbsTransport on a real RDMA device, against an in-memory ObjectSource.
//
// Needs RDMA: run it through the Soft-RoCE VM harness, which sets the
// addresses (tests/verbs_in_vm.sh; see tools/rxe-vm/README.md). Outside it,
// every test fails with a message saying so: it never passes by skipping.
#include "transport/verbs_transport.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <future>
#include <thread>
#include <tuple>
#include <vector>

#include "core/digest.h"
#include "transport/test_source.h"
#include "transport/verbs_wire.h"

namespace plasmon {
namespace {

// The RDMA-capable addresses to use: $PLASMON_TEST_RDMA_ADDRS (spaces), or
// the one-VM harness's two rxe addresses.
std::vector<std::string> Addresses() { return RdmaTestAddresses(); }

#define REQUIRE_RDMA()                                                                     \
  do {                                                                                     \
    ASSERT_FALSE(Addresses().empty())                                                      \
        << "no RDMA addresses: run through tools/rxe-vm/run.sh, or set "                   \
           "PLASMON_TEST_RDMA_ADDRS to addresses of RDMA-capable interfaces";             \
  } while (0)

std::string HolderAddress() { return Addresses().front(); }
std::string PullerAddress() { return Addresses().back(); }

VerbsTransportOptions Opts(const std::string& addr, std::string secret = "s3cret") {
  VerbsTransportOptions o;
  o.listen = addr;
  o.secret = std::move(secret);
  o.chunk_size = 256 << 10;  // several reads per object from 1 MiB up
  o.max_reads = 8;
  o.io_timeout_ms = 20000;  // emulated RDMA is slow; never a timing assertion
  o.connect_timeout_ms = 20000;
  return o;
}

struct Holder {
  FakeSource source;
  std::unique_ptr<VerbsTransport> transport;
  std::string endpoint;

  explicit Holder(VerbsTransportOptions opts, uint64_t arena = 160 * kMiB) : source(arena) {
    auto t = VerbsTransport::Create(std::move(opts));
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    transport = std::move(*t);
    EXPECT_TRUE(transport->RegisterMemory(source.region()).ok());
    auto ep = transport->Listen(&source);
    EXPECT_TRUE(ep.ok()) << ep.status().ToString();
    if (ep.ok()) endpoint = *ep;
  }
  ~Holder() {
    transport->Shutdown();
    EXPECT_EQ(source.pins(), source.unpins()) << "every Pin needs its Unpin";
  }
};

// A puller with its own registered buffer.
struct Puller {
  std::vector<uint8_t> memory;
  std::unique_ptr<VerbsTransport> transport;
  explicit Puller(VerbsTransportOptions opts, uint64_t size = 160 * kMiB) : memory(size) {
    auto t = VerbsTransport::Create(std::move(opts));
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    transport = std::move(*t);
    EXPECT_TRUE(transport->RegisterMemory({memory.data(), memory.size(), -1}).ok());
  }
  Result<PullResult> Pull(const std::string& ep, const ObjectID& id, uint64_t data,
                          uint64_t meta, uint64_t at = 0) {
    PullRequest req;
    req.id = id;
    req.data_size = data;
    req.metadata_size = meta;
    req.destination = memory.data() + at;
    return transport->Pull(ep, req);
  }
  // The same request as a pull on the caller's loop (nullptr: not possible).
  std::unique_ptr<AsyncPull> StartLoopPull(const std::string& ep, const ObjectID& id, uint64_t data,
                                           uint64_t meta) {
    PullRequest req;
    req.id = id;
    req.data_size = data;
    req.metadata_size = meta;
    req.destination = memory.data();
    return transport->StartAsyncPull(ep, req);
  }
  bool Holds(Holder* h, const ObjectID& id) {
    std::vector<uint8_t> want = h->source.Bytes(id);
    return want.empty() || std::memcmp(memory.data(), want.data(), want.size()) == 0;
  }
};

void ExpectPulled(Puller* p, Holder* h, const ObjectID& id, uint64_t data, uint64_t meta,
                  uint64_t at = 0) {
  auto r = p->Pull(h->endpoint, id, data, meta, at);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->digest, h->source.RealDigest(id));
  std::vector<uint8_t> want = h->source.Bytes(id);
  if (!want.empty()) {  // memcmp wants valid pointers even for 0 bytes
    EXPECT_EQ(0, std::memcmp(p->memory.data() + at, want.data(), want.size())) << "bytes differ";
  }
}

TEST(VerbsWireTest, MessagesRoundTrip) {
  verbs::Hello h;
  h.nonce[3] = 9;
  std::string pd = h.Encode() + std::string(17, '\0');  // padded, as rdma_cm may
  verbs::Hello h2;
  ASSERT_TRUE(h2.Decode(pd));
  EXPECT_EQ(h2.nonce, h.nonce);
  EXPECT_LE(h.Encode().size(), 56u) << "must fit a connect request's private data";
  verbs::Challenge c;
  c.proof[0] = 1;
  EXPECT_LE(c.Encode().size(), 196u);
  verbs::Challenge c2;
  ASSERT_TRUE(c2.Decode(c.Encode()));
  EXPECT_EQ(c2.proof, c.proof);
  EXPECT_FALSE(c2.Decode(h.Encode())) << "too short";

  verbs::Welcome w;
  for (uint32_t i = 0; i < verbs::kMaxRegions + 5; i++) w.regions.push_back({4096u * (i + 1), 4096, i});
  std::string msg = verbs::MakeMessage(verbs::MessageType::kWelcome, 7, w);
  EXPECT_LE(msg.size(), verbs::kMaxMessage);
  verbs::Header hdr;
  std::string_view body;
  ASSERT_TRUE(verbs::ParseHeader(msg, &hdr, &body));
  EXPECT_EQ(hdr.request_id, 7u);
  verbs::Welcome w2;
  ASSERT_TRUE(verbs::ParseBody(body, &w2));
  EXPECT_EQ(w2.regions.size(), verbs::kMaxRegions);
  for (size_t cut = 0; cut < body.size(); cut++)
    EXPECT_FALSE(verbs::ParseBody(body.substr(0, cut), &w2)) << cut;

  verbs::DescribeReply r;
  r.status = Status::ObjectNotFound("gone");
  r.data_size = ~uint64_t{0};
  r.metadata_size = 2;  // overflows together: malformed
  std::string rb;
  Encoder e(&rb);
  r.Encode(&e);
  verbs::DescribeReply r2;
  EXPECT_FALSE(verbs::ParseBody(rb, &r2));
}

TEST(VerbsTransportTest, PullsEverySizeWithDigestChecked) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()));
  struct Case {
    uint64_t data, meta;
    bool digest_known;
  };
  const Case cases[] = {{1, 0, true},          {0, 0, true},          {0, 5, false},
                        {4096, 16, true},      {kMiB + 7, 3, false},  {16 * kMiB, 0, true},
                        {64 * kMiB, 100, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.data) + "+" + std::to_string(c.meta));
    ObjectID id = h.source.Add(c.data, c.meta, c.digest_known);
    ExpectPulled(&p, &h, id, c.data, c.meta, 4096);
  }
  // The holder kept the digests it computed while the reads ran.
  EXPECT_GE(h.source.computed_digests(), 2u);
  EXPECT_EQ(h.transport->accepted_connections(), 1u) << "one pooled connection for all";
  EXPECT_TRUE(Eventually([&] { return h.transport->pinned_objects() == 0; }));
}

TEST(VerbsTransportTest, ObjectsStraddlingSeveralRegistrations) {
  REQUIRE_RDMA();
  // 1 MiB registrations on both sides: an object of 5 MiB at odd offsets
  // spans six of the holder's and six of the puller's.
  VerbsTransportOptions ho = Opts(HolderAddress()), po = Opts(PullerAddress());
  ho.max_registration = po.max_registration = kMiB;
  Holder h(ho, 16 * kMiB);
  Puller p(po, 16 * kMiB);
  h.source.Add(12345, 0);  // the next object starts at an odd place
  ObjectID id = h.source.Add(5 * kMiB + 3, 77, false);
  ExpectPulled(&p, &h, id, 5 * kMiB + 3, 77, 3 * kMiB / 2 + 64);
}

TEST(VerbsTransportTest, SeveralPullsAtOnce) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()));
  std::vector<ObjectID> ids;
  for (int i = 0; i < 6; i++) ids.push_back(h.source.Add(3 * kMiB + i, 64, i % 2 == 0));
  std::vector<std::future<void>> done;
  for (int i = 0; i < 6; i++)
    done.push_back(std::async(std::launch::async, [&, i] {
      ExpectPulled(&p, &h, ids[i], 3 * kMiB + i, 64, uint64_t(i) * 4 * kMiB);
    }));
  for (auto& f : done) f.get();
  EXPECT_TRUE(Eventually([&] { return h.transport->pinned_objects() == 0; }));
}

TEST(VerbsTransportTest, UnknownObjectIsNotFound) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()));
  auto r = p.Pull(h.endpoint, ObjectID::Random(), 10, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsObjectNotFound()) << r.status().ToString();
  // The connection is still good.
  ObjectID id = h.source.Add(100, 0);
  ExpectPulled(&p, &h, id, 100, 0);
  EXPECT_EQ(h.transport->accepted_connections(), 1u);
}

TEST(VerbsTransportTest, SizeMismatchAndBadDigestFailAndUnpin) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()));
  ObjectID id = h.source.Add(5000, 0, true);
  auto r = p.Pull(h.endpoint, id, 4000, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  ObjectID liar = h.source.Add(2 * kMiB, 0);
  h.source.Lie(liar);
  r = p.Pull(h.endpoint, liar, 2 * kMiB, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption) << r.status().ToString();
  EXPECT_TRUE(Eventually([&] { return h.transport->pinned_objects() == 0; }));
  EXPECT_TRUE(Eventually([&] { return h.source.pins() == h.source.unpins(); }));
}

TEST(VerbsTransportTest, WrongSecretIsRefused) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress(), "right"));
  Puller p(Opts(PullerAddress(), "wrong"));
  ObjectID id = h.source.Add(64, 0);
  auto r = p.Pull(h.endpoint, id, 64, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied) << r.status().ToString();
  EXPECT_EQ(h.source.pins(), 0u) << "nothing is pinned for an unauthenticated peer";
}

TEST(VerbsTransportTest, DestinationOutsideRegisteredMemoryIsRefused) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()), kMiB);
  ObjectID id = h.source.Add(2 * kMiB, 0);
  auto r = p.Pull(h.endpoint, id, 2 * kMiB, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
}

TEST(VerbsTransportTest, NobodyListeningIsDisconnected) {
  REQUIRE_RDMA();
  Puller p(Opts(PullerAddress()));
  auto r = p.Pull(HolderAddress() + ":1", ObjectID::Random(), 64, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
}

TEST(VerbsTransportTest, HolderShutdownMidPullFailsCleanly) {
  REQUIRE_RDMA();
  auto h = std::make_unique<Holder>(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()));
  ObjectID id = h->source.Add(128 * kMiB, 0, true);  // seconds under emulation
  auto pulling = std::async(std::launch::async, [&] { return p.Pull(h->endpoint, id, 128 * kMiB, 0); });
  ASSERT_TRUE(Eventually([&] { return h->transport->pinned_objects() == 1; }));
  h->transport->Shutdown();  // breaks the connection under the reads
  auto r = pulling.get();
  ASSERT_FALSE(r.ok()) << "a pull cut off mid-object must fail";
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  EXPECT_EQ(h->source.pins(), h->source.unpins());
  h.reset();
  // The puller recovers: a new holder on the same address serves it.
  Holder h2(Opts(HolderAddress()));
  ObjectID id2 = h2.source.Add(kMiB, 1);
  ExpectPulled(&p, &h2, id2, kMiB, 1);
}

TEST(VerbsTransportTest, HoldTimeoutEndsAPinThePullerKeepsTooLong) {
  REQUIRE_RDMA();
  // A holder that lends an object for 1 s at most, and a pull of 128 MiB
  // that takes longer under emulation: the holder cuts the connection and
  // unpins; the pull fails cleanly instead of reading reused memory.
  VerbsTransportOptions ho = Opts(HolderAddress());
  ho.hold_timeout_ms = 1000;
  Holder h(ho);
  Puller p(Opts(PullerAddress()));
  ObjectID id = h.source.Add(128 * kMiB, 0, true);
  auto r = p.Pull(h.endpoint, id, 128 * kMiB, 0);
  ASSERT_FALSE(r.ok()) << "the pull outlived the hold: it cannot have succeeded";
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  EXPECT_TRUE(Eventually([&] { return h.transport->pinned_objects() == 0; }));
  EXPECT_TRUE(Eventually([&] { return h.source.pins() == h.source.unpins(); }));
  // A small object still goes through on a new connection.
  ObjectID small = h.source.Add(4096, 0);
  ExpectPulled(&p, &h, small, 4096, 0);
}

TEST(VerbsTransportTest, SmallPullsRunOnTheCallersLoopOverAPooledConnection) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()));
  ObjectID small = h.source.Add(4096, 100);
  ObjectID limit = h.source.Add((64 << 10) - 7, 7);
  ObjectID empty = h.source.Add(0, 0);
  ObjectID large = h.source.Add((64 << 10) + 1, 0);
  // No connection yet: making one blocks, so that is Pull's business.
  EXPECT_EQ(p.StartLoopPull(h.endpoint, small, 4096, 100), nullptr);
  ExpectPulled(&p, &h, small, 4096, 100);
  for (int i = 0; i < 10; i++) {
    for (auto [id, data, meta] : {std::tuple{small, uint64_t{4096}, uint64_t{100}},
                                  std::tuple{limit, uint64_t{(64 << 10) - 7}, uint64_t{7}},
                                  std::tuple{empty, uint64_t{0}, uint64_t{0}}}) {
      std::memset(p.memory.data(), 0xee, 128 << 10);
      std::unique_ptr<AsyncPull> a = p.StartLoopPull(h.endpoint, id, data, meta);
      ASSERT_NE(a, nullptr) << "the pooled connection came back after pull " << i;
      Result<PullResult> r = RunLoopPull(a.get());
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->digest, h.source.RealDigest(id));
      EXPECT_EQ(r->carried_by, TransportKind::kVerbs);
      EXPECT_TRUE(p.Holds(&h, id)) << "bytes differ";
      EXPECT_GT(r->landed_us, 0);
    }
  }
  EXPECT_EQ(h.transport->accepted_connections(), 1u);
  EXPECT_TRUE(Eventually([&] { return h.transport->pinned_objects() == 0; })) << "every pin released";
  // What --metrics shows: one connection each way.
  Transport::Connections held = h.transport->connections(), pulling = p.transport->connections();
  EXPECT_TRUE(held.known && pulling.known);
  EXPECT_EQ(held.serving, 1u);
  EXPECT_EQ(held.handshaking, 0u);
  EXPECT_EQ(pulling.outgoing, 1u);
  EXPECT_EQ(pulling.serving, 0u);
  // Past async_max (64 KiB by default) an object goes the blocking way.
  EXPECT_EQ(p.StartLoopPull(h.endpoint, large, (64 << 10) + 1, 0), nullptr);
}

TEST(VerbsTransportTest, LoopPullsReportTheHoldersErrorsAndKeepTheConnection) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()));
  ObjectID id = h.source.Add(1000, 0);
  ObjectID lied = h.source.Add(2000, 0);
  h.source.Lie(lied);
  ExpectPulled(&p, &h, id, 1000, 0);
  struct Case {
    ObjectID id;
    uint64_t size;
    bool (Status::*is)() const;
  };
  for (Case c : {Case{ObjectID::Random(), 10, &Status::IsObjectNotFound},
                 Case{lied, 2000, &Status::IsCorruption},
                 Case{id, 999, &Status::IsInvalidArgument}}) {  // the directory's size was wrong
    std::unique_ptr<AsyncPull> a = p.StartLoopPull(h.endpoint, c.id, c.size, 0);
    ASSERT_NE(a, nullptr) << "the connection stays after the holder's answer";
    Result<PullResult> r = RunLoopPull(a.get());
    EXPECT_TRUE((r.status().*c.is)()) << r.status().ToString();
    EXPECT_FALSE(a->stale_connection()) << "the holder answered";
  }
  std::unique_ptr<AsyncPull> a = p.StartLoopPull(h.endpoint, id, 1000, 0);
  ASSERT_NE(a, nullptr);
  Result<PullResult> r = RunLoopPull(a.get());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(p.Holds(&h, id));
  EXPECT_EQ(h.transport->accepted_connections(), 1u);
  EXPECT_TRUE(Eventually([&] { return h.transport->pinned_objects() == 0; }));
}

TEST(VerbsTransportTest, AnAbandonedLoopPullEndsItsConnectionAndItsPin) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()));
  ObjectID id = h.source.Add(4096, 0);
  ExpectPulled(&p, &h, id, 4096, 0);
  std::unique_ptr<AsyncPull> a = p.StartLoopPull(h.endpoint, id, 4096, 0);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(Eventually([&] { return h.source.pins() == 2; })) << "the holder pinned it";
  a.reset();  // a READ may be landing: the connection is destroyed, not pooled
  EXPECT_TRUE(Eventually([&] { return h.transport->pinned_objects() == 0; }))
      << "the holder unpins when the connection goes";
  EXPECT_EQ(p.StartLoopPull(h.endpoint, id, 4096, 0), nullptr) << "nothing pooled";
  ExpectPulled(&p, &h, id, 4096, 0);
  EXPECT_EQ(h.transport->accepted_connections(), 2u);
}

TEST(VerbsTransportTest, APooledConnectionWhoseHolderWentAwayFailsALoopPullAsStale) {
  REQUIRE_RDMA();
  Puller p(Opts(PullerAddress()));
  std::unique_ptr<AsyncPull> a;
  {
    Holder h(Opts(HolderAddress()));
    ObjectID id = h.source.Add(4096, 0);
    ExpectPulled(&p, &h, id, 4096, 0);
    h.transport->Shutdown();  // disconnects the pooled connection
    a = p.StartLoopPull(h.endpoint, id, 4096, 0);
  }
  if (a == nullptr) GTEST_SKIP() << "posting already failed: Pull's business";
  Result<PullResult> r = RunLoopPull(a.get());
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  EXPECT_EQ(r.status().message().find("silent"), std::string::npos)
      << "the disconnect should end it, not the deadline: " << r.status().ToString();
  EXPECT_TRUE(a->stale_connection()) << "the caller should pull again on a new connection";
}

TEST(VerbsTransportTest, ShutdownEndsALoopPullInFlight) {
  REQUIRE_RDMA();
  Holder h(Opts(HolderAddress()));
  Puller p(Opts(PullerAddress()));
  ObjectID id = h.source.Add(4096, 0);
  ExpectPulled(&p, &h, id, 4096, 0);
  h.source.BlockPinsAfter(0);  // the holder takes the Describe and says nothing
  std::unique_ptr<AsyncPull> a = p.StartLoopPull(h.endpoint, id, 4096, 0);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(Eventually([&] { return h.source.blocked() == 1; }));
  p.transport->Shutdown();  // breaks pulls in flight, those on a loop too
  Result<PullResult> r = RunLoopPull(a.get());
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("shutting down"), std::string::npos) << r.status().ToString();
  a.reset();
  h.source.OpenGate();
}

}  // namespace
}  // namespace plasmon
