// Passing file descriptors over Unix domain sockets (SCM_RIGHTS).
#pragma once

#include <cstddef>
#include <string_view>

#include "core/fd.h"
#include "plasmon/status.h"

namespace plasmon {

// Sends the first bytes of `data` together with `fd` in one sendmsg() and
// returns how many bytes went: 0 if a non-blocking socket is full (nothing,
// not even the fd, was sent), at least 1 otherwise. The caller sends the rest
// as ordinary stream data. REQUIRES: !data.empty().
Result<size_t> SendWithFd(int sock, std::string_view data, int fd);

// Receives up to `len` bytes into `buf`; if an fd arrived with them, it is
// stored in *fd (an unexpected extra fd is closed). Returns 0 at EOF.
Result<size_t> RecvWithFd(int sock, char* buf, size_t len, UniqueFd* fd);

}  // namespace plasmon
