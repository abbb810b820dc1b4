// TcpTransport over loopback, against an in-memory ObjectSource.
#include "transport/tcp_transport.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/digest.h"
#include "core/fd.h"
#include "transport/tcp_wire.h"
#include "transport/test_source.h"

namespace plasmon {
namespace {

using namespace std::chrono_literals;

// A serving store: a source and a transport listening on loopback.
struct Holder {
  FakeSource source;
  std::unique_ptr<TcpTransport> transport;
  std::string endpoint;

  explicit Holder(TcpTransportOptions opts = {}, uint64_t arena = 128 * kMiB) : source(arena) {
    auto t = TcpTransport::Create(std::move(opts));
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    transport = std::move(*t);
    EXPECT_TRUE(transport->RegisterMemory(source.region()).ok());
    auto ep = transport->Listen(&source);
    EXPECT_TRUE(ep.ok()) << ep.status().ToString();
    endpoint = *ep;
  }
  ~Holder() {
    transport->Shutdown();
    EXPECT_EQ(source.pins(), source.unpins()) << "every Pin needs its Unpin";
  }
};

std::unique_ptr<TcpTransport> MakeClient(TcpTransportOptions opts = {}) {
  auto t = TcpTransport::Create(std::move(opts));
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(*t);
}

// Pulls `id` into a fresh buffer.
Result<PullResult> PullInto(TcpTransport* t, const std::string& endpoint, const ObjectID& id,
                            uint64_t data_size, uint64_t metadata_size, std::vector<uint8_t>* out) {
  out->assign(data_size + metadata_size, 0);
  PullRequest req;
  req.id = id;
  req.data_size = data_size;
  req.metadata_size = metadata_size;
  req.destination = out->data();
  return t->Pull(endpoint, req);
}

// Pulls and checks bytes and digest.
void ExpectPulls(TcpTransport* t, Holder* h, const ObjectID& id, uint64_t data_size,
                 uint64_t metadata_size) {
  std::vector<uint8_t> got;
  auto r = PullInto(t, h->endpoint, id, data_size, metadata_size, &got);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->digest, ObjectDigest(got.data(), data_size, got.data() + data_size, metadata_size));
  EXPECT_EQ(r->digest, h->source.RealDigest(id));
  EXPECT_TRUE(got == h->source.Bytes(id)) << "bytes differ";
}

// A raw client socket connected to `endpoint` (127.0.0.1:PORT), with a
// generous receive timeout so a test never hangs.
UniqueFd RawConnect(const std::string& endpoint) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1))));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  timeval tv{30, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// True if the server closes `fd` (reads to EOF within the receive timeout).
bool ServerCloses(int fd) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

// Runs the client half of the handshake by hand.
bool RawHandshake(int fd, const std::string& secret) {
  tcp::Hello hello;
  hello.flags = secret.empty() ? 0 : tcp::kHasSecret;
  EXPECT_TRUE(tcp::RandomNonce(&hello.nonce).ok());
  if (!tcp::SendAll(fd, tcp::MakeFrame(tcp::MessageType::kHello, 1, hello)).ok()) return false;
  tcp::Frame f;
  tcp::Challenge ch;
  if (!tcp::ReadFrame(fd, tcp::kMaxControlBody, &f).ok() || !tcp::ParseBody(f.body, &ch))
    return false;
  tcp::ProofMessage proof;
  proof.proof = tcp::MakeProof(secret, tcp::kClientLabel, hello.nonce, ch.nonce);
  if (!tcp::SendAll(fd, tcp::MakeFrame(tcp::MessageType::kProof, 2, proof)).ok()) return false;
  tcp::Welcome w;
  return tcp::ReadFrame(fd, tcp::kMaxControlBody, &f).ok() && tcp::ParseBody(f.body, &w) &&
         w.status.ok();
}

TcpTransportOptions Opts(std::string secret = "s3cret", uint64_t chunk = kMiB, int streams = 4) {
  TcpTransportOptions o;
  o.secret = std::move(secret);
  o.chunk_size = chunk;
  o.streams = streams;
  return o;
}

// ---- wire format ----

template <typename Msg>
Msg RoundTrip(const Msg& m) {
  std::string body;
  Encoder e(&body);
  m.Encode(&e);
  Msg out;
  EXPECT_TRUE(tcp::ParseBody(body, &out));
  for (size_t cut = 0; cut < body.size(); cut++) {
    Msg partial;
    EXPECT_FALSE(tcp::ParseBody(std::string_view(body).substr(0, cut), &partial)) << cut;
  }
  Msg trailing;
  EXPECT_FALSE(tcp::ParseBody(body + "x", &trailing));
  return out;
}

TEST(TcpWireTest, MessagesRoundTrip) {
  tcp::Hello h;
  h.flags = tcp::kHasSecret;
  h.nonce[0] = 7;
  h.node_name = "node-a";
  tcp::Hello h2 = RoundTrip(h);
  EXPECT_EQ(h2.magic, tcp::kMagic);
  EXPECT_EQ(h2.nonce, h.nonce);
  EXPECT_EQ(h2.node_name, "node-a");

  tcp::Challenge c;
  c.flags = tcp::kHasSecret;
  c.proof[31] = 9;
  EXPECT_EQ(RoundTrip(c).proof, c.proof);

  tcp::PullMessage p;
  p.id = ObjectID::Random();
  p.offset = 5;
  p.length = 1ull << 40;
  p.want_digest = true;
  tcp::PullMessage p2 = RoundTrip(p);
  EXPECT_EQ(p2.id, p.id);
  EXPECT_EQ(p2.length, p.length);
  EXPECT_TRUE(p2.want_digest);

  tcp::PullReply r;
  r.status = Status::ObjectNotFound("gone");
  r.data_size = 3;
  r.digest_valid = true;
  r.digest = 42;
  tcp::PullReply r2 = RoundTrip(r);
  EXPECT_TRUE(r2.status.IsObjectNotFound());
  EXPECT_EQ(r2.status.message(), "gone");
  EXPECT_EQ(r2.digest, 42u);

  tcp::Welcome w{Status::PermissionDenied(std::string(10000, 'x'))};
  std::string frame = tcp::MakeFrame(tcp::MessageType::kWelcome, 1, w);
  EXPECT_LE(frame.size() - protocol::kHeaderSize, tcp::kMaxControlBody) << "long messages are cut";
}

TEST(TcpWireTest, BadFlagsAndBoolsAreRefused) {
  tcp::Hello h;
  h.flags = 0x80;
  std::string body;
  Encoder e(&body);
  h.Encode(&e);
  tcp::Hello out;
  EXPECT_FALSE(tcp::ParseBody(body, &out));

  tcp::PullMessage p;
  body.clear();
  p.Encode(&e);
  body.back() = 8;  // no such Pull flag
  tcp::PullMessage pout;
  EXPECT_FALSE(tcp::ParseBody(body, &pout));

  tcp::PullReply r;
  body.clear();
  r.Encode(&e);
  body[body.size() - 9] = 4;  // no such PullReply flag
  tcp::PullReply rout;
  EXPECT_FALSE(tcp::ParseBody(body, &rout));
  body[body.size() - 9] = tcp::kDigestValid | tcp::kBlockDigestsFollow;
  ASSERT_TRUE(tcp::ParseBody(body, &rout));
  EXPECT_TRUE(rout.digest_valid && rout.block_digests);
}

TEST(TcpWireTest, ProofsDependOnSecretLabelAndNonces) {
  tcp::Nonce a{}, b{};
  b[0] = 1;
  tcp::Proof p = tcp::MakeProof("k", tcp::kServerLabel, a, b);
  EXPECT_TRUE(tcp::ProofsEqual(p, tcp::MakeProof("k", tcp::kServerLabel, a, b)));
  EXPECT_FALSE(tcp::ProofsEqual(p, tcp::MakeProof("j", tcp::kServerLabel, a, b)));
  EXPECT_FALSE(tcp::ProofsEqual(p, tcp::MakeProof("k", tcp::kClientLabel, a, b)));
  EXPECT_FALSE(tcp::ProofsEqual(p, tcp::MakeProof("k", tcp::kServerLabel, b, a)));
  EXPECT_FALSE(tcp::ProofsEqual(p, tcp::MakeProof("", tcp::kServerLabel, a, b)));
}

// ---- transport ----

TEST(TcpTransportTest, PullsObjectsOfEverySize) {
  Holder h(Opts());
  auto client = MakeClient(Opts());
  const uint64_t cs = kMiB;
  struct Case {
    uint64_t data, metadata;
  } cases[] = {{0, 0},  {1, 0},        {0, 1},      {4096, 0}, {4000, 96},
               {cs, 0}, {cs - 10, 10}, {cs + 1, 0}, {cs, 1},   {3 * cs + 7, 5}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.data) + "+" + std::to_string(c.metadata));
    ObjectID id = h.source.Add(c.data, c.metadata);
    ExpectPulls(client.get(), &h, id, c.data, c.metadata);
  }
}

