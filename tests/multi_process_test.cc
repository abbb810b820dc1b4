// Several client processes working on one store at once.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>

#include "core/digest.h"
#include "plasmon/client.h"
#include "tests/child_process.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

// Object i of writer w: deterministic, so any process can check it.
ObjectID IdOf(int w, int i) {
  ObjectID id;
  std::snprintf(reinterpret_cast<char*>(id.mutable_data()), ObjectID::kSize, "w%d-i%d", w, i);
  return id;
}

TEST(MultiProcessTest, WritersAndReadersInSeparateProcessesSeeEachOthersObjects) {
  testing::StoreProcess store({"-m", "256M"});
  ASSERT_TRUE(store.started());
  constexpr int kWriters = 3, kObjects = 200;
  std::vector<pid_t> kids;
  // Readers wait (Get with a timeout) for objects the writers have not made yet.
  for (int r = 0; r < kWriters; r++) {
    kids.push_back(testing::Spawn([&] {
      Client c;
      if (!c.Connect(store.socket()).ok()) ::_exit(2);
      for (int i = 0; i < kObjects; i++) {
        auto got = c.Get({IdOf(r, i)}, 60000);
        if (!got.ok() || !(*got)[0].valid()) ::_exit(3);
        const ObjectBuffer& b = (*got)[0];
        if (b.size() != static_cast<uint64_t>(1000 + i)) ::_exit(4);
        for (uint64_t k = 0; k < b.size(); k++)
          if (b.data()[k] != static_cast<uint8_t>(r + i + k)) ::_exit(5);
      }
    }));
  }
  for (int w = 0; w < kWriters; w++) {
    kids.push_back(testing::Spawn([&] {
      Client c;
      if (!c.Connect(store.socket()).ok()) ::_exit(2);
      for (int i = 0; i < kObjects; i++) {
        auto b = c.Create(IdOf(w, i), 1000 + i);
        if (!b.ok()) ::_exit(3);
        for (uint64_t k = 0; k < b->size; k++) b->data[k] = static_cast<uint8_t>(w + i + k);
        if (!c.Seal(IdOf(w, i)).ok()) ::_exit(4);
      }
    }));
  }
  for (pid_t pid : kids) EXPECT_EQ(testing::ExitCode(pid), 0) << "child " << pid;
  Client c;
  ASSERT_TRUE(c.Connect(store.socket()).ok());
  auto st = c.Stats();
  EXPECT_EQ(st->sealed_count, static_cast<uint64_t>(kWriters * kObjects));
  for (const ObjectInfo& o : *c.List()) EXPECT_EQ(o.ref_count, 0u);
}

}  // namespace
}  // namespace plasmon
