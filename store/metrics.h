// Prometheus metrics of a store (plasmon-store --metrics ADDR:PORT).
//
// The numbers are the store's own (the object table's, the fetcher's, the
// directory's: what `plasmon stats` reads too), copied into a
// MetricsSnapshot by the event loop. An HTTP thread of cpp-httplib serves
// them; it never touches the loop's state. A scrape asks the loop for a
// fresh snapshot (one Post; scrapes that come meanwhile share it) and waits
// for it at most a second, serving the last one if the loop is busy: a slow
// or stuck scraper costs the loop nothing, and a busy loop does not hang
// the scraper.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "plasmon/status.h"
#include "plasmon/types.h"

namespace plasmon {

// A Prometheus histogram of durations with fixed bucket bounds, in seconds.
class LatencyHistogram {
 public:
  // Upper bounds: 50 us to 10 s (a small object over TCP takes ~100 us, a
  // GiB over a slow link seconds).
  static constexpr std::array<double, 17> kBounds = {
      50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
      50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};
  void Add(int64_t micros);
  // Observations at or below kBounds[i] (not cumulative), and above all.
  const std::array<uint64_t, kBounds.size() + 1>& buckets() const { return buckets_; }
  uint64_t count() const { return count_; }
  double sum_seconds() const { return static_cast<double>(sum_us_) / 1e6; }

 private:
  std::array<uint64_t, kBounds.size() + 1> buckets_{};
  uint64_t count_ = 0;
  uint64_t sum_us_ = 0;
};

// Everything one scrape shows, as of one moment of the loop.
struct MetricsSnapshot {
  StoreStats stats;  // what Client::Stats returns
  uint64_t pinned_bytes = 0;  // used and not evictable: referenced or being created
  uint64_t creates = 0, seals = 0, deletes = 0, deleted_bytes = 0;
  uint64_t gets_socket = 0;  // object IDs asked for by Gets over the socket
  uint64_t gets_shm = 0;     // objects got from the shared index (counted by the clients)
  // Pulls by transport and result (a Fetch of an object tries holders and
  // transports in turn: each try is one).
  uint64_t pulls_ok_tcp = 0, pulls_ok_verbs = 0, pulls_failed_tcp = 0, pulls_failed_verbs = 0;
  LatencyHistogram fetch_latency;  // a pulled object, from its Fetch to its seal here
  // The loop's busy-polling (EventLoop::PollWindow): polls that found an
  // answer waiting, and polls that found nothing.
  uint64_t polls_answered = 0, polls_empty = 0;
  bool has_directory = false;
  bool directory_connected = false;   // connected and re-published everything
  uint64_t directory_queued = 0;      // updates waiting to be written to Redis
  uint64_t directory_failed = 0;      // updates whose write failed (re-published on resync)
  uint64_t lookups_scanned = 0;       // fetches' lookups answered by one HSCAN (node records cached)
  uint64_t lookups_scripted = 0;      // ... by the lookup script
  // Per transport that counts them (TransportConnections::known).
  struct Transport {
    std::string name;
    uint64_t serving = 0, handshaking = 0, outgoing = 0;
  };
  std::vector<Transport> transports;
  int64_t taken_us = 0;  // wall clock
};

// The text exposition format (version 0.0.4).
std::string FormatPrometheus(const MetricsSnapshot& m);

// Hands snapshots from the loop to the HTTP thread.
class SnapshotSlot {
 public:
  // `request` asks the loop (from any thread) to call Publish soon.
  explicit SnapshotSlot(std::function<void()> request) : request_(std::move(request)) {}
  // Loop thread: the fresh snapshot. Holds the lock for a pointer swap only.
  void Publish(std::shared_ptr<const MetricsSnapshot> s);
  // HTTP thread: a snapshot taken after this call began, or the last one if
  // the loop has not answered within `wait_ms` (null if there is none).
  std::shared_ptr<const MetricsSnapshot> Fresh(int wait_ms);

 private:
  std::function<void()> request_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const MetricsSnapshot> last_;
  uint64_t published_ = 0;   // snapshots published
  bool requested_ = false;   // a request is posted and not answered yet
};

// The HTTP server: GET /metrics on its own threads.
class MetricsServer {
 public:
  // Binds ADDR:PORT (port 0: any; see port()) and serves in the background.
  static Result<std::unique_ptr<MetricsServer>> Start(const std::string& addr_port,
                                                      SnapshotSlot* slot);
  ~MetricsServer();  // stops serving and joins its threads
  int port() const { return port_; }

  struct Impl;

 private:
  explicit MetricsServer(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  int port_;
};

}  // namespace plasmon
