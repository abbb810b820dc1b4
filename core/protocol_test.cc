#include "core/protocol.h"

#include <gtest/gtest.h>

namespace plasmon::protocol {
namespace {

// Encodes `m`, decodes it back, and checks every truncation is refused.
template <typename Msg>
Msg RoundTrip(const Msg& m) {
  std::string body;
  Encoder e(&body);
  m.Encode(&e);
  Msg out;
  EXPECT_TRUE(ParseBody(body, &out));
  for (size_t cut = 0; cut < body.size(); cut++) {
    Msg partial;
    EXPECT_FALSE(ParseBody(std::string_view(body).substr(0, cut), &partial)) << "cut at " << cut;
  }
  Msg trailing;
  EXPECT_FALSE(ParseBody(body + "x", &trailing));
  return out;
}

TEST(ProtocolTest, HeaderRoundTrips) {
  FrameHeader h{1234, ReplyType(MessageType::kGet), 0, 0x0102030405060708ull};
  char buf[kHeaderSize];
  EncodeHeader(h, buf);
  FrameHeader g = DecodeHeader(buf);
  EXPECT_EQ(g.body_len, 1234u);
  EXPECT_EQ(g.type, h.type);
  EXPECT_EQ(g.request_id, h.request_id);
}

TEST(ProtocolTest, FrameBuilderPatchesTheBodyLength) {
  std::string f = MakeFrame(7, 9, IdRequest{ObjectID::Random()});
  ASSERT_EQ(f.size(), kHeaderSize + ObjectID::kSize);
  EXPECT_EQ(DecodeHeader(f.data()).body_len, ObjectID::kSize);
}

TEST(ProtocolTest, RequestsRoundTrip) {
  ObjectID id = ObjectID::Random();
  EXPECT_EQ(RoundTrip(CreateRequest{id, 1 << 20, 17}).data_size, 1u << 20);
  EXPECT_EQ(RoundTrip(IdRequest{id}).id, id);
  // CreateAndSeal decodes to views into the body: keep the body alive.
  std::string body;
  Encoder e(&body);
  CreateAndSealRequest{id, "data", "meta"}.Encode(&e);
  CreateAndSealRequest cs;
  ASSERT_TRUE(ParseBody(body, &cs));
  EXPECT_EQ(cs.data, "data");
  EXPECT_EQ(cs.metadata, "meta");
  RoundTrip(CreateAndSealRequest{id, "data", "meta"});  // truncations refused
  auto g = RoundTrip(GetRequest{-1, {id, ObjectID::Random()}});
  EXPECT_EQ(g.timeout_ms, -1);
  EXPECT_EQ(g.ids.size(), 2u);
  EXPECT_EQ(g.ids[0], id);
  EXPECT_EQ(RoundTrip(DeleteRequest{{id}}).ids.size(), 1u);
  ListRequest l;
  l.has_cursor = true;
  l.cursor = id;
  l.max = 10;
  EXPECT_EQ(RoundTrip(l).cursor, id);
  EXPECT_EQ(RoundTrip(EvictRequest{99}).bytes, 99u);
}

TEST(ProtocolTest, RepliesRoundTripWithTheirStatus) {
  StatusReply s;
  s.status = Status::OutOfMemory("no room");
  auto sr = RoundTrip(s);
  EXPECT_TRUE(sr.status.IsOutOfMemory());
  EXPECT_EQ(sr.status.message(), "no room");

  GetReply g;
  g.entries.push_back({StatusCode::kOk, {0, 128, 10, 2}});
  g.entries.push_back({StatusCode::kObjectNotFound, {}});
  auto gr = RoundTrip(g);
  ASSERT_EQ(gr.entries.size(), 2u);
  EXPECT_EQ(gr.entries[0].location.offset, 128u);
  EXPECT_EQ(gr.entries[1].code, StatusCode::kObjectNotFound);

  ListReply l;
  ObjectInfo o;
  o.id = ObjectID::Random();
  o.state = ObjectState::kSealed;
  o.data_size = 5;
  o.digest_valid = true;
  o.digest = 77;
  l.objects.push_back(o);
  l.more = true;
  auto lr = RoundTrip(l);
  ASSERT_EQ(lr.objects.size(), 1u);
  EXPECT_EQ(lr.objects[0].id, o.id);
  EXPECT_EQ(lr.objects[0].digest, 77u);
  EXPECT_TRUE(lr.more);

  StatsReply st;
  st.stats.capacity = 1 << 30;
  st.stats.clients = 3;
  st.stats.fetched_verbs = 4;
  st.stats.pulls_failed = 5;
  EXPECT_EQ(RoundTrip(st).stats.clients, 3u);
  EXPECT_EQ(RoundTrip(st).stats.fetched_verbs, 4u);
  EXPECT_EQ(RoundTrip(st).stats.pulls_failed, 5u);
  ConnectReply c;
  c.arena_size = 4096;
  c.prefaulted = true;
  EXPECT_TRUE(RoundTrip(c).prefaulted);
  NotificationMessage n;
  n.n = {Notification::Kind::kEvicted, o.id, 1, 2};
  EXPECT_EQ(RoundTrip(n).n.kind, Notification::Kind::kEvicted);
  EXPECT_EQ(RoundTrip(DeleteReply{{}, {StatusCode::kObjectInUse}}).codes[0],
            StatusCode::kObjectInUse);
}

TEST(ProtocolTest, FetchesCarryFlagsAndRepliesTheirTimingWhenAsked) {
  ObjectID id = ObjectID::Random();
  FetchRequest f = RoundTrip(FetchRequest{250, {id}, kFetchWantTiming});
  EXPECT_EQ(f.timeout_ms, 250);
  EXPECT_EQ(f.flags, kFetchWantTiming);
  // Flags this store does not know are refused, not ignored.
  std::string body;
  Encoder e(&body);
  FetchRequest{0, {id}, 0x80}.Encode(&e);
  FetchRequest bad;
  EXPECT_FALSE(ParseBody(body, &bad));

  FetchReply plain = RoundTrip(FetchReply{{}, {Status(), Status::Timeout("late")}, false, 0, {}});
  EXPECT_FALSE(plain.has_timing);
  EXPECT_TRUE(plain.results[1].IsTimeout());
  FetchTiming t{FetchTiming::kPulled | FetchTiming::kOnLoop, 1, 2, 3, 40, 5, 6, 7, 4096};
  FetchReply timed = RoundTrip(FetchReply{{}, {Status(), Status()}, true, 99, {t, {}}});
  ASSERT_TRUE(timed.has_timing);
  EXPECT_EQ(timed.in_store_us, 99u);
  ASSERT_EQ(timed.timing.size(), 2u);
  EXPECT_EQ(timed.timing[0].flags, FetchTiming::kPulled | FetchTiming::kOnLoop);
  EXPECT_EQ(timed.timing[0].transfer_us, 40u);
  EXPECT_EQ(timed.timing[0].seal_us, 7u);
  EXPECT_EQ(timed.timing[0].bytes, 4096u);
  EXPECT_EQ(timed.timing[1].flags, 0);
}

// Found by trying: a store asked for an object with 5000 holders sent them
// all, and its client refused the reply (more than kMaxHolders).
TEST(ProtocolTest, WhereRepliesCarryAtMostMaxHoldersAndSayHowManyMore) {
  WhereReply w;
  w.holders.resize(kMaxHolders + 904, {"node", true, 1, 2, true, 3});
  w.not_shown = 10;
  w.malformed = 2;
  // Not RoundTrip: its every-truncation check is quadratic in a body this
  // large (minutes under TSan). Truncations of small replies are covered.
  std::string encoded;
  Encoder we(&encoded);
  w.Encode(&we);
  WhereReply got;
  ASSERT_TRUE(ParseBody(encoded, &got));
  for (size_t cut : {size_t{0}, encoded.size() / 2, encoded.size() - 1})
    EXPECT_FALSE(ParseBody(std::string_view(encoded).substr(0, cut), &got)) << "cut at " << cut;
  ASSERT_TRUE(ParseBody(encoded, &got));
  ASSERT_EQ(got.holders.size(), kMaxHolders);
  EXPECT_EQ(got.not_shown, 914u);
  EXPECT_EQ(got.malformed, 2u);
  EXPECT_EQ(got.holders.back().node_id, "node");

  std::string body;
  Encoder e(&body);
  EncodeStatus(Status(), &e);
  e.PutU32(kMaxHolders + 1);
  EXPECT_FALSE(ParseBody(body, &got));
}

TEST(ProtocolTest, DecodersRefuseOutOfRangeValues) {
  std::string body;
  Encoder e(&body);
  e.PutI64(0);
  e.PutU32(kMaxBatch + 1);  // too many IDs
  GetRequest g;
  EXPECT_FALSE(ParseBody(body, &g));

  body.clear();
  e.PutI64(-2);  // timeouts below -1 are invalid
  e.PutU32(0);
  EXPECT_FALSE(ParseBody(body, &g));

  body.clear();
  e.PutID(ObjectID::Random());
  e.PutU32(0xffffffff);  // a data length far past the frame
  CreateAndSealRequest cs;
  EXPECT_FALSE(ParseBody(body, &cs));

  body.clear();
  e.PutID(ObjectID::Random());
  e.PutU64(1);
  e.PutU64(kMaxMetadata + 1);
  CreateRequest cr;
  EXPECT_FALSE(ParseBody(body, &cr));

  body.clear();
  e.PutU8(200);  // not a status code
  e.PutU32(0);
  StatusReply sr;
  EXPECT_FALSE(ParseBody(body, &sr));

  body.clear();
  e.PutU8(1);
  e.PutID(ObjectID::Random());
  e.PutU32(0);  // a List page of zero rows
  ListRequest lr;
  EXPECT_FALSE(ParseBody(body, &lr));
}

}  // namespace
}  // namespace plasmon::protocol
