// TcpTransport: pulls objects between stores over TCP.
//
// Serving: one accept thread and one thread per connection, with blocking
// I/O. A Pull pins the object, sends the reply header and the object's bytes
// straight from the pinned arena memory, and unpins. Connections still in
// their handshake have a deadline and budgets of their own (per address and
// in all), apart from the serving slots of handshaken peers; the accept
// thread enforces both. Warnings a peer can cause are rate-limited.
//
// Pulling: authenticated connections are pooled per endpoint and reused.
// Objects up to chunk_size travel in one request; larger ones in chunk_size
// pieces over up to `streams` connections at once. Each connection hashes
// the blocks of its bytes as they land (core/digest.h), and a holder that
// does not know the object's digest hashes them as it sends them and sends
// their digests after the bytes: neither end hashes before or after the
// transfer, and the object's digest is the combination of its blocks'.
//
// Every connection starts with a challenge-response handshake on the shared
// cluster secret (HMAC-SHA256; the secret never crosses the wire).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/fd.h"
#include "core/log_limiter.h"
#include "plasmon/status.h"
#include "transport/plumbing.h"
#include "transport/transport.h"

namespace plasmon {

namespace tcp {
struct PullReply;
struct Frame;
}

struct TcpTransportOptions {
  std::string listen = "127.0.0.1:0";  // ADDR:PORT; port 0 = ephemeral
  // If set, what Listen returns instead of the bound address; required when
  // `listen` is a wildcard (0.0.0.0 or [::]). "HOST" (the bound port is
  // appended) or "HOST:PORT" (returned as is).
  std::string advertise;
  std::string secret;  // shared by the cluster; empty = peers are unauthenticated
  std::string node_name;
  int streams = 4;                // parallel connections for one large object (1 to 64)
  // Objects up to this go in one request; a multiple of kDigestBlock (64 KiB).
  uint64_t chunk_size = 4 << 20;
  int io_timeout_ms = 10000;      // a peer silent this long mid-transfer is dead
  int connect_timeout_ms = 3000;
  // A chunked pull holds its object pinned on one connection; a holder ends
  // the hold after this long (a slow transfer then goes on, pinned per chunk).
  int hold_timeout_ms = 120000;
  size_t max_connections = 256;  // served at once
  // Serving, before a peer has finished its handshake: it has this long in
  // all (however slowly its bytes come) or is closed; one address may have
  // max_handshakes_per_address connections in their handshake, and all
  // together max_handshakes (past it, the oldest is dropped to make room).
  // They hold none of the max_connections slots, which go to handshaken
  // peers only: peers without the secret cannot crowd out those with it.
  int handshake_timeout_ms = 2000;
  size_t max_handshakes_per_address = 32;
  size_t max_handshakes = 128;
  // Pulling: connecting to a holder and the whole handshake must end within
  // this, however the holder trickles its bytes (connect_timeout_ms bounds
  // the connect alone); a holder that accepts and never answers then costs
  // a pull this long, not io_timeout_ms per read.
  int dial_timeout_ms = 2000;
  // The congestion control of the transport's connections (TCP_CONGESTION;
  // "": the host's default). Not the host's by default: a pull is a request
  // and a burst of reply over a cluster's own network, and where the host
  // runs BBR (the kernel's, v1) it paces the burst of a connection that was
  // idle at its estimate of the rate and, on the project's veth links,
  // retransmits by the thousand; with cubic a cached 1 MiB fetch took half
  // the time there (267 against 528 us p50; docs/BENCHMARKS.md, sixth
  // session).
  std::string congestion = "cubic";
  // Whether Create fails if `congestion` is not available (or not allowed
  // to this user) here; if not, the connections keep the host's default and
  // Create logs why.
  bool congestion_required = false;
  // The connections an object of `total` bytes travels over: one up to
  // chunk_size, else one per chunk up to `streams` (a chunked pull also
  // holds the object pinned on one more, which carries no bytes).
  uint64_t StreamsFor(uint64_t total) const {
    if (total <= chunk_size) return 1;
    return std::min<uint64_t>((total + chunk_size - 1) / chunk_size,
                              static_cast<uint64_t>(std::max(streams, 1)));
  }
  // Objects up to this many bytes are pulled on the caller's event loop
  // (StartAsyncPull) when an idle pooled connection to the holder is at
  // hand, without a hand-off to another thread; 0: never.
  uint64_t async_max = 64 << 10;
};

// Sets `fd`'s congestion control (TCP_CONGESTION) to `cc`; nothing if it
// is empty. Before connect() or listen(): a connection switched after its
// handshake keeps what the host's default set up on it.
Status SetCongestionControl(int fd, const std::string& cc);

class TcpTransport : public Transport {
 public:
  static Result<std::unique_ptr<TcpTransport>> Create(TcpTransportOptions options);
  ~TcpTransport() override;

  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  const char* name() const override { return "tcp"; }
  Status RegisterMemory(const MemoryRegion& region) override;
  Result<std::string> Listen(ObjectSource* source) override;
  Result<PullResult> Pull(const std::string& endpoint, const PullRequest& request) override;
  std::unique_ptr<AsyncPull> StartAsyncPull(const std::string& endpoint,
                                            const PullRequest& request) override;
  void Shutdown() override;
  Connections connections() const override;

