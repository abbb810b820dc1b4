// LRU order of the objects that may be evicted: sealed, unreferenced, not
// being deleted. The object table keeps membership exact; the policy orders
// them and sums their allocation units (what evicting them all would free).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>

#include "plasmon/object_id.h"

namespace plasmon {

class LruPolicy {
 public:
  using Handle = std::list<ObjectID>::iterator;

  // Adds `id`, of `units` allocation units, as the most recently used.
  // Returns its handle for Remove.
  Handle Add(const ObjectID& id, uint64_t units) {
    units_ += units;
    return order_.insert(order_.end(), id);
  }
  // REQUIRES: `units` as given to Add.
  void Remove(Handle h, uint64_t units) {
    units_ -= units;
    order_.erase(h);
  }
  uint64_t units() const { return units_; }
  bool empty() const { return order_.empty(); }
  size_t size() const { return order_.size(); }
  // The least recently used. REQUIRES: !empty().
  const ObjectID& Oldest() const { return order_.front(); }
  // Oldest first: the order eviction takes them in.
  std::list<ObjectID>::const_iterator begin() const { return order_.begin(); }
  std::list<ObjectID>::const_iterator end() const { return order_.end(); }

 private:
  std::list<ObjectID> order_;
  uint64_t units_ = 0;
};

}  // namespace plasmon
