#include "mem/arena.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"

namespace sharegpu {
namespace {

std::unique_ptr<Arena> MakeArena(uint64_t pages) {
  auto a = Arena::Create("arena-test", pages * kPageSize);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? std::move(a).value() : nullptr;
}

ArenaRange MustAllocate(Arena& arena, uint64_t size) {
  auto r = arena.Allocate(size);
  EXPECT_TRUE(r.ok()) << "size " << size << ": " << r.status();
  return r.ok() ? r.value() : ArenaRange{};
}

// Collects log messages for the duration of a test.
class LogCapture {
 public:
  LogCapture() { SetLogSink(&LogCapture::Sink, this); }
  ~LogCapture() { SetLogSink(nullptr, nullptr); }
  const std::vector<std::string>& messages() const { return messages_; }

 private:
  static void Sink(void* opaque, LogLevel level, const char* msg) {
    if (level >= LogLevel::kWarn) static_cast<LogCapture*>(opaque)->messages_.push_back(msg);
  }
  std::vector<std::string> messages_;  // written under log.cc's sink lock
};

TEST(ArenaTest, AllocationsArePageAlignedAndDisjoint) {
  auto arena = MakeArena(16);
  ASSERT_NE(arena, nullptr);
  std::vector<ArenaRange> ranges;
  for (uint64_t size : {uint64_t{1}, kPageSize, kPageSize + 1, uint64_t{100}, 3 * kPageSize}) {
    ArenaRange r = MustAllocate(*arena, size);
    EXPECT_TRUE(IsPageAligned(r.offset));
    EXPECT_EQ(r.size, PageAlignUp(size));
    EXPECT_LE(r.offset + r.size, arena->size());
    for (const ArenaRange& o : ranges) {
      EXPECT_TRUE(r.offset + r.size <= o.offset || o.offset + o.size <= r.offset);
    }
    ranges.push_back(r);
  }
  uint64_t total = 0;
  for (const ArenaRange& r : ranges) total += r.size;
  EXPECT_EQ(arena->used(), total);
  // Writing each range through the arena mapping touches only that range.
  for (size_t i = 0; i < ranges.size(); ++i) {
    std::memset(arena->data() + ranges[i].offset, static_cast<int>(i + 1), ranges[i].size);
  }
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(arena->data()[ranges[i].offset], i + 1);
    EXPECT_EQ(arena->data()[ranges[i].offset + ranges[i].size - 1], i + 1);
  }
}

TEST(ArenaTest, BadSizesRejected) {
  auto arena = MakeArena(4);
  ASSERT_NE(arena, nullptr);
  EXPECT_EQ(arena->Allocate(0).status(), -EINVAL);
  EXPECT_EQ(arena->Allocate(arena->size() + 1).status(), -E2BIG);
  EXPECT_EQ(arena->Allocate(UINT64_MAX).status(), -E2BIG);
  EXPECT_EQ(arena->used(), 0u);
  // Exactly the arena size fits.
  ArenaRange all = MustAllocate(*arena, arena->size());
  EXPECT_EQ(all.offset, 0u);
  EXPECT_EQ(arena->largest_free(), 0u);
}

TEST(ArenaTest, FullArenaReturnsEnospc) {
  auto arena = MakeArena(4);
  ASSERT_NE(arena, nullptr);
  for (int i = 0; i < 4; ++i) MustAllocate(*arena, kPageSize);
  EXPECT_EQ(arena->used(), arena->size());
  EXPECT_EQ(arena->Allocate(1).status(), -ENOSPC);
  EXPECT_EQ(arena->used(), arena->size());
}

TEST(ArenaTest, CoalescingAfterFreeAllowsLargeAllocation) {
  auto arena = MakeArena(8);
  ASSERT_NE(arena, nullptr);
  std::vector<ArenaRange> pages;
  for (int i = 0; i < 8; ++i) pages.push_back(MustAllocate(*arena, kPageSize));
  // Freed out of order so both the "merge with next" and "merge with previous" paths run.
  for (int i : {3, 1, 2, 0, 6, 4, 7, 5}) arena->Free(pages[i]);
  EXPECT_EQ(arena->used(), 0u);
  EXPECT_EQ(arena->largest_free(), arena->size());
  ArenaRange all = MustAllocate(*arena, arena->size());
  EXPECT_EQ(all.offset, 0u);
  EXPECT_EQ(all.size, arena->size());
}

TEST(ArenaTest, FragmentationBlocksLargeAllocationUntilNeighboursFree) {
  auto arena = MakeArena(8);
  ASSERT_NE(arena, nullptr);
  std::vector<ArenaRange> pages;
  for (int i = 0; i < 8; ++i) pages.push_back(MustAllocate(*arena, kPageSize));
  for (int i : {0, 2, 4, 6}) arena->Free(pages[i]);
  // Half the arena is free, but in single pages.
  EXPECT_EQ(arena->size() - arena->used(), 4 * kPageSize);
  EXPECT_EQ(arena->largest_free(), kPageSize);
  EXPECT_EQ(arena->Allocate(2 * kPageSize).status(), -ENOSPC);
  // Freeing page 3 joins the holes at 2 and 4 into one of three pages.
  arena->Free(pages[3]);
  EXPECT_EQ(arena->largest_free(), 3 * kPageSize);
  ArenaRange big = MustAllocate(*arena, 3 * kPageSize);
  EXPECT_EQ(big.offset, pages[2].offset);
  // First fit: a single page now goes to the lowest hole.
  ArenaRange small = MustAllocate(*arena, 1);
  EXPECT_EQ(small.offset, pages[0].offset);
}

TEST(ArenaTest, FirstFitTakesLowestHoleThatFits) {
  auto arena = MakeArena(8);
  ASSERT_NE(arena, nullptr);
  ArenaRange a = MustAllocate(*arena, 2 * kPageSize);
  MustAllocate(*arena, kPageSize);
  ArenaRange c = MustAllocate(*arena, kPageSize);
  MustAllocate(*arena, 4 * kPageSize);
  arena->Free(a);
  arena->Free(c);
  // Holes: two pages at a, one page at c. First fit (not best fit) splits the low hole.
  EXPECT_EQ(MustAllocate(*arena, kPageSize).offset, a.offset);
  EXPECT_EQ(MustAllocate(*arena, kPageSize).offset, a.offset + kPageSize);
  EXPECT_EQ(MustAllocate(*arena, kPageSize).offset, c.offset);
  EXPECT_EQ(arena->Allocate(1).status(), -ENOSPC);
}

TEST(ArenaTest, FreeOfUnknownRangeIgnoredAndLogged) {
  auto arena = MakeArena(8);
  ASSERT_NE(arena, nullptr);
  ArenaRange a = MustAllocate(*arena, 2 * kPageSize);
  ArenaRange b = MustAllocate(*arena, kPageSize);
  const uint64_t used = arena->used();
  const uint64_t largest = arena->largest_free();
  LogCapture logs;
  arena->Free({a.offset + kPageSize, kPageSize});  // inside an allocation
  arena->Free({a.offset, kPageSize});              // right offset, wrong size
  arena->Free({7 * kPageSize, kPageSize});         // never allocated
  arena->Free(b);
  arena->Free(b);  // double free
  EXPECT_EQ(logs.messages().size(), 4u);
  EXPECT_EQ(arena->used(), used - b.size);
  EXPECT_EQ(arena->largest_free(), largest + b.size);
  // `a` is still allocated: the rest of the arena is all that can be had.
  EXPECT_EQ(arena->Allocate(arena->size() - a.size + kPageSize).status(), -ENOSPC);
  MustAllocate(*arena, arena->size() - a.size);
}

TEST(ArenaTest, ConcurrentAllocateFreeKeepsAccounting) {
  constexpr uint64_t kPages = 64;
  auto arena = MakeArena(kPages);
  ASSERT_NE(arena, nullptr);
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  std::vector<int> overlaps(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<ArenaRange> mine;
      for (int i = 0; i < 2000; ++i) {
        if (!mine.empty() && (rng() % 2 == 0 || mine.size() > 8)) {
          size_t k = rng() % mine.size();
          // Each thread stamps its ranges; a range handed out twice shows a foreign stamp.
          if (arena->data()[mine[k].offset] != t + 1) ++overlaps[t];
          arena->Free(mine[k]);
          mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(k));
        } else {
          auto r = arena->Allocate((rng() % 3 + 1) * kPageSize);
          if (r.ok()) {
            std::memset(arena->data() + r->offset, t + 1, r->size);
            mine.push_back(r.value());
          } else {
            EXPECT_EQ(r.status(), -ENOSPC);
          }
        }
      }
      for (const ArenaRange& r : mine) {
        if (arena->data()[r.offset + r.size - 1] != t + 1) ++overlaps[t];
        arena->Free(r);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(overlaps[t], 0) << t;
  EXPECT_EQ(arena->used(), 0u);
  EXPECT_EQ(arena->largest_free(), arena->size());
}

TEST(StorageTest, DeviceRangeFreedOnDestruction) {
  auto arena = MakeArena(4);
  ASSERT_NE(arena, nullptr);
  {
    auto s = Storage::CreateDevice(*arena, 3 * kPageSize - 5);
    ASSERT_TRUE(s.ok()) << s.status();
    std::shared_ptr<Storage> storage = s.value();
    EXPECT_EQ(storage->placement(), Placement::kDevice);
    EXPECT_STREQ(PlacementName(storage->placement()), "DEVICE");
    EXPECT_EQ(storage->size(), 3 * kPageSize);
    EXPECT_EQ(arena->used(), 3 * kPageSize);
    EXPECT_EQ(storage->fd(), arena->memfd().fd());
    EXPECT_EQ(storage->data(), arena->data() + storage->offset());
    EXPECT_TRUE(IsPageAligned(storage->offset()));
    // Not enough left for a second one.
    EXPECT_EQ(Storage::CreateDevice(*arena, 2 * kPageSize).status(), -ENOSPC);
    // A second reference keeps the range allocated.
    std::shared_ptr<Storage> keep = storage;
    storage.reset();
    EXPECT_EQ(arena->used(), 3 * kPageSize);
  }
  EXPECT_EQ(arena->used(), 0u);
  EXPECT_EQ(arena->largest_free(), arena->size());
  EXPECT_EQ(Storage::CreateDevice(*arena, 0).status(), -EINVAL);
}

TEST(StorageTest, SystemStorageHasItsOwnMemfd) {
  auto arena = MakeArena(4);
  ASSERT_NE(arena, nullptr);
  auto a = Storage::CreateSystem("sys-a", 100);
  auto b = Storage::CreateSystem("sys-b", 2 * kPageSize);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->placement(), Placement::kSystem);
  EXPECT_STREQ(PlacementName((*a)->placement()), "SYSTEM");
  EXPECT_EQ((*a)->size(), kPageSize);
  EXPECT_EQ((*a)->offset(), 0u);
  EXPECT_NE((*a)->fd(), (*b)->fd());
  EXPECT_NE((*a)->fd(), arena->memfd().fd());
  EXPECT_EQ(arena->used(), 0u);
  // Separate files: writing one leaves the other untouched.
  std::memset((*a)->data(), 0x11, (*a)->size());
  std::memset((*b)->data(), 0x22, (*b)->size());
  EXPECT_EQ((*a)->data()[0], 0x11);
  EXPECT_EQ(Storage::CreateSystem("sys-zero", 0).status(), -EINVAL);
}

}  // namespace
}  // namespace sharegpu
