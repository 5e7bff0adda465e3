// Buffer objects: moves under the reservation, pinning, ghosts kept for BOOKKEEP fences, moves
// waiting for writers (S1, S7).
#include "core/buffer_object.h"

#include <latch>
#include <thread>

#include "core_test_util.h"

namespace sharegpu::testing {
namespace {

TEST(BufferObjectTest, CreateValidatesArguments) {
  auto mm = MakeMm("create");
  EXPECT_EQ(BufferObject::Create(mm, 0, Placement::kSystem, "z").status(), -EINVAL);
  EXPECT_EQ(BufferObject::Create(mm, BufferObject::kMaxSize + 1, Placement::kSystem, "b").status(),
            -E2BIG);
  EXPECT_EQ(BufferObject::Create(mm, 4096, static_cast<Placement>(7), "p").status(), -EINVAL);
  EXPECT_EQ(BufferObject::Create(nullptr, 4096, Placement::kSystem, "n").status(), -EINVAL);
  EXPECT_EQ(mm->arena().used(), 0u);
  auto bo = MakeBo(mm, 5000, Placement::kDevice);
  EXPECT_EQ(bo->size(), 8192u);  // rounded up to pages
  EXPECT_EQ(mm->arena().used(), 8192u);
}

TEST(BufferObjectTest, MoveRequiresResvHeld) {
  auto mm = MakeMm("move-lock");
  auto bo = MakeBo(mm, 4096, Placement::kDevice);
  const uint64_t gen = bo->generation();
  EXPECT_EQ(bo->Move(Placement::kSystem), -ENOLCK);
  EXPECT_EQ(bo->placement(), Placement::kDevice);
  EXPECT_EQ(bo->generation(), gen);
  EXPECT_EQ(bo->moves(), 0u);
  EXPECT_EQ(mm->stats().moves, 0u);
  {
    ResvGuard g(bo->resv());
    EXPECT_EQ(bo->Move(Placement::kSystem), kOk);
  }
  EXPECT_EQ(bo->placement(), Placement::kSystem);
  EXPECT_EQ(bo->moves(), 1u);
  EXPECT_EQ(mm->arena().used(), 0u);
}

TEST(BufferObjectTest, MovePreservesContentsBothWays) {
  auto mm = MakeMm("move", kMiB, CacheMode::kStrict);
  auto bo = MakeBo(mm, 5 * 4096, Placement::kSystem);
  auto bytes = RandomBytes(bo->size(), 3);
  WriteBo(*bo, bytes);
  // Device-written bytes still in the owning device's cache must reach the new storage.
  {
    ResvGuard g(bo->resv());
    DeviceView v = bo->View();
    ASSERT_EQ(CopyEngine::Fill(v, 4096, 4096, 0xA5A5F00Du), kOk);
  }
  auto pat = PatternBytes(4096, 0xA5A5F00Du);
  std::copy(pat.begin(), pat.end(), bytes.begin() + 4096);
  ASSERT_EQ(MoveBo(*bo, Placement::kDevice), kOk);
  EXPECT_EQ(bo->placement(), Placement::kDevice);
  EXPECT_EQ(bo->vram_offset(), bo->storage()->offset());
  EXPECT_EQ(ReadBo(*bo), bytes);
  ASSERT_EQ(MoveBo(*bo, Placement::kSystem), kOk);
  EXPECT_EQ(ReadBo(*bo), bytes);
  EXPECT_EQ(bo->vram_offset(), ~uint64_t{0});
  EXPECT_EQ(bo->generation(), 3u);
  EXPECT_EQ(bo->cache().stats().valid_lines, 0u);  // no line of old storage survived
}

// Rule S4: begin is a barrier in both directions. A CPU access begun for writing only must
// still write back the device's dirty lines first, or the end's invalidate would write them
// back over the CPU's newer bytes (issue 9, defect 1). Both paths: the buffer's own barrier
// and the dma-buf's.
TEST(BufferObjectTest, WriteOnlyCpuAccessKeepsTheCpusBytes) {
  for (bool exported : {false, true}) {
    SCOPED_TRACE(exported ? "through the dma-buf" : "the buffer's own barrier");
    auto mm = MakeMm("write-only", kMiB, CacheMode::kStrict);
    auto bo = MakeBo(mm, 2 * 4096, Placement::kDevice);
    std::shared_ptr<DmaBuf> dmabuf;
    if (exported) dmabuf = bo->GetOrExport().value();
    {
      ResvGuard g(bo->resv());
      DeviceView v = bo->View();
      ASSERT_EQ(CopyEngine::Fill(v, 0, bo->size(), 0xAAAAAAAAu), kOk);  // dirty device lines
    }
    auto begin = [&] {
      return dmabuf ? dmabuf->BeginCpuAccess(DmaDirection::kToDevice)
                    : bo->BeginCpuAccessUnlocked(DmaDirection::kToDevice);
    };
    auto end = [&] {
      return dmabuf ? dmabuf->EndCpuAccess(DmaDirection::kToDevice)
                    : bo->EndCpuAccessUnlocked(DmaDirection::kToDevice);
    };
    ASSERT_EQ(begin(), kOk);
    const auto cpu_bytes = PatternBytes(bo->size(), 0x55555555u);
    WriteBo(*bo, cpu_bytes);
    ASSERT_EQ(end(), kOk);
    EXPECT_EQ(ReadBo(*bo), cpu_bytes) << "the device's dirty lines overwrote the CPU's write";
    EXPECT_EQ(bo->cache().stats().dirty_lines, 0u);
  }
}

// Rule S4 across devices: a completed device write is visible to an importer after its Map.
// The exporter's Map writes back the owner device's dirty lines first (issue 9, defect 8).
TEST(BufferObjectTest, MapMakesTheOwnersDeviceWritesVisible) {
  auto mm = MakeMm("map-visible", kMiB, CacheMode::kStrict);
  auto bo = MakeBo(mm, 2 * 4096, Placement::kSystem);
  WriteBo(*bo, RandomBytes(bo->size(), 61));
  {
    ResvGuard g(bo->resv());
    DeviceView v = bo->View();
    ASSERT_EQ(CopyEngine::Fill(v, 0, bo->size(), 0x0BADF00Du), kOk);  // dirty in the owner
  }
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  auto att = (*dmabuf)->Attach(DynamicImporter("other-device"));
  ASSERT_TRUE(att.ok());
  MappingRef m;
  {
    ResvGuard g(bo->resv());
    auto r = (*dmabuf)->Map(**att, DmaDirection::kBidirectional);
    ASSERT_TRUE(r.ok()) << r.status();
    m = *r;
    EXPECT_EQ(std::vector<uint8_t>(m->host(), m->host() + bo->size()),
              PatternBytes(bo->size(), 0x0BADF00Du))
        << "the importer's mapping misses the owner's completed write";
    EXPECT_EQ(bo->cache().stats().dirty_lines, 0u);
    EXPECT_EQ((*dmabuf)->Unmap(**att, m), kOk);
  }
  EXPECT_EQ((*dmabuf)->Detach(*att), kOk);
}

TEST(BufferObjectTest, PinnedBufferRefusesMove) {
  auto mm = MakeMm("pinned");
  auto bo = MakeBo(mm, 2 * 4096, Placement::kDevice);
  auto bytes = RandomBytes(bo->size(), 5);
  WriteBo(*bo, bytes);
  ResvGuard g(bo->resv());
  ASSERT_EQ(bo->PinPlacement(), kOk);
  uint8_t* data = bo->storage()->data();
  const uint64_t off = bo->vram_offset(), gen = bo->generation();
  EXPECT_EQ(bo->Move(Placement::kSystem), -EBUSY);
  EXPECT_EQ(bo->placement(), Placement::kDevice);
  EXPECT_EQ(bo->storage()->data(), data);
  EXPECT_EQ(bo->vram_offset(), off);
  EXPECT_EQ(bo->generation(), gen);
  EXPECT_EQ(std::vector<uint8_t>(data, data + bo->size()), bytes);
  EXPECT_EQ(mm->arena().used(), bo->size());
  ASSERT_EQ(bo->UnpinPlacement(), kOk);
  EXPECT_EQ(bo->UnpinPlacement(), -EINVAL);  // unbalanced
  EXPECT_EQ(bo->Move(Placement::kSystem), kOk);
}

TEST(BufferObjectTest, StaticAttachmentPinsBuffer) {
  auto mm = MakeMm("static-pin");
  auto bo = MakeBo(mm, 4096, Placement::kDevice);
  auto bytes = RandomBytes(bo->size(), 9);
  WriteBo(*bo, bytes);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  // A peer-capable static importer: no move needed at attach, but it pins.
  auto s = (*dmabuf)->Attach(StaticImporter("static", nullptr, /*p2p=*/true));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(bo->pin_count(), 1u);
  EXPECT_EQ(bo->placement(), Placement::kDevice);
  EXPECT_EQ(MoveBo(*bo, Placement::kSystem), -EBUSY);
  EXPECT_EQ(bo->placement(), Placement::kDevice);
  EXPECT_EQ(ReadBo(*bo), bytes);
  EXPECT_EQ((*dmabuf)->Detach(*s), kOk);
  EXPECT_EQ(bo->pin_count(), 0u);
  EXPECT_EQ(MoveBo(*bo, Placement::kSystem), kOk);

  // A static importer that cannot reach VRAM: the buffer is moved to SYSTEM and pinned there.
  ASSERT_EQ(MoveBo(*bo, Placement::kDevice), kOk);
  auto s2 = (*dmabuf)->Attach(StaticImporter("static-sys", nullptr, /*p2p=*/false));
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(bo->placement(), Placement::kSystem);
  EXPECT_EQ(bo->pin_count(), 1u);
  EXPECT_EQ(MoveBo(*bo, Placement::kDevice), -EBUSY);
  EXPECT_EQ(ReadBo(*bo), bytes);
  EXPECT_EQ((*dmabuf)->Detach(*s2), kOk);
  EXPECT_EQ(bo->pin_count(), 0u);
}

// Rule S7b, as TTM: a move is ordered after every fence of the reservation, whatever its
// usage; an explicit-sync writer (BOOKKEEP, or a writer tagged READ) would otherwise keep
// writing storage the move already copied (issue 9, defect 5). A fence that does not signal
// in time refuses the move with -EBUSY and changes nothing.
TEST(BufferObjectTest, MoveWaitsForEveryFenceUsage) {
  for (ResvUsage usage :
       {ResvUsage::kKernel, ResvUsage::kWrite, ResvUsage::kRead, ResvUsage::kBookkeep}) {
    SCOPED_TRACE(ResvUsageName(usage));
    auto mm = MakeMm("move-fences");
    auto bo = MakeBo(mm, 4 * 4096, Placement::kDevice);
    auto bytes = RandomBytes(bo->size(), 21);
    WriteBo(*bo, bytes);
    FenceTimeline timeline("move-fences");
    FenceRef fence = timeline.CreateFence();
    bo->set_move_wait_timeout(std::chrono::milliseconds(20));
    ResvGuard g(bo->resv());
    ASSERT_EQ(bo->resv().ReserveFences(1), kOk);
    ASSERT_EQ(bo->resv().AddFence(fence, usage), kOk);
    uint8_t* data = bo->storage()->data();
    EXPECT_EQ(bo->Move(Placement::kSystem), -EBUSY);
    EXPECT_EQ(bo->placement(), Placement::kDevice);
    EXPECT_EQ(bo->storage()->data(), data);
    EXPECT_EQ(bo->generation(), 1u);
    EXPECT_EQ(bo->moves(), 0u);
    EXPECT_EQ(mm->arena().used(), bo->size());
    ASSERT_EQ(fence->Signal(), kOk);
    ASSERT_EQ(bo->Move(Placement::kSystem), kOk);
    // Nothing can still write the old range: it goes at once.
    EXPECT_EQ(mm->arena().used(), 0u);
    EXPECT_EQ(mm->stats().ghosts_pending, 0u);
    auto mem = bo->VmapLocal();
    ASSERT_TRUE(mem.ok());
    EXPECT_EQ(std::vector<uint8_t>(*mem, *mem + bo->size()), bytes);
  }
}

TEST(BufferObjectTest, StaleMappingKeepsOldStorageAlive) {
  auto mm = MakeMm("stale");
  auto bo = MakeBo(mm, 4096, Placement::kDevice);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  auto att = (*dmabuf)->Attach(DynamicImporter("imp"));
  ASSERT_TRUE(att.ok());
  MappingRef m;
  {
    ResvGuard g(bo->resv());
    auto r = (*dmabuf)->Map(**att, DmaDirection::kBidirectional);
    ASSERT_TRUE(r.ok());
    m = *r;
    ASSERT_EQ(bo->Move(Placement::kSystem), kOk);
  }
  // The range stays allocated while the stale mapping exists, so it cannot be reused.
  EXPECT_EQ(mm->arena().used(), 4096u);
  {
    ResvGuard g(bo->resv());
    EXPECT_EQ((*dmabuf)->Unmap(**att, m), kOk);
  }
  m.reset();
  EXPECT_EQ(mm->arena().used(), 0u);
  EXPECT_EQ((*dmabuf)->Detach(*att), kOk);
}

// A writer in flight lands in the old storage and then signals; the move must copy after
// it, for an implicit-sync writer (WRITE) and an explicit-sync one (BOOKKEEP) alike.
void ExpectMoveWaitsForWriter(ResvUsage usage) {
  SCOPED_TRACE(ResvUsageName(usage));
  auto mm = MakeMm("writer-wait");
  auto bo = MakeBo(mm, 4096, Placement::kDevice);
  WriteBo(*bo, RandomBytes(bo->size(), 41));
  const auto landed = RandomBytes(bo->size(), 42);  // what the in-flight writer stores
  FenceTimeline timeline("writer");
  FenceRef writer = timeline.CreateFence();
  uint8_t* old_mem = nullptr;
  {
    ResvGuard g(bo->resv());
    ASSERT_EQ(bo->resv().ReserveFences(1), kOk);
    ASSERT_EQ(bo->resv().AddFence(writer, usage), kOk);
    old_mem = bo->storage()->data();
  }
  bo->set_move_wait_timeout(kDeadlockTimeout);
  std::latch moving(1);
  Status move_result = -1;
  bool signalled_at_return = false;
  std::thread mover([&] {
    ResvGuard g(bo->resv());
    moving.count_down();
    move_result = bo->Move(Placement::kSystem);
    signalled_at_return = writer->IsSignaled();
  });
  moving.wait();
  // The device finishes writing the old storage, then signals its fence.
  std::memcpy(old_mem, landed.data(), landed.size());
  ASSERT_EQ(writer->Signal(), kOk);
  mover.join();
  EXPECT_EQ(move_result, kOk);
  EXPECT_TRUE(signalled_at_return) << "the move did not wait for the writer";
  EXPECT_EQ(bo->placement(), Placement::kSystem);
  EXPECT_EQ(ReadBo(*bo), landed) << "the move copied before the writer landed";
}

TEST(BufferObjectTest, MoveWaitsForWriters) {
  ExpectMoveWaitsForWriter(ResvUsage::kWrite);
  ExpectMoveWaitsForWriter(ResvUsage::kBookkeep);
}

TEST(BufferObjectTest, GetOrExportReturnsTheSameDmaBufWhileItLives) {
  auto mm = MakeMm("export");
  auto bo = MakeBo(mm, 4096, Placement::kSystem);
  EXPECT_EQ(bo->exported(), nullptr);
  auto a = bo->GetOrExport();
  auto b = bo->GetOrExport();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ(bo->exported().get(), a->get());
  EXPECT_EQ(&(*a)->resv(), &bo->resv());
  EXPECT_EQ((*a)->size(), bo->size());
}

TEST(BufferObjectTest, CacheCommandsValidateRange) {
  auto mm = MakeMm("cache-cmd", kMiB, CacheMode::kStrict);
  auto bo = MakeBo(mm, 4096, Placement::kDevice);
  EXPECT_EQ(bo->CacheFlush(0, 4096), -ENOLCK);
  ResvGuard g(bo->resv());
  EXPECT_EQ(bo->CacheFlush(0, 0), -EINVAL);
  EXPECT_EQ(bo->CacheFlush(1, 4096), -ERANGE);
  EXPECT_EQ(bo->CacheInvalidate(~uint64_t{0}, 2), -ERANGE);
  EXPECT_EQ(bo->CacheInvalidate(0, 4096), kOk);
}

}  // namespace
}  // namespace sharegpu::testing
