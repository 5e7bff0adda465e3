// SPDX-License-Identifier: GPL-2.0
// Asynchronous jobs end to end (docs/hardware.md 1.3, issue 8): with a job held pending on
// the host (x-sharegpu-hold through the host agent), its fence stays unsignalled, implicit
// sync makes another device's job on the shared buffer wait for it and then read its data,
// DMA_BUF_IOCTL_SYNC START waits for it, and a move requested meanwhile completes after it
// with the data intact. Holds are released well inside the driver's command timeout.
//
// The driver schedules jobs with drm_sched: explicit in-fences (sync_files, binary and
// timeline syncobj points, several per submit) are dependencies the submitting thread does
// not wait for; a job that does not complete within the job timeout is aborted on the
// device (JOB_ABORT) and fails with -ETIMEDOUT, the jobs dropped with it with -ECANCELED,
// and the next job runs.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <map>
#include <string>

#include "gtest/gtest.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr size_t kSize = 256 * 1024;
constexpr auto kNotYet = std::chrono::milliseconds(300);  // "still blocked" observation

class AsyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HostAgentAvailable()) GTEST_SKIP() << "no host agent (sgputest.host=1 missing)";
    a_ = FindDev(true);
    b_ = FindDev(false);
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
  }
  void TearDown() override {
    if (held_) Host("release " + a_->pci);
    for (const auto& [name, value] : saved_debugfs_) SetDebugfs(name, value);
  }

  void Host(const std::string& req) {
    std::string reply;
    int ret = HostRequest(req, &reply);
    ASSERT_EQ(ret, 0) << req << ": " << reply;
  }
  void Hold(const std::string& extra = "") {
    Host("hold " + a_->pci + extra);
    held_ = true;
  }
  // A's engine starts no job: unlike a hold, queued jobs have not touched their buffers.
  void Stall() {
    Host("stall " + a_->pci + " on");
    held_ = true;
  }
  void Release() {
    Host("release " + a_->pci);
    held_ = false;
  }
  // One of A's debugfs knobs, restored by TearDown().
  void SetDebugfs(const std::string& name, const std::string& value) {
    const std::string path = a_->debugfs_dir() + "/" + name;
    if (!saved_debugfs_.count(name)) {
      std::string old = ReadFile(path);
      ASSERT_FALSE(old.empty()) << path << " missing";
      saved_debugfs_[name] = old;
    }
    ASSERT_EQ(WriteDebugfs(*a_, name, value), 0) << path;
  }
  // A's drm_sched job timeout in ms.
  void SetJobTimeout(const std::string& ms) { SetDebugfs("sharegpu_job_timeout_ms", ms); }
  // A's buffer x (filled with `old`) imported on B as y.
  void SharedBuffer(ScopedBo* x, ScopedBo* y, uint32_t old) {
    ASSERT_EQ(x->Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
    ASSERT_EQ(Fill(a_->fd, x->handle, 0, kSize, old), 0);
    ScopedFd dmabuf(ExportFd(a_->fd, x->handle));
    ASSERT_GE(dmabuf.get(), 0);
    uint32_t h = 0;
    ASSERT_EQ(ImportFd(b_->fd, dmabuf.get(), &h), 0);
    y->Adopt(b_->fd, h, kSize);
  }
  // B: CHECKSUM of its import y with implicit sync off, so only `in` orders it; kept.
  int SubmitChecksumAfter(uint32_t y, std::vector<drm_sharegpu_sync> in,
                          drm_sharegpu_submit* out) {
    drm_sharegpu_cmd c = ChecksumCmd(y, kSize);
    drm_sharegpu_submit s{};
    s.cmds = reinterpret_cast<uintptr_t>(&c);
    s.num_cmds = 1;
    s.flags = SHAREGPU_SUBMIT_F_NO_IMPLICIT | SHAREGPU_SUBMIT_F_KEEP |
              SHAREGPU_SUBMIT_F_OUT_FENCE;
    s.in_syncs = reinterpret_cast<uintptr_t>(in.data());
    s.num_in_syncs = in.size();
    // on another thread: a driver that waited for the in-fences here would block
    auto submit = std::async(std::launch::async, [&] {
      return Ioctl(b_->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s);
    });
    if (submit.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      ADD_FAILURE() << "SUBMIT blocked on its in-fences";
      return -ETIMEDOUT;
    }
    int ret = submit.get();
    *out = s;
    return ret;
  }
  // A FILL on A's buffer, queued (not waited for); its sync_file.
  int SubmitFill(uint32_t handle, uint32_t pattern) {
    drm_sharegpu_cmd c = FillCmd(handle, kSize, pattern);
    drm_sharegpu_submit out{};
    int ret = Submit(a_->fd, &c, 1, SHAREGPU_SUBMIT_F_OUT_FENCE, &out);
    return ret ? ret : out.out_fence_fd;
  }

  Dev* a_ = nullptr;
  Dev* b_ = nullptr;
  bool held_ = false;
  std::map<std::string, std::string> saved_debugfs_;
};

