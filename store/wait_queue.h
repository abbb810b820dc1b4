// WaitQueue: requests that wait for objects (a Get for seals, a Fetch for
// transfers), indexed by the IDs they wait on, each with its own deadline on
// the event loop's timer heap.
//
// A request names IDs (slots, in the client's order; an ID may repeat).
// Resolve(id, ...) settles the slots naming `id` in every request waiting on
// it; a request whose last slot is settled is complete: it is handed to the
// completion function and forgotten. A request whose deadline passes is
// handed to the expiry function with its unsettled slots, and forgotten.
// Requests of a session that goes away are dropped without an answer.
// WaitBudget bounds what all of them hold (the store charges it).
//
// Loop thread only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/event_loop.h"
#include "plasmon/object_id.h"
#include "plasmon/status.h"

namespace plasmon {

// What every waiting request has; Get and Fetch add their replies' fields.
struct WaitingRequest {
  uint32_t session = 0;
  uint64_t request_id = 0;
  std::vector<ObjectID> ids;  // the slots, as the client named them
  std::vector<bool> done;     // per slot: settled
  size_t remaining = 0;       // slots not settled

  void InitSlots(std::vector<ObjectID> slot_ids) {
    ids = std::move(slot_ids);
    done.assign(ids.size(), false);
    remaining = ids.size();
  }
  // Settles slot i (once).
  void Settle(size_t i) {
    if (done[i]) return;
    done[i] = true;
    remaining--;
  }
  // The distinct IDs of the unsettled slots.
  std::vector<ObjectID> Unsettled() const {
    std::vector<ObjectID> out;
    for (size_t i = 0; i < ids.size(); i++)
      if (!done[i]) out.push_back(ids[i]);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
};

// What waiting requests may hold, shared by the wait queues of Gets and
// Fetches: a number of waiting IDs per client and in all. Each waiting
// request is charged its IDs (as named, repeats included) plus
// kRequestCharge for what it costs beside them, from when it starts waiting
// until it is answered or its client goes. It bounds the store's memory for
// waiting: one client, or many, cannot make it grow without limit.
class WaitBudget {
 public:
  static constexpr uint64_t kRequestCharge = 16;
  // A waiting Fetch's ID costs the store several times a Get's (its job,
  // its result, its holders: about 600 bytes against 90), so it is charged
  // as this many.
  static constexpr uint64_t kFetchIdWeight = 4;

  WaitBudget(uint64_t per_client, uint64_t total) : per_client_(per_client), total_(total) {}

  // The charge of a request naming `ids` IDs.
  static uint64_t ChargeOf(size_t ids) { return ids + kRequestCharge; }
  // Charges `session` for a request of `ids` IDs, each counted `weight`
  // times; OutOfMemory, charging nothing, if either limit would be passed.
  // `what` names the request. Refund with the same ids * weight.
  Status Charge(uint32_t session, size_t ids, const char* what, uint64_t weight = 1) {
    const uint64_t c = ChargeOf(ids * weight);
    auto it = used_by_.find(session);
    const uint64_t mine = it == used_by_.end() ? 0 : it->second;
    auto refuse = [&](const char* whose, uint64_t limit, const char* flag, uint64_t in_use) {
      return Status::OutOfMemory(std::string("too many IDs waiting ") + whose + ": this " + what +
                                 " of " + std::to_string(ids) + " IDs would pass the limit of " +
                                 std::to_string(limit) + " (" + flag + "; " +
                                 std::to_string(in_use) + " in use)");
    };
    if (mine + c > per_client_)
      return refuse("for this client", per_client_, "--max-waiting-ids-per-client", mine);
    if (used_ + c > total_) return refuse("in this store", total_, "--max-waiting-ids", used_);
    used_by_[session] = mine + c;
    used_ += c;
    return Status::OK();
  }
  // Gives back the charge of an answered request.
  void Refund(uint32_t session, size_t ids) {
    auto it = used_by_.find(session);
    if (it == used_by_.end()) return;  // the client went; DropSession refunded it
    const uint64_t c = std::min(ChargeOf(ids), it->second);
    it->second -= c;
    used_ -= c;
    if (it->second == 0) used_by_.erase(it);
  }
  // Gives back all of a client's charges (it went).
  void DropSession(uint32_t session) {
    auto it = used_by_.find(session);
    if (it == used_by_.end()) return;
    used_ -= it->second;
    used_by_.erase(it);
  }
  uint64_t used() const { return used_; }
  uint64_t UsedBy(uint32_t session) const {
    auto it = used_by_.find(session);
    return it == used_by_.end() ? 0 : it->second;
  }

