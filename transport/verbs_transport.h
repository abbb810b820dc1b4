// VerbsTransport: pulls objects between stores with one-sided RDMA READs.
//
// Connections go through rdma_cm (RC queue pairs), so the same code runs on
// InfiniBand, RoCE NICs and Soft-RoCE. Memory is registered once per device
// (RegisterMemory before Listen; split where a region exceeds the device's MR
// size limit), never per object; a connecting peer learns the holder's
// regions and keys in the Welcome message, after authenticating.
//
// A pull: the receiver sends Describe; the holder pins the object and answers
// with its address and sizes; the receiver RDMA READs it in chunks, several
// outstanding, straight into the destination, hashing each chunk as it
// lands; it checks the digest (the holder's, or one the holder computes
// while the reads run) and sends Release, which unpins. The holder's CPU is
// not on the data path.
//
// Threads: one serving thread waits (epoll) on the rdma_cm event channel and
// on one completion channel shared by every served connection; one hashing
// thread computes digests the holder does not have yet. A Pull runs on its
// caller's thread, on a pooled connection it has to itself, and sleeps on
// that connection's completion channel: nothing spins. A small pull on a
// pooled connection can instead run on the caller's event loop
// (StartAsyncPull): the loop waits on the same completion channel.
#pragma once

#include <memory>
#include <string>

#include "plasmon/status.h"
#include "transport/transport.h"

namespace plasmon {

struct VerbsTransportOptions {
  // ADDR[:PORT] of the RDMA-capable interface to serve on (rdma_cm binds it);
  // no port or port 0 = ephemeral.
  std::string listen;
  std::string advertise;  // as TcpTransportOptions::advertise
  std::string secret;     // the cluster secret; empty = peers are unauthenticated
  std::string node_name;
  uint64_t chunk_size = 1 << 20;  // bytes per RDMA READ (capped by the port's max message)
  int max_reads = 16;             // READs outstanding per connection (capped by the device)
  int io_timeout_ms = 10000;      // a peer silent this long mid-pull is dead
  int connect_timeout_ms = 5000;  // address, route and connection resolution together
  int hold_timeout_ms = 120000;   // a pin not released this long ends the connection
  size_t max_connections = 256;   // served at once
  // Register in pieces of at most this many bytes (0: the device's
  // max_mr_size). Tests use it to make objects straddle registrations.
  uint64_t max_registration = 0;
  // Objects up to this size are pulled on the caller's event loop when an
  // idle connection to the holder is pooled (StartAsyncPull); 0: never.
  uint64_t async_max = 64 << 10;
};

class VerbsTransport : public Transport {
 public:
  static Result<std::unique_ptr<VerbsTransport>> Create(VerbsTransportOptions options);
  ~VerbsTransport() override;

  VerbsTransport(const VerbsTransport&) = delete;
  VerbsTransport& operator=(const VerbsTransport&) = delete;

  // The name of the RDMA device that owns `address` (an IP of an RDMA-capable
  // interface), or why there is none: a quick check for --transport auto.
  static Result<std::string> DeviceFor(const std::string& address);

  const char* name() const override { return "verbs"; }
  Status RegisterMemory(const MemoryRegion& region) override;
  Result<std::string> Listen(ObjectSource* source) override;
  Result<PullResult> Pull(const std::string& endpoint, const PullRequest& request) override;
  // A small object, on a pooled connection: the caller's loop waits on the
  // connection's completion channel (AsyncPull::fd) and steps the pull.
  std::unique_ptr<AsyncPull> StartAsyncPull(const std::string& endpoint,
                                            const PullRequest& request) override;
  void Shutdown() override;

  // Connections accepted since Listen (for tests).
  uint64_t accepted_connections() const;
  // Objects pinned for peers right now (for tests: nothing leaks).
  size_t pinned_objects() const;
  Connections connections() const override;

 private:
  class Impl;
  explicit VerbsTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace plasmon
