#include "store/directory.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>
#include <unordered_set>
#include <utility>

#include "core/clock.h"
#include "core/limited_log.h"

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
// Returns each command's error reply ("" for none); fails only when the
// connection does.
Result<std::vector<std::string>> Pipeline(redisContext* c,
                                          const std::vector<std::vector<std::string>>& cmds) {
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
  std::vector<std::string> errors(cmds.size());
  for (size_t i = 0; i < cmds.size(); i++) {
    void* raw = nullptr;
    if (redisGetReply(c, &raw) != REDIS_OK) return ContextError(c, cmds[i][0]);
    Reply r(static_cast<redisReply*>(raw));
    if (r->type == REDIS_REPLY_ERROR) errors[i].assign(r->str, r->len);
  }
  return errors;
}

// A string element of a reply (bulk or status), or nullopt.
std::optional<std::string> StringOf(const redisReply* r) {
  if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS) return std::nullopt;
  return std::string(r->str, r->len);
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
    : opts_(std::move(opts)),
      start_time_ms_(WallMicros() / 1000),
      lookup_conn_(opts_),
      client_lookup_conn_(opts_) {}

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

bool Directory::Publish(const ObjectID& id, uint64_t data_size, uint64_t metadata_size,
                        bool digest_valid, uint64_t digest) {
  bool first;
  {
    std::lock_guard<std::mutex> l(mu_);
    published_[id] = {data_size, metadata_size, digest_valid, digest};
    first = queue_.empty();
    queue_.push_back({true, id});
  }
  if (first && !opts_.caller_kicks) cv_.notify_one();
  return first;
}

bool Directory::Withdraw(const ObjectID& id) {
  bool first;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (published_.erase(id) == 0) return false;
    first = queue_.empty();
    queue_.push_back({false, id});
  }
  if (first && !opts_.caller_kicks) cv_.notify_one();
  return first;
}

bool Directory::synced() const {
  std::lock_guard<std::mutex> l(mu_);
  return synced_;
}

Directory::Counters Directory::counters() const {
  std::lock_guard<std::mutex> l(mu_);
  return {synced_, queue_.size(), failed_updates_,
          lookups_scanned_.load(std::memory_order_relaxed),
          lookups_scripted_.load(std::memory_order_relaxed)};
}

// Renews this node's record in one step, and says whether it had to create
// it (1) or replace a malformed one (2): either way Redis lost what this node
// registered, and most likely what it published too (FLUSHALL, a failover to
// an empty replica, a restart without persistence, or a stall past the TTL).
// A node ID that is new in the set of nodes says the same. KEYS: the node
// record, the set of nodes. ARGV: TTL in ms, node ID, then field, value, ...
static const char* kHeartbeatScript =
    "local lost = 0 "
    "local kind = redis.call('TYPE', KEYS[1])['ok'] "
    "if kind ~= 'hash' then "
    "  lost = 1 "
    "  if kind ~= 'none' then redis.call('DEL', KEYS[1]) lost = 2 end "
    "end "
    "redis.call('HSET', KEYS[1], unpack(ARGV, 3)) "
    "redis.call('PEXPIRE', KEYS[1], ARGV[1]) "
    "if redis.pcall('SADD', KEYS[2], ARGV[2]) == 1 and lost == 0 then lost = 1 end "
    "return lost";

Status Directory::Heartbeat(RedisConnection* c, bool* lost) {
  std::vector<std::string> cmd = {"EVAL",
                                  kHeartbeatScript,
                                  "2",
                                  NodeKey(opts_.node_id),
                                  opts_.prefix + ":nodes",
                                  std::to_string(opts_.ttl_ms),
                                  opts_.node_id,
                                  "node_id",
                                  opts_.node_id,
                                  "start_time_ms",
                                  std::to_string(start_time_ms_),
                                  "pid",
                                  std::to_string(::getpid())};
  for (const auto& [transport, addr] : opts_.endpoints) {
    cmd.push_back("ep:" + transport);
    cmd.push_back(addr);
  }
  Result<Reply> r = Command(c->get(), cmd);
  if (!r.ok()) return r.status();
  *lost = (*r)->type == REDIS_REPLY_INTEGER && (*r)->integer != 0;
  if (*lost && (*r)->integer == 2)
    spdlog::warn("replaced this node's malformed record {} in Redis", NodeKey(opts_.node_id));
  return Status::OK();
}