 private:
  uint64_t per_client_, total_;
  uint64_t used_ = 0;
  std::unordered_map<uint32_t, uint64_t> used_by_;
};

// The index of a wait queue: for each ID, the slots of requests waiting on
// it, oldest first. Flat, because an attacker chooses how many IDs wait: an
// open-addressed table of IDs (linear probing on the keyed hash, at most 3/4
// full; 28 bytes a slot) heads lists of slot nodes (24 bytes each) in one
// pool. A waiting slot costs about 70 bytes and no allocation of its own,
// where a node-based map of vectors cost about 160; both arrays shrink as
// the waiting goes. The lists are doubly linked and Add returns the slot's
// node, so that a request leaving takes each of its slots out in O(1): a
// scan from the head would let one request naming an ID thousands of times
// behind many other waiters on it hold the loop for minutes.
class WaitIndex {
 public:
  using Key = uint64_t;
  struct Waiter {
    Key key;
    uint32_t slot;
  };

  // Slot `slot` of request `key` waits on `id` (at the end of its list).
  // Returns its node, for Remove.
  uint32_t Add(const ObjectID& id, Key key, uint32_t slot);
  // Node `node` (from Add for `id`, not removed since) no longer waits
  // (settled, or the request went). O(1).
  void Remove(const ObjectID& id, uint32_t node);
  // Keeps, of `id`'s waiters, those for which `keep(waiter)` is true.
  template <typename Keep>
  void Filter(const ObjectID& id, Keep keep);
  // Appends `id`'s waiters to *out, oldest first.
  void WaitersOf(const ObjectID& id, std::vector<Waiter>* out) const;
  bool Contains(const ObjectID& id) const { return Find(id) != kNone; }
  size_t ids() const { return used_; }
  // Bytes held by the index's arrays (for tests).
  size_t bytes() const {
    return slots_.capacity() * sizeof(Slot) + nodes_.capacity() * sizeof(Node);
  }
  // List nodes Remove has visited (for tests: removal must not scan the
  // ID's list; it visits one node per call).
  uint64_t remove_steps() const { return remove_steps_; }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  static constexpr size_t kMinSlots = 16;
  struct Slot {
    ObjectID id;
    uint32_t head = kNone;  // kNone: a free slot
    uint32_t tail = kNone;
  };
  struct Node {
    Key key;
    uint32_t slot;
    uint32_t prev;  // in the ID's list
    uint32_t next;  // in the ID's list, or in the free list
  };

  size_t Home(const ObjectID& id) const { return id.Hash() & (slots_.size() - 1); }
  uint32_t Find(const ObjectID& id) const;  // the table slot, or kNone
  // Takes node `n` out of slot i's list.
  void Unlink(uint32_t i, uint32_t n);
  void EraseSlot(size_t i);
  void Resize(size_t n);
  uint32_t NewNode(Key key, uint32_t slot);
  void FreeNode(uint32_t n);

