// The fast path's pieces together in one process: the real object table,
// the store's FastPath (index writer, pin pages) and the client's side of the
// same shared memory (IndexReader, PinPageClient), mapped from the same
// descriptors. What a client does is spelled out here as client.cc does it:
// look up, pin, revalidate; unpin, look.
#include "store/fast_path.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "store/object_table.h"

namespace plasmon {
namespace {

struct NoListener : TableListener {
  void OnSealed(const ObjectEntry&) override {}
  void OnRemoved(const ObjectEntry&, Notification::Kind) override {}
};

// A client of the shared memory, as client/client.cc uses it.
class ShmClient {
 public:
  ShmClient(FastPath* fp, uint32_t sid) {
    Result<UniqueFd> fd = fp->AddClient(sid);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    Result<std::unique_ptr<shm::PinPageClient>> p = shm::PinPageClient::Open(fd->get());
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    pins_ = std::move(*p);
    Result<Mapping> m = Mapping::Map(fp->index_fd(), fp->index_bytes(), /*writable=*/false);
    EXPECT_TRUE(m.ok());
    Result<shm::IndexReader> r = shm::IndexReader::Open(std::move(*m), fp->index_fd());
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    index_ = std::make_unique<shm::IndexReader>(std::move(*r));
  }

  struct Pin {
    int k = -1;
    uint64_t slot = 0, gen = 0, offset = 0, size = 0;
  };
  // A fast get: nullopt where the client would ask the store.
  std::optional<Pin> Get(const ObjectID& id) {
    std::optional<shm::Found> f = index_->Lookup(id);
    if (!f || shm::WordState(f->word) != shm::kSealed) return std::nullopt;
    Pin p{pins_->Acquire(), f->slot, shm::WordGen(f->word), f->offset, f->data_size};
    if (p.k < 0) return std::nullopt;
    const uint64_t token = shm::PinToken(p.slot, p.gen);
    if (!pins_->Pin(p.k, token) || index_->Word(p.slot) != f->word) {
      Release(p);
      return std::nullopt;
    }
    pins_->RecordGet(token);
    return p;
  }
  // Unpin; whether the client would nudge the store.
  bool Release(const Pin& p) {
    pins_->Unpin(p.k);
    uint64_t w = index_->Word(p.slot);
    return !(shm::WordGen(w) == p.gen && shm::WordState(w) == shm::kSealed);
  }
  shm::IndexReader& index() { return *index_; }

 private:
  std::unique_ptr<shm::PinPageClient> pins_;
  std::unique_ptr<shm::IndexReader> index_;
};

class FastPathTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kCapacity = 64 * 1024;
  FastPathTest() : memory_(kCapacity), table_(memory_.data(), kCapacity, &listener_) {
    Result<std::unique_ptr<FastPath>> fp = FastPath::Create(kCapacity);
    EXPECT_TRUE(fp.ok()) << fp.status().ToString();
    fp_ = std::move(*fp);
    table_.SetPinGate(fp_.get());
  }
  ObjectID Put(uint64_t size, char fill, uint32_t client = 1) {
    ObjectID id = ObjectID::Random();
    auto e = table_.Create(id, size, 0, client);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    std::memset(memory_.data() + (*e)->offset, fill, size);
    EXPECT_TRUE(table_.Seal(id, client).ok());
    return id;
  }

  std::vector<uint8_t> memory_;
  NoListener listener_;
  ObjectTable table_;
  std::unique_ptr<FastPath> fp_;
};

TEST_F(FastPathTest, ASealedObjectIsFoundWhereTheTablePutIt) {
  ShmClient c(fp_.get(), 2);
  ObjectID id = Put(1000, 'a');
  std::optional<ShmClient::Pin> p = c.Get(id);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->offset, table_.Find(id)->offset);
  EXPECT_EQ(p->size, 1000u);
  EXPECT_EQ(memory_[p->offset + 999], 'a');
  EXPECT_FALSE(c.Release(*p));  // still sealed: no nudge
  EXPECT_FALSE(c.Get(ObjectID::Random()).has_value());
  EXPECT_FALSE(c.index().unpublished());  // so that miss is final
  // Not sealed yet: not in the index.
  ObjectID open = ObjectID::Random();
  ASSERT_TRUE(table_.Create(open, 10, 0, 1).ok());
  EXPECT_FALSE(c.index().Lookup(open).has_value());
}

