// The engine on its own (engine/engine.h, engine/cpu_engine.h): jobs over plain page-aligned
// memory with a coherent device cache, no device, no reservations. In-order completion, the
// fault injection (stall, held completions: all, timed, per buffer), dependency waits on
// another timeline's fence, cancellation on Stop() and errors reported through done and the
// fence. Nothing here sleeps to synchronise: a state the worker reaches is polled from
// InFlight() under a deadline that fails the test; "does not happen before release" is a
// bounded fence wait that must time out.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../job_recorder.h"
#include "engine/cpu_engine.h"
#include "mem/copy_engine.h"
#include "mem/device_cache.h"
#include "sync/fence.h"

namespace sharegpu {
namespace {

using std::chrono::milliseconds;

constexpr uint64_t kPage = 4096;
// Generous: only a broken engine (or a hung one) gets near it.
constexpr std::chrono::seconds kDeadline{20};
// How long something that must not happen before a release is given to happen anyway.
constexpr milliseconds kNotYet{200};

// Whole pages of plain memory, zeroed, and the device's (coherent) cache of them.
struct PageBuffer {
  explicit PageBuffer(uint64_t bytes)
      : size(bytes), mem(static_cast<uint8_t*>(std::aligned_alloc(kPage, bytes))) {
    std::memset(mem, 0, size);
  }
  ~PageBuffer() { std::free(mem); }
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;

  DeviceView view() { return DeviceView{mem, size, &cache}; }
  std::vector<uint8_t> bytes() const { return std::vector<uint8_t>(mem, mem + size); }

  const uint64_t size;
  uint8_t* const mem;
  DeviceCache cache{CacheMode::kCoherent};
};

std::vector<uint8_t> PatternBytes(size_t n, uint32_t pattern) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(pattern >> ((i % 4) * 8));
  return v;
}

using Recorder = JobRecorder;

// The seqnos of fences in the order they signalled (callbacks run at signal time).
class SignalOrder {
 public:
  void Watch(const FenceRef& fence) {
    ASSERT_EQ(fence->AddCallback([this](const Fence& f) {
      std::lock_guard lock(mu_);
      order_.push_back(f.seqno());
    }),
              kOk);
  }
  std::vector<uint64_t> Get() {
    std::lock_guard lock(mu_);
    return order_;
  }
  // n new fences of `timeline`, each watched.
  std::vector<FenceRef> NewWatched(FenceTimeline& timeline, size_t n) {
    std::vector<FenceRef> fences;
    for (size_t i = 0; i < n; ++i) {
      fences.push_back(timeline.CreateFence());
      Watch(fences.back());
    }
    return fences;
  }

 private:
  std::mutex mu_;
  std::vector<uint64_t> order_;
};

// A job over `bufs` (buffers[0] is the destination of COPY/FILL and the source of CHECKSUM).
std::unique_ptr<Job> MakeJob(JobOp op, std::vector<PageBuffer*> bufs, uint64_t off, uint64_t len,
                             uint32_t pattern, FenceRef fence, JobDone done) {
  auto job = std::make_unique<Job>();
  job->op = op;
  for (size_t i = 0; i < bufs.size(); ++i) {
    JobBuffer b;
    b.view = bufs[i]->view();
    b.identity = bufs[i];
    b.handle = static_cast<uint32_t>(i + 1);
    b.write = i == 0 && op != JobOp::kChecksum;
    job->buffers.push_back(b);
  }
  job->off = off;
  job->len = len;
  job->pattern = pattern;
  job->fence = std::move(fence);
  job->done = std::move(done);
  return job;
}

std::unique_ptr<Job> FillJob(PageBuffer& buf, uint32_t pattern, FenceRef fence, JobDone done) {
  return MakeJob(JobOp::kFill, {&buf}, 0, buf.size, pattern, std::move(fence), std::move(done));
}

// Polls InFlight() until the job with `seqno` shows `state` (and, when given, that many
// pending dependencies). Fails when the deadline passes or the job is no longer in flight.
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
      return ::testing::AssertionFailure()
             << "job " << seqno << " left the engine before reaching '" << state
             << "' (last seen: " << last << ")";
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return ::testing::AssertionFailure()
             << "job " << seqno << " did not reach '" << state << "' (last: " << last << ")";
    }
    std::this_thread::yield();
  }
}

