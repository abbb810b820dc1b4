// plasmon-soak: a fault soak of one store (issue "Hardening").
//
// It builds its own small cluster in a temporary directory: a redis-server on
// a Unix socket, store A (the one checked) and store B (a peer A fetches
// from), both serving over TCP on 127.0.0.1 with a shared secret. Client
// processes (this binary again, --role client) run random operations on A; a
// feeder process (--role feeder) keeps putting objects into B. Meanwhile the
// controller SIGKILLs clients (and starts others), kills and restarts B, and
// kills and restarts Redis. Store A is never touched. At the end, with every
// client stopped, it checks that A is alive, leaked no byte, holds no unsealed
// or corrupt object, and lost no object it did not announce as deleted or
// evicted (the controller subscribes to A's notifications from the start).
// The clients use A's shared index (the fast path of issue 12, on by
// default): most gets of sealed objects, their releases and Contains never
// reach A, and are checked byte for byte like every other; the summary
// counts them (shm_gets), and a run with none fails.
// Exit status: 0 if every check holds, 1 if one does not, 2 if the world
// could not be set up.
//
// An object's size and content follow from its ID alone (see MakeId), so
// anyone can verify any object without a record of it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/allocator.h"
#include "core/size.h"
#include "plasmon/client.h"
#include "tools/cluster/services.h"

