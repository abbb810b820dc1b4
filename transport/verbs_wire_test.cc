// The verbs control protocol's messages, without RDMA: runs on the host, in
// plasmon_transport_tests (the transport's own tests need the VM).
#include "transport/verbs_wire.h"

#include <gtest/gtest.h>

#include <string>

namespace plasmon {
namespace {

TEST(VerbsWireTest, RefusalsCarryAStatusCode) {
  verbs::Refusal r;
  r.code = static_cast<uint16_t>(StatusCode::kPermissionDenied);
  verbs::Refusal r2;
  ASSERT_TRUE(r2.Decode(r.Encode() + std::string(10, '\0')));  // padded, as rdma_cm may
  EXPECT_EQ(r2.code, r.code);
  // Found by verbs_wire_fuzz: any u16 decoded, and the puller's cast to
  // StatusCode cut it to a byte (0x200 became OK, 0x10c PermissionDenied).
  for (uint16_t bad : {0x200, 0x10c, static_cast<uint16_t>(StatusCode::kCorruption) + 1, 0xffff}) {
    r.code = bad;
    EXPECT_FALSE(r2.Decode(r.Encode())) << bad;
  }
  r.code = static_cast<uint16_t>(StatusCode::kCorruption);
  EXPECT_TRUE(r2.Decode(r.Encode()));
  EXPECT_FALSE(r2.Decode(r.Encode().substr(0, verbs::Refusal::kSize - 1)));
}

// A holder that answers a Describe asking for the digest with none: the
// puller used to read the bytes, compare its hash with nothing and report it
// as the holder's, and the store published it. TCP refuses the same case.
TEST(VerbsWireTest, AHolderThatOffersNoDigestIsRefused) {
  verbs::DescribeReply r;
  r.data_size = 1 << 20;
  r.digest_state = verbs::DigestState::kNone;
  verbs::DescribeReply wire;
  std::string body;
  Encoder e(&body);
  r.Encode(&e);
  ASSERT_TRUE(verbs::ParseBody(body, &wire));  // well-formed: refused for what it says
  Status st = verbs::CheckDigestOffered(wire);
  EXPECT_TRUE(st.IsProtocolError()) << st.ToString();
  EXPECT_NE(st.message().find("no digest"), std::string::npos) << st.ToString();
  for (verbs::DigestState ok : {verbs::DigestState::kValid, verbs::DigestState::kFollows}) {
    wire.digest_state = ok;
    EXPECT_TRUE(verbs::CheckDigestOffered(wire).ok());
  }
}

}  // namespace
}  // namespace plasmon
