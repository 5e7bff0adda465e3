// Sharing costs: a move that notifies 1 / 8 / 64 dynamic importers (each with a live mapping,
// re-mapped after every move as importers do) against the same move with no importer, and
// an export -> import-by-fd -> release round trip against creating and destroying a BO.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <vector>

#include "core/buffer_object.h"
#include "core/dma_buf.h"
#include "core/memory_manager.h"
#include "core/resv_guard.h"
#include "ratio_reporter.h"
#include "sharegpu/backend.h"

namespace sharegpu {
namespace {

constexpr uint64_t kBoSize = 64 * 1024;

void BM_MoveNotifyFanout(benchmark::State& state) {
  const int importers = static_cast<int>(state.range(0));
  auto mm = MemoryManager::Create("bench", 64 << 20, CacheMode::kCoherent).value();
  auto bo = BufferObject::Create(mm, kBoSize, Placement::kDevice, "bench-bo").value();
  auto dmabuf = bo->GetOrExport().value();
  std::vector<AttachmentRef> attachments;
  std::vector<MappingRef> mappings(importers);
  uint64_t notified = 0;
  for (int i = 0; i < importers; ++i) {
    ImporterOps ops;
    ops.name = "importer";
    ops.device = &attachments;  // any identity other than the exporter's
    ops.allow_peer2peer = true;
    ops.move_notify = [&notified](Attachment&) { ++notified; };
    attachments.push_back(dmabuf->Attach(std::move(ops)).value());
  }
  {
    ResvGuard guard(dmabuf->resv());
    for (int i = 0; i < importers; ++i) {
      mappings[i] = dmabuf->Map(*attachments[i], DmaDirection::kBidirectional).value();
    }
  }
  bool to_system = true;
  for (auto _ : state) {
    ResvGuard guard(dmabuf->resv());
    if (bo->Move(to_system ? Placement::kSystem : Placement::kDevice) != kOk) {
      state.SkipWithError("move failed");
      break;
    }
    to_system = !to_system;
    for (int i = 0; i < importers; ++i) {  // importers re-map after the notification
      (void)dmabuf->Unmap(*attachments[i], mappings[i]);
      mappings[i] = dmabuf->Map(*attachments[i], DmaDirection::kBidirectional).value();
    }
  }
  if (importers > 0 && notified != static_cast<uint64_t>(importers) * state.iterations()) {
    state.SkipWithError("a notification went missing or was doubled");
  }
  {
    ResvGuard guard(dmabuf->resv());
    for (int i = 0; i < importers; ++i) (void)dmabuf->Unmap(*attachments[i], mappings[i]);
  }
  for (auto& a : attachments) (void)dmabuf->Detach(a);
  state.counters["importers"] = importers;
}
BENCHMARK(BM_MoveNotifyFanout)->Arg(0)->Arg(1)->Arg(8)->Arg(64)->UseRealTime();

struct TwoDevices {
  sgb_backend* backend = nullptr;
  sgb_device* a = nullptr;
  sgb_device* b = nullptr;
  TwoDevices() {
    sgb_device_config ca{"bench-a", 64 << 20, 1, 0, nullptr}, cb{"bench-b", 64 << 20, 1, 0, nullptr};
    if (sgb_backend_new(&backend) || sgb_device_create(backend, &ca, &a) ||
        sgb_device_create(backend, &cb, &b)) {
      std::abort();
    }
  }
  ~TwoDevices() {
    sgb_device_destroy(b);
    sgb_device_destroy(a);
    sgb_backend_unref(backend);
  }
};

void BM_ExportImportRoundTrip(benchmark::State& state) {
  TwoDevices d;
  uint32_t bo;
  if (sgb_bo_create(d.a, kBoSize, SGB_PLACEMENT_DEVICE, 0, &bo)) std::abort();
  for (auto _ : state) {
    sgb_uuid uuid;
    int fd = -1;
    uint32_t imported;
    if (sgb_bo_export(d.a, bo, &uuid, &fd) || sgb_bo_import_fd(d.b, fd, &imported)) {
      state.SkipWithError("export/import failed");
      break;
    }
    close(fd);
    (void)sgb_bo_destroy(d.b, imported);
  }
}
BENCHMARK(BM_ExportImportRoundTrip)->UseRealTime();

void BM_BoCreateDestroy(benchmark::State& state) {
  TwoDevices d;
  for (auto _ : state) {
    uint32_t bo;
    if (sgb_bo_create(d.a, kBoSize, SGB_PLACEMENT_DEVICE, 0, &bo)) {
      state.SkipWithError("create failed");
      break;
    }
    (void)sgb_bo_destroy(d.a, bo);
  }
}
BENCHMARK(BM_BoCreateDestroy)->UseRealTime();

const bool kRatios = [] {
  using bench::RatioKind;
  for (int n : {1, 8, 64}) {
    bench::RegisterRatio("move_notify_fanout_" + std::to_string(n) + "_vs_no_importer",
                         "BM_MoveNotifyFanout/" + std::to_string(n) + "/real_time",
                         "BM_MoveNotifyFanout/0/real_time", RatioKind::kTime);
  }
  bench::RegisterRatio("export_import_roundtrip_vs_bo_create", "BM_ExportImportRoundTrip/real_time",
                       "BM_BoCreateDestroy/real_time", RatioKind::kTime);
  return true;
}();

}  // namespace
}  // namespace sharegpu

SHAREGPU_BENCH_MAIN()
