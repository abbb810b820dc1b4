#include "transport/tcp_wire.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/unix_socket.h"

namespace plasmon::tcp {

void Hello::Encode(Encoder* e) const {
  e->PutU32(magic);
  e->PutU16(version);
  e->PutU8(flags);
  e->PutRaw(nonce.data(), nonce.size());
  e->PutBytes(std::string_view(node_name).substr(0, kMaxNodeName));
}
bool Hello::Decode(Decoder* d) {
  std::string_view name;
  if (!d->GetU32(&magic) || !d->GetU16(&version) || !d->GetU8(&flags) ||
      (flags & ~kHasSecret) != 0 || !d->GetRaw(nonce.data(), nonce.size()) ||
      !d->GetBytes(&name, kMaxNodeName))
    return false;
  node_name.assign(name);
  return true;
}

void Challenge::Encode(Encoder* e) const {
  e->PutU8(flags);
  e->PutRaw(nonce.data(), nonce.size());
  e->PutRaw(proof.data(), proof.size());
}
bool Challenge::Decode(Decoder* d) {
  return d->GetU8(&flags) && (flags & ~kHasSecret) == 0 && d->GetRaw(nonce.data(), nonce.size()) &&
         d->GetRaw(proof.data(), proof.size());
}

void ProofMessage::Encode(Encoder* e) const { e->PutRaw(proof.data(), proof.size()); }
bool ProofMessage::Decode(Decoder* d) { return d->GetRaw(proof.data(), proof.size()); }

void Welcome::Encode(Encoder* e) const { protocol::EncodeStatus(status, e, kMaxStatusMessage); }
bool Welcome::Decode(Decoder* d) { return protocol::DecodeStatus(d, &status); }

void PullMessage::Encode(Encoder* e) const {
  e->PutID(id);
  e->PutU64(offset);
  e->PutU64(length);
  e->PutU8(static_cast<uint8_t>((want_digest ? kWantDigest : 0) | (hold ? kHold : 0) |
                                (block_digests ? kBlockDigests : 0)));
}
bool PullMessage::Decode(Decoder* d) {
  uint8_t flags;
  if (!d->GetID(&id) || !d->GetU64(&offset) || !d->GetU64(&length) || !d->GetU8(&flags) ||
      (flags & ~(kWantDigest | kHold | kBlockDigests)) != 0)
    return false;
  want_digest = (flags & kWantDigest) != 0;
  hold = (flags & kHold) != 0;
  block_digests = (flags & kBlockDigests) != 0;
  return true;
}

void PullReply::Encode(Encoder* e) const {
  protocol::EncodeStatus(status, e, kMaxStatusMessage);
  e->PutU64(data_size);
  e->PutU64(metadata_size);
  e->PutU8(static_cast<uint8_t>((digest_valid ? kDigestValid : 0) |
                                (block_digests ? kBlockDigestsFollow : 0)));
  e->PutU64(digest);
}
bool PullReply::Decode(Decoder* d) {
  uint8_t flags;
  if (!protocol::DecodeStatus(d, &status) || !d->GetU64(&data_size) || !d->GetU64(&metadata_size) ||
      !d->GetU8(&flags) || (flags & ~(kDigestValid | kBlockDigestsFollow)) != 0 ||
      !d->GetU64(&digest))
    return false;
  digest_valid = (flags & kDigestValid) != 0;
  block_digests = (flags & kBlockDigestsFollow) != 0;
  return true;
}

// As ReadExact; *eof tells whether the peer closed (rather than failed).
static Status ReadExactImpl(int fd, void* dst, size_t n, size_t* got, bool* eof) {
  *eof = false;
  auto* p = static_cast<uint8_t*>(dst);
  size_t done = 0;
  Status st;
  while (done < n) {
    ssize_t r = ::recv(fd, p + done, n - done, MSG_WAITALL);
    if (r > 0) {
      done += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      *eof = true;
      st = Status::Disconnected("the peer closed the connection");
      break;
    }
    if (errno == EINTR) continue;
    st = SocketError("recv", errno);
    break;
  }
  *got = done;
  return st;
}

Status ReadExact(int fd, void* dst, size_t n, size_t* got) {
  size_t done;
  bool eof;
  Status st = ReadExactImpl(fd, dst, n, &done, &eof);
  if (got != nullptr) *got = done;
  return st;
}

Status SendAll(int fd, std::string_view frame, const uint8_t* tail, size_t n) {
  return WriteAllV(fd, frame, std::string_view(reinterpret_cast<const char*>(tail), n));
}

Status ReadFrame(int fd, uint32_t max_body, Frame* out, bool* clean_eof) {
  if (clean_eof != nullptr) *clean_eof = false;
  char hdr[protocol::kHeaderSize];
  size_t got;
  bool eof;
  Status st = ReadExactImpl(fd, hdr, sizeof(hdr), &got, &eof);
  if (!st.ok()) {
    if (got == 0 && eof && clean_eof != nullptr) *clean_eof = true;
    return st;
  }
  out->header = protocol::DecodeHeader(hdr);
  PLASMON_RETURN_IF_ERROR(CheckHeader(out->header, max_body));
  out->body.resize(out->header.body_len);
  return ReadExact(fd, out->body.data(), out->body.size());
}

Status CheckHeader(const protocol::FrameHeader& h, uint32_t max_body) {
  if (h.flags != 0) return Status::ProtocolError("nonzero flags " + std::to_string(h.flags));
  if (h.body_len > max_body)
    return Status::ProtocolError("frame body of " + std::to_string(h.body_len) +
                                 " bytes (at most " + std::to_string(max_body) + ")");
  return Status::OK();
}

FrameReader::Got FrameReader::Next(int idle_ms, Frame* out, Status* st) {
  for (;;) {
    const size_t have = end_ - begin_;
    if (have >= protocol::kHeaderSize) {
      protocol::FrameHeader h = protocol::DecodeHeader(buf_ + begin_);
      if (*st = CheckHeader(h, kMaxControlBody); !st->ok()) return Got::kError;
      const size_t len = protocol::kHeaderSize + h.body_len;
      if (have >= len) {
        out->header = h;
        out->body.assign(buf_ + begin_ + protocol::kHeaderSize, h.body_len);
        begin_ += len;
        if (begin_ == end_) begin_ = end_ = 0;
        return Got::kFrame;
      }
    }
    if (begin_ > 0) {  // room for the rest of the frame: it fits the buffer
      std::memmove(buf_, buf_ + begin_, have);
      begin_ = 0;
      end_ = have;
    }
    if (have == 0 && idle_ms >= 0) {
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, idle_ms);
      if (r == 0) return Got::kIdle;
      if (r < 0 && errno != EINTR) {
        *st = Status::FromErrno("poll", errno);
        return Got::kError;
      }
    }
    ssize_t n = ::recv(fd_, buf_ + end_, sizeof(buf_) - end_, 0);
    if (n > 0) {
      end_ += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      if (have == 0) return Got::kEof;
      *st = Status::Disconnected("the peer closed the connection mid-frame");
      return Got::kError;
    }
    if (errno == EINTR) continue;
    // SO_RCVTIMEO passed between frames: still idle, which is allowed.
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && have == 0) continue;
    *st = SocketError("recv", errno);
    return Got::kError;
  }
}

}  // namespace plasmon::tcp
