// SPDX-License-Identifier: GPL-2.0
// Limits (docs/user-guide.md "Limits"; guest-driver sgpu_job.c, sgpu_gem.c, sgpu_ttm.c,
// sgpu_prime.c): every per-file and per-device limit of the driver returns its documented
// error when exceeded and works again once the objects are released, and creating and dropping
// objects many more times than any limit leaves the driver's counters (fdinfo
// drm-sharegpu-*, debugfs objects / tt_pages_all / jobs_alive_all) where they started.
//
// Limits are module parameters (/sys/module/sharegpu/parameters); tests that would need
// thousands of objects lower them for their duration (ScopedParam restores them) and read
// the defaults separately.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr int kDeadlineMs = 30000;  // failure detector for asynchronous releases

std::string ParamPath(const std::string& name) {
  return "/sys/module/sharegpu/parameters/" + name;
}

int64_t Param(const std::string& name) {
  std::string s = ReadFile(ParamPath(name));
  return s.empty() ? -1 : strtoll(s.c_str(), nullptr, 10);
}

int WriteParam(const std::string& name, int64_t value) {
  int fd = open(ParamPath(name).c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  std::string v = std::to_string(value) + "\n";
  int ret = write(fd, v.data(), v.size()) == static_cast<ssize_t>(v.size()) ? 0 : -errno;
  close(fd);
  return ret;
}

// Sets a module parameter for the scope of a test.
struct ScopedParam {
  std::string name;
  int64_t old = -1;
  int status = -EINVAL;
  ScopedParam(const std::string& n, int64_t value) : name(n), old(Param(n)) {
    if (old >= 0) status = WriteParam(name, value);
  }
  ~ScopedParam() {
    if (old >= 0) WriteParam(name, old);
  }
};

// /proc/self/fdinfo/<fd> "key:\tvalue" (-1 when missing).
int64_t FdInfo(int fd, const std::string& key) {
  std::string s = ReadFile("/proc/self/fdinfo/" + std::to_string(fd));
  std::string want = key + ":";
  size_t pos = 0;
  while (pos < s.size()) {
    size_t eol = s.find('\n', pos);
    if (eol == std::string::npos) eol = s.size();
    if (s.compare(pos, want.size(), want) == 0)
      return strtoll(s.c_str() + pos + want.size(), nullptr, 10);
    pos = eol + 1;
  }
  return -1;
}

// SUBMIT without sgt::Ioctl's EAGAIN retry (the in-flight limit answers -EAGAIN).
int RawSubmit(int fd, drm_sharegpu_cmd* cmds, uint32_t n, uint32_t flags,
              drm_sharegpu_submit* out = nullptr, int in_fence_fd = -1) {
  drm_sharegpu_submit s{};
  s.cmds = reinterpret_cast<uintptr_t>(cmds);
  s.num_cmds = n;
  s.flags = flags;
  s.in_fence_fd = in_fence_fd;
  s.out_fence_fd = -1;
  int ret;
  do {
    ret = ioctl(fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s);
  } while (ret == -1 && errno == EINTR);
  if (out) *out = s;
  return ret == -1 ? -errno : 0;
}

int SyncobjCreate(int fd, uint32_t* h) {
  drm_syncobj_create c{};
  int ret = Ioctl(fd, DRM_IOCTL_SYNCOBJ_CREATE, &c);
  if (!ret) *h = c.handle;
  return ret;
}

int SyncobjDestroy(int fd, uint32_t h) {
  drm_syncobj_destroy d{};
  d.handle = h;
  return Ioctl(fd, DRM_IOCTL_SYNCOBJ_DESTROY, &d);
}

// The syncobj's fence as a sync_file fd, or -errno.
int SyncobjExportSyncFile(int fd, uint32_t h) {
  drm_syncobj_handle a{};
  a.handle = h;
  a.flags = DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE;
  a.fd = -1;
  int ret = Ioctl(fd, DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD, &a);
  return ret ? ret : a.fd;
}

// A vgem dumb buffer exported as a dma-buf fd (the vgem handle is closed again).
int VgemDmaBuf(int vgem, uint32_t size) {
  drm_mode_create_dumb cd{};
  cd.width = size / 4;
  cd.height = 1;
  cd.bpp = 32;
  int ret = Ioctl(vgem, DRM_IOCTL_MODE_CREATE_DUMB, &cd);
  if (ret) return ret;
  int fd = ExportFd(vgem, cd.handle);
  GemClose(vgem, cd.handle);
  return fd;
}

// Driver-wide numbers that every object or job a test creates moves, and that must come back.
struct Snapshot {
  int64_t objects[2] = {0, 0};
  int64_t tt_pages_all = 0;
  int64_t jobs_alive_all = 0;

  static Snapshot Take() {
    Snapshot s;
    auto& devs = Devices();
    for (size_t i = 0; i < devs.size() && i < 2; i++) s.objects[i] = Counter(devs[i], "objects");
    if (!devs.empty()) {
      s.tt_pages_all = Counter(devs[0], "tt_pages_all");
      s.jobs_alive_all = Counter(devs[0], "jobs_alive_all");
    }
    return s;
  }
  // Nothing more alive than in *base (releases by other code may make it less).
  bool AtMost(const Snapshot& base) const {
    return objects[0] <= base.objects[0] && objects[1] <= base.objects[1] &&
           tt_pages_all <= base.tt_pages_all && jobs_alive_all <= base.jobs_alive_all;
  }
  std::string Str() const {
    char b[160];
    snprintf(b, sizeof(b), "objects %lld/%lld tt_pages_all %lld jobs_alive_all %lld",
             (long long)objects[0], (long long)objects[1], (long long)tt_pages_all,
             (long long)jobs_alive_all);
    return b;
  }
};

// Objects a test dropped go away: synchronously when idle, otherwise once their last job has
// signalled (the ring's job reference is dropped by the interrupt handler after it signals,
// a busy BO's destruction is TTM's delayed-delete work), hence the deadline.
void ExpectBackTo(const Snapshot& base) {
  Snapshot now;
  bool back = WaitUntil(
      [&] {
        now = Snapshot::Take();
        return now.AtMost(base);
      },
      kDeadlineMs);
  EXPECT_TRUE(back) << "leak: before " << base.Str() << ", after " << now.Str();
}

class LimitsTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    ASSERT_GE(Devices().size(), 2u) << "two sharegpu devices expected";
    d_ = &Devices()[GetParam()];
    other_ = &Devices()[GetParam() == 0 ? 1 : 0];
    ASSERT_GE(Counter(*d_, "objects"), 0) << "debugfs limit counters missing";
    ASSERT_GE(Param("max_objects"), 0) << "module parameters missing";
    base_ = Snapshot::Take();
  }
  void TearDown() override { ExpectBackTo(base_); }
  Dev* d_ = nullptr;
  Dev* other_ = nullptr;
  Snapshot base_;
};

