// _plasmon: the compiled part of the Python binding (python/plasmon/ wraps
// it). A thin layer over plasmon::Client: every call goes through the C++
// client, with the GIL released while it may block, and every non-OK Status
// becomes the plasmon.Error subclass of its code.
//
// Buffers. A Buffer (from get) owns one ObjectBuffer, that is one reference
// to the object, and serves the buffer protocol itself: every memoryview or
// numpy view made from it keeps the Buffer alive (Py_buffer.obj), so the
// reference is dropped only when the Buffer and its last view are gone.
// release() (or the end of a `with` block) makes the Buffer refuse new views
// and its own accessors raise at once; the reference itself is dropped then
// if no view is exported, else when the last exported view is released.
// Arrays made by numpy.frombuffer(buf) do not hold an export (numpy drops it
// at once and keeps only the Buffer): after an explicit release() they may
// read memory the store has reused, but never unmapped memory, because every
// Buffer also keeps its connection (and so the arena's mapping) alive.
//
// fork: a child shares its parent's sockets, so a Client, Buffer or
// Subscription inherited across fork is never used in the child (calls raise
// Disconnected) and its C++ side is never destroyed there (destroying it
// would shut the parent's socket down and send the parent's releases).
#include <pthread.h>
#include <sys/socket.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "plasmon/client.h"
#include "tools/content_id.h"

namespace py = pybind11;

namespace plasmon::python {
namespace {

// ---- errors ----

// One Python class per StatusCode, registered by plasmon/__init__.py
// (_set_error_classes). Strong references, never dropped: the classes live
// as long as the interpreter.
constexpr int kCodes = 14;
PyObject* g_errors[kCodes] = {};

PyObject* ErrorClass(StatusCode code) {
  int i = static_cast<int>(code);
  PyObject* cls = i < kCodes ? g_errors[i] : nullptr;
  if (cls == nullptr) cls = g_errors[0];
  return cls != nullptr ? cls : PyExc_RuntimeError;
}

// The exception object of a non-OK status (not raised).
py::object ErrorObject(const Status& st) {
  return py::reinterpret_borrow<py::object>(ErrorClass(st.code()))(st.message());
}

[[noreturn]] void Raise(const Status& st) {
  PyErr_SetString(ErrorClass(st.code()), st.message().c_str());
  throw py::error_already_set();
}

void Check(const Status& st) {
  if (!st.ok()) Raise(st);
}

// Runs a call of the C++ client with the GIL released (it may block).
template <typename F>
auto Unlocked(F&& f) {
  py::gil_scoped_release nogil;
  return f();
}

// What a call returned, or the error it raised.
template <typename T>
T Value(Result<T> r) {
  Check(r.status());
  return std::move(*r);
}

// ---- fork ----

// Bumped in the child at every fork; whatever was made in an earlier
// generation belongs to an ancestor process.
std::atomic<uint64_t> g_generation{0};

bool Inherited(uint64_t generation) { return generation != g_generation.load(std::memory_order_relaxed); }

// Leaks `p` in a child (see the top of the file), destroys it otherwise.
template <typename T>
void DestroyUnlessInherited(std::unique_ptr<T>& p, uint64_t generation) {
  if (Inherited(generation)) (void)p.release();
  p.reset();
}

// ---- IDs ----

ObjectID IdFrom(py::handle h) {
  if (py::isinstance<ObjectID>(h)) return h.cast<const ObjectID&>();
  if (PyBytes_Check(h.ptr())) {
    Result<ObjectID> id = ObjectID::FromBinary(h.cast<std::string_view>());
    Check(id.status());
    return *id;
  }
  throw py::type_error("an object ID is a plasmon.ObjectID or 20 bytes, not " +
                       std::string(Py_TYPE(h.ptr())->tp_name));
}

// One ID or an iterable of them; *single says which.
std::vector<ObjectID> IdsFrom(py::handle h, bool* single) {
  std::vector<ObjectID> ids;
  *single = py::isinstance<ObjectID>(h) || PyBytes_Check(h.ptr());
  if (*single) {
    ids.push_back(IdFrom(h));
    return ids;
  }
  if (PyUnicode_Check(h.ptr()))
    throw py::type_error("IDs are plasmon.ObjectID (ObjectID.from_hex parses hex), not str");
  for (py::handle item : py::iter(h)) ids.push_back(IdFrom(item));
  return ids;
}

// The bytes of any contiguous buffer, held for as long as this lives.
class Input {
 public:
  explicit Input(py::handle h) {
    if (PyObject_GetBuffer(h.ptr(), &view_, PyBUF_C_CONTIGUOUS) != 0) {
      PyErr_Clear();
      throw py::type_error(std::string("a contiguous buffer (bytes, bytearray, memoryview, numpy "
                                       "array) is needed, not ") +
                           Py_TYPE(h.ptr())->tp_name);
    }
  }
  ~Input() { PyBuffer_Release(&view_); }
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;
  std::string_view view() const {
    return {static_cast<const char*>(view_.buf), static_cast<size_t>(view_.len)};
  }

 private:
  Py_buffer view_{};
};

// ---- the connection ----

// What a Client, its Buffers and Subscriptions share: the C++ client (its
// mapping of the arena lives as long as this does) and the writable buffers
// of objects created and not yet sealed.
struct Core;

struct WriteState {
  MutableBuffer buf;
  bool open = true;  // false after seal, abort or close
  Py_ssize_t exports = 0;  // memoryviews (and the like) of it out now
};

struct Core {
  std::unique_ptr<Client> client = std::make_unique<Client>();
  std::string socket;
  uint64_t generation = g_generation.load();
  // Touched with the GIL held only.
  std::unordered_map<ObjectID, std::weak_ptr<WriteState>, ObjectIDHash> creating;