void Directory::Batch::Add(std::vector<std::string> cmd, std::optional<ObjectID> object) {
  cmds.push_back(std::move(cmd));
  objects.push_back(object);
}

void Directory::AddUpdate(const Op& op, Batch* batch) {
  if (op.publish) {
    auto it = published_.find(op.id);
    if (it == published_.end()) return;  // withdrawn since; its withdraw op follows
    const Published& p = it->second;
    batch->Add({"HSET", ObjectKey(op.id), opts_.node_id,
                LocationValue(p.data_size, p.metadata_size, p.digest_valid, p.digest)},
               op.id);
    batch->Add({"SADD", HeldKey(), op.id.Hex()});
    batch->Add({"PUBLISH", SealedChannel(op.id), opts_.node_id});
  } else {
    batch->Add({"HDEL", ObjectKey(op.id), opts_.node_id}, op.id);
    batch->Add({"SREM", HeldKey(), op.id.Hex()});
  }
}

Status Directory::Send(RedisConnection* c, const Batch& batch) {
  if (batch.cmds.empty()) return Status::OK();
  Result<std::vector<std::string>> errors = Pipeline(c->get(), batch.cmds);
  if (!errors.ok()) return errors.status();
  Status first_error;
  for (size_t i = 0; i < batch.cmds.size(); i++) {
    const std::string& error = (*errors)[i];
    const std::optional<ObjectID>& object = batch.objects[i];
    if (object && error.rfind("WRONGTYPE", 0) == 0) {
      // Someone else's damage (the record is shared by the object's
      // holders): skip it, and try again at each heartbeat, so that the
      // update lands once the key is deleted.
      if (damaged_.insert(*object).second)
        LimitedLog(warnings_, spdlog::level::warn, "directory: damaged records written",
                   "cannot update the directory's record {}: it is not a hash ({}); retrying at "
                   "every heartbeat until it is deleted", batch.cmds[i][1], error);
      continue;
    }
    if (object && error.empty()) damaged_.erase(*object);
    // Anything else (READONLY, OOM, NOAUTH, or our own keys damaged) fails
    // the batch: the writer reconnects and registers again, replacing what is
    // its own.
    if (!error.empty() && first_error.ok())
      first_error = Status::IOError("redis " + batch.cmds[i][0] + " " + batch.cmds[i][1] + ": " +
                                    error);
  }
  return first_error;
}

Status Directory::Resync(RedisConnection* c) {
  std::unordered_map<ObjectID, Published, ObjectIDHash> snapshot;
  {
    std::lock_guard<std::mutex> l(mu_);
    snapshot = published_;
    queue_.clear();  // the snapshot covers every queued update
  }
  bool lost = false;
  PLASMON_RETURN_IF_ERROR(Heartbeat(c, &lost));
  // The set of what this node published is its own: replace it if it is not a set.
  Result<Reply> type = Command(c->get(), {"TYPE", HeldKey()});
  if (!type.ok()) return type.status();
  std::string held_type = StringOf(type->get()).value_or("");
  if (held_type != "set" && held_type != "none") {
    spdlog::warn("replacing this node's malformed {} in Redis (a {}, not a set)", HeldKey(),
                 held_type);
    PLASMON_RETURN_IF_ERROR(Command(c->get(), {"DEL", HeldKey()}).status());
  }
  // Withdraw what an earlier life of this node published and we no longer hold.
  Result<Reply> held = Command(c->get(), {"SMEMBERS", HeldKey()});
  if (!held.ok()) return held.status();
  Batch batch;
  for (size_t i = 0; i < (*held)->elements; i++) {
    std::optional<std::string> member = StringOf((*held)->element[i]);
    if (!member) continue;
    auto id = ObjectID::FromHex(*member);
    if (id && snapshot.count(*id)) continue;
    if (id) batch.Add({"HDEL", ObjectKey(*id), opts_.node_id}, *id);
    batch.Add({"SREM", HeldKey(), *member});
  }
  for (const auto& [id, p] : snapshot) {
    batch.Add({"HSET", ObjectKey(id), opts_.node_id,
               LocationValue(p.data_size, p.metadata_size, p.digest_valid, p.digest)},
              id);
    batch.Add({"SADD", HeldKey(), id.Hex()});
    batch.Add({"PUBLISH", SealedChannel(id), opts_.node_id});
    if (batch.cmds.size() >= 3000) {
      PLASMON_RETURN_IF_ERROR(Send(c, batch));
      batch = Batch();
      // Keep the record alive through a long re-publication: expiring now
      // would read as a lost registration, and start it all over again.
      PLASMON_RETURN_IF_ERROR(Heartbeat(c, &lost));
    }
  }
  PLASMON_RETURN_IF_ERROR(Send(c, batch));
  spdlog::info("registered node {} in Redis at {} and published {} objects", opts_.node_id,
               opts_.redis, snapshot.size());
  return Status::OK();
}