TEST_F(FastPathTest, PagesMadeAheadAreEachOneClientsAndAClosedClientsPinsEndAtOnce) {
  ObjectID id = Put(1000, 'p');
  fp_->PrepareNextPage();
  auto a = std::make_unique<ShmClient>(fp_.get(), 2);  // takes the page made ahead
  fp_->PrepareNextPage();
  ShmClient b(fp_.get(), 3);
  std::optional<ShmClient::Pin> pa = a->Get(id);
  ASSERT_TRUE(pa.has_value());
  // b's page is not a's: b pinning and unpinning leaves a's pin standing.
  std::optional<ShmClient::Pin> pb = b.Get(id);
  ASSERT_TRUE(pb.has_value());
  b.Release(*pb);
  EXPECT_EQ(table_.Delete(id), StatusCode::kObjectInUse);
  // a's connection closes (its page only retired, not unmapped yet): its pin
  // ends with it, as its references would.
  fp_->DropClient(2, 0, /*revoke=*/false);
  EXPECT_TRUE(fp_->has_retired());
  table_.SyncPins();
  EXPECT_EQ(table_.Find(id), nullptr);
  fp_->ReleaseRetired(16);
  EXPECT_FALSE(fp_->has_retired());
  a.reset();  // the client's own mapping goes last, as a slow process's would
}

TEST_F(FastPathTest, APinHoldsADeletedObjectUntilReleasedAndTheClientIsToldToSaySo) {
  ShmClient c(fp_.get(), 2);
  ObjectID id = Put(4096, 'b');
  std::optional<ShmClient::Pin> p = c.Get(id);
  ASSERT_TRUE(p.has_value());
  const uint64_t used = table_.Stats().used;
  EXPECT_EQ(table_.Delete(id), StatusCode::kObjectInUse);  // the scan saw the pin
  EXPECT_EQ(table_.Stats().used, used);                    // nothing freed
  EXPECT_FALSE(c.Get(id).has_value());  // going: no new pin validates
  EXPECT_EQ(memory_[p->offset + 4095], 'b');
  EXPECT_TRUE(c.Release(*p));  // going: the client nudges
  table_.SyncPins();           // what the nudge makes the store do
  EXPECT_EQ(table_.Find(id), nullptr);
  EXPECT_LT(table_.Stats().used, used);
}

TEST_F(FastPathTest, EvictionPassesOverPinnedObjectsAndTakesThemWhenReleased) {
  ShmClient c(fp_.get(), 2);
  ObjectID held = Put(16 * 1024, 'h');
  ObjectID other = Put(16 * 1024, 'o');
  std::optional<ShmClient::Pin> p = c.Get(held);
  ASSERT_TRUE(p.has_value());
  // Needs 32 KiB of the 32 KiB free: one of the two must go, the oldest
  // (held) is pinned.
  ObjectID big = ObjectID::Random();
  ASSERT_TRUE(table_.Create(big, 40 * 1024, 0, 1).ok());
  EXPECT_NE(table_.Find(held), nullptr);
  EXPECT_EQ(table_.Find(other), nullptr);
  EXPECT_EQ(memory_[p->offset], 'h');
  std::optional<ShmClient::Pin> again = c.Get(held);  // still visible, still pinnable
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(c.Release(*again));
  EXPECT_FALSE(c.Release(*p));
  ASSERT_TRUE(table_.Abort(big, 1).ok());
  // Released: evictable again.
  ASSERT_TRUE(table_.Create(ObjectID::Random(), 60 * 1024, 0, 1).ok());
  EXPECT_EQ(table_.Find(held), nullptr);
}

TEST_F(FastPathTest, PinnedBytesAreNotPlannedAsRoomAndACreateThatNeedsThemFailsCleanly) {
  ShmClient c(fp_.get(), 2);
  ObjectID held = Put(48 * 1024, 'h');
  std::optional<ShmClient::Pin> p = c.Get(held);
  ASSERT_TRUE(p.has_value());
  auto e = table_.Create(ObjectID::Random(), 32 * 1024, 0, 1);
  EXPECT_TRUE(e.status().IsOutOfMemory()) << e.status().ToString();
  EXPECT_NE(table_.Find(held), nullptr);
  EXPECT_EQ(memory_[p->offset + 100], 'h');
  c.Release(*p);
}