  // Connections accepted since Listen, refused ones included (for tests).
  uint64_t accepted_connections() const;
  // Log lines that peers caused and the rate limit suppressed.
  uint64_t suppressed_log_lines() const { return log_limiter_.suppressed(); }

 private:
  // Where a served connection is: in its handshake, handshaken (holding a
  // serving slot), or cut short in its handshake.
  enum class Phase { kHandshake, kServing, kCut };
  struct Served;
  class Lease;
  class PinGuard;
  class LoopPull;

  explicit TcpTransport(TcpTransportOptions options);

  // ---- serving ----
  void AcceptLoop();
  // Takes a new connection from `host`, or refuses it (false). Drops the
  // oldest one in its handshake if there are max_handshakes already.
  bool AdmitConnection(UniqueFd conn, const std::string& host, const std::string& peer);
  // Closes the connections whose handshake deadline passed; returns the ms
  // until the next deadline (-1: none).
  int CutLateHandshakes();
  // Ends `s`'s handshake early (under mu_): shuts its socket down and frees
  // its handshake slot; its thread logs `why`.
  void CutHandshake(Served* s, std::string why);
  // Frees `s`'s handshake slot (under mu_), if it has one, and moves it to
  // the phase `next`.
  void LeaveHandshake(Served* s, Phase next);
  void Serve(Served* s, int fd, std::string peer);
  // Runs the server half of the handshake; false closes the connection. Adds
  // the client's node name to *peer.
  bool ServerHandshake(Served* s, int fd, std::string* peer);
  // After a cut: logs why and returns true.
  bool ReportCut(Served* s, const std::string& peer);
  // Moves `s` from its handshake to a serving slot; a status to refuse it with
  // if there is none.
  Status StartServing(Served* s);
  // Answers one Pull; false closes the connection.
  // *held: the pin a Pull with `hold` keeps after its reply, ended by the
  // next frame (or the connection's end).
  bool ServePull(int fd, const std::string& host, const std::string& peer, uint64_t request_id,
                 std::string_view body, std::unique_ptr<PinGuard>* held);
  Status SendHashed(int fd, const std::string& frame, const PinnedObject& p, uint64_t offset,
                    uint64_t length, PinGuard* guard);
  void ReapFinished();  // joins served connections whose threads ended