Status Directory::Apply(RedisConnection* c, const std::vector<Op>& ops) {
  Batch batch;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const Op& op : ops) AddUpdate(op, &batch);
  }
  return Send(c, batch);
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
    bool lost = false;
    if (!ops.empty()) st = Apply(&conn, ops);
    if (st.ok() && Clock::now() >= next_heartbeat) {
      st = Heartbeat(&conn, &lost);
      next_heartbeat = Clock::now() + std::chrono::milliseconds(opts_.heartbeat_ms);
      if (st.ok() && !lost && !damaged_.empty()) {
        // Try the updates that met a damaged record again (a few per beat).
        std::vector<Op> retry;
        {
          std::lock_guard<std::mutex> g(mu_);
          auto it = damaged_cursor_ ? damaged_.upper_bound(*damaged_cursor_) : damaged_.begin();
          const size_t n = std::min(damaged_.size(), opts_.damaged_retries_per_heartbeat);
          while (retry.size() < n) {
            if (it == damaged_.end()) it = damaged_.begin();  // wrap around
            retry.push_back({published_.count(*it) > 0, *it});
            damaged_cursor_ = *it++;
          }
        }
        st = Apply(&conn, retry);
      }
    }
    l.lock();
    if (!st.ok()) {
      spdlog::warn("lost the directory: {}", st.ToString());
      failed_updates_ += ops.size();
      conn.Drop();
      synced_ = false;  // reconnect, then re-publish everything
    } else if (lost) {
      spdlog::warn("this node's record was gone from Redis (flushed, failed over to an empty "
                   "replica, or expired): registering again and re-publishing everything");
      synced_ = false;  // same connection; re-publish everything
    }
  }
}

// One round trip: the object's holders and each holder's node record. (A
// lookup that asked for the node records afterwards cost a second Redis round
// trip, a third of a 4 KiB fetch.) Node keys are not declared in KEYS: this
// needs a single Redis, as the key layout does anyway.
//
// Nothing in Redis can make it fail: a record of the wrong type, too large
// or with too many fields is skipped (counted, the first described), not
// run into (a WRONGTYPE error would fail the whole lookup), and the reply is
// bounded: at most ARGV[2] holders, and at most 4 x ARGV[2] fields looked at.
// An object record that is not a hash returns only its type.
// KEYS: the object's record. ARGV: the node records' prefix, the most
// holders to return. Reply: 'hash', fields in the object's record, holders
// skipped, the first problem, {node, location, ...} kept, then each kept
// holder's node record ({} if it has none).
static const char* kLookupScript =
    "local kind = redis.call('TYPE', KEYS[1])['ok'] "
    "if kind ~= 'hash' and kind ~= 'none' then return {kind} end "
    "local out = {'hash', 0, 0, '', {}} "
    "if kind == 'none' then return out end "
    "local obj, max = out[5], tonumber(ARGV[2]) "
    "local kept, skipped, looked, problem, seen, cursor = 0, 0, 0, '', {}, '0' "
    "local function skip(what) "
    "  skipped = skipped + 1 "
    "  if problem == '' then problem = what end "
    "end "
    "repeat "
    "  local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 1000) "
    "  cursor = page[1] "
    "  local kv = page[2] "
    "  for i = 1, #kv, 2 do "
    "    local node, loc = kv[i], kv[i + 1] "
    "    if kept < max and looked < 4 * max and not seen[node] then "
    "      seen[node] = true "
    "      looked = looked + 1 "
    "      local key = ARGV[1] .. node "
    "      if #node > 255 then skip('a node ID of ' .. #node .. ' bytes') "
    "      elseif #loc > 64 then skip('the location of ' .. node .. ' has ' .. #loc .. ' bytes') "
    "      else "
    "        local t = redis.call('TYPE', key)['ok'] "
    "        local rec = {} "
    "        if t == 'hash' then "
    "          local n = redis.call('HLEN', key) "
    "          if n > 64 then t = 'hash of ' .. n .. ' fields' else "
    "            rec = redis.call('HGETALL', key) "
    "            for j = 1, #rec do "
    "              if #rec[j] > 1024 then t = 'hash with a field of ' .. #rec[j] .. ' bytes' end "
    "            end "
    "          end "
    "        end "
    "        if t ~= 'hash' and t ~= 'none' then "
    "          skip(key .. ' is a ' .. t .. ', not a node record') "
    "        else "
    "          kept = kept + 1 "
    "          obj[#obj + 1] = node "
    "          obj[#obj + 1] = loc "
    "          out[#out + 1] = rec "
    "        end "
    "      end "
    "    end "
    "  end "
    "until cursor == '0' or kept >= max or looked >= 4 * max "
    "out[2] = redis.call('HLEN', KEYS[1]) "
    "out[3] = skipped "
    "out[4] = problem "
    "return out";

