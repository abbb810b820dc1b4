// The wait queue Gets and Fetches share: slots settle by ID, a request
// completes when its last slot does, expires at its deadline with what it
// has, and goes silently with its session.
#include "store/wait_queue.h"

#include <gtest/gtest.h>

#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/clock.h"

namespace plasmon {
namespace {

struct Req : WaitingRequest {
  std::vector<std::string> got;  // per slot
};

class WaitQueueTest : public ::testing::Test {
 protected:
  WaitQueueTest()
      : loop_(std::move(*EventLoop::Create())),
        q_(loop_.get(), [this](Req& r) { completed_.push_back(r); },
           [this](Req& r) { expired_.push_back(r); }) {}

  Req Make(uint32_t session, std::vector<ObjectID> ids) {
    Req r;
    r.session = session;
    r.InitSlots(std::move(ids));
    r.got.resize(r.ids.size());
    return r;
  }
  // Runs the loop until `us` from now.
  void RunFor(int64_t us) {
    loop_->AddTimerAfter(us, [this] { loop_->Stop(); });
    ASSERT_TRUE(loop_->Run().ok());
  }

  std::unique_ptr<EventLoop> loop_;
  WaitQueue<Req> q_;
  std::vector<Req> completed_, expired_;
};

TEST_F(WaitQueueTest, ARequestCompletesWhenEverySlotSettles) {
  ObjectID a = ObjectID::Random(), b = ObjectID::Random();
  q_.Add(Make(2, {a, b, a}), -1);  // `a` twice: both slots settle together
  EXPECT_TRUE(q_.Waiting(a));
  EXPECT_EQ(q_.CountFor(2), 1u);
  q_.Resolve(a, [](Req& r, size_t i) {
    r.got[i] = "a";
    return true;
  });
  EXPECT_TRUE(completed_.empty());
  EXPECT_FALSE(q_.Waiting(a));
  q_.Resolve(b, [](Req& r, size_t i) {
    r.got[i] = "b";
    return true;
  });
  ASSERT_EQ(completed_.size(), 1u);
  EXPECT_EQ(completed_[0].got, (std::vector<std::string>{"a", "b", "a"}));
  EXPECT_EQ(q_.size(), 0u);
  EXPECT_EQ(q_.CountFor(2), 0u);
  EXPECT_FALSE(q_.Waiting(b));
}

TEST_F(WaitQueueTest, ASlotThatDoesNotSettleKeepsWaiting) {
  ObjectID a = ObjectID::Random();
  q_.Add(Make(2, {a}), -1);
  q_.Add(Make(3, {a}), -1);
  // Only session 3's request takes this answer (as no-wait Fetches do).
  q_.Resolve(a, [](Req& r, size_t) { return r.session == 3; });
  ASSERT_EQ(completed_.size(), 1u);
  EXPECT_EQ(completed_[0].session, 3u);
  EXPECT_TRUE(q_.Waiting(a));
  EXPECT_EQ(q_.CountFor(2), 1u);
}

TEST_F(WaitQueueTest, ExpiresAtItsDeadlineWithTheSlotsItHas) {
  ObjectID a = ObjectID::Random(), b = ObjectID::Random();
  const int64_t deadline = MonoMicros() + 20000;
  q_.Add(Make(2, {a, b}), deadline);
  q_.Add(Make(2, {b}), -1);  // no deadline: never expires
  q_.Resolve(a, [](Req& r, size_t i) {
    r.got[i] = "a";
    return true;
  });
  RunFor(60000);
  ASSERT_EQ(expired_.size(), 1u);
  EXPECT_GE(MonoMicros(), deadline);
  EXPECT_TRUE(expired_[0].done[0]);
  EXPECT_FALSE(expired_[0].done[1]);
  EXPECT_EQ(expired_[0].got[0], "a");
  EXPECT_EQ(q_.size(), 1u);
  EXPECT_TRUE(q_.Waiting(b));
  EXPECT_FALSE(q_.Waiting(a));
}

TEST_F(WaitQueueTest, ACompletedRequestNeverExpires) {
  ObjectID a = ObjectID::Random();
  q_.Add(Make(2, {a}), MonoMicros() + 10000);
  q_.Resolve(a, [](Req&, size_t) { return true; });
  EXPECT_EQ(loop_->timers(), 0u);  // its timer went with it
  RunFor(30000);
  EXPECT_EQ(completed_.size(), 1u);
  EXPECT_TRUE(expired_.empty());
}

TEST_F(WaitQueueTest, ASessionsRequestsGoWithoutAnAnswer) {
  ObjectID a = ObjectID::Random(), b = ObjectID::Random();
  q_.Add(Make(2, {a}), MonoMicros() + 10000);
  q_.Add(Make(2, {a, b}), -1);
  q_.Add(Make(3, {a}), -1);
  q_.DropSession(2);
  EXPECT_EQ(q_.CountFor(2), 0u);
  EXPECT_FALSE(q_.Waiting(b));
  EXPECT_EQ(loop_->timers(), 0u);
  q_.Resolve(a, [](Req&, size_t) { return true; });
  ASSERT_EQ(completed_.size(), 1u);
  EXPECT_EQ(completed_[0].session, 3u);
  RunFor(20000);
  EXPECT_TRUE(expired_.empty());
}

// A request that leaves the queue takes its unsettled slots out of the index
// at a constant cost each, however many others wait on the same ID: one
// naming an absent ID 16384 times behind 245k other waiters on it used to
// cost 16384 x 245k list steps on the loop.
TEST_F(WaitQueueTest, LeavingCostsAConstantPerSlotHoweverLongTheIdsList) {
  const ObjectID absent = ObjectID::Random();
  constexpr size_t kSlots = 16384;
  for (int i = 0; i < 15; i++) q_.Add(Make(1, std::vector<ObjectID>(kSlots, absent)), -1);
  q_.Add(Make(2, std::vector<ObjectID>(kSlots, absent)), -1);  // the last in the list
  const uint64_t before = q_.index().remove_steps();
  q_.DropSession(2);
  EXPECT_EQ(q_.CountFor(2), 0u);
  EXPECT_LE(q_.index().remove_steps() - before, 2 * kSlots);
  q_.Add(Make(3, std::vector<ObjectID>(kSlots, absent)), 0);  // expires at once
  const uint64_t before_expiry = q_.index().remove_steps();
  RunFor(1000);
  ASSERT_EQ(expired_.size(), 1u);
  EXPECT_LE(q_.index().remove_steps() - before_expiry, 2 * kSlots);
  // What stays is intact: session 1's slots all still wait, and settle.
  std::vector<WaitIndex::Waiter> left;
  q_.index().WaitersOf(absent, &left);
  EXPECT_EQ(left.size(), 15 * kSlots);
  q_.Resolve(absent, [](Req&, size_t) { return true; });
  EXPECT_EQ(completed_.size(), 15u);
  EXPECT_FALSE(q_.Waiting(absent));
}

// The flat index against a plain model, through growth, shrinking and the
// backward shifts of deletion, with IDs that repeat across requests.
TEST(WaitIndexTest, AgreesWithAModelThroughGrowthAndDeletion) {
  WaitIndex index;
  std::map<ObjectID, std::vector<WaitIndex::Waiter>> model;
  std::map<std::pair<uint64_t, uint32_t>, uint32_t> nodes;  // Add's answers
  std::vector<ObjectID> ids(3000);
  for (ObjectID& id : ids) id = ObjectID::Random();
  std::mt19937 rng(7);
  auto check = [&](const ObjectID& id) {
    std::vector<WaitIndex::Waiter> got;
    index.WaitersOf(id, &got);
    auto m = model.find(id);
    const size_t want = m == model.end() ? 0 : m->second.size();
    ASSERT_EQ(got.size(), want);
    for (size_t i = 0; i < want; i++) {  // oldest first
      EXPECT_EQ(got[i].key, m->second[i].key);
      EXPECT_EQ(got[i].slot, m->second[i].slot);
    }
    EXPECT_EQ(index.Contains(id), want > 0);
  };
  for (int round = 0; round < 3; round++) {
    for (uint32_t i = 0; i < 20000; i++) {
      const ObjectID& id = ids[rng() % ids.size()];
      nodes[{static_cast<uint64_t>(round), i}] = index.Add(id, round, i);
      model[id].push_back({static_cast<uint64_t>(round), i});
    }
    EXPECT_EQ(index.ids(), model.size());
    for (int i = 0; i < 300; i++) check(ids[rng() % ids.size()]);
    // Take most away, in a random order.
    for (int i = 0; i < 19000; i++) {
      auto m = model.begin();
      std::advance(m, rng() % model.size());
      auto& ws = m->second;
      size_t k = rng() % ws.size();
      index.Remove(m->first, nodes.at({ws[k].key, ws[k].slot}));
      ws.erase(ws.begin() + static_cast<ptrdiff_t>(k));
      if (ws.empty()) model.erase(m);
      if (model.empty()) break;
    }
    EXPECT_EQ(index.ids(), model.size());
    for (const ObjectID& id : ids) check(id);
  }
  // Filter keeps what it is told to, and an emptied index gives its memory back.
  for (auto& [id, ws] : model) index.Filter(id, [](const WaitIndex::Waiter&) { return false; });
  EXPECT_EQ(index.ids(), 0u);
  EXPECT_EQ(index.bytes(), 0u);
}

TEST(WaitBudgetTest, ChargesPerClientAndInAllAndGivesBack) {
  WaitBudget budget(WaitBudget::ChargeOf(100), WaitBudget::ChargeOf(150) + WaitBudget::kRequestCharge);
  EXPECT_TRUE(budget.Charge(2, 100, "Get").ok());
  Status st = budget.Charge(2, 1, "Get");
  EXPECT_TRUE(st.IsOutOfMemory());
  EXPECT_NE(st.message().find("--max-waiting-ids-per-client"), std::string::npos) << st.ToString();
  EXPECT_TRUE(budget.Charge(3, 50, "Get").ok());
  st = budget.Charge(4, 50, "Fetch");
  EXPECT_TRUE(st.IsOutOfMemory());
  EXPECT_NE(st.message().find("in this store"), std::string::npos) << st.ToString();
  EXPECT_EQ(budget.UsedBy(4), 0u);  // a refusal charges nothing
  budget.Refund(2, 100);
  EXPECT_EQ(budget.UsedBy(2), 0u);
  EXPECT_TRUE(budget.Charge(4, 50, "Fetch").ok());
  budget.DropSession(3);
  budget.Refund(3, 50);  // after its client went: nothing more to give back
  EXPECT_EQ(budget.used(), WaitBudget::ChargeOf(50));
}

// A Fetch's IDs weigh more (they cost the store more): 30 of them at weight
// 4 do not fit where 100 plain ones do, 25 do, and give back what they took.
TEST(WaitBudgetTest, WeightedIdsCountAsSeveral) {
  WaitBudget budget(WaitBudget::ChargeOf(100), WaitBudget::ChargeOf(1000));
  Status st = budget.Charge(2, 30, "Fetch", 4);
  EXPECT_TRUE(st.IsOutOfMemory());
  EXPECT_NE(st.message().find("this Fetch of 30 IDs"), std::string::npos) << st.ToString();
  ASSERT_TRUE(budget.Charge(2, 25, "Fetch", 4).ok());
  EXPECT_EQ(budget.UsedBy(2), WaitBudget::ChargeOf(100));
  budget.Refund(2, 25 * 4);
  EXPECT_EQ(budget.used(), 0u);
}

}  // namespace
}  // namespace plasmon