TEST(TcpTransportTest, LargeObjectInParallelChunks) {
  Holder h(Opts("s3cret", kMiB, 4));
  auto client = MakeClient(Opts("s3cret", kMiB, 4));
  const uint64_t data = 40 * kMiB + 123, metadata = 4567;
  ObjectID id = h.source.Add(data, metadata);
  ExpectPulls(client.get(), &h, id, data, metadata);
  // The holder hashes each chunk's blocks as it sends them: it never hashes
  // the object as a whole (and so has no digest to keep).
  EXPECT_EQ(h.source.computed_digests(), 0u);
  EXPECT_GE(h.transport->accepted_connections(), 2u) << "chunks travel over several streams";
  EXPECT_LE(h.transport->accepted_connections(), 5u);
  // Again, over the pooled connections.
  uint64_t accepted = h.transport->accepted_connections();
  ExpectPulls(client.get(), &h, id, data, metadata);
  EXPECT_EQ(h.transport->accepted_connections(), accepted);
}

TEST(TcpTransportTest, AWholePullGivesTheHolderTheDigest) {
  Holder h(Opts("s3cret", kMiB, 4));
  auto client = MakeClient(Opts("s3cret", kMiB, 4));
  ObjectID id = h.source.Add(kMiB - 100, 100);  // several digest blocks, one request
  ExpectPulls(client.get(), &h, id, kMiB - 100, 100);
  EXPECT_EQ(h.source.computed_digests(), 1u) << "hashed as sent, kept by the store";
  ExpectPulls(client.get(), &h, id, kMiB - 100, 100);
  EXPECT_EQ(h.source.computed_digests(), 1u) << "the store's digest is used as is";
}

TEST(TcpTransportTest, SingleStreamLargeObject) {
  Holder h(Opts("", 256 * 1024, 1));
  auto client = MakeClient(Opts("", 256 * 1024, 1));
  ObjectID id = h.source.Add(5 * kMiB + 1, 0, /*digest_valid=*/true);
  ExpectPulls(client.get(), &h, id, 5 * kMiB + 1, 0);
  EXPECT_EQ(h.source.computed_digests(), 0u) << "the store's digest is used as is";
}

TEST(TcpTransportTest, UnknownObjectIsNotFound) {
  Holder h(Opts());
  auto client = MakeClient(Opts());
  std::vector<uint8_t> got;
  auto r = PullInto(client.get(), h.endpoint, ObjectID::Random(), 10, 0, &got);
  EXPECT_TRUE(r.status().IsObjectNotFound()) << r.status().ToString();
  r = PullInto(client.get(), h.endpoint, ObjectID::Random(), 10 * kMiB, 0, &got);
  EXPECT_TRUE(r.status().IsObjectNotFound()) << r.status().ToString();
  // The connection survives a well-formed error.
  ObjectID id = h.source.Add(100, 0);
  ExpectPulls(client.get(), &h, id, 100, 0);
}

TEST(TcpTransportTest, SizeMismatchIsInvalidArgument) {
  Holder h(Opts());
  auto client = MakeClient(Opts());
  ObjectID small = h.source.Add(1000, 10);
  ObjectID large = h.source.Add(3 * kMiB, 10);
  std::vector<uint8_t> got;
  struct Case {
    ObjectID id;
    uint64_t data, metadata;
  } cases[] = {{small, 999, 10},      {small, 1001, 10},         {small, 1000, 0},
               {large, 3 * kMiB, 11}, {large, 3 * kMiB - 1, 10}, {large, 2 * kMiB, 0},
               {small, 5 * kMiB, 0}};
  for (const Case& c : cases) {
    auto r = PullInto(client.get(), h.endpoint, c.id, c.data, c.metadata, &got);
    EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
    EXPECT_NE(r.status().message().find("the holder has"), std::string::npos)
        << r.status().message();
  }
  ExpectPulls(client.get(), &h, small, 1000, 10);
}

TEST(TcpTransportTest, WrongSecretIsPermissionDeniedBothWays) {
  Holder h(Opts("alpha"));
  ObjectID id = h.source.Add(100, 0);
  std::vector<uint8_t> got;
  for (const char* secret : {"beta", ""}) {
    auto client = MakeClient(Opts(secret));
    auto r = PullInto(client.get(), h.endpoint, id, 100, 0, &got);
    EXPECT_TRUE(r.status().IsPermissionDenied()) << secret << ": " << r.status().ToString();
  }
  // A holder without a secret refuses a client with one, and vice versa.
  Holder open(Opts(""));
  ObjectID oid = open.source.Add(100, 0);
  auto with_secret = MakeClient(Opts("alpha"));
  auto r = PullInto(with_secret.get(), open.endpoint, oid, 100, 0, &got);
  EXPECT_TRUE(r.status().IsPermissionDenied()) << r.status().ToString();
  // Good peers are still served.
  ExpectPulls(with_secret.get(), &h, id, 100, 0);
  auto without = MakeClient(Opts(""));
  ExpectPulls(without.get(), &open, oid, 100, 0);
  EXPECT_EQ(h.source.pins(), 1u);
}