Result<std::vector<ObjectLocationRecord>> Directory::Lookup(const ObjectID& id,
                                                            NodeRecords nodes) {
  std::lock_guard<std::mutex> l(lookup_mu_);
  Result<LookupResult> r = Query(&lookup_conn_, id, nodes);
  if (!r.ok()) return r.status();
  CountLookup(*r);
  return std::move(r->holders);
}

Result<LookupResult> Directory::LookupForClient(const ObjectID& id) {
  std::lock_guard<std::mutex> l(client_lookup_mu_);
  return Query(&client_lookup_conn_, id);
}

namespace {

// The lookup script's name in Redis's script cache: its SHA1 in hex.
const std::string& LookupScriptSha() {
  static const std::string sha = [] {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    std::string hex;
    if (EVP_Digest(kLookupScript, std::strlen(kLookupScript), md, &n, EVP_sha1(), nullptr) != 1)
      return hex;  // EVAL every time
    static const char* kDigits = "0123456789abcdef";
    for (unsigned int i = 0; i < n; i++) {
      hex += kDigits[md[i] >> 4];
      hex += kDigits[md[i] & 15];
    }
    return hex;
  }();
  return sha;
}

bool IsNoScript(std::string_view error) { return error.find("NOSCRIPT") != std::string_view::npos; }

// A node record's start_time_ms (0 if it has none that parses).
uint64_t StartTimeOf(const std::vector<std::string>& record) {
  for (size_t j = 0; j + 1 < record.size(); j += 2) {
    if (record[j] != "start_time_ms") continue;
    uint64_t v = 0;
    const std::string& x = record[j + 1];
    std::from_chars(x.data(), x.data() + x.size(), v);
    return v;
  }
  return 0;
}

}  // namespace

Result<LookupResult> Directory::Query(RedisConnection* conn, const ObjectID& id,
                                      NodeRecords nodes) {
  Status st = conn->Ensure(2000);
  if (!st.ok()) return st;
  if (nodes == NodeRecords::kCached && node_cache_enabled()) {
    Result<Reply> scan = Command(conn->get(), ScanCommand(id));
    if (scan.ok()) {
      if (std::optional<LookupResult> found = OnScanReply(id, scan->get())) return *found;
    } else if (conn->get()->err != 0) {  // the connection failed, not the command
      conn->Drop();
      return scan.status();
    }
    // An error reply (a record of the wrong type) or a holder not cached:
    // the script says what is there.
  }
  Result<Reply> r = Command(conn->get(), LookupCommand(id));
  if (!r.ok() && IsNoScript(r.status().message()))
    r = Command(conn->get(), LookupCommand(id, /*by_sha=*/false));  // loads it again
  if (!r.ok()) {
    conn->Drop();
    return r.status();
  }
  return OnLookupReply(id, r->get());
}

