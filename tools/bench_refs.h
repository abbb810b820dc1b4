// plasmon-bench references: what the store's figures are judged against,
// measured in the same run on the same machine.
//
//   the IPC floor        a 64-byte ping-pong between two processes over a Unix
//                        socketpair: one round trip, nothing else
//   the bandwidth limit  memcpy into already-faulted memory
//   Redis                SET and GET over a Unix socket through hiredis
//   the network          (plasmon-bench fetch) a TCP ping-pong and iperf3
//                        between two network namespaces, over the link the
//                        stores use
//   RDMA                 (plasmon-bench fetch --transport verbs) perftest's
//                        ib_read_lat and ib_read_bw over rdma_cm
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "plasmon/status.h"
#include "tools/bench_stats.h"

namespace plasmon::bench {

// How many timed iterations and warm-up iterations to run for objects of a size.
struct Counts {
  uint64_t iterations = 0;
  uint64_t warmup = 0;
};
using CountsFor = std::function<Counts(uint64_t size)>;

// Round trips of `bytes` bytes over a socketpair to a forked echo process;
// one sample per round trip (send + receive of the echo).
// `peer_cpu` >= 0 pins the echo process to that CPU (see --pin).
Result<Summary> MeasurePingPong(uint64_t bytes, Counts counts, int peer_cpu = -1);

// Pins the calling process (and the children it forks later) to one CPU.
Status PinToCpu(int cpu);

struct MemcpyRow {
  uint64_t size = 0;
  uint64_t repetitions = 0;  // timed repetitions; the median rate is reported
  uint64_t copies = 0;       // memcpy calls per repetition (small sizes are batched)
  double gb_per_s = 0;       // GB = 1e9 bytes
};
// memcpy of each size from one faulted buffer into another.
std::vector<MemcpyRow> MeasureMemcpy(const std::vector<uint64_t>& sizes);

struct RedisRow {
  std::string op;  // "redis_set" or "redis_get"
  uint64_t size = 0;
  Summary summary;
};
struct RedisReference {
  std::string socket;
  std::string version;  // from INFO server
  std::string error;    // set if Redis could not be measured (rows may be partial)
  std::vector<RedisRow> rows;
};
// SET then GET of a `size`-byte value (taken from `src`) for each size, over
// one hiredis connection to the Unix socket `socket`. Never fails hard: a
// connection or command failure is reported in `error`.
RedisReference MeasureRedis(const std::string& socket, const std::vector<uint64_t>& sizes,
                            const CountsFor& counts, const uint8_t* src);

// ---- the network between two hosts (network namespaces) ----

// One end of a network reference: a process in the network namespace
// /run/netns/NETNS (empty: the caller's own) using the address ADDRESS there
// (an IPv4 or IPv6 literal), pinned to CPU `cpu` if >= 0 (processes the
// references fork; the caller's own end keeps the caller's affinity).
struct NetHost {
  std::string netns;
  std::string address;
  int cpu = -1;
  // The congestion control of the TCP references' connections here (""
  // the host's default): the stores' own, for a like-for-like reference
  // (set with the transport's SetCongestionControl).
  std::string congestion;
};

// Pins every thread of process `pid` to one CPU, or with cpu -1 lets them
// run on all (threads it starts later inherit it from their creator).
Status PinProcess(pid_t pid, int cpu);

// Moves the calling thread into the network namespace `netns` (by name, as
// `ip netns` names them); an empty name is a no-op.
Status EnterNetns(const std::string& netns);

// A TCP connection (TCP_NODELAY at both ends) from a socket made in
// `client`'s namespace to an echo process forked into `server`'s namespace,
// listening on an ephemeral port of server.address. It stays open, so round
// trips can be interleaved with other work (the machine's round trip can
// change within seconds; interleaving samples both in the same conditions).
class TcpPingPong {
 public:
  static Result<std::unique_ptr<TcpPingPong>> Start(const NetHost& client, const NetHost& server,
                                                    uint64_t bytes);
  ~TcpPingPong();  // closes the connection; the echo process ends
  TcpPingPong(const TcpPingPong&) = delete;
  TcpPingPong& operator=(const TcpPingPong&) = delete;

