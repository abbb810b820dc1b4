// The store's side of the shared-memory fast path (issue 12): it publishes
// sealed objects in the shared index (core/shm_index.h), keeps one pin page
// per client that asked for the fast path, and answers the object table's
// questions about pins (PinGate). The protocol is docs/FAST_PATH.md, checked
// by tests/model/fast_path_pins.pml.
//
// Loop thread only, like the table.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/fd.h"
#include "core/shm_index.h"
#include "store/object_table.h"

namespace plasmon {

class FastPath : public PinGate {
 public:
  // An index of about two slots per 4 KiB of `capacity` (at least 4096,
  // at most shm::kMaxSlots): its pages are backed where objects are
  // published, or, with `prefault` (beside a prefaulted arena), all now.
  static Result<std::unique_ptr<FastPath>> Create(uint64_t capacity, bool prefault = false);

  int index_fd() const { return index_.fd(); }
  uint64_t index_bytes() const { return index_.bytes(); }
  bool read_only() const { return index_.sealed_read_only(); }

  // A new pin page for client `sid`; the descriptor to pass it with (the
  // store keeps only the mapping). The page made ahead, if there is one.
  Result<UniqueFd> AddClient(uint32_t sid);
  // The mappings of closed clients' pages are let go later (ReleaseRetired,
  // from a timer of the store, a few at a time): a munmap of a page both
  // sides touched costs a TLB shoot-down (tens to hundreds of us on the
  // project's VMs), which would otherwise delay the next client's request.
  bool has_retired() const { return !retired_.empty(); }
  // Unmaps the oldest `n` (a few per tick: a burst of closes does not stall
  // the loop for all of them at once).
  void ReleaseRetired(size_t n) {
    while (n-- > 0 && !retired_.empty()) retired_.pop_front();
  }
  // Makes the next client's page ahead of its AttachIndex, if none is ready:
  // called once an AttachIndex is answered, so that the five system calls
  // of a new page are not on the next client's path. Never given to two clients.
  void PrepareNextPage();
  // The client's connection closed. If the client closed it (or died), its
  // pins end with it, as its references do. If the store closed it while
  // the client may live (`revoke`), no new pin of it validates, and the
  // pins standing are honoured until the client clears them or its process
  // `pid` exits (Reap).
  void DropClient(uint32_t sid, pid_t pid, bool revoke);
  // Pages of revoked clients still holding pins.
  bool has_revoked() const { return !revoked_.empty(); }
  // Forgets revoked pages whose pins are gone or whose process exited.
  // Whether any was forgotten.
  bool Reap();

  // Counted by the clients in their pages (and kept for those gone).
  uint64_t gets() const;
  uint64_t contains() const;

  // PinGate
  void Publish(ObjectEntry* e) override;
  void Hide(ObjectEntry* e) override;
  void Unhide(ObjectEntry* e) override;
  bool Pinned(const ObjectEntry& e) override;
  void Unpublish(ObjectEntry* e) override;
  void Collect(std::vector<ObjectEntry*>* pinned, std::vector<ObjectEntry*>* used) override;

 private:
  explicit FastPath(shm::IndexWriter index)
      : index_(std::move(index)), by_slot_(index_.slot_count(), nullptr) {}
  // The entry a client's token names, if it still names one.
  ObjectEntry* Named(uint64_t token) const;
  template <typename Fn>
  void ForEachPage(Fn&& fn) {
    for (auto& [sid, page] : pages_) fn(page);
    for (Revoked& r : revoked_) fn(r.page);
  }

  struct Revoked {
    shm::PinPageStore page;
    UniqueFd pidfd;  // readable once the process exited; invalid: unknown
  };
  shm::IndexWriter index_;
  std::vector<ObjectEntry*> by_slot_;  // what each published slot holds
  std::unordered_map<uint32_t, shm::PinPageStore> pages_;
  std::vector<Revoked> revoked_;
  void Retire(shm::PinPageStore page);
  // At most this many retired pages (44 KiB each) wait for ReleaseRetired;
  // past it each close lets the oldest go.
  static constexpr size_t kMaxRetired = 256;
  std::deque<shm::PinPageStore> retired_;
  std::optional<shm::PinPageStore> next_page_;  // fresh: no client has seen it
  uint64_t gone_gets_ = 0, gone_contains_ = 0;
};

}  // namespace plasmon
