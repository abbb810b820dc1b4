#include "client/frame_reader.h"

#include <sys/socket.h>

#include <cerrno>

#include "core/fling.h"

namespace plasmon::internal {

namespace p = protocol;

bool FrameReader::HasFrame() const {
  if (buf_.size() < p::kHeaderSize) return false;
  p::FrameHeader h = p::DecodeHeader(buf_.data());
  return h.body_len > max_body_ || buf_.size() >= p::kHeaderSize + h.body_len;
}

Status FrameReader::Read(int sock, p::FrameHeader* h, std::string* body, UniqueFd* fd) {
  for (;;) {
    size_t have = buf_.size();
    size_t need = p::kHeaderSize;
    if (have >= p::kHeaderSize) {
      *h = p::DecodeHeader(buf_.data());
      if (h->body_len > max_body_)
        return Status::ProtocolError("frame of " + std::to_string(h->body_len) +
                                     " bytes from the store exceeds the limit");
      need = p::kHeaderSize + h->body_len;
      if (have >= need) {
        body->assign(buf_.data() + p::kHeaderSize, h->body_len);
        buf_.Consume(need);
        return Status::OK();
      }
    }
    size_t want = std::max<size_t>(need - have, 64 * 1024);
    char* dst = buf_.Prepare(want);
    ssize_t n;
    if (fd != nullptr) {
      Result<size_t> r = RecvWithFd(sock, dst, want, fd);
      if (!r.ok()) return r.status();
      n = static_cast<ssize_t>(*r);
    } else {
      do {
        n = ::recv(sock, dst, want, 0);
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        int err = errno;
        if (err == ECONNRESET || err == EPIPE)
          return Status::Disconnected("the store closed the connection");
        return Status::FromErrno("recv from the store", err);
      }
    }
    if (n == 0) return Status::Disconnected("the store closed the connection");
    buf_.Commit(static_cast<size_t>(n));
  }
}

}  // namespace plasmon::internal
