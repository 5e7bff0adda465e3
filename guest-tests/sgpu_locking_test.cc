// SPDX-License-Identifier: GPL-2.0
// Locking end to end: jobs over overlapping BO sets, submitted from several threads in
// conflicting orders, must all complete (no deadlock), must make the driver's drm_exec take
// the ww_mutex -EDEADLK backoff on real contention (debugfs ww_contended: the object was
// locked by another context; DEBUG_WW_MUTEX_SLOWPATH's injected -EDEADLK on a free lock only
// counts in ww_backoffs), and leave exactly the data the last job of every thread wrote.
// Every iteration always runs. Lockdep reports are caught by the runner on the console.
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr int kThreads = 4;
constexpr int kBos = 8;
constexpr size_t kRegion = 4096;
constexpr size_t kBoSize = kRegion * kThreads;
constexpr int kIterations = 200;  // per thread

uint32_t PatternOf(int thread, int iter) { return 0x10000000u * (thread + 1) + iter; }

struct Worker {
  int fd;
  std::vector<uint32_t> bos;  // handles valid on fd, same order for every worker
  int thread;
  std::atomic<int>* errors;
  int iters_done = 0;
  int last_pattern_iter = -1;
  int64_t deadline_ms;

  void Run(int max_iters) {
    for (int it = 0; it < max_iters; it++) {
      // every job locks all BOs, in a thread-specific rotation/direction
      std::vector<drm_sharegpu_cmd> cmds;
      for (int k = 0; k < kBos; k++) {
        int idx = (thread & 1) ? (kBos - 1 - ((k + thread) % kBos)) : ((k + thread * 3) % kBos);
        drm_sharegpu_cmd c{};
        c.op = SHAREGPU_CMD_FILL;
        c.dst_handle = bos[idx];
        c.dst_offset = thread * kRegion;  // own region: no data race between threads
        c.size = kRegion;
        c.pattern = PatternOf(thread, it);
        cmds.push_back(c);
        drm_sharegpu_cmd r{};
        r.op = SHAREGPU_CMD_CHECKSUM;  // and read a neighbour's region (shared reads)
        r.src_handle = bos[(idx + 1) % kBos];
        r.src_offset = ((thread + 1) % kThreads) * kRegion;
        r.size = kRegion;
        cmds.push_back(r);
      }
      uint32_t flags = (it % 4 == 3) ? SHAREGPU_SUBMIT_F_WAIT : 0;
      int ret = Submit(fd, cmds.data(), cmds.size(), flags);
      if (ret) {
        fprintf(stderr, "thread %d iter %d: submit: %s\n", thread, it, strerror(-ret));
        errors->fetch_add(1);
        return;
      }
      last_pattern_iter = it;
      iters_done++;
    }
  }
};

class LockingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(Devices().empty());
    d_ = &Devices()[0];
    ASSERT_GE(Counter(*d_, "ww_contended"), 0) << "debugfs counter ww_contended unreadable";
  }
  Dev* d_ = nullptr;
};

// Run every worker's iterations; *backoffs = the backoffs on real contention. Fail on
// deadlock (threads not done within the watchdog) or on any submit error.
void RunContention(std::vector<Worker>& workers, const std::vector<Dev*>& counted,
                   int64_t* backoffs) {
  std::vector<int64_t> before;
  for (Dev* d : counted) before.push_back(Counter(*d, "ww_contended"));
  std::atomic<int> errors{0};
  std::mutex mu;
  std::condition_variable cv;
  int finished = 0;
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    w.errors = &errors;
    threads.emplace_back([&, wp = &w] {
      wp->Run(kIterations);
      std::lock_guard<std::mutex> l(mu);
      finished++;
      cv.notify_all();
    });
  }
  auto grew = [&] {
    int64_t sum = 0;
    for (size_t i = 0; i < counted.size(); i++)
      sum += Counter(*counted[i], "ww_contended") - before[i];
    return sum;
  };
  bool all_done;
  {
    std::unique_lock<std::mutex> l(mu);
    all_done = cv.wait_for(l, std::chrono::seconds(240),
                           [&] { return finished == (int)workers.size(); });
  }
  if (!all_done) {
    // a deadlock: report and terminate the process (threads cannot be joined)
    ADD_FAILURE() << "DEADLOCK: submitter threads still blocked after 240 s";
    fflush(stdout);
    for (auto& t : threads) t.detach();
    _exit(1);
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  *backoffs = grew();
  int total = 0;
  for (auto& w : workers) total += w.iters_done;
  EXPECT_EQ(total, kIterations * static_cast<int>(workers.size())) << "iterations skipped";
  printf("[ info     ] %d jobs, ww -EDEADLK backoffs on contention: %lld\n", total,
         (long long)*backoffs);
}