  // One round trip of `bytes` bytes, in ns.
  Result<uint64_t> RoundTrip();
  // Warm-up round trips, then one sample per timed round trip.
  Result<Summary> Measure(Counts counts);

 private:
  TcpPingPong(pid_t pid, int fd, uint64_t bytes) : pid_(pid), fd_(fd), buf_(bytes, 0x5a) {}
  pid_t pid_;
  int fd_;
  std::vector<uint8_t> buf_;
};

// Start + Measure: round trips of `bytes` bytes over a new connection.
Result<Summary> MeasureTcpPingPong(const NetHost& client, const NetHost& server, uint64_t bytes,
                                   Counts counts);

struct Iperf3Result {
  int streams = 0;
  int seconds = 0;
  double bits_per_second = 0;  // end.sum_received: what the receiver got
  uint64_t retransmits = 0;    // end.sum_sent.retransmits
  bool pinned = false;         // either side ran pinned to its host's CPU
  std::string error;           // set if it could not be measured
};
// `iperf3 -s -1` in `server`'s namespace, bound to server.address:port, and
// `iperf3 -c server.address -p port -P streams -t seconds -J` in `client`'s,
// each pinned to its host's CPU if it has one.
// Never fails hard: a failure is reported in `error`.
Iperf3Result MeasureIperf3(const NetHost& client, const NetHost& server, int port, int streams,
                           int seconds);

// Plain TCP into memory as large as an object: `reps` transfers of `bytes`
// from a process forked into `sender`'s namespace to this one (its sockets
// made in `receiver`'s), over `streams` connections, each carrying its
// contiguous share and read in 256 KiB pieces as a pull reads. Both buffers
// are memfd arenas made as the store makes its own (core's Arena,
// prefaulted, on the pages a store would get), the sender's written before
// the first transfer, as a client writes an object. Where iperf3 moves one
// small buffer again and again, this moves every byte once, from memory
// into memory: the first transfer into memory no transfer wrote yet, the
// later ones into the same. Unpinned unless the hosts have CPUs.
struct TcpBulkResult {
  uint64_t bytes = 0;
  int streams = 0;
  std::vector<double> bits_per_second;  // each transfer's, in order
  std::string error;                    // set if it could not be measured
};
TcpBulkResult MeasureTcpBulk(const NetHost& sender, const NetHost& receiver, uint64_t bytes,
                             int streams, int reps);

// ---- RDMA READ: perftest over rdma_cm ----

// ib_read_lat: RDMA READ round trips of one size. Times in microseconds;
// typical is perftest's median.
struct RdmaReadLatency {
  uint64_t size = 0;
  uint64_t iterations = 0;
  std::string device;  // the client's RDMA device, as perftest names it
  double min_us = 0, typical_us = 0, avg_us = 0, stdev_us = 0, p99_us = 0, p999_us = 0,
         max_us = 0;
};
// `ib_read_lat -R -F -s size -n iterations -p port` as the server in
// `server`'s namespace (it serves the reads), the same plus server.address as
// the client in `client`'s (it reads), each pinned to its host's CPU if it
// has one. The client is retried until the server takes its connection.
// Fails, with both sides' output, if perftest is missing, either side fails,
// or it takes too long.
Result<RdmaReadLatency> MeasureIbReadLat(const NetHost& client, const NetHost& server, int port,
                                         uint64_t size, uint64_t iterations);

// ib_read_bw: RDMA READs of one size, many outstanding.
struct RdmaReadBandwidth {
  uint64_t size = 0;
  uint64_t iterations = 0;
  std::string device;
  double peak_bits_per_second = 0, avg_bits_per_second = 0;  // perftest's MiB/s, converted
  double msg_rate_mpps = 0;
};
// `ib_read_bw -R -F -s size -n iterations -p port`, as MeasureIbReadLat runs it.
Result<RdmaReadBandwidth> MeasureIbReadBw(const NetHost& client, const NetHost& server, int port,
                                          uint64_t size, uint64_t iterations);

// The processes the references fork (echo servers, iperf3) are tracked here
// so that a signal handler can stop them: KillTrackedChildren is
// async-signal-safe.
void TrackChild(pid_t pid);
void UntrackChild(pid_t pid);
void KillTrackedChildren();

}  // namespace plasmon::bench
