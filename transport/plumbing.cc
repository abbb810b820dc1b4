#include "transport/plumbing.h"

#include "transport/address.h"

namespace plasmon {

Result<std::string> AdvertisedEndpoint(const std::string& listen, const std::string& advertise,
                                       const std::string& bound_host, const std::string& bound_port,
                                       bool bound_is_wildcard) {
  if (!advertise.empty()) {
    std::string h, p;
    return SplitHostPort(advertise, &h, &p) ? advertise : JoinHostPort(advertise, bound_port);
  }
  if (bound_is_wildcard)
    return Status::InvalidArgument("listening on the wildcard address " + listen +
                                   " needs an advertise address for peers to connect to");
  return JoinHostPort(bound_host, bound_port);
}

bool RegisteredMemory::Contains(const uint8_t* p, uint64_t n) const {
  if (n == 0) return true;
  auto addr = reinterpret_cast<uintptr_t>(p);
  for (const MemoryRegion& r : regions_) {
    auto base = reinterpret_cast<uintptr_t>(r.base);
    if (addr >= base && addr - base <= r.size && n <= r.size - (addr - base)) return true;
  }
  return false;
}

Result<PullGate::Ticket> PullGate::Enter() {
  std::lock_guard<std::mutex> l(mu_);
  if (closed_) return Status::Disconnected("the transport is shut down");
  in_flight_++;
  return Ticket(this);
}

void PullGate::Leave() {
  std::lock_guard<std::mutex> l(mu_);
  if (--in_flight_ == 0) cv_.notify_all();
}

void PullGate::Close() {
  std::lock_guard<std::mutex> l(mu_);
  closed_ = true;
}

void PullGate::WaitIdle() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [this] { return in_flight_ == 0; });
}

}  // namespace plasmon