  // ---- pulling ----
  // An idle pooled connection to `endpoint`, or a new authenticated one.
  Result<UniqueFd> Acquire(const std::string& endpoint);
  // An idle pooled connection to `endpoint` that still looks alive.
  std::optional<UniqueFd> TakeIdle(const std::string& endpoint);
  Result<UniqueFd> Connect(const std::string& endpoint);
  // Its reads end by `deadline`, its sends within SO_SNDTIMEO.
  Status ClientHandshake(int fd, const std::string& endpoint,
                         std::chrono::steady_clock::time_point deadline);
  void Release(const std::string& endpoint, UniqueFd fd);  // back to the pool
  void Discard(UniqueFd fd);                               // closes it
  // What a Pull asks for besides its range. With `blocks`, the bytes are
  // hashed as they land, block by block, into blocks[0, DigestBlocks(length)),
  // and the holder is asked for the digests of its blocks (checked against
  // those), which it sends if it does not know the object's.
  struct PullAsk {
    bool want_digest = false;
    bool hold = false;
    uint64_t* blocks = nullptr;
  };
  // Sends a Pull for [offset, offset + length) of the object.
  Status SendPull(int fd, const std::string& endpoint, const PullRequest& request, uint64_t offset,
                  uint64_t length, const PullAsk& ask, uint64_t request_id);
  // Checks a reply frame to SendPull: its type and request id, the holder's
  // sizes against the request's, its status. *reusable tells whether the
  // connection is in a known state (on OK: once the bytes are read).
  Status CheckPullReply(const tcp::Frame& f, const std::string& endpoint,
                        const PullRequest& request, uint64_t request_id, tcp::PullReply* reply,
                        bool* reusable) const;
  // Reads the reply to SendPull and, on OK, the `length` bytes into
  // request.destination + offset (hashed into `blocks` if given, and checked
  // against the holder's block digests if it sent them). Checks the holder's
  // sizes against the request's. *reusable tells whether the connection is
  // in a known state.
  Status ReadPullReply(int fd, const std::string& endpoint, const PullRequest& request,
                       uint64_t offset, uint64_t length, uint64_t* blocks, uint64_t request_id,
                       tcp::PullReply* reply, bool* reusable);
  Status PullRange(int fd, const std::string& endpoint, const PullRequest& request, uint64_t offset,
                   uint64_t length, const PullAsk& ask, tcp::PullReply* reply, bool* reusable);
  Result<PullResult> PullWhole(const std::string& endpoint, const PullRequest& request);
  Result<PullResult> Verified(const std::string& endpoint, const PullRequest& request,
                              const std::vector<uint64_t>& blocks, const tcp::PullReply& holder,
                              bool blocks_checked);
  Result<PullResult> PullChunked(const std::string& endpoint, const PullRequest& request);
  // Inside registered memory (anywhere, if none was registered).
  bool InRegisteredMemory(const uint8_t* p, uint64_t n) const;

  const TcpTransportOptions opts_;
  std::atomic<uint64_t> next_request_id_{1};

  mutable std::mutex mu_;
  std::condition_variable cv_;  // accept backoff
  bool listening_ = false;
  bool shut_down_ = false;
  ObjectSource* source_ = nullptr;
  RegisteredMemory memory_;
  UniqueFd listen_fd_;
  std::thread accept_thread_;
  uint64_t accepted_ = 0;
  uint64_t next_conn_id_ = 0;
  std::unordered_map<uint64_t, std::unique_ptr<Served>> served_;
  std::vector<uint64_t> finished_;  // served connections whose threads ended
  size_t serving_ = 0;              // handshaken connections
  size_t handshaking_ = 0;          // in their handshake (not cut)
  std::unordered_map<std::string, size_t> handshaking_by_host_;
  UniqueFd wake_fd_;  // an eventfd: wakes the accept thread at Shutdown
  // Warnings a peer can cause, by peer address and reason.
  LogLimiter log_limiter_;
  // Client side: every open client socket (pooled or in use), so Shutdown can
  // break them, and the idle ones by endpoint.
  std::unordered_set<int> client_fds_;
  IdlePool<UniqueFd> idle_;
  PullGate pulls_;
};

}  // namespace plasmon
