// Plain data types shared by the client API and the wire protocol.
#pragma once

#include <cstdint>
#include <string>

#include "plasmon/object_id.h"

namespace plasmon {

enum class ObjectState : uint8_t {
  kCreated = 1,  // allocated, being written by its creator, not visible to Get
  kSealed = 2,   // immutable and visible
};

// One row of Client::List().
struct ObjectInfo {
  ObjectID id;
  ObjectState state = ObjectState::kCreated;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  uint32_t ref_count = 0;        // references held by all clients together
  bool digest_valid = false;     // false until the digest has been computed
  uint64_t digest = 0;           // xxh3-64 of data then metadata
  int64_t create_time_us = 0;    // wall clock, microseconds since the epoch
  int64_t last_access_us = 0;    // wall clock, microseconds since the epoch
  int64_t seal_time_us = 0;      // wall clock when sealed; 0 while unsealed

  // How long the object took from Create to Seal (-1 while unsealed).
  int64_t create_to_seal_us() const {
    return state == ObjectState::kSealed ? seal_time_us - create_time_us : -1;
  }
};

// Client::Stats().
struct StoreStats {
  uint64_t capacity = 0;        // usable bytes in the arena
  uint64_t used = 0;            // bytes allocated to objects (after alignment)
  uint64_t object_count = 0;    // objects in any state
  uint64_t sealed_count = 0;
  uint64_t evictions = 0;       // objects evicted since start
  uint64_t evicted_bytes = 0;
  uint64_t clients = 0;         // connected clients, subscribers included
  uint64_t fetched = 0;         // objects made local by Fetch since start
  uint64_t fetched_bytes = 0;
  uint64_t fetched_verbs = 0;   // of `fetched`, pulled by RDMA (the rest by TCP)
  uint64_t pulls_failed = 0;    // pulls that failed (each tried the next holder or transport)
  // Answered by clients from the shared index, with no round trip (counted
  // by the clients in their pin pages): objects got, Contains answered.
  uint64_t shm_gets = 0;
  uint64_t shm_contains = 0;
};

// One node that holds an object, as the cluster's directory says (Where).
struct ObjectHolder {
  std::string node_id;
  bool alive = false;  // false: the node stopped renewing its record
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  bool digest_valid = false;
  uint64_t digest = 0;
};

// What a Where reply left out.
struct HoldersLeftOut {
  uint64_t not_shown = 0;  // holders past the most one reply carries (4096)
  uint64_t malformed = 0;  // directory records skipped as malformed (the store logs them)
};

// What a subscriber receives, one per event, in the order they happened.
struct Notification {
  enum class Kind : uint8_t { kSealed = 1, kDeleted = 2, kEvicted = 3 };
  Kind kind = Kind::kSealed;
  ObjectID id;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
};

}  // namespace plasmon
