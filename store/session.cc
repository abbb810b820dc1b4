#include "store/session.h"

#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/fling.h"
#include "core/size.h"

namespace plasmon {

namespace p = protocol;

Session::Session(uint32_t id, UniqueFd fd, pid_t pid, EventLoop* loop, SessionOwner* owner,
                 size_t max_backlog)
    : id_(id), fd_(std::move(fd)), pid_(pid), loop_(loop), owner_(owner), max_backlog_(max_backlog) {}

void Session::OnEvents(uint32_t events) {
  if (events & EPOLLOUT) {
    if (!Flush()) {
      owner_->CloseSession(id_, "write failed", false);
      return;
    }
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) OnReadable();
}

void Session::OnReadable() {
  for (;;) {
    // Read what is there: a chunk, or the rest of a large frame at once.
    size_t want = kReadChunk;
    if (in_.size() >= p::kHeaderSize) {
      p::FrameHeader h = p::DecodeHeader(in_.data());
      size_t frame = p::kHeaderSize + h.body_len;
      if (h.body_len <= p::kMaxRequestBody && frame > in_.size())
        want = std::max(want, frame - in_.size());
    }
    char* dst = in_.Prepare(want);
    ssize_t n = ::recv(fd_.get(), dst, want, 0);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
      owner_->CloseSession(id_, n == 0 ? "disconnected" : std::string("recv: ") + std::strerror(errno),
                           false);
      return;
    }
    in_.Commit(static_cast<size_t>(n));

    // Handle every complete frame.
    while (in_.size() >= p::kHeaderSize) {
      p::FrameHeader h = p::DecodeHeader(in_.data());
      if (h.body_len > p::kMaxRequestBody) {
        owner_->CloseSession(id_,
                             "frame of " + std::to_string(h.body_len) +
                                 " bytes exceeds the limit of " + std::to_string(p::kMaxRequestBody),
                             true);
        return;
      }
      if (in_.size() < p::kHeaderSize + h.body_len) break;
      std::string_view body(in_.data() + p::kHeaderSize, h.body_len);
      // The body stays valid: nothing is read meanwhile. If the handler
      // closed the session, `this` is gone: touch nothing.
      if (!owner_->HandleFrame(this, h, body)) return;
      in_.Consume(p::kHeaderSize + h.body_len);
    }
    if (static_cast<size_t>(n) < want) break;  // drained
  }
}

void Session::Send(std::string frame, std::vector<int> pass_fds, UniqueFd owned_fd) {
  out_bytes_ += frame.size();
  if (owned_fd.valid()) pass_fds.push_back(owned_fd.get());
  out_.push_back(OutFrame{std::move(frame), std::move(pass_fds), std::move(owned_fd), 0});
  if (out_.size() == 1 && !Flush()) return;  // closed later by the read path
  size_t limit = subscriber ? std::min(kMaxSubscriberBacklog, max_backlog_) : max_backlog_;
  if (out_bytes_ > limit) {
    spdlog::warn("client {} (pid {}) is not reading its replies ({} queued): disconnecting it", id_,
                 pid_, FormatSize(out_bytes_));
    shut_by_store_ = true;
    ::shutdown(fd_.get(), SHUT_RDWR);
  }
}

bool Session::Flush() {
  auto fail = [&] {  // the peer is gone (or broke the stream): not the store's choice
    ::shutdown(fd_.get(), SHUT_RDWR);  // the read path will see EOF and close
    out_.clear();
    out_bytes_ = 0;
    ArmWrite(false);
    return false;
  };
  while (!out_.empty()) {
    OutFrame& f = out_.front();
    std::string_view rest = std::string_view(f.bytes).substr(f.sent);
    ssize_t n;
    if (!f.pass_fds.empty() && f.sent == 0) {
      Result<size_t> r = SendWithFds(fd_.get(), rest, f.pass_fds.data(), f.pass_fds.size());
      if (r.ok() && *r == 0) break;  // full: EPOLLOUT resumes
      n = r.ok() ? static_cast<ssize_t>(*r) : -1;
      if (n < 0) {
        spdlog::warn("client {}: {}", id_, r.status().ToString());
        return fail();
      }
    } else {
      n = ::send(fd_.get(), rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        return fail();
      }
    }
    f.sent += static_cast<size_t>(n);
    out_bytes_ -= static_cast<size_t>(n);
    if (f.sent == f.bytes.size()) out_.pop_front();
  }
  ArmWrite(!out_.empty());
  return true;
}

void Session::ArmWrite(bool on) {
  if (want_write_ == on) return;
  want_write_ = on;
  Status st = loop_->Modify(fd_.get(), on ? (EPOLLIN | EPOLLOUT) : EPOLLIN);
  if (!st.ok()) spdlog::warn("client {}: {}", id_, st.ToString());
}

}  // namespace plasmon
