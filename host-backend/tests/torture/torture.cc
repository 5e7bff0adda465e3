// The torture run (torture.h). Only the public C API: sharegpu/backend.h.
#include "torture.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "sharegpu/backend.h"

namespace sharegpu::torture {
namespace {

constexpr int kMaxDevices = 8;
constexpr size_t kLogTail = 50;     // operations of the whole run in a report
constexpr size_t kBufHistory = 40;  // and of the buffer concerned
constexpr size_t kMaxBuffers = 40;
constexpr uint64_t kMaxBufSize = 160 * 1024;
constexpr uint64_t kPage = 4096;
// A job that has not completed after this long is a failure (never a hang).
constexpr auto kWaitLimit = std::chrono::seconds(60);

uint32_t Bit(int d) { return 1u << d; }

// CRC-32C (Castagnoli, reflected, init and final xor ~0): what a CHECKSUM job returns.
uint32_t Crc32c(const uint8_t* p, uint64_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = ~0u;
  for (uint64_t i = 0; i < n; ++i) crc = (crc >> 8) ^ table[(crc ^ p[i]) & 0xff];
  return ~crc;
}

size_t OpenFds() {
  size_t n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++n;
    closedir(d);
  }
  return n;
}

std::string Hex(const uint8_t* p, size_t n) {
  std::string s;
  char b[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof(b), "%02x", p[i]);
    s += b;
  }
  return s;
}

struct Dev {
  sgb_device* dev = nullptr;
  std::string name;
  DeviceSpec spec;
  // The C API's contract: calls on one device are serialised by the caller (QEMU: the BQL).
  // Held only for the duration of one call; jobs, completions and waits run without it.
  std::mutex api_mu;
};

// One buffer as the test knows it. Everything but the pending counts is guarded by `mu`, the
// test's lock that serialises the operations on the buffer.
struct TBuf {
  uint64_t id = 0;
  int owner = 0;
  uint64_t size = 0;
  std::mutex mu;
  bool dead = false;
  std::vector<uint8_t> model;
  std::array<uint32_t, kMaxDevices> handle{};  // per device: 0 = no handle there
  std::array<uint32_t, kMaxDevices> pins{};
  // Barrier bookkeeping, one bit per device (its cache of this buffer: the owner's BO cache,
  // an importer's attachment cache). dirty: may hold job writes not yet in memory. stale: may
  // hold lines older than the model. Coherent devices never set either.
  uint32_t dirty = 0;
  uint32_t stale = 0;
  bool exported = false;
  sgb_uuid uuid{};
  int export_fd = -1;

  // The buffer's own last operations (also written from done callbacks), for reports.
  std::mutex hmu;
  std::deque<std::string> history;

  // Jobs submitted and not completed (done callback not yet run), per device.
  std::mutex pmu;
  std::condition_variable pcv;
  std::array<int, kMaxDevices> pending{};
  std::array<int, kMaxDevices> pending_writes{};

  std::string Name() const {
    char b[32];
    std::snprintf(b, sizeof(b), "b%llu", static_cast<unsigned long long>(id));
    return b;
  }
};
using TBufRef = std::shared_ptr<TBuf>;

class Runner;

struct JobCtx {
  Runner* runner;
  TBufRef b1, b2;  // b1: written (FILL, COPY dst) or summed (CHECKSUM); b2: COPY source
  int dev;
  uint32_t op;
  bool write1;
  uint32_t expect_crc;
  uint64_t off, len;
  uint32_t handle;
  std::string desc;
};

class Runner {
 public:
  explicit Runner(const Options& o) : o_(o) { report_.seed = o.seed; }
  Report Go();

  // Job completion (an engine thread): no backend call from here.
  void JobDone(JobCtx* ctx, uint64_t fence, int status, uint64_t result);
  void Account(const JobCtx& ctx, int delta);

 private:
  using Rng = std::mt19937_64;