std::vector<std::string> Directory::LookupCommand(const ObjectID& id, bool by_sha) const {
  if (by_sha && !LookupScriptSha().empty())
    return {"EVALSHA", LookupScriptSha(), "1", ObjectKey(id), NodeKey(""),
            std::to_string(kMaxLookupHolders)};
  return {"EVAL", kLookupScript, "1", ObjectKey(id), NodeKey(""), std::to_string(kMaxLookupHolders)};
}

Result<LookupResult> Directory::OnLookupReply(const ObjectID& id, const redisReply* all) {
  const std::string key = ObjectKey(id);
  std::optional<std::string> kind;
  if (all->type == REDIS_REPLY_ARRAY && all->elements >= 1) kind = StringOf(all->element[0]);
  if (kind && *kind != "hash")
    return Status::Corruption("the directory's record " + key + " is malformed: a " + *kind +
                              ", not a hash");
  if (!kind || all->elements < 5 || all->element[1]->type != REDIS_REPLY_INTEGER ||
      all->element[2]->type != REDIS_REPLY_INTEGER || !StringOf(all->element[3]) ||
      all->element[4]->type != REDIS_REPLY_ARRAY)
    return Status::ProtocolError("unexpected reply to the lookup script");
  LookupReply reply;
  reply.fields = static_cast<uint64_t>(std::max<long long>(all->element[1]->integer, 0));
  reply.malformed_nodes = static_cast<uint64_t>(std::max<long long>(all->element[2]->integer, 0));
  reply.problem = *StringOf(all->element[3]);
  reply.object = Strings(all->element[4]);
  for (size_t i = 5; i < all->elements; i++) {
    if (all->element[i]->type == REDIS_REPLY_ARRAY) {
      reply.nodes.push_back(Strings(all->element[i]));
    } else {
      reply.nodes.push_back(std::nullopt);
    }
  }
  if (node_cache_enabled()) {
    // The script keeps a holder's node record only if it is well formed, and
    // gives {} for a node without one (its record expired: dead); cache both
    // (reply.object pairs up with reply.nodes). Replies from the three
    // connections can be handled out of order: a record never replaces one
    // of a later start of the same node.
    const int64_t now = MonoMicros();
    std::lock_guard<std::mutex> l(node_cache_mu_);
    if (node_cache_.size() > kMaxCachedNodes) node_cache_.clear();
    for (size_t k = 0; k < reply.nodes.size() && 2 * k < reply.object.size(); k++) {
      if (!reply.nodes[k]) continue;
      const std::vector<std::string>& record = *reply.nodes[k];
      auto [it, added] = node_cache_.try_emplace(reply.object[2 * k]);
      CachedNode& c = it->second;
      if (!added && !record.empty() && !c.record.empty() &&
          StartTimeOf(c.record) > StartTimeOf(record))
        continue;
      c.record = record;
      c.cached_us = now;
    }
  }
  return Parsed(id, reply);
}

LookupResult Directory::Parsed(const ObjectID& id, const LookupReply& reply) {
  LookupResult found = ParseLookupReply(id, reply);
  if (found.malformed > 0)
    LimitedLog(warnings_, spdlog::level::warn, "directory: malformed records looked up",
               "lookup of {} skipped {} malformed directory record{} (first: {})", id.Hex(),
               found.malformed, found.malformed == 1 ? "" : "s", found.problem);
  return found;
}

std::vector<std::string> Directory::ScanCommand(const ObjectID& id) const {
  // A small record comes back in one page: all of it if Redis keeps it as a
  // listpack (up to hash-max-listpack-entries, 128 by default); a larger one
  // (a hashtable) in pages of about COUNT / 2 fields (Redis 7.0 counts
  // fields and values). A record that needs more pages goes to the script,
  // which counts what it leaves out.
  return {"HSCAN", ObjectKey(id), "0", "COUNT", std::to_string(kMaxLookupHolders)};
}