namespace plasmon::soak {
namespace {

using Clock = std::chrono::steady_clock;

// ---- Objects whose content follows from their ID ----
//
// bytes 0-2    "sk\x01": a soak object
// byte  3      origin: 'c' created in A by a client, 'b' put in B by the
//              feeder, 'm' the controller's marker, 'n' a probe never created
// bytes 4-7    data size, little-endian
// bytes 8-9    metadata size, little-endian
// bytes 10-19  random
constexpr uint64_t kMaxSize = 4u << 20;

uint64_t SplitMix(uint64_t* s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

ObjectID MakeId(char origin, uint32_t size, uint16_t meta_size, uint64_t r1, uint64_t r2) {
  ObjectID id;
  uint8_t* p = id.mutable_data();
  p[0] = 's';
  p[1] = 'k';
  p[2] = 1;
  p[3] = static_cast<uint8_t>(origin);
  for (int i = 0; i < 4; i++) p[4 + i] = static_cast<uint8_t>(size >> (8 * i));
  for (int i = 0; i < 2; i++) p[8 + i] = static_cast<uint8_t>(meta_size >> (8 * i));
  for (int i = 0; i < 8; i++) p[10 + i] = static_cast<uint8_t>(r1 >> (8 * i));
  for (int i = 0; i < 2; i++) p[18 + i] = static_cast<uint8_t>(r2 >> (8 * i));
  return id;
}

// The origin, data size and metadata size an ID implies; false if it is not
// a soak ID.
bool ParseId(const ObjectID& id, char* origin, uint64_t* size, uint64_t* meta_size) {
  const uint8_t* p = id.data();
  if (p[0] != 's' || p[1] != 'k' || p[2] != 1) return false;
  *origin = static_cast<char>(p[3]);
  *size = 0;
  *meta_size = 0;
  for (int i = 0; i < 4; i++) *size |= uint64_t{p[4 + i]} << (8 * i);
  for (int i = 0; i < 2; i++) *meta_size |= uint64_t{p[8 + i]} << (8 * i);
  return true;
}

char Origin(const ObjectID& id) {
  char o;
  uint64_t s, m;
  return ParseId(id, &o, &s, &m) ? o : '?';
}

uint64_t ContentSeed(const ObjectID& id, bool metadata) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (size_t i = 0; i < ObjectID::kSize; i++) h = (h ^ id.data()[i]) * 0x100000001b3ull;
  return metadata ? h ^ 0x6d65746164617461ull : h;
}

void Fill(uint64_t seed, uint8_t* p, uint64_t n) {
  uint64_t s = seed;
  for (uint64_t i = 0; i < n; i += 8) {
    uint64_t v = SplitMix(&s);
    std::memcpy(p + i, &v, std::min<uint64_t>(8, n - i));
  }
}

// The offset of the first byte that differs from Fill(seed, ..., n), or n.
uint64_t FirstMismatch(uint64_t seed, const uint8_t* p, uint64_t n) {
  uint64_t s = seed;
  for (uint64_t i = 0; i < n; i += 8) {
    uint64_t v = SplitMix(&s);
    uint64_t len = std::min<uint64_t>(8, n - i);
    if (std::memcmp(p + i, &v, len) != 0) {
      for (uint64_t j = 0; j < len; j++)
        if (p[i + j] != reinterpret_cast<const uint8_t*>(&v)[j]) return i + j;
    }
  }
  return n;
}

std::string Content(const ObjectID& id, uint64_t n, bool metadata) {
  std::string s(n, '\0');
  Fill(ContentSeed(id, metadata), reinterpret_cast<uint8_t*>(s.data()), n);
  return s;
}

// Why these bytes are not the object `id` implies; empty if they are.
std::string Verify(const ObjectID& id, const uint8_t* data, uint64_t size, const uint8_t* meta,
                   uint64_t meta_size) {
  char origin;
  uint64_t want_size, want_meta;
  if (!ParseId(id, &origin, &want_size, &want_meta)) return "not a soak ID";
  if (size != want_size || meta_size != want_meta) {
    return "sizes " + std::to_string(size) + "+" + std::to_string(meta_size) + ", its ID says " +
           std::to_string(want_size) + "+" + std::to_string(want_meta);
  }
  uint64_t bad = FirstMismatch(ContentSeed(id, false), data, size);
  if (bad != size)
    return "data differs from byte " + std::to_string(bad) + " of " + std::to_string(size);
  bad = FirstMismatch(ContentSeed(id, true), meta, meta_size);
  if (bad != meta_size) return "metadata differs from byte " + std::to_string(bad);
  return {};
}

std::string Verify(const ObjectBuffer& b) {
  return Verify(b.id(), b.data(), b.size(), b.metadata(), b.metadata_size());
}

// The n-th object the feeder puts in B: anyone can name it from (seed, n).
ObjectID BId(uint64_t seed, uint64_t n) {
  uint64_t s = seed ^ (n * 0xD6E8FEB86659FD93ull);
  uint64_t r = SplitMix(&s);
  uint32_t size;
  if (r % 10 == 0) {
    size = static_cast<uint32_t>((1u << 20) + SplitMix(&s) % (2u << 20));
  } else {
    uint32_t bits = static_cast<uint32_t>(SplitMix(&s) % 20);
    size = (1u << bits) + static_cast<uint32_t>(SplitMix(&s) % (1u << bits));
  }
  uint16_t meta = static_cast<uint16_t>(SplitMix(&s) % 64);
  return MakeId('b', size, meta, SplitMix(&s), SplitMix(&s));
}

// Creates and seals `id` with the content it implies.
Status Put(Client& c, const ObjectID& id) {
  char origin;
  uint64_t size, meta_size;
  if (!ParseId(id, &origin, &size, &meta_size)) return Status::InvalidArgument("not a soak ID");
  std::string meta = Content(id, meta_size, true);
  if (size + meta_size <= (1u << 20)) return c.CreateAndSeal(id, Content(id, size, false), meta);
  Result<MutableBuffer> b = c.Create(id, size, meta);
  if (!b.ok()) return b.status();
  Fill(ContentSeed(id, false), b->data, size);
  return c.Seal(id);
}

// ---- Counters, in a file each process maps shared (they survive SIGKILL) ----

enum Op : int {
  kOpCreate,
  kOpSeal,
  kOpAbort,
  kOpLeaveUnsealed,
  kOpCreateAndSeal,
  kOpGet,
  kOpGetFetched,
  kOpGetProbe,
  kOpRelease,
  kOpDelete,
  kOpContains,
  kOpFetch,
  kOpGetFetch,
  kOpEvict,
  kOpDeleteB,
  kOpCall,  // a whole call failed (A dropped the client): never expected
  kOpPutB,  // the feeder's puts into B (B is killed under it: not checked)
  kOpCount
};
constexpr const char* kOpNames[kOpCount] = {
    "create",    "seal",      "abort",       "leave-unsealed", "create-and-seal", "get own",
    "get B id",  "get probe", "release",     "delete",         "contains",        "fetch",
    "get+fetch", "evict",     "delete B id", "call",           "put in B"};
constexpr int kCodes = 16;  // StatusCode values; the last slot holds any other

struct Counters {
  uint64_t n[kOpCount][kCodes];
};

int CodeIndex(StatusCode c) { return std::min<int>(static_cast<int>(c), kCodes - 1); }

// Whether `op` may legitimately end with `code` under this soak's faults.
bool Expected(int op, int code) {
  auto is = [code](StatusCode c) { return code == static_cast<int>(c); };
  switch (op) {
    case kOpCreate:
    case kOpCreateAndSeal:
      return is(StatusCode::kOk) || is(StatusCode::kOutOfMemory);
    case kOpGet:
      return is(StatusCode::kOk) || is(StatusCode::kObjectNotFound);  // evicted
    case kOpGetFetched:  // maybe never fetched, or being fetched right now
      return is(StatusCode::kOk) || is(StatusCode::kObjectNotFound) ||
             is(StatusCode::kObjectNotSealed);
    case kOpGetProbe:
      return is(StatusCode::kObjectNotFound);
    case kOpDelete:
      return is(StatusCode::kOk) || is(StatusCode::kObjectInUse) || is(StatusCode::kObjectNotFound);
    case kOpDeleteB:  // also: being fetched right now
      return is(StatusCode::kOk) || is(StatusCode::kObjectInUse) ||
             is(StatusCode::kObjectNotFound) || is(StatusCode::kObjectNotSealed);
    case kOpFetch:
    case kOpGetFetch:  // B or Redis may be down, the object not (yet) re-put, A full
      return is(StatusCode::kOk) || is(StatusCode::kTimeout) || is(StatusCode::kObjectNotFound) ||
             is(StatusCode::kDisconnected) || is(StatusCode::kIOError) ||
             is(StatusCode::kOutOfMemory);
    case kOpCall:
      return false;
    case kOpPutB:
      return true;
    default:
      return is(StatusCode::kOk);
  }
}

Counters* MapCounters(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return nullptr;
  if (::ftruncate(fd, sizeof(Counters)) != 0) {
    ::close(fd);
    return nullptr;
  }
  void* p = ::mmap(nullptr, sizeof(Counters), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  return p == MAP_FAILED ? nullptr : static_cast<Counters*>(p);
}

uint64_t Load(const uint64_t& v) {
  return std::atomic_ref<uint64_t>(const_cast<uint64_t&>(v)).load(std::memory_order_acquire);
}
void Bump(uint64_t& v) { std::atomic_ref<uint64_t>(v).fetch_add(1, std::memory_order_relaxed); }

// ---- The client role ----

volatile sig_atomic_t g_stop = 0;
void OnStop(int) { g_stop = 1; }

constexpr uint64_t kWindow = 48;  // clients fetch among the feeder's last puts

struct RoleArgs {
  std::string socket, log, counters, b_count;
  uint64_t seed = 0;
  int index = 0;
  int put_interval_ms = 20;
};

class SoakClient {
 public:
  explicit SoakClient(const RoleArgs& a) : args_(a), rng_(a.seed * 1000003 + a.index) {}

  int Run() {
    log_fd_ = ::open(args_.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    counters_ = MapCounters(args_.counters);
    Counters* bc = MapCounters(args_.b_count);
    if (log_fd_ < 0 || counters_ == nullptr || bc == nullptr) return 3;
    b_count_ = &bc->n[0][0];
    Status st = c_.Connect(args_.socket);
    if (!st.ok()) {
      Violation("cannot connect to store A: " + st.ToString());
      return 3;
    }
    // Gets of sealed objects, their releases and Contains go through A's
    // shared index (issue 12), and are checked like every other.
    if (!c_.shared_index()) Violation("store A offered no shared index: no fast path");
    while (!g_stop && !broken_) Step();
    for (ObjectBuffer& b : held_) CheckHeld(b);
    held_.clear();
    c_.Disconnect();  // the store aborts what is left unsealed
    return broken_ ? 4 : 0;
  }

 private:
  void Log(char tag, const ObjectID& id) {
    std::string line = std::string(1, tag) + " " + id.Hex() + "\n";
    ssize_t n = ::write(log_fd_, line.data(), line.size());  // one write: all or nothing
    (void)n;
  }
  void Violation(const std::string& what) {
    std::string line = "X " + what + "\n";
    ssize_t n = ::write(log_fd_, line.data(), line.size());
    (void)n;
  }
  void Count(int op, StatusCode c) {
    Bump(counters_->n[op][CodeIndex(c)]);
    if (!Expected(op, CodeIndex(c)))
      Violation(std::string(kOpNames[op]) + ": unexpected " + std::string(StatusCodeName(c)));
  }
  // A failed call: A dropped this client, which it never should.
  void CallFailed(const char* what, const Status& st) {
    Bump(counters_->n[kOpCall][CodeIndex(st.code())]);
    Violation(std::string(what) + " failed: " + st.ToString());
    broken_ = true;
  }
  void CheckHeld(const ObjectBuffer& b) {
    std::string why = Verify(b);
    if (!why.empty()) Violation("held object " + b.id().Hex() + " changed: " + why);
  }

  uint64_t Pick(uint64_t n) { return rng_() % n; }
  uint32_t PickSize() {
    uint64_t r = Pick(100);
    if (r == 0) return 0;
    if (r < 6) return static_cast<uint32_t>((1u << 20) + Pick(kMaxSize - (1u << 20)));
    uint32_t bits = static_cast<uint32_t>(Pick(20));
    return (1u << bits) + static_cast<uint32_t>(Pick(1u << bits));
  }
  ObjectID NewId(char origin, uint32_t size, uint16_t meta) {
    return MakeId(origin, size, meta, rng_(), rng_());
  }
  ObjectID Probe() { return NewId('n', 0, 0); }
  bool HaveB() { return Load(*b_count_) > 0; }
  ObjectID PickB() {
    uint64_t count = Load(*b_count_);
    return BId(args_.seed, count - 1 - Pick(std::min(count, kWindow)));
  }
  void Sealed(const ObjectID& id) {
    Log('S', id);
    if (sealed_.size() >= 4096) sealed_.erase(sealed_.begin());
    sealed_.push_back(id);
  }

  void Step() {
    uint64_t r = Pick(100);
    if (r < 20) return CreateFillSeal();
    if (r < 30) return CreateAndSeal();
    if (r < 46) return GetOwn();
    if (r < 52) return DeleteOwn();
    if (r < 55) return DeleteB();
    if (r < 61) return ContainsOne();
    if (r < 70) return FetchB();
    if (r < 76) return GetB();
    if (r < 81) return GetWithFetch();
    if (r < 85) return GetProbe();
    if (r < 87) return EvictSome();
    if (r < 93) return ResolveUnsealed();
    return DropHeld();
  }

  void CreateFillSeal() {
    uint32_t size = PickSize();
    uint16_t meta_size = Pick(3) == 0 ? 0 : static_cast<uint16_t>(Pick(100));
    ObjectID id = NewId('c', size, meta_size);
    Result<MutableBuffer> b = c_.Create(id, size, Content(id, meta_size, true));
    if (!b.ok() && b.status().IsDisconnected()) return CallFailed("Create", b.status());
    Count(kOpCreate, b.status().code());
    if (!b.ok()) return;
    Fill(ContentSeed(id, false), b->data, size);
    uint64_t r = Pick(10);
    if (r < 8) {
      Status st = c_.Seal(id);
      if (st.IsDisconnected()) return CallFailed("Seal", st);
      Count(kOpSeal, st.code());
      if (st.ok()) Sealed(id);
    } else if (r == 8) {
      Status st = c_.Abort(id);
      if (st.IsDisconnected()) return CallFailed("Abort", st);
      Count(kOpAbort, st.code());
    } else {
      Count(kOpLeaveUnsealed, StatusCode::kOk);  // sealed, aborted, or left to the store later
      unsealed_.push_back(id);
    }
  }

  void ResolveUnsealed() {
    if (unsealed_.size() < 3) return;
    ObjectID id = unsealed_.front();
    unsealed_.erase(unsealed_.begin());
    if (Pick(2) == 0) {
      Status st = c_.Seal(id);
      if (st.IsDisconnected()) return CallFailed("Seal", st);
      Count(kOpSeal, st.code());
      if (st.ok()) Sealed(id);
    } else {
      Status st = c_.Abort(id);
      if (st.IsDisconnected()) return CallFailed("Abort", st);
      Count(kOpAbort, st.code());
    }
  }

  void CreateAndSeal() {
    uint32_t size = static_cast<uint32_t>(Pick(2) == 0 ? Pick(4096) : Pick(256u << 10));
    uint16_t meta_size = static_cast<uint16_t>(Pick(64));
    ObjectID id = NewId('c', size, meta_size);
    Status st = c_.CreateAndSeal(id, Content(id, size, false), Content(id, meta_size, true));
    if (st.IsDisconnected()) return CallFailed("CreateAndSeal", st);
    Count(kOpCreateAndSeal, st.code());
    if (st.ok()) Sealed(id);
  }

  // Gets `id` and checks its bytes; maybe keeps the buffer.
  void GetAndCheck(const ObjectID& id, int op, int64_t timeout_ms = 0) {
    auto got = c_.Get({id}, timeout_ms);
    if (!got.ok()) return CallFailed("Get", got.status());
    ObjectBuffer& b = (*got)[0];
    if (!b.valid()) return Count(op, b.status().code());
    Count(op, StatusCode::kOk);
    std::string why = Verify(b);
    if (!why.empty()) Violation("object " + id.Hex() + " is corrupt: " + why);
    uint64_t r = Pick(4);
    if (r == 0 && held_.size() < 8) {
      held_.push_back(b);  // keeps a reference: neither evictable nor freed by a delete
    } else if (r == 1) {
      Status st = c_.Release(id);
      Count(kOpRelease, st.code());
    }
  }

  void GetOwn() {
    if (sealed_.empty()) return;
    GetAndCheck(sealed_[Pick(sealed_.size())], kOpGet);
  }

  // An object of B's that A may hold: it may be fetched again at any time, by
  // another client or while it is being deleted.
  void DeleteB() {
    if (!HaveB()) return;
    ObjectID id = PickB();
    Log('d', id);
    auto r = c_.Delete({id});
    if (!r.ok()) return CallFailed("Delete", r.status());
    Count(kOpDeleteB, (*r)[0].code());
  }

  // Waits a little for an object of B's that another client may be fetching.
  void GetB() {
    if (!HaveB()) return;
    GetAndCheck(PickB(), kOpGetFetched, Pick(2) == 0 ? 0 : static_cast<int64_t>(Pick(200)));
  }

  void DeleteOwn() {
    if (sealed_.empty()) return;
    size_t i = Pick(sealed_.size());
    ObjectID id = sealed_[i];
    sealed_.erase(sealed_.begin() + static_cast<ptrdiff_t>(i));
    Log('d', id);  // before asking: a kill may come between request and reply
    auto r = c_.Delete({id});
    if (!r.ok()) return CallFailed("Delete", r.status());
    const Status& st = (*r)[0];
    Count(kOpDelete, st.code());
    if (st.ok() || st.code() == StatusCode::kObjectInUse) Log('D', id);
  }

  void ContainsOne() {
    bool probe = sealed_.empty() || Pick(2) == 0;
    ObjectID id = probe ? Probe() : sealed_[Pick(sealed_.size())];
    auto r = c_.Contains(id);
    if (!r.ok()) return CallFailed("Contains", r.status());
    Count(kOpContains, StatusCode::kOk);
    if (probe && *r) Violation("Contains says yes for " + id.Hex() + ", never created");
  }

  void Fetched(const ObjectID& id) {
    if (fetched_.insert(id).second) Log('F', id);
  }

  void FetchB() {
    if (!HaveB()) return;
    ObjectID id = PickB();
    auto r = c_.Fetch({id}, 100 + static_cast<int64_t>(Pick(2900)));
    if (!r.ok()) return CallFailed("Fetch", r.status());
    Count(kOpFetch, (*r)[0].code());
    if ((*r)[0].ok()) {
      Fetched(id);
      GetAndCheck(id, kOpGetFetched);
    }
  }

  void GetWithFetch() {
    if (!HaveB()) return;
    ObjectID id = PickB();
    auto got = c_.Get({id}, 100 + static_cast<int64_t>(Pick(2900)), GetOptions{true});
    if (!got.ok()) return CallFailed("Get", got.status());
    ObjectBuffer& b = (*got)[0];
    if (!b.valid()) return Count(kOpGetFetch, b.status().code());
    Count(kOpGetFetch, StatusCode::kOk);
    Fetched(id);
    std::string why = Verify(b);
    if (!why.empty()) Violation("fetched object " + id.Hex() + " is corrupt: " + why);
  }

  void GetProbe() {
    ObjectID id = Probe();
    int64_t timeout = 5 + static_cast<int64_t>(Pick(100));
    auto t0 = Clock::now();
    auto got = c_.Get({id}, timeout);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    if (!got.ok()) return CallFailed("Get", got.status());
    const ObjectBuffer& b = (*got)[0];
    Count(kOpGetProbe, b.valid() ? StatusCode::kOk : b.status().code());
    if (ms + 1 < timeout || ms > timeout + 15000)
      Violation("Get with timeout " + std::to_string(timeout) + " ms returned after " +
                std::to_string(ms) + " ms");
  }

  void EvictSome() {
    auto r = c_.Evict((64u << 10) + Pick(1u << 20));
    if (!r.ok()) return CallFailed("Evict", r.status());
    Count(kOpEvict, StatusCode::kOk);
  }

  void DropHeld() {
    if (held_.empty()) return;
    size_t i = Pick(held_.size());
    CheckHeld(held_[i]);
    held_.erase(held_.begin() + static_cast<ptrdiff_t>(i));
  }

  RoleArgs args_;
  std::mt19937_64 rng_;
  Client c_;
  int log_fd_ = -1;
  Counters* counters_ = nullptr;
  uint64_t* b_count_ = nullptr;
  bool broken_ = false;
  std::vector<ObjectID> sealed_;    // sealed here, not deleted (the latest 4096)
  std::vector<ObjectID> unsealed_;  // created here, neither sealed nor aborted yet
  std::vector<ObjectBuffer> held_;
  std::unordered_set<ObjectID, ObjectIDHash> fetched_;
};

// ---- The feeder role: puts BId(seed, 0), BId(seed, 1), ... into store B ----

int RunFeeder(const RoleArgs& a) {
  Counters* counters = MapCounters(a.counters);
  Counters* bc = MapCounters(a.b_count);
  if (counters == nullptr || bc == nullptr) return 3;
  uint64_t& count = bc->n[0][0];
  uint64_t next = Load(count);
  while (!g_stop) {
    Client c;
    if (!c.Connect(a.socket).ok()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    // B may have restarted empty: put the window clients fetch from again.
    bool ok = true;
    for (uint64_t n = next > kWindow ? next - kWindow : 0; n < next && ok && !g_stop; n++) {
      Status st = Put(c, BId(a.seed, n));
      Bump(counters->n[kOpPutB][CodeIndex(st.code())]);
      ok = st.ok() || st.IsObjectExists();
    }
    while (ok && !g_stop) {
      Status st = Put(c, BId(a.seed, next));
      Bump(counters->n[kOpPutB][CodeIndex(st.code())]);
      if (st.ok() || st.IsObjectExists()) {
        next++;
        std::atomic_ref<uint64_t>(count).store(next, std::memory_order_release);
      } else if (st.IsDisconnected()) {
        ok = false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(a.put_interval_ms));
    }
  }
  return 0;
}

// ---- Processes ----

std::string SelfExe() {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "" : p.string();
}

// Starts `args` with stdout and stderr appended to `log`. The child dies with
// this process (PR_SET_PDEATHSIG): no client outlives a killed soak.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log) {
  cluster::SpawnOptions so;
  so.log = log;
  so.die_with_parent = true;
  Result<cluster::Process> p = cluster::Process::Spawn(args, so);
  return p.ok() ? p->Release() : -1;
}

// How waiting for a child ended.
struct Exit {
  enum class Kind {
    kExited,   // `status` is its wait status
    kRunning,  // still running when the time was up
    kLost,     // waitpid failed (`error`): nothing is known of how it ended
  };
  Kind kind = Kind::kRunning;
  int status = 0;
  int error = 0;
  bool Clean() const {
    return kind == Kind::kExited && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
};

// "exit 0", "signal Killed", "still running", "no wait status (waitpid: ...)".
std::string DescribeExit(const Exit& e) {
  switch (e.kind) {
    case Exit::Kind::kExited: return cluster::DescribeExit(e.status);
    case Exit::Kind::kRunning: return "still running";
    case Exit::Kind::kLost:
      return std::string("no wait status (waitpid: ") + std::strerror(e.error) + ")";
  }
  return "?";
}

// Waits up to `timeout_ms` for `pid`. A child that cannot be waited for
// (ECHILD: reaped elsewhere, or SIGCHLD ignored by whoever started the soak)
// is kLost, never taken for a clean exit: the soak cannot vouch for it.
Exit WaitExit(pid_t pid, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int status;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return {Exit::Kind::kExited, status, 0};
    if (r < 0 && errno != EINTR) return {Exit::Kind::kLost, 0, errno};
    if (Clock::now() >= deadline) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void KillAndReap(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  int status;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}


// ---- A's notifications, followed from the start ----

class Watcher {
 public:
  struct Track {
    bool live = false;
    uint32_t seals = 0, deletes = 0, evictions = 0;
  };

  void Start(Subscription sub) {
    sub_ = std::move(sub);
    thread_ = std::thread([this] { Loop(); });
  }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  // Waits until an event of `kind` for `id` came.
  bool WaitFor(const ObjectID& id, Notification::Kind kind, int timeout_ms) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> l(mu_);
        auto it = objects_.find(id);
        if (it != objects_.end()) {
          const Track& t = it->second;
          if ((kind == Notification::Kind::kSealed && t.seals > 0) ||
              (kind == Notification::Kind::kDeleted && t.deletes > 0))
            return true;
        }
        if (!failure_.empty()) return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  // Read after Stop.
  const std::unordered_map<ObjectID, Track, ObjectIDHash>& objects() const { return objects_; }
  const std::vector<std::string>& anomalies() const { return anomalies_; }
  const std::string& failure() const { return failure_; }
  uint64_t sealed() const { return sealed_; }
  uint64_t deleted() const { return deleted_; }
  uint64_t evicted() const { return evicted_; }

 private:
  void Loop() {
    while (!stop_.load()) {
      Result<Notification> n = sub_.Next(100);
      if (!n.ok()) {
        if (n.status().IsTimeout()) continue;
        std::lock_guard<std::mutex> l(mu_);
        failure_ = n.status().ToString();
        return;
      }
      std::lock_guard<std::mutex> l(mu_);
      Track& t = objects_[n->id];
      switch (n->kind) {
        case Notification::Kind::kSealed: {
          sealed_++;
          if (t.live) Anomaly("sealed again without being removed", n->id);
          t.live = true;
          t.seals++;
          char origin;
          uint64_t size, meta;
          if (!ParseId(n->id, &origin, &size, &meta) || size != n->data_size ||
              meta != n->metadata_size)
            Anomaly("sealed with sizes " + std::to_string(n->data_size) + "+" +
                        std::to_string(n->metadata_size) + " its ID does not imply",
                    n->id);
          break;
        }
        case Notification::Kind::kDeleted:
        case Notification::Kind::kEvicted: {
          bool del = n->kind == Notification::Kind::kDeleted;
          (del ? deleted_ : evicted_)++;
          (del ? t.deletes : t.evictions)++;
          if (!t.live) Anomaly(del ? "deleted while not live" : "evicted while not live", n->id);
          t.live = false;
          break;
        }
      }
    }
  }
  void Anomaly(const std::string& what, const ObjectID& id) {
    if (anomalies_.size() < 100) anomalies_.push_back("notification: " + id.Hex() + " " + what);
  }

  Subscription sub_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::unordered_map<ObjectID, Track, ObjectIDHash> objects_;
  std::vector<std::string> anomalies_;
  std::string failure_;
  uint64_t sealed_ = 0, deleted_ = 0, evicted_ = 0;
};

// ---- The controller ----

struct Options {
  int seconds = 30;
  uint64_t ops = 0;
  int clients = 8;
  uint64_t seed = 0;
  std::string memory_a = "128M", memory_b = "128M";
  std::string store_binary, redis_server = "redis-server", dir;
  bool keep = false;
  int min_kills = 0, min_b_restarts = 0, min_redis_restarts = 0;
  int kill_interval_ms = 1500, b_interval_ms = 12000, redis_interval_ms = 15000;
  int put_interval_ms = 20;
};

struct ClientProc {
  int index = 0;
  pid_t pid = -1;
  std::string log;
  Counters* counters = nullptr;
};

class Controller {
 public:
  explicit Controller(const Options& o) : o_(o), rng_(o.seed) {}
  int Run();

 private:
  bool Setup();
  bool StartRedis();
  bool StartStore(bool a);
  bool SpawnClient();
  void KillClient();
  bool RestartB();
  bool RestartRedis();
  void ReapClients();
  void StopChildren();
  void Check();
  void PrintFigures();
  uint64_t TotalOps() const;
  double Elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void Violation(const std::string& what) { violations_.push_back(what); }
  std::vector<std::string> StoreArgs(bool a) const;
  // After a restart of B or Redis, A must fetch again (its `fetched` grows)
  // within kRecoveryLimit seconds.
  void ExpectRecovery(bool b);
  void PollRecovery();

  static constexpr int kRecoveryLimit = 20;
  struct Recovery {
    bool b = false;
    double since = 0;
    uint64_t fetched = 0;
  };

  Options o_;
  std::mt19937_64 rng_;
  std::string self_, dir_, redis_sock_, a_sock_, b_sock_, secret_, b_count_path_;
  int port_a_ = -1, port_b_ = -1;
  // Redis and the stores die with the soak (PR_SET_PDEATHSIG), if need be.
  std::unique_ptr<cluster::Redis> redis_;
  std::unique_ptr<cluster::Store> a_, b_;
  pid_t feeder_ = -1;
  Counters* feeder_counters_ = nullptr;
  Counters* b_count_ = nullptr;
  std::vector<ClientProc> live_;  // running clients
  std::vector<ClientProc> all_;   // every client ever started
  int next_index_ = 0;
  int kills_ = 0, b_restarts_ = 0, redis_restarts_ = 0, hung_ = 0;
  Clock::time_point start_;
  Client ctl_;
  Watcher watcher_;
  std::vector<std::string> violations_;
  StoreStats final_{};
  size_t final_objects_ = 0;
  uint64_t checked_ = 0, logged_sealed_ = 0, logged_fetched_ = 0, logged_deleted_ = 0;
  Exit a_exit_;
  std::vector<Recovery> recovering_;
  double worst_[2] = {-1, -1};  // slowest recovery (s) after a restart of Redis, of B
  int recovered_[2] = {0, 0};
};

std::vector<std::string> Controller::StoreArgs(bool a) const {
  return {"-m",
          a ? o_.memory_a : o_.memory_b,
          "--log-level",
          "info",
          "--redis",
          "unix:" + redis_sock_,
          "--node-id",
          a ? "soak-a" : "soak-b",
          "--node-ttl-ms",
          "1000",
          "--listen",
          "127.0.0.1:" + std::to_string(a ? port_a_ : port_b_),
          "--transport",
          "tcp",
          "--cluster-secret-file",
          secret_};
}

bool Controller::StartRedis() {
  if (!redis_) {
    cluster::RedisOptions ro;
    ro.dir = dir_;
    ro.binary = o_.redis_server;
    ro.log = dir_ + "/redis.out";
    ro.extra = {"--loglevel", "warning"};
    ro.spawn.die_with_parent = true;
    redis_ = std::make_unique<cluster::Redis>(ro);
  }
  Status st = redis_->Start();
  if (!st.ok()) std::fprintf(stderr, "plasmon-soak: %s\n", st.ToString().c_str());
  return st.ok();
}

bool Controller::StartStore(bool a) {
  std::unique_ptr<cluster::Store>& store = a ? a_ : b_;
  if (!store) {
    cluster::StoreOptions so;
    so.binary = o_.store_binary;
    so.socket = a ? a_sock_ : b_sock_;
    so.args = StoreArgs(a);
    so.log = dir_ + (a ? "/a.log" : "/b.log");
    so.spawn.die_with_parent = true;
    store = std::make_unique<cluster::Store>(so);
  }
  Status st = store->Start(60000);
  if (!st.ok())
    std::fprintf(stderr, "plasmon-soak: store %s: %s; see %s/%s.log\n", a ? "A" : "B",
                 st.ToString().c_str(), dir_.c_str(), a ? "a" : "b");
  return st.ok();
}

bool Controller::Setup() {
  self_ = SelfExe();
  if (o_.store_binary.empty())
    o_.store_binary = std::filesystem::path(self_).parent_path().string() + "/plasmon-store";
  if (::access(o_.store_binary.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "plasmon-soak: no plasmon-store at %s (use --store-binary)\n",
                 o_.store_binary.c_str());
    return false;
  }
  std::string base = o_.dir;
  if (base.empty()) {
    const char* t = std::getenv("TMPDIR");
    base = t != nullptr ? t : "/tmp";
  }
  std::string templ = base + "/plasmon-soak-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    std::fprintf(stderr, "plasmon-soak: mkdtemp in %s: %s\n", base.c_str(), std::strerror(errno));
    return false;
  }
  dir_ = templ;
  redis_sock_ = dir_ + "/redis.sock";
  a_sock_ = dir_ + "/a.sock";
  b_sock_ = dir_ + "/b.sock";
  secret_ = dir_ + "/secret";
  std::ofstream(secret_) << "plasmon-soak secret " << o_.seed << "\n";
  b_count_path_ = dir_ + "/b_count";
  b_count_ = MapCounters(b_count_path_);
  feeder_counters_ = MapCounters(dir_ + "/feeder.counters");
  port_a_ = cluster::FreeLocalPort();
  port_b_ = cluster::FreeLocalPort();
  while (port_b_ == port_a_) port_b_ = cluster::FreeLocalPort();
  if (b_count_ == nullptr || feeder_counters_ == nullptr || port_a_ < 0 || port_b_ < 0) {
    std::fprintf(stderr, "plasmon-soak: cannot set up files or ports in %s\n", dir_.c_str());
    return false;
  }
  std::printf("plasmon-soak: seed %llu, %d clients, %s, world in %s\n",
              static_cast<unsigned long long>(o_.seed), o_.clients,
              o_.ops > 0 ? (std::to_string(o_.ops) + " ops").c_str()
                         : (std::to_string(o_.seconds) + " s").c_str(),
              dir_.c_str());
  std::printf("  store A %s at 127.0.0.1:%d, store B %s at 127.0.0.1:%d, redis at %s\n",
              o_.memory_a.c_str(), port_a_, o_.memory_b.c_str(), port_b_, redis_sock_.c_str());
  std::fflush(stdout);
  if (!StartRedis() || !StartStore(true) || !StartStore(false)) return false;
  Status st = ctl_.Connect(a_sock_);
  if (!st.ok()) {
    std::fprintf(stderr, "plasmon-soak: cannot connect to store A: %s\n", st.ToString().c_str());
    return false;
  }
  Result<Subscription> sub = ctl_.Subscribe();
  if (!sub.ok()) {
    std::fprintf(stderr, "plasmon-soak: cannot subscribe to store A: %s\n",
                 sub.status().ToString().c_str());
    return false;
  }
  watcher_.Start(std::move(*sub));
  feeder_ =
      Spawn({self_, "--role", "feeder", "--socket", b_sock_, "--counters",
             dir_ + "/feeder.counters", "--b-count", b_count_path_, "--seed",
             std::to_string(o_.seed), "--put-interval-ms", std::to_string(o_.put_interval_ms)},
            dir_ + "/feeder.err");
  for (int i = 0; i < o_.clients; i++)
    if (!SpawnClient()) return false;
  return true;
}

bool Controller::SpawnClient() {
  ClientProc p;
  p.index = next_index_++;
  std::string base = dir_ + "/client-" + std::to_string(p.index);
  p.log = base + ".log";
  p.counters = MapCounters(base + ".counters");
  if (p.counters == nullptr) return false;
  p.pid = Spawn({self_, "--role", "client", "--socket", a_sock_, "--log", p.log, "--counters",
                 base + ".counters", "--b-count", b_count_path_, "--seed", std::to_string(o_.seed),
                 "--index", std::to_string(p.index)},
                base + ".err");
  if (p.pid < 0) return false;
  live_.push_back(p);
  all_.push_back(p);
  return true;
}

void Controller::KillClient() {
  if (live_.empty()) return;
  size_t i = rng_() % live_.size();
  KillAndReap(live_[i].pid);
  live_.erase(live_.begin() + static_cast<ptrdiff_t>(i));
  kills_++;
  SpawnClient();
}

void Controller::ExpectRecovery(bool b) {
  auto s = ctl_.Stats();
  if (s.ok()) recovering_.push_back({b, Elapsed(), s->fetched});
}

void Controller::PollRecovery() {
  if (recovering_.empty()) return;
  auto s = ctl_.Stats();
  if (!s.ok()) return;  // reported by the liveness check
  double t = Elapsed();
  for (size_t i = 0; i < recovering_.size();) {
    const Recovery& r = recovering_[i];
    if (s->fetched > r.fetched) {
      worst_[r.b] = std::max(worst_[r.b], t - r.since);
      recovered_[r.b]++;
    } else if (t - r.since > kRecoveryLimit) {
      char buf[128];
      std::snprintf(buf, sizeof(buf),
                    "A fetched nothing within %d s of the restart of %s at %.1f s", kRecoveryLimit,
                    r.b ? "B" : "Redis", r.since);
      Violation(buf);
    } else {
      i++;
      continue;
    }
    recovering_.erase(recovering_.begin() + static_cast<ptrdiff_t>(i));
  }
}

bool Controller::RestartB() {
  b_->process().Kill();
  std::this_thread::sleep_for(std::chrono::milliseconds(rng_() % 500));
  b_restarts_++;
  if (!StartStore(false)) {
    Violation("store B did not start again after SIGKILL (see " + dir_ + "/b.log)");
    return false;
  }
  ExpectRecovery(true);
  return true;
}

bool Controller::RestartRedis() {
  redis_->Kill();
  std::this_thread::sleep_for(std::chrono::milliseconds(rng_() % 500));
  redis_restarts_++;
  if (!StartRedis()) {
    Violation("redis-server did not start again");
    return false;
  }
  ExpectRecovery(false);
  return true;
}

// Clients never exit by themselves: one that did was dropped by A or crashed.
void Controller::ReapClients() {
  for (size_t i = 0; i < live_.size();) {
    Exit e = WaitExit(live_[i].pid, 0);
    if (e.kind == Exit::Kind::kRunning) {
      i++;
      continue;
    }
    // kLost too: a client that is no longer ours to wait for is gone, somehow.
    Violation("client " + std::to_string(live_[i].index) + " exited by itself (" +
              DescribeExit(e) + "; see " + dir_ + "/client-" + std::to_string(live_[i].index) +
              ".{log,err})");
    live_.erase(live_.begin() + static_cast<ptrdiff_t>(i));
    SpawnClient();
  }
}

uint64_t Controller::TotalOps() const {
  uint64_t n = 0;
  for (const ClientProc& p : all_)
    for (int op = 0; op < kOpCall; op++)
      for (int c = 0; c < kCodes; c++) n += Load(p.counters->n[op][c]);
  return n;
}

void Controller::StopChildren() {
  for (const ClientProc& p : live_) ::kill(p.pid, SIGTERM);
  if (feeder_ > 0) ::kill(feeder_, SIGTERM);
  for (const ClientProc& p : live_) {
    Exit e = WaitExit(p.pid, 60000);
    if (e.kind == Exit::Kind::kRunning) {
      hung_++;
      Violation("client " + std::to_string(p.index) + " did not stop within 60 s of SIGTERM");
      KillAndReap(p.pid);
    } else if (!e.Clean() && !(e.kind == Exit::Kind::kExited && WIFSIGNALED(e.status) &&
                               WTERMSIG(e.status) == SIGTERM)) {
      Violation("client " + std::to_string(p.index) + " ended with " + DescribeExit(e) +
                " (see " + dir_ + "/client-" + std::to_string(p.index) + ".{log,err})");
    }
  }
  live_.clear();
  if (feeder_ > 0 && WaitExit(feeder_, 30000).kind == Exit::Kind::kRunning) KillAndReap(feeder_);
  feeder_ = -1;
}

int Controller::Run() {
  if (!Setup()) {
    StopChildren();
    watcher_.Stop();
    a_.reset();
    b_.reset();
    redis_.reset();
    std::fprintf(stderr, "plasmon-soak: setup failed; the world is left in %s\n", dir_.c_str());
    return 2;
  }
  start_ = Clock::now();
  const bool timed = o_.ops == 0 || o_.seconds > 0;
  const double duration = o_.seconds;
  // The i-th of `min` forced faults of a kind comes by this time (s): spread
  // over the first 75% of the run, kinds apart (`shift`), so that the last
  // quarter shows recovery. An --ops run forces them once its ops are done.
  auto due = [&](int done, int min, double shift) {
    if (done >= min) return false;
    if (!timed) return o_.ops > 0 && TotalOps() >= o_.ops;
    return Elapsed() >= duration * (0.6 * (done + 1) / (min + 1) + shift);
  };
  // A fault of mean interval `interval_ms` happens in the last tick (`dt` s).
  double dt = 0;
  auto chance = [&](int interval_ms) {
    return interval_ms > 0 &&
           std::uniform_real_distribution<double>(0, 1)(rng_) < dt * 1000 / interval_ms;
  };
  double last_b = -10, last_redis = -10, last_report = 0, last_tick = 0;
  for (;;) {
    double t = Elapsed();
    dt = t - last_tick;
    last_tick = t;
    bool time_up = timed && t >= duration;
    bool ops_up = o_.ops > 0 && TotalOps() >= o_.ops;
    bool minimums = kills_ >= o_.min_kills && b_restarts_ >= o_.min_b_restarts &&
                    redis_restarts_ >= o_.min_redis_restarts;
    if ((time_up || ops_up) && minimums) break;
    if (timed && t >= duration + 120) {
      Violation("the forced faults did not all happen within the run");
      break;
    }
    ReapClients();
    PollRecovery();
    if (due(kills_, o_.min_kills, 0) || chance(o_.kill_interval_ms)) KillClient();
    if (t - last_b > 3 && (due(b_restarts_, o_.min_b_restarts, 0) || chance(o_.b_interval_ms))) {
      if (!RestartB()) break;
      last_b = Elapsed();
    }
    if (t - last_redis > 3 &&
        (due(redis_restarts_, o_.min_redis_restarts, 0.15) || chance(o_.redis_interval_ms))) {
      if (!RestartRedis()) break;
      last_redis = Elapsed();
    }
    if (t - last_report >= 5) {
      last_report = t;
      auto s = ctl_.Stats();
      if (!s.ok()) {
        Violation("store A stopped answering during the run: " + s.status().ToString());
        break;
      }
      std::printf(
          "[%6.1fs] ops %llu, kills %d, B restarts %d, Redis restarts %d; A: %llu "
          "objects, %s used, %llu evictions, %llu fetched, %llu clients\n",
          t, static_cast<unsigned long long>(TotalOps()), kills_, b_restarts_, redis_restarts_,
          static_cast<unsigned long long>(s->object_count), FormatSize(s->used).c_str(),
          static_cast<unsigned long long>(s->evictions),
          static_cast<unsigned long long>(s->fetched), static_cast<unsigned long long>(s->clients));
      std::fflush(stdout);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::printf("stopping after %.1f s\n", Elapsed());
  std::fflush(stdout);
  StopChildren();
  Check();
  watcher_.Stop();
  PrintFigures();
  // Store A last: a clean shutdown (and, in sanitizer builds, no leak report).
  ctl_.Disconnect();
  b_->process().Kill();
  redis_->Kill();
  if (a_->process().pid() > 0) {
    ::kill(a_->process().pid(), SIGTERM);
    Result<int> waited = a_->process().Wait(60000);
    if (waited.ok()) {
      a_exit_ = {Exit::Kind::kExited, *waited, 0};
    } else if (waited.status().IsTimeout()) {
      a_exit_ = {};  // still running
    } else {
      a_exit_ = {Exit::Kind::kLost, 0, ECHILD};  // the supervisor could not wait for it
    }
    if (a_exit_.kind == Exit::Kind::kRunning) {
      Violation("store A did not exit within 60 s of SIGTERM");
      a_->process().Kill();
    } else if (!a_exit_.Clean()) {
      Violation("store A ended with " + DescribeExit(a_exit_) + " after SIGTERM");
    }
  }
  // Sanitizer reports and internal errors in any process's output.
  const char* markers[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                           "WARNING: ThreadSanitizer", "runtime error:", " error plasmon-store: "};
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    std::string name = entry.path().filename().string();
    if (name.ends_with(".counters") || name.starts_with("redis") || name.ends_with(".sock"))
      continue;
    std::ifstream f(entry.path());
    std::string line;
    int reported = 0;
    while (std::getline(f, line) && reported < 5) {
      for (const char* m : markers) {
        if (line.find(m) != std::string::npos) {
          Violation(name + ": " + line);
          reported++;
          break;
        }
      }
    }
  }
  std::printf("  [%s] 7. store A exits cleanly on SIGTERM (%s)\n", a_exit_.Clean() ? "ok" : "FAIL",
              a_exit_.kind == Exit::Kind::kRunning ? "no exit" : DescribeExit(a_exit_).c_str());
  std::printf(
      "summary: client_kills=%d b_restarts=%d redis_restarts=%d fetches_ok=%llu "
      "ops=%llu shm_gets=%llu shm_contains=%llu violations=%zu\n",
      kills_, b_restarts_, redis_restarts_, static_cast<unsigned long long>(logged_fetched_),
      static_cast<unsigned long long>(TotalOps()), static_cast<unsigned long long>(final_.shm_gets),
      static_cast<unsigned long long>(final_.shm_contains), violations_.size());
  if (!violations_.empty()) {
    std::printf("violations:\n");
    for (const std::string& v : violations_) std::printf("  - %s\n", v.c_str());
    std::printf("the world is left in %s\nRESULT: FAIL\n", dir_.c_str());
    return 1;
  }
  if (!o_.keep) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  } else {
    std::printf("the world is left in %s\n", dir_.c_str());
  }
  std::printf("RESULT: PASS\n");
  return 0;
}

void Controller::Check() {
  std::vector<std::pair<bool, std::string>> results;
  auto check = [&](bool ok, const std::string& what) {
    results.emplace_back(ok, what);
    if (!ok) Violation("check failed: " + what);
  };
  // Let A process the disconnects: only this controller and its subscription
  // remain.
  uint64_t clients = 0;
  for (int i = 0; i < 3000; i++) {
    auto s = ctl_.Stats();
    if (!s.ok()) break;
    clients = s->clients;
    if (clients <= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (clients > 2)
    Violation("store A still counts " + std::to_string(clients - 2) +
              " client(s) 30 s after they all ended");
  // A marker through the notification stream: once its deletion arrives,
  // every earlier event has too.
  ObjectID marker = MakeId('m', 1, 0, rng_(), rng_());
  bool synced =
      Put(ctl_, marker).ok() && watcher_.WaitFor(marker, Notification::Kind::kSealed, 30000);
  auto del = ctl_.Delete({marker});
  synced = synced && del.ok() && (*del)[0].ok() &&
           watcher_.WaitFor(marker, Notification::Kind::kDeleted, 30000);

  // 1. Alive.
  auto stats = ctl_.Stats();
  auto list = ctl_.List();
  check(stats.ok() && list.ok(),
        "1. store A answers Stats and List" +
            (stats.ok() && list.ok()
                 ? std::string()
                 : ": " + (stats.ok() ? list.status() : stats.status()).ToString()));
  if (!stats.ok() || !list.ok()) {
    for (auto& [ok, what] : results) std::printf("  [%s] %s\n", ok ? "ok" : "FAIL", what.c_str());
    return;
  }
  final_ = *stats;
  final_objects_ = list->size();

  // 2. Nothing leaked.
  uint64_t expect_used = 0, sealed = 0, unsealed = 0, referenced = 0;
  for (const ObjectInfo& o : *list) {
    expect_used += Allocator::RoundUp(o.data_size + o.metadata_size);
    if (o.state == ObjectState::kSealed) {
      sealed++;
    } else {
      unsealed++;
      if (unsealed <= 5) Violation("object " + o.id.Hex() + " is still unsealed");
    }
    if (o.ref_count > 0) {
      referenced++;
      if (referenced <= 5)
        Violation("object " + o.id.Hex() + " still has " + std::to_string(o.ref_count) +
                  " reference(s)");
    }
  }
  check(stats->used == expect_used && stats->object_count == list->size() &&
            stats->sealed_count == sealed,
        "2. used bytes " + std::to_string(stats->used) + " = sum of its " +
            std::to_string(list->size()) + " objects' allocations " + std::to_string(expect_used) +
            " (object_count " + std::to_string(stats->object_count) + ", sealed_count " +
            std::to_string(stats->sealed_count) + ")");

  // 3. Nothing unsealed or still referenced.
  check(unsealed == 0 && referenced == 0, "3. no unsealed object (" + std::to_string(unsealed) +
                                              ") and no reference left (" +
                                              std::to_string(referenced) + ")");

  // 4. Every object is exactly what its ID implies.
  uint64_t corrupt = 0;
  for (size_t i = 0; i < list->size(); i += 32) {
    std::vector<ObjectID> ids;
    for (size_t j = i; j < std::min(list->size(), i + 32); j++)
      if ((*list)[j].state == ObjectState::kSealed) ids.push_back((*list)[j].id);
    auto got = ctl_.Get(ids, 0);
    if (!got.ok()) {
      Violation("Get of A's objects failed: " + got.status().ToString());
      corrupt++;
      break;
    }
    for (const ObjectBuffer& b : *got) {
      std::string why = b.valid() ? Verify(b) : "listed but not gettable: " + b.status().ToString();
      if (Origin(b.id()) != 'c' && Origin(b.id()) != 'b') why = "an object no soak process made";
      checked_++;
      if (!why.empty()) {
        corrupt++;
        if (corrupt <= 10) Violation("object " + b.id().Hex() + ": " + why);
      }
    }
  }
  check(corrupt == 0, "4. every object has the content its ID implies (" +
                          std::to_string(checked_) + " checked, " + std::to_string(corrupt) +
                          " bad)");

  // 5. Nothing lost: the clients' logs against A's notifications and contents.
  std::unordered_set<ObjectID, ObjectIDHash> present, logged, intents, acked;
  for (const ObjectInfo& o : *list) present.insert(o.id);
  std::vector<std::string> client_violations;
  for (const ClientProc& p : all_) {
    std::ifstream f(p.log);
    std::string line;
    while (std::getline(f, line)) {
      if (line.size() < 2) continue;
      if (line[0] == 'X') {
        client_violations.push_back("client " + std::to_string(p.index) + ": " + line.substr(2));
        continue;
      }
      std::optional<ObjectID> id = ObjectID::FromHex(line.substr(2));
      if (!id) continue;  // the torn last line of a killed client
      switch (line[0]) {
        case 'S':
          logged_sealed_++;
          logged.insert(*id);
          break;
        case 'F':
          logged_fetched_++;
          logged.insert(*id);
          break;
        case 'd':
          intents.insert(*id);
          break;
        case 'D':
          logged_deleted_++;
          acked.insert(*id);
          break;
      }
    }
  }
  uint64_t lost = 0, unannounced = 0, resurrected = 0, bad_deletes = 0, mismatched = 0;
  const auto& tracks = watcher_.objects();
  for (const ObjectID& id : logged) {
    auto t = tracks.find(id);
    if (t == tracks.end() || t->second.seals == 0) {
      if (++unannounced <= 5) Violation(id.Hex() + " was sealed, but A never announced it");
      continue;
    }
    if (present.count(id) == 0 && t->second.deletes + t->second.evictions == 0) {
      if (++lost <= 5) Violation(id.Hex() + " is gone, but was neither deleted nor evicted");
    }
  }
  for (const ObjectID& id : acked) {
    if (present.count(id) > 0 && ++resurrected <= 5)
      Violation(id.Hex() + " is still there after its Delete was acknowledged");
  }
  for (const auto& [id, t] : tracks) {
    if (t.deletes > 0 && id != marker && intents.count(id) == 0 && ++bad_deletes <= 5)
      Violation(id.Hex() + " was deleted, but no client asked for it");
    if (t.live != (present.count(id) > 0) && ++mismatched <= 5)
      Violation(id.Hex() + (t.live ? " is live by the notifications but not in List"
                                   : " is in List but not live by the notifications"));
  }
  for (const ObjectID& id : present) {
    if (tracks.count(id) == 0 && ++mismatched <= 5)
      Violation(id.Hex() + " is in List but was never announced");
  }
  for (const std::string& a : watcher_.anomalies()) Violation(a);
  if (!watcher_.failure().empty()) Violation("the subscription to A failed: " + watcher_.failure());
  if (!synced) Violation("the marker did not come through A's notifications within 30 s");
  bool evictions_match = watcher_.evicted() == stats->evictions;
  if (!evictions_match)
    Violation("A counts " + std::to_string(stats->evictions) + " evictions, its notifications " +
              std::to_string(watcher_.evicted()));
  check(lost == 0 && unannounced == 0 && resurrected == 0 && bad_deletes == 0 && mismatched == 0 &&
            watcher_.anomalies().empty() && watcher_.failure().empty() && synced && evictions_match,
        "5. every logged object (" + std::to_string(logged.size()) +
            ") is intact or was deleted/evicted; notifications match List and Stats (lost " +
            std::to_string(lost) + ", unannounced " + std::to_string(unannounced) +
            ", resurrected " + std::to_string(resurrected) + ", unrequested deletes " +
            std::to_string(bad_deletes) + ", mismatched " + std::to_string(mismatched) + ")");

  // 6. No unexpected status, no client-side violation, fetch worked.
  uint64_t unexpected = 0;
  for (const ClientProc& p : all_)
    for (int op = 0; op < kOpCount; op++)
      for (int c = 0; c < kCodes; c++)
        if (!Expected(op, c)) unexpected += Load(p.counters->n[op][c]);
  for (size_t i = 0; i < client_violations.size() && i < 20; i++) Violation(client_violations[i]);
  if (client_violations.size() > 20)
    Violation(std::to_string(client_violations.size() - 20) + " more client violations");
  if (logged_fetched_ == 0) Violation("no fetch from B ever succeeded");
  if (stats->shm_gets == 0) Violation("no get went through the shared index");
  check(unexpected == 0 && client_violations.empty() && logged_fetched_ > 0 && stats->shm_gets > 0,
        "6. no unexpected status (" + std::to_string(unexpected) + "), no client violation (" +
            std::to_string(client_violations.size()) + "), fetches worked (" +
            std::to_string(logged_fetched_) + " objects), gets through the shared index (" +
            std::to_string(stats->shm_gets) + ", and " + std::to_string(stats->shm_contains) +
            " Contains)");
  std::printf("checks:\n");
  for (auto& [ok, what] : results) std::printf("  [%s] %s\n", ok ? "ok" : "FAIL", what.c_str());
}

void Controller::PrintFigures() {
  std::printf("operations (ok, then failures by status; * = unexpected):\n");
  for (int op = 0; op < kOpCount; op++) {
    uint64_t n[kCodes] = {};
    for (const ClientProc& p : all_)
      for (int c = 0; c < kCodes; c++) n[c] += Load(p.counters->n[op][c]);
    if (op == kOpPutB)
      for (int c = 0; c < kCodes; c++) n[c] += Load(feeder_counters_->n[op][c]);
    uint64_t total = 0;
    for (int c = 0; c < kCodes; c++) total += n[c];
    if (total == 0) continue;
    std::string line = std::to_string(n[0]) + " ok";
    for (int c = 1; c < kCodes; c++) {
      if (n[c] == 0) continue;
      line += ", " + std::string(StatusCodeName(static_cast<StatusCode>(c))) + " " +
              std::to_string(n[c]) + (Expected(op, c) ? "" : "*");
    }
    std::printf("  %-16s %s\n", kOpNames[op], line.c_str());
  }
  std::printf("faults: %d client kills, %d B restarts, %d Redis restarts; %zu clients started\n",
              kills_, b_restarts_, redis_restarts_, all_.size());
  auto worst = [this](int b) {
    if (recovered_[b] == 0) return std::string("none measured");
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%d measured, slowest %.1f s", recovered_[b], worst_[b]);
    return std::string(buf);
  };
  std::printf("A fetched again after restarts of B: %s; of Redis: %s\n", worst(1).c_str(),
              worst(0).c_str());
  std::printf("logs: %llu sealed, %llu deleted, %llu fetched (distinct per client)\n",
              static_cast<unsigned long long>(logged_sealed_),
              static_cast<unsigned long long>(logged_deleted_),
              static_cast<unsigned long long>(logged_fetched_));
  std::printf("A's notifications: %llu sealed, %llu deleted, %llu evicted\n",
              static_cast<unsigned long long>(watcher_.sealed()),
              static_cast<unsigned long long>(watcher_.deleted()),
              static_cast<unsigned long long>(watcher_.evicted()));
  std::printf(
      "final A: %zu objects (%llu sealed), %s used of %s, %llu evictions (%s), %llu "
      "fetched (%s), %llu pulls failed\n",
      final_objects_, static_cast<unsigned long long>(final_.sealed_count),
      FormatSize(final_.used).c_str(), FormatSize(final_.capacity).c_str(),
      static_cast<unsigned long long>(final_.evictions), FormatSize(final_.evicted_bytes).c_str(),
      static_cast<unsigned long long>(final_.fetched), FormatSize(final_.fetched_bytes).c_str(),
      static_cast<unsigned long long>(final_.pulls_failed));
  std::fflush(stdout);
}

}  // namespace
}  // namespace plasmon::soak

int main(int argc, char** argv) {
  using namespace plasmon::soak;
  CLI::App app{"plasmon-soak: a fault soak of one plasmon store (see docs/TESTING.md)"};
  Options o;
  o.seed = std::random_device{}();
  app.add_option("--seconds", o.seconds, "Run this long (with --ops: at most this long)")
      ->capture_default_str();
  app.add_option("--ops", o.ops, "Run until the clients did this many operations");
  app.add_option("--clients", o.clients, "Client processes working on store A at once")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of every random choice (default: random, printed)");
  app.add_option("--memory-a", o.memory_a, "Store A's arena")->capture_default_str();
  app.add_option("--memory-b", o.memory_b, "Store B's arena")->capture_default_str();
  app.add_option("--store-binary", o.store_binary,
                 "plasmon-store to run (default: the one next to this binary)");
  app.add_option("--redis-server", o.redis_server, "redis-server to run")->capture_default_str();
  app.add_option("--dir", o.dir, "Make the world's temporary directory here (default $TMPDIR)");
  app.add_flag("--keep", o.keep, "Keep the world's directory (logs) even if every check holds");
  app.add_option("--min-kills", o.min_kills, "Kill at least this many clients");
  app.add_option("--min-b-restarts", o.min_b_restarts, "Kill and restart B at least this often");
  app.add_option("--min-redis-restarts", o.min_redis_restarts,
                 "Kill and restart Redis at least this often");
  app.add_option("--kill-interval-ms", o.kill_interval_ms,
                 "Mean time between client kills (0: only forced ones)")
      ->capture_default_str();
  app.add_option("--b-restart-interval-ms", o.b_interval_ms,
                 "Mean time between restarts of B (0: only forced ones)")
      ->capture_default_str();
  app.add_option("--redis-restart-interval-ms", o.redis_interval_ms,
                 "Mean time between restarts of Redis (0: only forced ones)")
      ->capture_default_str();
  app.add_option("--put-interval-ms", o.put_interval_ms, "Pause between the feeder's puts in B")
      ->capture_default_str();
  // The processes the controller starts.
  std::string role;
  RoleArgs r;
  app.add_option("--role", role)->group("")->check(CLI::IsMember({"client", "feeder"}));
  app.add_option("--socket", r.socket)->group("");
  app.add_option("--log", r.log)->group("");
  app.add_option("--counters", r.counters)->group("");
  app.add_option("--b-count", r.b_count)->group("");
  app.add_option("--index", r.index)->group("");
  CLI11_PARSE(app, argc, argv);

  ::signal(SIGPIPE, SIG_IGN);
  if (!role.empty()) {
    struct sigaction sa {};
    sa.sa_handler = OnStop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    r.seed = o.seed;
    r.put_interval_ms = o.put_interval_ms;
    if (role == "feeder") return RunFeeder(r);
    return SoakClient(r).Run();
  }
  if (o.clients < 1 || o.seconds < 0 || (o.seconds == 0 && o.ops == 0)) {
    std::fprintf(stderr, "plasmon-soak: need --clients >= 1 and --seconds or --ops\n");
    return 2;
  }
  if (!plasmon::ParseSize(o.memory_a) || !plasmon::ParseSize(o.memory_b)) {
    std::fprintf(stderr, "plasmon-soak: invalid --memory-a or --memory-b\n");
    return 2;
  }
  if (app.count("--ops") > 0 && app.count("--seconds") == 0) o.seconds = 0;
  return Controller(o).Run();
}
