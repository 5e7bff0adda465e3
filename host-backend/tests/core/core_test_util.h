// Helpers shared by the core tests: memory managers and buffer objects with known contents,
// a gmock exporter, bounded thread runs (a deadlock fails the binary instead of hanging it).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/buffer_object.h"
#include "core/dma_buf.h"
#include "core/memory_manager.h"
#include "core/resv_guard.h"
#include "mem/copy_engine.h"

#include "run_threads.h"

namespace sharegpu::testing {


inline constexpr uint64_t kMiB = uint64_t{1} << 20;

inline std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

inline uint32_t Crc(const std::vector<uint8_t>& v) { return Crc32c(0, v.data(), v.size()); }

// The bytes `pattern` repeated little-endian over n bytes starting at a 4-aligned offset.
inline std::vector<uint8_t> PatternBytes(size_t n, uint32_t pattern) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(pattern >> ((i % 4) * 8));
  return v;
}

inline std::shared_ptr<MemoryManager> MakeMm(const std::string& name, uint64_t vram = kMiB,
                                             CacheMode mode = CacheMode::kCoherent,
                                             uint64_t max_hostmem = 0) {
  auto mm = MemoryManager::Create(name, vram, mode, max_hostmem);
  EXPECT_TRUE(mm.ok()) << mm.status();
  return mm.ok() ? mm.value() : nullptr;
}

inline std::shared_ptr<BufferObject> MakeBo(const std::shared_ptr<MemoryManager>& mm,
                                            uint64_t size, Placement placement,
                                            const std::string& name = "bo") {
  auto bo = BufferObject::Create(mm, size, placement, name);
  EXPECT_TRUE(bo.ok()) << bo.status();
  return bo.ok() ? bo.value() : nullptr;
}

// CPU access to a BO's current storage under its reservation (VmapLocal, rule S3).
inline void WriteBo(BufferObject& bo, const std::vector<uint8_t>& bytes, uint64_t off = 0) {
  ResvGuard guard(bo.resv());
  auto mem = bo.VmapLocal();
  ASSERT_TRUE(mem.ok());
  std::memcpy(*mem + off, bytes.data(), bytes.size());
}

inline std::vector<uint8_t> ReadBo(BufferObject& bo) {
  ResvGuard guard(bo.resv());
  auto mem = bo.VmapLocal();
  EXPECT_TRUE(mem.ok());
  if (!mem.ok()) return {};
  return std::vector<uint8_t>(*mem, *mem + bo.size());
}

inline Status MoveBo(BufferObject& bo, Placement target) {
  ResvGuard guard(bo.resv());
  return bo.Move(target);
}

// A dynamic importer: counts its notifications; `on_notify` runs inside move_notify.
inline ImporterOps DynamicImporter(const std::string& name, const void* device = nullptr,
                                   bool p2p = true,
                                   std::function<void(Attachment&)> on_notify = nullptr) {
  ImporterOps ops;
  ops.name = name;
  ops.device = device;
  ops.allow_peer2peer = p2p;
  ops.move_notify = on_notify ? std::move(on_notify) : [](Attachment&) {};
  return ops;
}

inline ImporterOps StaticImporter(const std::string& name, const void* device = nullptr,
                                  bool p2p = false) {
  ImporterOps ops;
  ops.name = name;
  ops.device = device;
  ops.allow_peer2peer = p2p;
  return ops;  // no move_notify: static
}

class MockExporter : public ExporterOps {
 public:
  explicit MockExporter(uint64_t size, bool dynamic = true) : size_(size), dynamic_(dynamic) {
    using ::testing::_;
    using ::testing::Return;
    mem_.assign(size, 0);
    ON_CALL(*this, Pin(_)).WillByDefault(Return(kOk));
    ON_CALL(*this, Map(_, _)).WillByDefault([this](Attachment&, DmaDirection) {
      SgTable sgt;
      sgt.entries.push_back({-1, 0, size_, mem_.data()});
      sgt.generation = 1;
      return Result<SgTable>(std::move(sgt));
    });
    ON_CALL(*this, BeginCpuAccess(_, _)).WillByDefault(Return(kOk));
    ON_CALL(*this, EndCpuAccess(_, _)).WillByDefault(Return(kOk));
    ON_CALL(*this, Vmap()).WillByDefault([this] { return Result<uint8_t*>(mem_.data()); });
    ON_CALL(*this, VmapLocal()).WillByDefault([this] { return Result<uint8_t*>(mem_.data()); });
  }
  uint64_t size() const override { return size_; }
  bool IsDynamic() const override { return dynamic_; }
  MOCK_METHOD(Status, OnAttach, (Attachment&), (override));
  MOCK_METHOD(void, OnDetach, (Attachment&), (override));
  MOCK_METHOD(Status, Pin, (Attachment&), (override));
  MOCK_METHOD(void, Unpin, (Attachment&), (override));
  MOCK_METHOD(Result<SgTable>, Map, (Attachment&, DmaDirection), (override));
  MOCK_METHOD(void, Unmap, (Attachment&, const SgTable&, DmaDirection), (override));
  MOCK_METHOD(Status, BeginCpuAccess, (DmaBuf&, DmaDirection), (override));
  MOCK_METHOD(Status, EndCpuAccess, (DmaBuf&, DmaDirection), (override));
  MOCK_METHOD(Result<uint8_t*>, Vmap, (), (override));
  MOCK_METHOD(void, Vunmap, (uint8_t*), (override));
  MOCK_METHOD(Result<uint8_t*>, VmapLocal, (), (override));

  uint8_t* mem() { return mem_.data(); }

 private:
  uint64_t size_;
  bool dynamic_;
  std::vector<uint8_t> mem_;
};

// A mock exporter exported over its own reservation object.
struct MockExport {
  explicit MockExport(uint64_t size = 4096, bool dynamic = true) {
    exporter = std::make_shared<::testing::NiceMock<MockExporter>>(size, dynamic);
    auto d = DmaBuf::Export(exporter, resv, "mock");
    EXPECT_TRUE(d.ok());
    if (d.ok()) dmabuf = d.value();
  }
  ~MockExport() {
    dmabuf.reset();
    exporter.reset();
  }
  ReservationObject resv;  // declared first: outlives the DmaBuf
  std::shared_ptr<::testing::NiceMock<MockExporter>> exporter;
  std::shared_ptr<DmaBuf> dmabuf;
};


}  // namespace sharegpu::testing
