// The store daemon: an epoll loop on one thread that owns the arena, the
// object table and every client session.
//
// One thread on purpose: on these machines each hop between threads costs a
// wake-up (~18 us), more than the whole request. Requests are handled inline
// where they are read; replies are written at once.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/protocol.h"
#include "store/directory.h"
#include "store/wait_queue.h"
#include "transport/transport.h"
#include "plasmon/status.h"

namespace plasmon {

struct StoreOptions {
  std::string socket_path;
  ArenaOptions arena;
  unsigned socket_mode = 0600;
  // If >= 0, the socket's group (chown'd before the mode opens it to the
  // group): clients of that group may connect when socket_mode allows.
  int socket_group = -1;
  // A client whose unread replies exceed this is disconnected.
  size_t max_client_backlog = 64u << 20;
  // Join a cluster: publish locations in Redis. Without it, a single node.
  std::optional<DirectoryOptions> directory;
  // Serve this store's objects to peers and pull theirs (Fetch), in order of
  // preference (verbs before TCP): a pull from a holder uses the first that
  // the holder also advertises, and falls back to the next if it fails.
  // Needs `directory`: their endpoints are published in the node record.
  std::vector<std::shared_ptr<Transport>> transports;
  int transfer_threads = 4;  // pulls in flight at once
  // IDs that waiting Gets and Fetches may name, per client and in all (each
  // request counts as its IDs plus WaitBudget::kRequestCharge). A request
  // that would pass either limit is refused with OutOfMemory. Defaults: 16
  // waiting Gets of the largest batch per client, 128 in all.
  uint64_t max_waiting_ids_per_client = 16 * WaitBudget::ChargeOf(protocol::kMaxBatch);
  uint64_t max_waiting_ids = 128 * WaitBudget::ChargeOf(protocol::kMaxBatch);
  // Of those, at most this many from one holder (0: half, at least 1), so
  // that an unresponsive holder cannot stall the pulls from the others.
  int transfer_threads_per_holder = 0;
  // Where requests (directory lookups, one Redis round trip each on one
  // thread: up to 2 s while Redis hangs) queued or running for all clients;
  // one past it is refused with OutOfMemory. Each client may have at most
  // kMaxWheresPerSession (store.cc) of them.
  uint32_t max_wheres = 1024;
  // If set, ADDR:PORT to serve Prometheus metrics at (/metrics), on threads
  // of their own (store/metrics.h). Port 0: any free port (logged).
  std::string metrics_listen;
  // Publish sealed objects in a shared index that clients map read-only and
  // pin objects from without a round trip (docs/FAST_PATH.md). Off
  // (--no-shared-index): every request goes through the socket.
  bool shared_index = true;
  // While a small pull or a directory lookup it sent is unanswered, the
  // store's loop polls for the answer instead of sleeping, for at most this
  // long from the request (core/event_loop.h, PollWindow). 0: never.
  int64_t busy_poll_us = 100;
};

class Store {
 public:
  // Creates the arena and listens on the socket.
  static Result<std::unique_ptr<Store>> Create(const StoreOptions& options);
  ~Store();

  // Serves until Stop() is called. Returns the reason it ended.
  Status Run();
  // Makes Run() return. Async-signal-safe: may be called from a signal handler.
  // Also safe from any thread.
  void Stop();

  const Arena& arena() const;

 private:
  class Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace plasmon
