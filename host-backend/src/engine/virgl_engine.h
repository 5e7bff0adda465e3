// The `virgl` engine: a device whose jobs run on libvirglrenderer (engine/virgl_renderer.h), a
// real non-coherent device. The GL resource of a buffer on the device is that device's cache
// of the buffer (VirglCache, made by the engine's cache_factory() for the device's buffer
// objects and for its dma-buf attachments), so every cache barrier of the backend acts on it:
//   Flush               Download (GL -> pages) of the ranges jobs wrote; they stay cached
//   Invalidate          the same Download, then the range's pages are stale: the next job
//                       that reads them Uploads them (pages -> GL) first
//   WritebackAndDropAll Download of every written range, then the resource goes (a move
//                       changes the pages the resource is backed by; so does a reset)
// Only ranges jobs wrote are ever Downloaded, byte-exact, so CPU writes elsewhere in the same
// pages survive a write-back (the model's per-byte dirty mask at the granularity of the job's
// range). Reads go through whole pages as the model's line fills do: a job Uploads the stale
// pages of what it reads, never over bytes the GL side holds already (they may be written).
//
// On a coherent device (CacheMode::kCoherent) nothing stays cached between jobs: every job
// Uploads what it reads before and Downloads what it writes after, so the CPU always sees
// memory; the barriers have nothing to do.
//
// A job (Execute) holds the cache locks of its buffers while it runs, so a barrier racing a
// job (CACHE_FLUSH does not wait for fences) is ordered before or after it; its fence signals
// after a virgl fence behind its commands did (the renderer finished it).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/thread_annotations.h"
#include "engine/engine.h"
#include "engine/virgl_renderer.h"
#include "mem/device_cache.h"

namespace sharegpu {

// A set of byte ranges [begin, end): disjoint, sorted, adjacent ones merged.
class RangeSet {
 public:
  struct Range {
    uint64_t begin;
    uint64_t end;
  };
  void Add(uint64_t begin, uint64_t end);
  void Remove(uint64_t begin, uint64_t end);
  // The parts of [begin, end) that are in the set / not in it, in order.
  std::vector<Range> Covered(uint64_t begin, uint64_t end) const;
  std::vector<Range> Gaps(uint64_t begin, uint64_t end) const;
  // How many pages hold at least one byte of the set.
  uint64_t PagesTouched() const;
  bool empty() const { return ranges_.empty(); }
  void clear() { ranges_.clear(); }

 private:
  std::map<uint64_t, uint64_t> ranges_;  // begin -> end
};

class VirglCache final : public BufferCache {
 public:
  VirglCache(std::shared_ptr<VirglRenderer> renderer, CacheMode mode);
  ~VirglCache() override;

  void Flush(uint8_t* mem, uint64_t off, uint64_t len) override;
  void Invalidate(uint8_t* mem, uint64_t off, uint64_t len) override;
  void WritebackAndDropAll(uint8_t* mem) override;
  DeviceCacheStats stats() const override;
  bool HasDirtyLines() const override;

  // Whether the buffer has a GL resource on the device now (tests, the monitor).
  bool has_resource() const;

 private:
  friend class VirglEngine;

  // The resource over `mem` (size bytes), made on first use. A resource over other memory is
  // dropped first: the storage changed without WritebackAndDropAll (never, by the rules).
  Status BindLocked(uint8_t* mem, uint64_t size) SGB_REQUIRES(mu_);
  // Before a job reads [off, off+len): strict, Upload the stale pages of it; coherent, Upload
  // the range.
  Status BeforeReadLocked(uint64_t off, uint64_t len) SGB_REQUIRES(mu_);
  // After a job wrote [off, off+len): strict, the range is cached and written; coherent,
  // Download it.
  Status AfterWriteLocked(uint64_t off, uint64_t len) SGB_REQUIRES(mu_);
  // Downloads the written bytes of [begin, end) and forgets them as written.
  void WriteBackLocked(uint64_t begin, uint64_t end, const char* why) SGB_REQUIRES(mu_);
  // Whether a barrier's `mem` is what the resource is backed by (else nothing to do).
  bool BarrierMatchesLocked(const uint8_t* mem, const char* why) SGB_REQUIRES(mu_);
  // [off, off+len) (len > 0) widened to whole pages, clamped to the resource (empty when
  // outside it).
  void LineSpanLocked(uint64_t off, uint64_t len, uint64_t* begin, uint64_t* end) const
      SGB_REQUIRES(mu_);
  const VirglRenderer::BufferResource& resource() const SGB_REQUIRES(mu_) { return *res_; }

  const std::shared_ptr<VirglRenderer> renderer_;
  mutable std::mutex mu_;
  std::optional<VirglRenderer::BufferResource> res_ SGB_GUARDED_BY(mu_);
  uint8_t* mem_ SGB_GUARDED_BY(mu_) = nullptr;  // what res_ is backed by
  uint64_t size_ SGB_GUARDED_BY(mu_) = 0;
  RangeSet valid_ SGB_GUARDED_BY(mu_);    // strict: GL holds the buffer's current bytes
  RangeSet written_ SGB_GUARDED_BY(mu_);  // strict: jobs wrote them, not yet Downloaded
  DeviceCacheStats stats_ SGB_GUARDED_BY(mu_);
};

class VirglEngine final : public Engine {
 public:
  // -ENODEV, with the reason logged, when virglrenderer cannot initialise.
  static Result<std::unique_ptr<Engine>> Create(std::string name);
  ~VirglEngine() override;
  const char* kind() const override { return "virgl"; }
  CacheFactory cache_factory() const override;
  // virglrenderer's poll fd (process-wide: every virgl engine shares the renderer).
  int WatchBegin() override { return renderer_->WatchBegin(); }
  void WatchReady() override { renderer_->WatchReady(); }
  void WatchEnd() override { renderer_->WatchEnd(); }
  WatchPolls watch_polls() const override {
    return {renderer_->loop_polls(), renderer_->fallback_polls()};
  }

 private:
  VirglEngine(std::string name, std::shared_ptr<VirglRenderer> renderer)
      : Engine(name), name_(std::move(name)), renderer_(std::move(renderer)) {}
  Result<uint64_t> Execute(Job& job) override;
  // Runs the job with both caches locked (std::lock: invisible to the analysis).
  Result<uint64_t> Run(const Job& job, VirglCache& dst, VirglCache* src)
      SGB_NO_THREAD_SAFETY_ANALYSIS;
  // Waits for a virgl fence behind everything submitted so far.
  Status WaitRenderer();

  const std::string name_;
  const std::shared_ptr<VirglRenderer> renderer_;
};

}  // namespace sharegpu