// An in-sync naming a sync_file.
drm_sharegpu_sync SyncFileIn(int fd) {
  return {static_cast<uint32_t>(fd), SHAREGPU_SYNC_F_SYNC_FILE, 0};
}

// A kept job's result: WAIT_JOB's status and fence error, the first command's result.
struct JobResult {
  int ret = -1;
  uint32_t status = ~0u;
  int32_t error = 1;
  uint64_t result = 0;
};

JobResult WaitKeptJob(int fd, uint64_t id, int64_t timeout_ns = 30000000000ll) {
  JobResult r;
  drm_sharegpu_wait_job w{};
  w.job_id = id;
  w.timeout_ns = timeout_ns;
  w.results = reinterpret_cast<uintptr_t>(&r.result);
  w.num_results = 1;
  r.ret = Ioctl(fd, DRM_IOCTL_SHAREGPU_WAIT_JOB, &w);
  r.status = w.status;
  r.error = w.error;
  return r;
}

// A sync_file's state: 1 signalled, 0 pending, < 0 its error (SYNC_IOC_FILE_INFO).
int SyncFileStatus(int fd) {
  sync_file_info info{};
  if (ioctl(fd, SYNC_IOC_FILE_INFO, &info)) return -1000 - errno;
  return info.status;
}

struct ScopedSyncobj {
  int fd = -1;
  uint32_t handle = 0;
  ScopedSyncobj() = default;
  ScopedSyncobj(const ScopedSyncobj&) = delete;
  ScopedSyncobj& operator=(const ScopedSyncobj&) = delete;
  ~ScopedSyncobj() {
    if (handle) {
      drm_syncobj_destroy d{};
      d.handle = handle;
      Ioctl(fd, DRM_IOCTL_SYNCOBJ_DESTROY, &d);
    }
  }
  int Create(int drm_fd) {
    drm_syncobj_create c{};
    int ret = Ioctl(drm_fd, DRM_IOCTL_SYNCOBJ_CREATE, &c);
    if (!ret) fd = drm_fd, handle = c.handle;
    return ret;
  }
  // The same syncobj on another DRM file (of another device): through a syncobj fd.
  int ImportFrom(const ScopedSyncobj& other, int drm_fd) {
    drm_syncobj_handle h{};
    h.handle = other.handle;
    int ret = Ioctl(other.fd, DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD, &h);
    if (ret) return ret;
    ScopedFd sfd(h.fd);
    drm_syncobj_handle i{};
    i.fd = sfd.get();
    ret = Ioctl(drm_fd, DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE, &i);
    if (!ret) fd = drm_fd, handle = i.handle;
    return ret;
  }
  // The timeline's last signalled point (DRM_IOCTL_SYNCOBJ_QUERY), or ~0 on error.
  uint64_t Signalled() const {
    uint64_t point = ~0ull;
    drm_syncobj_timeline_array q{};
    q.handles = reinterpret_cast<uintptr_t>(&handle);
    q.points = reinterpret_cast<uintptr_t>(&point);
    q.count_handles = 1;
    return Ioctl(fd, DRM_IOCTL_SYNCOBJ_QUERY, &q) ? ~0ull : point;
  }
};