  ~Core() { DestroyUnlessInherited(client, generation); }

  // The client, unless it was inherited across fork or closed.
  Client& Use() {
    if (Inherited(generation))
      Raise(Status::Disconnected("this client was connected by the parent process: connect again "
                                 "after fork"));
    return *client;
  }
  // Seal and abort refuse while views of the object's memory are out: a
  // write through one after would change a sealed object, or memory the
  // store has given to another.
  void CheckNoViews(const ObjectID& id) {
    auto it = creating.find(id);
    if (it == creating.end()) return;
    if (auto w = it->second.lock(); w && w->exports > 0)
      throw py::buffer_error("object " + id.Hex() + " still has " + std::to_string(w->exports) +
                             " view(s) of its memory (memoryview, numpy array): release them first");
  }
  void CloseWrites(const ObjectID& id) {
    auto it = creating.find(id);
    if (it == creating.end()) return;
    if (auto w = it->second.lock()) w->open = false;
    creating.erase(it);
  }
};

// ---- buffers ----

// The buffer protocol of Buffer and MutableBuffer: T::Export says what to
// serve (or sets a Python error), T::Unexport is told when a view goes.
template <typename T>
int GetBufferSlot(PyObject* self, Py_buffer* view, int flags) {
  view->obj = nullptr;
  T* t;
  try {
    t = py::handle(self).cast<T*>();
  } catch (const py::cast_error&) {
    PyErr_SetString(PyExc_BufferError, "not a plasmon buffer");
    return -1;
  }
  void* data;
  Py_ssize_t size;
  bool readonly;
  if (!t->Export(&data, &size, &readonly)) return -1;
  if (PyBuffer_FillInfo(view, self, data, size, readonly ? 1 : 0, flags) != 0) return -1;
  t->exports++;
  return 0;
}

template <typename T>
void ReleaseBufferSlot(PyObject* self, Py_buffer*) {
  py::handle(self).cast<T*>()->Unexport();
}

template <typename T>
py::custom_type_setup BufferProtocol() {
  return py::custom_type_setup([](PyHeapTypeObject* ht) {
    ht->as_buffer.bf_getbuffer = &GetBufferSlot<T>;
    ht->as_buffer.bf_releasebuffer = &ReleaseBufferSlot<T>;
    ht->ht_type.tp_as_buffer = &ht->as_buffer;
  });
}

// A sealed object, read-only, in the store's memory (Client.get).
class PyBuffer {
 public:
  PyBuffer(std::shared_ptr<Core> core, ObjectBuffer b)
      : core_(std::move(core)), ref_(std::make_unique<ObjectBuffer>(std::move(b))),
        id_(ref_->id()), data_(ref_->data()), size_(ref_->size()) {}
  ~PyBuffer() {
    DestroyUnlessInherited(ref_, core_->generation);
    if (Inherited(core_->generation)) new std::shared_ptr<Core>(std::move(core_));  // leaked
  }
  PyBuffer(const PyBuffer&) = delete;
  PyBuffer& operator=(const PyBuffer&) = delete;

  bool Export(void** data, Py_ssize_t* size, bool* readonly) {
    if (!CheckOpen()) return false;
    *data = const_cast<uint8_t*>(data_);
    *size = static_cast<Py_ssize_t>(size_);
    *readonly = true;
    return true;
  }
  void Unexport() {
    if (--exports == 0 && released_) Drop();
  }

  void Release() {
    released_ = true;
    if (exports == 0) Drop();
  }
  bool released() const { return released_; }
  const ObjectID& id() const { return id_; }
  uint64_t size() const { return size_; }
  uint64_t address() {
    Open();
    return reinterpret_cast<uintptr_t>(data_);
  }
  py::bytes metadata() {
    Open();
    return py::bytes(std::string(ref_->metadata_view()));
  }
  bool holds_reference() const { return ref_ != nullptr; }

  Py_ssize_t exports = 0;

 private:
  bool CheckOpen() {
    if (!released_ && !Inherited(core_->generation)) return true;
    PyErr_SetString(PyExc_ValueError,
                    released_ ? ("the buffer of " + id_.Hex() + " was released").c_str()
                              : "this buffer belongs to the parent process (fork)");
    return false;
  }
  void Open() {
    if (!CheckOpen()) throw py::error_already_set();
  }
  void Drop() { DestroyUnlessInherited(ref_, core_->generation); }

  std::shared_ptr<Core> core_;
  std::unique_ptr<ObjectBuffer> ref_;  // null once the reference is dropped
  ObjectID id_;
  const uint8_t* data_;
  uint64_t size_;
  bool released_ = false;
};

// The writable data of an object being created (Client.create), until its
// seal or abort.
class PyMutableBuffer {
 public:
  PyMutableBuffer(std::shared_ptr<Core> core, std::shared_ptr<WriteState> state)
      : core_(std::move(core)), state_(std::move(state)), exports(state_->exports) {}
  ~PyMutableBuffer() {
    if (Inherited(core_->generation)) new std::shared_ptr<Core>(std::move(core_));  // leaked
  }
  PyMutableBuffer(const PyMutableBuffer&) = delete;
  PyMutableBuffer& operator=(const PyMutableBuffer&) = delete;