std::optional<LookupResult> Directory::OnScanReply(const ObjectID& id, const redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[1]->type != REDIS_REPLY_ARRAY)
    return std::nullopt;
  const std::optional<std::string> cursor = StringOf(r->element[0]);
  const redisReply* kv = r->element[1];
  if (!cursor || *cursor != "0" || kv->elements % 2 != 0) return std::nullopt;
  LookupReply reply;
  reply.fields = kv->elements / 2;
  reply.object = Strings(kv);
  const int64_t now = MonoMicros();
  const int64_t ttl_us = int64_t{opts_.node_cache_ms} * 1000;
  {
    std::lock_guard<std::mutex> l(node_cache_mu_);
    for (size_t i = 0; i + 1 < reply.object.size(); i += 2) {
      const std::string& node = reply.object[i];
      // The script's limits: what it would skip, it should say why.
      if (node.size() > 255 || reply.object[i + 1].size() > 64) return std::nullopt;
      auto it = node_cache_.find(node);
      if (it == node_cache_.end() || now - it->second.cached_us >= ttl_us) return std::nullopt;
      reply.nodes.push_back(it->second.record);
    }
  }
  LookupResult found = Parsed(id, reply);
  for (ObjectLocationRecord& h : found.holders) h.node_cached = true;
  found.scanned = true;
  return found;
}