TEST(TcpTransportTest, ServerProvingTheWrongSecretIsRefusedByTheClient) {
  // The client checks the server's proof before sending its own.
  Holder h(Opts("alpha"));
  ObjectID id = h.source.Add(10, 0);
  auto client = MakeClient(Opts("gamma"));
  std::vector<uint8_t> got;
  auto r = PullInto(client.get(), h.endpoint, id, 10, 0, &got);
  ASSERT_TRUE(r.status().IsPermissionDenied());
  EXPECT_NE(r.status().message().find("the peer failed authentication"), std::string::npos)
      << r.status().message();
}

TEST(TcpTransportTest, ConnectionsArePooled) {
  Holder h(Opts());
  auto client = MakeClient(Opts());
  ObjectID id = h.source.Add(4096, 16);
  for (int i = 0; i < 100; i++) ExpectPulls(client.get(), &h, id, 4096, 16);
  EXPECT_EQ(h.transport->accepted_connections(), 1u);
  EXPECT_EQ(h.source.pins(), 100u);
}

// The congestion control of every established TCP connection of this
// process (both ends of the transports' connections, over loopback).
std::vector<std::string> EstablishedCongestion() {
  std::vector<std::string> out;
  for (int fd = 0; fd < 4096; fd++) {
    tcp_info info{};
    socklen_t len = sizeof(info);
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
        info.tcpi_state != TCP_ESTABLISHED)
      continue;
    char name[16] = {};
    len = sizeof(name);
    if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &len) == 0) out.emplace_back(name);
  }
  return out;
}

std::string FirstLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

TEST(TcpTransportTest, ConnectionsUseTheChosenCongestionControl) {
  // One the host does not default to, so that the check can fail: reno is
  // built into every kernel, cubic nearly so.
  const std::string host_default = FirstLine("/proc/sys/net/ipv4/tcp_congestion_control");
  TcpTransportOptions o = Opts();
  o.congestion = host_default == "reno" ? "cubic" : "reno";
  o.congestion_required = true;
  Holder h(o);
  auto client = MakeClient(o);
  ObjectID id = h.source.Add(kMiB, 0);
  ExpectPulls(client.get(), &h, id, kMiB, 0);
  const std::vector<std::string> ccs = EstablishedCongestion();
  EXPECT_GE(ccs.size(), 2u) << "the pull's connection, at both ends";
  for (const std::string& cc : ccs) EXPECT_EQ(cc, o.congestion);
}

TEST(TcpTransportTest, AnUnknownCongestionControlFailsOnlyWhenRequired) {
  TcpTransportOptions o = Opts();
  o.congestion = "no-such-algo";
  o.congestion_required = true;
  auto t = TcpTransport::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(t.status().IsInvalidArgument()) << t.status().ToString();
  EXPECT_NE(t.status().message().find("no-such-algo"), std::string::npos);
  o.congestion = std::string(16, 'x');
  EXPECT_TRUE(TcpTransport::Create(o).status().IsInvalidArgument());
  // Not required: the connections keep the host's default, and pull.
  o.congestion = "no-such-algo";
  o.congestion_required = false;
  Holder h(o);
  auto client = MakeClient(o);
  ObjectID id = h.source.Add(4096, 0);
  ExpectPulls(client.get(), &h, id, 4096, 0);
  const std::string host_default = FirstLine("/proc/sys/net/ipv4/tcp_congestion_control");
  const std::vector<std::string> ccs = EstablishedCongestion();
  ASSERT_FALSE(ccs.empty());
  for (const std::string& cc : ccs) EXPECT_EQ(cc, host_default);
}

TEST(TcpTransportTest, ConcurrentPullsFromEightThreads) {
  Holder h(Opts("s3cret", 256 * 1024, 3));
  auto client = MakeClient(Opts("s3cret", 256 * 1024, 3));
  std::vector<std::pair<ObjectID, std::pair<uint64_t, uint64_t>>> objects;
  for (uint64_t size : {0ull, 1ull, 5000ull, 256 * 1024ull, 256 * 1024 + 1ull, 900 * 1024ull}) {
    objects.push_back({h.source.Add(size, size % 7), {size, size % 7}});
  }
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; i++) {
        const auto& [id, sizes] = objects[static_cast<size_t>(t + i) % objects.size()];
        std::vector<uint8_t> got;
        auto r = PullInto(client.get(), h.endpoint, id, sizes.first, sizes.second, &got);
        if (r.ok() && r->digest == h.source.RealDigest(id) && got == h.source.Bytes(id)) ok++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 160);
}

TEST(TcpTransportTest, WrongDigestIsCorruption) {
  Holder h(Opts());
  auto client = MakeClient(Opts());
  ObjectID small = h.source.Add(1000, 0);
  ObjectID large = h.source.Add(3 * kMiB + 5, 0);
  h.source.Lie(small);
  h.source.Lie(large);
  std::vector<uint8_t> got;
  auto r = PullInto(client.get(), h.endpoint, small, 1000, 0, &got);
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  r = PullInto(client.get(), h.endpoint, large, 3 * kMiB + 5, 0, &got);
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
}

std::unique_ptr<AsyncPull> StartLoopPull(TcpTransport* t, const std::string& endpoint,
                                         const ObjectID& id, uint64_t size,
                                         std::vector<uint8_t>* out) {
  out->assign(size, 0);
  PullRequest req;
  req.id = id;
  req.data_size = size;
  req.destination = out->data();
  return t->StartAsyncPull(endpoint, req);
}

TEST(TcpWireTest, AFrameReaderTakesFramesHoweverTheStreamCutsThem) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  tcp::PullMessage m;
  m.id = ObjectID::Random();
  m.length = 4096;
  const std::string f1 = tcp::MakeFrame(tcp::MessageType::kPull, 1, m);
  const std::string f2 = tcp::MakeFrame(tcp::MessageType::kPull, 2, m);
  tcp::FrameReader r(b.get());
  tcp::Frame f;
  Status st;
  auto next = [&](int idle_ms) { return r.Next(idle_ms, &f, &st); };
  using Got = tcp::FrameReader::Got;
  // Two frames in one write: two frames out, in order.
  ASSERT_TRUE(tcp::SendAll(a.get(), f1 + f2).ok());
  ASSERT_EQ(next(-1), Got::kFrame);
  EXPECT_EQ(f.header.request_id, 1u);
  ASSERT_EQ(next(-1), Got::kFrame);
  EXPECT_EQ(f.header.request_id, 2u);
  tcp::PullMessage back;
  ASSERT_TRUE(tcp::ParseBody(f.body, &back));
  EXPECT_EQ(back.id, m.id);
  EXPECT_EQ(next(0), Got::kIdle) << "nothing more was sent";
  // A frame that trickles in byte by byte, then half of another.
  std::thread trickle([&] {
    for (char c : f1) {
      ASSERT_EQ(::send(a.get(), &c, 1, 0), 1);
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_EQ(::send(a.get(), f2.data(), 10, 0), 10);
  });
  ASSERT_EQ(next(-1), Got::kFrame);
  EXPECT_EQ(f.header.request_id, 1u);
  trickle.join();
  // The peer goes away mid-frame: an error, not a clean end.
  a.Reset();
  EXPECT_EQ(next(-1), Got::kError);
  EXPECT_TRUE(st.IsDisconnected()) << st.ToString();
  // A clean end between frames, and a header that lies about its body.
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd c(sv[0]), d(sv[1]);
  tcp::FrameReader r2(d.get());
  ASSERT_TRUE(tcp::SendAll(c.get(), f1).ok());
  ASSERT_EQ(r2.Next(-1, &f, &st), Got::kFrame);
  std::string huge = f1;
  protocol::FrameHeader h = protocol::DecodeHeader(huge.data());
  h.body_len = tcp::kMaxControlBody + 1;
  protocol::EncodeHeader(h, huge.data());
  ASSERT_TRUE(tcp::SendAll(c.get(), huge.substr(0, protocol::kHeaderSize)).ok());
  EXPECT_EQ(r2.Next(-1, &f, &st), Got::kError);
  EXPECT_TRUE(st.IsProtocolError()) << st.ToString();
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd e(sv[0]), g(sv[1]);
  tcp::FrameReader r3(g.get());
  e.Reset();
  EXPECT_EQ(r3.Next(-1, &f, &st), Got::kEof);
}