// Many jobs, all queued before the first runs (the engine is stalled meanwhile): they run,
// signal and report in submission order. A FILL with a new pattern alternates with a CHECKSUM
// of the same buffer, so each checksum proves which fill ran right before it.
TEST(EngineTest, JobsCompleteAndSignalInSubmissionOrder) {
  constexpr size_t kJobs = 64;
  PageBuffer buf(2 * kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  SignalOrder signals;
  std::vector<FenceRef> fences = signals.NewWatched(timeline, kJobs);
  // At each done: its own fence has signalled, the next one has not (strictly in order).
  std::mutex seen_mu;
  std::vector<bool> own_signalled(kJobs), next_unsignalled(kJobs);

  auto engine = CpuEngine::Create("order");
  engine->Stall(true);
  std::vector<uint32_t> expected_crc(kJobs, 0);
  for (size_t i = 0; i < kJobs; ++i) {
    JobDone record = rec.Done(i);
    JobDone done = [&, i, record](Status s, uint64_t r) {
      {
        std::lock_guard lock(seen_mu);
        own_signalled[i] = fences[i]->IsSignaled();
        next_unsignalled[i] = i + 1 == kJobs || !fences[i + 1]->IsSignaled();
      }
      record(s, r);
    };
    std::unique_ptr<Job> job;
    if (i % 2 == 0) {
      job = FillJob(buf, 0x01000000u + uint32_t(i), fences[i], std::move(done));
    } else {
      std::vector<uint8_t> want = PatternBytes(buf.size, 0x01000000u + uint32_t(i - 1));
      expected_crc[i] = Crc32c(0, want.data(), want.size());
      job = MakeJob(JobOp::kChecksum, {&buf}, 0, buf.size, 0, fences[i], std::move(done));
    }
    ASSERT_EQ(engine->Submit(std::move(job)), kOk);
  }
  ASSERT_TRUE(WaitForState(*engine, fences[0]->seqno(), "stalled"));
  std::vector<JobInfo> infos = engine->InFlight();
  ASSERT_EQ(infos.size(), kJobs);
  for (size_t i = 0; i < kJobs; ++i) {
    EXPECT_EQ(infos[i].seqno, fences[i]->seqno()) << i;  // oldest first: the FIFO
    EXPECT_EQ(infos[i].state, i == 0 ? "stalled" : "queued") << i;
  }
  EXPECT_EQ(engine->stats().in_flight, kJobs);
  EXPECT_EQ(rec.Get().size(), 0u);

  engine->Release();
  ASSERT_TRUE(rec.WaitFor(kJobs));
  engine->Drain();
  std::vector<Recorder::Completion> done = rec.Get();
  ASSERT_EQ(done.size(), kJobs);
  for (size_t i = 0; i < kJobs; ++i) {
    EXPECT_EQ(done[i].index, i);
    EXPECT_EQ(done[i].status, kOk) << i;
    if (i % 2 == 1) {
      EXPECT_EQ(done[i].result, expected_crc[i]) << "checksum " << i;
    }
    std::lock_guard lock(seen_mu);
    EXPECT_TRUE(own_signalled[i]) << "done " << i << " ran before its fence signalled";
    EXPECT_TRUE(next_unsignalled[i]) << "fence " << i + 1 << " signalled before done " << i;
  }
  std::vector<uint64_t> order = signals.Get();
  ASSERT_EQ(order.size(), kJobs);
  for (size_t i = 0; i < kJobs; ++i) EXPECT_EQ(order[i], fences[i]->seqno()) << i;
  EXPECT_EQ(buf.bytes(), PatternBytes(buf.size, 0x01000000u + uint32_t(kJobs - 2)));
  EngineStats st = engine->stats();
  EXPECT_EQ(st.submitted, kJobs);
  EXPECT_EQ(st.completed, kJobs);
  EXPECT_EQ(st.failed, 0u);
  EXPECT_EQ(st.in_flight, 0u);
  EXPECT_EQ(st.max_in_flight, kJobs);
}

// A stalled engine starts nothing: the FILL's memory stays untouched and its fence pending
// until Release().
TEST(EngineTest, StalledEngineDoesNotTouchMemoryUntilReleased) {
  PageBuffer buf(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  auto engine = CpuEngine::Create("stall");
  engine->Stall(true);
  FenceRef fence = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(FillJob(buf, 0xa5a5a5a5u, fence, rec.Done(0))), kOk);
  ASSERT_TRUE(WaitForState(*engine, fence->seqno(), "stalled"));
  EXPECT_EQ(fence->Wait(kNotYet), -ETIME);
  EXPECT_EQ(buf.bytes(), std::vector<uint8_t>(buf.size, 0)) << "the FILL ran while stalled";
  EXPECT_EQ(rec.Get().size(), 0u);

  engine->Release();
  ASSERT_EQ(fence->Wait(kDeadline), kOk);
  EXPECT_EQ(fence->error(), kOk);
  ASSERT_TRUE(rec.WaitFor(1));
  EXPECT_EQ(rec.Get()[0].status, kOk);
  EXPECT_EQ(buf.bytes(), PatternBytes(buf.size, 0xa5a5a5a5u));
  EXPECT_EQ(engine->stats().held, 0u);
}

// Held completions (every job): the job ran - memory changed - but its fence stays
// unsignalled, and so does a later job's; Release() signals both, in order.
TEST(EngineTest, HeldCompletionRanButFencesStayUnsignalledUntilRelease) {
  PageBuffer a(kPage), b(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  SignalOrder signals;
  auto engine = CpuEngine::Create("hold");
  engine->HoldCompletions(nullptr, milliseconds(0));
  FenceRef f1 = timeline.CreateFence();
  FenceRef f2 = timeline.CreateFence();
  signals.Watch(f1);
  signals.Watch(f2);
  ASSERT_EQ(engine->Submit(FillJob(a, 0x11223344u, f1, rec.Done(0))), kOk);
  ASSERT_TRUE(WaitForState(*engine, f1->seqno(), "held"));
  EXPECT_EQ(a.bytes(), PatternBytes(a.size, 0x11223344u)) << "a held job has executed";
  ASSERT_EQ(engine->Submit(FillJob(b, 0x55667788u, f2, rec.Done(1))), kOk);

  EXPECT_EQ(f1->Wait(kNotYet), -ETIME);
  EXPECT_EQ(f2->Wait(milliseconds(1)), -ETIME);
  EXPECT_FALSE(f2->IsSignaled());
  EXPECT_EQ(rec.Get().size(), 0u);
  std::vector<JobInfo> infos = engine->InFlight();
  ASSERT_EQ(infos.size(), 2u);
  EXPECT_EQ(infos[0].state, "held");
  EXPECT_EQ(infos[1].state, "queued");
  EXPECT_EQ(engine->stats().held, 1u);

  engine->Release();
  ASSERT_EQ(f2->Wait(kDeadline), kOk);
  EXPECT_TRUE(f1->IsSignaled());
  ASSERT_TRUE(rec.WaitFor(2));
  std::vector<Recorder::Completion> done = rec.Get();
  EXPECT_EQ(done[0].index, 0u);
  EXPECT_EQ(done[1].index, 1u);
  EXPECT_EQ(done[0].status, kOk);
  EXPECT_EQ(done[1].status, kOk);
  EXPECT_EQ(signals.Get(), (std::vector<uint64_t>{f1->seqno(), f2->seqno()}));
  EXPECT_EQ(b.bytes(), PatternBytes(b.size, 0x55667788u));
  EXPECT_EQ(engine->stats().held, 1u);  // the hold ended before the second job completed
}

// A hold with a duration ends by itself: no Release() needed.
TEST(EngineTest, TimedHoldEndsWithoutRelease) {
  PageBuffer buf(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  auto engine = CpuEngine::Create("timed");
  engine->HoldCompletions(nullptr, milliseconds(300));
  FenceRef fence = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(FillJob(buf, 0xdeadbeefu, fence, rec.Done(0))), kOk);
  ASSERT_TRUE(WaitForState(*engine, fence->seqno(), "held"));
  EXPECT_EQ(fence->Wait(milliseconds(50)), -ETIME);
  EXPECT_EQ(fence->Wait(kDeadline), kOk) << "a 300 ms hold did not end by itself";
  ASSERT_TRUE(rec.WaitFor(1));
  EXPECT_EQ(rec.Get()[0].status, kOk);
  EXPECT_EQ(buf.bytes(), PatternBytes(buf.size, 0xdeadbeefu));
  EXPECT_EQ(engine->stats().held, 1u);
}

// A hold on one buffer: a job on another buffer completes while the hold is on; the job on
// the held buffer is held; a job on another buffer submitted after it waits behind it
// (completion stays in order).
TEST(EngineTest, HoldByBufferHoldsItsJobsAndThoseBehindThem) {
  PageBuffer held(kPage), before(kPage), after(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  SignalOrder signals;
  auto engine = CpuEngine::Create("hold-buffer");
  engine->HoldCompletions(&held, milliseconds(0));

  FenceRef f_before = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(FillJob(before, 0x0b0b0b0bu, f_before, rec.Done(0))), kOk);
  ASSERT_EQ(f_before->Wait(kDeadline), kOk) << "a job on another buffer was held";
  EXPECT_EQ(before.bytes(), PatternBytes(before.size, 0x0b0b0b0bu));

  FenceRef f_held = timeline.CreateFence();
  FenceRef f_after = timeline.CreateFence();
  signals.Watch(f_held);
  signals.Watch(f_after);
  ASSERT_EQ(engine->Submit(FillJob(held, 0x4e4e4e4eu, f_held, rec.Done(1))), kOk);
  ASSERT_TRUE(WaitForState(*engine, f_held->seqno(), "held"));
  ASSERT_EQ(engine->Submit(FillJob(after, 0xafafafafu, f_after, rec.Done(2))), kOk);
  EXPECT_EQ(f_after->Wait(kNotYet), -ETIME) << "completed past a held job";
  EXPECT_FALSE(f_held->IsSignaled());
  EXPECT_EQ(after.bytes(), std::vector<uint8_t>(after.size, 0));
  EXPECT_EQ(rec.Get().size(), 1u);

  engine->Release();
  ASSERT_EQ(f_after->Wait(kDeadline), kOk);
  ASSERT_TRUE(rec.WaitFor(3));
  std::vector<Recorder::Completion> done = rec.Get();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(done[i].index, i);
    EXPECT_EQ(done[i].status, kOk);
  }
  EXPECT_EQ(signals.Get(), (std::vector<uint64_t>{f_held->seqno(), f_after->seqno()}));
  EXPECT_EQ(held.bytes(), PatternBytes(held.size, 0x4e4e4e4eu));
  EXPECT_EQ(after.bytes(), PatternBytes(after.size, 0xafafafafu));
  EXPECT_EQ(engine->stats().held, 1u);
}

// A dependency on another timeline's fence: the job does not run (memory untouched, state
// "waiting", one dependency pending) until that fence signals. A dependency already
// signalled at submission is no wait and is not counted.
TEST(EngineTest, UnsignalledDependencyKeepsJobWaiting) {
  PageBuffer first(kPage), buf(kPage);
  FenceTimeline timeline("engine-test");
  FenceTimeline other("other-device");
  Recorder rec;
  auto engine = CpuEngine::Create("deps");

  FenceRef signalled_dep = other.CreateFence();
  ASSERT_EQ(signalled_dep->Signal(), kOk);
  FenceRef f0 = timeline.CreateFence();
  auto job0 = FillJob(first, 0x01010101u, f0, rec.Done(0));
  job0->dependencies.push_back(signalled_dep);
  ASSERT_EQ(engine->Submit(std::move(job0)), kOk);
  ASSERT_EQ(f0->Wait(kDeadline), kOk);
  EXPECT_EQ(engine->stats().waited_on_dependencies, 0u);

  FenceRef dep = other.CreateFence();
  FenceRef fence = timeline.CreateFence();
  auto job = FillJob(buf, 0x77777777u, fence, rec.Done(1));
  job->dependencies.push_back(dep);
  ASSERT_EQ(engine->Submit(std::move(job)), kOk);
  ASSERT_TRUE(WaitForState(*engine, fence->seqno(), "waiting", 1));
  EXPECT_EQ(fence->Wait(kNotYet), -ETIME);
  EXPECT_EQ(buf.bytes(), std::vector<uint8_t>(buf.size, 0)) << "ran before its dependency";
  EXPECT_EQ(engine->stats().waited_on_dependencies, 1u);

  ASSERT_EQ(dep->Signal(), kOk);
  ASSERT_EQ(fence->Wait(kDeadline), kOk);
  ASSERT_TRUE(rec.WaitFor(2));
  EXPECT_EQ(rec.Get()[1].status, kOk);
  EXPECT_EQ(buf.bytes(), PatternBytes(buf.size, 0x77777777u));
  EXPECT_EQ(engine->stats().waited_on_dependencies, 1u);
}

// Stop() on a stalled engine: nothing queued ever runs; every job's done is called with
// -ECANCELED and its fence signalled with that error, in submission order, before Stop()
// returns. Later submissions are refused.
TEST(EngineTest, StopCancelsQueuedJobsInOrder) {
  constexpr size_t kJobs = 4;
  PageBuffer buf(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  SignalOrder signals;
  auto engine = CpuEngine::Create("stop");
  engine->Stall(true);
  std::vector<FenceRef> fences;
  for (size_t i = 0; i < kJobs; ++i) {
    fences.push_back(timeline.CreateFence());
    signals.Watch(fences.back());
    ASSERT_EQ(engine->Submit(FillJob(buf, 0x12345678u, fences.back(), rec.Done(i))), kOk);
  }
  ASSERT_TRUE(WaitForState(*engine, fences[0]->seqno(), "stalled"));

  engine->Stop();
  std::vector<Recorder::Completion> done = rec.Get();  // no wait: Stop() has called them
  ASSERT_EQ(done.size(), kJobs);
  for (size_t i = 0; i < kJobs; ++i) {
    EXPECT_EQ(done[i].index, i);
    EXPECT_EQ(done[i].status, -ECANCELED) << i;
    EXPECT_TRUE(fences[i]->IsSignaled()) << i;
    EXPECT_EQ(fences[i]->error(), -ECANCELED) << i;
  }
  std::vector<uint64_t> order = signals.Get();
  ASSERT_EQ(order.size(), kJobs);
  for (size_t i = 0; i < kJobs; ++i) EXPECT_EQ(order[i], fences[i]->seqno());
  EXPECT_EQ(buf.bytes(), std::vector<uint8_t>(buf.size, 0)) << "a cancelled job ran";
  EXPECT_TRUE(engine->InFlight().empty());
  EngineStats st = engine->stats();
  EXPECT_EQ(st.completed, kJobs);
  EXPECT_EQ(st.failed, kJobs);
  EXPECT_EQ(st.in_flight, 0u);

  FenceRef late = timeline.CreateFence();
  EXPECT_EQ(engine->Submit(FillJob(buf, 1, late, rec.Done(99))), -ESHUTDOWN);
  EXPECT_FALSE(late->IsSignaled());  // not taken: the submitter signals it
  EXPECT_EQ(rec.Get().size(), kJobs);
  (void)late->SignalWithError(-ESHUTDOWN);
  engine->Stop();  // idempotent
}

// A job whose range does not fit fails with -ERANGE through done and the fence error, a
// malformed one with -EINVAL; the engine goes on with the next job.
TEST(EngineTest, BadJobsFailThroughDoneAndFence) {
  PageBuffer buf(kPage), other(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  auto engine = CpuEngine::Create("errors");
  FenceRef f_fill = timeline.CreateFence();
  FenceRef f_sum = timeline.CreateFence();
  FenceRef f_copy = timeline.CreateFence();
  FenceRef f_malformed = timeline.CreateFence();
  FenceRef f_good = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(
                MakeJob(JobOp::kFill, {&buf}, buf.size - 4, 8, 0xffffffffu, f_fill, rec.Done(0))),
            kOk);
  ASSERT_EQ(
      engine->Submit(MakeJob(JobOp::kChecksum, {&buf}, 0, buf.size + 1, 0, f_sum, rec.Done(1))),
      kOk);
  auto copy = MakeJob(JobOp::kCopy, {&buf, &other}, 0, kPage, 0, f_copy, rec.Done(2));
  copy->off2 = 1;  // source range runs past `other`
  ASSERT_EQ(engine->Submit(std::move(copy)), kOk);
  ASSERT_EQ(engine->Submit(MakeJob(JobOp::kCopy, {&buf}, 0, kPage, 0, f_malformed, rec.Done(3))),
            kOk);  // a COPY with one buffer
  ASSERT_EQ(engine->Submit(FillJob(buf, 0x5a5a5a5au, f_good, rec.Done(4))), kOk);
  ASSERT_TRUE(rec.WaitFor(5));
  std::vector<Recorder::Completion> done = rec.Get();
  const Status want[] = {-ERANGE, -ERANGE, -ERANGE, -EINVAL, kOk};
  const FenceRef* fences[] = {&f_fill, &f_sum, &f_copy, &f_malformed, &f_good};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(done[i].index, i);
    EXPECT_EQ(done[i].status, want[i]) << i;
    EXPECT_TRUE((*fences[i])->IsSignaled()) << i;
    EXPECT_EQ((*fences[i])->error(), want[i]) << i;
  }
  EXPECT_EQ(buf.bytes(), PatternBytes(buf.size, 0x5a5a5a5au));
  EXPECT_EQ(other.bytes(), std::vector<uint8_t>(other.size, 0));
  EngineStats st = engine->stats();
  EXPECT_EQ(st.completed, 5u);
  EXPECT_EQ(st.failed, 4u);
}

// AbortAll() on a stalled engine with three queued jobs: none runs (memory untouched), each
// done reports -ECANCELED and each fence signals with that error, in submission order, all
// before AbortAll() returns; the stall is over, so the next job runs and succeeds.
TEST(EngineTest, AbortCancelsStalledAndQueuedJobs) {
  constexpr size_t kJobs = 3;
  PageBuffer a(kPage), b(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  SignalOrder signals;
  auto engine = CpuEngine::Create("abort");
  engine->Stall(true);
  std::vector<FenceRef> fences = signals.NewWatched(timeline, kJobs);
  ASSERT_EQ(engine->Submit(FillJob(a, 0x12345678u, fences[0], rec.Done(0))), kOk);
  ASSERT_EQ(engine->Submit(MakeJob(JobOp::kCopy, {&b, &a}, 0, kPage, 0, fences[1], rec.Done(1))),
            kOk);
  ASSERT_EQ(engine->Submit(MakeJob(JobOp::kChecksum, {&b}, 0, kPage, 0, fences[2], rec.Done(2))),
            kOk);
  ASSERT_TRUE(WaitForState(*engine, fences[0]->seqno(), "stalled"));

  EXPECT_EQ(engine->AbortAll(), kJobs);
  std::vector<Recorder::Completion> done = rec.Get();  // no wait: AbortAll() waited
  ASSERT_EQ(done.size(), kJobs);
  for (size_t i = 0; i < kJobs; ++i) {
    EXPECT_EQ(done[i].index, i);
    EXPECT_EQ(done[i].status, -ECANCELED) << i;
    EXPECT_EQ(done[i].result, 0u) << i;
    EXPECT_TRUE(fences[i]->IsSignaled()) << i;
    EXPECT_EQ(fences[i]->error(), -ECANCELED) << i;
  }
  std::vector<uint64_t> order = signals.Get();
  ASSERT_EQ(order.size(), kJobs);
  for (size_t i = 0; i < kJobs; ++i) EXPECT_EQ(order[i], fences[i]->seqno()) << i;
  EXPECT_EQ(a.bytes(), std::vector<uint8_t>(a.size, 0)) << "a cancelled FILL ran";
  EXPECT_EQ(b.bytes(), std::vector<uint8_t>(b.size, 0)) << "a cancelled COPY ran";
  EXPECT_TRUE(engine->InFlight().empty());
  EngineStats st = engine->stats();
  EXPECT_EQ(st.aborted, kJobs);
  EXPECT_EQ(st.failed, kJobs);
  EXPECT_EQ(st.in_flight, 0u);

  FenceRef next = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(FillJob(a, 0x600d600du, next, rec.Done(3))), kOk);
  ASSERT_EQ(next->Wait(kDeadline), kOk) << "the abort left the engine stalled";
  EXPECT_EQ(next->error(), kOk);
  ASSERT_TRUE(rec.WaitFor(kJobs + 1));
  EXPECT_EQ(rec.Get()[kJobs].status, kOk);
  EXPECT_EQ(a.bytes(), PatternBytes(a.size, 0x600d600du));
  EXPECT_EQ(engine->stats().aborted, kJobs);
}

// A held completion: the job has executed, so AbortAll() lets it complete with its own
// status and result (a CHECKSUM: its CRC) and ends the hold; the job queued behind it has
// not started and is cancelled.
TEST(EngineTest, AbortCompletesHeldJobWithItsResultAndCancelsTheRest) {
  PageBuffer a(kPage), b(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  auto engine = CpuEngine::Create("abort-held");
  FenceRef f_fill = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(FillJob(a, 0x3c3c3c3cu, f_fill, rec.Done(0))), kOk);
  ASSERT_EQ(f_fill->Wait(kDeadline), kOk);
  engine->HoldCompletions(nullptr, milliseconds(0));
  FenceRef f_sum = timeline.CreateFence();
  FenceRef f_behind = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(MakeJob(JobOp::kChecksum, {&a}, 0, kPage, 0, f_sum, rec.Done(1))),
            kOk);
  ASSERT_TRUE(WaitForState(*engine, f_sum->seqno(), "held"));
  ASSERT_EQ(engine->Submit(FillJob(b, 0xbadbadbau, f_behind, rec.Done(2))), kOk);
  EXPECT_EQ(f_sum->Wait(milliseconds(1)), -ETIME);

  EXPECT_EQ(engine->AbortAll(), 1u);
  std::vector<Recorder::Completion> done = rec.Get();
  ASSERT_EQ(done.size(), 3u);
  EXPECT_EQ(done[1].index, 1u);
  EXPECT_EQ(done[1].status, kOk);
  const std::vector<uint8_t> filled = PatternBytes(kPage, 0x3c3c3c3cu);
  EXPECT_EQ(done[1].result, Crc32c(0, filled.data(), filled.size()));
  EXPECT_EQ(f_sum->error(), kOk);
  EXPECT_EQ(done[2].index, 2u);
  EXPECT_EQ(done[2].status, -ECANCELED);
  EXPECT_EQ(f_behind->error(), -ECANCELED);
  EXPECT_EQ(a.bytes(), filled);
  EXPECT_EQ(b.bytes(), std::vector<uint8_t>(b.size, 0));
  EngineStats st = engine->stats();
  EXPECT_EQ(st.held, 1u);
  EXPECT_EQ(st.aborted, 1u);

  // The hold is over.
  FenceRef next = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(FillJob(b, 0x0f0f0f0fu, next, rec.Done(3))), kOk);
  ASSERT_EQ(next->Wait(kDeadline), kOk) << "the abort left the hold on";
  EXPECT_EQ(b.bytes(), PatternBytes(b.size, 0x0f0f0f0fu));
}