  std::vector<Slot> slots_;  // a power of two, or empty
  size_t used_ = 0;
  std::vector<Node> nodes_;
  uint32_t free_nodes_ = kNone;
  size_t live_nodes_ = 0;
  uint64_t remove_steps_ = 0;
};

inline uint32_t WaitIndex::Find(const ObjectID& id) const {
  if (used_ == 0) return kNone;
  const size_t mask = slots_.size() - 1;
  for (size_t i = Home(id);; i = (i + 1) & mask) {
    if (slots_[i].head == kNone) return kNone;
    if (slots_[i].id == id) return static_cast<uint32_t>(i);
  }
}

inline void WaitIndex::Resize(size_t n) {
  std::vector<Slot> old(n);
  old.swap(slots_);
  const size_t mask = n - 1;
  for (const Slot& s : old) {
    if (s.head == kNone) continue;
    size_t i = Home(s.id);
    while (slots_[i].head != kNone) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

inline uint32_t WaitIndex::NewNode(Key key, uint32_t slot) {
  uint32_t n = free_nodes_;
  if (n != kNone) {
    free_nodes_ = nodes_[n].next;
    nodes_[n] = Node{key, slot, kNone, kNone};
  } else {
    n = static_cast<uint32_t>(nodes_.size());
    nodes_.push_back(Node{key, slot, kNone, kNone});
  }
  live_nodes_++;
  return n;
}

inline void WaitIndex::FreeNode(uint32_t n) {
  nodes_[n].next = free_nodes_;
  free_nodes_ = n;
  if (--live_nodes_ == 0) {  // nothing waits: give the pool back
    std::vector<Node>().swap(nodes_);
    free_nodes_ = kNone;
  }
}

inline uint32_t WaitIndex::Add(const ObjectID& id, Key key, uint32_t slot) {
  uint32_t i = Find(id);
  if (i == kNone) {
    if ((used_ + 1) * 4 > slots_.size() * 3) Resize(std::max(kMinSlots, slots_.size() * 2));
    const size_t mask = slots_.size() - 1;
    size_t j = Home(id);
    while (slots_[j].head != kNone) j = (j + 1) & mask;
    i = static_cast<uint32_t>(j);
    slots_[i].id = id;
    used_++;
  }
  uint32_t n = NewNode(key, slot);
  Slot& s = slots_[i];
  if (s.head == kNone) {
    s.head = n;
  } else {
    nodes_[s.tail].next = n;
    nodes_[n].prev = s.tail;
  }
  s.tail = n;
  return n;
}

inline void WaitIndex::Remove(const ObjectID& id, uint32_t node) {
  uint32_t i = Find(id);
  if (i == kNone) return;
  remove_steps_++;
  Unlink(i, node);
  if (slots_[i].head == kNone) EraseSlot(i);
}

inline void WaitIndex::Unlink(uint32_t i, uint32_t n) {
  const uint32_t prev = nodes_[n].prev, next = nodes_[n].next;
  if (prev == kNone)
    slots_[i].head = next;
  else
    nodes_[prev].next = next;
  if (next == kNone)
    slots_[i].tail = prev;
  else
    nodes_[next].prev = prev;
  FreeNode(n);
}

template <typename Keep>
void WaitIndex::Filter(const ObjectID& id, Keep keep) {
  uint32_t i = Find(id);
  if (i == kNone) return;
  for (uint32_t n = slots_[i].head; n != kNone;) {
    const uint32_t next = nodes_[n].next;
    if (!keep(Waiter{nodes_[n].key, nodes_[n].slot})) Unlink(i, n);
    n = next;
  }
  if (slots_[i].head == kNone) EraseSlot(i);
}

inline void WaitIndex::WaitersOf(const ObjectID& id, std::vector<Waiter>* out) const {
  uint32_t i = Find(id);
  if (i == kNone) return;
  for (uint32_t n = slots_[i].head; n != kNone; n = nodes_[n].next)
    out->push_back(Waiter{nodes_[n].key, nodes_[n].slot});
}

inline void WaitIndex::EraseSlot(size_t i) {
  // Backward-shift deletion: no tombstones, probes stay short.
  const size_t mask = slots_.size() - 1;
  for (size_t j = (i + 1) & mask; slots_[j].head != kNone; j = (j + 1) & mask) {
    const size_t home = Home(slots_[j].id);
    // Slot j may move to i if its home is not cyclically within (i, j].
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    slots_[i] = slots_[j];
    i = j;
  }
  slots_[i].head = slots_[i].tail = kNone;
  used_--;
  if (used_ == 0)
    std::vector<Slot>().swap(slots_);
  else if (slots_.size() > kMinSlots && used_ * 8 < slots_.size())
    Resize(slots_.size() / 2);
}

template <typename R>
class WaitQueue {
  static_assert(std::is_base_of_v<WaitingRequest, R>);

 public:
  using Key = WaitIndex::Key;
  using Fn = std::function<void(R&)>;

  // `on_complete`: every slot is settled; `on_expire`: the deadline passed.
  // Both are called with the request already out of the queue.
  WaitQueue(EventLoop* loop, Fn on_complete, Fn on_expire)
      : loop_(loop), on_complete_(std::move(on_complete)), on_expire_(std::move(on_expire)) {}
  WaitQueue(const WaitQueue&) = delete;
  WaitQueue& operator=(const WaitQueue&) = delete;
  ~WaitQueue() {
    for (auto& [key, e] : requests_) loop_->CancelTimer(e.timer);
  }

  // Queues `r` (with at least one unsettled slot) until its slots are
  // settled or `deadline_us` (monotonic; -1: never) passes.
  Key Add(R r, int64_t deadline_us) {
    Key key = next_key_++;
    Entry& e = requests_.emplace(key, Entry{std::move(r), EventLoop::kNoTimer, {}}).first->second;
    e.nodes.resize(e.r.ids.size());
    for (size_t i = 0; i < e.r.ids.size(); i++)
      if (!e.r.done[i]) e.nodes[i] = index_.Add(e.r.ids[i], key, static_cast<uint32_t>(i));
    if (deadline_us >= 0) e.timer = loop_->AddTimer(deadline_us, [this, key] { Expire(key); });
    per_session_[e.r.session]++;
    return key;
  }

  // For each request waiting on `id` and each of its unsettled slots naming
  // `id`: `settle(request, slot)` returns whether that slot is now settled.
  // Requests left with no unsettled slot complete.
  template <typename SettleFn>
  void Resolve(const ObjectID& id, SettleFn settle) {
    std::vector<WaitIndex::Waiter> waiters;  // the callbacks may change the index
    index_.WaitersOf(id, &waiters);
    if (waiters.empty()) return;
    for (const WaitIndex::Waiter& w : waiters) {
      auto it = requests_.find(w.key);
      if (it == requests_.end()) continue;
      R& r = it->second.r;
      if (r.done[w.slot] || !settle(r, w.slot)) continue;
      r.Settle(w.slot);
      if (r.remaining == 0) {
        std::optional<R> done = Take(it);
        on_complete_(*done);
      }
    }
    // One pass drops the settled slots (those of requests gone went with them).
    index_.Filter(id, [&](const WaitIndex::Waiter& w) {
      auto it = requests_.find(w.key);
      return it != requests_.end() && !it->second.r.done[w.slot];
    });
  }

  // Whether any request waits on `id`.
  bool Waiting(const ObjectID& id) const { return index_.Contains(id); }
  // Requests queued for `session`.
  uint32_t CountFor(uint32_t session) const {
    auto it = per_session_.find(session);
    return it == per_session_.end() ? 0 : it->second;
  }
  size_t size() const { return requests_.size(); }
  const WaitIndex& index() const { return index_; }

  // Drops `session`'s requests without an answer (it is gone).
  void DropSession(uint32_t session) {
    if (CountFor(session) == 0) return;
    for (auto it = requests_.begin(); it != requests_.end();) {
      auto cur = it++;
      if (cur->second.r.session == session) Take(cur);
    }
  }

 private:
  struct Entry {
    R r;
    EventLoop::TimerId timer;
    // Per slot: its node in the index while it is unsettled. A settled
    // slot's node goes in Resolve's Filter pass, so Take removes only the
    // unsettled ones' (each still in its ID's list).
    std::vector<uint32_t> nodes;
  };
  using Iter = typename std::map<Key, Entry>::iterator;

  void Expire(Key key) {
    auto it = requests_.find(key);
    if (it == requests_.end()) return;
    it->second.timer = EventLoop::kNoTimer;  // it is running
    std::optional<R> r = Take(it);
    on_expire_(*r);
  }

  // Removes a request from the queue, its index entries and its timer.
  std::optional<R> Take(Iter it) {
    Entry e = std::move(it->second);
    requests_.erase(it);
    if (e.timer != EventLoop::kNoTimer) loop_->CancelTimer(e.timer);
    for (size_t i = 0; i < e.r.ids.size(); i++)
      if (!e.r.done[i]) index_.Remove(e.r.ids[i], e.nodes[i]);
    auto s = per_session_.find(e.r.session);
    if (--s->second == 0) per_session_.erase(s);
    return std::optional<R>(std::move(e.r));
  }

  EventLoop* loop_;
  Fn on_complete_, on_expire_;
  Key next_key_ = 1;
  std::map<Key, Entry> requests_;  // ordered: expiry and drop in arrival order
  WaitIndex index_;
  std::unordered_map<uint32_t, uint32_t> per_session_;
};

}  // namespace plasmon