TEST_P(LimitsTest, DefaultsAreTheDocumentedOnes) {
  EXPECT_EQ(Param("max_kept_jobs"), 256);
  EXPECT_EQ(Param("max_active_jobs"), 64);
  EXPECT_EQ(Param("max_objects"), 16384);
  EXPECT_EQ(Param("sys_mem_limit_mb"), 0) << "0 = TTM's page limit";
  // TTM's page limit is half of the RAM it saw at init
  std::string mi = ReadFile("/proc/meminfo");
  long long total_kb = 0;
  ASSERT_EQ(sscanf(mi.c_str(), "MemTotal: %lld kB", &total_kb), 1);
  int64_t limit_kb = Counter(*d_, "tt_pages_limit") * 4;
  EXPECT_GT(limit_kb, total_kb / 2 * 98 / 100) << "budget below half of RAM";
  EXPECT_LT(limit_kb, total_kb / 2 * 102 / 100) << "budget above half of RAM";
  EXPECT_EQ(SHAREGPU_MAX_CMDS, 64);
}

// SUBMIT_F_KEEP records: max_kept_jobs per file, then -EBUSY until WAIT_JOB or close.
TEST_P(LimitsTest, KeptJobRecordsAreCappedPerFile) {
  const int64_t max = Param("max_kept_jobs");
  ASSERT_GT(max, 0);
  ScopedFd f(Reopen(*d_));
  ASSERT_GE(f.get(), 0);
  uint32_t h = 0;
  ASSERT_EQ(BoCreateFd(f.get(), 4096, SHAREGPU_DOMAIN_VRAM, &h), 0);
  std::vector<uint64_t> ids;
  for (int64_t i = 0; i < max; i++) {
    drm_sharegpu_cmd c = FillCmd(h, 4096, 0x1000 + i);
    drm_sharegpu_submit s{};
    ASSERT_EQ(Submit(f.get(), &c, 1, SHAREGPU_SUBMIT_F_KEEP | SHAREGPU_SUBMIT_F_WAIT, &s), 0)
        << "kept job " << i;
    ids.push_back(s.job_id);
  }
  EXPECT_EQ(FdInfo(f.get(), "drm-sharegpu-jobs-kept"), max);
  const int64_t hits = Counter(*d_, "limit_kept");

  drm_sharegpu_cmd c = FillCmd(h, 4096, 0xbadbad00);
  EXPECT_EQ(Submit(f.get(), &c, 1, SHAREGPU_SUBMIT_F_KEEP | SHAREGPU_SUBMIT_F_WAIT), -EBUSY)
      << "record " << max + 1 << " accepted";
  EXPECT_EQ(Counter(*d_, "limit_kept"), hits + 1);
  EXPECT_EQ(Checksum(f.get(), h, 0, 4096), PatternCrc(0x1000 + max - 1, 4096))
      << "the refused job ran";
  // jobs without a record still run; other files have their own budget
  EXPECT_EQ(Fill(f.get(), h, 0, 4096, 0x2222), 0);
  {
    ScopedFd g(Reopen(*d_));
    ASSERT_GE(g.get(), 0);
    uint32_t gh = 0;
    ASSERT_EQ(BoCreateFd(g.get(), 4096, SHAREGPU_DOMAIN_VRAM, &gh), 0);
    EXPECT_EQ(Fill(g.get(), gh, 0, 4096, 1, SHAREGPU_SUBMIT_F_KEEP), 0) << "limit not per file";
    EXPECT_EQ(FdInfo(g.get(), "drm-sharegpu-jobs-kept"), 1);
  }
  // WAIT_JOB releases a record, and the limit admits one more
  uint32_t status = 99;
  ASSERT_EQ(WaitJob(f.get(), ids[0], 1000000000ll, &status), 0);
  EXPECT_EQ(status, 0u);
  EXPECT_EQ(FdInfo(f.get(), "drm-sharegpu-jobs-kept"), max - 1);
  EXPECT_EQ(Fill(f.get(), h, 0, 4096, 3, SHAREGPU_SUBMIT_F_KEEP), 0);
  EXPECT_EQ(Fill(f.get(), h, 0, 4096, 4, SHAREGPU_SUBMIT_F_KEEP), -EBUSY);
  // closing the file with max records outstanding releases every job (TearDown checks)
  f.reset();
}

