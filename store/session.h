// Session: one connected client, as the store sees it. It owns the socket's
// I/O: reading and framing requests, and queueing replies with a bounded
// backlog, so that the store's dispatch sees only whole frames.
//
// Loop thread only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/byte_buffer.h"
#include "core/event_loop.h"
#include "core/fd.h"
#include "core/protocol.h"
#include "plasmon/object_id.h"

namespace plasmon {

class Session;

// What a session needs from the store that owns it.
class SessionOwner {
 public:
  virtual ~SessionOwner() = default;
  // Handles one whole frame (body valid for the call). Returns false if it
  // closed the session: the Session is then destroyed.
  virtual bool HandleFrame(Session* s, const protocol::FrameHeader& h, std::string_view body) = 0;
  // Closes and destroys the session.
  virtual void CloseSession(uint32_t id, const std::string& reason, bool error) = 0;
};

class Session {
 public:
  // A subscriber's backlog is capped at the smaller of this and the store's
  // per-client limit: notifications are small, and a subscriber that stopped
  // reading should go long before a client waiting for a large reply.
  static constexpr size_t kMaxSubscriberBacklog = 16u << 20;
  // Bytes read per recv() when no large frame is expected.
  static constexpr size_t kReadChunk = 64 * 1024;

  Session(uint32_t id, UniqueFd fd, pid_t pid, EventLoop* loop, SessionOwner* owner,
          size_t max_backlog);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }
  pid_t pid() const { return pid_; }

  // Readiness of the socket (the loop's handler). May destroy the session.
  void OnEvents(uint32_t events);
  // Queues a frame (and descriptors to pass with its first byte: `pass_fds`,
  // not owned, then `owned_fd`, closed once passed) and writes what the
  // socket takes now. A client whose unread replies
  // exceed its backlog limit is shut down (its next read sees EOF and closes
  // it): the loop never blocks on a client that does not read.
  void Send(std::string frame, std::vector<int> pass_fds = {}, UniqueFd owned_fd = UniqueFd());
  // The client's protocol version (Connect).
  uint16_t version = protocol::kVersion;
  // Whether the store shut the connection itself (a client that does not
  // read its replies): the client may still be running.
  bool shut_by_store() const { return shut_by_store_; }

  // The client's state, kept by the store's dispatch.
  bool connected = false;   // Connect handshake done
  bool subscriber = false;  // receives notifications, sends nothing more
  bool index_offered = false;  // may attach the shared index (Connect, version 6)
  bool fast_path = false;      // has a pin page (the shared index): attached
  // What this client holds, released when it goes away.
  std::unordered_map<ObjectID, uint64_t, ObjectIDHash> refs;  // id -> references (never wraps)
  std::unordered_set<ObjectID, ObjectIDHash> creating;        // created, unsealed

 private:
  struct OutFrame {
    std::string bytes;
    std::vector<int> pass_fds;  // sent with the frame's first byte (SCM_RIGHTS); not owned
    UniqueFd owned;             // sent after them, closed with the frame
    size_t sent = 0;
  };
  void OnReadable();
  bool Flush();  // false: the connection failed (shut down)
  void ArmWrite(bool on);

  uint32_t id_;
  UniqueFd fd_;
  pid_t pid_;
  EventLoop* loop_;
  SessionOwner* owner_;
  size_t max_backlog_;
  bool want_write_ = false;  // EPOLLOUT armed
  ByteBuffer in_;            // bytes received, not yet handled
  std::deque<OutFrame> out_; // frames not yet fully sent
  size_t out_bytes_ = 0;
  bool shut_by_store_ = false;
};

}  // namespace plasmon