  // --- setup and teardown
  bool Setup();
  void Teardown();
  void Fail(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  // Into the run's log, and into the history of b (and b2).
  void LogB(int tid, TBuf* b, TBuf* b2, const char* fmt, ...) __attribute__((format(printf, 5, 6)));
  void LogLine(TBuf* b, TBuf* b2, const char* line);
  std::string History(TBuf& b);
  std::string LogTail();
  void Mismatch(const TBuf& b, int dev, const char* what, uint64_t off, const uint8_t* expect,
                const uint8_t* got, uint64_t len);
  void MismatchCrc(const JobCtx& ctx, uint32_t got);

  template <class F>
  int Call(int d, F&& f) {
    std::lock_guard lock(devs_[d]->api_mu);
    return f(devs_[d]->dev);
  }
  bool Strict(int d) const { return !devs_[d]->spec.coherent; }
  uint32_t StrictMask() const { return strict_mask_; }

  // --- the operations (each returns with the buffers' locks released)
  void Worker(int tid);
  void Step(int tid, Rng& rng);
  TBufRef PickLocked(Rng& rng, const TBuf* exclude = nullptr);
  int RandomParty(const TBuf& b, Rng& rng) const;
  int AnyHandleDev(const TBuf& b, Rng& rng) const { return RandomParty(b, rng); }

  void OpCreate(int tid, Rng& rng);
  void OpPressure(int tid, Rng& rng);
  void OpClose(int tid, Rng& rng, TBuf& b, const TBufRef& ref);
  void OpShare(int tid, Rng& rng, TBuf& b);
  void OpFill(int tid, Rng& rng, const TBufRef& b);
  void OpCopy(int tid, Rng& rng, const TBufRef& b);
  void OpChecksum(int tid, Rng& rng, const TBufRef& b);
  void OpCpuRead(int tid, Rng& rng, TBuf& b);
  void OpCpuWrite(int tid, Rng& rng, TBuf& b);
  void OpMove(int tid, Rng& rng, TBuf& b, bool evict);
  void OpPin(int tid, Rng& rng, TBuf& b);
  void OpHold(int tid, Rng& rng, TBuf& b);
  void OpCacheCommand(int tid, Rng& rng, TBuf& b);

  // --- barrier bookkeeping (b.mu held)
  bool WaitPending(TBuf& b, uint32_t mask, int tid, Rng* rng);
  bool AwaitIdle(TBuf& b, int d, uint32_t what);
  void PrepareJob(int tid, Rng& rng, TBuf& b, int d, bool reads, bool writes, bool* waited);
  bool FlushAll(int tid, Rng& rng, TBuf& b, bool to_device);
  void AfterJobSubmit(TBuf& b, int d, bool writes);
  bool Submit(int tid, JobCtx* ctx, const sgb_job& job);
  int Begin(int tid, TBuf& b, int d, uint32_t dir);
  int End(int tid, TBuf& b, int d, uint32_t dir);
  void Retire(const TBufRef& ref);
  uint32_t PendingMask(TBuf& b);

  Options o_;
  Report report_;
  sgb_backend* backend_ = nullptr;
  std::vector<std::unique_ptr<Dev>> devs_;
  uint32_t strict_mask_ = 0;

  std::mutex reg_mu_;
  std::vector<TBufRef> bufs_;
  std::atomic<uint64_t> next_id_{1};

  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ops_{0};
  std::chrono::steady_clock::time_point deadline_;

  std::mutex log_mu_;
  std::deque<std::string> log_;
  uint64_t log_seq_ = 0;

  std::mutex fail_mu_;
  std::atomic<uint64_t> mismatches_{0};

  std::mutex jobs_mu_;
  std::condition_variable jobs_cv_;
  uint64_t jobs_in_flight_ = 0;

  // Counters (mirrored into the report at the end).
  std::atomic<uint64_t> c_creates_{0}, c_closes_{0}, c_exports_{0}, c_imports_{0}, c_fills_{0},
      c_copies_{0}, c_checksums_{0}, c_cpu_reads_{0}, c_cpu_writes_{0}, c_jobs_on_imports_{0},
      c_cross_engine_{0}, c_implicit_{0}, c_moves_{0}, c_moves_in_flight_{0}, c_moves_dirty_{0},
      c_moves_pinned_{0}, c_pins_{0}, c_holds_{0}, c_closes_in_flight_{0}, c_barriers_{0};
};

void JobDoneTrampoline(void* opaque, uint64_t fence, int status, uint64_t result) {
  auto* ctx = static_cast<JobCtx*>(opaque);
  ctx->runner->JobDone(ctx, fence, status, result);
}

// ---------------------------------------------------------------------------------------
// Reporting

void Runner::Fail(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  std::string msg = std::string("seed ") + std::to_string(o_.seed) + ": " + buf;
  {
    std::lock_guard lock(fail_mu_);
    if (report_.failures.size() < 20) report_.failures.push_back(msg + "\n" + LogTail());
  }
  std::fprintf(stderr, "torture FAILURE %s\n", msg.c_str());
  stop_ = true;
}

void Runner::LogB(int tid, TBuf* b, TBuf* b2, const char* fmt, ...) {
  char buf[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  char line[400];
  std::snprintf(line, sizeof(line), "t%d %s", tid, buf);
  LogLine(b, b2, line);
}

void Runner::LogLine(TBuf* b, TBuf* b2, const char* text) {
  std::string line;
  {
    std::lock_guard lock(log_mu_);
    line = "#" + std::to_string(++log_seq_) + " " + text;
    if (o_.verbose) std::fprintf(stderr, "%s\n", line.c_str());
    log_.push_back(line);
    if (log_.size() > kLogTail) log_.pop_front();
  }
  for (TBuf* x : {b, b2}) {
    if (!x || (x == b2 && b2 == b)) continue;
    std::lock_guard lock(x->hmu);
    x->history.push_back(line);
    if (x->history.size() > kBufHistory) x->history.pop_front();
  }
}

std::string Runner::History(TBuf& b) {
  std::lock_guard lock(b.hmu);
  std::string s = "last " + std::to_string(b.history.size()) + " operations on " + b.Name() + ":\n";
  for (const std::string& l : b.history) s += "  " + l + "\n";
  return s;
}

std::string Runner::LogTail() {
  std::lock_guard lock(log_mu_);
  std::string s = "last " + std::to_string(log_.size()) + " operations:\n";
  for (const std::string& l : log_) s += "  " + l + "\n";
  return s;
}

void Runner::Mismatch(const TBuf& b, int dev, const char* what, uint64_t off,
                      const uint8_t* expect, const uint8_t* got, uint64_t len) {
  uint64_t first = len, last = 0, count = 0;
  for (uint64_t i = 0; i < len; ++i) {
    if (expect[i] != got[i]) {
      first = std::min(first, i);
      last = i;
      ++count;
    }
  }
  if (count == 0) return;
  const uint64_t n = mismatches_.fetch_add(1) + 1;
  if (n > 1) return;  // the first one is reported in full; the rest are counted
  const size_t show = static_cast<size_t>(std::min<uint64_t>(16, len - first));
  char head[640];
  std::snprintf(head, sizeof(head),
                "MISMATCH seed %llu (rerun: --seed %llu): %s of buffer %s (owner d%d, size %llu) "
                "through d%d handle %u: bytes [%llu, %llu) differ (%llu of the %llu read at "
                "[%llu, %llu))\n  expected at %llu: %s\n  got      at %llu: %s\n",
                static_cast<unsigned long long>(o_.seed), static_cast<unsigned long long>(o_.seed),
                what, b.Name().c_str(), b.owner, static_cast<unsigned long long>(b.size), dev,
                b.handle[dev], static_cast<unsigned long long>(off + first),
                static_cast<unsigned long long>(off + last + 1),
                static_cast<unsigned long long>(count), static_cast<unsigned long long>(len),
                static_cast<unsigned long long>(off), static_cast<unsigned long long>(off + len),
                static_cast<unsigned long long>(off + first), Hex(expect + first, show).c_str(),
                static_cast<unsigned long long>(off + first), Hex(got + first, show).c_str());
  std::string report = head + History(const_cast<TBuf&>(b)) + LogTail();
  {
    std::lock_guard lock(fail_mu_);
    report_.first_mismatch = report;
  }
  std::fprintf(stderr, "%s", report.c_str());
  if (o_.barriers) stop_ = true;
}

void Runner::MismatchCrc(const JobCtx& ctx, uint32_t got) {
  const uint64_t n = mismatches_.fetch_add(1) + 1;
  if (n > 1) return;
  char head[512];
  std::snprintf(head, sizeof(head),
                "MISMATCH seed %llu (rerun: --seed %llu): %s: CHECKSUM of buffer %s bytes "
                "[%llu, %llu) through d%d handle %u: expected crc32c %08x, got %08x\n",
                static_cast<unsigned long long>(o_.seed), static_cast<unsigned long long>(o_.seed),
                ctx.desc.c_str(), ctx.b1->Name().c_str(), static_cast<unsigned long long>(ctx.off),
                static_cast<unsigned long long>(ctx.off + ctx.len), ctx.dev, ctx.handle,
                ctx.expect_crc, got);
  std::string report = head + History(*ctx.b1) + LogTail();
  {
    std::lock_guard lock(fail_mu_);
    report_.first_mismatch = report;
  }
  std::fprintf(stderr, "%s", report.c_str());
  if (o_.barriers) stop_ = true;
}

// ---------------------------------------------------------------------------------------
// Jobs

void Runner::JobDone(JobCtx* ctx, uint64_t fence, int status, uint64_t result) {
  std::unique_ptr<JobCtx> owned(ctx);  // the buffers may go once it does
  LogB(-1, ctx->b1.get(), ctx->b2.get(), "done d%d fence %llu %s: status %d result %08llx", ctx->dev,
      static_cast<unsigned long long>(fence), ctx->desc.c_str(), status,
      static_cast<unsigned long long>(result));
  if (status != 0) {
    Fail("job %s on d%d failed: %s", ctx->desc.c_str(), ctx->dev, sgb_strerror(status));
  } else if (ctx->op == SGB_JOB_CHECKSUM && static_cast<uint32_t>(result) != ctx->expect_crc) {
    MismatchCrc(*ctx, static_cast<uint32_t>(result));
  }
  Account(*ctx, -1);
}

// The job's count in its buffers' pending jobs and in the run's jobs in flight: +1 before it
// is submitted, -1 when it completed (or was never queued).
void Runner::Account(const JobCtx& ctx, int delta) {
  auto count = [&](TBuf& b, bool write) {
    std::lock_guard lock(b.pmu);
    b.pending[ctx.dev] += delta;
    if (write) b.pending_writes[ctx.dev] += delta;
    b.pcv.notify_all();
  };
  count(*ctx.b1, ctx.write1);
  if (ctx.b2 && ctx.b2 != ctx.b1) count(*ctx.b2, false);
  std::lock_guard lock(jobs_mu_);
  jobs_in_flight_ += delta;
  jobs_cv_.notify_all();
}

bool Runner::Submit(int tid, JobCtx* ctx, const sgb_job& job) {
  Account(*ctx, +1);
  uint64_t fence = 0;
  const int dev = ctx->dev;
  const std::string desc = ctx->desc;  // ctx is the done callback's once queued
  TBuf* ctx_b1 = ctx->b1.get();        // kept alive by the caller's reference
  TBuf* ctx_b2 = ctx->b2.get();
  int rc = Call(dev, [&](sgb_device* d) {
    return sgb_job_submit(d, &job, JobDoneTrampoline, ctx, &fence);
  });
  LogB(tid, ctx_b1, ctx_b2, "submit d%d %s -> %d fence %llu", dev, desc.c_str(), rc,
      static_cast<unsigned long long>(fence));
  if (rc == 0) return true;
  // Nothing was queued and done will not run.
  Account(*ctx, -1);
  Fail("submit of %s on d%d failed: %s", ctx->desc.c_str(), ctx->dev, sgb_strerror(rc));
  delete ctx;
  return false;
}

uint32_t Runner::PendingMask(TBuf& b) {
  std::lock_guard lock(b.pmu);
  uint32_t m = 0;
  for (int d = 0; d < kMaxDevices; ++d) m |= b.pending[d] ? Bit(d) : 0;
  return m;
}

struct IdleLatch {
  std::mutex mu;
  std::condition_variable cv;
  bool fired = false;
};

void IdleFired(void* opaque) {
  auto* l = static_cast<IdleLatch*>(opaque);
  std::lock_guard lock(l->mu);
  l->fired = true;
  l->cv.notify_all();
}

// sgb_bo_await_idle (what a device model uses): waits for the buffer's fences, seen through
// device d's handle.
bool Runner::AwaitIdle(TBuf& b, int d, uint32_t what) {
  auto latch = std::make_shared<IdleLatch>();
  // The latch must outlive a callback that fires late: keep one reference for it.
  auto* keep = new std::shared_ptr<IdleLatch>(latch);
  int rc = Call(d, [&](sgb_device* dev) {
    return sgb_bo_await_idle(dev, b.handle[d], what,
                             [](void* opaque) {
                               auto* k = static_cast<std::shared_ptr<IdleLatch>*>(opaque);
                               IdleFired(k->get());
                               delete k;
                             },
                             keep);
  });
  if (rc == 0) {
    delete keep;
    return true;
  }
  if (rc != 1) {
    delete keep;
    Fail("await_idle of %s through d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
    return false;
  }
  std::unique_lock lock(latch->mu);
  if (!latch->cv.wait_for(lock, kWaitLimit, [&] { return latch->fired; })) {
    Fail("await_idle of %s through d%d never called back", b.Name().c_str(), d);
    return false;
  }
  return true;
}

// Waits until the jobs of the devices in `mask` on b have completed (done callbacks run).
// With rng, sometimes through sgb_bo_await_idle first.
bool Runner::WaitPending(TBuf& b, uint32_t mask, int tid, Rng* rng) {
  if ((PendingMask(b) & mask) == 0) return true;
  if (rng && (*rng)() % 3 == 0) {
    const int d = RandomParty(b, *rng);
    LogB(tid, &b, nullptr, "await_idle %s via d%d", b.Name().c_str(), d);
    if (d >= 0 && !AwaitIdle(b, d, SGB_AWAIT_PLACEMENT)) return false;
  }
  std::unique_lock lock(b.pmu);
  auto idle = [&] {
    for (int d = 0; d < kMaxDevices; ++d) {
      if ((mask & Bit(d)) && b.pending[d]) return false;
    }
    return true;
  };
  if (!b.pcv.wait_for(lock, kWaitLimit, idle)) {
    lock.unlock();
    Fail("jobs on %s did not complete within %llds", b.Name().c_str(),
         static_cast<long long>(kWaitLimit.count()));
    return false;
  }
  return true;
}

int Runner::Begin(int tid, TBuf& b, int d, uint32_t dir) {
  int rc = Call(d, [&](sgb_device* dev) { return sgb_bo_begin_cpu_access(dev, b.handle[d], dir); });
  LogB(tid, &b, nullptr, "begin_cpu_access %s via d%d h%u dir %u -> %d", b.Name().c_str(), d, b.handle[d], dir,
      rc);
  c_barriers_++;
  if (rc) Fail("begin_cpu_access of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
  return rc;
}

int Runner::End(int tid, TBuf& b, int d, uint32_t dir) {
  int rc = Call(d, [&](sgb_device* dev) { return sgb_bo_end_cpu_access(dev, b.handle[d], dir); });
  LogB(tid, &b, nullptr, "end_cpu_access %s via d%d h%u dir %u -> %d", b.Name().c_str(), d, b.handle[d], dir, rc);
  c_barriers_++;
  if (rc) Fail("end_cpu_access of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
  return rc;
}

// begin+end through any handle: every device cache of the buffer is written back (begin);
// with to_device also dropped (end after a write direction).
bool Runner::FlushAll(int tid, Rng& rng, TBuf& b, bool to_device) {
  const int d = RandomParty(b, rng);
  const uint32_t dir = to_device ? SGB_DIR_TO_DEVICE : SGB_DIR_FROM_DEVICE;
  if (Begin(tid, b, d, dir) || End(tid, b, d, dir)) return false;
  // begin waited for the writers (to_device: for every fence), so every write submitted so far
  // is in memory now.
  b.dirty = 0;
  if (to_device) b.stale = 0;
  return true;
}

// Barrier bookkeeping: what a job of device d on b needs before it is submitted.
//  - other devices' unflushed writes must reach memory first (so that d reads them, and so
//    that a later write-back of them cannot land over d's newer bytes): wait for those jobs,
//    then CACHE_FLUSH on their handle (or begin_cpu_access, which flushes every cache);
//  - a job that reads must not see d's lines older than the model: CACHE_INVALIDATE (or
//    end_cpu_access after a write direction, which drops every cache's lines).
// Coherent devices need neither, and jobs ordered only by implicit sync (a write after other
// devices' reads, anything after a coherent device's write) are submitted right away.
void Runner::PrepareJob(int tid, Rng& rng, TBuf& b, int d, bool reads, bool writes,
                        bool* waited) {
  const uint32_t others = ~Bit(d);
  if (!o_.barriers) {
    // The negative run: ordered (explicitly) but no barrier.
    *waited |= (PendingMask(b) & others) != 0;
    WaitPending(b, others, tid, nullptr);
    return;
  }
  if (rng() % 4 == 0) {  // explicit sync this time
    *waited |= PendingMask(b) != 0;
    if (!WaitPending(b, ~0u, tid, &rng)) return;
  }
  const uint32_t dirty_others = b.dirty & others;
  if (dirty_others) {
    *waited |= (PendingMask(b) & dirty_others) != 0;
    if (!WaitPending(b, dirty_others, tid, &rng)) return;
    for (int q = 0; q < kMaxDevices && (b.dirty & others); ++q) {
      if (!(b.dirty & others & Bit(q))) continue;
      if (b.handle[q] && rng() % 2) {
        int rc = Call(q, [&](sgb_device* dev) {
          return sgb_bo_cache_flush(dev, b.handle[q], 0, b.size);
        });
        LogB(tid, &b, nullptr, "cache_flush %s via d%d h%u -> %d", b.Name().c_str(), q, b.handle[q], rc);
        c_barriers_++;
        if (rc) {
          Fail("cache_flush of %s via d%d: %s", b.Name().c_str(), q, sgb_strerror(rc));
          return;
        }
        b.dirty &= ~Bit(q);
      } else if (!FlushAll(tid, rng, b, false)) {
        return;
      }
    }
  }
  if (reads && (b.stale & Bit(d))) {
    // The invalidation must come after the other devices' writes have landed (a coherent
    // writer writes memory when its job runs, not when it is submitted): implicit sync orders
    // the job after them, but not the barrier.
    uint32_t writers = 0;
    {
      std::lock_guard lock(b.pmu);
      for (int q = 0; q < kMaxDevices; ++q) writers |= b.pending_writes[q] ? Bit(q) : 0;
    }
    if (writers & others) {
      *waited = true;
      if (!WaitPending(b, writers & others, tid, &rng)) return;
    }
    if (rng() % 4) {
      int rc = Call(d, [&](sgb_device* dev) {
        return sgb_bo_cache_invalidate(dev, b.handle[d], 0, b.size);
      });
      LogB(tid, &b, nullptr, "cache_invalidate %s via d%d h%u -> %d", b.Name().c_str(), d, b.handle[d], rc);
      c_barriers_++;
      if (rc) {
        Fail("cache_invalidate of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
        return;
      }
      b.stale &= ~Bit(d);  // the other devices' writes are in memory (flushed above)
    } else if (!FlushAll(tid, rng, b, true)) {
      return;
    }
  }
  (void)writes;
}

void Runner::AfterJobSubmit(TBuf& b, int d, bool writes) {
  if (!writes) return;
  if (Strict(d)) b.dirty |= Bit(d);
  b.stale |= StrictMask() & ~Bit(d);
}

// ---------------------------------------------------------------------------------------
// Picking

int Runner::RandomParty(const TBuf& b, Rng& rng) const {
  int n = 0;
  int parties[kMaxDevices];
  for (int d = 0; d < static_cast<int>(devs_.size()); ++d) {
    if (b.handle[d]) parties[n++] = d;
  }
  return n ? parties[rng() % n] : -1;
}

// A random live buffer, locked (its `mu`); nullptr when the one picked is busy (or `exclude`).
TBufRef Runner::PickLocked(Rng& rng, const TBuf* exclude) {
  TBufRef b;
  {
    std::lock_guard lock(reg_mu_);
    if (bufs_.empty()) return nullptr;
    b = bufs_[rng() % bufs_.size()];
  }
  if (b.get() == exclude) return nullptr;  // locked by the caller already
  if (!b->mu.try_lock()) return nullptr;
  if (b->dead) {
    b->mu.unlock();
    return nullptr;
  }
  return b;
}

// ---------------------------------------------------------------------------------------
// Operations

void Runner::OpCreate(int tid, Rng& rng) {
  {
    std::lock_guard lock(reg_mu_);
    if (bufs_.size() >= kMaxBuffers) return;
  }
  const int d = static_cast<int>(rng() % devs_.size());
  uint64_t size = rng() % 2 ? (1 + rng() % (kMaxBufSize / kPage)) * kPage : 1 + rng() % kMaxBufSize;
  size = std::max<uint64_t>(size, 64);
  const uint32_t placement = rng() % 4 ? SGB_PLACEMENT_DEVICE : SGB_PLACEMENT_SYSTEM;
  const uint32_t flags = rng() % 5 == 0 ? SGB_ALLOC_NO_EVICT : 0;
  uint32_t h = 0;
  int rc = Call(d, [&](sgb_device* dev) { return sgb_bo_create(dev, size, placement, flags, &h); });
  auto b = std::make_shared<TBuf>();
  b->id = next_id_.fetch_add(1);
  LogB(tid, b.get(), nullptr, "create %s on d%d size %llu placement %u flags %u -> %d h%u", b->Name().c_str(), d,
      static_cast<unsigned long long>(size), placement, flags, rc, h);
  if (rc == -ENOSPC) return;  // VRAM full of pinned or busy buffers, or NO_EVICT
  if (rc) {
    Fail("create on d%d: %s", d, sgb_strerror(rc));
    return;
  }
  sgb_bo_state st{};
  rc = Call(d, [&](sgb_device* dev) { return sgb_bo_state_get(dev, h, &st); });
  if (rc || st.size < size || st.imported) {
    Fail("state of new buffer d%d h%u: rc %d size %llu", d, h, rc,
         static_cast<unsigned long long>(st.size));
    return;
  }
  b->owner = d;
  b->size = st.size;
  b->handle[d] = h;
  b->model.resize(b->size);
  for (auto& byte : b->model) byte = static_cast<uint8_t>(rng());
  // Defined contents to start from, written by the CPU (with its barriers).
  std::lock_guard lock(b->mu);
  if (o_.barriers && Begin(tid, *b, d, SGB_DIR_TO_DEVICE)) return;
  rc = Call(d, [&](sgb_device* dev) { return sgb_bo_cpu_write(dev, h, 0, b->model.data(), b->size); });
  if (rc) {
    Fail("initial cpu_write of %s: %s", b->Name().c_str(), sgb_strerror(rc));
    return;
  }
  if (o_.barriers && End(tid, *b, d, SGB_DIR_TO_DEVICE)) return;
  c_creates_++;
  std::lock_guard reg(reg_mu_);
  bufs_.push_back(b);
}

// VRAM pressure: a buffer of half the VRAM, made and dropped at once; it evicts the least
// recently used idle buffers (-ENOSPC when every candidate is pinned or busy).
void Runner::OpPressure(int tid, Rng& rng) {
  const int d = static_cast<int>(rng() % devs_.size());
  uint32_t h = 0;
  int rc = Call(d, [&](sgb_device* dev) {
    return sgb_bo_create(dev, o_.vram_size / 2, SGB_PLACEMENT_DEVICE, 0, &h);
  });
  LogB(tid, nullptr, nullptr, "pressure on d%d: create of %llu bytes in VRAM -> %d h%u", d,
       static_cast<unsigned long long>(o_.vram_size / 2), rc, h);
  if (rc == -ENOSPC) return;
  if (rc) {
    Fail("pressure create on d%d: %s", d, sgb_strerror(rc));
    return;
  }
  rc = Call(d, [&](sgb_device* dev) { return sgb_bo_destroy(dev, h); });
  if (rc) Fail("pressure destroy on d%d: %s", d, sgb_strerror(rc));
}

void Runner::Retire(const TBufRef& ref) {
  ref->dead = true;
  if (ref->export_fd >= 0) {
    close(ref->export_fd);
    ref->export_fd = -1;
  }
  std::lock_guard lock(reg_mu_);
  bufs_.erase(std::remove(bufs_.begin(), bufs_.end(), ref), bufs_.end());
}

void Runner::OpClose(int tid, Rng& rng, TBuf& b, const TBufRef& ref) {
  const int d = RandomParty(b, rng);
  int parties = 0;
  for (uint32_t h : b.handle) parties += h != 0;
  const bool last = parties == 1;
  // The last handle: the buffer goes, so its jobs must be done (the done callbacks would be
  // the only ones left to look at it). Otherwise a close may race the device's own jobs.
  if (last && !WaitPending(b, ~0u, tid, &rng)) return;
  if (!last && o_.close_waits_for_jobs && !WaitPending(b, Bit(d), tid, &rng)) return;
  if (!last && (PendingMask(b) & Bit(d))) c_closes_in_flight_++;
  // Pins of the owner's handle stay on the buffer when the handle goes: take them back first.
  while (d == b.owner && b.pins[d] > 0) {
    int rc = Call(d, [&](sgb_device* dev) { return sgb_bo_unpin(dev, b.handle[d]); });
    LogB(tid, &b, nullptr, "unpin %s via d%d h%u -> %d", b.Name().c_str(), d, b.handle[d], rc);
    if (rc) {
      Fail("unpin of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
      return;
    }
    --b.pins[d];
  }
  int rc = Call(d, [&](sgb_device* dev) { return sgb_bo_destroy(dev, b.handle[d]); });
  LogB(tid, &b, nullptr, "close %s via d%d h%u%s -> %d", b.Name().c_str(), d, b.handle[d],
      last ? " (last handle)" : "", rc);
  if (rc) {
    Fail("close of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
    return;
  }
  c_closes_++;
  b.handle[d] = 0;
  b.pins[d] = 0;  // an import's close unpins what it pinned
  if (d != b.owner) {
    // The import's mapping was unmapped (its cache written back) and its attachment is gone.
    b.dirty &= ~Bit(d);
    b.stale &= ~Bit(d);
  }
  if (last) Retire(ref);
}

void Runner::OpShare(int tid, Rng& rng, TBuf& b) {
  const int p = RandomParty(b, rng);
  sgb_uuid uuid{};
  int fd = -1;
  const bool want_fd = rng() % 2;
  int rc = Call(p, [&](sgb_device* dev) {
    return sgb_bo_export(dev, b.handle[p], &uuid, want_fd ? &fd : nullptr);
  });
  LogB(tid, &b, nullptr, "export %s via d%d h%u%s -> %d", b.Name().c_str(), p, b.handle[p],
      want_fd ? " with fd" : "", rc);
  if (rc) {
    Fail("export of %s via d%d: %s", b.Name().c_str(), p, sgb_strerror(rc));
    return;
  }
  c_exports_++;
  if (b.exported && std::memcmp(&uuid, &b.uuid, sizeof(uuid)) != 0) {
    Fail("export of %s twice gave two uuids (rule X1)", b.Name().c_str());
  }
  b.exported = true;
  b.uuid = uuid;
  const int t = static_cast<int>(rng() % devs_.size());
  uint32_t h = 0;
  const bool by_fd = fd >= 0 || (b.export_fd >= 0 && rng() % 2);
  const int use_fd = fd >= 0 ? fd : b.export_fd;
  rc = Call(t, [&](sgb_device* dev) {
    return by_fd ? sgb_bo_import_fd(dev, use_fd, &h) : sgb_bo_import_uuid(dev, &uuid, &h);
  });
  LogB(tid, &b, nullptr, "import %s into d%d by %s -> %d h%u", b.Name().c_str(), t, by_fd ? "fd" : "uuid", rc, h);
  if (fd >= 0) {
    if (b.export_fd < 0) {
      b.export_fd = fd;  // kept until the buffer goes (counted by the descriptor check)
    } else {
      close(fd);
    }
  }
  if (rc) {
    Fail("import of %s into d%d: %s", b.Name().c_str(), t, sgb_strerror(rc));
    return;
  }
  c_imports_++;
  if (b.handle[t]) {
    if (h != b.handle[t]) {
      Fail("import of %s into d%d gave h%u, it has h%u already (rule X1)", b.Name().c_str(), t, h,
           b.handle[t]);
    }
    return;
  }
  b.handle[t] = h;
  if (t != b.owner) {
    b.dirty &= ~Bit(t);  // a new attachment: an empty cache
    b.stale &= ~Bit(t);
  }
}

void Runner::OpFill(int tid, Rng& rng, const TBufRef& ref) {
  TBuf& b = *ref;
  const int d = RandomParty(b, rng);
  const uint64_t words = b.size / 4;
  uint64_t off = (rng() % words) * 4;
  uint64_t len = (1 + rng() % (words - off / 4)) * 4;
  if (rng() % 4 == 0) {  // whole pages now and then
    off = (off / kPage) * kPage;
    len = std::min<uint64_t>(b.size - off, ((len + kPage - 1) / kPage) * kPage);
  }
  const uint32_t pattern = static_cast<uint32_t>(rng());
  bool waited = false;
  PrepareJob(tid, rng, b, d, false, true, &waited);
  if (stop_) return;
  if (!waited && (PendingMask(b) & ~Bit(d))) c_implicit_++;
  for (uint64_t i = 0; i < len; ++i) b.model[off + i] = static_cast<uint8_t>(pattern >> (8 * (i % 4)));
  auto* ctx = new JobCtx{this, ref, nullptr, d, SGB_JOB_FILL, true, 0, off, len, b.handle[d], ""};
  char desc[160];
  std::snprintf(desc, sizeof(desc), "FILL %s h%u [%llu,+%llu) %08x", b.Name().c_str(), b.handle[d],
                static_cast<unsigned long long>(off), static_cast<unsigned long long>(len), pattern);
  ctx->desc = desc;
  sgb_job job{SGB_JOB_FILL, b.handle[d], 0, pattern, off, 0, len};
  if (!Submit(tid, ctx, job)) return;
  AfterJobSubmit(b, d, true);
  c_fills_++;
  if (d != b.owner) c_jobs_on_imports_++;
  if (devs_[d]->spec.engine != devs_[b.owner]->spec.engine) c_cross_engine_++;
}

void Runner::OpCopy(int tid, Rng& rng, const TBufRef& ref) {
  TBuf& dst = *ref;
  const int d = RandomParty(dst, rng);
  TBufRef src_ref = ref;
  if (rng() % 3) {
    // Another buffer with a handle on d, when one is free.
    TBufRef other = PickLocked(rng, ref.get());
    if (other && other->handle[d]) {
      src_ref = other;
    } else if (other) {
      other->mu.unlock();
    }
  }
  TBuf& src = *src_ref;
  const bool same = src_ref == ref;
  const uint64_t len = 1 + rng() % std::min(src.size, dst.size);
  const uint64_t soff = rng() % (src.size - len + 1);
  const uint64_t doff = rng() % (dst.size - len + 1);
  bool waited = false;
  PrepareJob(tid, rng, src, d, true, same, &waited);
  if (!same && !stop_) PrepareJob(tid, rng, dst, d, false, true, &waited);
  if (!stop_) {
    if (!waited && ((PendingMask(dst) | (same ? 0 : PendingMask(src))) & ~Bit(d))) c_implicit_++;
    std::memmove(dst.model.data() + doff, src.model.data() + soff, len);
    auto* ctx = new JobCtx{this, ref, src_ref, d, SGB_JOB_COPY, true, 0, doff, len,
                           dst.handle[d], ""};
    char desc[192];
    std::snprintf(desc, sizeof(desc), "COPY %s h%u [%llu,+%llu) <- %s h%u [%llu,+%llu)",
                  dst.Name().c_str(), dst.handle[d], static_cast<unsigned long long>(doff),
                  static_cast<unsigned long long>(len), src.Name().c_str(), src.handle[d],
                  static_cast<unsigned long long>(soff), static_cast<unsigned long long>(len));
    ctx->desc = desc;
    sgb_job job{SGB_JOB_COPY, dst.handle[d], src.handle[d], 0, doff, soff, len};
    if (Submit(tid, ctx, job)) {
      AfterJobSubmit(dst, d, true);
      c_copies_++;
      if (d != dst.owner || d != src.owner) c_jobs_on_imports_++;
      if (devs_[d]->spec.engine != devs_[dst.owner]->spec.engine ||
          devs_[d]->spec.engine != devs_[src.owner]->spec.engine) {
        c_cross_engine_++;
      }
    }
  }
  if (!same) src.mu.unlock();
}

void Runner::OpChecksum(int tid, Rng& rng, const TBufRef& ref) {
  TBuf& b = *ref;
  const int d = RandomParty(b, rng);
  const uint64_t off = rng() % b.size;
  const uint64_t len = 1 + rng() % (b.size - off);
  bool waited = false;
  PrepareJob(tid, rng, b, d, true, false, &waited);
  if (stop_) return;
  if (!waited && (PendingMask(b) & ~Bit(d))) c_implicit_++;
  auto* ctx = new JobCtx{this, ref, nullptr, d, SGB_JOB_CHECKSUM, false,
                         Crc32c(b.model.data() + off, len), off, len, b.handle[d], ""};
  char desc[160];
  std::snprintf(desc, sizeof(desc), "CHECKSUM %s h%u [%llu,+%llu) expect %08x", b.Name().c_str(),
                b.handle[d], static_cast<unsigned long long>(off),
                static_cast<unsigned long long>(len), ctx->expect_crc);
  ctx->desc = desc;
  sgb_job job{SGB_JOB_CHECKSUM, b.handle[d], 0, 0, off, 0, len};
  if (!Submit(tid, ctx, job)) return;
  c_checksums_++;
  if (d != b.owner) c_jobs_on_imports_++;
  if (devs_[d]->spec.engine != devs_[b.owner]->spec.engine) c_cross_engine_++;
}

void Runner::OpCpuRead(int tid, Rng& rng, TBuf& b) {
  const int d = RandomParty(b, rng);
  const uint64_t off = rng() % b.size;
  const uint64_t len = 1 + rng() % (b.size - off);
  const uint32_t dir = rng() % 3 ? SGB_DIR_FROM_DEVICE : SGB_DIR_BIDIRECTIONAL;
  if (o_.barriers) {
    // Implicit sync most of the time: begin waits for the writers itself.
    if (rng() % 3 == 0 && !WaitPending(b, ~0u, tid, &rng)) return;
    if (Begin(tid, b, d, dir)) return;
    b.dirty = 0;  // begin flushed every cache, after the writers finished
  } else if (!WaitPending(b, ~0u, tid, nullptr)) {
    return;
  }
  std::vector<uint8_t> got(len);
  int rc = Call(d, [&](sgb_device* dev) { return sgb_bo_cpu_read(dev, b.handle[d], off, got.data(), len); });
  LogB(tid, &b, nullptr, "cpu_read %s via d%d h%u [%llu,+%llu) -> %d", b.Name().c_str(), d, b.handle[d],
      static_cast<unsigned long long>(off), static_cast<unsigned long long>(len), rc);
  if (rc) {
    Fail("cpu_read of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
    return;
  }
  c_cpu_reads_++;
  Mismatch(b, d, "cpu_read", off, b.model.data() + off, got.data(), len);
  if (o_.barriers) {
    if (End(tid, b, d, dir)) return;
    if (dir == SGB_DIR_BIDIRECTIONAL) b.stale = 0;  // end of a write direction dropped them
  }
}

void Runner::OpCpuWrite(int tid, Rng& rng, TBuf& b) {
  const int d = RandomParty(b, rng);
  const uint64_t off = rng() % b.size;
  const uint64_t len = 1 + rng() % std::min<uint64_t>(b.size - off, 3 * kPage);
  const uint32_t dir = rng() % 2 ? SGB_DIR_TO_DEVICE : SGB_DIR_BIDIRECTIONAL;
  if (o_.barriers) {
    if (rng() % 3 == 0 && !WaitPending(b, ~0u, tid, &rng)) return;
    if (Begin(tid, b, d, dir)) return;  // waits for every fence (a CPU write)
    b.dirty = 0;
  } else if (!WaitPending(b, ~0u, tid, nullptr)) {
    return;
  }
  std::vector<uint8_t> bytes(len);
  const uint8_t base = static_cast<uint8_t>(rng());
  for (uint64_t i = 0; i < len; ++i) bytes[i] = static_cast<uint8_t>(base + i * 7);
  int rc = Call(d, [&](sgb_device* dev) {
    return sgb_bo_cpu_write(dev, b.handle[d], off, bytes.data(), len);
  });
  LogB(tid, &b, nullptr, "cpu_write %s via d%d h%u [%llu,+%llu) base %02x -> %d", b.Name().c_str(), d,
      b.handle[d], static_cast<unsigned long long>(off), static_cast<unsigned long long>(len), base,
      rc);
  if (rc) {
    Fail("cpu_write of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
    return;
  }
  c_cpu_writes_++;
  std::memcpy(b.model.data() + off, bytes.data(), len);
  b.stale |= StrictMask();
  if (o_.barriers) {
    if (End(tid, b, d, dir)) return;
    b.dirty = 0;
    b.stale = 0;
  }
}

void Runner::OpMove(int tid, Rng& rng, TBuf& b, bool evict) {
  const int d = RandomParty(b, rng);
  const uint32_t target = evict ? SGB_PLACEMENT_SYSTEM
                                : (rng() % 3 ? SGB_PLACEMENT_DEVICE : SGB_PLACEMENT_SYSTEM);
  const uint32_t flags = !evict && rng() % 4 == 0 ? SGB_ALLOC_NO_EVICT : 0;
  sgb_bo_state before{}, after{};
  int rc = Call(d, [&](sgb_device* dev) { return sgb_bo_state_get(dev, b.handle[d], &before); });
  if (rc) {
    Fail("state of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
    return;
  }
  const bool in_flight = PendingMask(b) != 0;
  const bool dirty = b.dirty != 0;
  uint32_t pins = 0;
  for (uint32_t p : b.pins) pins += p;
  rc = Call(d, [&](sgb_device* dev) {
    return evict ? sgb_bo_evict(dev, b.handle[d]) : sgb_bo_move(dev, b.handle[d], target, flags);
  });
  int rc2 = Call(d, [&](sgb_device* dev) { return sgb_bo_state_get(dev, b.handle[d], &after); });
  LogB(tid, &b, nullptr, "%s %s via d%d h%u to %u flags %u (from %u gen %llu, pins %u%s%s) -> %d, now %u gen %llu",
      evict ? "evict" : "move", b.Name().c_str(), d, b.handle[d], target, flags, before.placement,
      static_cast<unsigned long long>(before.generation), pins, in_flight ? ", jobs in flight" : "",
      dirty ? ", dirty caches" : "", rc, after.placement,
      static_cast<unsigned long long>(after.generation));
  if (rc2) {
    Fail("state of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc2));
    return;
  }
  if (rc != 0 && rc != -EBUSY && rc != -ENOSPC) {
    Fail("move of %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
    return;
  }
  if (pins && before.placement != target) {
    if (rc == 0) Fail("pinned %s moved (rule S7a)", b.Name().c_str());
    if (rc == -EBUSY) c_moves_pinned_++;
  }
  if (before.pin_count != pins) {
    Fail("%s: pin_count %u, the test holds %u", b.Name().c_str(), before.pin_count, pins);
  }
  if (rc == 0 && target == SGB_PLACEMENT_SYSTEM && after.placement != SGB_PLACEMENT_SYSTEM) {
    Fail("move of %s to SYSTEM returned 0, placement is %u", b.Name().c_str(), after.placement);
  }
  if (after.generation != before.generation) {
    // Moved (by us, or evicted meanwhile): the move waited for every fence and wrote back and
    // dropped every device's cache of the buffer (rules S4, S7b).
    b.dirty = 0;
    b.stale = 0;
    if (rc == 0) {
      c_moves_++;
      if (in_flight) c_moves_in_flight_++;
      if (dirty) c_moves_dirty_++;
    }
  }
}

// One pin on a buffer at a time (pinned buffers cannot be evicted: too many starve VRAM).
void Runner::OpPin(int tid, Rng& rng, TBuf& b) {
  int d = RandomParty(b, rng);
  for (int p = 0; p < kMaxDevices; ++p) {
    if (b.pins[p] && b.handle[p]) d = p;
  }
  const bool unpin = b.pins[d] > 0;
  int rc = Call(d, [&](sgb_device* dev) {
    return unpin ? sgb_bo_unpin(dev, b.handle[d]) : sgb_bo_pin(dev, b.handle[d]);
  });
  LogB(tid, &b, nullptr, "%s %s via d%d h%u -> %d", unpin ? "unpin" : "pin", b.Name().c_str(), d, b.handle[d], rc);
  if (rc) {
    Fail("%s of %s via d%d: %s", unpin ? "unpin" : "pin", b.Name().c_str(), d, sgb_strerror(rc));
    return;
  }
  if (unpin) {
    --b.pins[d];
  } else {
    ++b.pins[d];
    c_pins_++;
  }
}

void Runner::OpHold(int tid, Rng& rng, TBuf& b) {
  const int d = RandomParty(b, rng);
  const uint32_t ms = 1 + static_cast<uint32_t>(rng() % 15);
  int rc = Call(d, [&](sgb_device* dev) { return sgb_engine_hold(dev, b.handle[d], ms); });
  LogB(tid, &b, nullptr, "hold d%d jobs on %s h%u for %u ms -> %d", d, b.Name().c_str(), b.handle[d], ms, rc);
  if (rc) {
    Fail("hold on d%d: %s", d, sgb_strerror(rc));
    return;
  }
  c_holds_++;
}

// CACHE_FLUSH / CACHE_INVALIDATE of a random range through one handle: never wrong, and they
// race the device's own jobs in flight (they do not wait for fences).
void Runner::OpCacheCommand(int tid, Rng& rng, TBuf& b) {
  if (!o_.barriers) return;
  const int d = RandomParty(b, rng);
  const bool whole = rng() % 2;
  const uint64_t off = whole ? 0 : rng() % b.size;
  const uint64_t len = whole ? b.size : 1 + rng() % (b.size - off);
  const bool inval = rng() % 2;
  const bool writes_pending = [&] {
    std::lock_guard lock(b.pmu);
    return b.pending_writes[d] != 0;
  }();
  int rc = Call(d, [&](sgb_device* dev) {
    return inval ? sgb_bo_cache_invalidate(dev, b.handle[d], off, len)
                 : sgb_bo_cache_flush(dev, b.handle[d], off, len);
  });
  LogB(tid, &b, nullptr, "cache_%s %s via d%d h%u [%llu,+%llu) -> %d", inval ? "invalidate" : "flush",
      b.Name().c_str(), d, b.handle[d], static_cast<unsigned long long>(off),
      static_cast<unsigned long long>(len), rc);
  c_barriers_++;
  if (rc) {
    Fail("cache command on %s via d%d: %s", b.Name().c_str(), d, sgb_strerror(rc));
    return;
  }
  if (whole && !writes_pending) {
    b.dirty &= ~Bit(d);
    if (inval && (b.dirty & ~Bit(d)) == 0) b.stale &= ~Bit(d);
  }
}

void Runner::Step(int tid, Rng& rng) {
  size_t nbufs;
  {
    std::lock_guard lock(reg_mu_);
    nbufs = bufs_.size();
  }
  const uint32_t r = static_cast<uint32_t>(rng() % 100);
  if (nbufs < 6 || (r < 6 && nbufs < kMaxBuffers)) {
    OpCreate(tid, rng);
    return;
  }
  if (r >= 96 && r < 98) {
    OpPressure(tid, rng);
    return;
  }
  TBufRef b = PickLocked(rng);
  if (!b) return;  // busy: another thread works on it
  std::unique_lock lock(b->mu, std::adopt_lock);
  if (r < 10) {
    OpClose(tid, rng, *b, b);
  } else if (r < 18) {
    OpShare(tid, rng, *b);
  } else if (r < 32) {
    OpFill(tid, rng, b);
  } else if (r < 46) {
    OpCopy(tid, rng, b);
  } else if (r < 58) {
    OpChecksum(tid, rng, b);
  } else if (r < 68) {
    OpCpuRead(tid, rng, *b);
  } else if (r < 77) {
    OpCpuWrite(tid, rng, *b);
  } else if (r < 85) {
    OpMove(tid, rng, *b, false);
  } else if (r < 89) {
    OpMove(tid, rng, *b, true);
  } else if (r < 93) {
    OpPin(tid, rng, *b);
  } else if (r < 96) {
    OpHold(tid, rng, *b);
  } else {
    OpCacheCommand(tid, rng, *b);
  }
}

void Runner::Worker(int tid) {
  Rng rng(o_.seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(tid) * 0x632be59bd9b4e019ull + 1);
  while (!stop_ && std::chrono::steady_clock::now() < deadline_) {
    if (o_.max_ops && ops_.fetch_add(1) >= o_.max_ops) break;
    if (!o_.max_ops) ops_.fetch_add(1);
    Step(tid, rng);
  }
}

// ---------------------------------------------------------------------------------------
// Setup, run, teardown

bool Runner::Setup() {
  if (o_.devices.empty() || o_.devices.size() > kMaxDevices) {
    Fail("between 1 and %d devices", kMaxDevices);
    return false;
  }
  int rc = sgb_backend_new(&backend_);
  if (rc) {
    Fail("backend: %s", sgb_strerror(rc));
    return false;
  }
  for (size_t i = 0; i < o_.devices.size(); ++i) {
    auto d = std::make_unique<Dev>();
    d->spec = o_.devices[i];
    d->name = "t" + std::to_string(i) + "-" + d->spec.engine + (d->spec.coherent ? "-coh" : "-strict");
    sgb_device_config cfg{};
    cfg.name = d->name.c_str();
    cfg.vram_size = o_.vram_size;
    cfg.coherent = d->spec.coherent ? 1 : 0;
    cfg.engine = d->spec.engine.c_str();
    rc = sgb_device_create(backend_, &cfg, &d->dev);
    if (rc) {
      Fail("device %s: %s", d->name.c_str(), sgb_strerror(rc));
      return false;
    }
    if (!d->spec.coherent) strict_mask_ |= Bit(static_cast<int>(i));
    devs_.push_back(std::move(d));
  }
  return true;
}

void Runner::Teardown() {
  // Every job done, every handle closed.
  {
    std::unique_lock lock(jobs_mu_);
    if (!jobs_cv_.wait_for(lock, kWaitLimit, [&] { return jobs_in_flight_ == 0; })) {
      lock.unlock();
      Fail("%llu jobs never completed", static_cast<unsigned long long>(jobs_in_flight_));
      std::_Exit(1);  // their callbacks would run into freed memory
    }
  }
  std::vector<TBufRef> bufs;
  {
    std::lock_guard lock(reg_mu_);
    bufs = bufs_;
  }
  for (const TBufRef& b : bufs) {
    std::lock_guard lock(b->mu);
    for (int d = 0; d < static_cast<int>(devs_.size()); ++d) {
      if (!b->handle[d]) continue;
      int rc = sgb_bo_destroy(devs_[d]->dev, b->handle[d]);
      if (rc) Fail("final close of %s via d%d: %s", b->Name().c_str(), d, sgb_strerror(rc));
      b->handle[d] = 0;
    }
    Retire(b);
  }
  // Leak checks: no handle, no byte of VRAM or host memory, no descriptor left.
  for (int d = 0; d < static_cast<int>(devs_.size()); ++d) {
    sgb_device_stats st{};
    if (int rc = sgb_device_stats_get(devs_[d]->dev, &st)) {
      Fail("stats of d%d: %s", d, sgb_strerror(rc));
      continue;
    }
    size_t listed = 0;
    (void)sgb_device_list_bos(devs_[d]->dev, nullptr, 0, &listed);
    if (st.bo_count || st.import_count || st.vram_used || st.hostmem_used || listed ||
        st.jobs_in_flight) {
      Fail("leak on d%d after every handle was closed: %u buffers, %u imports, %llu bytes of "
           "VRAM, %llu bytes of host memory, %zu handles listed, %u jobs in flight",
           d, st.bo_count, st.import_count, static_cast<unsigned long long>(st.vram_used),
           static_cast<unsigned long long>(st.hostmem_used), listed, st.jobs_in_flight);
    }
    report_.evictions += st.evictions;
    report_.move_notifies += st.move_notifies;
    report_.jobs_held += st.jobs_held;
    report_.jobs_waited += st.jobs_waited;
    report_.jobs += st.jobs;
    if (st.job_errors) {
      Fail("d%d counted %llu job errors", d, static_cast<unsigned long long>(st.job_errors));
    }
  }
}

Report Runner::Go() {
  const auto t0 = std::chrono::steady_clock::now();
  const size_t fds_before = OpenFds();
  if (Setup()) {
    deadline_ = std::chrono::steady_clock::now() +
                std::chrono::microseconds(static_cast<int64_t>(o_.seconds * 1e6));
    std::vector<std::thread> threads;
    for (int t = 0; t < o_.threads; ++t) threads.emplace_back([this, t] { Worker(t); });
    for (auto& t : threads) t.join();
    Teardown();
  }
  for (auto& d : devs_) sgb_device_destroy(d->dev);
  devs_.clear();
  if (backend_) sgb_backend_unref(backend_);
  backend_ = nullptr;
  // Descriptors are compared with the devices gone: a device's system pool grows by memfd
  // segments that it keeps (rule X5), so the count with the devices alive depends on the
  // run's peak; export descriptors and the devices' own must all be closed by now.
  const size_t fds_end = OpenFds();
  if (fds_end != fds_before) {
    Fail("descriptors: %zu before the devices were created, %zu after they were destroyed",
         fds_before, fds_end);
  }
  report_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report_.ops = ops_.load();
  report_.mismatches = mismatches_.load();
  report_.creates = c_creates_;
  report_.closes = c_closes_;
  report_.exports = c_exports_;
  report_.imports = c_imports_;
  report_.fills = c_fills_;
  report_.copies = c_copies_;
  report_.checksums = c_checksums_;
  report_.cpu_reads = c_cpu_reads_;
  report_.cpu_writes = c_cpu_writes_;
  report_.jobs_on_imports = c_jobs_on_imports_;
  report_.cross_engine_jobs = c_cross_engine_;
  report_.implicit_sync_jobs = c_implicit_;
  report_.moves = c_moves_;
  report_.moves_with_jobs_in_flight = c_moves_in_flight_;
  report_.moves_with_dirty_caches = c_moves_dirty_;
  report_.moves_refused_pinned = c_moves_pinned_;
  report_.pins = c_pins_;
  report_.holds = c_holds_;
  report_.closes_with_jobs_in_flight = c_closes_in_flight_;
  report_.barriers = c_barriers_;
  return report_;
}

}  // namespace

std::string Report::Summary() const {
  char b[1024];
  std::snprintf(
      b, sizeof(b),
      "seed %llu: %llu ops in %.1f s, %llu mismatches, %zu failures | creates %llu closes %llu "
      "(%llu with jobs in flight) exports %llu imports %llu | fill %llu copy %llu checksum %llu "
      "cpu_read %llu cpu_write %llu | on imports %llu, across engines %llu, implicit sync %llu, "
      "waited on other timelines %llu | moves %llu (jobs in flight %llu, dirty caches %llu, "
      "refused pinned %llu) evictions %llu move_notifies %llu | pins %llu holds %llu held %llu | "
      "barriers %llu",
      static_cast<unsigned long long>(seed), static_cast<unsigned long long>(ops), seconds,
      static_cast<unsigned long long>(mismatches), failures.size(),
      static_cast<unsigned long long>(creates), static_cast<unsigned long long>(closes),
      static_cast<unsigned long long>(closes_with_jobs_in_flight),
      static_cast<unsigned long long>(exports), static_cast<unsigned long long>(imports),
      static_cast<unsigned long long>(fills), static_cast<unsigned long long>(copies),
      static_cast<unsigned long long>(checksums), static_cast<unsigned long long>(cpu_reads),
      static_cast<unsigned long long>(cpu_writes), static_cast<unsigned long long>(jobs_on_imports),
      static_cast<unsigned long long>(cross_engine_jobs),
      static_cast<unsigned long long>(implicit_sync_jobs),
      static_cast<unsigned long long>(jobs_waited), static_cast<unsigned long long>(moves),
      static_cast<unsigned long long>(moves_with_jobs_in_flight),
      static_cast<unsigned long long>(moves_with_dirty_caches),
      static_cast<unsigned long long>(moves_refused_pinned),
      static_cast<unsigned long long>(evictions), static_cast<unsigned long long>(move_notifies),
      static_cast<unsigned long long>(pins), static_cast<unsigned long long>(holds),
      static_cast<unsigned long long>(jobs_held), static_cast<unsigned long long>(barriers));
  return b;
}

Report Run(const Options& options) { return Runner(options).Go(); }

std::vector<DeviceSpec> StandardDevices(bool virgl, bool all_strict) {
  std::vector<DeviceSpec> d;
  d.push_back({"cpu", !all_strict});
  d.push_back({"cpu", false});
  d.push_back({virgl ? "virgl" : "cpu", false});
  d.push_back({virgl ? "virgl" : "cpu", !all_strict});
  return d;
}

}  // namespace sharegpu::torture
