// The state of fetches: making objects held by other nodes local.
//
// A fetch of one ID is a job that the store's loop drives through steps, each
// blocking step running on a worker and posting its result back:
//   lookup   ask the directory (or the location cache) which live nodes hold it
//   pull     create the object here (unsealed, invisible), pull its bytes from
//            one holder through the transport (digest checked), seal: the seal
//            publishes the new location and answers the waiting Fetches
//   park     no live node holds it yet: subscribe to its seal channel and
//            look up again when it is sealed somewhere (or every few seconds,
//            in case a message was lost), until no Fetch waits any more
// A failed pull aborts the local object and tries the next holder. Every
// Fetch naming the ID waits on the one job: concurrent fetches share one
// transfer. Fetch requests time out on their own; a job nobody waits for
// stops at its next step.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "plasmon/object_id.h"
#include "plasmon/status.h"

namespace plasmon {

// One node that holds an object, as far as the directory knows.
struct FetchCandidate {
  std::string node_id;
  std::string endpoint;  // for transport number `transport` of this store
  size_t transport = 0;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
};

struct FetchJob {
  enum class Phase { kLookup, kPull, kParked };
  ObjectID id;
  Phase phase = Phase::kLookup;
  std::vector<FetchCandidate> candidates;  // from the last lookup, in the order tried
  size_t next = 0;                         // next candidate to try
  int lookups = 0;
  uint64_t lookup_seq = 0;   // the lookup in flight; older results are ignored
  bool from_cache = false;   // candidates came from the location cache
  bool stale = false;        // a holder said it no longer has the object
  bool event_seen = false;   // a seal event came while a lookup was running
  Status last_error;         // why the last pull failed
};

// One Fetch request of one client.
struct PendingFetch {
  uint32_t session = 0;
  uint64_t request_id = 0;
  std::vector<ObjectID> ids;
  std::vector<Status> results;
  std::vector<bool> done;
  size_t remaining = 0;
  int64_t deadline_us = -1;  // -1: none
  bool no_wait = false;      // timeout 0: do not wait for an object to appear
};

// Recent lookups, so that fetching an object whose holders are known skips
// the directory round trip. Entries expire; a failed pull drops its entry.
class LocationCache {
 public:
  static constexpr int64_t kTtlUs = 10'000'000;
  static constexpr size_t kMaxEntries = 65536;

  const std::vector<FetchCandidate>* Find(const ObjectID& id) {
    auto it = map_.find(id);
    if (it == map_.end()) return nullptr;
    if (MonoMicros() - it->second.time_us > kTtlUs) {
      map_.erase(it);
      return nullptr;
    }
    return &it->second.candidates;
  }
  void Put(const ObjectID& id, std::vector<FetchCandidate> c) {
    if (map_.size() >= kMaxEntries) map_.clear();  // crude, but bounded
    map_[id] = Entry{std::move(c), MonoMicros()};
  }
  void Drop(const ObjectID& id) { map_.erase(id); }

 private:
  struct Entry {
    std::vector<FetchCandidate> candidates;
    int64_t time_us = 0;
  };
  std::unordered_map<ObjectID, Entry, ObjectIDHash> map_;
};

}  // namespace plasmon