TEST_F(FastPathTest, AReusedSlotGetsANewGenerationSoAnOldPinNeverValidates) {
  ShmClient c(fp_.get(), 2);
  ObjectID id = Put(100, 'x');
  std::optional<shm::Found> before = c.index().Lookup(id);
  ASSERT_TRUE(before.has_value());
  ASSERT_EQ(table_.Delete(id), StatusCode::kOk);
  EXPECT_FALSE(c.index().Lookup(id).has_value());
  // The same ID again lands in the same home slot, one generation on.
  ObjectID again = id;
  ASSERT_TRUE(table_.Create(again, 100, 0, 1).ok());
  ASSERT_TRUE(table_.Seal(again, 1).ok());
  std::optional<shm::Found> after = c.index().Lookup(id);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->slot, before->slot);
  EXPECT_EQ(shm::WordGen(after->word), shm::WordGen(before->word) + 1);
  // A client that read the old word and pins now fails its revalidation.
  EXPECT_NE(c.index().Word(before->slot), before->word);
}

TEST_F(FastPathTest, PinsCountAsReferencesInListAndADroppedClientsPinsEnd) {
  ShmClient c(fp_.get(), 2);
  ObjectID id = Put(100, 'r');
  std::optional<ShmClient::Pin> p1 = c.Get(id), p2 = c.Get(id);
  ASSERT_TRUE(p1 && p2);
  table_.SyncPins();
  bool more = false;
  std::vector<ObjectInfo> rows = table_.List(false, ObjectID(), 10, &more);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].ref_count, 2u);
  EXPECT_EQ(table_.Delete(id), StatusCode::kObjectInUse);
  // The client dies holding both: its page goes, the object with it.
  fp_->DropClient(2, 0, /*revoke=*/false);
  table_.SyncPins();
  EXPECT_EQ(table_.Find(id), nullptr);
}

TEST_F(FastPathTest, ARevokedClientsStandingPinsAreHonouredAndNewOnesRefused) {
  ShmClient c(fp_.get(), 2);
  ObjectID id = Put(100, 'v'), other = Put(100, 'w');
  std::optional<ShmClient::Pin> p = c.Get(id);
  ASSERT_TRUE(p.has_value());
  fp_->DropClient(2, 0, /*revoke=*/true);  // the store closed it; it may live on
  EXPECT_TRUE(fp_->has_revoked());
  EXPECT_FALSE(c.Get(other).has_value());  // revoked: the pin does not validate
  EXPECT_EQ(table_.Delete(id), StatusCode::kObjectInUse);  // its old pin still counts
  EXPECT_FALSE(fp_->Reap());               // it still holds it
  c.Release(*p);
  EXPECT_TRUE(fp_->Reap());
  table_.SyncPins();
  EXPECT_EQ(table_.Find(id), nullptr);
}

TEST_F(FastPathTest, FastGetsCountAsAccessesForTheLru) {
  ShmClient c(fp_.get(), 2);
  ObjectID old_one = Put(16 * 1024, 'a');
  ObjectID young = Put(16 * 1024, 'b');
  std::optional<ShmClient::Pin> p = c.Get(old_one);  // used: now the younger
  ASSERT_TRUE(p.has_value());
  c.Release(*p);
  ASSERT_TRUE(table_.Create(ObjectID::Random(), 40 * 1024, 0, 1).ok());  // one must go
  EXPECT_NE(table_.Find(old_one), nullptr);
  EXPECT_EQ(table_.Find(young), nullptr);
}

TEST_F(FastPathTest, TheIndexCannotBeMappedWritableOrResized) {
  if (!fp_->read_only()) GTEST_SKIP() << "kernel without F_SEAL_FUTURE_WRITE";
  void* w = ::mmap(nullptr, fp_->index_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fp_->index_fd(), 0);
  EXPECT_EQ(w, MAP_FAILED);
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::ftruncate(fp_->index_fd(), 0), 0);
  // A pin page can be written (it is the client's) but not shrunk under the store.
  Result<UniqueFd> page = fp_->AddClient(9);
  ASSERT_TRUE(page.ok());
  EXPECT_NE(::ftruncate(page->get(), 0), 0);
}

