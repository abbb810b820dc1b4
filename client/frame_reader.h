// Reads whole protocol frames from a blocking stream socket.
#pragma once

#include <string>

#include "core/byte_buffer.h"
#include "core/fd.h"
#include "core/protocol.h"

namespace plasmon::internal {

class FrameReader {
 public:
  explicit FrameReader(uint32_t max_body) : max_body_(max_body) {}

  // Whether a whole frame is already buffered (Read will not block).
  bool HasFrame() const;
  // The next frame. If `fd` is given, a descriptor passed with the bytes is
  // stored there. Disconnected at EOF; ProtocolError for an oversized frame.
  Status Read(int sock, protocol::FrameHeader* h, std::string* body, UniqueFd* fd = nullptr);

 private:
  uint32_t max_body_;
  ByteBuffer buf_;
};

}  // namespace plasmon::internal
