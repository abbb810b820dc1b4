#include "store/directory.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <unordered_set>

#include "core/clock.h"

namespace plasmon {

namespace {

using Clock = std::chrono::steady_clock;

// Owns a redisReply.
struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r != nullptr) freeReplyObject(r);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

timeval Tv(int ms) { return timeval{ms / 1000, (ms % 1000) * 1000}; }

Status ContextError(redisContext* c, const std::string& what) {
  return Status::Disconnected("redis " + what + ": " + (c != nullptr && c->err ? c->errstr : "no reply"));
}

// Runs one command given as arguments (binary-safe).
Result<Reply> Command(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()));
  if (r == nullptr) return ContextError(c, args[0]);
  Reply reply(r);
  if (reply->type == REDIS_REPLY_ERROR)
    return Status::IOError("redis " + args[0] + ": " + std::string(reply->str, reply->len));
  return reply;
}

// The elements of an array reply as strings ("" for one that has none).
std::vector<std::string> Strings(const redisReply* array) {
  std::vector<std::string> out;
  out.reserve(array->elements);
  for (size_t i = 0; i < array->elements; i++) {
    const redisReply* e = array->element[i];
    out.push_back(e->str != nullptr ? std::string(e->str, e->len) : std::string());
  }
  return out;
}

// Appends commands, then reads every reply: one round trip for the batch.
Status Pipeline(redisContext* c, const std::vector<std::vector<std::string>>& cmds) {
  for (const auto& args : cmds) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()) !=
        REDIS_OK)
      return ContextError(c, "append");
  }
  Status first_error;
  for (size_t i = 0; i < cmds.size(); i++) {
    void* raw = nullptr;
    if (redisGetReply(c, &raw) != REDIS_OK) return ContextError(c, cmds[i][0]);
    Reply r(static_cast<redisReply*>(raw));
    if (r->type == REDIS_REPLY_ERROR && first_error.ok())
      first_error = Status::IOError("redis " + cmds[i][0] + ": " + std::string(r->str, r->len));
  }
  return first_error;
}

// All of `s`: digits in `base` whose value fits 64 bits (no sign, space or prefix).
bool ParseU64(std::string_view s, int base, uint64_t* v) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v, base);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

std::string LocationValue(uint64_t data_size, uint64_t metadata_size, bool digest_valid,
                          uint64_t digest) {
  char buf[80];
  if (digest_valid) {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 ":%" PRIu64 ":%016" PRIx64, data_size,
                  metadata_size, digest);
  } else {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 ":%" PRIu64 ":-", data_size, metadata_size);
  }
  return buf;
}

bool ParseLocationValue(std::string_view v, ObjectLocationRecord* out) {
  size_t c1 = v.find(':');
  size_t c2 = c1 == std::string_view::npos ? c1 : v.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return false;
  std::string_view digest = v.substr(c2 + 1);
  bool digest_valid = digest != "-";
  uint64_t d, m, g = 0;
  if (!ParseU64(v.substr(0, c1), 10, &d) || !ParseU64(v.substr(c1 + 1, c2 - c1 - 1), 10, &m) ||
      (digest_valid && !ParseU64(digest, 16, &g)))
    return false;
  out->data_size = d;
  out->metadata_size = m;
  out->digest_valid = digest_valid;
  out->digest = g;
  return true;
}

Status ParseRedisAddress(const std::string& addr, std::string* host, int* port, std::string* path) {
  // Host and path go to hiredis as C strings.
  if (addr.find('\0') != std::string::npos)
    return Status::InvalidArgument("a NUL byte in the Redis address");
  if (addr.rfind("unix:", 0) == 0) {
    *path = addr.substr(5);
    if (path->empty()) return Status::InvalidArgument("empty Redis socket path in '" + addr + "'");
    return Status::OK();
  }
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == addr.size())
    return Status::InvalidArgument("Redis address '" + addr + "' is not HOST:PORT or unix:PATH");
  uint64_t p;
  if (!ParseU64(std::string_view(addr).substr(colon + 1), 10, &p) || p == 0 || p > 65535)
    return Status::InvalidArgument("bad port in Redis address '" + addr + "'");
  *host = addr.substr(0, colon);
  *port = static_cast<int>(p);
  return Status::OK();
}

RedisConnection::~RedisConnection() { Drop(); }

void RedisConnection::Drop() {
  if (ctx_ != nullptr) redisFree(ctx_);
  ctx_ = nullptr;
}

