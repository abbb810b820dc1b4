#include "core/fling.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "core/unix_socket.h"

namespace plasmon {

Result<size_t> SendWithFds(int sock, std::string_view data, const int* fds, size_t count) {
  if (count == 0 || count > kMaxPassedFds)
    return Status::InvalidArgument("passing " + std::to_string(count) + " descriptors");
  struct iovec iov;
  iov.iov_base = const_cast<char*>(data.data());
  iov.iov_len = data.size();
  alignas(struct cmsghdr) char control[CMSG_SPACE(kMaxPassedFds * sizeof(int))];
  std::memset(control, 0, sizeof(control));
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
  struct cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(count * sizeof(int));
  std::memcpy(CMSG_DATA(cm), fds, count * sizeof(int));
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return size_t{0};  // try again later
    return Status::FromErrno("sendmsg with fd", errno);
  }
}

Result<size_t> RecvWithFds(int sock, char* buf, size_t len, std::vector<UniqueFd>* fds) {
  struct iovec iov;
  iov.iov_base = buf;
  iov.iov_len = len;
  alignas(struct cmsghdr) char control[CMSG_SPACE(kMaxPassedFds * sizeof(int))];
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return SocketError("recvmsg", errno);  // a reset peer is Disconnected
  for (struct cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    size_t nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < nfds; i++) {
      int f;
      std::memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
      if (fds->size() < kMaxPassedFds) {
        fds->emplace_back(f);
      } else {
        ::close(f);
      }
    }
  }
  return static_cast<size_t>(n);
}

}  // namespace plasmon
