// Tells a store when objects it waits for are sealed somewhere in the
// cluster: a Redis SUBSCRIBE connection, on its own thread, to the
// `PREFIX:sealed:ID` channel of each watched ID (the directory of the sealing
// node publishes there).
//
// Events may be missed while Redis is away; after every (re)connection the
// watcher reports kResubscribed for every watched ID, so the caller looks
// them up again instead of trusting that nothing happened meanwhile.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "core/fd.h"
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
  void Run();
  // Sends pending (UN)SUBSCRIBEs and handles what Redis sent; returns when
  // the connection fails or Stop() is called.
  Status Serve(RedisConnection* c);
  void HandleReply(void* reply);
  void Wake();

  DirectoryOptions opts_;
  Callback cb_;
  UniqueFd wake_fd_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::unordered_set<ObjectID, ObjectIDHash> watched_;
  std::unordered_set<ObjectID, ObjectIDHash> changed_;     // watched or unwatched since last sent
  std::unordered_set<ObjectID, ObjectIDHash> subscribed_;  // what Redis was asked for
  std::thread thread_;
};

}  // namespace plasmon
