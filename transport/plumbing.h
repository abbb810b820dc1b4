// What every transport needs around its wire protocol, written once: the
// endpoint it advertises, the memory it registered, a pool of idle
// connections per peer, and the count of pulls in flight that Shutdown
// waits for.
#pragma once

#include <sys/socket.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/keyed_hash.h"
#include "plasmon/status.h"
#include "transport/transport.h"

namespace plasmon {

// The endpoint peers are told to connect to: `advertise` as given if it has
// a port, else with the bound port; without it, the bound address itself,
// unless that is a wildcard (which peers cannot connect to).
Result<std::string> AdvertisedEndpoint(const std::string& listen, const std::string& advertise,
                                       const std::string& bound_host, const std::string& bound_port,
                                       bool bound_is_wildcard);

// The regions a transport registered (RegisterMemory); pulls must land
// inside one of them. Not locked: the transport holds its own lock.
class RegisteredMemory {
 public:
  void Add(const MemoryRegion& r) { regions_.push_back(r); }
  // Whether [p, p + n) lies inside one region (an empty range always does).
  bool Contains(const uint8_t* p, uint64_t n) const;
  const std::vector<MemoryRegion>& regions() const { return regions_; }
  bool empty() const { return regions_.empty(); }

 private:
  std::vector<MemoryRegion> regions_;
};

// Idle connections to peers, by endpoint (endpoints come from the
// directory: keyed hashing). Thread-safe.
template <typename Conn>
class IdlePool {
 public:
  // An idle connection to `endpoint` that `usable` accepts, or nullopt. The
  // rejected are handed to `discard` after the pool's lock is let go (it may
  // take the transport's own lock).
  std::optional<Conn> Take(const std::string& endpoint,
                           const std::function<bool(const Conn&)>& usable = {},
                           const std::function<void(Conn)>& discard = {}) {
    std::optional<Conn> found;
    std::vector<Conn> rejected;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = pool_.find(endpoint);
      while (it != pool_.end() && !it->second.empty()) {
        Conn c = std::move(it->second.back());
        it->second.pop_back();
        if (!usable || usable(c)) {
          found.emplace(std::move(c));
          break;
        }
        rejected.push_back(std::move(c));
      }
    }
    for (Conn& c : rejected)
      if (discard) discard(std::move(c));
    return found;
  }
  // Keeps `c` for the next pull from `endpoint`, unless that endpoint has
  // `max_per_endpoint` already or the pool is closed: then `c` comes back
  // for the caller to close.
  std::optional<Conn> Put(const std::string& endpoint, Conn c, size_t max_per_endpoint) {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<Conn>& v = pool_[endpoint];
    if (closed_ || v.size() >= max_per_endpoint) return std::optional<Conn>(std::move(c));
    v.push_back(std::move(c));
    return std::nullopt;
  }
  // Closes the pool and hands back everything in it.
  std::vector<Conn> Close() {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    std::vector<Conn> all;
    for (auto& [endpoint, v] : pool_)
      for (Conn& c : v) all.push_back(std::move(c));
    pool_.clear();
    return all;
  }

 private:
  std::mutex mu_;
  bool closed_ = false;
  std::unordered_map<std::string, std::vector<Conn>, KeyedStringHash> pool_;
};

// Pulls in flight, so that Shutdown can refuse new ones and wait for the
// running ones to end (they fail fast once it breaks their connections).
class PullGate {
 public:
  class Ticket {
   public:
    explicit Ticket(PullGate* g) : g_(g) {}
    Ticket(Ticket&& o) noexcept : g_(std::exchange(o.g_, nullptr)) {}
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket() {
      if (g_ != nullptr) g_->Leave();
    }

   private:
    PullGate* g_;
  };
  // A ticket for one pull, or Disconnected once closed.
  Result<Ticket> Enter();
  // Refuses new pulls from now on.
  void Close();
  // Waits until no pull is in flight.
  void WaitIdle();

 private:
  void Leave();
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  size_t in_flight_ = 0;
};

}  // namespace plasmon
