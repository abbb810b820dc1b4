// One connected client, as the store sees it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "core/byte_buffer.h"
#include "core/fd.h"
#include "plasmon/object_id.h"

namespace plasmon {

struct OutFrame {
  std::string bytes;
  int pass_fd = -1;  // sent with the frame's first byte (SCM_RIGHTS); not owned
  size_t sent = 0;
};

struct Session {
  uint32_t id = 0;
  UniqueFd fd;
  pid_t pid = 0;
  bool connected = false;   // Connect handshake done
  bool subscriber = false;  // receives notifications, sends nothing more
  bool want_write = false;  // EPOLLOUT armed

  ByteBuffer in;            // bytes received, not yet handled
  std::deque<OutFrame> out; // frames not yet fully sent
  size_t out_bytes = 0;

  // What this client holds, released when it goes away.
  std::unordered_map<ObjectID, uint64_t, ObjectIDHash> refs;  // id -> references (never wraps)
  std::unordered_set<ObjectID, ObjectIDHash> creating;        // created, unsealed
  uint32_t pending_gets = 0;
  uint32_t pending_fetches = 0;
};

}  // namespace plasmon