Status RedisConnection::Ensure(int timeout_ms) {
  if (ctx_ != nullptr && ctx_->err == 0) return Status::OK();
  Drop();
  std::string host, path;
  int port = 0;
  PLASMON_RETURN_IF_ERROR(ParseRedisAddress(opts_.redis, &host, &port, &path));
  redisContext* c = path.empty() ? redisConnectWithTimeout(host.c_str(), port, Tv(timeout_ms))
                                 : redisConnectUnixWithTimeout(path.c_str(), Tv(timeout_ms));
  if (c == nullptr || c->err) {
    Status st = ContextError(c, "connect to " + opts_.redis);
    if (c != nullptr) redisFree(c);
    return st;
  }
  redisSetTimeout(c, Tv(timeout_ms));
  if (path.empty()) redisEnableKeepAlive(c);
  ctx_ = c;
  if (!opts_.password.empty()) {
    Result<Reply> r = Command(ctx_, {"AUTH", opts_.password});
    if (!r.ok()) {
      Drop();
      return Status::InvalidArgument("Redis refused the password: " + r.status().message());
    }
  }
  return Status::OK();
}

Directory::Directory(DirectoryOptions opts)
    : opts_(std::move(opts)), start_time_ms_(WallMicros() / 1000), lookup_conn_(opts_) {}

Directory::~Directory() { Stop(); }

void Directory::Start() {
  // Create spdlog's registry here, on the caller's thread, not lazily from
  // two directory threads at once (TSan sees that as a race, the registry
  // living in an uninstrumented shared library).
  spdlog::default_logger_raw();
  thread_ = std::thread([this] { Run(); });
}

void Directory::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Directory::Publish(const ObjectID& id, uint64_t data_size, uint64_t metadata_size,
                        bool digest_valid, uint64_t digest) {
  {
    std::lock_guard<std::mutex> l(mu_);
    published_[id] = {data_size, metadata_size, digest_valid, digest};
    queue_.push_back({true, id});
  }
  cv_.notify_one();
}

void Directory::Withdraw(const ObjectID& id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (published_.erase(id) == 0) return;
    queue_.push_back({false, id});
  }
  cv_.notify_one();
}

bool Directory::synced() const {
  std::lock_guard<std::mutex> l(mu_);
  return synced_;
}

Status Directory::Heartbeat(RedisConnection* c) {
  std::vector<std::vector<std::string>> cmds;
  std::vector<std::string> hset = {"HSET", NodeKey(opts_.node_id), "node_id", opts_.node_id,
                                   "start_time_ms", std::to_string(start_time_ms_), "pid",
                                   std::to_string(::getpid())};
  for (const auto& [transport, addr] : opts_.endpoints) {
    hset.push_back("ep:" + transport);
    hset.push_back(addr);
  }
  cmds.push_back(std::move(hset));
  cmds.push_back({"PEXPIRE", NodeKey(opts_.node_id), std::to_string(opts_.ttl_ms)});
  cmds.push_back({"SADD", opts_.prefix + ":nodes", opts_.node_id});
  return Pipeline(c->get(), cmds);
}

Status Directory::Resync(RedisConnection* c) {
  std::unordered_map<ObjectID, Published, ObjectIDHash> snapshot;
  {
    std::lock_guard<std::mutex> l(mu_);
    snapshot = published_;
    queue_.clear();  // the snapshot covers every queued update
  }
  PLASMON_RETURN_IF_ERROR(Heartbeat(c));
  // Withdraw what an earlier life of this node published and we no longer hold.
  Result<Reply> held = Command(c->get(), {"SMEMBERS", HeldKey()});
  if (!held.ok()) return held.status();
  std::vector<std::vector<std::string>> cmds;
  for (size_t i = 0; i < (*held)->elements; i++) {
    const redisReply* e = (*held)->element[i];
    auto id = ObjectID::FromHex(std::string(e->str, e->len));
    if (id && snapshot.count(*id)) continue;
    std::string member(e->str, e->len);
    if (id) cmds.push_back({"HDEL", ObjectKey(*id), opts_.node_id});
    cmds.push_back({"SREM", HeldKey(), member});
  }
  for (const auto& [id, p] : snapshot) {
    cmds.push_back({"HSET", ObjectKey(id), opts_.node_id,
                    LocationValue(p.data_size, p.metadata_size, p.digest_valid, p.digest)});
    cmds.push_back({"SADD", HeldKey(), id.Hex()});
    cmds.push_back({"PUBLISH", SealedChannel(id), opts_.node_id});
    if (cmds.size() >= 3000) {
      PLASMON_RETURN_IF_ERROR(Pipeline(c->get(), cmds));
      cmds.clear();
    }
  }
  PLASMON_RETURN_IF_ERROR(Pipeline(c->get(), cmds));
  spdlog::info("registered node {} in Redis at {} and published {} objects", opts_.node_id,
               opts_.redis, snapshot.size());
  return Status::OK();
}

Status Directory::Apply(RedisConnection* c, const std::vector<Op>& ops) {
  std::vector<std::vector<std::string>> cmds;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const Op& op : ops) {
      if (op.publish) {
        auto it = published_.find(op.id);
        if (it == published_.end()) continue;  // withdrawn since; its withdraw op follows
        const Published& p = it->second;
        cmds.push_back({"HSET", ObjectKey(op.id), opts_.node_id,
                        LocationValue(p.data_size, p.metadata_size, p.digest_valid, p.digest)});
        cmds.push_back({"SADD", HeldKey(), op.id.Hex()});
        cmds.push_back({"PUBLISH", SealedChannel(op.id), opts_.node_id});
      } else {
        cmds.push_back({"HDEL", ObjectKey(op.id), opts_.node_id});
        cmds.push_back({"SREM", HeldKey(), op.id.Hex()});
      }
    }
  }
  return Pipeline(c->get(), cmds);
}

