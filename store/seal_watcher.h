// Tells a store when objects it waits for are sealed somewhere in the
// cluster: a Redis SUBSCRIBE connection, on its own thread, to the
// `PREFIX:sealed:ID` channel of each watched ID (the directory of the sealing
// node publishes there).
//
// Events may be missed while Redis is away; after every (re)connection the
// watcher subscribes again to every watched ID, and Redis's confirmation of
// each comes as kSubscribed, so the caller looks them up again instead of
// trusting that nothing happened meanwhile.
//
// The thread runs its own EventLoop (core/event_loop.h): the Redis socket's
// readiness, Watch/Unwatch changes posted from other threads, and a timer
// for reconnecting.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "core/event_loop.h"
#include "store/directory.h"

namespace plasmon {

class SealWatcher {
 public:
  enum class Event {
    kSubscribed,  // the subscription is active: a lookup now misses no seal
    kSealed,      // a node published the object
  };
  // Called on the watcher's thread; must not block.
  using Callback = std::function<void(const ObjectID&, Event)>;

  SealWatcher(DirectoryOptions opts, Callback cb);
  ~SealWatcher();  // stops
  SealWatcher(const SealWatcher&) = delete;
  SealWatcher& operator=(const SealWatcher&) = delete;

  void Start();
  void Stop();

  // Any thread; cheap. Watching a watched ID again does nothing.
  void Watch(const ObjectID& id);
  void Unwatch(const ObjectID& id);

 private:
  // All on the watcher's thread:
  void Connect();      // and subscribe to everything watched; retries on failure
  void SendChanges();  // (UN)SUBSCRIBE what changed since the last call
  void OnReadable();   // what Redis sent
  void Fail(const Status& st);  // drops the connection; reconnects later
  void HandleReply(void* reply);
  // Asks the thread to send changes (coalesced: one post until it runs).
  void ScheduleSend();

  DirectoryOptions opts_;
  Callback cb_;
  std::unique_ptr<EventLoop> loop_;  // null if it could not be made (logged)
  RedisConnection conn_;             // the thread's alone
  bool was_down_ = false;
  std::atomic<bool> send_posted_{false};

  std::mutex mu_;
  std::unordered_set<ObjectID, ObjectIDHash> watched_;
  std::unordered_set<ObjectID, ObjectIDHash> changed_;     // watched or unwatched since last sent
  std::unordered_set<ObjectID, ObjectIDHash> subscribed_;  // what Redis was asked for
  std::thread thread_;
};

}  // namespace plasmon
