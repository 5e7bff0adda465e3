// The SYSTEM storage pool: one sparse memfd per device, page-aligned ranges, segments that
// never move, freed pages punched out (reads zero after reuse), O(log N) best fit.
#include "mem/system_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "mem/arena.h"

namespace sharegpu {
namespace {

std::unique_ptr<SystemPool> MakePool() {
  auto pool = SystemPool::Create("pool-test");
  EXPECT_TRUE(pool.ok()) << pool.status();
  return pool.ok() ? std::move(pool).value() : nullptr;
}

bool AllZero(const uint8_t* p, uint64_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

TEST(SystemPoolTest, RangesArePageAlignedDisjointAndZeroed) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  std::vector<PoolRange> ranges;
  for (uint64_t size : {1ull, 4096ull, 4097ull, 3 * 4096ull - 1, 65536ull}) {
    auto r = pool->Allocate(size);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(IsPageAligned(r->offset));
    EXPECT_EQ(r->size, PageAlignUp(size));
    EXPECT_TRUE(AllZero(r->data, r->size));
    std::memset(r->data, 0x5a, r->size);
    ranges.push_back(*r);
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const PoolRange& a, const PoolRange& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    EXPECT_LE(ranges[i - 1].offset + ranges[i - 1].size, ranges[i].offset);
  }
  auto s = pool->stats();
  EXPECT_EQ(s.allocations, ranges.size());
  EXPECT_EQ(s.segments, 1u);
  EXPECT_EQ(pool->Allocate(0).status(), -EINVAL);
  EXPECT_EQ(pool->Allocate(Memfd::kMaxSize + 1).status(), -E2BIG);
  for (const PoolRange& r : ranges) pool->Free(r);
  EXPECT_EQ(pool->stats().used, 0u);
}

TEST(SystemPoolTest, FreedRangeIsReusedAndReadsZero) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  auto a = pool->Allocate(8192);
  ASSERT_TRUE(a.ok());
  std::memset(a->data, 0xff, a->size);
  pool->Free(*a);
  auto b = pool->Allocate(8192);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->offset, a->offset);  // best fit takes the hole back
  EXPECT_TRUE(AllZero(b->data, b->size));
  pool->Free(*b);
  // A double free or a forged range is refused, not merged.
  pool->Free(*b);
  pool->Free(PoolRange{4096 * 7, 4096, nullptr});
  EXPECT_EQ(pool->stats().used, 0u);
  EXPECT_EQ(pool->stats().free_ranges, 1u);  // everything coalesced again
}

TEST(SystemPoolTest, GrowsBySegmentsWithoutMovingLiveRanges) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  const int fd = pool->fd();
  std::vector<PoolRange> ranges;
  // 3 x 48 MiB: the first segment (64 MiB) holds one, then the file grows.
  for (int i = 0; i < 3; ++i) {
    auto r = pool->Allocate(48ull << 20);
    ASSERT_TRUE(r.ok()) << r.status();
    r->data[0] = static_cast<uint8_t>(i + 1);
    r->data[r->size - 1] = static_cast<uint8_t>(i + 1);
    ranges.push_back(*r);
  }
  auto s = pool->stats();
  EXPECT_GE(s.segments, 2u);
  EXPECT_EQ(pool->fd(), fd);
  for (int i = 0; i < 3; ++i) {  // earlier ranges still where they were, bytes intact
    EXPECT_EQ(ranges[i].data[0], i + 1);
    EXPECT_EQ(ranges[i].data[ranges[i].size - 1], i + 1);
  }
  for (const PoolRange& r : ranges) pool->Free(r);
  s = pool->stats();
  EXPECT_EQ(s.used, 0u);
  // Free space coalesces inside a segment, never across one.
  EXPECT_EQ(s.free_ranges, s.segments);
}

TEST(SystemPoolTest, ConcurrentAllocationsNeverOverlap) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  constexpr int kThreads = 4, kRounds = 2000;
  std::vector<std::thread> threads;
  std::vector<int> bad(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<PoolRange> mine;
      for (int i = 0; i < kRounds; ++i) {
        auto r = pool->Allocate(4096 * (1 + (i % 3)));
        if (!r.ok()) {
          ++bad[t];
          continue;
        }
        if (!AllZero(r->data, r->size)) ++bad[t];
        std::memset(r->data, t + 1, r->size);
        mine.push_back(*r);
        if (i % 2) {
          const PoolRange& old = mine[mine.size() / 2];
          if (old.data[0] != t + 1 || old.data[old.size - 1] != t + 1) ++bad[t];
          pool->Free(old);
          mine.erase(mine.begin() + static_cast<long>(mine.size() / 2));
        }
      }
      for (const PoolRange& r : mine) {
        if (r.data[0] != t + 1) ++bad[t];
        pool->Free(r);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(bad[t], 0) << t;
  EXPECT_EQ(pool->stats().used, 0u);
  EXPECT_EQ(pool->stats().allocations, 0u);
}

TEST(StorageTest, PooledStoragesShareThePoolDescriptor) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  auto a = Storage::CreatePooled(*pool, 100);
  auto b = Storage::CreatePooled(*pool, 2 * kPageSize);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->placement(), Placement::kSystem);
  EXPECT_EQ((*a)->size(), kPageSize);
  EXPECT_EQ((*a)->fd(), pool->fd());
  EXPECT_EQ((*b)->fd(), pool->fd());
  EXPECT_NE((*a)->offset(), (*b)->offset());
  EXPECT_TRUE(IsPageAligned((*b)->offset()));
  EXPECT_EQ(pool->stats().used, 3 * kPageSize);
  a->reset();
  EXPECT_EQ(pool->stats().used, 2 * kPageSize);
  b->reset();
  EXPECT_EQ(pool->stats().used, 0u);
}

}  // namespace
}  // namespace sharegpu
