// plasmon: the command-line client.
//
//   plasmon put [ID] FILE|-     store a file (ID derived from the content if omitted)
//   plasmon get ID [-o FILE]    write an object's data to stdout or FILE
//   plasmon ls [--json]         list objects
//   plasmon rm ID...            delete objects
//   plasmon digest ID...        the xxh3-64 digest of each object
//   plasmon refresh ID...       mark objects as just used (evicted last)
//   plasmon stats [--json]      store statistics
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "core/size.h"
#include "plasmon/client.h"
#include "tools/content_id.h"

namespace {

constexpr const char* kDefaultSocket = "/tmp/plasmon.sock";

int Fail(const std::string& what) {
  std::fprintf(stderr, "plasmon: %s\n", what.c_str());
  return 1;
}

// ---- put: input of any size, never held whole in this process's heap ----

constexpr size_t kChunk = 1 << 20;

// Reads up to `n` bytes at `dst` from `fd` (at `offset` if it is >= 0);
// returns how many came before EOF (< n only at EOF).
plasmon::Result<uint64_t> ReadUpTo(int fd, int64_t offset, char* dst, uint64_t n,
                                   const std::string& name) {
  uint64_t got = 0;
  while (got < n) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(n - got, kChunk));
    ssize_t r = offset >= 0 ? ::pread(fd, dst + got, want, offset + static_cast<int64_t>(got))
                            : ::read(fd, dst + got, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return plasmon::Status::IOError("cannot read " + name + ": " + std::strerror(errno));
    if (r == 0) break;
    got += static_cast<uint64_t>(r);
  }
  return got;
}

plasmon::Status TooLarge(const std::string& name, uint64_t capacity) {
  return plasmon::Status::OutOfMemory(name + " is larger than the store's capacity of " +
                                      plasmon::FormatSize(capacity));
}

// The input of `put`: a regular file is read straight into the object, at
// its size; a pipe or a device is read in chunks, as far as the store could
// hold (its capacity), so that endless input ends in a clear OutOfMemory.
class PutInput {
 public:
  ~PutInput() {
    if (fd_ > STDIN_FILENO) ::close(fd_);
  }
  plasmon::Status Open(const std::string& path, uint64_t room) {
    name_ = path == "-" ? "the input" : path;
    fd_ = path == "-" ? STDIN_FILENO : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return plasmon::Status::IOError("cannot open " + path + ": " + std::strerror(errno));
    struct stat st;
    // A regular file of size 0 may be a /proc or /sys file, whose size says
    // nothing: those are read as streams.
    if (::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
      regular_ = true;
      size_ = static_cast<uint64_t>(st.st_size);
      if (size_ > room) return TooLarge(name_, room);
      return plasmon::Status::OK();
    }
    for (;;) {  // a stream: into chunks, up to `room` bytes and one more
      std::string chunk(kChunk, '\0');
      uint64_t want = std::min<uint64_t>(kChunk, room + 1 - size_);
      plasmon::Result<uint64_t> n = ReadUpTo(fd_, -1, chunk.data(), want, name_);
      if (!n.ok()) return n.status();
      chunk.resize(*n);
      size_ += *n;
      if (size_ > room) return TooLarge(name_, room);
      if (*n == 0) return plasmon::Status::OK();
      chunks_.push_back(std::move(chunk));
    }
  }
  uint64_t size() const { return size_; }
  // The content's ID (reads a file once more).
  plasmon::Result<plasmon::ObjectID> ContentId() const {
    plasmon::ContentIdBuilder b;
    if (!regular_) {
      for (const std::string& c : chunks_) b.Update(c);
      return b.Finish();
    }
    std::string chunk(kChunk, '\0');
    for (uint64_t at = 0; at < size_;) {
      plasmon::Result<uint64_t> n = ReadUpTo(fd_, static_cast<int64_t>(at), chunk.data(),
                                             std::min<uint64_t>(kChunk, size_ - at), name_);
      if (!n.ok()) return n.status();
      if (*n == 0) return Changed();
      b.Update(std::string_view(chunk.data(), *n));
      at += *n;
    }
    return b.Finish();
  }
  // Copies the content (exactly size() bytes) to `dst`.
  plasmon::Status CopyTo(char* dst) const {
    if (!regular_) {
      for (const std::string& c : chunks_) {
        std::memcpy(dst, c.data(), c.size());
        dst += c.size();
      }
      return plasmon::Status::OK();
    }
    plasmon::Result<uint64_t> n = ReadUpTo(fd_, 0, dst, size_, name_);
    if (!n.ok()) return n.status();
    char extra;
    if (*n != size_ || ::pread(fd_, &extra, 1, static_cast<int64_t>(size_)) != 0) return Changed();
    return plasmon::Status::OK();
  }