// Jobs in flight (from SUBMIT until the job signals, in-fence waits included):
// max_active_jobs per file, then -EAGAIN until one completes.
TEST_P(LimitsTest, JobsInFlightAreCappedPerFile) {
  const int64_t max = Param("max_active_jobs");
  ASSERT_GT(max, 0);
  ASSERT_LE(max, 256) << "would need too many threads";
  ScopedFd f(Reopen(*d_));
  ASSERT_GE(f.get(), 0);
  uint32_t h = 0;
  ASSERT_EQ(BoCreateFd(f.get(), 4096 * max, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM, &h), 0);
  ScopedFd tl(SwSyncTimeline());
  ASSERT_GE(tl.get(), 0) << "sw_sync unavailable";
  ScopedFd gate(SwSyncFence(tl.get(), 1));
  ASSERT_GE(gate.get(), 0);

  // max jobs, each waiting for the gate inside SUBMIT
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int64_t i = 0; i < max; i++) {
    threads.emplace_back([&, i] {
      drm_sharegpu_cmd c = FillCmd(h, 4096, 0x5000 + i);
      c.dst_offset = 4096 * i;
      if (Submit(f.get(), &c, 1, SHAREGPU_SUBMIT_F_IN_FENCE, nullptr, gate.get())) errors++;
    });
  }
  bool all_waiting = WaitUntil(
      [&] { return FdInfo(f.get(), "drm-sharegpu-jobs-active") == max || errors > 0; },
      kDeadlineMs);
  const int64_t hits = Counter(*d_, "limit_active");
  int refused = -1, refused_wait = -1;
  if (all_waiting && errors == 0) {
    drm_sharegpu_cmd c = FillCmd(h, 4096, 0xbadbad00);
    refused = RawSubmit(f.get(), &c, 1, 0);
    refused_wait = RawSubmit(f.get(), &c, 1, SHAREGPU_SUBMIT_F_WAIT | SHAREGPU_SUBMIT_F_KEEP);
  }
  // another file is not limited by this one
  ScopedFd g(Reopen(*d_));
  ASSERT_GE(g.get(), 0);
  uint32_t gh = 0;
  EXPECT_EQ(BoCreateFd(g.get(), 4096, SHAREGPU_DOMAIN_VRAM, &gh), 0);
  EXPECT_EQ(Fill(g.get(), gh, 0, 4096, 7), 0) << "limit not per file";

  // open the gate (before any ASSERT: the threads must finish)
  EXPECT_EQ(SwSyncInc(tl.get(), 1), 0);
  for (auto& t : threads) t.join();
  ASSERT_TRUE(all_waiting) << "jobs-active never reached " << max << " (now "
                           << FdInfo(f.get(), "drm-sharegpu-jobs-active") << ")";
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(refused, -EAGAIN) << "job " << max + 1 << " in flight accepted";
  EXPECT_EQ(refused_wait, -EAGAIN);
  EXPECT_EQ(Counter(*d_, "limit_active"), hits + 2);

  ASSERT_EQ(WaitBo(f.get(), h, 10000000000ll), 0);
  // the count drops before the fence signals: exact once the BO is idle
  EXPECT_EQ(FdInfo(f.get(), "drm-sharegpu-jobs-active"), 0);
  EXPECT_EQ(FdInfo(f.get(), "drm-sharegpu-jobs-kept"), 0) << "a refused KEEP left a record";
  for (int64_t i = 0; i < max; i++)
    EXPECT_EQ(Checksum(f.get(), h, 4096 * i, 4096), PatternCrc(0x5000 + i, 4096)) << i;
  drm_sharegpu_cmd c = FillCmd(h, 4096, 8);
  EXPECT_EQ(RawSubmit(f.get(), &c, 1, SHAREGPU_SUBMIT_F_WAIT), 0) << "limit stuck";
}