TEST_F(FastPathTest, ATokenFromAClientIsCheckedNotTrusted) {
  // Pins naming slots that hold nothing, or a wrong generation, or beyond
  // the index, keep nothing and name nothing.
  Result<UniqueFd> fd = fp_->AddClient(3);
  ASSERT_TRUE(fd.ok());
  void* m = ::mmap(nullptr, shm::kPinPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
  ASSERT_NE(m, MAP_FAILED);
  ObjectID id = Put(100, 'q');
  const ObjectEntry* e = table_.Find(id);
  auto* header = static_cast<shm::PinHeader*>(m);
  auto* pins = reinterpret_cast<std::atomic<uint64_t>*>(static_cast<uint8_t*>(m) + shm::kPinsOffset);
  header->high_water.store(~uint64_t{0});  // lies: the store reads at most the page
  pins[0].store(shm::PinToken(static_cast<uint64_t>(e->index_slot), e->index_gen + 7));
  pins[1].store(~uint64_t{0});
  pins[2].store(shm::PinToken(shm::kMaxSlots - 1, 1));
  header->ring_head.store(~uint64_t{0} - 3);
  EXPECT_EQ(table_.Delete(id), StatusCode::kOk);  // no pin of that generation
  table_.SyncPins();
  EXPECT_EQ(table_.pin_held_count(), 0u);
  ::munmap(m, shm::kPinPageBytes);
}

TEST_F(FastPathTest, AnObjectWhoseProbeWindowIsFullIsServedBySocketAndMissesAreNotFinal) {
  // Fill an index far beyond its probe windows: some objects cannot be
  // published, and the header says so for as long as they are visible.
  std::vector<uint8_t> big(64u << 20);
  ObjectTable table(big.data(), big.size(), &listener_);
  Result<std::unique_ptr<FastPath>> fp = FastPath::Create(1);  // 4096 slots
  ASSERT_TRUE(fp.ok());
  table.SetPinGate(fp->get());
  ShmClient c(fp->get(), 2);
  std::vector<ObjectID> ids;
  size_t unpublished = 0;
  for (int i = 0; i < 6000; i++) {
    ids.push_back(ObjectID::Random());
    ASSERT_TRUE(table.Create(ids.back(), 64, 0, 1).ok());
    ASSERT_TRUE(table.Seal(ids.back(), 1).ok());
    if (table.Find(ids.back())->index_slot < 0) unpublished++;
  }
  ASSERT_GT(unpublished, 0u);
  EXPECT_TRUE(c.index().unpublished());
  for (const ObjectID& id : ids)
    if (table.Find(id)->index_slot < 0) {
      ASSERT_EQ(table.Delete(id), StatusCode::kOk);
    }
  EXPECT_FALSE(c.index().unpublished());
  size_t found = 0;
  for (const ObjectID& id : ids) found += c.index().Lookup(id).has_value() ? 1 : 0;
  EXPECT_EQ(found, ids.size() - unpublished);
}

}  // namespace
}  // namespace plasmon

