// Reads whole protocol frames from a blocking stream socket.
#pragma once

#include <string>
#include <vector>

#include "core/byte_buffer.h"
#include "core/fd.h"
#include "core/protocol.h"

namespace plasmon::internal {

class FrameReader {
 public:
  explicit FrameReader(uint32_t max_body) : max_body_(max_body) {}

  // Whether a whole frame is already buffered (Read will not block).
  bool HasFrame() const;
  // The next frame. If `fds` is given, descriptors passed with the bytes
  // are appended there. Disconnected at EOF; ProtocolError for an oversized frame;
  // Timeout if the frame is not whole by `deadline_us` (MonoMicros; -1:
  // wait as long as it takes). Bytes read before a Timeout stay buffered.
  Status Read(int sock, protocol::FrameHeader* h, std::string* body, std::vector<UniqueFd>* fds = nullptr,
              int64_t deadline_us = -1);

 private:
  uint32_t max_body_;
  ByteBuffer buf_;
};

}  // namespace plasmon::internal
