#include "client/frame_reader.h"

#include <sys/socket.h>

#include <cerrno>

#include "core/fling.h"

namespace plasmon::internal {

namespace p = protocol;

bool FrameReader::HasFrame() const {
  size_t have = buf_.size() - begin_;
  if (have < p::kHeaderSize) return false;
  p::FrameHeader h = p::DecodeHeader(buf_.data() + begin_);
  return h.body_len > max_body_ || have >= p::kHeaderSize + h.body_len;
}

Status FrameReader::Read(int sock, p::FrameHeader* h, std::string* body, UniqueFd* fd) {
  for (;;) {
    size_t have = buf_.size() - begin_;
    size_t need = p::kHeaderSize;
    if (have >= p::kHeaderSize) {
      *h = p::DecodeHeader(buf_.data() + begin_);
      if (h->body_len > max_body_)
        return Status::ProtocolError("frame of " + std::to_string(h->body_len) +
                                     " bytes from the store exceeds the limit");
      need = p::kHeaderSize + h->body_len;
      if (have >= need) {
        body->assign(buf_.data() + begin_ + p::kHeaderSize, h->body_len);
        begin_ += need;
        if (begin_ == buf_.size()) {
          buf_.clear();
          begin_ = 0;
        }
        return Status::OK();
      }
    }
    if (begin_ > 0) {
      buf_.erase(0, begin_);
      begin_ = 0;
    }
    size_t old = buf_.size();
    size_t want = std::max<size_t>(need - have, 64 * 1024);
    buf_.resize(old + want);
    ssize_t n;
    if (fd != nullptr) {
      Result<size_t> r = RecvWithFd(sock, buf_.data() + old, want, fd);
      if (!r.ok()) {
        buf_.resize(old);
        return r.status();
      }
      n = static_cast<ssize_t>(*r);
    } else {
      do {
        n = ::recv(sock, buf_.data() + old, want, 0);
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        int err = errno;
        buf_.resize(old);
        if (err == ECONNRESET || err == EPIPE)
          return Status::Disconnected("the store closed the connection");
        return Status::FromErrno("recv from the store", err);
      }
    }
    buf_.resize(old + static_cast<size_t>(n));
    if (n == 0) return Status::Disconnected("the store closed the connection");
  }
}

}  // namespace plasmon::internal