LookupResult ParseLookupReply(const ObjectID& id, const LookupReply& reply) {
  const std::vector<std::string>& obj = reply.object;
  LookupResult out;
  out.malformed = reply.malformed_nodes;
  out.problem = reply.problem;
  const size_t pairs = obj.size() / 2;
  for (size_t i = 0; i / 2 < std::min<uint64_t>(pairs, kMaxLookupHolders); i += 2) {
    ObjectLocationRecord rec;
    rec.node_id = obj[i];
    const std::string& value = obj[i + 1];
    if (!ParseLocationValue(value, &rec)) {
      out.malformed++;
      if (out.problem.empty())
        out.problem = "the location '" + value.substr(0, 64) + "' of " + id.Hex() + " on node " +
                      rec.node_id.substr(0, 255);
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
    out.holders.push_back(std::move(rec));
  }
  // Every field of the object's record is a holder, a malformed one, or left out.
  const uint64_t accounted = out.holders.size() + out.malformed;
  const uint64_t fields = std::max<uint64_t>(reply.fields, pairs + reply.malformed_nodes);
  out.omitted = fields > accounted ? fields - accounted : 0;
  return out;
}

// ---- LoopLookups ----

LoopLookups::LoopLookups(EventLoop* loop, Directory* directory)
    : loop_(loop), directory_(directory) {}

LoopLookups::~LoopLookups() {
  pending_.clear();  // their Done is not run
  if (timer_ != EventLoop::kNoTimer) loop_->CancelTimer(timer_);
  CancelConnectTimer();
  if (redisAsyncContext* a = std::exchange(ac_, nullptr)) redisAsyncFree(a);
}

void LoopLookups::Connect() {
  std::string host, path;
  int port = 0;
  retry_at_us_ = MonoMicros() + kRetryUs;  // if this fails
  if (!ParseRedisAddress(directory_->options().redis, &host, &port, &path).ok()) return;
  if (path.empty()) {
    in_addr v4;
    in6_addr v6;
    if (::inet_pton(AF_INET, host.c_str(), &v4) != 1 && ::inet_pton(AF_INET6, host.c_str(), &v6) != 1) {
      // A name: hiredis would resolve it with a blocking getaddrinfo() on
      // the loop. The lookup worker serves this store instead.
      usable_ = false;
      return;
    }
  }
  redisAsyncContext* a =
      path.empty() ? redisAsyncConnect(host.c_str(), port) : redisAsyncConnectUnix(path.c_str());
  if (a == nullptr) return;
  if (a->err) {
    redisAsyncFree(a);
    return;
  }
  ac_ = a;
  a->data = this;
  a->ev.data = this;
  a->ev.addRead = &LoopLookups::Interest<EPOLLIN, true>;
  a->ev.delRead = &LoopLookups::Interest<EPOLLIN, false>;
  a->ev.addWrite = &LoopLookups::Interest<EPOLLOUT, true>;
  a->ev.delWrite = &LoopLookups::Interest<EPOLLOUT, false>;
  a->ev.cleanup = [](void* self) {
    auto* l = static_cast<LoopLookups*>(self);
    if (l->fd_ >= 0) l->loop_->Remove(l->fd_);
    l->fd_ = -1;
    l->events_ = 0;
  };
  redisAsyncSetConnectCallback(a, &LoopLookups::OnConnected);
  redisAsyncSetDisconnectCallback(a, &LoopLookups::OnDisconnected);
  fd_ = a->c.fd;
  if (!loop_->Add(fd_, 0, [this](uint32_t ev) {
        if (ac_ != nullptr && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) redisAsyncHandleRead(ac_);
        if (ac_ != nullptr && (ev & (EPOLLOUT | EPOLLERR)) != 0) redisAsyncHandleWrite(ac_);
      }).ok()) {
    fd_ = -1;
    Drop(Status::IOError("cannot watch the directory's connection"));
    return;
  }
  // If hiredis counts the connection as made already (a Unix socket may
  // connect at once), it is ready; otherwise its connect callback says so
  // when the socket is writable, within kTimeoutMs or it is dropped.
  if ((a->c.flags & REDIS_CONNECTED) != 0) {
    ready_ = true;
  } else {
    Watch(EPOLLOUT);
    connect_timer_ = loop_->AddTimerAfter(kTimeoutMs * 1000, [this] {
      connect_timer_ = EventLoop::kNoTimer;
      if (!ready_ && ac_ != nullptr)
        Drop(Status::Disconnected("cannot connect to Redis in " + std::to_string(kTimeoutMs) +
                                  " ms"));
    });
  }
  const std::string& password = directory_->options().password;
  if (!password.empty()) {
    const char* argv[] = {"AUTH", password.data()};
    const size_t lens[] = {4, password.size()};
    // Sent first; a refusal drops the connection (the lookups after it
    // fail the same way on the blocking path, with the reason).
    redisAsyncCommandArgv(
        a,
        [](redisAsyncContext* c, void* r, void*) {
          auto* reply = static_cast<redisReply*>(r);
          if (reply != nullptr && reply->type == REDIS_REPLY_ERROR)
            static_cast<LoopLookups*>(c->data)->Drop(
                Status::PermissionDenied("Redis refused the password"));
        },
        nullptr, 2, argv, lens);
  }
}

void LoopLookups::Watch(uint32_t events) {
  if (fd_ < 0 || events == events_) return;
  events_ = events;
  (void)loop_->Modify(fd_, events);
}

void LoopLookups::OnConnected(const redisAsyncContext* ac, int status) {
  auto* l = static_cast<LoopLookups*>(ac->data);
  l->CancelConnectTimer();
  if (status == REDIS_OK) {
    l->ready_ = true;
    return;
  }
  l->ac_ = nullptr;  // hiredis frees it
  l->Drop(Status::Disconnected("cannot connect to Redis at " + l->directory_->options().redis));
}

void LoopLookups::OnDisconnected(const redisAsyncContext* ac, int) {
  auto* l = static_cast<LoopLookups*>(ac->data);
  l->ac_ = nullptr;  // hiredis frees it
  l->Drop(Status::Disconnected("Redis closed the directory's connection"));
}

void LoopLookups::CancelConnectTimer() {
  if (connect_timer_ != EventLoop::kNoTimer) loop_->CancelTimer(connect_timer_);
  connect_timer_ = EventLoop::kNoTimer;
}

void LoopLookups::Drop(const Status& why) {
  CancelConnectTimer();
  ready_ = false;
  retry_at_us_ = MonoMicros() + kRetryUs;
  std::deque<Pending> failed;
  failed.swap(pending_);
  // Freed from inside a hiredis callback, it is freed when that returns.
  if (redisAsyncContext* a = std::exchange(ac_, nullptr)) redisAsyncFree(a);
  if (!in_send_) {
    for (Pending& p : failed) p.done(why);
    return;
  }
  for (Pending& p : failed)
    loop_->Post([alive = std::weak_ptr<bool>(alive_), done = std::move(p.done), why] {
      if (alive.lock()) done(why);  // not if this is gone (its Done are not run)
    });
}

bool LoopLookups::Start(const ObjectID& id, Done done, NodeRecords nodes) {
  if (!usable_) return false;
  if (!ready_) {
    if (ac_ == nullptr && MonoMicros() >= retry_at_us_) Connect();
    return false;
  }
  Pending p{0, id, std::move(done), MonoMicros() + kTimeoutMs * 1000, loop_->ExpectSoon()};
  p.scan = nodes == NodeRecords::kCached && directory_->node_cache_enabled();
  return Send(p, /*by_sha=*/true);
}

bool LoopLookups::Send(Pending& p, bool by_sha) {
  const std::vector<std::string> args =
      p.scan ? directory_->ScanCommand(p.id) : directory_->LookupCommand(p.id, by_sha);
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const std::string& x : args) {
    argv.push_back(x.data());
    lens.push_back(x.size());
  }
  const uint64_t seq = ++seq_;
  deferring_write_ = !in_reply_;
  write_wanted_ = false;
  const int sent = redisAsyncCommandArgv(ac_, &LoopLookups::OnReply, reinterpret_cast<void*>(seq),
                                         static_cast<int>(args.size()), argv.data(), lens.data());
  deferring_write_ = false;
  if (sent != REDIS_OK) {
    Drop(Status::Disconnected("cannot send a lookup to Redis"));
    return false;
  }
  p.seq = seq;
  pending_.push_back(std::move(p));
  ArmTimer();
  if (std::exchange(write_wanted_, false)) {
    // Written now; what the socket does not take, hiredis asks to watch
    // for (addWrite, not deferred any more). A failed write drops the
    // connection, which fails the lookups pending, this one too.
    in_send_ = true;
    redisAsyncHandleWrite(ac_);
    in_send_ = false;
  }
  return true;
}

