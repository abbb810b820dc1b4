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

}  // namespace
}  // namespace plasmon