// A job waiting for another timeline's fence is not started: AbortAll() cancels it at once,
// while that fence is still unsignalled, and its own fence signals (with the error), so a
// waiter on it is not blocked by the other timeline. Signalling the dependency later changes
// nothing.
TEST(EngineTest, AbortCancelsJobWaitingForAnotherTimeline) {
  PageBuffer buf(kPage);
  FenceTimeline timeline("engine-test");
  FenceTimeline other("other-device");
  Recorder rec;
  auto engine = CpuEngine::Create("abort-deps");
  FenceRef dep = other.CreateFence();
  FenceRef fence = timeline.CreateFence();
  auto job = FillJob(buf, 0x77777777u, fence, rec.Done(0));
  job->dependencies.push_back(dep);
  ASSERT_EQ(engine->Submit(std::move(job)), kOk);
  ASSERT_TRUE(WaitForState(*engine, fence->seqno(), "waiting", 1));

  EXPECT_EQ(engine->AbortAll(), 1u);
  EXPECT_FALSE(dep->IsSignaled());
  EXPECT_TRUE(fence->IsSignaled());
  EXPECT_EQ(fence->error(), -ECANCELED);
  ASSERT_EQ(rec.Get().size(), 1u);
  EXPECT_EQ(rec.Get()[0].status, -ECANCELED);
  ASSERT_EQ(dep->Signal(), kOk);
  engine->Drain();
  EXPECT_EQ(buf.bytes(), std::vector<uint8_t>(buf.size, 0)) << "a cancelled job ran";
  EXPECT_EQ(rec.Get().size(), 1u);
}

