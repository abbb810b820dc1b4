// libFuzzer target: the store-to-store TCP protocol (transport/tcp_wire.h).
//
// Every input is read two ways: as a stream of frames, cut the way ReadFrame
// cuts them, and as one message: its type (2 bytes), then a body, of which
// only what the message takes is read (fuzz::DecodeAndCheck). Bodies are
// decoded as their type says, requests as the holder does and answers as the
// puller does. Whatever decodes must encode back to the same bytes (the same
// fields, for Welcome and PullReply: an OK status drops its text).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "tests/fuzz_util.h"
#include "transport/tcp_wire.h"

namespace plasmon::tcp {
namespace {

template <typename Msg>
std::optional<Msg> Check(std::string_view body, bool prefix, bool exact) {
  return fuzz::DecodeAndCheck<Msg>(body, prefix, exact,
                                   [](std::string_view b, Msg* m) { return ParseBody(b, m); });
}

void Message(uint16_t type, std::string_view body, bool prefix) {
  switch (static_cast<MessageType>(type)) {
    case MessageType::kHello: {
      auto h = Check<Hello>(body, prefix, true);
      if (h) FUZZ_CHECK(h->node_name.size() <= kMaxNodeName && (h->flags & ~kHasSecret) == 0);
      return;
    }
    case MessageType::kChallenge: Check<Challenge>(body, prefix, true); return;
    case MessageType::kProof: Check<ProofMessage>(body, prefix, true); return;
    case MessageType::kWelcome: {
      // Status messages: at most kMaxStatusMessage sent, protocol::kMaxMessage
      // accepted (docs/PROTOCOL.md).
      auto w = Check<Welcome>(body, prefix, false);
      if (w) FUZZ_CHECK(w->status.message().size() <= protocol::kMaxMessage);
      return;
    }
    case MessageType::kPull: Check<PullMessage>(body, prefix, true); return;
    case MessageType::kPullReply: {
      auto r = Check<PullReply>(body, prefix, false);
      if (r) FUZZ_CHECK(r->status.message().size() <= protocol::kMaxMessage);
      return;
    }
  }
}

}  // namespace
}  // namespace plasmon::tcp

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace p = plasmon::protocol;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.size() >= 2) {
    uint16_t type;
    std::memcpy(&type, in.data(), 2);
    plasmon::tcp::Message(type, in.substr(2), /*prefix=*/true);
  }
  while (in.size() >= p::kHeaderSize) {
    p::FrameHeader h = p::DecodeHeader(in.data());
    // ReadFrame refuses these; the connection ends.
    if (h.flags != 0 || h.body_len > plasmon::tcp::kMaxControlBody) break;
    if (in.size() < p::kHeaderSize + h.body_len) break;
    plasmon::tcp::Message(h.type, in.substr(p::kHeaderSize, h.body_len), false);
    in.remove_prefix(p::kHeaderSize + h.body_len);
  }
  return 0;
}