TEST_F(AsyncTest, HeldJobKeepsItsFencePendingUntilReleased) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_NO_FATAL_FAILURE(Hold());
  ScopedFd fence(SubmitFill(x.handle, 0x11223344));
  ASSERT_GE(fence.get(), 0);
  EXPECT_EQ(WaitFenceFd(fence.get(), kNotYet.count()), 0) << "a held job's fence signalled";
  ASSERT_NO_FATAL_FAILURE(Release());
  EXPECT_EQ(WaitFenceFd(fence.get(), 10000), 1);
  EXPECT_EQ(Checksum(a_->fd, x.handle, 0, kSize), PatternCrc(0x11223344, kSize));
}

// Device B's job on its import of A's buffer waits for A's held job (implicit sync through
// the reservation object) and reads A's data, not the old contents.
TEST_F(AsyncTest, ImplicitSyncAcrossDevicesReadsTheHeldWritersData) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_EQ(Fill(a_->fd, x.handle, 0, kSize, 0x0bad0bad), 0);
  ScopedFd dmabuf(ExportFd(a_->fd, x.handle));
  ASSERT_GE(dmabuf.get(), 0);
  uint32_t h = 0;
  ASSERT_EQ(ImportFd(b_->fd, dmabuf.get(), &h), 0);
  ScopedBo y;
  y.Adopt(b_->fd, h, kSize);

  ASSERT_NO_FATAL_FAILURE(Hold());
  ScopedFd fence(SubmitFill(x.handle, 0x600d600d));
  ASSERT_GE(fence.get(), 0);
  auto crc = std::async(std::launch::async, [&] { return Checksum(b_->fd, y.handle, 0, kSize); });
  EXPECT_EQ(crc.wait_for(kNotYet), std::future_status::timeout)
      << "B's job completed while A's write was still pending";
  ASSERT_NO_FATAL_FAILURE(Release());
  EXPECT_EQ(crc.get(), PatternCrc(0x600d600d, kSize));
  EXPECT_EQ(WaitFenceFd(fence.get(), 10000), 1);
}

// DMA_BUF_IOCTL_SYNC START (a CPU read) blocks while a writer is pending, returns after it.
TEST_F(AsyncTest, DmaBufSyncStartWaitsForAHeldWriter) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ScopedFd dmabuf(ExportFd(a_->fd, x.handle));
  ASSERT_GE(dmabuf.get(), 0);
  ASSERT_NO_FATAL_FAILURE(Hold());
  ScopedFd fence(SubmitFill(x.handle, 0x5a5a5a5a));
  ASSERT_GE(fence.get(), 0);
  auto sync = std::async(std::launch::async, [&] {
    return DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
  });
  EXPECT_EQ(sync.wait_for(kNotYet), std::future_status::timeout)
      << "SYNC START returned while the writer was held";
  ASSERT_NO_FATAL_FAILURE(Release());
  EXPECT_EQ(sync.get(), 0);
  uint8_t* p = x.Map();
  ASSERT_NE(p, nullptr);
  uint32_t c = 0;
  ASSERT_EQ(ProbeCrc(p, kSize, &c), 0);
  EXPECT_EQ(c, PatternCrc(0x5a5a5a5a, kSize)) << "CPU read after SYNC START";
  EXPECT_EQ(DmaBufSync(dmabuf.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ), 0);
}

