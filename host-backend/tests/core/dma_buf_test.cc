// The dma-buf core: lock rules (S1a), the vmap refcount (S2), vmap_local (S3)
// and move_notify / mapping tracking (S5a-S5c).
#include "core/dma_buf.h"

#include <latch>
#include <optional>
#include <thread>

#include "core_test_util.h"

namespace sharegpu::testing {
namespace {

using ::testing::_;

// Holds `resv` on another thread until released: "held, but not by the caller".
class HeldElsewhere {
 public:
  explicit HeldElsewhere(ReservationObject& resv) : thread_([this, &resv] {
    LockPlain(resv);
    locked_.count_down();
    release_.wait();
    resv.Unlock();
  }) {
    locked_.wait();
  }
  ~HeldElsewhere() {
    release_.count_down();
    thread_.join();
  }

 private:
  std::latch locked_{1};
  std::latch release_{1};
  std::thread thread_;
};

unsigned LiveMappings(DmaBuf& d) {
  ResvGuard g(d.resv());
  return d.live_mapping_count();
}

// ------------------------------------------------------------------ S1: lock rules

TEST(DmaBufLockRulesTest, MapUnmapRequireResvHeld) {
  MockExport ex;
  EXPECT_CALL(*ex.exporter, Map(_, _)).Times(1);    // only the locked Map reaches the exporter
  EXPECT_CALL(*ex.exporter, Unmap(_, _, _)).Times(1);
  auto att = ex.dmabuf->Attach(DynamicImporter("imp"));
  ASSERT_TRUE(att.ok());

  auto m = ex.dmabuf->Map(**att, DmaDirection::kBidirectional);
  EXPECT_EQ(m.status(), -ENOLCK);
  EXPECT_EQ(LiveMappings(*ex.dmabuf), 0u);
  {
    HeldElsewhere other(ex.resv);  // held by another thread is not "held"
    auto m2 = ex.dmabuf->Map(**att, DmaDirection::kBidirectional);
    EXPECT_EQ(m2.status(), -ENOLCK);
  }
  EXPECT_EQ(LiveMappings(*ex.dmabuf), 0u);

  MappingRef mapping;
  {
    ResvGuard g(ex.resv);
    auto ok = ex.dmabuf->Map(**att, DmaDirection::kBidirectional);
    ASSERT_TRUE(ok.ok());
    mapping = ok.value();
    EXPECT_EQ(ex.dmabuf->live_mapping_count(), 1u);
  }
  EXPECT_EQ(ex.dmabuf->Unmap(**att, mapping), -ENOLCK);
  EXPECT_EQ(LiveMappings(*ex.dmabuf), 1u);  // still there
  {
    ResvGuard g(ex.resv);
    EXPECT_EQ(ex.dmabuf->Unmap(**att, mapping), kOk);
    EXPECT_EQ(ex.dmabuf->live_mapping_count(), 0u);
  }
  EXPECT_EQ(ex.dmabuf->Detach(*att), kOk);
}

TEST(DmaBufLockRulesTest, PinUnpinRequireResvHeld) {
  MockExport ex;
  EXPECT_CALL(*ex.exporter, Pin(_)).Times(1);
  EXPECT_CALL(*ex.exporter, Unpin(_)).Times(1);
  auto att = ex.dmabuf->Attach(DynamicImporter("imp"));
  ASSERT_TRUE(att.ok());
  EXPECT_EQ(ex.dmabuf->Pin(**att), -ENOLCK);
  {
    ResvGuard g(ex.resv);
    EXPECT_EQ(ex.dmabuf->Pin(**att), kOk);
  }
  EXPECT_EQ(ex.dmabuf->Unpin(**att), -ENOLCK);
  {
    ResvGuard g(ex.resv);
    EXPECT_EQ(ex.dmabuf->Unpin(**att), kOk);
  }
  EXPECT_EQ(ex.dmabuf->Detach(*att), kOk);
}

TEST(DmaBufLockRulesTest, PinOnBufferObjectRequiresResvHeld) {
  auto mm = MakeMm("pin");
  auto bo = MakeBo(mm, 4096, Placement::kSystem);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  auto att = (*dmabuf)->Attach(DynamicImporter("imp"));
  ASSERT_TRUE(att.ok());
  EXPECT_EQ((*dmabuf)->Pin(**att), -ENOLCK);
  EXPECT_EQ(bo->pin_count(), 0u);
  EXPECT_EQ(bo->PinPlacement(), -ENOLCK);
  EXPECT_EQ(bo->pin_count(), 0u);
  {
    ResvGuard g(bo->resv());
    EXPECT_EQ((*dmabuf)->Pin(**att), kOk);
  }
  EXPECT_EQ(bo->pin_count(), 1u);
  EXPECT_EQ((*dmabuf)->Unpin(**att), -ENOLCK);
  EXPECT_EQ(bo->UnpinPlacement(), -ENOLCK);
  EXPECT_EQ(bo->pin_count(), 1u);
  {
    ResvGuard g(bo->resv());
    EXPECT_EQ((*dmabuf)->Unpin(**att), kOk);
  }
  EXPECT_EQ(bo->pin_count(), 0u);
  EXPECT_EQ((*dmabuf)->Detach(*att), kOk);
}

TEST(DmaBufLockRulesTest, VmapVunmapRequireResvHeld) {
  MockExport ex;
  EXPECT_CALL(*ex.exporter, Vmap()).Times(1);
  EXPECT_CALL(*ex.exporter, Vunmap(_)).Times(1);
  auto v = ex.dmabuf->Vmap();
  EXPECT_EQ(v.status(), -ENOLCK);
  EXPECT_EQ(ex.dmabuf->vmap_count(), 0u);
  uint8_t* addr = nullptr;
  {
    ResvGuard g(ex.resv);
    auto ok = ex.dmabuf->Vmap();
    ASSERT_TRUE(ok.ok());
    addr = *ok;
    EXPECT_EQ(addr, ex.exporter->mem());
  }
  EXPECT_EQ(ex.dmabuf->vmap_count(), 1u);
  EXPECT_EQ(ex.dmabuf->Vunmap(addr), -ENOLCK);
  EXPECT_EQ(ex.dmabuf->vmap_count(), 1u);
  {
    ResvGuard g(ex.resv);
    EXPECT_EQ(ex.dmabuf->Vunmap(addr), kOk);
  }
  EXPECT_EQ(ex.dmabuf->vmap_count(), 0u);
}

TEST(DmaBufLockRulesTest, MoveNotifyRequiresResvHeld) {
  MockExport ex;
  int notified = 0;
  auto att = ex.dmabuf->Attach(DynamicImporter("imp", nullptr, true, [&](Attachment&) {
    ++notified;
  }));
  ASSERT_TRUE(att.ok());
  MappingRef mapping;
  {
    ResvGuard g(ex.resv);
    auto m = ex.dmabuf->Map(**att, DmaDirection::kBidirectional);
    ASSERT_TRUE(m.ok());
    mapping = m.value();
  }
  EXPECT_EQ(ex.dmabuf->MoveNotify(), -ENOLCK);
  EXPECT_EQ(notified, 0);
  EXPECT_EQ((*att)->move_notifies(), 0u);
  {
    ResvGuard g(ex.resv);
    EXPECT_TRUE(mapping->valid());  // nothing was invalidated either
    EXPECT_EQ(ex.dmabuf->MoveNotify(), kOk);
    EXPECT_EQ(notified, 1);
    EXPECT_FALSE(mapping->valid());
    EXPECT_EQ(ex.dmabuf->Unmap(**att, mapping), kOk);
  }
  EXPECT_EQ(ex.dmabuf->Detach(*att), kOk);
}

TEST(DmaBufLockRulesTest, AttachDetachRefuseWhenResvHeld) {
  MockExport ex;
  EXPECT_CALL(*ex.exporter, OnAttach(_)).Times(1);
  EXPECT_CALL(*ex.exporter, OnDetach(_)).Times(1);
  {
    ResvGuard g(ex.resv);
    auto att = ex.dmabuf->Attach(DynamicImporter("imp"));
    EXPECT_EQ(att.status(), -EDEADLK);
    EXPECT_EQ(ex.dmabuf->attachment_count(), 0u);
    EXPECT_TRUE(ex.dmabuf->attachments().empty());
  }
  auto att = ex.dmabuf->Attach(DynamicImporter("imp"));
  ASSERT_TRUE(att.ok());
  EXPECT_EQ(ex.dmabuf->attachment_count(), 1u);
  {
    ResvGuard g(ex.resv);
    EXPECT_EQ(ex.dmabuf->Detach(*att), -EDEADLK);
    EXPECT_EQ(ex.dmabuf->attachment_count(), 1u);
    EXPECT_EQ(ex.dmabuf->attachments().size(), 1u);
  }
  // Still attached: it can be mapped.
  {
    ResvGuard g(ex.resv);
    auto m = ex.dmabuf->Map(**att, DmaDirection::kToDevice);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(ex.dmabuf->Unmap(**att, *m), kOk);
  }
  EXPECT_EQ(ex.dmabuf->Detach(*att), kOk);
  EXPECT_EQ(ex.dmabuf->attachment_count(), 0u);
  EXPECT_EQ(ex.dmabuf->Detach(*att), -ENOENT);
}

TEST(DmaBufLockRulesTest, CpuAccessRefusesWhenResvHeld) {
  MockExport ex;
  EXPECT_CALL(*ex.exporter, BeginCpuAccess(_, _)).Times(1);
  EXPECT_CALL(*ex.exporter, EndCpuAccess(_, _)).Times(1);
  {
    ResvGuard g(ex.resv);
    EXPECT_EQ(ex.dmabuf->BeginCpuAccess(DmaDirection::kFromDevice), -EDEADLK);
    EXPECT_EQ(ex.dmabuf->EndCpuAccess(DmaDirection::kToDevice), -EDEADLK);
  }
  EXPECT_EQ(ex.dmabuf->BeginCpuAccess(DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(ex.dmabuf->EndCpuAccess(DmaDirection::kToDevice), kOk);

  // The BufferObject entry points (exported or not) follow the same rule.
  auto mm = MakeMm("cpu", kMiB, CacheMode::kStrict);
  auto bo = MakeBo(mm, 4096, Placement::kDevice);
  ResvGuard g(bo->resv());
  EXPECT_EQ(bo->BeginCpuAccessUnlocked(DmaDirection::kBidirectional), -EDEADLK);
  EXPECT_EQ(bo->EndCpuAccessUnlocked(DmaDirection::kBidirectional), -EDEADLK);
}

// ------------------------------------------------------------------ S2/S3: vmap

TEST(DmaBufVmapTest, ExporterSeesOneVmap) {
  // With a mock: exactly one exporter Vmap, and its Vunmap only at the last Vunmap.
  {
    MockExport ex;
    EXPECT_CALL(*ex.exporter, Vmap()).Times(1);
    ResvGuard g(ex.resv);
    constexpr int kUsers = 5;
    uint8_t* first = nullptr;
    for (int i = 0; i < kUsers; ++i) {
      auto v = ex.dmabuf->Vmap();
      ASSERT_TRUE(v.ok());
      if (i == 0) first = *v;
      EXPECT_EQ(*v, first);
    }
    EXPECT_EQ(ex.dmabuf->vmap_count(), unsigned(kUsers));
    ::testing::Mock::VerifyAndClearExpectations(ex.exporter.get());
    EXPECT_CALL(*ex.exporter, Vunmap(_)).Times(0);
    for (int i = 0; i < kUsers - 1; ++i) EXPECT_EQ(ex.dmabuf->Vunmap(first), kOk);
    ::testing::Mock::VerifyAndClearExpectations(ex.exporter.get());
    EXPECT_CALL(*ex.exporter, Vunmap(first)).Times(1);
    EXPECT_EQ(ex.dmabuf->Vunmap(first), kOk);
    EXPECT_EQ(ex.dmabuf->vmap_count(), 0u);
  }
  // With a buffer object: exporter_vmaps() counts the exporter's Vmap calls.
  auto mm = MakeMm("vmap");
  auto bo = MakeBo(mm, 8192, Placement::kDevice);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  ResvGuard g(bo->resv());
  std::vector<uint8_t*> addrs;
  for (int i = 0; i < 4; ++i) {
    auto v = (*dmabuf)->Vmap();
    ASSERT_TRUE(v.ok());
    addrs.push_back(*v);
  }
  EXPECT_EQ(bo->exporter_vmaps(), 1u);
  EXPECT_EQ(bo->pin_count(), 1u);  // the exporter pinned once for its one vmap
  for (uint8_t* a : addrs) EXPECT_EQ(a, addrs[0]);
  EXPECT_EQ(addrs[0], bo->storage()->data());
  for (size_t i = 0; i + 1 < addrs.size(); ++i) {
    EXPECT_EQ((*dmabuf)->Vunmap(addrs[0]), kOk);
    EXPECT_EQ(bo->pin_count(), 1u) << "exporter Vunmap ran before the last Vunmap";
  }
  EXPECT_EQ((*dmabuf)->Vunmap(addrs[0]), kOk);
  EXPECT_EQ(bo->pin_count(), 0u);
  EXPECT_EQ((*dmabuf)->vmap_count(), 0u);
  // A later Vmap goes to the exporter again.
  auto v = (*dmabuf)->Vmap();
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(bo->exporter_vmaps(), 2u);
  EXPECT_EQ((*dmabuf)->Vunmap(*v), kOk);
}

TEST(DmaBufVmapTest, VunmapOfUnmappedAddressRejected) {
  MockExport ex;
  EXPECT_CALL(*ex.exporter, Vunmap(_)).Times(1);
  ResvGuard g(ex.resv);
  // Nothing mapped at all.
  EXPECT_EQ(ex.dmabuf->Vunmap(ex.exporter->mem()), -EINVAL);
  EXPECT_EQ(ex.dmabuf->vmap_count(), 0u);
  auto v = ex.dmabuf->Vmap();
  ASSERT_TRUE(v.ok());
  // Mapped, but a different address.
  EXPECT_EQ(ex.dmabuf->Vunmap(*v + 1), -EINVAL);
  EXPECT_EQ(ex.dmabuf->Vunmap(nullptr), -EINVAL);
  EXPECT_EQ(ex.dmabuf->vmap_count(), 1u);
  EXPECT_EQ(ex.dmabuf->Vunmap(*v), kOk);
  // Unmapped twice: the refcount must not underflow into the exporter again.
  EXPECT_EQ(ex.dmabuf->Vunmap(*v), -EINVAL);
  EXPECT_EQ(ex.dmabuf->vmap_count(), 0u);
}

TEST(DmaBufVmapTest, VmapPinsAgainstMoves) {
  auto mm = MakeMm("vmap-pin");
  auto bo = MakeBo(mm, 8192, Placement::kDevice);
  auto bytes = RandomBytes(bo->size(), 7);
  WriteBo(*bo, bytes);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  ResvGuard g(bo->resv());
  auto v1 = (*dmabuf)->Vmap();
  auto v2 = (*dmabuf)->Vmap();
  ASSERT_TRUE(v1.ok() && v2.ok());
  const uint64_t gen = bo->generation();
  EXPECT_EQ(bo->Move(Placement::kSystem), -EBUSY);
  EXPECT_EQ(bo->placement(), Placement::kDevice);
  EXPECT_EQ(bo->generation(), gen);
  EXPECT_EQ(std::vector<uint8_t>(*v1, *v1 + bo->size()), bytes);  // vaddr still the storage
  EXPECT_EQ((*dmabuf)->Vunmap(*v1), kOk);
  EXPECT_EQ(bo->Move(Placement::kSystem), -EBUSY);  // one user left
  EXPECT_EQ((*dmabuf)->Vunmap(*v2), kOk);
  EXPECT_EQ(bo->Move(Placement::kSystem), kOk);
  EXPECT_EQ(bo->placement(), Placement::kSystem);
  auto mem = bo->VmapLocal();
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ(std::vector<uint8_t>(*mem, *mem + bo->size()), bytes);
}

TEST(DmaBufVmapTest, VmapLocalRequiresResvHeld) {
  MockExport ex;
  EXPECT_CALL(*ex.exporter, VmapLocal()).Times(1);
  EXPECT_EQ(ex.dmabuf->VmapLocal().status(), -ENOLCK);
  {
    HeldElsewhere other(ex.resv);
    EXPECT_EQ(ex.dmabuf->VmapLocal().status(), -ENOLCK);
  }
  {
    ResvGuard g(ex.resv);
    auto v = ex.dmabuf->VmapLocal();
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, ex.exporter->mem());
    EXPECT_EQ(ex.dmabuf->vmap_count(), 0u);  // short-term: not refcounted as a vmap
  }
  // The BufferObject exporter refuses too (it is called directly by the device).
  auto mm = MakeMm("vl");
  auto bo = MakeBo(mm, 4096, Placement::kSystem);
  EXPECT_EQ(bo->VmapLocal().status(), -ENOLCK);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  EXPECT_EQ((*dmabuf)->VmapLocal().status(), -ENOLCK);
  EXPECT_EQ(bo->exporter_vmaps(), 0u);
}

// ------------------------------------------------------------------ S5: move_notify

struct NotifyCounter {
  int count = 0;
  ImporterOps Ops(const std::string& name, const void* device = nullptr, bool p2p = true) {
    return DynamicImporter(name, device, p2p, [this](Attachment& a) {
      EXPECT_TRUE(a.dmabuf().resv().IsHeld()) << "move_notify without the reservation";
      ++count;
    });
  }
};

TEST(MoveNotifyTest, OnlyAttachmentsWithLiveMappings) {
  auto mm = MakeMm("mn");
  auto bo = MakeBo(mm, 4096, Placement::kDevice);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  NotifyCounter mapped, never, unmapped;
  auto a1 = (*dmabuf)->Attach(mapped.Ops("mapped"));
  auto a2 = (*dmabuf)->Attach(never.Ops("never"));
  auto a3 = (*dmabuf)->Attach(unmapped.Ops("unmapped"));
  ASSERT_TRUE(a1.ok() && a2.ok() && a3.ok());
  MappingRef m1;
  {
    ResvGuard g(bo->resv());
    auto r1 = (*dmabuf)->Map(**a1, DmaDirection::kBidirectional);
    auto r3 = (*dmabuf)->Map(**a3, DmaDirection::kBidirectional);
    ASSERT_TRUE(r1.ok() && r3.ok());
    m1 = *r1;
    EXPECT_EQ((*dmabuf)->Unmap(**a3, *r3), kOk);
    EXPECT_EQ(bo->Move(Placement::kSystem), kOk);
    EXPECT_FALSE(m1->valid());
  }
  EXPECT_EQ(mapped.count, 1);
  EXPECT_EQ(never.count, 0);
  EXPECT_EQ(unmapped.count, 0);
  EXPECT_EQ((*a1)->move_notifies(), 1u);
  EXPECT_EQ((*a2)->move_notifies(), 0u);
  EXPECT_EQ((*a3)->move_notifies(), 0u);
  {
    ResvGuard g(bo->resv());
    EXPECT_EQ((*dmabuf)->Unmap(**a1, m1), kOk);
  }
  for (auto* a : {&*a1, &*a2, &*a3}) EXPECT_EQ((*dmabuf)->Detach(*a), kOk);
}

TEST(MoveNotifyTest, OncePerInvalidation) {
  auto mm = MakeMm("mn-once");
  auto bo = MakeBo(mm, 4096, Placement::kDevice);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  NotifyCounter imp;
  auto att = (*dmabuf)->Attach(imp.Ops("imp"));
  ASSERT_TRUE(att.ok());
  std::optional<ResvGuard> g(std::in_place, bo->resv());
  auto m = (*dmabuf)->Map(**att, DmaDirection::kBidirectional);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(bo->Move(Placement::kSystem), kOk);
  EXPECT_EQ(bo->Move(Placement::kDevice), kOk);  // no re-map in between
  EXPECT_EQ(bo->moves(), 2u);
  EXPECT_EQ(imp.count, 1);
  // Re-map, then move: a second notification.
  EXPECT_EQ((*dmabuf)->Unmap(**att, *m), kOk);
  auto m2 = (*dmabuf)->Map(**att, DmaDirection::kBidirectional);
  ASSERT_TRUE(m2.ok());
  EXPECT_TRUE((*m2)->valid());
  EXPECT_EQ(bo->Move(Placement::kSystem), kOk);
  EXPECT_EQ(imp.count, 2);
  EXPECT_EQ((*att)->move_notifies(), 2u);
  EXPECT_EQ((*dmabuf)->Unmap(**att, *m2), kOk);
  g.reset();
  EXPECT_EQ((*dmabuf)->Detach(*att), kOk);
}

TEST(MoveNotifyTest, NoRecursionIntoImporterOwnMap) {
  auto mm = MakeMm("mn-rec");
  auto bo = MakeBo(mm, 8192, Placement::kDevice);
  auto bytes = RandomBytes(bo->size(), 11);
  WriteBo(*bo, bytes);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  int other_dev = 0, remote_dev = 0;  // identities of two other devices
  NotifyCounter peer, remote;
  auto p = (*dmabuf)->Attach(peer.Ops("peer", &other_dev, /*p2p=*/true));
  auto r = (*dmabuf)->Attach(remote.Ops("remote", &remote_dev, /*p2p=*/false));
  ASSERT_TRUE(p.ok() && r.ok());
  std::optional<ResvGuard> g(std::in_place, bo->resv());
  auto pm = (*dmabuf)->Map(**p, DmaDirection::kBidirectional);
  ASSERT_TRUE(pm.ok());
  EXPECT_EQ(bo->placement(), Placement::kDevice);  // a peer maps VRAM directly
  const uint64_t gen = bo->generation();

  auto rm = (*dmabuf)->Map(**r, DmaDirection::kBidirectional);
  ASSERT_TRUE(rm.ok());
  EXPECT_EQ(bo->placement(), Placement::kSystem);  // the exporter moved inside Map
  EXPECT_GT(bo->generation(), gen);
  EXPECT_EQ(remote.count, 0) << "move_notify recursed into the importer whose Map moved it";
  EXPECT_EQ((*r)->move_notifies(), 0u);
  EXPECT_EQ((*r)->self_invalidations(), 1u);
  EXPECT_TRUE((*rm)->valid());
  EXPECT_EQ((*rm)->sgt().generation, bo->generation());
  EXPECT_EQ(std::vector<uint8_t>((*rm)->host(), (*rm)->host() + bo->size()), bytes);
  // The other importer's live mapping was invalidated and it was told.
  EXPECT_EQ(peer.count, 1);
  EXPECT_FALSE((*pm)->valid());
  EXPECT_EQ((*p)->self_invalidations(), 0u);
  EXPECT_EQ((*dmabuf)->Unmap(**p, *pm), kOk);
  EXPECT_EQ((*dmabuf)->Unmap(**r, *rm), kOk);
  g.reset();
  EXPECT_EQ((*dmabuf)->Detach(*p), kOk);
  EXPECT_EQ((*dmabuf)->Detach(*r), kOk);
}

// Rule S5b: the guard against recursion covers only the mapping being created. An importer
// whose own Map makes the exporter move still holds other mappings that the move
// invalidated, and it must be told about those (issue 9, defect 4; Linux notifies every
// dynamic attachment).
TEST(MoveNotifyTest, OwnMapStillNotifiesForOtherLiveMappings) {
  MockExport ex;
  NotifyCounter imp;
  auto att = ex.dmabuf->Attach(imp.Ops("imp"));
  ASSERT_TRUE(att.ok());
  std::optional<ResvGuard> g(std::in_place, ex.resv);
  auto m1 = ex.dmabuf->Map(**att, DmaDirection::kBidirectional);
  ASSERT_TRUE(m1.ok());
  // The exporter moves the buffer to satisfy the next Map.
  EXPECT_CALL(*ex.exporter, Map(::testing::_, ::testing::_))
      .WillOnce([&](Attachment&, DmaDirection) {
        EXPECT_EQ(ex.dmabuf->MoveNotify(), kOk);
        SgTable sgt;
        sgt.entries.push_back({-1, 0, ex.exporter->size(), ex.exporter->mem()});
        sgt.generation = 2;
        return Result<SgTable>(std::move(sgt));
      });
  auto m2 = ex.dmabuf->Map(**att, DmaDirection::kBidirectional);
  ASSERT_TRUE(m2.ok());
  EXPECT_FALSE((*m1)->valid());
  EXPECT_TRUE((*m2)->valid());
  EXPECT_EQ(imp.count, 1) << "the importer was not told its other mapping went stale";
  EXPECT_EQ((*att)->move_notifies(), 1u);
  EXPECT_EQ((*att)->self_invalidations(), 1u);
  EXPECT_EQ(ex.dmabuf->Unmap(**att, *m1), kOk);
  EXPECT_EQ(ex.dmabuf->Unmap(**att, *m2), kOk);
  g.reset();
  EXPECT_EQ(ex.dmabuf->Detach(*att), kOk);
}

TEST(MoveNotifyTest, RemapAfterInvalidationYieldsNewStorageSameContents) {
  auto mm = MakeMm("mn-remap");
  auto bo = MakeBo(mm, 3 * 4096, Placement::kDevice);
  auto bytes = RandomBytes(bo->size(), 13);
  WriteBo(*bo, bytes);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  MappingRef stale;
  auto att = (*dmabuf)->Attach(DynamicImporter("imp", nullptr, true, [&](Attachment& a) {
    // The importer drops its mapping from move_notify (allowed: resv held).
    EXPECT_EQ(a.dmabuf().Unmap(a, stale), kOk);
  }));
  ASSERT_TRUE(att.ok());
  std::optional<ResvGuard> g(std::in_place, bo->resv());
  auto m = (*dmabuf)->Map(**att, DmaDirection::kBidirectional);
  ASSERT_TRUE(m.ok());
  stale = *m;
  uint8_t* old_host = stale->host();
  const uint64_t old_gen = stale->sgt().generation;
  EXPECT_EQ(old_host, bo->storage()->data());
  EXPECT_EQ(bo->Move(Placement::kSystem), kOk);
  EXPECT_FALSE(stale->valid());
  EXPECT_EQ((*att)->live_mappings(), 0u);
  auto m2 = (*dmabuf)->Map(**att, DmaDirection::kBidirectional);
  ASSERT_TRUE(m2.ok());
  EXPECT_TRUE((*m2)->valid());
  EXPECT_NE((*m2)->host(), old_host);
  EXPECT_NE((*m2)->sgt().generation, old_gen);
  EXPECT_EQ((*m2)->sgt().generation, bo->generation());
  EXPECT_EQ((*m2)->host(), bo->storage()->data());
  EXPECT_EQ(std::vector<uint8_t>((*m2)->host(), (*m2)->host() + bo->size()), bytes);
  EXPECT_EQ((*dmabuf)->Unmap(**att, *m2), kOk);
  g.reset();
  EXPECT_EQ((*dmabuf)->Detach(*att), kOk);
}

// Issue 9 defect 3, rule S5d: the exporter notifies before it copies (amdgpu and xe order). An
// importer's CPU mapping is live until its move_notify drops it, so its last write through
// that mapping - made just before it drops it - must be in the moved buffer, not in retired
// storage; and the notification already names the buffer's new generation.
TEST(MoveNotifyTest, ImporterWriteBeforeItsNotificationSurvivesTheMove) {
  auto mm = MakeMm("mn-before-copy");
  auto bo = MakeBo(mm, 2 * 4096, Placement::kDevice);
  WriteBo(*bo, std::vector<uint8_t>(bo->size(), 0x11));
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  MappingRef mapping;
  uint64_t generation_seen = 0;
  auto att = (*dmabuf)->Attach(DynamicImporter("imp", nullptr, true, [&](Attachment& a) {
    // a CPU write through the mapping that is still live, then the mapping goes
    std::memset(mapping->host() + 4096, 0x5a, 64);
    generation_seen = bo->generation();
    EXPECT_EQ(a.dmabuf().Unmap(a, mapping), kOk);
  }));
  ASSERT_TRUE(att.ok());
  std::optional<ResvGuard> g(std::in_place, bo->resv());
  auto m = (*dmabuf)->Map(**att, DmaDirection::kBidirectional);
  ASSERT_TRUE(m.ok());
  mapping = *m;
  const uint64_t before = bo->generation();
  EXPECT_EQ(bo->Move(Placement::kSystem), kOk);
  EXPECT_EQ(generation_seen, before + 1) << "notified with the old generation";
  g.reset();
  std::vector<uint8_t> got = ReadBo(*bo);
  EXPECT_EQ(got[4096 - 1], 0x11);
  EXPECT_EQ(got[4096], 0x5a) << "the importer's last write went to the old storage";
  EXPECT_EQ(got[4096 + 63], 0x5a);
  EXPECT_EQ(got[4096 + 64], 0x11);
  EXPECT_EQ((*dmabuf)->Detach(*att), kOk);
}

TEST(MoveNotifyTest, StaticAttachmentIsNeverNotified) {
  auto mm = MakeMm("mn-static");
  auto bo = MakeBo(mm, 4096, Placement::kSystem);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  NotifyCounter dyn;
  auto s = (*dmabuf)->Attach(StaticImporter("static"));
  auto d = (*dmabuf)->Attach(dyn.Ops("dyn"));
  ASSERT_TRUE(s.ok() && d.ok());
  std::optional<ResvGuard> g(std::in_place, bo->resv());
  auto sm = (*dmabuf)->Map(**s, DmaDirection::kBidirectional);  // the cached mapping
  auto dm = (*dmabuf)->Map(**d, DmaDirection::kBidirectional);
  ASSERT_TRUE(sm.ok() && dm.ok());
  // A static attachment pins: the exporter cannot move.
  EXPECT_EQ(bo->Move(Placement::kDevice), -EBUSY);
  // An exporter that signals an invalidation anyway reaches only the dynamic importer.
  EXPECT_EQ((*dmabuf)->MoveNotify(), kOk);
  EXPECT_EQ(dyn.count, 1);
  EXPECT_EQ((*s)->move_notifies(), 0u);
  EXPECT_TRUE((*sm)->valid()) << "a static attachment's cached mapping was invalidated";
  EXPECT_EQ((*dmabuf)->Unmap(**d, *dm), kOk);
  EXPECT_EQ((*dmabuf)->Unmap(**s, *sm), kOk);  // no-op for the cached mapping
  EXPECT_TRUE((*sm)->valid());
  g.reset();
  EXPECT_EQ((*dmabuf)->Detach(*s), kOk);
  EXPECT_EQ((*dmabuf)->Detach(*d), kOk);
}

TEST(DmaBufAttachTest, StaticAttachmentMapsOnceAndUnmapsAtDetach) {
  MockExport ex;
  ::testing::InSequence seq;
  EXPECT_CALL(*ex.exporter, OnAttach(_));
  EXPECT_CALL(*ex.exporter, Pin(_));
  EXPECT_CALL(*ex.exporter, Map(_, DmaDirection::kBidirectional));
  EXPECT_CALL(*ex.exporter, Unmap(_, _, DmaDirection::kBidirectional));
  EXPECT_CALL(*ex.exporter, Unpin(_));
  EXPECT_CALL(*ex.exporter, OnDetach(_));
  auto att = ex.dmabuf->Attach(StaticImporter("static"));
  ASSERT_TRUE(att.ok());
  {
    ResvGuard g(ex.resv);
    // Maps hand out the cached mapping; the exporter is not asked again.
    auto m1 = ex.dmabuf->Map(**att, DmaDirection::kToDevice);
    auto m2 = ex.dmabuf->Map(**att, DmaDirection::kBidirectional);
    ASSERT_TRUE(m1.ok() && m2.ok());
    EXPECT_EQ(m1->get(), m2->get());
    EXPECT_EQ(ex.dmabuf->Unmap(**att, *m1), kOk);
    EXPECT_EQ(ex.dmabuf->live_mapping_count(), 1u);
  }
  EXPECT_EQ(ex.dmabuf->Detach(*att), kOk);
  // The exporter saw the cached mapping released, balanced with its Map.
  ::testing::Mock::VerifyAndClearExpectations(ex.exporter.get());
}

TEST(MoveNotifyTest, DetachWithMappingsIsRefused) {
  MockExport ex;
  auto att = ex.dmabuf->Attach(DynamicImporter("imp"));
  ASSERT_TRUE(att.ok());
  MappingRef m;
  {
    ResvGuard g(ex.resv);
    auto r = ex.dmabuf->Map(**att, DmaDirection::kBidirectional);
    ASSERT_TRUE(r.ok());
    m = *r;
  }
  EXPECT_EQ(ex.dmabuf->Detach(*att), -EBUSY);
  EXPECT_EQ(ex.dmabuf->attachment_count(), 1u);
  {
    ResvGuard g(ex.resv);
    EXPECT_EQ(ex.dmabuf->Unmap(**att, m), kOk);
    EXPECT_EQ(ex.dmabuf->Unmap(**att, m), -ENOENT);  // not held any more
  }
  EXPECT_EQ(ex.dmabuf->Detach(*att), kOk);
}


// ------------------------------------------------------------------ lifetime (issue 9, defect 9)

// Ownership is acyclic: the importer owns its attachment, the attachment owns (a reference to)
// the DmaBuf, the DmaBuf owns its exporter; the DmaBuf's list of attachments owns nothing. A
// device whose close raced one of its jobs saw Detach refused (the job had mapped the buffer
// again between the close's unmap and its detach) and dropped the attachment still attached:
// the list and the attachment then owned each other and the whole buffer (storage, charge,
// reservation) was never freed.
TEST(DmaBufLifetimeTest, AttachmentDroppedStillAttachedDoesNotKeepTheBuffer) {
  auto mm = MakeMm("lifetime");
  std::weak_ptr<BufferObject> weak_bo;
  std::weak_ptr<DmaBuf> weak_dmabuf;
  std::weak_ptr<Attachment> weak_attachment;
  {
    auto bo = MakeBo(mm, 4 * 4096, Placement::kSystem, "leak");
    ASSERT_NE(bo, nullptr);
    auto dmabuf = bo->GetOrExport();
    ASSERT_TRUE(dmabuf.ok());
    auto att = (*dmabuf)->Attach(DynamicImporter("imp"));
    ASSERT_TRUE(att.ok());
    {
      ResvGuard g(bo->resv());
      ASSERT_TRUE((*dmabuf)->Map(**att, DmaDirection::kBidirectional).ok());
    }
    EXPECT_EQ((*dmabuf)->Detach(*att), -EBUSY);  // a mapping is still held
    weak_bo = bo;
    weak_dmabuf = *dmabuf;
    weak_attachment = *att;
    EXPECT_EQ(mm->stats().hostmem_used, 4 * 4096u);
  }  // the importer, the exporter's handle and the export all let go
  EXPECT_TRUE(weak_attachment.expired()) << "the DmaBuf's list keeps the attachment";
  EXPECT_TRUE(weak_dmabuf.expired()) << "the attachment and the DmaBuf own each other";
  EXPECT_TRUE(weak_bo.expired()) << "the buffer leaked";
  EXPECT_EQ(mm->stats().hostmem_used, 0u) << "the buffer's storage leaked";
}

}  // namespace
}  // namespace sharegpu::testing