void LoopLookups::OnReply(redisAsyncContext* ac, void* r, void* privdata) {
  auto* l = static_cast<LoopLookups*>(ac->data);
  const auto seq = reinterpret_cast<uint64_t>(privdata);
  // No reply: the context is going away (Drop or a disconnect fails them).
  if (r == nullptr || l->pending_.empty() || l->pending_.front().seq != seq) return;
  Pending p = std::move(l->pending_.front());
  l->pending_.pop_front();
  // What `done` starts (the fetcher's next lookups) is written when the
  // loop sees the socket writable, not from inside hiredis's reply loop.
  const bool outer = !std::exchange(l->in_reply_, true);
  struct Unmark {
    LoopLookups* l;
    bool outer;
    ~Unmark() {
      if (outer) l->in_reply_ = false;
    }
  } unmark{l, outer};
  const auto* reply = static_cast<const redisReply*>(r);
  if (p.scan) {
    std::optional<LookupResult> found;
    if (reply->type != REDIS_REPLY_ERROR) found = l->directory_->OnScanReply(p.id, reply);
    if (found) {
      l->directory_->CountLookup(*found);
      p.done(std::move(found->holders));
      return;
    }
    // Not every holder cached, or an error reply (a record of the wrong
    // type): the script goes behind those already sent, as below.
    p.scan = false;
    if (!l->Send(p, /*by_sha=*/true)) p.done(Status::Disconnected("cannot send a lookup to Redis"));
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    std::string error(reply->str, reply->len);
    // Redis lost the script (restarted, flushed, failed over): this one goes
    // again with the script itself, behind those already sent, which keeps
    // the replies in order; the script is cached again for the next ones.
    if (IsNoScript(error) && l->Send(p, /*by_sha=*/false)) return;
    p.done(Status::IOError("redis lookup: " + error));
    return;
  }
  Result<LookupResult> found = l->directory_->OnLookupReply(p.id, reply);
  if (!found.ok()) {
    p.done(found.status());
    return;
  }
  l->directory_->CountLookup(*found);
  p.done(std::move(found->holders));
}

void LoopLookups::ArmTimer() {
  if (timer_ != EventLoop::kNoTimer || pending_.empty()) return;
  timer_ = loop_->AddTimer(pending_.front().deadline_us, [this] {
    timer_ = EventLoop::kNoTimer;
    OnTimer();
  });
}

void LoopLookups::OnTimer() {
  if (pending_.empty()) return;
  if (pending_.front().deadline_us <= MonoMicros()) {
    Drop(Status::Disconnected("Redis did not answer a lookup in " + std::to_string(kTimeoutMs) +
                              " ms"));
    return;
  }
  ArmTimer();  // the oldest is younger than the one the timer was for
}

}  // namespace plasmon