TEST(TcpTransportTest, SmallPullsRunOnTheCallersLoopOverPooledConnections) {
  Holder h(Opts());
  auto client = MakeClient(Opts());
  ObjectID small = h.source.Add(4096, 0);
  ObjectID limit = h.source.Add(64 << 10, 0);
  ObjectID large = h.source.Add((64 << 10) + 1, 0);
  std::vector<uint8_t> got;
  // No connection yet: making one blocks, so that is Pull's business.
  EXPECT_EQ(StartLoopPull(client.get(), h.endpoint, small, 4096, &got), nullptr);
  ExpectPulls(client.get(), &h, small, 4096, 0);
  for (int i = 0; i < 20; i++) {
    for (auto [id, size] : {std::pair{small, uint64_t{4096}}, std::pair{limit, uint64_t{64 << 10}}}) {
      std::unique_ptr<AsyncPull> a = StartLoopPull(client.get(), h.endpoint, id, size, &got);
      ASSERT_NE(a, nullptr) << "the pooled connection came back after pull " << i;
      Result<PullResult> r = RunLoopPull(a.get());
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->digest, h.source.RealDigest(id));
      EXPECT_EQ(got, h.source.Bytes(id));
      EXPECT_GT(r->landed_us, 0);
    }
  }
  EXPECT_EQ(h.transport->accepted_connections(), 1u);
  // Past async_max (64 KiB by default) an object goes the blocking way.
  EXPECT_EQ(StartLoopPull(client.get(), h.endpoint, large, (64 << 10) + 1, &got), nullptr);
}

TEST(TcpTransportTest, LoopPullsReportTheHoldersErrorsAndKeepTheConnection) {
  Holder h(Opts());
  auto client = MakeClient(Opts());
  ObjectID id = h.source.Add(1000, 0);
  ObjectID lied = h.source.Add(2000, 0);
  h.source.Lie(lied);
  ExpectPulls(client.get(), &h, id, 1000, 0);
  std::vector<uint8_t> got;
  std::unique_ptr<AsyncPull> a = StartLoopPull(client.get(), h.endpoint, ObjectID::Random(), 10, &got);
  ASSERT_NE(a, nullptr);
  Result<PullResult> r = RunLoopPull(a.get());
  EXPECT_TRUE(r.status().IsObjectNotFound()) << r.status().ToString();
  EXPECT_FALSE(a->stale_connection());
  a.reset();
  a = StartLoopPull(client.get(), h.endpoint, lied, 2000, &got);
  ASSERT_NE(a, nullptr) << "no bytes follow an error: the connection stays";
  r = RunLoopPull(a.get());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  a.reset();
  a = StartLoopPull(client.get(), h.endpoint, id, 999, &got);  // the directory's size was wrong
  ASSERT_NE(a, nullptr) << "every byte was read: the connection stays";
  r = RunLoopPull(a.get());
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  a.reset();
  // The holder sent 999 bytes after that reply, unread: the connection went.
  ExpectPulls(client.get(), &h, id, 1000, 0);
  EXPECT_EQ(h.transport->accepted_connections(), 2u);
}

TEST(TcpTransportTest, APooledConnectionThatDiedIdleFailsALoopPullAsStale) {
  auto client = MakeClient(Opts());
  std::vector<uint8_t> got;
  std::unique_ptr<AsyncPull> a;
  {
    Holder h(Opts());
    ObjectID id = h.source.Add(1000, 0);
    ExpectPulls(client.get(), &h, id, 1000, 0);
    h.transport->Shutdown();  // closes its end of the pooled connection
    // Taken without a check (no system call): the pull finds out.
    a = StartLoopPull(client.get(), h.endpoint, id, 1000, &got);
  }
  if (a == nullptr) GTEST_SKIP() << "the send already failed: Pull's business";
  Result<PullResult> r = RunLoopPull(a.get());
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  EXPECT_TRUE(a->stale_connection()) << "the caller should pull again on a new connection";
}

TEST(TcpTransportTest, ASilentHolderFailsALoopPullAtItsDeadline) {
  TcpTransportOptions o = Opts();
  o.io_timeout_ms = 300;
  Holder h(Opts());
  auto client = MakeClient(o);
  ObjectID id = h.source.Add(1000, 0);
  ExpectPulls(client.get(), &h, id, 1000, 0);
  h.source.BlockPinsAfter(0);  // the holder reads the request and says nothing
  std::vector<uint8_t> got;
  std::unique_ptr<AsyncPull> a = StartLoopPull(client.get(), h.endpoint, id, 1000, &got);
  ASSERT_NE(a, nullptr);
  Result<PullResult> r = RunLoopPull(a.get());
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("silent"), std::string::npos) << r.status().ToString();
  a.reset();  // closes that connection: its answer would come late
  h.source.OpenGate();
  ExpectPulls(client.get(), &h, id, 1000, 0);
  EXPECT_EQ(h.transport->accepted_connections(), 2u);
}

