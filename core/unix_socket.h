// Stream sockets: listen and connect (Unix domain), write everything (any
// stream socket, Unix or TCP).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/fd.h"
#include "plasmon/status.h"

namespace plasmon {

// Listens on `path` with the given file mode. A socket file left behind by a
// dead process is replaced; one that a live process still accepts on is an
// error (kObjectInUse). The caller unlinks `path` when done.
Result<UniqueFd> ListenUnix(const std::string& path, unsigned mode);

// Connects a blocking, close-on-exec stream socket to `path`. With a
// positive `send_timeout_ms`, the connect (which waits while the listener's
// backlog is full) and every later write on the socket give up after that
// long (SO_SNDTIMEO).
Result<UniqueFd> ConnectUnix(const std::string& path, int64_t send_timeout_ms = -1);

// The Status of a failed socket call: Disconnected when the peer is gone or
// unreachable, or silent past the socket's SO_SNDTIMEO/SO_RCVTIMEO (EAGAIN
// on a blocking socket); IOError otherwise.
Status SocketError(std::string_view what, int err);

// Writes all of `data`, retrying on EINTR and short writes (blocking fds).
Status WriteAll(int fd, std::string_view data);

// Writes all of `a` then all of `b` with as few system calls as possible (one,
// usually), so the peer wakes once.
Status WriteAllV(int fd, std::string_view a, std::string_view b);

Status SetNonBlocking(int fd);

}  // namespace plasmon