// A job names at most SHAREGPU_MAX_CMDS commands, so at most 128 distinct BOs.
TEST_P(LimitsTest, AJobReferencesAtMost128Bos) {
  ScopedFd f(Reopen(*d_));
  ASSERT_GE(f.get(), 0);
  std::vector<uint32_t> bos(2 * SHAREGPU_MAX_CMDS);
  for (auto& b : bos) ASSERT_EQ(BoCreateFd(f.get(), 4096, SHAREGPU_DOMAIN_SYSTEM, &b), 0);
  std::vector<drm_sharegpu_cmd> cmds;
  for (uint32_t i = 0; i < SHAREGPU_MAX_CMDS; i++) {
    ASSERT_EQ(Fill(f.get(), bos[2 * i + 1], 0, 4096, 0x7700 + i), 0);
    drm_sharegpu_cmd c{};
    c.op = SHAREGPU_CMD_COPY;
    c.dst_handle = bos[2 * i];
    c.src_handle = bos[2 * i + 1];
    c.size = 4096;
    cmds.push_back(c);
  }
  EXPECT_EQ(Submit(f.get(), cmds.data(), cmds.size(), SHAREGPU_SUBMIT_F_WAIT), 0);
  EXPECT_EQ(Checksum(f.get(), bos[2 * 40], 0, 4096), PatternCrc(0x7700 + 40, 4096));
  cmds.push_back(cmds[0]);
  EXPECT_EQ(Submit(f.get(), cmds.data(), cmds.size(), SHAREGPU_SUBMIT_F_WAIT), -EINVAL);
  EXPECT_EQ(FdInfo(f.get(), "drm-sharegpu-objects"), 128);
}