TEST(TcpTransportTest, AHolderThatClosesMidLoopPullFailsItAsStaleOnlyBeforeAnyAnswer) {
  Holder h(Opts());
  auto client = MakeClient(Opts());
  ObjectID id = h.source.Add(1000, 0);
  ExpectPulls(client.get(), &h, id, 1000, 0);
  h.source.BlockPinsAfter(0);
  std::vector<uint8_t> got;
  std::unique_ptr<AsyncPull> a = StartLoopPull(client.get(), h.endpoint, id, 1000, &got);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(Eventually([&] { return h.source.blocked() == 1; }));
  std::thread stop([&] { h.transport->Shutdown(); });  // closes the served connection
  ASSERT_TRUE(Eventually([&] {
    pollfd p{a->fd(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }));
  Result<PullResult> r = RunLoopPull(a.get());
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  EXPECT_TRUE(a->stale_connection()) << "nothing came back: worth a try on a new connection";
  h.source.OpenGate();
  stop.join();
}

// A holder played by hand: the server half of the handshake (no secret),
// then `serve` answers each Pull on that connection.
class RawHolder {
 public:
  using Serve = std::function<void(int fd, const tcp::PullMessage& m, uint64_t request_id)>;
  explicit RawHolder(Serve serve) : lfd_(ListenOnLoopback(&port_)) {
    thread_ = std::thread([this, serve = std::move(serve)] {
      UniqueFd fd(::accept4(lfd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!fd.valid()) return;
      tcp::Frame f;
      tcp::Hello hello;
      if (!tcp::ReadFrame(fd.get(), tcp::kMaxControlBody, &f).ok() ||
          !tcp::ParseBody(f.body, &hello))
        return;
      tcp::Challenge ch;
      ch.proof = tcp::MakeProof("", tcp::kServerLabel, hello.nonce, ch.nonce);
      (void)tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kChallenge, 1, ch));
      if (!tcp::ReadFrame(fd.get(), tcp::kMaxControlBody, &f).ok()) return;
      (void)tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kWelcome, 2, tcp::Welcome{}));
      tcp::PullMessage m;
      while (tcp::ReadFrame(fd.get(), tcp::kMaxControlBody, &f).ok() && tcp::ParseBody(f.body, &m))
        serve(fd.get(), m, f.header.request_id);
    });
  }
  ~RawHolder() {
    ::shutdown(lfd_.get(), SHUT_RDWR);
    thread_.join();
  }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  uint16_t port_ = 0;
  UniqueFd lfd_;
  std::thread thread_;
};

// A holder's block digests are checked one by one as the bytes land; a
// reply with neither a digest nor block digests has nothing to check
// against. Both fail the pull with a reason, and nothing is published.
TEST(TcpTransportTest, WrongOrMissingBlockDigestsFailThePull) {
  const uint64_t size = 3 * kDigestBlock + 10;
  std::vector<uint8_t> bytes(size);
  Fill(bytes.data(), size, 7);
  for (bool send_blocks : {true, false}) {
    SCOPED_TRACE(send_blocks ? "a wrong block digest" : "no digest");
    RawHolder holder([&](int fd, const tcp::PullMessage& m, uint64_t rid) {
      EXPECT_TRUE(m.block_digests && m.want_digest);
      tcp::PullReply rep;
      rep.data_size = size;
      rep.block_digests = send_blocks;
      std::string out = tcp::MakeFrame(tcp::MessageType::kPullReply, rid, rep);
      out.append(reinterpret_cast<const char*>(bytes.data()), size);
      if (send_blocks) {
        for (uint64_t b = 0; b < DigestBlocks(size); b++) {
          uint64_t d = BlockDigest(bytes.data() + b * kDigestBlock,
                                   std::min(kDigestBlock, size - b * kDigestBlock));
          if (b == 2) d ^= 1;  // the third block's
          out.append(reinterpret_cast<const char*>(&d), sizeof(d));
        }
      }
      (void)tcp::SendAll(fd, out);
    });
    auto client = MakeClient(Opts(""));
    std::vector<uint8_t> got;
    auto r = PullInto(client.get(), holder.endpoint(), ObjectID::Random(), size, 0, &got);
    if (send_blocks) {
      EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
      EXPECT_NE(r.status().message().find("bytes " + std::to_string(2 * kDigestBlock) + " to " +
                                          std::to_string(3 * kDigestBlock)),
                std::string::npos)
          << r.status().ToString();
    } else {
      EXPECT_TRUE(r.status().IsProtocolError()) << r.status().ToString();
      EXPECT_NE(r.status().message().find("no digest"), std::string::npos)
          << r.status().ToString();
    }
    client->Shutdown();
  }
}

TEST(TcpTransportTest, ClientShutdownBreaksALargePullInFlight) {
  Holder h(Opts("s3cret", kMiB, 4));
  auto client = MakeClient(Opts("s3cret", kMiB, 4));
  const uint64_t size = 40 * kMiB;
  ObjectID id = h.source.Add(size, 0);
  h.source.BlockPinsAfter(3);
  std::vector<uint8_t> got;
  auto pull = std::async(std::launch::async,
                         [&] { return PullInto(client.get(), h.endpoint, id, size, 0, &got); });
  ASSERT_TRUE(Eventually([&] { return h.source.blocked() > 0; }));
  client->Shutdown();
  ASSERT_EQ(pull.wait_for(60s), std::future_status::ready);
  Result<PullResult> r = pull.get();
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  h.source.OpenGate();
  r = PullInto(client.get(), h.endpoint, id, size, 0, &got);
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  client->Shutdown();  // idempotent
}

TEST(TcpTransportTest, HolderShutdownMidTransferIsDisconnected) {
  auto holder = std::make_unique<Holder>(Opts("s3cret", kMiB, 4));
  auto client = MakeClient(Opts("s3cret", kMiB, 4));
  const uint64_t size = 20 * kMiB;
  ObjectID id = holder->source.Add(size, 0);
  holder->source.BlockPinsAfter(4);
  std::vector<uint8_t> got;
  auto pull = std::async(std::launch::async, [&] {
    return PullInto(client.get(), holder->endpoint, id, size, 0, &got);
  });
  ASSERT_TRUE(Eventually([&] { return holder->source.blocked() > 0; }));
  // Shutdown breaks the connections, then waits for the blocked pins.
  auto stop = std::async(std::launch::async, [&] { holder->transport->Shutdown(); });
  ASSERT_EQ(pull.wait_for(60s), std::future_status::ready);
  Result<PullResult> r = pull.get();
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(holder->endpoint), std::string::npos) << r.status().message();
  holder->source.OpenGate();
  stop.get();
  // A holder that is gone is Disconnected too, and the stale pool is dropped.
  std::string endpoint = holder->endpoint;
  holder.reset();
  r = PullInto(client.get(), endpoint, id, 10, 0, &got);
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
}

TEST(TcpTransportTest, ConnectionRefusedIsDisconnected) {
  std::string endpoint;
  {
    Holder h(Opts());
    endpoint = h.endpoint;
  }
  auto client = MakeClient(Opts());
  std::vector<uint8_t> got;
  auto r = PullInto(client.get(), endpoint, ObjectID::Random(), 10, 0, &got);
  EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(endpoint), std::string::npos) << r.status().message();
  r = PullInto(client.get(), "no-port", ObjectID::Random(), 10, 0, &got);
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
}

