// Writes the fuzz targets' seed corpora: real messages, encoded by the code
// under test. Built with PLASMON_FUZZ; regenerate the checked-in seeds after
// a wire format changes with
//   build-fuzz/fuzz_seeds tests/fuzz_corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/protocol.h"
#include "store/directory.h"
#include "transport/tcp_wire.h"
#include "transport/verbs_wire.h"

namespace plasmon {
namespace {

namespace fs = std::filesystem;
namespace p = protocol;

fs::path root;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(root / target);
  std::ofstream(root / target / name, std::ios::binary | std::ios::trunc) << bytes;
}

ObjectID Id(char fill) { return *ObjectID::FromHex(std::string(40, fill)); }

// A body-only seed: the message's type (2 bytes), then its body.
template <typename Msg>
std::string Message(uint16_t type, const Msg& m) {
  std::string out(reinterpret_cast<const char*>(&type), 2);
  Encoder e(&out);
  m.Encode(&e);
  return out;
}

template <typename Msg>
std::string Frame(p::MessageType t, uint64_t request_id, const Msg& m, bool reply = false) {
  return p::MakeFrame(reply ? p::ReplyType(t) : static_cast<uint16_t>(t), request_id, m);
}

void ProtocolSeeds() {
  using T = p::MessageType;
  const std::string kTarget = "protocol_fuzz";
  ObjectID a = Id('a'), b = Id('b');
  std::string connect = Frame(T::kConnect, 1, p::ConnectRequest{p::kMagic, p::kVersion, 4242});
  Write(kTarget, "connect", connect);
  std::string requests = connect;
  requests += Frame(T::kCreate, 2, p::CreateRequest{a, 4096, 16});
  requests += Frame(T::kSeal, 3, p::IdRequest{a});
  requests += Frame(T::kGet, 4, p::GetRequest{100, {a, b}});
  requests += Frame(T::kRelease, 5, p::IdRequest{a});
  requests += Frame(T::kContains, 6, p::IdRequest{b});
  requests += Frame(T::kDelete, 7, p::DeleteRequest{{a, b}});
  requests += Frame(T::kList, 8, p::ListRequest{true, a, 100});
  requests += Frame(T::kEvict, 9, p::EvictRequest{1 << 20});
  requests += Frame(T::kStats, 10, p::EmptyRequest{});
  requests += Frame(T::kWhere, 11, p::IdRequest{a});
  requests += Frame(T::kFetch, 12, p::FetchRequest{-1, {b}, p::kFetchWantTiming});
  requests += Frame(T::kRefresh, 13, p::DeleteRequest{{a}});
  requests += Frame(T::kDigest, 14, p::IdRequest{a});
  requests += Frame(T::kSetOptions, 15, p::SetOptionsRequest{1 << 20});
  requests += Frame(T::kLease, 16, p::EvictRequest{256 << 10});
  requests += Frame(T::kSealLeased, 17, p::SealLeasedRequest{a, 4096, 100, 4});
  requests += Frame(T::kUnpinned, 0, p::EmptyRequest{});
  requests += Frame(T::kAttachIndex, 18, p::EmptyRequest{});
  requests += Frame(T::kCreateAndSealBatch, 16,
                    p::CreateAndSealBatchRequest{{{a, "one", ""}, {b, "two", "meta"}}});
  Write(kTarget, "requests", requests);
  Write(kTarget, "create_and_seal",
        connect + Frame(T::kCreateAndSeal, 2, p::CreateAndSealRequest{a, "hello", "meta"}));
  Write(kTarget, "subscribe", connect + Frame(T::kSubscribe, 2, p::EmptyRequest{}));

  std::string replies;
  p::ConnectReply cr;
  cr.client_id = 3;
  cr.capacity = 1 << 30;
  cr.arena_size = 1 << 30;
  cr.prefaulted = true;
  replies += Frame(T::kConnect, 1, cr, true);
  replies += Frame(T::kCreate, 2, p::CreateReply{Status(), {0, 4096, 4096, 16}}, true);
  replies += Frame(T::kSeal, 3, p::StatusReply{Status::ObjectNotFound("no such object")}, true);
  p::GetReply gr;
  gr.entries = {{StatusCode::kOk, {0, 64, 10, 0}}, {StatusCode::kTimeout, {}}};
  replies += Frame(T::kGet, 4, gr, true);
  replies += Frame(T::kContains, 6, p::ContainsReply{Status(), true}, true);
  replies += Frame(T::kDelete, 7,
                   p::DeleteReply{Status(), {StatusCode::kOk, StatusCode::kObjectInUse}}, true);
  p::EvictReply er;
  er.bytes = 4096;
  er.count = 1;
  replies += Frame(T::kEvict, 9, er, true);
  p::StatsReply sr;
  sr.stats.capacity = 1 << 30;
  sr.stats.used = 4096;
  sr.stats.object_count = 1;
  replies += Frame(T::kStats, 10, sr, true);
  replies += Frame(T::kAttachIndex, 18, p::AttachIndexReply{Status(), 1 << 20, 64 << 10}, true);
  Write(kTarget, "replies", replies);

  p::ListReply lr;
  ObjectInfo o;
  o.id = a;
  o.state = ObjectState::kSealed;
  o.data_size = 10;
  o.digest_valid = true;
  o.digest = 0x1234;
  lr.objects = {o};
  lr.more = true;
  Write(kTarget, "list_reply", Frame(T::kList, 8, lr, true));
  p::WhereReply wr;
  wr.holders = {{"node-a", true, 10, 0, true, 0x1234}, {"node-b", false, 10, 0, false, 0}};
  wr.not_shown = 904;
  wr.malformed = 1;
  Write(kTarget, "where_reply", Frame(T::kWhere, 11, wr, true));
  p::FetchReply fr;
  fr.results = {Status(), Status::Timeout("no holder answered")};
  Write(kTarget, "fetch_reply", Frame(T::kFetch, 12, fr, true));
  p::FetchReply timed = fr;
  timed.has_timing = true;
  timed.in_store_us = 75;
  timed.timing = {{p::FetchTiming::kPulled | p::FetchTiming::kCachedLocation, 1, 2, 3, 30, 2, 3, 4, 4096},
                  {}};
  Write(kTarget, "fetch_reply_timed", Frame(T::kFetch, 12, timed, true));
  Write(kTarget, "batch_reply",
        Frame(T::kCreateAndSealBatch, 16, p::StatusListReply{Status(), fr.results}, true));
  Write(kTarget, "digest_reply", Frame(T::kDigest, 14, p::DigestReply{Status(), 0xfeed}, true));
  Write(kTarget, "msg_create_and_seal",
        Message(static_cast<uint16_t>(T::kCreateAndSeal), p::CreateAndSealRequest{a, "hello", ""}));
  Write(kTarget, "msg_get", Message(static_cast<uint16_t>(T::kGet), p::GetRequest{0, {a}}));
  Write(kTarget, "msg_where_reply", Message(p::ReplyType(T::kWhere), wr));
  Write(kTarget, "msg_fetch_reply", Message(p::ReplyType(T::kFetch), fr));
  Write(kTarget, "msg_status_reply",
        Message(p::ReplyType(T::kSeal), p::StatusReply{Status::Timeout(std::string(5000, 'x'))}));
  Write(kTarget, "notification",
        p::MakeFrame(static_cast<uint16_t>(T::kNotification), 0,
                     p::NotificationMessage{{Notification::Kind::kSealed, a, 10, 2}}));
}

void TcpSeeds() {
  using T = tcp::MessageType;
  const std::string kTarget = "tcp_wire_fuzz";
  tcp::Hello h;
  h.flags = tcp::kHasSecret;
  h.nonce.fill(1);
  h.node_name = "node-a";
  tcp::ProofMessage proof;
  proof.proof.fill(2);
  tcp::PullMessage pull;
  pull.id = Id('a');
  pull.length = 4096;
  pull.want_digest = true;
  Write(kTarget, "client",
        tcp::MakeFrame(T::kHello, 0, h) + tcp::MakeFrame(T::kProof, 0, proof) +
            tcp::MakeFrame(T::kPull, 1, pull));
  pull.offset = 1 << 20;
  pull.hold = true;
  Write(kTarget, "pull_hold", tcp::MakeFrame(T::kPull, 2, pull));
  tcp::Challenge c;
  c.flags = tcp::kHasSecret;
  c.nonce.fill(3);
  c.proof.fill(4);
  tcp::PullReply r;
  r.data_size = 4096;
  r.metadata_size = 16;
  r.digest_valid = true;
  r.digest = 0xfeed;
  Write(kTarget, "server",
        tcp::MakeFrame(T::kChallenge, 0, c) + tcp::MakeFrame(T::kWelcome, 0, tcp::Welcome{}) +
            tcp::MakeFrame(T::kPullReply, 1, r));
  Write(
      kTarget, "refused",
      tcp::MakeFrame(T::kWelcome, 0,
                     tcp::Welcome{Status::PermissionDenied("the cluster secret does not match")}));
  // At the limits: messages are cut to kMaxStatusMessage when sent.
  Write(kTarget, "refused_long",
        tcp::MakeFrame(T::kWelcome, 0,
                       tcp::Welcome{Status::PermissionDenied(std::string(5000, 'x'))}));
  tcp::PullReply nf;
  nf.status = Status::ObjectNotFound("not here");
  Write(kTarget, "not_found", tcp::MakeFrame(T::kPullReply, 3, nf));
  Write(kTarget, "msg_hello", Message(tcp::Type(T::kHello), h));
  Write(kTarget, "msg_pull", Message(tcp::Type(T::kPull), pull));
  Write(kTarget, "msg_pull_reply", Message(tcp::Type(T::kPullReply), nf));
  Write(kTarget, "msg_welcome_long",
        Message(tcp::Type(T::kWelcome),
                tcp::Welcome{Status::PermissionDenied(std::string(5000, 'x'))}));
}

void VerbsSeeds() {
  using T = verbs::MessageType;
  const std::string kTarget = "verbs_wire_fuzz";
  verbs::Hello h;
  h.flags = verbs::kHasSecret;
  h.nonce.fill(1);
  Write(kTarget, "hello", h.Encode() + std::string(17, '\0'));  // padded, as rdma_cm may
  verbs::Challenge c;
  c.nonce.fill(2);
  c.proof.fill(3);
  Write(kTarget, "challenge", c.Encode());
  verbs::Refusal rf;
  rf.code = static_cast<uint16_t>(StatusCode::kPermissionDenied);
  Write(kTarget, "refusal", rf.Encode());
  verbs::ProofMessage proof;
  proof.proof.fill(4);
  proof.node_name = "node-a";
  Write(kTarget, "proof", verbs::MakeMessage(T::kProof, 1, proof));
  verbs::Welcome w;
  w.regions = {{0x7f0000000000, 1 << 20, 17}, {0x7f0000100000, 1 << 20, 18}};
  Write(kTarget, "welcome", verbs::MakeMessage(T::kWelcome, 1, w));
  w.regions.assign(verbs::kMaxRegions, {0x7f0000000000, 1 << 20, 17});  // at the limit
  Write(kTarget, "welcome_full", verbs::MakeMessage(T::kWelcome, 1, w));
  Write(kTarget, "describe", verbs::MakeMessage(T::kDescribe, 2, verbs::Describe{Id('a'), true}));
  verbs::DescribeReply dr;
  dr.data_size = 4096;
  dr.metadata_size = 16;
  dr.address = 0x7f0000001000;
  dr.digest_state = verbs::DigestState::kFollows;
  Write(kTarget, "describe_reply", verbs::MakeMessage(T::kDescribeReply, 2, dr));
  verbs::DescribeReply nf;
  nf.status = Status::ObjectNotFound(std::string(1000, 'x'));  // cut to kMaxStatusMessage
  Write(kTarget, "describe_not_found", verbs::MakeMessage(T::kDescribeReply, 3, nf));
  Write(kTarget, "digest", verbs::MakeMessage(T::kDigest, 2, verbs::DigestMessage{0xfeed}));
  Write(kTarget, "release", verbs::MakeMessage(T::kRelease, 2));
}

void DirectorySeeds() {
  const std::string kTarget = "directory_fuzz";
  Write(kTarget, "location", LocationValue(4096, 16, true, 0xabcdef));
  Write(kTarget, "location_no_digest", LocationValue(100, 0, false, 0));
  Write(kTarget, "address", "127.0.0.1:6379");
  Write(kTarget, "address_unix", "unix:/tmp/redis.sock");
  // A lookup reply: the object's hash, then each node's record ("!": not a list).
  std::string lookup = "node-a\t" + LocationValue(10, 2, true, 7) + "\tnode-b\t" +
                       LocationValue(10, 2, false, 0) + "\tnode-c\t" +
                       LocationValue(10, 2, true, 8) + "\n";
  lookup += "node_id\tnode-a\tep:tcp\t10.0.0.1:7000\tep:verbs\t10.0.0.1:7001\n";
  lookup += "\n";
  lookup += "!";
  Write(kTarget, "lookup", lookup);
}

void ParseSeeds() {
  const std::string kTarget = "parse_fuzz";
  Write(kTarget, "hex", Id('a').Hex());
  Write(kTarget, "hex_upper", "0123456789ABCDEF0123456789abcdef01234567");
  Write(kTarget, "size", "1000");
  Write(kTarget, "size_m", "512M");
  Write(kTarget, "size_kib", "64KiB");
  Write(kTarget, "size_gb", "2gb");
}

}  // namespace
}  // namespace plasmon

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  plasmon::root = argv[1];
  plasmon::ProtocolSeeds();
  plasmon::TcpSeeds();
  plasmon::VerbsSeeds();
  plasmon::DirectorySeeds();
  plasmon::ParseSeeds();
  return 0;
}
