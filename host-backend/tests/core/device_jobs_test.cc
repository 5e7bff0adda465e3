// Devices with asynchronous jobs: what waits for a job still in flight (CPU access, moves,
// evictions, another device's job through an import) and what does not, AwaitIdle, and the
// order of seqnos and completions. Each test keeps a job pending on purpose (a held
// completion or a stalled engine). "Does not happen before the release" is shown by running
// the operation on another thread and finding it unfinished after kNotYet; a state the
// engine reaches is polled from InFlight() under a deadline that fails the test.
#include <future>

#include "../job_recorder.h"
#include "core/backend.h"
#include "core/device.h"
#include "core_test_util.h"
#include "sync/fence.h"

namespace sharegpu::testing {
namespace {

using std::chrono::milliseconds;

constexpr uint64_t kPage = 4096;
constexpr std::chrono::seconds kDeadline{20};
constexpr milliseconds kNotYet{200};

using Recorder = JobRecorder;

// A one-shot flag a callback sets (AwaitIdle).
struct Signal {
  std::promise<void> promise;
  std::future<void> future = promise.get_future();
  std::function<void()> Callback() {
    return [this] { promise.set_value(); };
  }
};

template <class T>
bool Ready(std::future<T>& f, std::chrono::nanoseconds wait = kDeadline) {
  return f.wait_for(wait) == std::future_status::ready;
}

// Polls the engine until the job `seqno` shows `state` (and that many pending dependencies
// when given); fails on the deadline or when the job left the engine first.
::testing::AssertionResult WaitForState(const Engine& engine, uint64_t seqno,
                                        const std::string& state, int deps_pending = -1) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  std::string last = "(not seen)";
  for (;;) {
    bool found = false;
    for (const JobInfo& info : engine.InFlight()) {
      if (info.seqno != seqno) continue;
      found = true;
      last = info.state + " deps " + std::to_string(info.dependencies_pending);
      if (info.state == state &&
          (deps_pending < 0 || info.dependencies_pending == uint32_t(deps_pending))) {
        return ::testing::AssertionSuccess();
      }
    }
    if (!found) {
      return ::testing::AssertionFailure() << "job " << seqno << " left the engine before '"
                                           << state << "' (last seen: " << last << ")";
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return ::testing::AssertionFailure()
             << "job " << seqno << " did not reach '" << state << "' (last: " << last << ")";
    }
    std::this_thread::yield();
  }
}

class DeviceAsyncJobTest : public ::testing::Test {
 protected:
  std::shared_ptr<Device> NewDevice(const std::string& name, CacheMode mode,
                                    uint64_t vram = 4 * kMiB) {
    auto dev = Device::Create(backend_, DeviceConfig{name, vram, mode, 0});
    EXPECT_TRUE(dev.ok()) << dev.status();
    return dev.ok() ? dev.value() : nullptr;
  }
  static uint32_t NewBo(Device& dev, uint64_t size, Placement p) {
    auto h = dev.CreateBo(size, p);
    EXPECT_TRUE(h.ok()) << h.status();
    return h.ok() ? *h : 0;
  }
  static std::vector<uint8_t> Read(Device& dev, uint32_t h, uint64_t len) {
    std::vector<uint8_t> out(len);
    EXPECT_EQ(dev.CpuRead(h, 0, out.data(), len), kOk);
    return out;
  }
  static void Write(Device& dev, uint32_t h, const std::vector<uint8_t>& bytes) {
    ASSERT_EQ(dev.CpuWrite(h, 0, bytes.data(), bytes.size()), kOk);
  }
  static Placement PlacementOf(Device& dev, uint32_t h) {
    auto st = dev.State(h);
    EXPECT_TRUE(st.ok()) << st.status();
    return st.ok() ? static_cast<Placement>(st->placement) : Placement::kSystem;
  }
  static uint64_t Submit(Device& dev, const JobRequest& req, JobDone done) {
    auto seqno = dev.Submit(req, [done = std::move(done)](uint64_t, Status status,
                                                          uint64_t result) {
      done(status, result);
    });
    EXPECT_TRUE(seqno.ok()) << seqno.status();
    return seqno.ok() ? *seqno : 0;
  }
  static JobRequest Fill(uint32_t h, uint64_t len, uint32_t pattern) {
    return JobRequest{JobOp::kFill, h, 0, 0, 0, len, pattern};
  }
  static JobRequest ChecksumOf(uint32_t h, uint64_t len) {
    return JobRequest{JobOp::kChecksum, h, 0, 0, 0, len, 0};
  }
  // Export from `exporter`, import into `importer`.
  uint32_t Share(Device& exporter, uint32_t h, Device& importer) {
    auto dmabuf = DmaBufOf(exporter, h);
    if (!dmabuf) return 0;
    auto imported = importer.ImportDmaBuf(dmabuf);
    EXPECT_TRUE(imported.ok()) << imported.status();
    return imported.ok() ? *imported : 0;
  }
  std::shared_ptr<DmaBuf> DmaBufOf(Device& exporter, uint32_t h) {
    sgb_uuid uuid{};
    EXPECT_EQ(exporter.Export(h, &uuid, nullptr), kOk);
    auto dmabuf = backend_->LookupUuid(uuid);
    EXPECT_TRUE(dmabuf.ok());
    return dmabuf.ok() ? dmabuf.value() : nullptr;
  }