// A holder that accepts and then only trickles a byte now and then (none,
// with `gap` 0): the pull's dial deadline ends it, not the io timeout per read.
TEST(TcpTransportTest, AHolderThatNeverCompletesItsHandshakeFailsByTheDialDeadline) {
  for (auto gap : {0ms, 100ms}) {
    uint16_t port = 0;
    UniqueFd lfd = ListenOnLoopback(&port, 4);
    const std::string endpoint = "127.0.0.1:" + std::to_string(port);
    std::atomic<bool> done{false};
    std::thread peer([&] {
      UniqueFd c(::accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      while (!done) {
        std::this_thread::sleep_for(gap.count() > 0 ? gap : 10ms);
        if (gap.count() > 0) (void)::send(c.get(), "\0", 1, MSG_NOSIGNAL);
      }
    });
    TcpTransportOptions o = Opts();
    o.io_timeout_ms = 60000;
    o.dial_timeout_ms = 500;
    auto client = MakeClient(o);
    std::vector<uint8_t> got;
    auto start = std::chrono::steady_clock::now();
    auto r = PullInto(client.get(), endpoint, ObjectID::Random(), 10, 0, &got);
    auto took = std::chrono::steady_clock::now() - start;
    done = true;
    peer.join();
    EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
    EXPECT_NE(r.status().message().find("500 ms"), std::string::npos) << r.status().message();
    EXPECT_LT(took, 20s) << "the dial deadline did not end it";  // the io timeout is 60 s
  }
}

TEST(TcpTransportTest, MalformedFramesCloseOnlyThatConnection) {
  Holder h(Opts());
  ObjectID id = h.source.Add(1000, 0);
  auto header = [](uint32_t body_len, uint16_t type, uint16_t flags) {
    std::string s(protocol::kHeaderSize, '\0');
    protocol::EncodeHeader({body_len, type, flags, 1}, s.data());
    return s;
  };
  {  // bad magic
    UniqueFd fd = RawConnect(h.endpoint);
    tcp::Hello hello;
    hello.magic = 0x12345678;
    ASSERT_TRUE(tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kHello, 1, hello)).ok());
    EXPECT_TRUE(ServerCloses(fd.get()));
  }
  {  // huge length
    UniqueFd fd = RawConnect(h.endpoint);
    ASSERT_TRUE(tcp::SendAll(fd.get(), header(0xFFFFFFFF, 1, 0)).ok());
    EXPECT_TRUE(ServerCloses(fd.get()));
  }
  {  // nonzero flags
    UniqueFd fd = RawConnect(h.endpoint);
    ASSERT_TRUE(tcp::SendAll(fd.get(), header(0, 1, 1)).ok());
    EXPECT_TRUE(ServerCloses(fd.get()));
  }
  {  // a Pull before the handshake
    UniqueFd fd = RawConnect(h.endpoint);
    tcp::PullMessage m;
    m.id = id;
    ASSERT_TRUE(tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kPull, 1, m)).ok());
    EXPECT_TRUE(ServerCloses(fd.get()));
  }
  {  // a truncated frame, then hang up
    UniqueFd fd = RawConnect(h.endpoint);
    ASSERT_TRUE(tcp::SendAll(fd.get(), header(100, 1, 0) + "abc").ok());
    ::shutdown(fd.get(), SHUT_WR);
    EXPECT_TRUE(ServerCloses(fd.get()));
  }
  {  // authenticated, then a truncated Pull body
    UniqueFd fd = RawConnect(h.endpoint);
    ASSERT_TRUE(RawHandshake(fd.get(), "s3cret"));
    ASSERT_TRUE(
        tcp::SendAll(fd.get(), header(5, tcp::Type(tcp::MessageType::kPull), 0) + "12345").ok());
    EXPECT_TRUE(ServerCloses(fd.get()));
  }
  {  // authenticated, then an unknown type
    UniqueFd fd = RawConnect(h.endpoint);
    ASSERT_TRUE(RawHandshake(fd.get(), "s3cret"));
    ASSERT_TRUE(tcp::SendAll(fd.get(), header(0, 77, 0)).ok());
    EXPECT_TRUE(ServerCloses(fd.get()));
  }
  {  // authenticated: ranges outside the object are refused, the connection stays
    UniqueFd fd = RawConnect(h.endpoint);
    ASSERT_TRUE(RawHandshake(fd.get(), "s3cret"));
    struct Range {
      uint64_t offset, length;
    } ranges[] = {{0, 1001}, {1001, 0}, {1, UINT64_MAX}, {UINT64_MAX, 2}, {999, 2}};
    for (const Range& rg : ranges) {
      tcp::PullMessage m;
      m.id = id;
      m.offset = rg.offset;
      m.length = rg.length;
      ASSERT_TRUE(tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kPull, 9, m)).ok());
      tcp::Frame f;
      tcp::PullReply rep;
      ASSERT_TRUE(tcp::ReadFrame(fd.get(), tcp::kMaxControlBody, &f).ok());
      ASSERT_TRUE(tcp::ParseBody(f.body, &rep));
      EXPECT_TRUE(rep.status.IsInvalidArgument()) << rep.status.ToString();
      EXPECT_EQ(rep.data_size, 1000u);
    }
    // An in-range request on the same connection gets exactly its bytes.
    tcp::PullMessage m;
    m.id = id;
    m.offset = 990;
    m.length = 10;
    ASSERT_TRUE(tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kPull, 10, m)).ok());
    tcp::Frame f;
    tcp::PullReply rep;
    ASSERT_TRUE(tcp::ReadFrame(fd.get(), tcp::kMaxControlBody, &f).ok());
    ASSERT_TRUE(tcp::ParseBody(f.body, &rep));
    ASSERT_TRUE(rep.status.ok()) << rep.status.ToString();
    EXPECT_EQ(f.header.request_id, 10u);
    uint8_t bytes[10];
    ASSERT_TRUE(tcp::ReadExact(fd.get(), bytes, sizeof(bytes)).ok());
    std::vector<uint8_t> all = h.source.Bytes(id);
    EXPECT_EQ(std::memcmp(bytes, all.data() + 990, 10), 0);
  }
  auto client = MakeClient(Opts());
  ExpectPulls(client.get(), &h, id, 1000, 0);
}

TEST(TcpTransportTest, ConnectionsBeyondTheLimitAreRefused) {
  TcpTransportOptions o = Opts("");
  o.max_connections = 2;
  Holder h(o);
  ObjectID id = h.source.Add(10, 0);
  auto client = MakeClient(Opts(""));
  std::vector<uint8_t> got;
  {
    UniqueFd a = RawConnect(h.endpoint), b = RawConnect(h.endpoint);
    ASSERT_TRUE(RawHandshake(a.get(), ""));
    ASSERT_TRUE(RawHandshake(b.get(), ""));
    auto r = PullInto(client.get(), h.endpoint, id, 10, 0, &got);
    EXPECT_TRUE(r.status().IsDisconnected()) << r.status().ToString();
  }
  // Once those hang up, their slots free.
  EXPECT_TRUE(Eventually([&] { return PullInto(client.get(), h.endpoint, id, 10, 0, &got).ok(); }));
}