  bool Export(void** data, Py_ssize_t* size, bool* readonly) {
    if (!state_->open || Inherited(core_->generation)) {
      PyErr_SetString(PyExc_ValueError, ("the object " + state_->buf.id.Hex() +
                                         " was sealed or aborted: its buffer is closed")
                                            .c_str());
      return false;
    }
    *data = state_->buf.data;
    *size = static_cast<Py_ssize_t>(state_->buf.size);
    *readonly = false;
    return true;
  }
  void Unexport() { exports--; }
  const ObjectID& id() const { return state_->buf.id; }
  uint64_t size() const { return state_->buf.size; }
  bool open() const { return state_->open; }

 private:
  std::shared_ptr<Core> core_;
  std::shared_ptr<WriteState> state_;

 public:
  Py_ssize_t& exports;  // the object's count (after state_: initialised from it)
};

// ---- subscriptions ----

// How long one wait of a Get or a Subscription's Next lasts before the
// signal handlers run (and Ctrl-C can interrupt it).
constexpr int64_t kSliceMs = 100;

// A wait of timeout_ms (-1: no end) cut in slices of at most kSliceMs.
class SlicedWait {
 public:
  using Clock = std::chrono::steady_clock;
  explicit SlicedWait(int64_t timeout_ms)
      : timeout_ms_(timeout_ms),
        deadline_(Clock::now() + std::chrono::milliseconds(std::max<int64_t>(timeout_ms, 0))) {}

  // The next slice's wait in ms (0 once the deadline passed).
  int64_t Slice() const {
    if (timeout_ms_ < 0) return kSliceMs;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
    return std::clamp<int64_t>(left.count(), 0, kSliceMs);
  }
  bool Over() const { return timeout_ms_ >= 0 && Clock::now() >= deadline_; }
  // Between slices: runs Python's signal handlers (KeyboardInterrupt on Ctrl-C).
  static void CheckSignals() {
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }

 private:
  int64_t timeout_ms_;
  Clock::time_point deadline_;
};

class PySubscription {
 public:
  PySubscription(std::shared_ptr<Core> core, Subscription sub)
      : generation_(core->generation), fd_(sub.fd()),
        sub_(std::make_unique<Subscription>(std::move(sub))) {}
  ~PySubscription() { DestroyUnlessInherited(sub_, generation_); }

  int fileno() {
    Use();
    return fd_;
  }
  // The next notification, or None if none came within timeout_ms.
  // Waits in slices (see kSliceMs) so that Ctrl-C interrupts it.
  py::object Next(int timeout_ms) {
    Use();
    SlicedWait wait(timeout_ms);
    for (;;) {
      const int slice = static_cast<int>(wait.Slice());
      Result<Notification> n = [&]() -> Result<Notification> {
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> l(mu_);  // Next reads a shared frame buffer
        if (sub_ == nullptr) return Status::Disconnected("the subscription was closed");
        return sub_->Next(slice);
      }();
      if (n.ok()) return py::cast(*n);
      if (!n.status().IsTimeout()) Raise(n.status());
      if (wait.Over()) return py::none();
      SlicedWait::CheckSignals();
    }
  }
  // Safe while another thread waits in Next: the shutdown wakes it (with
  // Disconnected) before the lock it holds is taken. Never in a child, whose
  // shutdown would end the parent's subscription too.
  void Close() {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> c(close_mu_);
    closed_ = true;
    if (!Inherited(generation_) && sub_ != nullptr) ::shutdown(fd_, SHUT_RDWR);
    std::lock_guard<std::mutex> l(mu_);
    DestroyUnlessInherited(sub_, generation_);
  }

 private:
  void Use() {
    if (Inherited(generation_))
      Raise(Status::Disconnected("this subscription belongs to the parent process (fork)"));
    if (closed_) Raise(Status::Disconnected("the subscription was closed"));
  }

  uint64_t generation_;
  int fd_;                         // valid until closed_
  std::atomic<bool> closed_{false};
  std::mutex close_mu_;  // one Close at a time
  std::mutex mu_;        // held by Next; sub_ changes under both
  std::unique_ptr<Subscription> sub_;
};

// ---- the client ----

// One Status per ID, as a list of None (OK) or the error (not raised).
py::list StatusList(const std::vector<Status>& statuses) {
  py::list out(statuses.size());
  for (size_t i = 0; i < statuses.size(); i++)
    out[i] = statuses[i].ok() ? py::none() : ErrorObject(statuses[i]);
  return out;
}

// Largest object put with one CreateAndSeal round trip (the C++ API's cap).
constexpr uint64_t kInlineMax = 1u << 20;

class PyClient {
 public:
  PyClient(const std::string& socket, int64_t request_timeout_ms, bool shared_index,
           bool leased_creates) {
    core_->socket = socket;
    ConnectOptions o;
    o.request_timeout_ms = request_timeout_ms;
    o.shared_index = shared_index;
    o.leased_creates = leased_creates;
    Check(Unlocked([&] { return core_->client->Connect(socket, o); }));
  }

  const std::string& socket() const { return core_->socket; }
  bool connected() const { return !Inherited(core_->generation) && core_->client->connected(); }
  bool shared_index() const {
    return !Inherited(core_->generation) && core_->client->shared_index();
  }

  void Close() {
    if (Inherited(core_->generation)) return;
    for (auto& [id, w] : core_->creating)
      if (auto s = w.lock()) s->open = false;
    core_->creating.clear();
    py::gil_scoped_release nogil;
    core_->client->Disconnect();
  }