void Directory::Run() {
  RedisConnection conn(opts_);
  auto next_heartbeat = Clock::now();
  int backoff_ms = 100;
  bool reported_down = false;
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    if (!synced_) {
      l.unlock();
      Status st = conn.Ensure(2000);
      if (st.ok()) st = Resync(&conn);
      l.lock();
      if (!st.ok()) {
        conn.Drop();
        if (!reported_down) {
          spdlog::warn("directory unavailable ({}); serving locally, retrying", st.ToString());
          reported_down = true;
        }
        cv_.wait_for(l, std::chrono::milliseconds(backoff_ms), [&] { return stop_; });
        backoff_ms = std::min(backoff_ms * 2, 2000);
        continue;
      }
      synced_ = true;
      reported_down = false;
      backoff_ms = 100;
      next_heartbeat = Clock::now() + std::chrono::milliseconds(opts_.heartbeat_ms);
    }
    cv_.wait_until(l, next_heartbeat, [&] { return stop_ || !queue_.empty(); });
    if (stop_) break;
    std::vector<Op> ops(queue_.begin(), queue_.end());
    queue_.clear();
    l.unlock();
    Status st;
    if (!ops.empty()) st = Apply(&conn, ops);
    if (st.ok() && Clock::now() >= next_heartbeat) {
      st = Heartbeat(&conn);
      next_heartbeat = Clock::now() + std::chrono::milliseconds(opts_.heartbeat_ms);
    }
    l.lock();
    if (!st.ok()) {
      spdlog::warn("lost the directory: {}", st.ToString());
      conn.Drop();
      synced_ = false;  // reconnect, then re-publish everything
    }
  }
}

// One round trip: the object's holders and each holder's node record. (A
// lookup that asked for the node records afterwards cost a second Redis round
// trip, a third of a 4 KiB fetch.) Node keys are not declared in KEYS: this
// needs a single Redis, as the key layout does anyway.
static const char* kLookupScript =
    "local obj = redis.call('HGETALL', KEYS[1]) "
    "local out = {obj} "
    "for i = 1, #obj, 2 do out[#out + 1] = redis.call('HGETALL', ARGV[1] .. obj[i]) end "
    "return out";

Result<std::vector<ObjectLocationRecord>> Directory::Lookup(const ObjectID& id) {
  std::lock_guard<std::mutex> l(lookup_mu_);
  Status st = lookup_conn_.Ensure(2000);
  if (!st.ok()) return st;
  Result<Reply> r = Command(lookup_conn_.get(),
                            {"EVAL", kLookupScript, "1", ObjectKey(id), NodeKey("")});
  if (!r.ok()) {
    lookup_conn_.Drop();
    return r.status();
  }
  const redisReply* all = r->get();
  if (all->type != REDIS_REPLY_ARRAY || all->elements < 1 ||
      all->element[0]->type != REDIS_REPLY_ARRAY)
    return Status::ProtocolError("unexpected reply to the lookup script");
  LookupReply reply;
  reply.object = Strings(all->element[0]);
  for (size_t i = 1; i < all->elements; i++) {
    if (all->element[i]->type == REDIS_REPLY_ARRAY) {
      reply.nodes.push_back(Strings(all->element[i]));
    } else {
      reply.nodes.push_back(std::nullopt);
    }
  }
  return ParseLookupReply(id, reply);
}

std::vector<ObjectLocationRecord> ParseLookupReply(const ObjectID& id, const LookupReply& reply) {
  const std::vector<std::string>& obj = reply.object;
  std::vector<ObjectLocationRecord> out;
  for (size_t i = 0; i + 1 < obj.size(); i += 2) {
    ObjectLocationRecord rec;
    rec.node_id = obj[i];
    const std::string& value = obj[i + 1];
    if (!ParseLocationValue(value, &rec)) {
      spdlog::warn("ignoring malformed location '{}' of {} on node {}", value, id.Hex(), rec.node_id);
      continue;
    }
    const size_t node_index = i / 2;
    if (node_index < reply.nodes.size() && reply.nodes[node_index]) {
      const std::vector<std::string>& node = *reply.nodes[node_index];
      rec.alive = !node.empty();  // the record expires with its heartbeat
      for (size_t j = 0; j + 1 < node.size(); j += 2) {
        if (node[j].rfind("ep:", 0) == 0) rec.endpoints[node[j].substr(3)] = node[j + 1];
      }
    }
    out.push_back(std::move(rec));
  }
  return out;
}

}  // namespace plasmon