 private:
  plasmon::Status Changed() const {
    return plasmon::Status::IOError(name_ + " changed size while it was read");
  }
  std::string name_;
  int fd_ = -1;
  bool regular_ = false;
  uint64_t size_ = 0;
  std::vector<std::string> chunks_;
};

// Stores `in` as `id` (derived from the content when `derive_id`); returns
// the ID it was stored under.
plasmon::Result<plasmon::ObjectID> Put(plasmon::Client& client, const PutInput& in,
                                       plasmon::ObjectID id, bool derive_id,
                                       const std::string& metadata) {
  plasmon::Status st;
  if (in.size() + metadata.size() <= (1u << 20)) {
    std::string data(in.size(), '\0');
    PLASMON_RETURN_IF_ERROR(in.CopyTo(data.data()));
    if (derive_id) id = plasmon::ContentId(data);  // of the bytes stored
    st = client.CreateAndSeal(id, data, metadata);
  } else {
    if (derive_id) {
      plasmon::Result<plasmon::ObjectID> derived = in.ContentId();
      if (!derived.ok()) return derived.status();
      id = *derived;
    }
    plasmon::Result<plasmon::MutableBuffer> buf = client.Create(id, in.size(), metadata);
    st = buf.status();
    if (buf.ok()) {
      char* dst = reinterpret_cast<char*>(buf->data);
      st = in.CopyTo(dst);
      // A file that changed after it was hashed would be stored under the
      // ID of other content.
      if (st.ok() && derive_id && plasmon::ContentId(std::string_view(dst, in.size())) != id)
        st = plasmon::Status::IOError("the input changed while it was read");
      if (!st.ok()) {
        plasmon::Status aborted = client.Abort(id);
        (void)aborted;  // the store drops it with the connection anyway
        return st;
      }
      st = client.Seal(id);
    }
  }
  // Content-derived IDs name the content: if it is there, it is stored.
  if (st.IsObjectExists() && derive_id) st = plasmon::Status::OK();
  if (!st.ok()) return st;
  return id;
}

// Milliseconds from the command line: an integer, -1 or more (-1: none or
// forever, as the option says). Anything else, out-of-range numbers
// included, is an error (CLI11 would saturate 99999999999999999999).
bool ParseMs(const std::string& flag, const std::string& text, int64_t* out, std::string* err) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc::result_out_of_range) {
    *err = flag + " " + text + " is out of range (at most " + std::to_string(INT64_MAX) + " ms)";
    return false;
  }
  if (ec != std::errc() || end != text.data() + text.size() || v < -1) {
    *err = "invalid " + flag + " '" + text + "': expected milliseconds, -1 or more";
    return false;
  }
  *out = v;
  return true;
}

bool WriteOutput(int fd, const uint8_t* p, uint64_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<uint64_t>(w);
  }
  return true;
}

std::optional<plasmon::ObjectID> ParseId(const std::string& hex) {
  return plasmon::ObjectID::FromHex(hex);
}

std::string BadId(const std::string& s) {
  return "invalid object ID '" + s + "': expected 40 hex digits";
}