TEST(TcpTransportTest, SilentPeersAreDroppedButIdleOnesAreNot) {
  TcpTransportOptions o = Opts();
  o.io_timeout_ms = 300;
  Holder h(o);
  ObjectID big = h.source.Add(40 * kMiB, 0);
  ObjectID small = h.source.Add(100, 0);
  {  // a peer that stops reading mid-reply: the send times out and the pin ends
    UniqueFd fd = RawConnect(h.endpoint);
    ASSERT_TRUE(RawHandshake(fd.get(), "s3cret"));
    tcp::PullMessage m;
    m.id = big;
    m.length = 40 * kMiB;
    ASSERT_TRUE(tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kPull, 1, m)).ok());
    EXPECT_TRUE(Eventually([&] { return h.source.pins() == 1 && h.source.unpins() == 1; }));
  }
  {  // a peer that stops mid-frame is dropped
    UniqueFd fd = RawConnect(h.endpoint);
    ASSERT_TRUE(RawHandshake(fd.get(), "s3cret"));
    ASSERT_TRUE(tcp::SendAll(fd.get(), "abc").ok());
    EXPECT_TRUE(ServerCloses(fd.get()));
  }
  // An idle pooled connection outlives io_timeout.
  auto client = MakeClient(Opts());
  ExpectPulls(client.get(), &h, small, 100, 0);
  uint64_t accepted = h.transport->accepted_connections();
  std::this_thread::sleep_for(1s);
  ExpectPulls(client.get(), &h, small, 100, 0);
  EXPECT_EQ(h.transport->accepted_connections(), accepted);
}

// ---- peers that do not finish their handshake ----

// A raw socket to `endpoint` from the loopback address `from` (127.0.0.X:
// another address, as far as the holder's per-address limits go).
UniqueFd ConnectFrom(const std::string& endpoint, const char* from) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, from, &local.sin_addr);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)), 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1))));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

