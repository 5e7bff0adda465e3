// SPDX-License-Identifier: GPL-2.0
// Scale (issue 15; docs/user-guide.md "Limits", docs/performance.md "Thousands of buffers"):
// 20,000 small buffers across both devices, a quarter of them exported and imported into the
// other device, VRAM pressure that evicts many of them, and every buffer's contents checked
// through its owner and every import's through the importer. The host side keeps no file
// descriptor per buffer, so it is run with QEMU under `ulimit -n 1024` (scripts/guest-tests.sh
// sets it); before, QEMU ran out of descriptors after about a thousand SYSTEM buffers.
//
// The count is 20000 unless the kernel command line says sgputest.scale_count=N. Jobs are
// batched (64 commands per SUBMIT) so that the run stays short under TCG.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr uint64_t kSmall = 4096;
constexpr uint32_t kBatch = 64;  // SHAREGPU_MAX_CMDS

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint32_t PatternOf(size_t i) { return 0x5ca1e000u ^ static_cast<uint32_t>(i * 2654435761u); }

struct Buf {
  int dev = 0;          // index into the two devices
  uint32_t handle = 0;  // on its owner
  uint32_t pattern = 0;
  int imp_dev = -1;     // importing device, or -1
  uint32_t imp_handle = 0;
};

// Runs `cmds` in SUBMIT_F_WAIT batches of kBatch; 0 or the first -errno.
int RunBatched(int fd, std::vector<drm_sharegpu_cmd>& cmds) {
  for (size_t i = 0; i < cmds.size(); i += kBatch) {
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(kBatch, cmds.size() - i));
    int ret = Submit(fd, &cmds[i], n, SHAREGPU_SUBMIT_F_WAIT);
    if (ret) return ret;
  }
  return 0;
}

// Checksums every buffer through its owner, and every import through its importer.
void ExpectAllIntact(Dev* devs[2], const std::vector<Buf>& bufs, const char* when) {
  for (int through_import = 0; through_import < 2; ++through_import) {
    for (int d = 0; d < 2; ++d) {
      std::vector<drm_sharegpu_cmd> cmds;
      std::vector<const Buf*> who;
      for (const Buf& b : bufs) {
        if (!through_import && b.dev == d) {
          cmds.push_back(ChecksumCmd(b.handle, kSmall));
          who.push_back(&b);
        } else if (through_import && b.imp_dev == d) {
          cmds.push_back(ChecksumCmd(b.imp_handle, kSmall));
          who.push_back(&b);
        }
      }
      ASSERT_EQ(RunBatched(devs[d]->fd, cmds), 0) << when;
      size_t bad = 0;
      for (size_t i = 0; i < cmds.size(); ++i) {
        uint32_t want = PatternCrc(who[i]->pattern, kSmall);
        if (static_cast<uint32_t>(cmds[i].result) != want && bad++ < 5) {
          ADD_FAILURE() << when << ": device " << d << (through_import ? " import " : " bo ")
                        << (through_import ? who[i]->imp_handle : who[i]->handle)
                        << " has crc " << std::hex << cmds[i].result << ", want " << want;
        }
      }
      EXPECT_EQ(bad, 0u) << when << ": device " << d
                         << (through_import ? " (imports)" : " (own buffers)");
      printf("[ scale    ] %s: device %d%s checked\n", when, d,
             through_import ? " (imports)" : " (own buffers)");
      fflush(stdout);
    }
  }
}

// The run's silence detector (scripts/run-guest.sh --silence, 300 s) must not mistake a slow
// phase on a loaded host for a frozen guest: a line at least every 20 s.
void Heartbeat(const char* phase, size_t done, size_t total) {
  static double last = 0;
  const double now = Now();
  if (now - last < 20 && done != total) return;
  last = now;
  printf("[ scale    ] %s: %zu of %zu\n", phase, done, total);
  fflush(stdout);
}

