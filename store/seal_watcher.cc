#include "store/seal_watcher.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace plasmon {

namespace {
constexpr int kConnectTimeoutMs = 2000;
constexpr int kRetryMs = 500;
constexpr size_t kMaxPerCommand = 512;  // channels in one (UN)SUBSCRIBE

Status SendCommand(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()) != REDIS_OK)
    return Status::Disconnected(std::string("redis append: ") + c->errstr);
  return Status::OK();
}
}  // namespace

SealWatcher::SealWatcher(DirectoryOptions opts, Callback cb)
    : opts_(std::move(opts)), cb_(std::move(cb)), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

SealWatcher::~SealWatcher() { Stop(); }

void SealWatcher::Start() { thread_ = std::thread([this] { Run(); }); }

void SealWatcher::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  Wake();
  if (thread_.joinable()) thread_.join();
}

void SealWatcher::Wake() {
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)n;
}

void SealWatcher::Watch(const ObjectID& id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!watched_.insert(id).second) return;
    changed_.insert(id);
  }
  Wake();
}

void SealWatcher::Unwatch(const ObjectID& id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (watched_.erase(id) == 0) return;
    changed_.insert(id);
  }
  Wake();
}

void SealWatcher::Run() {
  RedisConnection conn(opts_);
  bool was_down = false;
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (stop_) return;
    }
    Status st = conn.Ensure(kConnectTimeoutMs);
    if (st.ok()) {
      {
        // A fresh connection subscribes to everything watched.
        std::lock_guard<std::mutex> l(mu_);
        subscribed_.clear();
        changed_ = watched_;
      }
      if (was_down) spdlog::info("seal watcher: connected to Redis again");
      was_down = false;
      st = Serve(&conn);
      conn.Drop();
    }
    std::unique_lock<std::mutex> l(mu_);
    if (stop_) return;
    if (!was_down) spdlog::warn("seal watcher: {}; retrying", st.ToString());
    was_down = true;
    cv_.wait_for(l, std::chrono::milliseconds(kRetryMs), [&] { return stop_; });
  }
}

Status SealWatcher::Serve(RedisConnection* conn) {
  redisContext* c = conn->get();
  const std::string channel_prefix = SealedChannelPrefix(opts_.prefix);
  for (;;) {
    // What changed since the last round, netted against what Redis has: an
    // Unwatch and a Watch of one ID in between cancel out.
    std::vector<ObjectID> sub, unsub;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return Status::OK();
      for (const ObjectID& id : changed_) {
        bool want = watched_.count(id) > 0, have = subscribed_.count(id) > 0;
        if (want && !have) {
          sub.push_back(id);
          subscribed_.insert(id);
        } else if (!want && have) {
          unsub.push_back(id);
          subscribed_.erase(id);
        }
      }
      changed_.clear();
    }
    // Batches of channels per command; the replies come back as events.
    auto send = [&](const char* verb, const std::vector<ObjectID>& ids) -> Status {
      for (size_t i = 0; i < ids.size(); i += kMaxPerCommand) {
        std::vector<std::string> args{verb};
        for (size_t j = i; j < ids.size() && j < i + kMaxPerCommand; j++)
          args.push_back(channel_prefix + ids[j].Hex());
        PLASMON_RETURN_IF_ERROR(SendCommand(c, args));
      }
      return Status::OK();
    };
    PLASMON_RETURN_IF_ERROR(send("SUBSCRIBE", sub));
    PLASMON_RETURN_IF_ERROR(send("UNSUBSCRIBE", unsub));
    int done = 0;
    while (!done) {
      if (redisBufferWrite(c, &done) != REDIS_OK)
        return Status::Disconnected(std::string("redis write: ") + c->errstr);
    }

    pollfd fds[2] = {{c->fd, POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("poll", errno);
    }
    if (fds[1].revents & POLLIN) {
      uint64_t count;
      ssize_t r = ::read(wake_fd_.get(), &count, sizeof(count));
      (void)r;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (redisBufferRead(c) != REDIS_OK)
        return Status::Disconnected(std::string("redis read: ") + c->errstr);
      for (;;) {
        void* reply = nullptr;
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK)
          return Status::ProtocolError(std::string("redis reply: ") + c->errstr);
        if (reply == nullptr) break;
        HandleReply(reply);
        freeReplyObject(reply);
      }
    }
  }
}

// Pushed messages are arrays: ["subscribe", channel, count] when a
// subscription starts, ["message", channel, payload] when a node publishes.
void SealWatcher::HandleReply(void* raw) {
  auto* r = static_cast<redisReply*>(raw);
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
  redisReply* kind = r->element[0];
  redisReply* channel = r->element[1];
  if (kind->type != REDIS_REPLY_STRING || channel->type != REDIS_REPLY_STRING) return;
  std::string_view k(kind->str, kind->len), ch(channel->str, channel->len);
  Event ev;
  if (k == "message") {
    ev = Event::kSealed;
  } else if (k == "subscribe") {
    ev = Event::kSubscribed;
  } else {
    return;
  }
  size_t colon = ch.rfind(':');
  if (colon == std::string_view::npos) return;
  std::optional<ObjectID> id = ObjectID::FromHex(ch.substr(colon + 1));
  if (!id) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (watched_.count(*id) == 0) return;  // unwatched since
  }
  cb_(*id, ev);
}

}  // namespace plasmon
