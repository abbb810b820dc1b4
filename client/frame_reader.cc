#include "client/frame_reader.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "core/clock.h"
#include "core/fling.h"

namespace plasmon::internal {

namespace p = protocol;

// OK once `sock` is readable (or hung up: the read then says so); Timeout
// if it is not by `deadline_us`.
static Status WaitReadable(int sock, int64_t deadline_us) {
  for (;;) {
    int64_t left_us = deadline_us - MonoMicros();
    if (left_us <= 0) return Status::Timeout("the store did not answer in time");
    pollfd pfd{sock, POLLIN, 0};
    int n = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>((left_us + 999) / 1000, 1 << 30)));
    if (n > 0) return Status::OK();
    if (n < 0 && errno != EINTR) return Status::FromErrno("poll", errno);
  }
}

bool FrameReader::HasFrame() const {
  if (buf_.size() < p::kHeaderSize) return false;
  p::FrameHeader h = p::DecodeHeader(buf_.data());
  return h.body_len > max_body_ || buf_.size() >= p::kHeaderSize + h.body_len;
}

Status FrameReader::Read(int sock, p::FrameHeader* h, std::string* body, std::vector<UniqueFd>* fds,
                         int64_t deadline_us) {
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
    if (deadline_us >= 0) PLASMON_RETURN_IF_ERROR(WaitReadable(sock, deadline_us));
    size_t want = std::max<size_t>(need - have, 64 * 1024);
    char* dst = buf_.Prepare(want);
    ssize_t n;
    if (fds != nullptr) {
      Result<size_t> r = RecvWithFds(sock, dst, want, fds);
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