  std::unique_ptr<PyMutableBuffer> Create(py::object id_h, uint64_t size, py::object metadata_h) {
    ObjectID id = IdFrom(id_h);
    Input meta(metadata_h);
    Client& c = core_->Use();
    auto state = std::make_shared<WriteState>();
    state->buf = Value(Unlocked([&] { return c.Create(id, size, meta.view()); }));
    core_->creating[id] = state;
    return std::make_unique<PyMutableBuffer>(core_, std::move(state));
  }

  void Seal(py::object id_h) {
    ObjectID id = IdFrom(id_h);
    Client& c = core_->Use();
    core_->CheckNoViews(id);
    Check(Unlocked([&] { return c.Seal(id); }));
    core_->CloseWrites(id);
  }

  void Abort(py::object id_h) {
    ObjectID id = IdFrom(id_h);
    Client& c = core_->Use();
    core_->CheckNoViews(id);
    core_->CloseWrites(id);  // before: the memory is the store's again once it answers
    Check(Unlocked([&] { return c.Abort(id); }));
  }

  // Creates and seals `id` from the concatenation of `parts`, each starting
  // at a multiple of `align` bytes (zeros between), copying each once with
  // the GIL released. Returns the offset of each part.
  std::vector<uint64_t> PutParts(const ObjectID& id, py::object parts_h, py::object metadata_h,
                                 uint64_t align) {
    if (align == 0 || (align & (align - 1)) != 0)
      Raise(Status::InvalidArgument("align must be a power of two"));
    std::vector<std::unique_ptr<Input>> parts;
    for (py::handle p : py::iter(parts_h)) parts.push_back(std::make_unique<Input>(p));
    Input meta(metadata_h);
    std::vector<uint64_t> offsets;
    uint64_t total = 0;
    for (auto& p : parts) {
      total = (total + align - 1) & ~(align - 1);
      offsets.push_back(total);
      total += p->view().size();
    }
    Client& c = core_->Use();
    Status st;
    {
      py::gil_scoped_release nogil;
      if (parts.size() == 1 && total + meta.view().size() <= kInlineMax) {
        st = c.CreateAndSeal(id, parts[0]->view(), meta.view());
      } else {
        Result<MutableBuffer> b = c.Create(id, total, meta.view());
        st = b.status();
        if (st.ok()) {
          uint64_t end = 0;
          for (size_t i = 0; i < parts.size(); i++) {
            std::string_view v = parts[i]->view();
            if (offsets[i] > end) std::memset(b->data + end, 0, offsets[i] - end);
            if (!v.empty()) std::memcpy(b->data + offsets[i], v.data(), v.size());
            end = offsets[i] + v.size();
          }
          st = c.Seal(id);
          if (!st.ok()) (void)c.Abort(id);
        }
      }
    }
    Check(st);
    return offsets;
  }

  ObjectID Put(py::object data, py::object id_h, py::object metadata_h) {
    ObjectID id = id_h.is_none() ? ObjectID::Random() : IdFrom(id_h);
    PutParts(id, py::make_tuple(data), metadata_h, 1);
    return id;
  }

  py::object Get(py::object ids_h, int64_t timeout_ms, bool fetch) {
    bool single;
    std::vector<ObjectID> ids = IdsFrom(ids_h, &single);
    Client& c = core_->Use();
    GetOptions o;
    o.fetch = fetch;
    // A fetch is not cut in slices: each Get would start its fetch again.
    Result<std::vector<ObjectBuffer>> r =
        fetch ? Unlocked([&] { return c.Get(ids, timeout_ms, o); }) : GetInSlices(c, ids, timeout_ms);
    Check(r.status());
    auto one = [&](ObjectBuffer& b) -> py::object {
      if (b.valid()) return py::cast(std::make_unique<PyBuffer>(core_, std::move(b)));
      const Status& st = b.status();
      // Missing (or not sealed in time) is None; a fetch that failed is an error.
      if (st.IsObjectNotFound() || st.IsObjectNotSealed() || st.IsTimeout() || st.ok())
        return py::none();
      Raise(st);
    };
    if (single) return one((*r)[0]);
    py::list out(r->size());
    for (size_t i = 0; i < r->size(); i++) out[i] = one((*r)[i]);
    return out;
  }

  // Get without fetch, waiting in slices of kSliceMs with the signal handlers
  // run between them, so that Ctrl-C interrupts a long wait (the C++ client
  // itself retries the poll that a signal interrupts). Objects found in one
  // slice are held while the others are waited for.
  Result<std::vector<ObjectBuffer>> GetInSlices(Client& c, const std::vector<ObjectID>& ids,
                                                int64_t timeout_ms) {
    SlicedWait wait(timeout_ms);
    auto get = [&](const std::vector<ObjectID>& want) {
      return Unlocked([&] { return c.Get(want, wait.Slice()); });
    };
    auto missing = [](const ObjectBuffer& b) {
      return !b.valid() && (b.status().IsObjectNotFound() || b.status().IsObjectNotSealed());
    };
    Result<std::vector<ObjectBuffer>> r = get(ids);
    if (!r.ok()) return r;
    std::vector<ObjectBuffer> out = std::move(*r);
    std::vector<size_t> waiting;  // indexes into ids of the objects still missing
    for (size_t i = 0; i < out.size(); i++)
      if (missing(out[i])) waiting.push_back(i);
    std::vector<ObjectID> want;
    while (!waiting.empty() && !wait.Over()) {
      SlicedWait::CheckSignals();
      want.clear();
      for (size_t i : waiting) want.push_back(ids[i]);
      r = get(want);
      if (!r.ok()) return r.status();
      std::vector<size_t> still;
      for (size_t k = 0; k < waiting.size(); k++) {
        if (missing((*r)[k])) still.push_back(waiting[k]);
        out[waiting[k]] = std::move((*r)[k]);
      }
      waiting = std::move(still);
    }
    return out;
  }