// Whether the holder closes `fd` within `within` (reads to EOF or a reset).
bool ClosedWithin(int fd, std::chrono::milliseconds within) {
  timeval tv{static_cast<time_t>(within.count() / 1000),
             static_cast<suseconds_t>(within.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[256];
  auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET || errno == EPIPE;
  }
  return false;
}

TEST(TcpTransportTest, SlowAndSilentPeersAreCutAtTheHandshakeDeadline) {
  TcpTransportOptions o = Opts();
  o.handshake_timeout_ms = 500;  // io_timeout stays 10 s: the cut is the deadline's
  o.max_connections = 4;         // fewer than the hostile connections
  Holder h(o);
  ObjectID id = h.source.Add(100, 0);
  // A slowloris address sends one header byte every 100 ms; a silent one
  // sends nothing.
  std::vector<UniqueFd> slow, silent;
  for (int i = 0; i < 16; i++) slow.push_back(ConnectFrom(h.endpoint, "127.0.0.2"));
  for (int i = 0; i < 16; i++) silent.push_back(ConnectFrom(h.endpoint, "127.0.0.3"));
  std::atomic<bool> stop{false};
  std::thread drip([&] {
    for (int round = 0; round < 15 && !stop; round++) {  // 16 bytes: a header, never done
      for (UniqueFd& fd : slow) (void)::send(fd.get(), "\0", 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(100ms);
    }
  });
  // Meanwhile a peer with the secret pulls: the hostile connections hold
  // none of the serving slots.
  auto client = MakeClient(Opts());
  ExpectPulls(client.get(), &h, id, 100, 0);
  // Every hostile connection is closed, long before io_timeout.
  for (UniqueFd& fd : slow) EXPECT_TRUE(ClosedWithin(fd.get(), 5s)) << "a slowloris connection";
  for (UniqueFd& fd : silent) EXPECT_TRUE(ClosedWithin(fd.get(), 5s)) << "a silent connection";
  stop = true;
  drip.join();
  // The slots are free: the same addresses may try again, and every serving
  // slot left is there for handshaken peers.
  UniqueFd again = ConnectFrom(h.endpoint, "127.0.0.2");
  EXPECT_TRUE(RawHandshake(again.get(), "s3cret"));
  std::vector<UniqueFd> more;
  for (int i = 0; i < 2; i++) {
    more.push_back(RawConnect(h.endpoint));
    EXPECT_TRUE(RawHandshake(more.back().get(), "s3cret"));
  }
  ExpectPulls(client.get(), &h, id, 100, 0);
}

TEST(TcpTransportTest, OneAddressCannotTakeEveryHandshakeSlot) {
  TcpTransportOptions o = Opts();
  o.handshake_timeout_ms = 20000;  // only the per-address cap closes anything here
  o.max_handshakes_per_address = 4;
  Holder h(o);
  std::vector<UniqueFd> first;
  for (int i = 0; i < 4; i++) first.push_back(ConnectFrom(h.endpoint, "127.0.0.2"));
  // Past its cap, the address is refused at once...
  for (int i = 0; i < 6; i++) {
    UniqueFd fd = ConnectFrom(h.endpoint, "127.0.0.2");
    EXPECT_TRUE(ClosedWithin(fd.get(), 5s)) << "connection " << 4 + i << " from one address";
  }
  // ...and its first four are still in their handshake, which they may finish.
  for (UniqueFd& fd : first) {
    pollfd p{fd.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "the server closed a connection within the cap";
  }
  EXPECT_TRUE(RawHandshake(first[0].get(), "s3cret"));
  // Other addresses are not.
  UniqueFd other = ConnectFrom(h.endpoint, "127.0.0.3");
  EXPECT_TRUE(RawHandshake(other.get(), "s3cret"));
  // A handshake finished frees its slot: the address may open one more.
  UniqueFd fifth = ConnectFrom(h.endpoint, "127.0.0.2");
  EXPECT_TRUE(RawHandshake(fifth.get(), "s3cret"));
}

TEST(TcpTransportTest, HandshakenPeersAreServedWhileEveryHandshakeSlotIsTaken) {
  TcpTransportOptions o = Opts("s3cret", 64 * 1024, 4);
  o.handshake_timeout_ms = 20000;
  o.max_connections = 8;
  o.max_handshakes = 8;  // all taken by silent connections from several addresses
  Holder h(o);
  ObjectID big = h.source.Add(kMiB, 0);  // 16 chunks over 4 streams
  std::vector<UniqueFd> silent;
  for (const char* from : {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"})
    for (int i = 0; i < 2; i++) silent.push_back(ConnectFrom(h.endpoint, from));
  auto client = MakeClient(Opts("s3cret", 64 * 1024, 4));
  ExpectPulls(client.get(), &h, big, kMiB, 0);
  // The oldest silent connections made room for the puller's.
  EXPECT_TRUE(ClosedWithin(silent[0].get(), 5s));
}

TEST(TcpTransportTest, HandshakeLimitsMustBePositive) {
  TcpTransportOptions o = Opts();
  o.handshake_timeout_ms = 0;
  EXPECT_TRUE(TcpTransport::Create(o).status().IsInvalidArgument());
  o = Opts();
  o.max_handshakes = 0;
  EXPECT_TRUE(TcpTransport::Create(o).status().IsInvalidArgument());
  o = Opts();
  o.max_handshakes_per_address = 0;
  EXPECT_TRUE(TcpTransport::Create(o).status().IsInvalidArgument());
}

// ---- the log ----

// Collects what spdlog's default logger logs while it lives.
class CapturedLog {
 public:
  CapturedLog() : sink_(std::make_shared<Sink>()) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~CapturedLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::vector<std::string> Lines(spdlog::level::level_enum at_least) const {
    std::lock_guard<std::mutex> l(sink_->lines_mu);
    std::vector<std::string> out;
    for (const auto& [level, line] : sink_->lines)
      if (level >= at_least) out.push_back(line);
    return out;
  }

 private:
  struct Sink : spdlog::sinks::base_sink<std::mutex> {
    void sink_it_(const spdlog::details::log_msg& msg) override {
      std::lock_guard<std::mutex> l(lines_mu);
      lines.emplace_back(msg.level, std::string(msg.payload.data(), msg.payload.size()));
    }
    void flush_() override {}
    mutable std::mutex lines_mu;
    std::vector<std::pair<spdlog::level::level_enum, std::string>> lines;
  };
  std::shared_ptr<Sink> sink_;
};

TEST(TcpTransportTest, AFloodOfGarbageConnectionsLogsABoundedNumberOfLines) {
  CapturedLog log;
  uint64_t suppressed = 0;
  {
    Holder h(Opts());
    ObjectID id = h.source.Add(100, 0);
    // 2000 connections of garbage, four at a time.
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
      threads.emplace_back([&] {
        for (int i = 0; i < 500; i++) {
          UniqueFd fd = RawConnect(h.endpoint);
          (void)tcp::SendAll(fd.get(), std::string(16, 'x') + std::string(64, 'y'));
          (void)ServerCloses(fd.get());
        }
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(h.transport->accepted_connections(), 2000u);
    auto client = MakeClient(Opts());
    ExpectPulls(client.get(), &h, id, 100, 0);  // still serving
    h.transport->Shutdown();                    // says what it suppressed
    suppressed = h.transport->suppressed_log_lines();
  }
  std::vector<std::string> lines = log.Lines(spdlog::level::info);
  size_t warnings = 0;
  std::string summary;
  for (const std::string& line : lines) {
    if (line.find("tcp transport") == std::string::npos) continue;
    if (line.find("listening on") != std::string::npos) continue;
    warnings++;
    if (line.find("suppressed") != std::string::npos) summary = line;
  }
  EXPECT_LE(warnings, 10u);
  EXPECT_GE(suppressed, 1990u);
  EXPECT_NE(summary.find("suppressed " + std::to_string(suppressed) + " similar warnings"),
            std::string::npos)
      << summary;
  EXPECT_NE(summary.find("127.0.0.1"), std::string::npos) << summary;
}

TEST(TcpTransportTest, AHoldKeepsTheObjectPinnedUntilTheNextFrame) {
  Holder h(Opts());
  ObjectID id = h.source.Add(100, 0);
  UniqueFd fd = RawConnect(h.endpoint);
  ASSERT_TRUE(RawHandshake(fd.get(), "s3cret"));
  auto ask = [&](bool hold, uint64_t rid) {
    tcp::PullMessage m;
    m.id = id;
    m.hold = hold;
    ASSERT_TRUE(tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kPull, rid, m)).ok());
    tcp::Frame f;
    tcp::PullReply rep;
    ASSERT_TRUE(tcp::ReadFrame(fd.get(), tcp::kMaxControlBody, &f).ok());
    ASSERT_TRUE(tcp::ParseBody(f.body, &rep));
    EXPECT_TRUE(rep.status.ok()) << rep.status.ToString();
  };
  ask(/*hold=*/true, 1);
  EXPECT_EQ(h.source.pins(), 1u);
  EXPECT_EQ(h.source.unpins(), 0u);  // held after the reply
  ask(/*hold=*/true, 2);             // a new hold: pinned again, then the old one ends
  EXPECT_TRUE(Eventually([&] { return h.source.pins() == 2 && h.source.unpins() == 1; }));
  ask(/*hold=*/false, 3);            // ends the hold
  EXPECT_TRUE(Eventually([&] { return h.source.pins() == 3 && h.source.unpins() == 3; }));
  ask(/*hold=*/true, 4);
  fd.Reset();  // the connection's end ends a hold too
  EXPECT_TRUE(Eventually([&] { return h.source.pins() == 4 && h.source.unpins() == 4; }));
}

TEST(TcpTransportTest, AHoldEndsAfterItsTimeoutButTheConnectionStays) {
  TcpTransportOptions o = Opts();
  o.hold_timeout_ms = 200;
  Holder h(o);
  ObjectID id = h.source.Add(100, 0);
  UniqueFd fd = RawConnect(h.endpoint);
  ASSERT_TRUE(RawHandshake(fd.get(), "s3cret"));
  tcp::PullMessage m;
  m.id = id;
  m.hold = true;
  ASSERT_TRUE(tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kPull, 1, m)).ok());
  tcp::Frame f;
  ASSERT_TRUE(tcp::ReadFrame(fd.get(), tcp::kMaxControlBody, &f).ok());
  // A silent puller: the hold ends by itself.
  EXPECT_TRUE(Eventually([&] { return h.source.pins() == 1 && h.source.unpins() == 1; }));
  m.hold = false;  // and the connection still serves
  ASSERT_TRUE(tcp::SendAll(fd.get(), tcp::MakeFrame(tcp::MessageType::kPull, 2, m)).ok());
  tcp::PullReply rep;
  ASSERT_TRUE(tcp::ReadFrame(fd.get(), tcp::kMaxControlBody, &f).ok());
  ASSERT_TRUE(tcp::ParseBody(f.body, &rep));
  EXPECT_TRUE(rep.status.ok()) << rep.status.ToString();
}

TEST(TcpTransportTest, ListenAddresses) {
  FakeSource source;
  TcpTransportOptions o;
  o.listen = "0.0.0.0:0";
  auto t = TcpTransport::Create(o);
  ASSERT_TRUE(t.ok());
  auto ep = (*t)->Listen(&source);
  EXPECT_TRUE(ep.status().IsInvalidArgument()) << ep.status().ToString();

  o.advertise = "10.1.2.3";
  t = TcpTransport::Create(o);
  ASSERT_TRUE(t.ok());
  ep = (*t)->Listen(&source);
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  EXPECT_EQ(ep->rfind("10.1.2.3:", 0), 0u) << *ep;
  EXPECT_NE(*ep, "10.1.2.3:0");
  EXPECT_TRUE((*t)->Listen(&source).status().IsInvalidArgument()) << "listens once";

  o.listen = "nonsense";
  EXPECT_TRUE(TcpTransport::Create(o).status().IsInvalidArgument());
  o.listen = "127.0.0.1:0";
  o.streams = 0;
  EXPECT_TRUE(TcpTransport::Create(o).status().IsInvalidArgument());
}

TEST(TcpTransportTest, DestinationOutsideRegisteredMemoryIsRefused) {
  Holder h(Opts());
  ObjectID id = h.source.Add(100, 0);
  auto client = MakeClient(Opts());
  std::vector<uint8_t> arena(4096);
  ASSERT_TRUE(client->RegisterMemory({arena.data(), arena.size(), -1}).ok());
  PullRequest req;
  req.id = id;
  req.data_size = 100;
  req.destination = arena.data() + 4000;  // runs past the region
  EXPECT_TRUE(client->Pull(h.endpoint, req).status().IsInvalidArgument());
  req.destination = arena.data() + 100;
  auto r = client->Pull(h.endpoint, req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->digest, h.source.RealDigest(id));
}

}  // namespace
}  // namespace plasmon
