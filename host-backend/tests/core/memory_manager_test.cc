// The memory manager: VRAM allocation, LRU eviction to SYSTEM, pinned buffers never evicted.
#include "core/memory_manager.h"

#include "core_test_util.h"

namespace sharegpu::testing {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kQuarter = kMiB / 4;  // four of these fill a 1 MiB VRAM

struct FullVram {
  explicit FullVram(CacheMode mode = CacheMode::kCoherent) {
    mm = MakeMm("lru", kMiB, mode);
    for (int i = 0; i < 4; ++i) {
      bos.push_back(MakeBo(mm, kQuarter, Placement::kDevice, "bo" + std::to_string(i)));
      contents.push_back(RandomBytes(kQuarter, 100 + i));
      WriteBo(*bos.back(), contents.back());
    }
    EXPECT_EQ(mm->arena().used(), kMiB);
  }
  std::shared_ptr<MemoryManager> mm;
  std::vector<std::shared_ptr<BufferObject>> bos;
  std::vector<std::vector<uint8_t>> contents;
};

TEST(MemoryManagerTest, LruEvictionPreservesContents) {
  FullVram v(CacheMode::kStrict);
  // bo0 was created first, but is used again now: bo1 becomes the least recently used.
  v.mm->LruTouch(v.bos[0]);
  // Device-written bytes of the victim still in the device cache must survive the eviction.
  {
    ResvGuard g(v.bos[1]->resv());
    DeviceView view = v.bos[1]->DeviceViewLocked();
    ASSERT_EQ(CopyEngine::Fill(view, 0, 4096, 0x12345678u), kOk);
  }
  auto pat = PatternBytes(4096, 0x12345678u);
  std::copy(pat.begin(), pat.end(), v.contents[1].begin());

  auto extra = MakeBo(v.mm, kQuarter, Placement::kDevice, "extra");
  ASSERT_NE(extra, nullptr);
  EXPECT_EQ(extra->placement(), Placement::kDevice);
  EXPECT_EQ(v.mm->stats().evictions, 1u);
  EXPECT_EQ(v.bos[1]->placement(), Placement::kSystem) << "the LRU buffer was not the victim";
  EXPECT_EQ(v.bos[0]->placement(), Placement::kDevice) << "a recently used buffer was evicted";
  EXPECT_EQ(v.bos[2]->placement(), Placement::kDevice);
  EXPECT_EQ(v.bos[3]->placement(), Placement::kDevice);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(ReadBo(*v.bos[i]), v.contents[i]) << "bo" << i;
  EXPECT_EQ(v.mm->arena().used(), kMiB);

  // The next one takes bo2 (bo0 and the new one are younger).
  auto extra2 = MakeBo(v.mm, kQuarter, Placement::kDevice, "extra2");
  ASSERT_NE(extra2, nullptr);
  EXPECT_EQ(v.bos[2]->placement(), Placement::kSystem);
  EXPECT_EQ(v.bos[0]->placement(), Placement::kDevice);
  EXPECT_EQ(v.mm->stats().evictions, 2u);
  EXPECT_EQ(ReadBo(*v.bos[2]), v.contents[2]);
}

TEST(MemoryManagerTest, EvictionSkipsPinnedBuffers) {
  FullVram v;
  for (int i : {0, 1, 3}) {
    ResvGuard g(v.bos[i]->resv());
    ASSERT_EQ(v.bos[i]->PinLocked(), kOk);
  }
  // Only bo2 is evictable, although bo0 and bo1 are older.
  auto extra = MakeBo(v.mm, kQuarter, Placement::kDevice, "extra");
  ASSERT_NE(extra, nullptr);
  EXPECT_EQ(v.bos[2]->placement(), Placement::kSystem);
  for (int i : {0, 1, 3}) EXPECT_EQ(v.bos[i]->placement(), Placement::kDevice);
  EXPECT_EQ(ReadBo(*v.bos[2]), v.contents[2]);
  {
    ResvGuard g(extra->resv());
    ASSERT_EQ(extra->PinLocked(), kOk);
  }
  // Everything in VRAM is pinned now.
  auto none = BufferObject::Create(v.mm, kQuarter, Placement::kDevice, "none");
  EXPECT_EQ(none.status(), -ENOSPC);
  EXPECT_EQ(v.mm->stats().evictions, 1u);
  for (int i : {0, 1, 3}) {
    EXPECT_EQ(v.bos[i]->placement(), Placement::kDevice);
    EXPECT_EQ(ReadBo(*v.bos[i]), v.contents[i]);
  }
  // A move into VRAM fails the same way and leaves the buffer where it was.
  EXPECT_EQ(MoveBo(*v.bos[2], Placement::kDevice), -ENOSPC);
  EXPECT_EQ(v.bos[2]->placement(), Placement::kSystem);
  EXPECT_EQ(ReadBo(*v.bos[2]), v.contents[2]);
}

TEST(MemoryManagerTest, EvictionSkipsBuffersLockedElsewhere) {
  FullVram v;
  // bo0 is the LRU, but its reservation is held (by us, as a job would): not a victim now.
  ResvGuard g(v.bos[0]->resv());
  auto extra = MakeBo(v.mm, kQuarter, Placement::kDevice, "extra");
  ASSERT_NE(extra, nullptr);
  EXPECT_EQ(v.bos[0]->placement(), Placement::kDevice);
  EXPECT_EQ(v.bos[1]->placement(), Placement::kSystem);
}

TEST(MemoryManagerTest, MoveListenerSeesEveryMove) {
  auto mm = MakeMm("listener");
  std::vector<std::pair<const BufferObject*, Placement>> seen;
  mm->SetMoveListener([&](BufferObject& bo) { seen.emplace_back(&bo, bo.placement()); });
  auto bo = MakeBo(mm, 4096, Placement::kSystem);
  ASSERT_EQ(MoveBo(*bo, Placement::kDevice), kOk);
  ASSERT_EQ(MoveBo(*bo, Placement::kDevice), kOk);  // already there: not a move
  ASSERT_EQ(MoveBo(*bo, Placement::kSystem), kOk);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].first, bo.get());
  EXPECT_EQ(seen[0].second, Placement::kDevice);
  EXPECT_EQ(seen[1].second, Placement::kSystem);
  EXPECT_EQ(mm->stats().moves, 2u);
  mm->SetMoveListener(nullptr);
}