  bool Contains(py::object id_h) {
    ObjectID id = IdFrom(id_h);
    Client& c = core_->Use();
    return Value(Unlocked([&] { return c.Contains(id); }));
  }

  std::vector<ObjectInfo> List() {
    Client& c = core_->Use();
    return Value(Unlocked([&] { return c.List(); }));
  }

  // Delete and Refresh: one None or error per ID.
  py::list PerId(py::object ids_h,
                 Result<std::vector<Status>> (Client::*call)(const std::vector<ObjectID>&)) {
    bool single;
    std::vector<ObjectID> ids = IdsFrom(ids_h, &single);
    Client& c = core_->Use();
    return StatusList(Value(Unlocked([&] { return (c.*call)(ids); })));
  }

  py::list Fetch(py::object ids_h, int64_t timeout_ms) {
    bool single;
    std::vector<ObjectID> ids = IdsFrom(ids_h, &single);
    Client& c = core_->Use();
    return StatusList(Value(Unlocked([&] { return c.Fetch(ids, timeout_ms); })));
  }

  uint64_t Digest(py::object id_h) {
    ObjectID id = IdFrom(id_h);
    Client& c = core_->Use();
    return Value(Unlocked([&] { return c.Digest(id); }));
  }

  void SetMemoryQuota(uint64_t bytes) {
    Client& c = core_->Use();
    ClientOptions o;
    o.memory_quota = bytes;
    Check(Unlocked([&] { return c.SetOptions(o); }));
  }

  uint64_t Evict(uint64_t bytes) {
    Client& c = core_->Use();
    return Value(Unlocked([&] { return c.Evict(bytes); }));
  }

  StoreStats Stats() {
    Client& c = core_->Use();
    return Value(Unlocked([&] { return c.Stats(); }));
  }

  std::vector<ObjectHolder> Where(py::object id_h) {
    ObjectID id = IdFrom(id_h);
    Client& c = core_->Use();
    return Value(Unlocked([&] { return c.Where(id); }));
  }

  std::unique_ptr<PySubscription> Subscribe() {
    Client& c = core_->Use();
    return std::make_unique<PySubscription>(core_, Value(Unlocked([&] { return c.Subscribe(); })));
  }

  // The C++ reference for the benchmark: `n` Gets and releases of `id` in
  // C++ on this connection, each timed; returns the times in nanoseconds.
  std::vector<int64_t> TimeGetRelease(py::object id_h, int n) {
    ObjectID id = IdFrom(id_h);
    Client& c = core_->Use();
    std::vector<int64_t> ns;
    ns.reserve(n > 0 ? n : 0);
    Status st;
    {
      py::gil_scoped_release nogil;
      for (int i = 0; i < n && st.ok(); i++) {
        auto t0 = std::chrono::steady_clock::now();
        {
          Result<std::vector<ObjectBuffer>> r = c.Get({id}, 0);
          st = r.ok() ? ((*r)[0].valid() ? Status::OK() : (*r)[0].status()) : r.status();
        }
        ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::steady_clock::now() - t0)
                         .count());
      }
    }
    Check(st);
    return ns;
  }

 private:
  std::shared_ptr<Core> core_ = std::make_shared<Core>();
};

std::string StateName(ObjectState s) { return s == ObjectState::kSealed ? "sealed" : "created"; }

std::string KindName(Notification::Kind k) {
  switch (k) {
    case Notification::Kind::kSealed: return "sealed";
    case Notification::Kind::kDeleted: return "deleted";
    case Notification::Kind::kEvicted: return "evicted";
  }
  return "unknown";
}


// ---- the hot path, without pybind11's dispatcher ----
//
// Client.get and Buffer.release run once per object read, and pybind11's
// generic dispatch (argument vectors on the heap, overload matching) costs
// about as much as the rest of the binding's share of a get. These two are
// CPython METH_FASTCALL methods instead, over the same implementation.

// Runs `f`, turning a C++ exception into the Python error it carries.
template <typename F>
PyObject* Guarded(F&& f) {
  try {
    return f();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// get(ids, timeout_ms=-1, fetch=False), by position or keyword.
PyObject* FastGet(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return Guarded([&]() -> PyObject* {
    static constexpr const char* kNames[] = {"ids", "timeout_ms", "fetch"};
    constexpr Py_ssize_t kArgs = 3;
    PyObject* a[kArgs] = {nullptr, nullptr, nullptr};
    if (nargs > kArgs) throw py::type_error("get() takes at most 3 arguments");
    for (Py_ssize_t i = 0; i < nargs; i++) a[i] = args[i];
    Py_ssize_t nkw = kwnames != nullptr ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
      const char* name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
      if (name == nullptr) throw py::error_already_set();
      Py_ssize_t j = 0;
      while (j < kArgs && std::strcmp(name, kNames[j]) != 0) j++;
      if (j == kArgs)
        throw py::type_error(std::string("get() got an unexpected keyword argument '") + name + "'");
      if (a[j] != nullptr)
        throw py::type_error(std::string("get() got multiple values for argument '") + name + "'");
      a[j] = args[nargs + k];
    }
    if (a[0] == nullptr) throw py::type_error("get() missing required argument 'ids'");
    int64_t timeout_ms = -1;
    if (a[1] != nullptr) {
      timeout_ms = PyLong_AsLongLong(a[1]);
      if (timeout_ms == -1 && PyErr_Occurred()) throw py::error_already_set();
    }
    bool fetch = false;
    if (a[2] != nullptr) {
      int t = PyObject_IsTrue(a[2]);
      if (t < 0) throw py::error_already_set();
      fetch = t != 0;
    }
    PyClient* c = py::handle(self).cast<PyClient*>();
    return c->Get(py::reinterpret_borrow<py::object>(a[0]), timeout_ms, fetch).release().ptr();
  });
}

PyObject* FastRelease(PyObject* self, PyObject*) {
  return Guarded([&]() -> PyObject* {
    py::handle(self).cast<PyBuffer*>()->Release();
    Py_RETURN_NONE;
  });
}

// Installs `def` (static storage) as a method of `cls`.
void AddFastMethod(py::handle cls, PyMethodDef* def) {
  py::object descr = py::reinterpret_steal<py::object>(
      PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), def));
  if (!descr) throw py::error_already_set();
  py::setattr(cls, def->ml_name, descr);
}

