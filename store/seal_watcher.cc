#include "store/seal_watcher.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

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
    : opts_(std::move(opts)), cb_(std::move(cb)), conn_(opts_) {
  Result<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  if (loop.ok()) {
    loop_ = std::move(*loop);
  } else {
    spdlog::error("seal watcher: {}; fetches will find new holders only by looking again",
                  loop.status().ToString());
  }
}

SealWatcher::~SealWatcher() { Stop(); }

void SealWatcher::Start() {
  if (!loop_ || thread_.joinable()) return;
  loop_->Post([this] { Connect(); });
  thread_ = std::thread([this] {
    Status st = loop_->Run();
    if (!st.ok()) spdlog::error("seal watcher: {}", st.ToString());
  });
}

void SealWatcher::Stop() {
  if (!loop_) return;
  loop_->Stop();
  if (thread_.joinable()) thread_.join();
}

void SealWatcher::ScheduleSend() {
  if (!loop_ || send_posted_.exchange(true)) return;
  loop_->Post([this] {
    send_posted_.store(false);
    SendChanges();
  });
}

void SealWatcher::Watch(const ObjectID& id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!watched_.insert(id).second) return;
    changed_.insert(id);
  }
  ScheduleSend();
}

void SealWatcher::Unwatch(const ObjectID& id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (watched_.erase(id) == 0) return;
    changed_.insert(id);
  }
  ScheduleSend();
}

void SealWatcher::Connect() {
  if (loop_->stopping()) return;
  Status st = conn_.Ensure(kConnectTimeoutMs);
  if (st.ok()) {
    st = loop_->Add(conn_.get()->fd, EPOLLIN, [this](uint32_t) { OnReadable(); });
  }
  if (!st.ok()) {
    Fail(st);
    return;
  }
  {
    // A fresh connection subscribes to everything watched.
    std::lock_guard<std::mutex> l(mu_);
    subscribed_.clear();
    changed_ = watched_;
  }
  if (was_down_) spdlog::info("seal watcher: connected to Redis again");
  was_down_ = false;
  SendChanges();
}

void SealWatcher::Fail(const Status& st) {
  if (conn_.connected()) {
    loop_->Remove(conn_.get()->fd);
    conn_.Drop();
  }
  if (!was_down_) spdlog::warn("seal watcher: {}; retrying", st.ToString());
  was_down_ = true;
  loop_->AddTimerAfter(int64_t{kRetryMs} * 1000, [this] { Connect(); });
}

void SealWatcher::SendChanges() {
  if (!conn_.connected()) return;  // Connect sends everything
  redisContext* c = conn_.get();
  const std::string channel_prefix = SealedChannelPrefix(opts_.prefix);
  // What changed since the last round, netted against what Redis has: an
  // Unwatch and a Watch of one ID in between cancel out.
  std::vector<ObjectID> sub, unsub;
  {
    std::lock_guard<std::mutex> l(mu_);
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
  if (sub.empty() && unsub.empty()) return;
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
  Status st = send("SUBSCRIBE", sub);
  if (st.ok()) st = send("UNSUBSCRIBE", unsub);
  int done = 0;
  while (st.ok() && !done) {
    if (redisBufferWrite(c, &done) != REDIS_OK)
      st = Status::Disconnected(std::string("redis write: ") + c->errstr);
  }
  if (!st.ok()) Fail(st);
}

void SealWatcher::OnReadable() {
  redisContext* c = conn_.get();
  if (redisBufferRead(c) != REDIS_OK) {
    Fail(Status::Disconnected(std::string("redis read: ") + c->errstr));
    return;
  }
  for (;;) {
    void* reply = nullptr;
    if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
      Fail(Status::ProtocolError(std::string("redis reply: ") + c->errstr));
      return;
    }
    if (reply == nullptr) return;
    HandleReply(reply);
    freeReplyObject(reply);
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