// Parses every ID; false (naming the first bad one in *bad) if one is not.
bool ParseIds(const std::vector<std::string>& hex, std::vector<plasmon::ObjectID>* ids,
              std::string* bad) {
  for (const std::string& h : hex) {
    std::optional<plasmon::ObjectID> id = ParseId(h);
    if (!id) {
      *bad = h;
      return false;
    }
    ids->push_back(*id);
  }
  return true;
}

// One line on stderr for each failed Status; exit code 1 if any failed.
int ReportEach(const std::vector<plasmon::Status>& results) {
  int rc = 0;
  for (const plasmon::Status& st : results) {
    if (st.ok()) continue;
    std::fprintf(stderr, "plasmon: %s\n", st.ToString().c_str());
    rc = 1;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"plasmon: command-line client of a plasmon store"};
  app.set_version_flag("--version", PLASMON_VERSION);
  app.require_subcommand(1);
  const char* env = std::getenv("PLASMON_SOCKET");
  std::string socket = env != nullptr && *env != '\0' ? env : kDefaultSocket;
  app.add_option("-s,--socket", socket,
                 "Store socket (default: $PLASMON_SOCKET, else /tmp/plasmon.sock)");
  std::string request_timeout = "10000";
  app.add_option("--timeout", request_timeout,
                 "Give up on a store that does not answer within this many ms (-1: wait "
                 "forever). get and fetch wait their own -t on top; their --timeout is that one, "
                 "so give this before the command there")
      ->capture_default_str();
  app.fallthrough();  // `plasmon stats --timeout 500` as well as `plasmon --timeout 500 stats`

  std::vector<std::string> put_args;
  std::string metadata;
  auto* put = app.add_subcommand("put", "Store a file (or - for stdin) as a sealed object");
  put->add_option("args", put_args, "[ID] FILE|-  (without ID, one is derived from the content)")
      ->required()
      ->expected(1, 2);
  put->add_option("--metadata", metadata, "Metadata bytes stored with the object");

  std::string get_id, out_path;
  std::string get_timeout = "0";
  auto* get = app.add_subcommand("get", "Write an object's data to stdout or a file");
  get->add_option("ID", get_id, "Object ID (40 hex digits)")->required();
  get->add_option("-o,--output", out_path, "Write to this file instead of stdout");
  get->add_option("-t,--timeout", get_timeout, "Wait this many ms for the object to be sealed")
      ->capture_default_str();
  bool get_fetch = false;
  get->add_flag("-f,--fetch", get_fetch, "Fetch the object from another node if it is not here");

  std::vector<std::string> fetch_ids;
  std::string fetch_timeout = "10000";
  auto* fetch = app.add_subcommand(
      "fetch", "Make objects local, pulling them from the nodes that hold them (cluster only)");
  fetch->add_option("ID", fetch_ids, "Object IDs")->required();
  fetch->add_option("-t,--timeout", fetch_timeout,
                    "Wait this many ms (-1: forever) for objects no node holds yet")
      ->capture_default_str();

  auto* ls = app.add_subcommand("ls", "List the objects in the store");
  bool ls_json = false;
  ls->add_flag("--json", ls_json, "Print a JSON array, one object per row (sizes in bytes, times "
                                  "in microseconds since the epoch)");
  std::vector<std::string> rm_ids;
  auto* rm = app.add_subcommand("rm", "Delete objects");
  rm->add_option("ID", rm_ids, "Object IDs")->required();
  std::vector<std::string> digest_ids;
  auto* digest_cmd = app.add_subcommand(
      "digest", "Print each object's xxh3-64 digest (of its data, then its metadata)");
  digest_cmd->add_option("ID", digest_ids, "Object IDs")->required();
  std::vector<std::string> refresh_ids;
  auto* refresh = app.add_subcommand(
      "refresh", "Mark objects as just used, so that eviction takes them last");
  refresh->add_option("ID", refresh_ids, "Object IDs")->required();
  auto* stats = app.add_subcommand("stats", "Print store statistics");
  bool stats_json = false;
  stats->add_flag("--json", stats_json, "Print them as one JSON object (sizes in bytes)");
  std::string where_id;
  auto* where = app.add_subcommand("where", "Which nodes of the cluster hold an object");
  where->add_option("ID", where_id, "Object ID (40 hex digits)")->required();

  CLI11_PARSE(app, argc, argv);

  plasmon::ConnectOptions connect;
  int64_t get_ms = 0, fetch_ms = 0;
  std::string err;
  if (!ParseMs("--timeout", request_timeout, &connect.request_timeout_ms, &err) ||
      (*get && !ParseMs("get --timeout", get_timeout, &get_ms, &err)) ||
      (*fetch && !ParseMs("fetch --timeout", fetch_timeout, &fetch_ms, &err)))
    return Fail(err);
  if (connect.request_timeout_ms == 0) return Fail("--timeout must be positive, or -1 for none");
  // One command, a request or two: mapping the shared index (and the store
  // making a pin page) would cost more than the round trips it saves.
  connect.shared_index = false;
  plasmon::Client client;
  if (auto st = client.Connect(socket, connect); !st.ok()) return Fail(st.ToString());

  if (*put) {
    plasmon::ObjectID id;
    if (put_args.size() == 2) {
      auto parsed = ParseId(put_args[0]);
      if (!parsed) return Fail(BadId(put_args[0]));
      id = *parsed;
    }
    // Input beyond what the store can hold is refused before it is read
    // whole (a file) or as soon as it runs past (a stream).
    auto store = client.Stats();
    if (!store.ok()) return Fail(store.status().ToString());
    uint64_t room = store->capacity > metadata.size() ? store->capacity - metadata.size() : 0;
    PutInput in;
    if (auto st = in.Open(put_args.back(), room); !st.ok()) return Fail(st.ToString());
    auto stored = Put(client, in, id, put_args.size() == 1, metadata);
    if (!stored.ok()) return Fail(stored.status().ToString());
    std::printf("%s\n", stored->Hex().c_str());
    return 0;
  }
  if (*get) {
    auto id = ParseId(get_id);
    if (!id) return Fail(BadId(get_id));
    auto got = client.Get({*id}, get_ms, plasmon::GetOptions{get_fetch});
    if (!got.ok()) return Fail(got.status().ToString());
    const plasmon::ObjectBuffer& b = (*got)[0];
    if (!b.valid()) return Fail(b.status().ToString());
    int fd = STDOUT_FILENO;
    if (!out_path.empty()) {
      fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) return Fail("cannot open " + out_path + ": " + std::strerror(errno));
    }
    bool ok = WriteOutput(fd, b.data(), b.size());
    if (fd != STDOUT_FILENO && ::close(fd) != 0) ok = false;
    if (!ok) return Fail("cannot write " + (out_path.empty() ? "stdout" : out_path) + ": " +
                         std::strerror(errno));
    return 0;
  }
  if (*ls) {
    auto list = client.List();
    if (!list.ok()) return Fail(list.status().ToString());
    if (ls_json) {
      nlohmann::json rows = nlohmann::json::array();
      for (const plasmon::ObjectInfo& o : *list) {
        char digest[17];
        std::snprintf(digest, sizeof(digest), "%016llx", static_cast<unsigned long long>(o.digest));
        rows.push_back({{"id", o.id.Hex()},
                        {"state", o.state == plasmon::ObjectState::kSealed ? "sealed" : "created"},
                        {"data_size", o.data_size},
                        {"metadata_size", o.metadata_size},
                        {"ref_count", o.ref_count},
                        {"digest", o.digest_valid ? nlohmann::json(digest) : nlohmann::json()},
                        {"create_time_us", o.create_time_us},
                        {"last_access_us", o.last_access_us},
                        {"seal_time_us", o.seal_time_us},
                        {"create_to_seal_us", o.create_to_seal_us()}});
      }
      std::printf("%s\n", rows.dump(2).c_str());
      return 0;
    }
    std::printf("%-40s  %-7s  %12s  %8s  %4s  %-16s  %-20s  %s\n", "ID", "STATE", "DATA",
                "METADATA", "REFS", "DIGEST", "CREATED", "SEALED_AFTER");
    for (const plasmon::ObjectInfo& o : *list) {
      char created[32];
      time_t t = static_cast<time_t>(o.create_time_us / 1000000);
      struct tm tm;
      gmtime_r(&t, &tm);
      std::strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
      char digest[17] = "-";
      if (o.digest_valid)
        std::snprintf(digest, sizeof(digest), "%016llx", static_cast<unsigned long long>(o.digest));
      char sealed_after[32] = "-";  // from Create to Seal
      if (o.create_to_seal_us() >= 0)
        std::snprintf(sealed_after, sizeof(sealed_after), "%.3f ms",
                      static_cast<double>(o.create_to_seal_us()) / 1000.0);
      std::printf("%-40s  %-7s  %12llu  %8llu  %4u  %-16s  %-20s  %s\n", o.id.Hex().c_str(),
                  o.state == plasmon::ObjectState::kSealed ? "sealed" : "created",
                  static_cast<unsigned long long>(o.data_size),
                  static_cast<unsigned long long>(o.metadata_size), o.ref_count, digest, created,
                  sealed_after);
    }
    return 0;
  }
  if (*rm) {
    std::vector<plasmon::ObjectID> ids;
    std::string bad;
    if (!ParseIds(rm_ids, &ids, &bad)) return Fail(BadId(bad));
    auto res = client.Delete(ids);
    if (!res.ok()) return Fail(res.status().ToString());
    return ReportEach(*res);
  }
  if (*digest_cmd) {
    int rc = 0;
    for (const std::string& s : digest_ids) {
      auto id = ParseId(s);
      if (!id) return Fail(BadId(s));
      auto d = client.Digest(*id);
      if (d.ok()) {
        std::printf("%s\t%016llx\n", id->Hex().c_str(), static_cast<unsigned long long>(*d));
      } else if (d.status().IsDisconnected()) {
        return Fail(d.status().ToString());
      } else {
        std::fprintf(stderr, "plasmon: %s\n", d.status().ToString().c_str());
        rc = 1;
      }
    }
    return rc;
  }
  if (*refresh) {
    std::vector<plasmon::ObjectID> ids;
    std::string bad;
    if (!ParseIds(refresh_ids, &ids, &bad)) return Fail(BadId(bad));
    auto res = client.Refresh(ids);
    if (!res.ok()) return Fail(res.status().ToString());
    return ReportEach(*res);
  }
  if (*fetch) {
    std::vector<plasmon::ObjectID> ids;
    for (const std::string& s : fetch_ids) {
      auto id = ParseId(s);
      if (!id) return Fail(BadId(s));
      ids.push_back(*id);
    }
    auto t0 = std::chrono::steady_clock::now();
    plasmon::FetchReport report;
    auto res = client.Fetch(ids, fetch_ms, &report);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!res.ok()) return Fail(res.status().ToString());
    int rc = 0;
    for (size_t i = 0; i < ids.size(); i++) {
      const plasmon::Status& st = (*res)[i];
      if (st.ok()) {
        std::printf("%s\tlocal\n", ids[i].Hex().c_str());
        // The transfer's own rate, as the store measured it (what
        // plasmon-bench fetch reports), apart from this call's overheads.
        const plasmon::FetchReport::Id& x = report.ids.at(i);
        if (x.pulled && x.transfer_us > 0)
          std::fprintf(stderr,
                       "plasmon: %s: pulled %s over %s: transfer %.3f ms at %.2f GB/s "
                       "(lookup %.3f ms, digest %.3f ms)\n",
                       ids[i].Hex().c_str(), plasmon::FormatSize(x.bytes).c_str(),
                       x.rdma ? "RDMA" : "TCP", x.transfer_us / 1e3,
                       static_cast<double>(x.bytes) / x.transfer_us / 1e3, x.lookup_us / 1e3,
                       x.digest_us / 1e3);
      } else {
        std::fprintf(stderr, "plasmon: %s: %s\n", ids[i].Hex().c_str(), st.ToString().c_str());
        rc = 1;
      }
    }
    std::fprintf(stderr, "plasmon: fetch took %.3f ms\n", ms);
    return rc;
  }
  if (*where) {
    auto id = ParseId(where_id);
    if (!id) return Fail(BadId(where_id));
    plasmon::HoldersLeftOut left_out;
    auto holders = client.Where(*id, &left_out);
    if (!holders.ok()) return Fail(holders.status().ToString());
    if (left_out.malformed > 0)
      std::fprintf(stderr, "plasmon: skipped %llu malformed directory record%s (the store logs them)\n",
                   static_cast<unsigned long long>(left_out.malformed),
                   left_out.malformed == 1 ? "" : "s");
    if (holders->empty()) return Fail("object " + id->Hex() + " is on no node");
    for (const plasmon::ObjectHolder& h : *holders) {
      std::printf("%s%s\t%llu bytes\n", h.node_id.c_str(), h.alive ? "" : " (dead)",
                  static_cast<unsigned long long>(h.data_size + h.metadata_size));
    }
    if (left_out.not_shown > 0)
      std::printf("... and %llu more holder%s not shown\n",
                  static_cast<unsigned long long>(left_out.not_shown),
                  left_out.not_shown == 1 ? "" : "s");
    return 0;
  }
  if (*stats) {
    auto s = client.Stats();
    if (!s.ok()) return Fail(s.status().ToString());
    if (stats_json) {
      // The names of plasmon-store --metrics (docs: README), in plain counts.
      nlohmann::json j = {{"capacity_bytes", s->capacity},   {"used_bytes", s->used},
                          {"objects", s->object_count},      {"sealed_objects", s->sealed_count},
                          {"evictions", s->evictions},       {"evicted_bytes", s->evicted_bytes},
                          {"clients", s->clients},           {"fetched", s->fetched},
                          {"fetched_bytes", s->fetched_bytes}, {"fetched_verbs", s->fetched_verbs},
                          {"pulls_failed", s->pulls_failed}};
      std::printf("%s\n", j.dump(2).c_str());
      return 0;
    }
    double pct = s->capacity ? 100.0 * static_cast<double>(s->used) / static_cast<double>(s->capacity) : 0;
    std::printf("capacity       %s (%llu bytes)\n", plasmon::FormatSize(s->capacity).c_str(),
                static_cast<unsigned long long>(s->capacity));
    std::printf("used           %s (%llu bytes, %.1f%%)\n", plasmon::FormatSize(s->used).c_str(),
                static_cast<unsigned long long>(s->used), pct);
    std::printf("objects        %llu (%llu sealed)\n",
                static_cast<unsigned long long>(s->object_count),
                static_cast<unsigned long long>(s->sealed_count));
    std::printf("evictions      %llu (%s)\n", static_cast<unsigned long long>(s->evictions),
                plasmon::FormatSize(s->evicted_bytes).c_str());
    std::printf("clients        %llu\n", static_cast<unsigned long long>(s->clients));
    std::printf("fetched        %llu (%s; %llu by RDMA), %llu failed pulls\n",
                static_cast<unsigned long long>(s->fetched),
                plasmon::FormatSize(s->fetched_bytes).c_str(),
                static_cast<unsigned long long>(s->fetched_verbs),
                static_cast<unsigned long long>(s->pulls_failed));
    return 0;
  }
  return 0;
}