TEST(ScaleTest, TwentyThousandBuffersSharedAndEvictedKeepTheirContents) {
  Dev* devs[2] = {FindDev(true), FindDev(false)};
  if (!devs[0] || !devs[1]) GTEST_SKIP() << "needs the coherent and the non-coherent device";
  size_t count = 20000;
  std::string param = CmdlineParam("sgputest.scale_count");
  if (!param.empty()) count = strtoul(param.c_str(), nullptr, 10);
  const double t0 = Now();

  // Create: alternately on each device, half of each device's buffers VRAM, half SYSTEM.
  std::vector<Buf> bufs(count);
  for (size_t i = 0; i < count; ++i) {
    Buf& b = bufs[i];
    b.dev = static_cast<int>(i % 2);
    b.pattern = PatternOf(i);
    uint32_t domain = (i / 2) % 2 ? SHAREGPU_DOMAIN_SYSTEM : SHAREGPU_DOMAIN_VRAM;
    int ret = BoCreate(*devs[b.dev], kSmall, domain, &b.handle);
    ASSERT_EQ(ret, 0) << "buffer " << i << " of " << count << " on device " << b.dev;
    Heartbeat("create", i + 1, count);
  }
  const double t_create = Now();

  // Fill each with its own pattern.
  for (int d = 0; d < 2; ++d) {
    std::vector<drm_sharegpu_cmd> cmds;
    for (const Buf& b : bufs) {
      if (b.dev == d) cmds.push_back(FillCmd(b.handle, kSmall, b.pattern));
    }
    ASSERT_EQ(RunBatched(devs[d]->fd, cmds), 0) << "fill on device " << d;
    Heartbeat("fill (devices)", d + 1, 2);
  }
  const double t_fill = Now();

  // Share a quarter (both placements) with the other device through PRIME.
  size_t shared = 0;
  for (size_t i = 0; i < count; ++i) {
    if (i % 8 != 0 && i % 8 != 5) continue;
    Buf& b = bufs[i];
    b.imp_dev = 1 - b.dev;
    ScopedFd fd(ExportFd(devs[b.dev]->fd, b.handle));
    ASSERT_GE(fd.get(), 0) << "export of buffer " << i;
    ASSERT_EQ(ImportFd(devs[b.imp_dev]->fd, fd.get(), &b.imp_handle), 0) << "import of " << i;
    ++shared;
    Heartbeat("share", i + 1, count);
  }
  const double t_share = Now();
  ASSERT_NO_FATAL_FAILURE(ExpectAllIntact(devs, bufs, "after sharing"));
  const double t_check1 = Now();

  // VRAM pressure: hogs of a quarter of VRAM each, 5 per device, evict the small ones.
  int64_t evictions_before = Counter(*devs[0], "evictions") + Counter(*devs[1], "evictions");
  std::vector<ScopedBo> hogs(10);
  for (int i = 0; i < 10; ++i) {
    Dev& d = *devs[i % 2];
    ASSERT_EQ(hogs[i].Create(d.fd, d.info.vram_size / 4, SHAREGPU_DOMAIN_VRAM), 0) << "hog " << i;
    ASSERT_EQ(Fill(d.fd, hogs[i].handle, 0, 4096, 0x600d600d), 0) << "hog " << i;
    Heartbeat("VRAM pressure (hogs)", i + 1, 10);
  }
  int64_t evictions = Counter(*devs[0], "evictions") + Counter(*devs[1], "evictions") -
                      evictions_before;
  EXPECT_GT(evictions, 0) << "VRAM pressure evicted nothing";
  ASSERT_NO_FATAL_FAILURE(ExpectAllIntact(devs, bufs, "after VRAM pressure"));
  const double t_check2 = Now();

  printf("[ info     ] %zu buffers (%zu shared), %lld evictions: create %.1f s, fill %.1f s, "
         "share %.1f s, check %.1f s, pressure + check %.1f s, total %.1f s\n",
         count, shared, static_cast<long long>(evictions), t_create - t0, t_fill - t_create,
         t_share - t_fill, t_check1 - t_share, t_check2 - t_check1, t_check2 - t0);
  for (const Buf& b : bufs) {
    if (b.imp_dev >= 0) GemClose(devs[b.imp_dev]->fd, b.imp_handle);
    GemClose(devs[b.dev]->fd, b.handle);
  }
}

}  // namespace