// A move requested while the job that writes the buffer is held completes after it; the
// job's data is in the new placement.
TEST_F(AsyncTest, MoveRequestedWhileAJobIsHeldKeepsItsData) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM), 0);
  ASSERT_EQ(BoMove(a_->fd, x.handle, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_NO_FATAL_FAILURE(Hold());
  ScopedFd fence(SubmitFill(x.handle, 0x7e57da7a));
  ASSERT_GE(fence.get(), 0);
  auto move = std::async(std::launch::async,
                         [&] { return BoMove(a_->fd, x.handle, SHAREGPU_DOMAIN_SYSTEM); });
  EXPECT_EQ(move.wait_for(kNotYet), std::future_status::timeout)
      << "the move completed while the job writing the buffer was held";
  ASSERT_NO_FATAL_FAILURE(Release());
  EXPECT_EQ(move.get(), 0);
  drm_sharegpu_bo_info info{};
  ASSERT_EQ(BoInfo(a_->fd, x.handle, &info), 0);
  EXPECT_EQ(info.vram_offset, kNoOffset) << "not in system memory after the move";
  EXPECT_EQ(Checksum(a_->fd, x.handle, 0, kSize), PatternCrc(0x7e57da7a, kSize));
}

// A lost completion interrupt does not hang the job's waiter, and the driver's ring poll
// collects the completion (debugfs ring_poll_completions counts it). The waiter may see the
// fence first through .signaled (LAST_SEQNO) when the device was done before it slept; the
// job stays on the ring until the poll, so the poll's count is awaited before anything else
// (the Checksum below is a command whose interrupt would process the ring).
TEST_F(AsyncTest, LostInterruptDoesNotHangAWaiter) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  // A job waited for first: A's engine runs jobs in order, so the earlier tests' jobs (one
  // released just before) have completed and raised their interrupts, and the one dropped is
  // this test's (else an earlier job's was, and this job's interrupt found the completion).
  ASSERT_EQ(Fill(a_->fd, x.handle, 0, kSize, 0), 0);
  const int64_t polled = Counter(*a_, "ring_poll_completions");
  ASSERT_GE(polled, 0) << "debugfs counter ring_poll_completions missing";
  ASSERT_NO_FATAL_FAILURE(Host("drop-irq " + a_->pci));
  const int64_t irqs = Counter(*a_, "irq_cmd");
  ScopedFd fence(SubmitFill(x.handle, 0x10571e57));
  ASSERT_GE(fence.get(), 0);
  EXPECT_EQ(WaitFenceFd(fence.get(), 10000), 1) << "the job's fence hung after a lost interrupt";
  EXPECT_TRUE(WaitUntil([&] { return Counter(*a_, "ring_poll_completions") > polled; }, 10000))
      << "the ring poll did not collect the completion of the job whose interrupt was lost";
  EXPECT_EQ(Counter(*a_, "irq_cmd"), irqs) << "the job's interrupt was not dropped";
  EXPECT_EQ(Checksum(a_->fd, x.handle, 0, kSize), PatternCrc(0x10571e57, kSize));
}

// The job fence's .signaled reads LAST_SEQNO: with the job's interrupt lost, the ring poll
// off and no job timeout, WAIT_JOB still sees the job complete, with its result collected.
// Without .signaled nothing would process the ring and WAIT_JOB would time out.
TEST_F(AsyncTest, LostInterruptSeenThroughLastSeqno) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_EQ(Fill(a_->fd, x.handle, 0, kSize, 0x5e9a0001), 0);
  ASSERT_NO_FATAL_FAILURE(SetJobTimeout("0"));
  ASSERT_NO_FATAL_FAILURE(SetDebugfs("sharegpu_ring_poll_ms", "0"));
  const int64_t polled = Counter(*a_, "ring_poll_completions");
  const int64_t seen = Counter(*a_, "fence_seqno_signals");
  ASSERT_GE(seen, 0) << "debugfs counter fence_seqno_signals missing";
  ASSERT_NO_FATAL_FAILURE(Host("drop-irq " + a_->pci));
  const int64_t irqs = Counter(*a_, "irq_cmd");

  drm_sharegpu_cmd c = ChecksumCmd(x.handle, kSize);
  drm_sharegpu_submit s{};
  ASSERT_EQ(Submit(a_->fd, &c, 1, SHAREGPU_SUBMIT_F_KEEP, &s), 0);
  JobResult r = WaitKeptJob(a_->fd, s.job_id, 10000000000ll);
  ASSERT_EQ(r.ret, 0) << "WAIT_JOB did not see the job complete after a lost interrupt";
  EXPECT_EQ(r.status, 0u);
  EXPECT_EQ(r.error, 0);
  EXPECT_EQ(r.result, PatternCrc(0x5e9a0001, kSize)) << "the job's result was not collected";
  EXPECT_EQ(Counter(*a_, "irq_cmd"), irqs) << "the job's interrupt was not dropped";
  EXPECT_EQ(Counter(*a_, "ring_poll_completions"), polled) << "the ring poll ran";
  EXPECT_GT(Counter(*a_, "fence_seqno_signals"), seen);
}

