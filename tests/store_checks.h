// What a store must look like after its clients are gone, checked through a
// client as a user would: nothing unsealed, nothing referenced (pins of the
// shared index count as references in List, after the store's scan), and the
// used bytes exactly those of the objects it holds.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "core/allocator.h"
#include "plasmon/client.h"

namespace plasmon::testing {

// Waits until `observer` is the only client the store counts (those killed
// are cleaned up).
inline void WaitForOnlyClient(Client& observer) {
  for (int i = 0; i < 3000; i++) {
    auto st = observer.Stats();
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    if (st->clients == 1) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL() << "the store still counts dead clients after 30 s";
}

// No unsealed object, no reference, and used bytes = the sum of the
// allocation sizes of what List shows.
inline void ExpectExactAccounts(Client& observer) {
  auto list = observer.List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  uint64_t expect_used = 0;
  for (const ObjectInfo& o : *list) {
    EXPECT_EQ(o.state, ObjectState::kSealed) << o.id.Hex() << " left unsealed";
    EXPECT_EQ(o.ref_count, 0u) << o.id.Hex() << " still referenced";
    expect_used += Allocator::RoundUp(o.data_size + o.metadata_size);
  }
  auto st = observer.Stats();
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->used, expect_used);
  EXPECT_EQ(st->object_count, list->size());
}

// Evicting the whole capacity empties the store: nothing is held.
inline void ExpectAllEvictable(Client& observer) {
  auto before = observer.Stats();
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  auto freed = observer.Evict(before->capacity);
  ASSERT_TRUE(freed.ok()) << freed.status().ToString();
  EXPECT_EQ(*freed, before->used);
  auto after = observer.Stats();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->object_count, 0u);
  EXPECT_EQ(after->used, 0u);
}

}  // namespace plasmon::testing
