// LRU order of the objects that may be evicted: sealed, unreferenced, not
// being deleted. The object table keeps membership exact; the policy only
// orders.
#pragma once

#include <cstddef>
#include <list>

#include "plasmon/object_id.h"

namespace plasmon {

class LruPolicy {
 public:
  using Handle = std::list<ObjectID>::iterator;

  // Adds `id` as the most recently used. Returns its handle for Remove.
  Handle Add(const ObjectID& id) { return order_.insert(order_.end(), id); }
  void Remove(Handle h) { order_.erase(h); }
  bool empty() const { return order_.empty(); }
  size_t size() const { return order_.size(); }
  // The least recently used. REQUIRES: !empty().
  const ObjectID& Oldest() const { return order_.front(); }
  // Oldest first: the order eviction takes them in.
  std::list<ObjectID>::const_iterator begin() const { return order_.begin(); }
  std::list<ObjectID>::const_iterator end() const { return order_.end(); }

 private:
  std::list<ObjectID> order_;
};

}  // namespace plasmon
