#include "core/unix_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace plasmon {

static Status MakeAddress(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr->sun_path))
    return Status::InvalidArgument("socket path must be 1 to " +
                                   std::to_string(sizeof(addr->sun_path) - 1) +
                                   " bytes long: '" + path + "'");
  std::memcpy(addr->sun_path, path.data(), path.size());
  return Status::OK();
}

Result<UniqueFd> ConnectUnix(const std::string& path, int64_t send_timeout_ms) {
  sockaddr_un addr;
  PLASMON_RETURN_IF_ERROR(MakeAddress(path, &addr));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::FromErrno("socket", errno);
  if (send_timeout_ms > 0) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(send_timeout_ms / 1000);
    tv.tv_usec = static_cast<suseconds_t>(send_timeout_ms % 1000 * 1000);
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
      return Status::FromErrno("setsockopt SO_SNDTIMEO", errno);
  }
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    if (err == EAGAIN)
      return Status::Timeout("cannot connect to store at " + path + " within " +
                             std::to_string(send_timeout_ms) +
                             " ms: it accepts no connections (stopped, or overloaded?)");
    return Status::Disconnected("cannot connect to store at " + path + ": " + std::strerror(err));
  }
  return fd;
}

Result<UniqueFd> ListenUnix(const std::string& path, unsigned mode) {
  sockaddr_un addr;
  PLASMON_RETURN_IF_ERROR(MakeAddress(path, &addr));
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Status::InvalidArgument(path + " exists and is not a socket; not replacing it");
    if (ConnectUnix(path).ok())
      return Status::ObjectInUse("another store is already serving " + path);
    ::unlink(path.c_str());  // stale: its owner is gone
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Status::FromErrno("socket", errno);
  // Create the socket file with `mode` from the start: no window where others
  // could connect.
  mode_t old = ::umask(static_cast<mode_t>(~mode & 0777));
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int err = errno;
  ::umask(old);
  if (rc != 0) return Status::FromErrno("bind " + path, err);
  if (::listen(fd.get(), 1024) != 0) return Status::FromErrno("listen " + path, errno);
  return fd;
}

Status SocketError(std::string_view what, int err) {
  switch (err) {
    case EAGAIN:
      return Status::Disconnected(std::string(what) + " timed out: the peer went silent");
    case EPIPE:
    case ECONNRESET:
      return Status::Disconnected("the peer closed the connection");
    case ENOTCONN:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
      return Status::Disconnected(std::string(what) + ": " + std::strerror(err));
    default:
      return Status::FromErrno(what, err);
  }
}

Status WriteAll(int fd, std::string_view data) { return WriteAllV(fd, data, {}); }

Status WriteAllV(int fd, std::string_view a, std::string_view b) {
  while (!a.empty() || !b.empty()) {
    iovec iov[2];
    int cnt = 0;
    if (!a.empty()) iov[cnt++] = {const_cast<char*>(a.data()), a.size()};
    if (!b.empty()) iov[cnt++] = {const_cast<char*>(b.data()), b.size()};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(cnt);
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SocketError("sendmsg", errno);
    }
    size_t sent = static_cast<size_t>(n);
    size_t from_a = std::min(sent, a.size());
    a.remove_prefix(from_a);
    b.remove_prefix(sent - from_a);
  }
  return Status::OK();
}

Status SetNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return Status::FromErrno("fcntl O_NONBLOCK", errno);
  return Status::OK();
}

}  // namespace plasmon