PyMethodDef kGetDef = {
    "get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(&FastGet)),
    METH_FASTCALL | METH_KEYWORDS,
    "get($self, /, ids, timeout_ms=-1, fetch=False)\n--\n\n"
    "Buffer (or list of them, for a list of IDs) of sealed objects, None for each one missing "
    "after timeout_ms (-1: wait forever, 0: do not wait). fetch=True pulls objects missing here "
    "from other nodes first; a fetch that failed raises its error. Ctrl-C interrupts the wait "
    "(without fetch)."};

PyMethodDef kReleaseDef = {
    "release", &FastRelease, METH_NOARGS,
    "release($self, /)\n--\n\n"
    "Done with it: no new views; the reference goes now, or when the last view does."};

}  // namespace
}  // namespace plasmon::python

PYBIND11_MODULE(_plasmon, m) {
  using namespace plasmon;
  using namespace plasmon::python;
  m.doc() = "The compiled part of plasmon's Python binding; use the plasmon package.";
  pthread_atfork(nullptr, nullptr, [] { g_generation.fetch_add(1); });

  m.def(
      "_set_error_classes",
      [](py::list classes) {
        if (classes.size() != kCodes) throw py::value_error("one class per status code");
        for (int i = 0; i < kCodes; i++) {
          Py_XDECREF(g_errors[i]);
          g_errors[i] = classes[i].ptr();
          Py_INCREF(g_errors[i]);
        }
      },
      "Registers plasmon.Error and its subclasses, indexed by status code.");
  m.def(
      "_status_code_names",
      [] {
        std::vector<std::string> names;
        for (int i = 0; i < kCodes; i++)
          names.emplace_back(StatusCodeName(static_cast<StatusCode>(i)));
        return names;
      },
      "The name of each status code, by number.");

  py::class_<ObjectID>(m, "ObjectID", R"(The 20-byte name of an object.

ObjectID(b"20 bytes") takes exactly 20 bytes (InvalidArgument otherwise);
ObjectID.from_hex(), ObjectID.random() and ObjectID.from_content() make others.)")
      .def(py::init([](py::bytes b) {
             Result<ObjectID> id = ObjectID::FromBinary(std::string_view(b));
             Check(id.status());
             return *id;
           }),
           py::arg("binary"))
      .def_static(
          "from_hex",
          [](std::string_view hex) {
            std::optional<ObjectID> id = ObjectID::FromHex(hex);
            if (!id) Raise(Status::InvalidArgument("an object ID is 40 hex digits, not \"" +
                                                   std::string(hex.substr(0, 64)) + "\""));
            return *id;
          },
          py::arg("hex"), "The ID written as 40 hex digits (either case).")
      .def_static("random", &ObjectID::Random, "A uniformly random ID.")
      .def_static(
          "from_content",
          [](py::object data) {
            Input in(data);
            return ContentId(in.view());
          },
          py::arg("data"),
          "The ID `plasmon put FILE` gives this content: xxh3-128 of the bytes, then the low 4 "
          "bytes of their length.")
      .def("binary", [](const ObjectID& id) { return py::bytes(id.Binary()); }, "The 20 bytes.")
      .def("__bytes__", [](const ObjectID& id) { return py::bytes(id.Binary()); })
      .def("hex", &ObjectID::Hex, "The 40 lower-case hex digits.")
      .def("__str__", &ObjectID::Hex)
      .def("__repr__", [](const ObjectID& id) { return "ObjectID('" + id.Hex() + "')"; })
      .def("__eq__", [](const ObjectID& a, py::handle b) {
        return py::isinstance<ObjectID>(b) && a == b.cast<const ObjectID&>();
      })
      .def("__lt__", [](const ObjectID& a, const ObjectID& b) { return a < b; })
      // All 20 bytes, keyed (ObjectID::Hash): IDs that share a prefix and a
      // counter (structured IDs) must not collide in a dict.
      .def("__hash__", [](const ObjectID& id) { return id.Hash(); })
      .def(py::pickle([](const ObjectID& id) { return py::make_tuple(py::bytes(id.Binary())); },
                      [](py::tuple t) {
                        Result<ObjectID> id = ObjectID::FromBinary(t[0].cast<std::string>());
                        Check(id.status());
                        return *id;
                      }));

  py::class_<PyBuffer>(m, "Buffer", BufferProtocol<PyBuffer>(), R"(A sealed object's bytes, read-only, in the store's memory (no copy).

It serves the buffer protocol: memoryview(buf), numpy.asarray(buf) and
bytes(buf) work. It holds one reference to the object (the store will not
evict or reuse it) until the buffer and every view made from it are gone,
or until release() / the end of a `with` block; after that, making a view or
reading metadata raises ValueError. Views exported before release() keep the
reference until they are released themselves; an array made with
numpy.frombuffer(buf) holds no export: keep the Buffer unreleased while it is
used (numpy.asarray(buf) does hold one).)")
      .def_property_readonly("released", &PyBuffer::released)
      .def_property_readonly("id", &PyBuffer::id, "The object's ObjectID.")
      .def_property_readonly("size", &PyBuffer::size, "The data's size in bytes.")
      .def_property_readonly("metadata", &PyBuffer::metadata, "The object's metadata (bytes).")
      .def_property_readonly("address", &PyBuffer::address,
                             "Where the data is in this process's memory (an int).")
      .def_property_readonly("_holds_reference", &PyBuffer::holds_reference)
      .def_property_readonly("_exports", [](const PyBuffer& b) { return b.exports; })
      .def("__len__", &PyBuffer::size)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyBuffer& b, py::args) { b.Release(); })
      .def("__repr__", [](const PyBuffer& b) {
        return "<plasmon.Buffer " + b.id().Hex() + " " + std::to_string(b.size()) + " bytes" +
               (b.released() ? " released>" : ">");
      });

  py::class_<PyMutableBuffer>(m, "MutableBuffer", BufferProtocol<PyMutableBuffer>(),
                              R"(The writable data of an object being created (Client.create).

Write into it through the buffer protocol (memoryview(buf)[:] = data,
numpy.frombuffer(buf, dtype) or numpy.asarray(buf)), then Client.seal(id) or
Client.abort(id). After either, making a view raises ValueError; views made
before must not be written any more.)")
      .def_property_readonly("id", &PyMutableBuffer::id)
      .def_property_readonly("size", &PyMutableBuffer::size)
      .def_property_readonly("open", &PyMutableBuffer::open,
                             "False once the object was sealed or aborted.")
      .def("__len__", &PyMutableBuffer::size)
      .def("__repr__", [](const PyMutableBuffer& b) {
        return "<plasmon.MutableBuffer " + b.id().Hex() + " " + std::to_string(b.size()) +
               " bytes" + (b.open() ? ">" : " closed>");
      });

  py::class_<ObjectInfo>(m, "ObjectInfo", "One object of the store (Client.list).")
      .def_readonly("id", &ObjectInfo::id)
      .def_property_readonly("state", [](const ObjectInfo& i) { return StateName(i.state); },
                             "\"created\" or \"sealed\".")
      .def_readonly("data_size", &ObjectInfo::data_size)
      .def_readonly("metadata_size", &ObjectInfo::metadata_size)
      .def_readonly("ref_count", &ObjectInfo::ref_count,
                    "References held by all clients together.")
      .def_property_readonly(
          "digest", [](const ObjectInfo& i) -> py::object {
            return i.digest_valid ? py::cast(i.digest) : py::none();
          },
          "xxh3-64 of data then metadata, or None until computed.")
      .def_readonly("create_time_us", &ObjectInfo::create_time_us)
      .def_readonly("last_access_us", &ObjectInfo::last_access_us)
      .def_readonly("seal_time_us", &ObjectInfo::seal_time_us)
      .def_property_readonly("create_to_seal_us", &ObjectInfo::create_to_seal_us)
      .def("__repr__", [](const ObjectInfo& i) {
        return "<plasmon.ObjectInfo " + i.id.Hex() + " " + StateName(i.state) + " " +
               std::to_string(i.data_size) + "+" + std::to_string(i.metadata_size) +
               " bytes, " + std::to_string(i.ref_count) + " refs>";
      });

  py::class_<StoreStats>(m, "StoreStats", "The store's counters (Client.stats).")
      .def_readonly("capacity", &StoreStats::capacity)
      .def_readonly("used", &StoreStats::used)
      .def_readonly("object_count", &StoreStats::object_count)
      .def_readonly("sealed_count", &StoreStats::sealed_count)
      .def_readonly("evictions", &StoreStats::evictions)
      .def_readonly("evicted_bytes", &StoreStats::evicted_bytes)
      .def_readonly("clients", &StoreStats::clients)
      .def_readonly("fetched", &StoreStats::fetched)
      .def_readonly("fetched_bytes", &StoreStats::fetched_bytes)
      .def_readonly("fetched_verbs", &StoreStats::fetched_verbs)
      .def_readonly("pulls_failed", &StoreStats::pulls_failed)
      .def_readonly("shm_gets", &StoreStats::shm_gets)
      .def_readonly("shm_contains", &StoreStats::shm_contains)
      .def("__repr__", [](const StoreStats& s) {
        return "<plasmon.StoreStats " + std::to_string(s.object_count) + " objects, " +
               std::to_string(s.used) + "/" + std::to_string(s.capacity) + " bytes>";
      });

  py::class_<ObjectHolder>(m, "ObjectHolder", "A node that holds an object (Client.where).")
      .def_readonly("node_id", &ObjectHolder::node_id)
      .def_readonly("alive", &ObjectHolder::alive)
      .def_readonly("data_size", &ObjectHolder::data_size)
      .def_readonly("metadata_size", &ObjectHolder::metadata_size)
      .def_property_readonly("digest", [](const ObjectHolder& h) -> py::object {
        return h.digest_valid ? py::cast(h.digest) : py::none();
      })
      .def("__repr__", [](const ObjectHolder& h) {
        return "<plasmon.ObjectHolder " + h.node_id + (h.alive ? "" : " (not alive)") + ">";
      });

  py::class_<Notification>(m, "Notification", "One event from Client.subscribe().")
      .def_property_readonly("kind", [](const Notification& n) { return KindName(n.kind); },
                             "\"sealed\", \"deleted\" or \"evicted\".")
      .def_readonly("id", &Notification::id)
      .def_readonly("data_size", &Notification::data_size)
      .def_readonly("metadata_size", &Notification::metadata_size)
      .def("__repr__", [](const Notification& n) {
        return "<plasmon.Notification " + KindName(n.kind) + " " + n.id.Hex() + ">";
      });

  py::class_<PySubscription>(m, "Subscription", R"(The store's seals, deletes and evictions, in order (Client.subscribe).

Iterating waits for each next Notification (raising Disconnected if the store
goes). fileno() is readable when one is waiting, for select() and asyncio's
loop.add_reader(); then drain with next(0), which returns None once none is
left (several may arrive in one read).)")
      .def("fileno", &PySubscription::fileno)
      .def("next", &PySubscription::Next, py::arg("timeout_ms") = -1,
           "The next Notification, waiting up to timeout_ms (-1: forever, 0: poll); None if "
           "none came.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", [](PySubscription& s) { return s.Next(-1); })
      .def("close", &PySubscription::Close)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PySubscription& s, py::args) { s.Close(); });

  py::class_<PyClient>(m, "_Client", "The compiled client; use plasmon.Client.")
      .def(py::init<const std::string&, int64_t, bool, bool>(), py::arg("socket"),
           py::arg("request_timeout_ms") = 10000, py::arg("shared_index") = true,
           py::arg("leased_creates") = false)
      .def_property_readonly("socket", &PyClient::socket, "The store's socket path.")
      .def_property_readonly("connected", &PyClient::connected)
      .def_property_readonly("shared_index", &PyClient::shared_index,
                             "Whether gets, releases and contains of sealed objects go "
                             "through the store's shared index (no round trip).")
      .def("close", &PyClient::Close,
           "Disconnects: the store drops this client's references and aborts its unsealed "
           "objects. Buffers got before stay readable.")
      .def("create", &PyClient::Create, py::arg("id"), py::arg("size"),
           py::arg("metadata") = py::bytes(),
           "Creates an object of `size` bytes and returns its MutableBuffer; seal() or abort() "
           "it. ObjectExists, OutOfMemory, InvalidArgument.")
      .def("seal", &PyClient::Seal, py::arg("id"),
           "Makes an object this client created immutable and visible to all. Raises\n"
           "BufferError while a memoryview (or an array holding one) of its memory is\n"
           "out: release it first.")
      .def("abort", &PyClient::Abort, py::arg("id"),
           "Discards an object this client created and has not sealed. Raises\n"
           "BufferError while a view of its memory is out, as seal does.")
      .def("put", &PyClient::Put, py::arg("data"), py::arg("id") = py::none(),
           py::arg("metadata") = py::bytes(),
           "Copies a contiguous buffer once into a new sealed object (a random ID if none is "
           "given) and returns its ObjectID.")
      .def("_put_parts", &PyClient::PutParts, py::arg("id"), py::arg("parts"),
           py::arg("metadata"), py::arg("align"))
      .def("contains", &PyClient::Contains, py::arg("id"),
           "Whether a sealed object with this ID is in the store.")
      .def("list", &PyClient::List, "Every object in the store (ObjectInfo), in ID order.")
      .def(
          "delete",
          [](PyClient& c, py::object ids) { return c.PerId(ids, &Client::Delete); },
          py::arg("ids"),
          "Deletes objects. One entry per ID: None (deleted), or the error, not raised: "
          "ObjectInUse (deleted when its last reference goes), ObjectNotFound, ObjectNotSealed.")
      .def(
          "refresh",
          [](PyClient& c, py::object ids) { return c.PerId(ids, &Client::Refresh); },
          py::arg("ids"),
          "Marks objects as just used (evicted last). One None or error per ID.")
      .def("fetch", &PyClient::Fetch, py::arg("ids"), py::arg("timeout_ms") = -1,
           "Makes objects local, pulling each from a node that holds it. One entry per ID: "
           "None (local now) or the error, not raised (Timeout, Disconnected, Corruption...).")
      .def("digest", &PyClient::Digest, py::arg("id"),
           "xxh3-64 digest of a sealed object's data then metadata.")
      .def("set_memory_quota", &PyClient::SetMemoryQuota, py::arg("bytes"),
           "Reserves bytes for this client's objects, which then evict only each other (once "
           "per connection).")
      .def("evict", &PyClient::Evict, py::arg("bytes"),
           "Evicts unreferenced objects, least recently used first; returns the bytes freed.")
      .def("stats", &PyClient::Stats, "The store's StoreStats.")
      .def("where", &PyClient::Where, py::arg("id"),
           "The nodes that hold the object according to the directory (ObjectHolder list).")
      .def("subscribe", &PyClient::Subscribe,
           "A Subscription to every seal, delete and eviction, on a connection of its own.")
      .def("_time_get_release", &PyClient::TimeGetRelease, py::arg("id"), py::arg("n"));
  AddFastMethod(m.attr("_Client"), &kGetDef);
  AddFastMethod(m.attr("Buffer"), &kReleaseDef);
}