// Live BOs + imports per device: max_objects, then -ENOSPC for BO_CREATE and PRIME imports
// (p2p and foreign) until one is released. (Dumb buffers share BO_CREATE's path; their ioctl
// is not allowed on render nodes.)
TEST_P(LimitsTest, ObjectsPerDeviceAreCapped) {
  ScopedFd f(Reopen(*d_));
  ASSERT_GE(f.get(), 0);
  // things to import, made before the limit is lowered (it is one parameter for all devices)
  ScopedBo theirs;
  ASSERT_EQ(theirs.Create(other_->fd, 4096, SHAREGPU_DOMAIN_VRAM), 0);
  ScopedFd p2p_buf(ExportFd(other_->fd, theirs.handle));
  ASSERT_GE(p2p_buf.get(), 0);
  ScopedFd vgem(OpenVgem());
  ASSERT_GE(vgem.get(), 0) << "no vgem";
  ScopedFd vgem_buf(VgemDmaBuf(vgem.get(), 4096));
  ASSERT_GE(vgem_buf.get(), 0);

  const int64_t n0 = Counter(*d_, "objects");
  const int64_t limit = n0 + 4;
  ScopedParam p("max_objects", limit);
  ASSERT_EQ(p.status, 0);
  const int64_t hits = Counter(*d_, "limit_objects");
  std::vector<uint32_t> hs;
  int err = 0;
  for (int i = 0; i < 64 && !err; i++) {
    uint32_t h = 0;
    err = BoCreateFd(f.get(), 4096, SHAREGPU_DOMAIN_VRAM, &h);
    if (!err) hs.push_back(h);
  }
  EXPECT_EQ(err, -ENOSPC) << "no limit after " << hs.size() << " BOs";
  EXPECT_GE(hs.size(), 4u);
  EXPECT_LE(Counter(*d_, "objects"), limit);
  uint32_t ih = 0;
  EXPECT_EQ(ImportFd(f.get(), p2p_buf.get(), &ih), -ENOSPC) << "p2p import";
  EXPECT_EQ(ImportFd(f.get(), vgem_buf.get(), &ih), -ENOSPC) << "foreign import";
  EXPECT_GE(Counter(*d_, "limit_objects"), hits + 3);
  EXPECT_EQ(FdInfo(f.get(), "drm-sharegpu-objects"), static_cast<int64_t>(hs.size()));

  // every release makes room again, for each kind of object; an object lives until the last
  // job that used it is freed (drm_sched's free_job, shortly after its fence signals)
  auto room = [&] { return WaitUntil([&] { return Counter(*d_, "objects") < limit; }, kDeadlineMs); };
  ASSERT_FALSE(hs.empty());
  GemClose(f.get(), hs.back());
  hs.pop_back();
  ASSERT_TRUE(room());
  ASSERT_EQ(ImportFd(f.get(), vgem_buf.get(), &ih), 0);
  EXPECT_EQ(Fill(f.get(), ih, 0, 4096, 0x600d), 0) << "foreign import unusable";
  GemClose(f.get(), ih);
  ASSERT_TRUE(room());
  ASSERT_EQ(ImportFd(f.get(), p2p_buf.get(), &ih), 0);
  EXPECT_EQ(Fill(f.get(), ih, 0, 4096, 0x600d), 0) << "p2p import unusable";
  GemClose(f.get(), ih);
  ASSERT_TRUE(room());
  uint32_t h = 0;
  ASSERT_EQ(BoCreateFd(f.get(), 4096, SHAREGPU_DOMAIN_VRAM, &h), 0);
  hs.push_back(h);
  for (uint32_t x : hs) GemClose(f.get(), x);
}

