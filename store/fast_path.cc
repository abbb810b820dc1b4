#include "store/fast_path.h"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>

namespace plasmon {

Result<std::unique_ptr<FastPath>> FastPath::Create(uint64_t capacity, bool prefault) {
  // Two slots per 4 KiB object the arena could hold keeps probe windows
  // short (64 bytes of index per 2 KiB of arena, 1/32); the memfd's pages
  // are backed as slots are used, or all now beside a prefaulted arena.
  uint64_t slots = std::clamp<uint64_t>(capacity / 4096 * 2, 4096, shm::kMaxSlots);
  Result<shm::IndexWriter> index = shm::IndexWriter::Create(slots);
  if (!index.ok()) return index.status();
  if (prefault) index->Prefault();
  if (!index->sealed_read_only())
    spdlog::warn("this kernel cannot seal the shared index read-only (F_SEAL_FUTURE_WRITE, Linux "
                 "5.1): clients map it read-only by choice only");
  return std::unique_ptr<FastPath>(new FastPath(std::move(*index)));
}

Result<UniqueFd> FastPath::AddClient(uint32_t sid) {
  if (pages_.count(sid) != 0) return Status::InvalidArgument("this client has a pin page already");
  std::optional<shm::PinPageStore> page = std::move(next_page_);
  next_page_.reset();
  if (!page) {
    Result<shm::PinPageStore> made = shm::PinPageStore::Create();
    if (!made.ok()) return made.status();
    page.emplace(std::move(*made));
  }
  UniqueFd fd = page->TakeFd();
  pages_.emplace(sid, std::move(*page));
  return fd;
}

void FastPath::Retire(shm::PinPageStore page) {
  retired_.push_back(std::move(page));
  if (retired_.size() > kMaxRetired) retired_.pop_front();  // one munmap per close, as without
}

void FastPath::PrepareNextPage() {
  if (next_page_) return;
  Result<shm::PinPageStore> made = shm::PinPageStore::Create();
  if (made.ok()) next_page_.emplace(std::move(*made));  // else made at the Connect, or refused there
}

void FastPath::DropClient(uint32_t sid, pid_t pid, bool revoke) {
  auto it = pages_.find(sid);
  if (it == pages_.end()) return;
  shm::PinPageStore page = std::move(it->second);
  pages_.erase(it);
  gone_gets_ += page.gets();
  gone_contains_ += page.contains();
  if (!revoke) {
    Retire(std::move(page));
    return;
  }
  // Revoked (seq_cst) before the scan: a pin published after the scan
  // cannot validate (the client loads `revoked` after its pin).
  page.Revoke();
  bool any = false;
  page.ScanPins([&](uint64_t) { any = true; });
  if (!any) return;
  Revoked r{std::move(page), UniqueFd()};
  if (pid > 0) r.pidfd.Reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  spdlog::info("client {} (pid {}) was disconnected by the store while holding pins: they are "
               "honoured until it clears them or exits",
               sid, pid);
  revoked_.push_back(std::move(r));
}

bool FastPath::Reap() {
  size_t before = revoked_.size();
  std::erase_if(revoked_, [](Revoked& r) {
    bool any = false;
    r.page.ScanPins([&](uint64_t) { any = true; });
    if (!any) return true;
    if (!r.pidfd.valid()) return false;
    pollfd pfd{r.pidfd.get(), POLLIN, 0};
    return ::poll(&pfd, 1, 0) > 0;  // the process exited: nothing of it reads any more
  });
  return revoked_.size() != before;
}

uint64_t FastPath::gets() const {
  uint64_t n = gone_gets_;
  for (const auto& [sid, page] : pages_) n += page.gets();
  return n;
}

uint64_t FastPath::contains() const {
  uint64_t n = gone_contains_;
  for (const auto& [sid, page] : pages_) n += page.contains();
  return n;
}

void FastPath::Publish(ObjectEntry* e) {
  std::optional<shm::IndexWriter::Place> at =
      index_.Publish(e->id, e->offset, e->data_size, e->metadata_size);
  if (!at) {
    e->index_unpublished = true;  // counted in the header: misses are not final
    return;
  }
  e->index_slot = static_cast<int64_t>(at->slot);
  e->index_gen = at->gen;
  by_slot_[at->slot] = e;
}

void FastPath::Hide(ObjectEntry* e) {
  if (e->index_slot >= 0) {
    index_.Hide({static_cast<uint64_t>(e->index_slot), e->index_gen});
  } else if (e->index_unpublished) {
    index_.Forget();
    e->index_unpublished = false;
  }
}

void FastPath::Unhide(ObjectEntry* e) {
  if (e->index_slot >= 0) index_.Unhide({static_cast<uint64_t>(e->index_slot), e->index_gen});
}

bool FastPath::Pinned(const ObjectEntry& e) {
  if (e.index_slot < 0) return false;  // never published: no client could pin it
  const uint64_t want = shm::PinToken(static_cast<uint64_t>(e.index_slot), e.index_gen);
  bool found = false;
  ForEachPage([&](const shm::PinPageStore& page) {
    if (!found) page.ScanPins([&](uint64_t t) { found = found || t == want; });
  });
  return found;
}

void FastPath::Unpublish(ObjectEntry* e) {
  if (e->index_slot >= 0) {
    index_.Free({static_cast<uint64_t>(e->index_slot), e->index_gen});
    by_slot_[static_cast<uint64_t>(e->index_slot)] = nullptr;
    e->index_slot = -1;
  } else if (e->index_unpublished) {
    index_.Forget();
    e->index_unpublished = false;
  }
}

ObjectEntry* FastPath::Named(uint64_t token) const {
  // A client's word: any slot, any generation. Only a live slot of that
  // generation names anything.
  const uint64_t slot = shm::TokenSlot(token);
  if (token == 0 || slot >= by_slot_.size()) return nullptr;
  ObjectEntry* e = by_slot_[slot];
  if (e == nullptr || (e->index_gen & shm::kGenMask) != shm::TokenGen(token)) return nullptr;
  return e;
}

void FastPath::Collect(std::vector<ObjectEntry*>* pinned, std::vector<ObjectEntry*>* used) {
  ForEachPage([&](const shm::PinPageStore& page) {
    page.ScanPins([&](uint64_t t) {
      if (ObjectEntry* e = Named(t)) pinned->push_back(e);
    });
  });
  for (auto& [sid, page] : pages_)
    page.DrainRing([&](uint64_t t) {
      if (ObjectEntry* e = Named(t)) used->push_back(e);
    });
}

}  // namespace plasmon
