// libFuzzer target: the verbs control protocol (transport/verbs_wire.h).
//
// Every input is tried as each kind of rdma_cm private data (Hello,
// Challenge, Refusal) and as one control message: a header, then a body
// decoded as the header's type says; the body is read whole, as a receive
// slot holds it, and also only as far as the message takes
// (fuzz::DecodeAndCheck). Whatever decodes must encode back to the same bytes
// (the same fields, for Welcome and DescribeReply: an OK status drops its
// text).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tests/fuzz_util.h"
#include "transport/verbs_wire.h"

namespace plasmon::verbs {
namespace {

template <typename Msg>
std::optional<Msg> Check(std::string_view body, bool prefix, bool exact) {
  return fuzz::DecodeAndCheck<Msg>(body, prefix, exact,
                                   [](std::string_view b, Msg* m) { return ParseBody(b, m); });
}

// Private data may be padded: what decodes is a prefix, of the message's size.
template <typename Msg>
std::optional<Msg> CheckPrivateData(std::string_view in) {
  Msg m;
  if (!m.Decode(in)) return std::nullopt;
  FUZZ_CHECK(m.magic == kMagic);
  std::string again = m.Encode();
  FUZZ_CHECK(again.size() == Msg::kSize);
  FUZZ_CHECK(in.substr(0, Msg::kSize) == again);
  return m;
}

void Message(std::string_view in, bool prefix) {
  Header h;
  std::string_view body;
  if (!ParseHeader(in, &h, &body)) {
    FUZZ_CHECK(in.size() < Header::kSize);
    return;
  }
  FUZZ_CHECK(body.size() + Header::kSize == in.size());
  FUZZ_CHECK(MakeMessage(h.type, h.request_id) == in.substr(0, Header::kSize));
  switch (h.type) {
    case MessageType::kProof: {
      auto p = Check<ProofMessage>(body, prefix, true);
      if (p) FUZZ_CHECK(p->node_name.size() <= kMaxNodeName);
      return;
    }
    case MessageType::kWelcome: {
      auto w = Check<Welcome>(body, prefix, false);
      if (!w) return;
      FUZZ_CHECK(w->regions.size() <= kMaxRegions);
      FUZZ_CHECK(w->status.message().size() <= kMaxStatusMessage);
      for (const RemoteRegion& r : w->regions)
        FUZZ_CHECK(r.length > 0 && r.address + r.length > r.address);
      return;
    }
    case MessageType::kDescribe: Check<Describe>(body, prefix, true); return;
    case MessageType::kDescribeReply: {
      auto r = Check<DescribeReply>(body, prefix, false);
      if (!r) return;
      FUZZ_CHECK(r->status.message().size() <= kMaxStatusMessage);
      FUZZ_CHECK(r->data_size + r->metadata_size >= r->data_size);
      return;
    }
    case MessageType::kDigest: Check<DigestMessage>(body, prefix, true); return;
    case MessageType::kRelease: return;  // no body
  }
}

}  // namespace
}  // namespace plasmon::verbs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace v = plasmon::verbs;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  v::CheckPrivateData<v::Hello>(in);
  v::CheckPrivateData<v::Challenge>(in);
  if (auto r = v::CheckPrivateData<v::Refusal>(in))  // a StatusCode
    FUZZ_CHECK(r->code <= static_cast<uint16_t>(plasmon::StatusCode::kCorruption));
  if (in.size() <= v::kMaxMessage) {  // a receive slot holds no more
    v::Message(in, false);
    v::Message(in, true);
  }
  return 0;
}
