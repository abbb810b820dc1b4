// Passing file descriptors over Unix domain sockets (SCM_RIGHTS).
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "core/fd.h"
#include "plasmon/status.h"

namespace plasmon {

// The most descriptors that travel with one frame.
constexpr size_t kMaxPassedFds = 4;

// Sends the first bytes of `data` together with `fds` (1 to kMaxPassedFds of
// them) in one sendmsg() and returns how many bytes went: 0 if a non-blocking
// socket is full (nothing, not even the fds, was sent), at least 1 otherwise.
// The caller sends the rest as ordinary stream data. REQUIRES: !data.empty().
Result<size_t> SendWithFds(int sock, std::string_view data, const int* fds, size_t count);

// Receives up to `len` bytes into `buf`; descriptors that arrived with them
// are appended to *fds (beyond kMaxPassedFds in all, closed). Returns 0 at EOF.
Result<size_t> RecvWithFds(int sock, char* buf, size_t len, std::vector<UniqueFd>* fds);

}  // namespace plasmon