TEST_F(LockingTest, OverlappingJobsFromThreadsBackOffWithoutDeadlock) {
  std::vector<ScopedBo> bos(kBos);
  std::vector<uint32_t> handles;
  for (auto& b : bos) {
    ASSERT_EQ(b.Create(d_->fd, kBoSize, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM), 0);
    handles.push_back(b.handle);
  }
  std::vector<Worker> workers(kThreads);
  for (int t = 0; t < kThreads; t++) workers[t] = Worker{d_->fd, handles, t};
  int64_t backoffs = 0;
  ASSERT_NO_FATAL_FAILURE(RunContention(workers, {d_}, &backoffs));
  EXPECT_GT(backoffs, 0) << "no ww_mutex -EDEADLK backoff observed under contention";

  // final contents: region t of every BO holds thread t's last pattern
  for (int i = 0; i < kBos; i++) {
    for (int t = 0; t < kThreads; t++) {
      if (workers[t].last_pattern_iter < 0) continue;
      EXPECT_EQ(Checksum(d_->fd, handles[i], t * kRegion, kRegion),
                PatternCrc(PatternOf(t, workers[t].last_pattern_iter), kRegion))
          << "bo " << i << " region " << t;
    }
  }
}

// The same across two devices sharing the BOs (one reservation per dma-buf for exporter and
// importer): cross-device lock ordering conflicts.
TEST_F(LockingTest, CrossDeviceSharedBuffersBackOffWithoutDeadlock) {
  if (Devices().size() < 2) GTEST_SKIP() << "one sharegpu device";
  Dev* a = &Devices()[0];
  Dev* b = &Devices()[1];
  std::vector<ScopedBo> bos(kBos);
  std::vector<ScopedBo> imports(kBos);
  std::vector<uint32_t> ha, hb;
  for (int i = 0; i < kBos; i++) {
    Dev* owner = (i & 1) ? b : a;  // exporters on both sides
    Dev* other = (i & 1) ? a : b;
    ASSERT_EQ(bos[i].Create(owner->fd, kBoSize, SHAREGPU_DOMAIN_VRAM), 0);
    ScopedFd fd(ExportFd(owner->fd, bos[i].handle));
    ASSERT_GE(fd.get(), 0);
    uint32_t h = 0;
    ASSERT_EQ(ImportFd(other->fd, fd.get(), &h), 0);
    imports[i].Adopt(other->fd, h, kBoSize);
    ha.push_back(owner == a ? bos[i].handle : h);
    hb.push_back(owner == b ? bos[i].handle : h);
  }
  std::vector<Worker> workers(kThreads);
  for (int t = 0; t < kThreads; t++)
    workers[t] = Worker{(t & 1) ? b->fd : a->fd, (t & 1) ? hb : ha, t};
  int64_t backoffs = 0;
  ASSERT_NO_FATAL_FAILURE(RunContention(workers, {a, b}, &backoffs));
  EXPECT_GT(backoffs, 0) << "no ww_mutex -EDEADLK backoff observed under contention";
  for (int i = 0; i < kBos; i++) {
    for (int t = 0; t < kThreads; t++) {
      if (workers[t].last_pattern_iter < 0) continue;
      EXPECT_EQ(Checksum(a->fd, ha[i], t * kRegion, kRegion),
                PatternCrc(PatternOf(t, workers[t].last_pattern_iter), kRegion))
          << "bo " << i << " region " << t;
    }
  }
}

}  // namespace