namespace plasmon {
namespace {

class LeaseTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kCapacity = 64 * 1024;
  LeaseTest() : memory_(kCapacity), table_(memory_.data(), kCapacity, &listener_) {}
  std::vector<uint8_t> memory_;
  NoListener listener_;
  ObjectTable table_;
};

TEST_F(LeaseTest, ObjectsPlacedInALeaseNeverShareAByteAndTheRestGoesBack) {
  Result<uint64_t> at = table_.Lease(2, 4096);
  ASSERT_TRUE(at.ok()) << at.status().ToString();
  EXPECT_EQ(table_.Stats().used, 4096u);
  ObjectID a = ObjectID::Random(), b = ObjectID::Random(), c = ObjectID::Random();
  // Out of order is fine; overlapping, misaligned, outside or too long is not.
  ASSERT_TRUE(table_.CreateLeased(b, *at + 1024, 100, 0, 2).ok());
  ASSERT_TRUE(table_.CreateLeased(a, *at, 1000, 24, 2).ok());
  EXPECT_TRUE(table_.CreateLeased(c, *at + 1024, 10, 0, 2).status().IsInvalidArgument());
  EXPECT_TRUE(table_.CreateLeased(c, *at + 1000, 10, 0, 2).status().IsInvalidArgument());
  EXPECT_TRUE(table_.CreateLeased(c, *at + 1056, 1, 0, 2).status().IsInvalidArgument());  // misaligned
  EXPECT_TRUE(table_.CreateLeased(c, *at + 4096, 10, 0, 2).status().IsInvalidArgument());
  EXPECT_TRUE(table_.CreateLeased(c, *at + 3072, 2000, 0, 2).status().IsInvalidArgument());
  EXPECT_TRUE(table_.CreateLeased(c, *at + 3072, UINT64_MAX, 1, 2).status().IsInvalidArgument());
  EXPECT_TRUE(table_.CreateLeased(c, *at + 3008, 10, 0, 3).status().IsInvalidArgument());  // not its lease
  EXPECT_TRUE(table_.CreateLeased(a, *at + 3008, 10, 0, 2).status().IsObjectExists());
  ASSERT_TRUE(table_.Seal(a, 2).ok());
  ASSERT_TRUE(table_.Seal(b, 2).ok());
  EXPECT_EQ(table_.Stats().used, 4096u);  // the lease's bytes, now partly objects
  table_.EndLease(2);
  EXPECT_EQ(table_.Stats().used, 1024u + 128u);  // a and b only
  EXPECT_EQ(table_.Delete(a), StatusCode::kOk);
  EXPECT_EQ(table_.Delete(b), StatusCode::kOk);
  EXPECT_EQ(table_.Stats().used, 0u);
  EXPECT_EQ(table_.allocator().free_ranges(), 1u);  // all of it one range again
}

TEST_F(LeaseTest, ALeaseEvictsForRoomAndAQuotaOrAFullStoreRefusesIt) {
  ObjectID old_one = ObjectID::Random();
  ASSERT_TRUE(table_.Create(old_one, 60 * 1024, 0, 1).ok());
  ASSERT_TRUE(table_.Seal(old_one, 1).ok());
  ASSERT_TRUE(table_.Lease(2, 16 * 1024).ok());  // evicts
  EXPECT_EQ(table_.Find(old_one), nullptr);
  EXPECT_TRUE(table_.Lease(3, 64 * 1024).status().IsOutOfMemory());
  ASSERT_TRUE(table_.SetQuota(4, 8 * 1024).ok());
  EXPECT_TRUE(table_.Lease(4, 1024).status().IsInvalidArgument());
  table_.DropClient(2);  // its lease goes with it
  EXPECT_EQ(table_.Stats().used, 0u);
}

}  // namespace
}  // namespace plasmon

namespace plasmon {
namespace {

TEST_F(FastPathTest, ADeletedObjectGoesAtItsLastReleaseWhenAPinSeenEarlierWasClearedSilently) {
  ShmClient c(fp_.get(), 2);
  ObjectID id = Put(100, 's');
  std::optional<ShmClient::Pin> p = c.Get(id);
  ASSERT_TRUE(p.has_value());
  table_.SyncPins();                   // a List, say: the pin is seen
  EXPECT_FALSE(c.Release(*p));         // cleared while sealed: no nudge
  ObjectEntry* e = table_.Find(id);
  table_.AddRef(e);                    // a socket reference
  EXPECT_EQ(table_.Delete(id), StatusCode::kObjectInUse);
  table_.Release(e);                   // the last reference: nothing holds it now
  EXPECT_EQ(table_.Find(id), nullptr);
}

// Pages of the index (the memfd clients map) resident in the page cache.
uint64_t ResidentIndexPages(const FastPath& fp, uint64_t* total) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t bytes = static_cast<uint64_t>(::lseek(fp.index_fd(), 0, SEEK_END));
  void* m = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fp.index_fd(), 0);
  EXPECT_NE(m, MAP_FAILED);
  std::vector<unsigned char> in((bytes + page - 1) / page);
  EXPECT_EQ(::mincore(m, bytes, in.data()), 0);
  ::munmap(m, bytes);
  *total = in.size();
  uint64_t n = 0;
  for (unsigned char c : in) n += c & 1;
  return n;
}

TEST(FastPathIndexTest, ItsPagesAreBackedAsObjectsArePublishedOrAllAtOnceBesideAPrefaultedArena) {
  constexpr uint64_t kArena = 64ull << 20;  // 32768 slots: a 2 MiB index
  uint64_t total = 0;
  Result<std::unique_ptr<FastPath>> lazy = FastPath::Create(kArena);
  ASSERT_TRUE(lazy.ok()) << lazy.status().ToString();
  const uint64_t lazy_resident = ResidentIndexPages(**lazy, &total);
  EXPECT_GE(total, 512u);
  EXPECT_LE(lazy_resident, 2u);  // the header, nothing else
  Result<std::unique_ptr<FastPath>> eager = FastPath::Create(kArena, /*prefault=*/true);
  ASSERT_TRUE(eager.ok()) << eager.status().ToString();
  EXPECT_EQ(ResidentIndexPages(**eager, &total), total);  // a Publish faults nothing in
}

}  // namespace
}  // namespace plasmon