// SUBMIT_F_WAIT returns a job's results only once they are collected from the ring. Here the
// job's interrupt is lost and the ring poll is off, so what ends the wait is another thread's
// WAIT_JOB of the same job: its .signaled read of LAST_SEQNO signals the job's fence before
// anything processed the ring. The waiting SUBMIT must still return the CHECKSUM's result
// (before the fix it returned success with a result of 0).
TEST_F(AsyncTest, SubmitWaitCollectsResultsWhenAnotherWaiterSawTheFence) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_EQ(Fill(a_->fd, x.handle, 0, kSize, 0x5e9a0003), 0);
  // a file's job ids are consecutive: the next SUBMIT's is this one's + 1
  drm_sharegpu_cmd same = FillCmd(x.handle, kSize, 0x5e9a0003);
  drm_sharegpu_submit last{};
  ASSERT_EQ(Submit(a_->fd, &same, 1, SHAREGPU_SUBMIT_F_WAIT, &last), 0);
  const uint64_t next = last.job_id + 1;
  ASSERT_NO_FATAL_FAILURE(SetJobTimeout("0"));
  ASSERT_NO_FATAL_FAILURE(SetDebugfs("sharegpu_ring_poll_ms", "0"));
  const int64_t seen = Counter(*a_, "fence_seqno_signals");
  ASSERT_NO_FATAL_FAILURE(Host("drop-irq " + a_->pci));
  const int64_t irqs = Counter(*a_, "irq_cmd");

  auto crc = std::async(std::launch::async, [&] { return Checksum(a_->fd, x.handle, 0, kSize); });
  // WAIT_JOB answers -EINVAL for an id not issued yet: asked again until the SUBMIT made it
  int waited = -EINVAL;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (waited == -EINVAL && std::chrono::steady_clock::now() < deadline) {
    waited = WaitJob(a_->fd, next, 10000000000ll);
  }
  ASSERT_EQ(waited, 0) << "WAIT_JOB of the SUBMIT's job";
  ASSERT_EQ(crc.wait_for(std::chrono::seconds(20)), std::future_status::ready)
      << "SUBMIT_F_WAIT still waits after its fence was seen";
  EXPECT_EQ(crc.get(), PatternCrc(0x5e9a0003, kSize)) << "the job's result was not collected";
  EXPECT_EQ(Counter(*a_, "irq_cmd"), irqs) << "the job's interrupt was not dropped";
  EXPECT_GT(Counter(*a_, "fence_seqno_signals"), seen) << "the fence was not seen through LAST_SEQNO";
}

// Explicit sync with a sync_file: B's job on A's buffer, implicit sync off, runs only after
// A's job it names, and reads A's data. A's engine is stalled, so A's job has not written
// yet: without the dependency B would read the old contents.
TEST_F(AsyncTest, SyncFileInFenceOrdersAnotherDevicesJob) {
  ScopedBo x, y;
  ASSERT_NO_FATAL_FAILURE(SharedBuffer(&x, &y, 0x0bad0bad));
  ASSERT_NO_FATAL_FAILURE(Stall());
  ScopedFd a_fence(SubmitFill(x.handle, 0x600d600d));
  ASSERT_GE(a_fence.get(), 0);
  drm_sharegpu_submit b{};
  ASSERT_EQ(SubmitChecksumAfter(y.handle, {SyncFileIn(a_fence.get())}, &b), 0);
  ScopedFd b_fence(b.out_fence_fd);
  EXPECT_EQ(WaitFenceFd(b_fence.get(), kNotYet.count()), 0)
      << "B's job completed before the job its in-fence names";
  ASSERT_NO_FATAL_FAILURE(Release());
  JobResult r = WaitKeptJob(b_->fd, b.job_id);
  ASSERT_EQ(r.ret, 0);
  EXPECT_EQ(r.status, 0u);
  EXPECT_EQ(r.result, PatternCrc(0x600d600d, kSize)) << "B read the buffer before A wrote it";
}

