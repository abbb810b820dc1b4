// A client on a raw socket, for tests that need what the library does not
// do: requests sent without waiting for replies (many waiting Gets on one
// connection), or several frames in one write, which the store then handles
// one after the other before it reads from any other client.
#pragma once

#include <sys/socket.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/protocol.h"
#include "core/unix_socket.h"
#include "plasmon/object_id.h"

namespace plasmon::testing {

namespace p = ::plasmon::protocol;

class RawClient {
 public:
  explicit RawClient(const std::string& socket) {
    auto fd = ConnectUnix(socket);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    if (!fd.ok()) return;
    fd_ = std::move(*fd);
    timeval tv{20, 0};  // a reply that never comes fails the test, not the run
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    Send(p::MessageType::kConnect, 1, p::ConnectRequest{});
    std::string body;
    EXPECT_EQ(Read(&body).request_id, 1u);  // the arena's descriptor is dropped
  }

  template <typename Msg>
  static std::string Frame(p::MessageType type, uint64_t request_id, const Msg& m) {
    return p::MakeFrame(static_cast<uint16_t>(type), request_id, m);
  }
  template <typename Msg>
  void Send(p::MessageType type, uint64_t request_id, const Msg& m) {
    SendFrames(Frame(type, request_id, m));
  }
  // Frames made with Frame, in one write.
  void SendFrames(const std::string& frames) { ASSERT_TRUE(WriteAll(fd_.get(), frames).ok()); }
  void Get(uint64_t request_id, const std::vector<ObjectID>& ids, int64_t timeout_ms = -1) {
    p::GetRequest r;
    r.timeout_ms = timeout_ms;
    r.ids = ids;
    Send(p::MessageType::kGet, request_id, r);
  }
  // The next reply; its body in *body.
  p::FrameHeader Read(std::string* body) {
    char h[p::kHeaderSize];
    p::FrameHeader hdr{};
    if (!ReadExactly(h, sizeof(h))) return hdr;
    hdr = p::DecodeHeader(h);
    body->resize(hdr.body_len);
    if (!ReadExactly(body->data(), body->size())) hdr.request_id = 0;
    return hdr;
  }
  template <typename Msg>
  Msg ReadReply(uint64_t request_id) {
    std::string body;
    p::FrameHeader h = Read(&body);
    EXPECT_EQ(h.request_id, request_id);
    Msg m;
    EXPECT_TRUE(p::ParseBody(body, &m));
    return m;
  }
  // A Contains answered: everything sent before it was handled.
  void Sync(uint64_t request_id) {
    Send(p::MessageType::kContains, request_id, p::IdRequest{ObjectID::Random()});
    ReadReply<p::ContainsReply>(request_id);
  }

 private:
  bool ReadExactly(char* dst, size_t n) {
    while (n > 0) {
      ssize_t got = ::recv(fd_.get(), dst, n, 0);
      if (got <= 0) {
        ADD_FAILURE() << "no reply from the store";
        return false;
      }
      dst += got;
      n -= static_cast<size_t>(got);
    }
    return true;
  }
  UniqueFd fd_;
};

}  // namespace plasmon::testing
