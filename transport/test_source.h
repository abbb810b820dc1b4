// Test helpers shared by the transports' tests: an in-memory ObjectSource
// (a fake of the store, which sits above the transport interface) and
// pseudo-random object contents.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/digest.h"
#include "core/fd.h"
#include "transport/transport.h"

namespace plasmon {

constexpr uint64_t kMiB = 1 << 20;

// A TCP socket listening on an ephemeral loopback port, its port in *port: a
// peer that says nothing (or what the test makes it say).
inline UniqueFd ListenOnLoopback(uint16_t* port, int backlog = 64) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), len), 0);
  EXPECT_EQ(::listen(fd.get(), backlog), 0);
  EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

// Fills `n` bytes with a cheap pseudo-random sequence.
inline void Fill(uint8_t* p, uint64_t n, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
  for (; i < n; i++) p[i] = static_cast<uint8_t>(x >> (8 * (i % 8)));
}

// Waits up to 30 s for `pred`; bounded, never a timing assertion.
template <typename Pred>
bool Eventually(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// An ObjectSource over one malloc'd arena. Thread-safe. Pins past a threshold
// can be made to block until the gate opens.
class FakeSource : public ObjectSource {
 public:
  explicit FakeSource(uint64_t arena_size = 128 * kMiB)
      : arena_(static_cast<uint8_t*>(std::malloc(arena_size))), arena_size_(arena_size) {}
  ~FakeSource() override { std::free(arena_); }

  MemoryRegion region() const { return {arena_, arena_size_, -1}; }

  // Adds an object of pseudo-random bytes.
  ObjectID Add(uint64_t data_size, uint64_t metadata_size, bool digest_valid = false) {
    std::lock_guard<std::mutex> l(mu_);
    ObjectID id = ObjectID::Random();
    uint64_t total = data_size + metadata_size;
    EXPECT_LE(used_ + total, arena_size_);
    Object& o = objects_[id];
    o.pin.bytes = arena_ + used_;
    o.pin.arena_offset = used_;
    o.pin.data_size = data_size;
    o.pin.metadata_size = metadata_size;
    Fill(arena_ + used_, total, ++seed_);
    used_ += (total + 63) & ~uint64_t{63};
    o.real_digest = ObjectDigest(o.pin.bytes, data_size, o.pin.bytes + data_size, metadata_size);
    o.pin.digest_valid = digest_valid;
    o.pin.digest = digest_valid ? o.real_digest : 0;
    return id;
  }

  // Makes the source report a valid but wrong digest for `id`.
  void Lie(const ObjectID& id) {
    std::lock_guard<std::mutex> l(mu_);
    Object& o = objects_.at(id);
    o.pin.digest_valid = true;
    o.pin.digest = o.real_digest ^ 1;
  }

  std::vector<uint8_t> Bytes(const ObjectID& id) {
    std::lock_guard<std::mutex> l(mu_);
    const PinnedObject& p = objects_.at(id).pin;
    return std::vector<uint8_t>(p.bytes, p.bytes + p.total());
  }
  uint64_t RealDigest(const ObjectID& id) {
    std::lock_guard<std::mutex> l(mu_);
    return objects_.at(id).real_digest;
  }

  // Pins after the first `n` (from now) block until OpenGate.
  void BlockPinsAfter(uint64_t n) {
    std::lock_guard<std::mutex> l(mu_);
    gate_closed_ = true;
    gate_passes_ = n;
  }
  void OpenGate() {
    std::lock_guard<std::mutex> l(mu_);
    gate_closed_ = false;
    cv_.notify_all();
  }
  uint64_t blocked() {
    std::lock_guard<std::mutex> l(mu_);
    return blocked_;
  }

  Result<PinnedObject> Pin(const ObjectID& id) override {
    std::unique_lock<std::mutex> l(mu_);
    if (gate_closed_) {
      if (gate_passes_ > 0) {
        gate_passes_--;
      } else {
        blocked_++;
        cv_.wait(l, [this] { return !gate_closed_; });
        blocked_--;
      }
    }
    auto it = objects_.find(id);
    if (it == objects_.end()) return Status::ObjectNotFound("no object " + id.Hex());
    pins_++;
    it->second.pinned++;
    return it->second.pin;
  }

  void Unpin(const ObjectID& id, std::optional<uint64_t> computed_digest) override {
    std::lock_guard<std::mutex> l(mu_);
    Object& o = objects_.at(id);
    EXPECT_GT(o.pinned, 0u);
    o.pinned--;
    unpins_++;
    if (computed_digest) {
      computed_++;
      EXPECT_EQ(*computed_digest, o.real_digest);
      o.pin.digest_valid = true;
      o.pin.digest = *computed_digest;
    }
  }

  uint64_t pins() {
    std::lock_guard<std::mutex> l(mu_);
    return pins_;
  }
  uint64_t unpins() {
    std::lock_guard<std::mutex> l(mu_);
    return unpins_;
  }
  uint64_t computed_digests() {
    std::lock_guard<std::mutex> l(mu_);
    return computed_;
  }

 private:
  struct Object {
    PinnedObject pin;
    uint64_t real_digest = 0;
    int pinned = 0;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  uint8_t* arena_;
  uint64_t arena_size_;
  uint64_t used_ = 0;
  uint64_t seed_ = 0;
  std::map<ObjectID, Object> objects_;
  uint64_t pins_ = 0, unpins_ = 0, computed_ = 0;
  bool gate_closed_ = false;
  uint64_t gate_passes_ = 0;
  uint64_t blocked_ = 0;
};

// Drives a pull on the loop as the store's loop does: waits for its fd to
// be readable (at most 30 s in all) and steps it.
inline Result<PullResult> RunLoopPull(AsyncPull* a) {
  const int64_t test_deadline = MonoMicros() + 30'000'000;
  for (;;) {
    int64_t left_us = a->deadline_us() - MonoMicros();
    if (left_us <= 0) return a->TimedOut();
    if (MonoMicros() > test_deadline) return Status::Timeout("test deadline");
    pollfd p{a->fd(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_us / 1000 + 1, 1000)));
    if (n <= 0) continue;
    std::optional<Result<PullResult>> r = a->OnReadable();
    if (r) return std::move(*r);
  }
}

// RDMA-capable addresses for the verbs tests: $PLASMON_TEST_RDMA_ADDRS
// (separated by spaces), or the one-VM Soft-RoCE harness's two rxe addresses
// (tools/rxe-vm, which sets PLASMON_RXE_VM). Empty elsewhere.
inline std::vector<std::string> RdmaTestAddresses() {
  std::vector<std::string> out;
  const char* env = std::getenv("PLASMON_TEST_RDMA_ADDRS");
  if (env == nullptr && std::getenv("PLASMON_RXE_VM") != nullptr) env = "10.77.0.1 10.77.0.2";
  if (env == nullptr) return out;
  std::istringstream in(env);
  for (std::string a; in >> a;) out.push_back(a);
  return out;
}

}  // namespace plasmon
