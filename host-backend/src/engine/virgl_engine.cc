#include "engine/virgl_engine.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <limits>

#include "common/log.h"
#include "mem/memfd.h"

namespace sharegpu {

// ---- RangeSet ----

void RangeSet::Add(uint64_t begin, uint64_t end) {
  if (begin >= end) return;
  // The first range that ends at or after `begin` (it touches or overlaps) starts the merge.
  auto it = ranges_.upper_bound(begin);
  if (it != ranges_.begin() && std::prev(it)->second >= begin) --it;
  while (it != ranges_.end() && it->first <= end) {
    begin = std::min(begin, it->first);
    end = std::max(end, it->second);
    it = ranges_.erase(it);
  }
  ranges_.emplace(begin, end);
}

void RangeSet::Remove(uint64_t begin, uint64_t end) {
  if (begin >= end) return;
  auto it = ranges_.upper_bound(begin);
  if (it != ranges_.begin() && std::prev(it)->second > begin) --it;
  while (it != ranges_.end() && it->first < end) {
    const uint64_t b = it->first, e = it->second;
    it = ranges_.erase(it);
    if (b < begin) ranges_.emplace(b, begin);
    if (e > end) {
      ranges_.emplace(end, e);
      break;
    }
  }
}

std::vector<RangeSet::Range> RangeSet::Covered(uint64_t begin, uint64_t end) const {
  std::vector<Range> out;
  if (begin >= end) return out;
  auto it = ranges_.upper_bound(begin);
  if (it != ranges_.begin() && std::prev(it)->second > begin) --it;
  for (; it != ranges_.end() && it->first < end; ++it) {
    out.push_back({std::max(begin, it->first), std::min(end, it->second)});
  }
  return out;
}

std::vector<RangeSet::Range> RangeSet::Gaps(uint64_t begin, uint64_t end) const {
  std::vector<Range> out;
  uint64_t pos = begin;
  for (const Range& r : Covered(begin, end)) {
    if (r.begin > pos) out.push_back({pos, r.begin});
    pos = r.end;
  }
  if (pos < end) out.push_back({pos, end});
  return out;
}

uint64_t RangeSet::PagesTouched() const {
  uint64_t pages = 0;
  uint64_t next = 0;  // first page not counted yet
  for (const auto& [b, e] : ranges_) {
    const uint64_t first = std::max(b / kPageSize, next);
    const uint64_t last = (e - 1) / kPageSize;
    if (last >= first) pages += last - first + 1;
    next = std::max(next, last + 1);
  }
  return pages;
}

namespace {

// Pages holding at least one byte of the ranges (sorted, disjoint).
uint64_t PagesOf(const std::vector<RangeSet::Range>& ranges) {
  RangeSet set;
  for (const RangeSet::Range& r : ranges) set.Add(r.begin, r.end);
  return set.PagesTouched();
}

}  // namespace

// ---- VirglCache ----

VirglCache::VirglCache(std::shared_ptr<VirglRenderer> renderer, CacheMode mode)
    : BufferCache(mode), renderer_(std::move(renderer)) {}

VirglCache::~VirglCache() = default;  // the resource goes with it (as the model's lines do)

bool VirglCache::has_resource() const {
  std::lock_guard lock(mu_);
  return res_.has_value();
}

Status VirglCache::BindLocked(uint8_t* mem, uint64_t size) {
  if (res_ && (mem_ != mem || size_ != size)) {
    // A storage change goes through WritebackAndDropAll first (BufferObject::Move): what the
    // resource holds belongs to memory that may be gone, so it cannot be written back.
    Logf(LogLevel::kError,
         "virgl cache: buffer memory changed under a live resource (%zu written ranges lost)",
         written_.Covered(0, size_).size());
    res_.reset();
    valid_.clear();
    written_.clear();
  }
  if (res_) return kOk;
  auto res = renderer_->CreateBuffer(mem, size);
  if (!res) {
    Logf(LogLevel::kError, "virgl cache: no resource for a buffer of %llu bytes (%d)%s",
         static_cast<unsigned long long>(size), res.status(),
         res.status() == -E2BIG ? ": a virgl buffer resource holds at most 1 GiB" : "");
    return res.status();
  }
  res_.emplace(std::move(res).value());
  mem_ = mem;
  size_ = size;
  valid_.clear();  // a new resource's GL contents are undefined
  written_.clear();
  return kOk;
}

void VirglCache::LineSpanLocked(uint64_t off, uint64_t len, uint64_t* begin,
                                uint64_t* end) const {
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t last = len - 1 > max - off ? max : off + len - 1;  // saturates
  *begin = std::min(off / kPageSize * kPageSize, size_);
  *end = last / kPageSize >= size_ / kPageSize ? size_ : (last / kPageSize + 1) * kPageSize;
}

Status VirglCache::BeforeReadLocked(uint64_t off, uint64_t len) {
  if (mode() == CacheMode::kCoherent) return renderer_->Upload(*res_, off, len);
  // Whole lines, as the model's read-allocate: later CPU writes to them stay invisible to the
  // device until Invalidate.
  uint64_t begin, end;
  LineSpanLocked(off, len, &begin, &end);
  const std::vector<RangeSet::Range> stale = valid_.Gaps(begin, end);
  const uint64_t pages = (end - begin + kPageSize - 1) / kPageSize;
  const uint64_t misses = PagesOf(stale);
  stats_.read_misses += misses;
  stats_.read_hits += pages - misses;
  for (const RangeSet::Range& r : stale) {
    if (Status st = renderer_->Upload(*res_, r.begin, r.end - r.begin)) return st;
    valid_.Add(r.begin, r.end);
  }
  return kOk;
}

Status VirglCache::AfterWriteLocked(uint64_t off, uint64_t len) {
  if (mode() == CacheMode::kCoherent) return renderer_->Download(*res_, off, len);
  valid_.Add(off, off + len);
  written_.Add(off, off + len);
  return kOk;
}

void VirglCache::WriteBackLocked(uint64_t begin, uint64_t end, const char* why) {
  for (const RangeSet::Range& r : written_.Covered(begin, end)) {
    if (Status st = renderer_->Download(*res_, r.begin, r.end - r.begin)) {
      // Still on the GL side and still marked written: a later barrier tries again.
      Logf(LogLevel::kError, "virgl cache: %s: write-back of %llu+%llu failed (%d)", why,
           static_cast<unsigned long long>(r.begin),
           static_cast<unsigned long long>(r.end - r.begin), st);
      continue;
    }
    written_.Remove(r.begin, r.end);
    stats_.lines_written_back += PagesOf({r});
  }
}

bool VirglCache::BarrierMatchesLocked(const uint8_t* mem, const char* why) {
  if (!res_) return false;  // nothing cached
  if (mem == mem_) return true;
  // The caller's memory is not what the resource is backed by: the storage changed without
  // WritebackAndDropAll (never, by the rules). Nothing is written to either.
  Logf(LogLevel::kError, "virgl cache: %s of memory the resource is not backed by", why);
  return false;
}

void VirglCache::Flush(uint8_t* mem, uint64_t off, uint64_t len) {
  std::lock_guard lock(mu_);
  ++stats_.flushes;
  if (len == 0 || !BarrierMatchesLocked(mem, "flush")) return;
  uint64_t begin, end;
  LineSpanLocked(off, len, &begin, &end);
  WriteBackLocked(begin, end, "flush");
}

void VirglCache::Invalidate(uint8_t* mem, uint64_t off, uint64_t len) {
  std::lock_guard lock(mu_);
  ++stats_.invalidates;
  if (len == 0 || !BarrierMatchesLocked(mem, "invalidate")) return;
  uint64_t begin, end;
  LineSpanLocked(off, len, &begin, &end);
  WriteBackLocked(begin, end, "invalidate");  // dropping written bytes would lose device data
  // What could not be written back stays (valid and written) rather than being lost.
  const std::vector<RangeSet::Range> kept = written_.Covered(begin, end);
  valid_.Remove(begin, end);
  for (const RangeSet::Range& r : kept) valid_.Add(r.begin, r.end);
}

void VirglCache::WritebackAndDropAll(uint8_t* mem) {
  std::lock_guard lock(mu_);
  if (!res_) return;
  if (mem == mem_) {
    WriteBackLocked(0, size_, "write-back before a move");
  } else {
    (void)BarrierMatchesLocked(mem, "write-back before a move");
  }
  if (!written_.empty()) {
    Logf(LogLevel::kError, "virgl cache: device writes lost with the resource (%llu pages)",
         static_cast<unsigned long long>(written_.PagesTouched()));
  }
  res_.reset();
  mem_ = nullptr;
  size_ = 0;
  valid_.clear();
  written_.clear();
}

DeviceCacheStats VirglCache::stats() const {
  std::lock_guard lock(mu_);
  DeviceCacheStats s = stats_;
  s.valid_lines = valid_.PagesTouched();
  s.dirty_lines = written_.PagesTouched();
  return s;
}

bool VirglCache::HasDirtyLines() const {
  std::lock_guard lock(mu_);
  return !written_.empty();
}

// ---- VirglEngine ----

Result<std::unique_ptr<Engine>> VirglEngine::Create(std::string name) {
  using R = Result<std::unique_ptr<Engine>>;
  auto renderer = VirglRenderer::Get();
  if (!renderer) {
    Logf(LogLevel::kError,
         "%s: engine 'virgl' unavailable: virglrenderer did not initialise (%d; the reason is "
         "logged above)",
         name.c_str(), renderer.status());
    return R::Error(-ENODEV);
  }
  std::unique_ptr<VirglEngine> engine(
      new VirglEngine(std::move(name), std::move(renderer).value()));
  engine->Start();
  return std::unique_ptr<Engine>(std::move(engine));
}

VirglEngine::~VirglEngine() { Stop(); }

CacheFactory VirglEngine::cache_factory() const {
  return [renderer = renderer_](CacheMode mode) -> std::unique_ptr<BufferCache> {
    return std::make_unique<VirglCache>(renderer, mode);
  };
}

Result<uint64_t> VirglEngine::Execute(Job& job) {
  using R = Result<uint64_t>;
  const size_t want = job.op == JobOp::kCopy ? 2 : 1;
  if (job.buffers.size() != want) return R::Error(-EINVAL);
  // Every buffer of a virgl device has a virgl cache (cache_factory); anything else is a view
  // another engine made.
  VirglCache* caches[2] = {nullptr, nullptr};
  for (size_t i = 0; i < want; ++i) {
    const DeviceView& v = job.buffers[i].view;
    caches[i] = v.mem ? dynamic_cast<VirglCache*>(v.cache) : nullptr;
    if (!caches[i]) {
      Logf(LogLevel::kError, "%s: %s job: buffer %zu has no virgl cache", name_.c_str(),
           JobOpName(job.op), i);
      return R::Error(-EINVAL);
    }
  }
  // The copy engine's argument rules, checked before anything reaches the renderer.
  const DeviceView& first = job.buffers[0].view;
  if (job.len == 0) return R::Error(-EINVAL);
  if (job.op == JobOp::kFill && (job.off % 4 != 0 || job.len % 4 != 0)) return R::Error(-EINVAL);
  if (!RangeFits(job.off, job.len, first.size)) return R::Error(-ERANGE);
  if (job.op == JobOp::kCopy && !RangeFits(job.off2, job.len, job.buffers[1].view.size)) {
    return R::Error(-ERANGE);
  }

  Result<uint64_t> result = Run(job, *caches[0], caches[1]);
  if (!result) return result;
  // Complete when the renderer is: the fence after the job's commands.
  if (Status st = WaitRenderer()) return R::Error(st);
  return result;
}

Result<uint64_t> VirglEngine::Run(const Job& job, VirglCache& dst, VirglCache* src) {
  using R = Result<uint64_t>;
  // Both caches locked for the whole job (one lock when a copy stays in one buffer): a
  // barrier racing the job sees it all or nothing.
  std::unique_lock<std::mutex> dst_lock(dst.mu_, std::defer_lock);
  std::unique_lock<std::mutex> src_lock;
  if (src && src != &dst) {
    src_lock = std::unique_lock<std::mutex>(src->mu_, std::defer_lock);
    std::lock(dst_lock, src_lock);
  } else {
    dst_lock.lock();
  }
  const DeviceView& first = job.buffers[0].view;
  if (Status st = dst.BindLocked(first.mem, first.size)) return R::Error(st);
  switch (job.op) {
    case JobOp::kCopy: {
      const DeviceView& second = job.buffers[1].view;
      if (Status st = src->BindLocked(second.mem, second.size)) return R::Error(st);
      if (Status st = src->BeforeReadLocked(job.off2, job.len)) return R::Error(st);
      if (Status st = renderer_->Copy(src->resource(), job.off2, dst.resource(), job.off,
                                      job.len)) {
        return R::Error(st);
      }
      if (Status st = dst.AfterWriteLocked(job.off, job.len)) return R::Error(st);
      return uint64_t{0};
    }
    case JobOp::kFill:
      if (Status st = renderer_->Fill(dst.resource(), job.off, job.len, job.pattern)) {
        return R::Error(st);
      }
      if (Status st = dst.AfterWriteLocked(job.off, job.len)) return R::Error(st);
      return uint64_t{0};
    case JobOp::kChecksum: {
      if (Status st = dst.BeforeReadLocked(job.off, job.len)) return R::Error(st);
      auto crc = renderer_->Checksum(dst.resource(), job.off, job.len);
      if (!crc) return R::Error(crc.status());
      return uint64_t{*crc};
    }
  }
  return R::Error(-EINVAL);
}

Status VirglEngine::WaitRenderer() {
  auto signalled = std::make_shared<std::promise<void>>();
  std::future<void> done = signalled->get_future();
  if (Status st = renderer_->Fence([signalled] { signalled->set_value(); })) return st;
  if (done.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    Logf(LogLevel::kError, "%s: virgl fence not signalled after 60 s", name_.c_str());
    return -ETIMEDOUT;
  }
  return kOk;
}

}  // namespace sharegpu