// Explicit sync with a timeline syncobj shared between the devices' files: A's job signals
// point 3, B's job waits for point 3.
TEST_F(AsyncTest, TimelineSyncobjPointOrdersAnotherDevicesJob) {
  ScopedBo x, y;
  ASSERT_NO_FATAL_FAILURE(SharedBuffer(&x, &y, 0x0bad0bad));
  ScopedSyncobj on_a, on_b;
  ASSERT_EQ(on_a.Create(a_->fd), 0);
  ASSERT_EQ(on_b.ImportFrom(on_a, b_->fd), 0);
  ASSERT_NO_FATAL_FAILURE(Stall());

  drm_sharegpu_cmd c = FillCmd(x.handle, kSize, 0x71e71e00);
  drm_sharegpu_sync point3{on_a.handle, 0, 3};
  drm_sharegpu_submit s{};
  s.cmds = reinterpret_cast<uintptr_t>(&c);
  s.num_cmds = 1;
  s.out_syncs = reinterpret_cast<uintptr_t>(&point3);
  s.num_out_syncs = 1;
  ASSERT_EQ(Ioctl(a_->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s), 0);
  EXPECT_EQ(on_a.Signalled(), 0u) << "point 3 signalled while A's job is stalled";

  drm_sharegpu_submit b{};
  ASSERT_EQ(SubmitChecksumAfter(y.handle, {{on_b.handle, 0, 3}}, &b), 0);
  ScopedFd b_fence(b.out_fence_fd);
  EXPECT_EQ(WaitFenceFd(b_fence.get(), kNotYet.count()), 0)
      << "B's job completed before timeline point 3";
  ASSERT_NO_FATAL_FAILURE(Release());
  JobResult r = WaitKeptJob(b_->fd, b.job_id);
  ASSERT_EQ(r.ret, 0);
  EXPECT_EQ(r.result, PatternCrc(0x71e71e00, kSize));
  EXPECT_EQ(on_b.Signalled(), 3u);
}

// Several in-fences in one submit: the job waits for every one (here A's job and a
// sw_sync fence, signalled in that order).
TEST_F(AsyncTest, EveryInFenceOfASubmitIsAwaited) {
  ScopedFd timeline(SwSyncTimeline());
  ASSERT_GE(timeline.get(), 0) << "sw_sync (CONFIG_SW_SYNC, debugfs) missing";
  ScopedFd sw_fence(SwSyncFence(timeline.get(), 1));
  ASSERT_GE(sw_fence.get(), 0);
  ScopedBo x, y;
  ASSERT_NO_FATAL_FAILURE(SharedBuffer(&x, &y, 0x0bad0bad));
  ASSERT_NO_FATAL_FAILURE(Stall());
  ScopedFd a_fence(SubmitFill(x.handle, 0x5eed5eed));
  ASSERT_GE(a_fence.get(), 0);
  drm_sharegpu_submit b{};
  ASSERT_EQ(SubmitChecksumAfter(y.handle, {SyncFileIn(a_fence.get()), SyncFileIn(sw_fence.get())},
                                &b),
            0);
  ScopedFd b_fence(b.out_fence_fd);
  ASSERT_NO_FATAL_FAILURE(Release());
  EXPECT_EQ(WaitFenceFd(a_fence.get(), 10000), 1);
  EXPECT_EQ(WaitFenceFd(b_fence.get(), kNotYet.count()), 0)
      << "B's job ran although its sw_sync in-fence is unsignalled";
  ASSERT_EQ(SwSyncInc(timeline.get(), 1), 0);
  JobResult r = WaitKeptJob(b_->fd, b.job_id);
  ASSERT_EQ(r.ret, 0);
  EXPECT_EQ(r.result, PatternCrc(0x5eed5eed, kSize));
}