// Guest RAM for BO pages, all devices: sys_mem_limit_mb (default: half of RAM), then -ENOMEM
// for whatever needs pages (BO_CREATE in SYSTEM, a move to SYSTEM); VRAM placements do not count.
TEST_P(LimitsTest, GuestMemoryBudgetIsEnforced) {
  constexpr uint64_t kBo = 4 << 20;
  ScopedFd f(Reopen(*d_));
  ASSERT_GE(f.get(), 0);
  uint32_t vram_bo = 0;
  ASSERT_EQ(BoCreateFd(f.get(), 1 << 20, SHAREGPU_DOMAIN_VRAM, &vram_bo), 0);

  const int64_t all = Counter(*d_, "tt_pages_all");
  ASSERT_GE(all, 0);
  const int64_t limit_mb = (all * 4096 + (1 << 20) - 1) / (1 << 20) + 16;
  ScopedParam p("sys_mem_limit_mb", limit_mb);
  ASSERT_EQ(p.status, 0);
  ASSERT_EQ(Counter(*d_, "tt_pages_limit"), limit_mb * 256);
  const int64_t hits = Counter(*d_, "limit_mem");

  std::vector<uint32_t> hs;
  int err = 0;
  for (int i = 0; i < 32 && !err; i++) {
    uint32_t h = 0;
    err = BoCreateFd(f.get(), kBo, SHAREGPU_DOMAIN_SYSTEM, &h);
    if (!err) hs.push_back(h);
  }
  EXPECT_EQ(err, -ENOMEM) << "no budget after " << hs.size() << " x 4 MiB";
  EXPECT_GE(hs.size(), 4u) << "16 MiB of budget did not fit 4 x 4 MiB";
  EXPECT_LE(Counter(*d_, "tt_pages_all"), limit_mb * 256) << "over budget";
  EXPECT_GT(Counter(*d_, "limit_mem"), hits);
  // VRAM needs no guest pages; moving it to SYSTEM does
  uint32_t v2 = 0;
  EXPECT_EQ(BoCreateFd(f.get(), 1 << 20, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM, &v2), 0);
  EXPECT_EQ(BoMove(f.get(), vram_bo, SHAREGPU_DOMAIN_SYSTEM), -ENOMEM);
  EXPECT_EQ(Fill(f.get(), vram_bo, 0, 4096, 0x11), 0) << "refused move broke the BO";

  // released pages are budget again
  ASSERT_FALSE(hs.empty());
  GemClose(f.get(), hs.back());
  hs.pop_back();
  // uncharged when the BO is destroyed (TTM may delay that)
  ASSERT_TRUE(WaitUntil(
      [&] { return Counter(*d_, "tt_pages_all") + 1024 <= limit_mb * 256; }, kDeadlineMs));
  EXPECT_EQ(BoMove(f.get(), vram_bo, SHAREGPU_DOMAIN_SYSTEM), 0);
  EXPECT_EQ(Checksum(f.get(), vram_bo, 0, 4096), PatternCrc(0x11, 4096));
  for (uint32_t x : hs) GemClose(f.get(), x);
  ASSERT_TRUE(WaitUntil(
      [&] { return Counter(*d_, "tt_pages_all") + 1024 <= limit_mb * 256; }, kDeadlineMs));
  uint32_t h = 0;
  EXPECT_EQ(BoCreateFd(f.get(), kBo, SHAREGPU_DOMAIN_SYSTEM, &h), 0);
  GemClose(f.get(), h);
  if (v2) GemClose(f.get(), v2);
  GemClose(f.get(), vram_bo);
}

// A BO's guest pages are charged while it has them: a move to VRAM gives them back.
TEST_P(LimitsTest, PagesOfABoInVramAreGivenBack) {
  constexpr uint64_t kBo = 1 << 20;
  ScopedFd f(Reopen(*d_));
  ASSERT_GE(f.get(), 0);
  const int64_t t0 = Counter(*d_, "tt_pages");
  uint32_t h = 0;
  ASSERT_EQ(BoCreateFd(f.get(), kBo, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM, &h), 0);
  ASSERT_EQ(Fill(f.get(), h, 0, kBo, 0x5a5a0001), 0);
  EXPECT_EQ(Counter(*d_, "tt_pages"), t0) << "a VRAM BO holds guest pages";
  for (int round = 0; round < 3; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_EQ(BoMove(f.get(), h, SHAREGPU_DOMAIN_SYSTEM), 0);
    EXPECT_EQ(Counter(*d_, "tt_pages"), t0 + static_cast<int64_t>(kBo / 4096));
    EXPECT_EQ(Checksum(f.get(), h, 0, kBo), PatternCrc(0x5a5a0001, kBo));
    ASSERT_EQ(BoMove(f.get(), h, SHAREGPU_DOMAIN_VRAM), 0);
    EXPECT_EQ(Counter(*d_, "tt_pages"), t0) << "the move to VRAM kept the pages";
    EXPECT_EQ(Checksum(f.get(), h, 0, kBo), PatternCrc(0x5a5a0001, kBo));
  }
  GemClose(f.get(), h);
}