// Nothing in flight: AbortAll() cancels nothing, completes nothing, and still ends a stall.
TEST(EngineTest, AbortWhenIdleIsANoOp) {
  PageBuffer buf(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  auto engine = CpuEngine::Create("abort-idle");
  EXPECT_EQ(engine->AbortAll(), 0u);
  EXPECT_EQ(engine->AbortAll(false), 0u);
  engine->Stall(true);
  EXPECT_EQ(engine->AbortAll(), 0u);
  EngineStats st = engine->stats();
  EXPECT_EQ(st.completed, 0u);
  EXPECT_EQ(st.aborted, 0u);
  EXPECT_EQ(rec.Get().size(), 0u);

  FenceRef fence = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(FillJob(buf, 0x01020304u, fence, rec.Done(0))), kOk);
  ASSERT_EQ(fence->Wait(kDeadline), kOk) << "the abort left the engine stalled";
  ASSERT_TRUE(rec.WaitFor(1));
  EXPECT_EQ(rec.Get()[0].status, kOk);
  EXPECT_EQ(buf.bytes(), PatternBytes(buf.size, 0x01020304u));
}

// AbortAll() from a done callback (the engine's own thread) does not wait for itself: it
// cancels the job queued behind and returns; without waiting, from another thread, it
// returns before the cancelled completions arrive and they arrive as usual.
TEST(EngineTest, AbortFromDoneCallbackAndWithoutWaiting) {
  PageBuffer a(kPage), b(kPage);
  FenceTimeline timeline("engine-test");
  Recorder rec;
  auto engine = CpuEngine::Create("abort-cb");
  engine->Stall(true);
  std::atomic<size_t> cancelled_in_cb{99};
  FenceRef f0 = timeline.CreateFence();
  FenceRef f1 = timeline.CreateFence();
  JobDone record0 = rec.Done(0);
  ASSERT_EQ(engine->Submit(FillJob(a, 0xa0a0a0a0u, f0, [&, record0](Status st, uint64_t r) {
              cancelled_in_cb = engine->AbortAll();
              record0(st, r);
            })),
            kOk);
  ASSERT_EQ(engine->Submit(FillJob(b, 0xb0b0b0b0u, f1, rec.Done(1))), kOk);
  ASSERT_TRUE(WaitForState(*engine, f0->seqno(), "stalled"));
  engine->Stall(false);
  ASSERT_TRUE(rec.WaitFor(2)) << "AbortAll() in a done callback deadlocked";
  EXPECT_EQ(cancelled_in_cb.load(), 1u);
  EXPECT_EQ(rec.Get()[0].status, kOk);
  EXPECT_EQ(rec.Get()[1].status, -ECANCELED);
  EXPECT_EQ(a.bytes(), PatternBytes(a.size, 0xa0a0a0a0u));
  EXPECT_EQ(b.bytes(), std::vector<uint8_t>(b.size, 0));

  engine->Stall(true);
  FenceRef f2 = timeline.CreateFence();
  ASSERT_EQ(engine->Submit(FillJob(b, 0xc0c0c0c0u, f2, rec.Done(2))), kOk);
  ASSERT_TRUE(WaitForState(*engine, f2->seqno(), "stalled"));
  EXPECT_EQ(engine->AbortAll(/*wait=*/false), 1u);
  ASSERT_EQ(f2->Wait(kDeadline), kOk);
  EXPECT_EQ(f2->error(), -ECANCELED);
  ASSERT_TRUE(rec.WaitFor(3));
  EXPECT_EQ(rec.Get()[2].status, -ECANCELED);
  EXPECT_EQ(b.bytes(), std::vector<uint8_t>(b.size, 0));
}

// Submit() refuses a job without a fence (nothing could ever report it).
TEST(EngineTest, JobWithoutFenceRefused) {
  PageBuffer buf(kPage);
  Recorder rec;
  auto engine = CpuEngine::Create("nofence");
  EXPECT_EQ(engine->Submit(FillJob(buf, 1, nullptr, rec.Done(0))), -EINVAL);
  EXPECT_EQ(engine->Submit(nullptr), -EINVAL);
  EXPECT_STREQ(engine->kind(), "cpu");
  EXPECT_EQ(engine->stats().submitted, 0u);
}

}  // namespace
}  // namespace sharegpu