// Recovery from a hung job: with A's engine stalled, the first job times out and is
// aborted on the device (-ETIMEDOUT), the job queued behind it is dropped with it
// (-ECANCELED), neither touched the buffer, and the next job runs.
TEST_F(AsyncTest, HungJobTimesOutAndTheNextJobRuns) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_EQ(Fill(a_->fd, x.handle, 0, kSize, 0x0bad0bad), 0);
  const int64_t timeouts = Counter(*a_, "job_timeouts");
  ASSERT_GE(timeouts, 0) << "debugfs counter job_timeouts missing";
  ASSERT_NO_FATAL_FAILURE(SetJobTimeout("1000"));
  ASSERT_NO_FATAL_FAILURE(Stall());

  drm_sharegpu_submit first{}, second{};
  drm_sharegpu_cmd c1 = FillCmd(x.handle, kSize, 0x11111111);
  drm_sharegpu_cmd c2 = FillCmd(x.handle, kSize, 0x22222222);
  const uint32_t flags = SHAREGPU_SUBMIT_F_KEEP | SHAREGPU_SUBMIT_F_OUT_FENCE;
  ASSERT_EQ(Submit(a_->fd, &c1, 1, flags, &first), 0);
  ScopedFd f1(first.out_fence_fd);
  ASSERT_EQ(Submit(a_->fd, &c2, 1, flags, &second), 0);
  ScopedFd f2(second.out_fence_fd);

  ASSERT_EQ(WaitFenceFd(f1.get(), 60000), 1) << "the hung job never timed out";
  EXPECT_EQ(SyncFileStatus(f1.get()), -ETIMEDOUT);
  ASSERT_EQ(WaitFenceFd(f2.get(), 10000), 1);
  EXPECT_EQ(SyncFileStatus(f2.get()), -ECANCELED);
  JobResult r1 = WaitKeptJob(a_->fd, first.job_id), r2 = WaitKeptJob(a_->fd, second.job_id);
  EXPECT_EQ(r1.ret, 0);
  EXPECT_EQ(r1.error, -ETIMEDOUT);
  EXPECT_EQ(r2.error, -ECANCELED);
  EXPECT_EQ(r2.status, 11u) << "device status CANCELLED (docs/hardware.md, section 10)";
  EXPECT_EQ(Counter(*a_, "job_timeouts"), timeouts + 1);
  held_ = false;  // the abort ended the stall

  EXPECT_EQ(Checksum(a_->fd, x.handle, 0, kSize), PatternCrc(0x0bad0bad, kSize))
      << "an aborted job that never started changed the buffer";
  EXPECT_EQ(Fill(a_->fd, x.handle, 0, kSize, 0x33333333), 0) << "no job runs after recovery";
  EXPECT_EQ(Checksum(a_->fd, x.handle, 0, kSize), PatternCrc(0x33333333, kSize));
}

// A job whose completion is held past the timeout has run: the abort releases it, its data
// is in the buffer, and its fence still says it timed out.
TEST_F(AsyncTest, HeldJobThatTimesOutKeepsWhatItWrote) {
  ScopedBo x;
  ASSERT_EQ(x.Create(a_->fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_NO_FATAL_FAILURE(SetJobTimeout("1000"));
  ASSERT_NO_FATAL_FAILURE(Hold());
  ScopedFd fence(SubmitFill(x.handle, 0x44444444));
  ASSERT_GE(fence.get(), 0);
  ASSERT_EQ(WaitFenceFd(fence.get(), 60000), 1) << "the held job never timed out";
  EXPECT_EQ(SyncFileStatus(fence.get()), -ETIMEDOUT);
  held_ = false;  // the abort ended the hold
  EXPECT_EQ(Checksum(a_->fd, x.handle, 0, kSize), PatternCrc(0x44444444, kSize));
}

}  // namespace