// A BO whose handles are all closed lives exactly as long as something else holds it.
TEST_P(LimitsTest, ClosedBosLiveOnlyAsLongAsTheirLastReference) {
  ScopedFd f(Reopen(*d_));
  ASSERT_GE(f.get(), 0);
  const int64_t n0 = Counter(*d_, "objects");
  auto FreedTo = [&](int64_t n) {
    return WaitUntil([&] { return Counter(*d_, "objects") <= n; }, kDeadlineMs);
  };
  uint32_t h = 0;

  // an exported dma-buf nobody else holds
  ASSERT_EQ(BoCreateFd(f.get(), 64 << 10, SHAREGPU_DOMAIN_SYSTEM, &h), 0);
  int buf = ExportFd(f.get(), h);
  ASSERT_GE(buf, 0);
  GemClose(f.get(), h);
  EXPECT_EQ(Counter(*d_, "objects"), n0 + 1) << "freed while the dma-buf is open";
  close(buf);
  // freed now, or by TTM's delayed delete (debug kernels: init_on_free)
  EXPECT_TRUE(FreedTo(n0)) << "the last dma-buf close did not free the BO";

  // a CPU mapping
  ASSERT_EQ(BoCreateFd(f.get(), 64 << 10, SHAREGPU_DOMAIN_SYSTEM, &h), 0);
  void* m = BoMmap(f.get(), h, 64 << 10);
  ASSERT_NE(m, nullptr);
  GemClose(f.get(), h);
  EXPECT_EQ(Counter(*d_, "objects"), n0 + 1) << "freed while mapped";
  munmap(m, 64 << 10);
  EXPECT_TRUE(FreedTo(n0)) << "munmap did not free the BO";

  // a job in flight
  ASSERT_EQ(BoCreateFd(f.get(), 8 << 20, SHAREGPU_DOMAIN_SYSTEM, &h), 0);
  drm_sharegpu_cmd c = FillCmd(h, 8 << 20, 0x77);
  drm_sharegpu_submit s{};
  ASSERT_EQ(Submit(f.get(), &c, 1, SHAREGPU_SUBMIT_F_OUT_FENCE, &s), 0);
  ScopedFd fence(s.out_fence_fd);
  GemClose(f.get(), h);
  EXPECT_EQ(WaitFenceFd(fence.get(), kDeadlineMs), 1);
  EXPECT_TRUE(FreedTo(n0)) << "a BO closed with its job in flight was not freed after it";
}