  // Device A's buffer `src` (random bytes `old_src`) imported by device B as `imported`, and
  // B's own `dst` (random bytes `old_dst`), both coherent.
  struct SharedPair {
    std::shared_ptr<Device> a, b;
    uint32_t src = 0, imported = 0, dst = 0;
    std::vector<uint8_t> old_src, old_dst;
  };
  SharedPair MakeSharedPair(uint64_t size, uint32_t seed) {
    SharedPair p;
    p.a = NewDevice("A", CacheMode::kCoherent);
    p.b = NewDevice("B", CacheMode::kCoherent);
    p.src = NewBo(*p.a, size, Placement::kDevice);
    p.old_src = RandomBytes(size, seed);
    Write(*p.a, p.src, p.old_src);
    p.imported = Share(*p.a, p.src, *p.b);
    EXPECT_NE(p.imported, 0u);
    p.dst = NewBo(*p.b, size, Placement::kDevice);
    p.old_dst = RandomBytes(size, seed + 1);
    Write(*p.b, p.dst, p.old_dst);
    return p;
  }

  std::shared_ptr<Backend> backend_ = Backend::Create();
};

// A CPU read access waits for a writer still in flight and then sees what it wrote (strict
// cache: the FILL sits in the device cache until the begin barrier flushes it).
TEST_F(DeviceAsyncJobTest, CpuReadAccessWaitsForHeldWriter) {
  Recorder rec;
  auto dev = NewDevice("reader", CacheMode::kStrict);
  const uint64_t size = 2 * kPage;
  uint32_t h = NewBo(*dev, size, Placement::kDevice);
  Write(*dev, h, RandomBytes(size, 1));
  ASSERT_EQ(dev->HoldCompletions(0, milliseconds(0)), kOk);
  uint64_t seqno = Submit(*dev, Fill(h, size, 0xc0ffee00u), rec.Done(0));
  ASSERT_TRUE(WaitForState(dev->engine(), seqno, "held"));

  auto begin = std::async(std::launch::async,
                          [&] { return dev->BeginCpuAccess(h, DmaDirection::kFromDevice); });
  EXPECT_FALSE(Ready(begin, kNotYet)) << "a CPU read did not wait for the pending writer";
  dev->engine().Release();
  ASSERT_TRUE(Ready(begin));
  EXPECT_EQ(begin.get(), kOk);
  EXPECT_EQ(Read(*dev, h, size), PatternBytes(size, 0xc0ffee00u));
  EXPECT_EQ(dev->EndCpuAccess(h, DmaDirection::kFromDevice), kOk);
  ASSERT_TRUE(rec.WaitFor(1));
  EXPECT_EQ(rec.Get()[0].status, kOk);
}

// A CPU write access waits for a reader in flight (it must not change what the reader
// reads); a CPU read access does not (readers share).
TEST_F(DeviceAsyncJobTest, CpuWriteAccessWaitsForHeldReaderReadAccessDoesNot) {
  Recorder rec;
  auto dev = NewDevice("writer", CacheMode::kCoherent);
  const uint64_t size = 2 * kPage;
  uint32_t h = NewBo(*dev, size, Placement::kDevice);
  std::vector<uint8_t> original = RandomBytes(size, 2);
  Write(*dev, h, original);
  ASSERT_EQ(dev->HoldCompletions(h, milliseconds(0)), kOk);  // this buffer's jobs only
  uint64_t seqno = Submit(*dev, ChecksumOf(h, size), rec.Done(0));
  ASSERT_TRUE(WaitForState(dev->engine(), seqno, "held"));

  auto read = std::async(std::launch::async,
                         [&] { return dev->BeginCpuAccess(h, DmaDirection::kFromDevice); });
  ASSERT_TRUE(Ready(read)) << "a CPU read waited for a pending reader";
  EXPECT_EQ(read.get(), kOk);
  EXPECT_EQ(dev->EndCpuAccess(h, DmaDirection::kFromDevice), kOk);
  EXPECT_TRUE(rec.Get().empty()) << "the reader completed while held";

  auto write = std::async(std::launch::async,
                          [&] { return dev->BeginCpuAccess(h, DmaDirection::kToDevice); });
  EXPECT_FALSE(Ready(write, kNotYet)) << "a CPU write did not wait for the pending reader";
  dev->engine().Release();
  ASSERT_TRUE(Ready(write));
  EXPECT_EQ(write.get(), kOk);
  ASSERT_TRUE(rec.WaitFor(1));
  EXPECT_EQ(rec.Get()[0].status, kOk);
  EXPECT_EQ(rec.Get()[0].result, Crc(original));
  Write(*dev, h, RandomBytes(size, 3));
  EXPECT_EQ(dev->EndCpuAccess(h, DmaDirection::kToDevice), kOk);
}

// An eviction-like move (DEVICE -> SYSTEM) asked for while a FILL is still pending (its
// engine stalled, so it has not run) completes only after the FILL did, and the new
// placement holds the FILL's data (strict cache: written back before the copy).
TEST_F(DeviceAsyncJobTest, MoveWaitsForPendingFillAndKeepsItsData) {
  Recorder rec;
  auto dev = NewDevice("move", CacheMode::kStrict);
  const uint64_t size = 4 * kPage;
  uint32_t h = NewBo(*dev, size, Placement::kDevice);
  Write(*dev, h, RandomBytes(size, 4));
  dev->engine().Stall(true);
  uint64_t seqno = Submit(*dev, Fill(h, size, 0x600d600du), rec.Done(0));
  ASSERT_TRUE(WaitForState(dev->engine(), seqno, "stalled"));

  auto move = std::async(std::launch::async, [&] { return dev->Move(h, Placement::kSystem); });
  EXPECT_FALSE(Ready(move, kNotYet)) << "the move did not wait for the pending FILL";
  dev->engine().Release();
  ASSERT_TRUE(Ready(move));
  EXPECT_EQ(move.get(), kOk);
  ASSERT_TRUE(rec.WaitFor(1));
  EXPECT_EQ(rec.Get()[0].status, kOk);
  EXPECT_EQ(PlacementOf(*dev, h), Placement::kSystem);
  ASSERT_EQ(dev->BeginCpuAccess(h, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(Read(*dev, h, size), PatternBytes(size, 0x600d600du));
  EXPECT_EQ(dev->EndCpuAccess(h, DmaDirection::kFromDevice), kOk);
}

// A BOOKKEEP fence (explicit sync: not for implicit sync) does not delay CPU access but does
// delay a move (rule S7b); AwaitIdle sees it only for a placement change.
TEST_F(DeviceAsyncJobTest, BookkeepFenceDelaysMoveOnly) {
  auto dev = NewDevice("bookkeep", CacheMode::kCoherent);
  const uint64_t size = 2 * kPage;
  uint32_t h = NewBo(*dev, size, Placement::kDevice);
  std::vector<uint8_t> data = RandomBytes(size, 5);
  Write(*dev, h, data);
  auto dmabuf = DmaBufOf(*dev, h);
  ASSERT_NE(dmabuf, nullptr);
  FenceTimeline other("explicit-sync");
  FenceRef fence = other.CreateFence();
  {
    ResvGuard guard(dmabuf->resv());
    ASSERT_EQ(dmabuf->resv().ReserveFences(1), kOk);
    ASSERT_EQ(dmabuf->resv().AddFence(fence, ResvUsage::kBookkeep), kOk);
  }

  Signal unused, placement_idle;
  EXPECT_EQ(dev->AwaitIdle(h, AwaitFor::kWrite, unused.Callback()), 0);
  EXPECT_EQ(dev->AwaitIdle(h, AwaitFor::kPlacement, placement_idle.Callback()), 1);
  auto access = std::async(std::launch::async,
                           [&] { return dev->BeginCpuAccess(h, DmaDirection::kBidirectional); });
  ASSERT_TRUE(Ready(access));
  EXPECT_EQ(access.get(), kOk) << "a CPU access waited for a BOOKKEEP fence";
  EXPECT_EQ(dev->EndCpuAccess(h, DmaDirection::kBidirectional), kOk);

  auto move = std::async(std::launch::async, [&] { return dev->Move(h, Placement::kSystem); });
  EXPECT_FALSE(Ready(move, kNotYet)) << "the move did not wait for the BOOKKEEP fence";
  EXPECT_FALSE(Ready(placement_idle.future, milliseconds(0)));
  ASSERT_EQ(fence->Signal(), kOk);
  ASSERT_TRUE(Ready(move));
  EXPECT_EQ(move.get(), kOk);
  EXPECT_TRUE(Ready(placement_idle.future));
  EXPECT_EQ(PlacementOf(*dev, h), Placement::kSystem);
  EXPECT_EQ(Read(*dev, h, size), data);
}

// Implicit sync across devices: B's COPY out of its import of A's buffer waits for A's FILL
// of that buffer (A's engine stalled: the FILL has not run) and copies the filled bytes.
TEST_F(DeviceAsyncJobTest, ImportersJobWaitsForExportersPendingWrite) {
  Recorder rec_a, rec_b;
  auto a = NewDevice("A", CacheMode::kCoherent);
  auto b = NewDevice("B", CacheMode::kCoherent);
  const uint64_t size = 2 * kPage;
  uint32_t src = NewBo(*a, size, Placement::kDevice);
  std::vector<uint8_t> old = RandomBytes(size, 6);
  Write(*a, src, old);
  uint32_t imported = Share(*a, src, *b);
  ASSERT_NE(imported, 0u);
  uint32_t dst = NewBo(*b, size, Placement::kDevice);
  Write(*b, dst, RandomBytes(size, 7));

  a->engine().Stall(true);
  uint64_t seq_a = Submit(*a, Fill(src, size, 0xabcd1234u), rec_a.Done(0));
  ASSERT_TRUE(WaitForState(a->engine(), seq_a, "stalled"));
  uint64_t seq_b =
      Submit(*b, JobRequest{JobOp::kCopy, dst, imported, 0, 0, size, 0}, rec_b.Done(0));
  ASSERT_TRUE(WaitForState(b->engine(), seq_b, "waiting", 1));
  EXPECT_GE(b->Stats().jobs_waited, 1u);
  EXPECT_EQ(b->Stats().jobs_in_flight, 1u);
  {
    // B's job must not complete while A's write is pending.
    auto b_done = std::async(std::launch::async, [&] { return rec_b.WaitFor(1); });
    EXPECT_FALSE(Ready(b_done, kNotYet)) << "B's COPY completed before A's FILL";
    a->engine().Release();
    ASSERT_TRUE(Ready(b_done));
    EXPECT_TRUE(b_done.get());
  }
  ASSERT_TRUE(rec_a.WaitFor(1));
  EXPECT_EQ(rec_a.Get()[0].status, kOk);
  EXPECT_EQ(rec_b.Get()[0].status, kOk);
  EXPECT_EQ(Read(*b, dst, size), PatternBytes(size, 0xabcd1234u)) << "B copied the old bytes";
  EXPECT_GE(b->Stats().jobs_waited, 1u);
  EXPECT_EQ(a->Stats().jobs_waited, 0u);
}

// AwaitIdle: 0 when nothing is pending, -ENOENT for an unknown handle; 1 while a job is held
// (a read waits for writers only, a write and a placement change for readers too), and the
// callback runs after the release.
TEST_F(DeviceAsyncJobTest, AwaitIdleCallsBackAfterRelease) {
  Recorder rec;
  auto dev = NewDevice("await", CacheMode::kCoherent);
  uint32_t read_bo = NewBo(*dev, kPage, Placement::kDevice);
  uint32_t written_bo = NewBo(*dev, kPage, Placement::kSystem);
  bool called = false;
  for (AwaitFor what : {AwaitFor::kRead, AwaitFor::kWrite, AwaitFor::kPlacement}) {
    EXPECT_EQ(dev->AwaitIdle(read_bo, what, [&] { called = true; }), 0);
  }
  EXPECT_EQ(dev->AwaitIdle(0xdead, AwaitFor::kRead, [&] { called = true; }), -ENOENT);
  EXPECT_FALSE(called);

  ASSERT_EQ(dev->HoldCompletions(0, milliseconds(0)), kOk);
  uint64_t seq_read = Submit(*dev, ChecksumOf(read_bo, kPage), rec.Done(0));
  uint64_t seq_write = Submit(*dev, Fill(written_bo, kPage, 0x1u), rec.Done(1));
  ASSERT_TRUE(WaitForState(dev->engine(), seq_read, "held"));
  (void)seq_write;

  Signal reader_write, reader_placement, writer_read;
  EXPECT_EQ(dev->AwaitIdle(read_bo, AwaitFor::kRead, [&] { called = true; }), 0);
  EXPECT_EQ(dev->AwaitIdle(read_bo, AwaitFor::kWrite, reader_write.Callback()), 1);
  EXPECT_EQ(dev->AwaitIdle(read_bo, AwaitFor::kPlacement, reader_placement.Callback()), 1);
  EXPECT_EQ(dev->AwaitIdle(written_bo, AwaitFor::kRead, writer_read.Callback()), 1);
  EXPECT_FALSE(Ready(reader_write.future, kNotYet));
  EXPECT_FALSE(Ready(reader_placement.future, milliseconds(0)));
  EXPECT_FALSE(Ready(writer_read.future, milliseconds(0)));

  dev->engine().Release();
  EXPECT_TRUE(Ready(reader_write.future));
  EXPECT_TRUE(Ready(reader_placement.future));
  EXPECT_TRUE(Ready(writer_read.future));
  ASSERT_TRUE(rec.WaitFor(2));
  EXPECT_EQ(dev->AwaitIdle(read_bo, AwaitFor::kWrite, [&] { called = true; }), 0);
  EXPECT_EQ(dev->AwaitIdle(written_bo, AwaitFor::kPlacement, [&] { called = true; }), 0);
  EXPECT_FALSE(called);
}

// LRU eviction passes over a buffer a job still uses: with VRAM full, the least recently used
// buffer has a job pending (engine stalled), so a new DEVICE buffer evicts the next one; the
// busy one stays in VRAM and its job writes there after the release.
TEST_F(DeviceAsyncJobTest, EvictionSkipsBufferWithPendingJob) {
  Recorder rec;
  auto dev = NewDevice("lru", CacheMode::kCoherent, Device::kMinVram);
  const uint64_t quarter = Device::kMinVram / 4;
  uint32_t busy = NewBo(*dev, quarter, Placement::kDevice);
  // Were the busy buffer tried anyway, its move would wait for the job, which cannot end
  // before the release: the allocation below would hang instead of going on.
  auto busy_dmabuf = DmaBufOf(*dev, busy);
  ASSERT_NE(busy_dmabuf, nullptr);
  dynamic_cast<BufferObject&>(busy_dmabuf->exporter())
      .set_move_wait_timeout(std::chrono::seconds(60));
  dev->engine().Stall(true);
  uint64_t seqno = Submit(*dev, Fill(busy, quarter, 0xb0b0b0b0u), rec.Done(0));
  ASSERT_TRUE(WaitForState(dev->engine(), seqno, "stalled"));

  std::vector<uint32_t> others;
  std::vector<std::vector<uint8_t>> contents;
  for (uint32_t i = 0; i < 3; ++i) {
    others.push_back(NewBo(*dev, quarter, Placement::kDevice));
    contents.push_back(RandomBytes(quarter, 10 + i));
    Write(*dev, others.back(), contents.back());
  }
  ASSERT_EQ(dev->Stats().vram_used, Device::kMinVram) << "VRAM should be full now";
  ASSERT_EQ(dev->Stats().evictions, 0u);

  auto create =
      std::async(std::launch::async, [&] { return dev->CreateBo(quarter, Placement::kDevice); });
  const bool created = Ready(create);
  if (!created) dev->engine().Release();  // let the stuck allocation finish before failing
  ASSERT_TRUE(created) << "the allocation waited for the busy buffer";
  auto fresh = create.get();
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(PlacementOf(*dev, *fresh), Placement::kDevice);
  EXPECT_EQ(PlacementOf(*dev, busy), Placement::kDevice) << "the busy buffer was evicted";
  EXPECT_EQ(PlacementOf(*dev, others[0]), Placement::kSystem) << "the next LRU one stayed";
  EXPECT_EQ(PlacementOf(*dev, others[1]), Placement::kDevice);
  EXPECT_EQ(PlacementOf(*dev, others[2]), Placement::kDevice);
  EXPECT_EQ(dev->Stats().evictions, 1u);
  EXPECT_EQ(Read(*dev, others[0], quarter), contents[0]);
  EXPECT_TRUE(rec.Get().empty());

  dev->engine().Release();
  ASSERT_TRUE(rec.WaitFor(1));
  EXPECT_EQ(rec.Get()[0].status, kOk);
  EXPECT_EQ(PlacementOf(*dev, busy), Placement::kDevice);
  EXPECT_EQ(Read(*dev, busy, quarter), PatternBytes(quarter, 0xb0b0b0b0u));
}

// Seqnos from Submit increase, the engine holds the jobs in that order, and the done
// callbacks arrive in that order; CHECKSUMs see the FILL submitted right before them.
TEST_F(DeviceAsyncJobTest, SeqnosIncreaseAndCompletionsArriveInOrder) {
  constexpr size_t kJobs = 40;
  Recorder rec;
  auto dev = NewDevice("order", CacheMode::kStrict);
  uint32_t a = NewBo(*dev, kPage, Placement::kDevice);
  uint32_t b = NewBo(*dev, kPage, Placement::kSystem);
  dev->engine().Stall(true);
  std::vector<uint64_t> seqnos;
  std::vector<uint32_t> want_crc(kJobs, 0);
  for (size_t i = 0; i < kJobs; ++i) {
    JobRequest req;
    const uint32_t pattern = 0x70000000u + uint32_t(i);
    switch (i % 3) {
      case 0:
        req = Fill(a, kPage, pattern);
        break;
      case 1:
        req = JobRequest{JobOp::kCopy, b, a, 0, 0, kPage, 0};
        break;
      case 2:
        req = ChecksumOf(b, kPage);
        want_crc[i] = Crc(PatternBytes(kPage, pattern - 2));
        break;
    }
    seqnos.push_back(Submit(*dev, req, rec.Done(i)));
    if (i > 0) {
      EXPECT_GT(seqnos[i], seqnos[i - 1]) << i;
    }
  }
  ASSERT_TRUE(WaitForState(dev->engine(), seqnos[0], "stalled"));
  std::vector<JobInfo> infos = dev->engine().InFlight();
  ASSERT_EQ(infos.size(), kJobs);
  for (size_t i = 0; i < kJobs; ++i) EXPECT_EQ(infos[i].seqno, seqnos[i]) << i;
  EXPECT_EQ(dev->Stats().jobs_in_flight, kJobs);

  dev->engine().Release();
  ASSERT_TRUE(rec.WaitFor(kJobs));
  std::vector<Recorder::Completion> done = rec.Get();
  for (size_t i = 0; i < kJobs; ++i) {
    EXPECT_EQ(done[i].index, i);
    EXPECT_EQ(done[i].status, kOk) << i;
    if (i % 3 == 2) {
      EXPECT_EQ(done[i].result, want_crc[i]) << i;
    }
  }
  dev->engine().Drain();
  sgb_device_stats st = dev->Stats();
  EXPECT_EQ(st.jobs, kJobs);
  EXPECT_EQ(st.last_fence, seqnos.back());
  EXPECT_EQ(st.jobs_in_flight, 0u);
  EXPECT_EQ(st.jobs_max_in_flight, kJobs);
}

// AbortJobs() on a stalled device with a FILL, a COPY and a CHECKSUM queued: all three are
// cancelled before it returns, no buffer changes (strict cache: nothing dirty either), their
// fences are signalled (nothing left to wait for), the handles stay valid, and the next job
// runs (the stall is over).
TEST_F(DeviceAsyncJobTest, AbortCancelsStalledJobsAndKeepsBuffers) {
  Recorder rec;
  auto dev = NewDevice("abort", CacheMode::kStrict);
  const uint64_t size = 2 * kPage;
  uint32_t a = NewBo(*dev, size, Placement::kDevice);
  uint32_t b = NewBo(*dev, size, Placement::kSystem);
  const std::vector<uint8_t> old_a = RandomBytes(size, 11), old_b = RandomBytes(size, 12);
  Write(*dev, a, old_a);
  Write(*dev, b, old_b);
  dev->engine().Stall(true);
  uint64_t s0 = Submit(*dev, Fill(a, size, 0xdead0000u), rec.Done(0));
  Submit(*dev, JobRequest{JobOp::kCopy, b, a, 0, 0, size, 0}, rec.Done(1));
  Submit(*dev, ChecksumOf(b, size), rec.Done(2));
  ASSERT_TRUE(WaitForState(dev->engine(), s0, "stalled"));
  EXPECT_EQ(dev->Stats().jobs_in_flight, 3u);

  EXPECT_EQ(dev->AbortJobs(/*wait=*/true), 3u);
  std::vector<Recorder::Completion> done = rec.Get();  // AbortJobs(true) waited for them
  ASSERT_EQ(done.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(done[i].index, i);
    EXPECT_EQ(done[i].status, -ECANCELED) << i;
  }
  EXPECT_EQ(dev->AwaitIdle(a, AwaitFor::kPlacement, [] {}), 0) << "a fence pending";
  EXPECT_EQ(dev->AwaitIdle(b, AwaitFor::kPlacement, [] {}), 0) << "a fence pending";
  EXPECT_EQ(dev->Stats().jobs_in_flight, 0u);
  EXPECT_EQ(dev->engine().stats().aborted, 3u);
  ASSERT_EQ(dev->BeginCpuAccess(a, DmaDirection::kFromDevice), kOk);
  ASSERT_EQ(dev->BeginCpuAccess(b, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(Read(*dev, a, size), old_a) << "a cancelled FILL changed the buffer";
  EXPECT_EQ(Read(*dev, b, size), old_b) << "a cancelled COPY changed the buffer";
  EXPECT_EQ(dev->EndCpuAccess(a, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(dev->EndCpuAccess(b, DmaDirection::kFromDevice), kOk);
  EXPECT_TRUE(dev->State(a).ok());
  EXPECT_TRUE(dev->State(b).ok());

  EXPECT_EQ(dev->Fill(a, 0, size, 0x600d0000u, nullptr), kOk);
  ASSERT_EQ(dev->BeginCpuAccess(a, DmaDirection::kFromDevice), kOk);
  EXPECT_EQ(Read(*dev, a, size), PatternBytes(size, 0x600d0000u));
  EXPECT_EQ(dev->EndCpuAccess(a, DmaDirection::kFromDevice), kOk);
}

// B's COPY from its import of A's buffer waits for A's held FILL. Aborting B cancels B's
// COPY at once (A's job is still held: A's abort is A's business) and leaves B's destination
// as it was; A's FILL completes when A is released.
TEST_F(DeviceAsyncJobTest, AbortCancelsJobWaitingForAnotherDevicesHeldJob) {
  Recorder rec_a, rec_b;
  const uint64_t size = 2 * kPage;
  SharedPair p = MakeSharedPair(size, 21);
  ASSERT_NE(p.imported, 0u);
  auto &a = p.a, &b = p.b;
  const uint32_t src = p.src, imported = p.imported, dst = p.dst;
  const std::vector<uint8_t>& old_dst = p.old_dst;

  ASSERT_EQ(a->HoldCompletions(0, milliseconds(0)), kOk);
  uint64_t seq_a = Submit(*a, Fill(src, size, 0xabcd1234u), rec_a.Done(0));
  ASSERT_TRUE(WaitForState(a->engine(), seq_a, "held"));
  uint64_t seq_b =
      Submit(*b, JobRequest{JobOp::kCopy, dst, imported, 0, 0, size, 0}, rec_b.Done(0));
  ASSERT_TRUE(WaitForState(b->engine(), seq_b, "waiting", 1));

  EXPECT_EQ(b->AbortJobs(/*wait=*/true), 1u);
  ASSERT_EQ(rec_b.Get().size(), 1u) << "B's abort waited for A's held job";
  EXPECT_EQ(rec_b.Get()[0].status, -ECANCELED);
  EXPECT_EQ(b->AwaitIdle(dst, AwaitFor::kPlacement, [] {}), 0);
  EXPECT_EQ(Read(*b, dst, size), old_dst) << "B's cancelled COPY changed its destination";
  EXPECT_TRUE(rec_a.Get().empty()) << "B's abort released A's held job";

  a->engine().Release();
  ASSERT_TRUE(rec_a.WaitFor(1));
  EXPECT_EQ(rec_a.Get()[0].status, kOk);
  EXPECT_EQ(Read(*a, src, size), PatternBytes(size, 0xabcd1234u));
  EXPECT_EQ(Read(*b, dst, size), old_dst);
}

// The other way round: A's FILL has not started (A stalled) and B's COPY from the import
// waits for it. Aborting A cancels the FILL and signals its fence (with the error), so B's
// COPY is not blocked for ever: it runs, on the buffer as it was.
TEST_F(DeviceAsyncJobTest, AbortedJobsFenceUnblocksAnotherDevicesJob) {
  Recorder rec_a, rec_b;
  const uint64_t size = 2 * kPage;
  SharedPair p = MakeSharedPair(size, 31);
  ASSERT_NE(p.imported, 0u);
  auto &a = p.a, &b = p.b;
  const uint32_t src = p.src, imported = p.imported, dst = p.dst;
  const std::vector<uint8_t>& old_src = p.old_src;

  a->engine().Stall(true);
  uint64_t seq_a = Submit(*a, Fill(src, size, 0x5a5a5a5au), rec_a.Done(0));
  ASSERT_TRUE(WaitForState(a->engine(), seq_a, "stalled"));
  uint64_t seq_b =
      Submit(*b, JobRequest{JobOp::kCopy, dst, imported, 0, 0, size, 0}, rec_b.Done(0));
  ASSERT_TRUE(WaitForState(b->engine(), seq_b, "waiting", 1));

  EXPECT_EQ(a->AbortJobs(/*wait=*/true), 1u);
  ASSERT_EQ(rec_a.Get().size(), 1u);
  EXPECT_EQ(rec_a.Get()[0].status, -ECANCELED);
  ASSERT_TRUE(rec_b.WaitFor(1)) << "B's job still waits for A's cancelled FILL";
  EXPECT_EQ(rec_b.Get()[0].status, kOk);
  EXPECT_EQ(Read(*a, src, size), old_src);
  EXPECT_EQ(Read(*b, dst, size), old_src) << "B did not copy the buffer as it was";
}

// Nothing in flight: AbortJobs() cancels nothing and the device goes on as before.
TEST_F(DeviceAsyncJobTest, AbortWhenIdleIsANoOp) {
  auto dev = NewDevice("idle", CacheMode::kCoherent);
  uint32_t h = NewBo(*dev, kPage, Placement::kDevice);
  const std::vector<uint8_t> bytes = RandomBytes(kPage, 41);
  Write(*dev, h, bytes);
  const sgb_device_stats before = dev->Stats();
  EXPECT_EQ(dev->AbortJobs(true), 0u);
  EXPECT_EQ(dev->AbortJobs(false), 0u);
  const sgb_device_stats after = dev->Stats();
  EXPECT_EQ(after.jobs, before.jobs);
  EXPECT_EQ(after.job_errors, before.job_errors);
  EXPECT_EQ(Read(*dev, h, kPage), bytes);
  EXPECT_EQ(dev->Fill(h, 0, kPage, 0x01010101u, nullptr), kOk);
  EXPECT_EQ(Read(*dev, h, kPage), PatternBytes(kPage, 0x01010101u));
}

}  // namespace
}  // namespace sharegpu::testing
