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
//
// Loop thread only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/event_loop.h"
#include "plasmon/object_id.h"

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

template <typename R>
class WaitQueue {
  static_assert(std::is_base_of_v<WaitingRequest, R>);

 public:
  using Key = uint64_t;
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
    Entry& e = requests_.emplace(key, Entry{std::move(r), EventLoop::kNoTimer}).first->second;
    for (const ObjectID& id : e.r.Unsettled()) by_id_[id].push_back(key);
    if (deadline_us >= 0) e.timer = loop_->AddTimer(deadline_us, [this, key] { Expire(key); });
    per_session_[e.r.session]++;
    return key;
  }

  // For each request waiting on `id` and each of its unsettled slots naming
  // `id`: `settle(request, slot)` returns whether that slot is now settled.
  // Requests left with no unsettled slot complete.
  template <typename SettleFn>
  void Resolve(const ObjectID& id, SettleFn settle) {
    auto w = by_id_.find(id);
    if (w == by_id_.end()) return;
    std::vector<Key> keys = w->second;  // the callbacks may change the index
    for (Key key : keys) {
      auto it = requests_.find(key);
      if (it == requests_.end()) continue;
      R& r = it->second.r;
      bool still_waiting = false;
      for (size_t i = 0; i < r.ids.size(); i++) {
        if (r.done[i] || r.ids[i] != id) continue;
        if (settle(r, i))
          r.Settle(i);
        else
          still_waiting = true;
      }
      if (!still_waiting) Unindex(id, key);
      if (r.remaining == 0) {
        std::optional<R> done = Take(it);
        on_complete_(*done);
      }
    }
  }

  // Whether any request waits on `id`.
  bool Waiting(const ObjectID& id) const { return by_id_.count(id) > 0; }
  // Requests queued for `session`.
  uint32_t CountFor(uint32_t session) const {
    auto it = per_session_.find(session);
    return it == per_session_.end() ? 0 : it->second;
  }
  size_t size() const { return requests_.size(); }

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
  };
  using Iter = typename std::map<Key, Entry>::iterator;

  void Expire(Key key) {
    auto it = requests_.find(key);
    if (it == requests_.end()) return;
    it->second.timer = EventLoop::kNoTimer;  // it is running
    std::optional<R> r = Take(it);
    on_expire_(*r);
  }

  void Unindex(const ObjectID& id, Key key) {
    auto w = by_id_.find(id);
    if (w == by_id_.end()) return;
    std::erase(w->second, key);
    if (w->second.empty()) by_id_.erase(w);
  }

  // Removes a request from the queue, its index entries and its timer.
  std::optional<R> Take(Iter it) {
    Key key = it->first;
    Entry e = std::move(it->second);
    requests_.erase(it);
    if (e.timer != EventLoop::kNoTimer) loop_->CancelTimer(e.timer);
    for (const ObjectID& id : e.r.Unsettled()) Unindex(id, key);
    auto s = per_session_.find(e.r.session);
    if (--s->second == 0) per_session_.erase(s);
    return std::optional<R>(std::move(e.r));
  }

  EventLoop* loop_;
  Fn on_complete_, on_expire_;
  Key next_key_ = 1;
  std::map<Key, Entry> requests_;  // ordered: expiry and drop in arrival order
  std::unordered_map<ObjectID, std::vector<Key>, ObjectIDHash> by_id_;
  std::unordered_map<uint32_t, uint32_t> per_session_;
};

}  // namespace plasmon