TEST(MemoryManagerTest, DeviceStorageOutlivesNothingItShouldNot) {
  auto mm = MakeMm("lifetime");
  auto bo = MakeBo(mm, kQuarter, Placement::kDevice);
  EXPECT_EQ(mm->arena().used(), kQuarter);
  bo.reset();
  EXPECT_EQ(mm->arena().used(), 0u);
  // The freed range is reusable for a full-size buffer.
  auto big = MakeBo(mm, kMiB, Placement::kDevice);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->placement(), Placement::kDevice);
}

// A buffer's last reference can go on one thread while another walks the LRU. The walk must
// not be what ends up holding that last reference under the LRU lock: the buffer's destructor
// takes the same lock (a self-deadlock the bounded run would report).
TEST(MemoryManagerTest, LruWalkSurvivesBuffersDroppedConcurrently) {
  auto mm = MakeMm("lru-drop");
  RunThreadsBounded(4, [&](int) {
    for (int i = 0; i < 5000; ++i) {
      auto bo = MakeBo(mm, kPage, Placement::kDevice, "drop");  // enters the LRU
      if (!bo) return;
      mm->LruTouch(bo);
    }  // and each one is dropped while the other threads walk the LRU
  });
  EXPECT_EQ(mm->arena().used(), 0u);
}

}  // namespace
}  // namespace sharegpu::testing