// Create and drop every kind of object many more times than any (lowered) limit: a leak per
// iteration hits a limit within a few iterations, and the counters end where they started.
TEST_P(LimitsTest, DroppedObjectsLeaveNoResidue) {
  constexpr int kIters = 120;
  constexpr size_t kSize = 16 << 10;
  ScopedFd f(Reopen(*d_));
  ScopedFd g(Reopen(*other_));
  ScopedFd vgem(OpenVgem());
  ASSERT_GE(f.get(), 0);
  ASSERT_GE(g.get(), 0);
  ASSERT_GE(vgem.get(), 0) << "no vgem";
  const Snapshot s0 = Snapshot::Take();
  ScopedParam kept("max_kept_jobs", 2);
  ScopedParam active("max_active_jobs", 4);
  ScopedParam objects("max_objects", std::max(s0.objects[0], s0.objects[1]) + 16);
  ScopedParam mem("sys_mem_limit_mb", s0.tt_pages_all / 256 + 8);
  ASSERT_EQ(kept.status | active.status | objects.status | mem.status, 0);
  const auto hits0 = Counters(*d_), hits1 = Counters(*other_);

  for (int it = 0; it < kIters; it++) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    uint32_t a = 0, so = 0;
    ASSERT_EQ(BoCreateFd(f.get(), kSize,
                         (it & 1) ? SHAREGPU_DOMAIN_SYSTEM
                                  : SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM,
                         &a),
              0);
    ASSERT_EQ(SyncobjCreate(f.get(), &so), 0);

    // a kept job with an out-fence and an out-syncobj, collected by WAIT_JOB
    drm_sharegpu_cmd c = FillCmd(a, kSize, 0xc0de0000 + it);
    drm_sharegpu_submit s{};
    s.cmds = reinterpret_cast<uintptr_t>(&c);
    s.num_cmds = 1;
    s.flags = SHAREGPU_SUBMIT_F_KEEP | SHAREGPU_SUBMIT_F_OUT_FENCE;
    s.out_fence_fd = -1;
    s.out_syncobj = so;
    int ret;
    do {
      ret = ioctl(f.get(), DRM_IOCTL_SHAREGPU_SUBMIT, &s);
    } while (ret == -1 && errno == EINTR);
    ASSERT_EQ(ret, 0) << strerror(errno);
    ScopedFd out_fence(s.out_fence_fd);
    ASSERT_EQ(WaitJob(f.get(), s.job_id, 10000000000ll), 0);
    ScopedFd so_fence(SyncobjExportSyncFile(f.get(), so));
    ASSERT_GE(so_fence.get(), 0);
    EXPECT_EQ(WaitFenceFd(so_fence.get(), kDeadlineMs), 1);
    ASSERT_EQ(SyncobjDestroy(f.get(), so), 0);

    // exported, imported on the other device (p2p) and by vgem, sync_file exported
    ScopedFd buf(ExportFd(f.get(), a));
    ASSERT_GE(buf.get(), 0);
    uint32_t ia = 0, va = 0;
    ASSERT_EQ(ImportFd(g.get(), buf.get(), &ia), 0);
    EXPECT_EQ(Checksum(g.get(), ia, 0, kSize), PatternCrc(0xc0de0000 + it, kSize));
    ScopedFd rd(ExportSyncFile(buf.get(), DMA_BUF_SYNC_READ));
    ASSERT_GE(rd.get(), 0);
    if (it % 4 == 0) {
      ASSERT_EQ(ImportFd(vgem.get(), buf.get(), &va), 0);
      GemClose(vgem.get(), va);
    }
    GemClose(g.get(), ia);

    // a foreign (vgem) buffer imported and written by the device
    ScopedFd vbuf(VgemDmaBuf(vgem.get(), kSize));
    ASSERT_GE(vbuf.get(), 0);
    uint32_t iv = 0;
    ASSERT_EQ(ImportFd(f.get(), vbuf.get(), &iv), 0);
    c = FillCmd(iv, kSize, it);
    drm_sharegpu_submit s2{};
    ASSERT_EQ(RawSubmit(f.get(), &c, 1, SHAREGPU_SUBMIT_F_OUT_FENCE, &s2), 0);
    ScopedFd f2(s2.out_fence_fd);
    GemClose(f.get(), iv);  // closed with its job in flight

    // a BO closed with its job in flight, its dma-buf dropped too
    c = FillCmd(a, kSize, it);
    drm_sharegpu_submit s3{};
    ASSERT_EQ(RawSubmit(f.get(), &c, 1, SHAREGPU_SUBMIT_F_OUT_FENCE, &s3), 0);
    ScopedFd f3(s3.out_fence_fd);
    if (it % 8 == 0) {
      void* m = BoMmap(f.get(), a, kSize);
      ASSERT_NE(m, nullptr);
      GemClose(f.get(), a);
      munmap(m, kSize);
    } else {
      GemClose(f.get(), a);
    }
    buf.reset();

    ASSERT_EQ(WaitFenceFd(f2.get(), kDeadlineMs), 1);
    ASSERT_EQ(WaitFenceFd(f3.get(), kDeadlineMs), 1);
    // per-file numbers are exact: the active count drops before a job's fence signals
    ASSERT_EQ(FdInfo(f.get(), "drm-sharegpu-jobs-active"), 0);
    ASSERT_EQ(FdInfo(f.get(), "drm-sharegpu-jobs-kept"), 0);
    ASSERT_EQ(FdInfo(f.get(), "drm-sharegpu-objects"), 0);
    ASSERT_EQ(FdInfo(g.get(), "drm-sharegpu-objects"), 0);
  }
  // no limit was reached on the way (a leak would have reached one)
  for (const char* l : {"limit_kept", "limit_active", "limit_objects", "limit_mem"}) {
    EXPECT_EQ(Counter(*d_, l), hits0.at(l)) << l;
    EXPECT_EQ(Counter(*other_, l), hits1.at(l)) << l;
  }
  f.reset();
  g.reset();
  ExpectBackTo(s0);
}

INSTANTIATE_TEST_SUITE_P(Dev, LimitsTest, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return "dev" + std::to_string(i.param);
                         });

}  // namespace
