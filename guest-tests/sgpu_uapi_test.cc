// SPDX-License-Identifier: GPL-2.0
// The standard-uAPI suite, side by side on three drivers in one VM (issue 10, section 3):
// sharegpu, vgem and virtio-gpu (-device virtio-gpu-pci). Only uAPI every DRM driver may
// offer is used: dumb buffers, PRIME export/import (self and with another device), mmap of
// the dma-buf, DMA_BUF_IOCTL_SYNC, DMA_BUF_IOCTL_EXPORT_SYNC_FILE / IMPORT_SYNC_FILE, poll on
// the dma-buf, lifetime after close, bad input.
//
// Each case runs on every driver found; sharegpu must pass every case (asserted), the peers'
// results are reported, not asserted: that is the comparison. At the end a table
// "case x driver -> pass / FAIL (errno) / n/s (errno)" is printed; n/s = the driver answered
// EOPNOTSUPP, ENOSYS or ENOTTY (it does not offer that uAPI).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <linux/dma-buf.h>

#include "drm.h"
#include "drm_mode.h"
#include "gtest/gtest.h"
#include "sgpu_common.h"

namespace {

using namespace sgt;

constexpr uint32_t kWidth = 256, kHeight = 64, kBpp = 32;  // 64 KiB

struct Driver {
  std::string name;  // DRM driver name: sharegpu, vgem, virtio_gpu
  std::string card;  // /dev/dri/cardN
};

// The first card node of each driver, in this order.
const std::vector<Driver>& Drivers() {
  static const std::vector<Driver> drivers = [] {
    std::vector<Driver> out;
    for (const char* want : {"sharegpu", "vgem", "virtio_gpu"}) {
      std::string path;
      int fd = OpenCard(want, &path);
      if (fd < 0) continue;
      close(fd);
      out.push_back({want, path});
    }
    return out;
  }();
  return drivers;
}

// case -> driver -> result (0 or -errno)
std::map<std::string, std::map<std::string, int>>& Results() {
  static std::map<std::string, std::map<std::string, int>> r;
  return r;
}
std::vector<std::string>& CaseOrder() {
  static std::vector<std::string> v;
  return v;
}

bool NotSupported(int err) { return err == -EOPNOTSUPP || err == -ENOSYS || err == -ENOTTY; }

std::string Cell(int r) {
  if (r == 0) return "pass";
  char buf[64];
  snprintf(buf, sizeof(buf), "%s (%s)", NotSupported(r) ? "n/s" : "FAIL", strerrorname_np(-r));
  return buf;
}

int Open(const Driver& d) {
  int fd = open(d.card.c_str(), O_RDWR | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

// The device a buffer of `d` is shared with: vgem for everybody but vgem, sharegpu for vgem.
const Driver* Partner(const Driver& d) {
  for (const Driver& p : Drivers()) {
    if (p.name == (d.name == "vgem" ? "sharegpu" : "vgem")) return &p;
  }
  return nullptr;
}

struct Dumb {
  uint32_t handle = 0;
  uint64_t size = 0;
};

int CreateDumb(int fd, Dumb* out) {
  drm_mode_create_dumb c{};
  c.width = kWidth;
  c.height = kHeight;
  c.bpp = kBpp;
  int ret = Ioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &c);
  if (ret) return ret;
  if (c.size < uint64_t(kWidth) * kHeight * kBpp / 8) return -EINVAL;
  out->handle = c.handle;
  out->size = c.size;
  return 0;
}

// Maps a dumb buffer (MAP_DUMB + mmap of the DRM fd), or -errno.
int MapDumb(int fd, const Dumb& b, void** out) {
  drm_mode_map_dumb m{};
  m.handle = b.handle;
  int ret = Ioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &m);
  if (ret) return ret;
  void* p = mmap(nullptr, b.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, m.offset);
  if (p == MAP_FAILED) return -errno;
  *out = p;
  return 0;
}

void Pattern(void* p, size_t n, uint32_t seed) {
  auto* w = static_cast<uint32_t*>(p);
  for (size_t i = 0; i < n / 4; i++) w[i] = seed ^ uint32_t(i * 2654435761u);
}

int CheckPattern(const void* p, size_t n, uint32_t seed) {
  auto* w = static_cast<const uint32_t*>(p);
  for (size_t i = 0; i < n / 4; i++) {
    if (w[i] != (seed ^ uint32_t(i * 2654435761u))) return -EIO;
  }
  return 0;
}

// A dumb buffer of `fd` filled with the pattern `seed` through its dumb mapping.
int PatternedDumb(int fd, uint32_t seed, Dumb* b) {
  int ret = CreateDumb(fd, b);
  if (ret) return ret;
  void* p;
  ret = MapDumb(fd, *b, &p);
  if (ret) return ret;
  Pattern(p, b->size, seed);
  munmap(p, b->size);
  return 0;
}

int PollDmaBuf(int dmabuf, short events, int timeout_ms) {
  pollfd p{dmabuf, events, 0};
  int n = poll(&p, 1, timeout_ms);
  return n < 0 ? -errno : n;
}

// Runs `fn` on every driver (a fresh DRM fd each), records the results, and asserts that
// sharegpu passed.
void RunCase(const std::string& name, const std::function<int(const Driver&, int)>& fn) {
  if (Drivers().empty() || Drivers()[0].name != "sharegpu") {
    FAIL() << "no sharegpu card node";
  }
  CaseOrder().push_back(name);
  for (const Driver& d : Drivers()) {
    int fd = Open(d);
    int r = fd < 0 ? fd : fn(d, fd);
    if (fd >= 0) close(fd);
    Results()[name][d.name] = r;
    printf("[ uapi     ] %-28s %-10s %s\n", name.c_str(), d.name.c_str(), Cell(r).c_str());
    if (d.name == "sharegpu") {
      EXPECT_EQ(r, 0) << name << " on sharegpu: " << Cell(r);
    }
  }
}

class TablePrinter : public testing::Environment {
 public:
  void TearDown() override {
    if (CaseOrder().empty()) return;
    printf("\nstandard uAPI, case x driver (n/s = not supported by the driver):\n");
    printf("| %-28s |", "case");
    for (const Driver& d : Drivers()) printf(" %-22s |", d.name.c_str());
    printf("\n| %s |", std::string(28, '-').c_str());
    for (size_t i = 0; i < Drivers().size(); i++) printf(" %s |", std::string(22, '-').c_str());
    printf("\n");
    for (const std::string& c : CaseOrder()) {
      printf("| %-28s |", c.c_str());
      for (const Driver& d : Drivers()) {
        auto it = Results()[c].find(d.name);
        printf(" %-22s |", it == Results()[c].end() ? "-" : Cell(it->second).c_str());
      }
      printf("\n");
    }
    fflush(stdout);
  }
};
const testing::Environment* const kTable = testing::AddGlobalTestEnvironment(new TablePrinter);

TEST(UapiTest, DriversPresent) {
  std::string names;
  for (const Driver& d : Drivers()) names += d.name + " (" + d.card + ") ";
  printf("[ uapi     ] drivers: %s\n", names.c_str());
  ASSERT_EQ(Drivers().size(), 3u) << "want sharegpu, vgem and virtio_gpu card nodes; found "
                                  << names;
}

TEST(UapiTest, DumbCreateDestroy) {
  RunCase("dumb create/destroy", [](const Driver&, int fd) {
    Dumb b;
    int ret = CreateDumb(fd, &b);
    if (ret) return ret;
    drm_mode_destroy_dumb d{b.handle};
    ret = Ioctl(fd, DRM_IOCTL_MODE_DESTROY_DUMB, &d);
    if (ret) return ret;
    // gone: a second destroy of the handle is refused (the DRM core's -EINVAL)
    return Ioctl(fd, DRM_IOCTL_MODE_DESTROY_DUMB, &d) == -EINVAL ? 0 : -EPROTO;
  });
}

TEST(UapiTest, DumbMmap) {
  RunCase("dumb mmap", [](const Driver&, int fd) {
    Dumb b;
    int ret = PatternedDumb(fd, 0x5eed0001, &b);
    if (ret) return ret;
    void* p;
    ret = MapDumb(fd, b, &p);  // a second mapping sees the first one's bytes
    if (ret) return ret;
    ret = CheckPattern(p, b.size, 0x5eed0001);
    munmap(p, b.size);
    return ret;
  });
}

TEST(UapiTest, PrimeSelfImport) {
  RunCase("prime self-import", [](const Driver&, int fd) {
    Dumb b;
    int ret = CreateDumb(fd, &b);
    if (ret) return ret;
    int dmabuf = ExportFd(fd, b.handle);
    if (dmabuf < 0) return dmabuf;
    uint32_t h = 0;
    ret = ImportFd(fd, dmabuf, &h);
    close(dmabuf);
    if (ret) return ret;
    return h == b.handle ? 0 : -EPROTO;  // importing your own export gives the same handle
  });
}

TEST(UapiTest, PrimeExportToOtherDevice) {
  RunCase("prime export to other device", [](const Driver& d, int fd) {
    const Driver* p = Partner(d);
    if (!p) return -ENODEV;
    Dumb b;
    int ret = PatternedDumb(fd, 0x5eed0002, &b);
    if (ret) return ret;
    int dmabuf = ExportFd(fd, b.handle);
    if (dmabuf < 0) return dmabuf;
    int pfd = Open(*p);
    if (pfd < 0) {
      close(dmabuf);
      return pfd;
    }
    uint32_t h = 0;
    ret = ImportFd(pfd, dmabuf, &h);
    if (!ret) {
      // the importer hands out the same dma-buf again (no copy of the buffer)
      int again = ExportFd(pfd, h);
      struct stat a{}, b2{};
      ret = again < 0 ? again : (fstat(dmabuf, &a) || fstat(again, &b2)) ? -errno
                                : a.st_ino == b2.st_ino ? 0 : -EPROTO;
      if (again >= 0) close(again);
    }
    close(pfd);
    close(dmabuf);
    return ret;
  });
}

TEST(UapiTest, PrimeImportFromOtherDevice) {
  RunCase("prime import from other dev", [](const Driver& d, int fd) {
    const Driver* p = Partner(d);
    if (!p) return -ENODEV;
    int pfd = Open(*p);
    if (pfd < 0) return pfd;
    Dumb b;
    int ret = PatternedDumb(pfd, 0x5eed0003, &b);
    int dmabuf = ret ? ret : ExportFd(pfd, b.handle);
    close(pfd);
    if (dmabuf < 0) return dmabuf;
    uint32_t h = 0;
    ret = ImportFd(fd, dmabuf, &h);
    if (!ret) {
      // the importer's own export of it is the partner's dma-buf, with its bytes
      int again = ExportFd(fd, h);
      if (again < 0) {
        ret = again;
      } else {
        void* m = mmap(nullptr, b.size, PROT_READ, MAP_SHARED, again, 0);
        ret = m == MAP_FAILED ? -errno : CheckPattern(m, b.size, 0x5eed0003);
        if (m != MAP_FAILED) munmap(m, b.size);
        close(again);
      }
    }
    close(dmabuf);
    return ret;
  });
}

TEST(UapiTest, DmaBufMmap) {
  RunCase("dma-buf mmap", [](const Driver&, int fd) {
    Dumb b;
    int ret = PatternedDumb(fd, 0x5eed0004, &b);
    if (ret) return ret;
    int dmabuf = ExportFd(fd, b.handle);
    if (dmabuf < 0) return dmabuf;
    void* m = mmap(nullptr, b.size, PROT_READ | PROT_WRITE, MAP_SHARED, dmabuf, 0);
    if (m == MAP_FAILED) {
      ret = -errno;
      close(dmabuf);
      return ret;
    }
    // reads the dumb mapping's bytes; a write through it reaches the dumb mapping
    ret = DmaBufSync(dmabuf, DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
    if (!ret) ret = CheckPattern(m, b.size, 0x5eed0004);
    if (!ret) Pattern(m, b.size, 0x5eed0005);
    int end = DmaBufSync(dmabuf, DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW);
    munmap(m, b.size);
    close(dmabuf);
    if (ret || end) return ret ? ret : end;
    void* p;
    ret = MapDumb(fd, b, &p);
    if (ret) return ret;
    ret = CheckPattern(p, b.size, 0x5eed0005);
    munmap(p, b.size);
    return ret;
  });
}

TEST(UapiTest, DmaBufSync) {
  RunCase("DMA_BUF_IOCTL_SYNC", [](const Driver&, int fd) {
    Dumb b;
    int ret = CreateDumb(fd, &b);
    if (ret) return ret;
    int dmabuf = ExportFd(fd, b.handle);
    if (dmabuf < 0) return dmabuf;
    for (uint64_t dir : {DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_RW}) {
      if (!ret) ret = DmaBufSync(dmabuf, DMA_BUF_SYNC_START | dir);
      if (!ret) ret = DmaBufSync(dmabuf, DMA_BUF_SYNC_END | dir);
    }
    // the core refuses flags it does not know, whatever the driver
    if (!ret) ret = DmaBufSync(dmabuf, DMA_BUF_SYNC_START | 0x100) == -EINVAL ? 0 : -EPROTO;
    close(dmabuf);
    return ret;
  });
}

TEST(UapiTest, ExportSyncFileOfIdleBuffer) {
  RunCase("EXPORT_SYNC_FILE (idle)", [](const Driver&, int fd) {
    Dumb b;
    int ret = CreateDumb(fd, &b);
    if (ret) return ret;
    int dmabuf = ExportFd(fd, b.handle);
    if (dmabuf < 0) return dmabuf;
    int sync = ExportSyncFile(dmabuf, DMA_BUF_SYNC_RW);
    close(dmabuf);
    if (sync < 0) return sync;
    ret = FenceSignaled(sync) ? 0 : -EBUSY;  // nothing is using the buffer
    close(sync);
    return ret;
  });
}

TEST(UapiTest, ImportSyncFileAndPoll) {
  RunCase("IMPORT_SYNC_FILE + poll", [](const Driver&, int fd) {
    Dumb b;
    int ret = CreateDumb(fd, &b);
    if (ret) return ret;
    int dmabuf = ExportFd(fd, b.handle);
    if (dmabuf < 0) return dmabuf;
    int timeline = SwSyncTimeline();
    int fence = timeline < 0 ? timeline : SwSyncFence(timeline, 1);
    if (fence < 0) {
      close(dmabuf);
      if (timeline >= 0) close(timeline);
      return fence;
    }
    // idle: readable and writable at once
    ret = PollDmaBuf(dmabuf, POLLIN | POLLOUT, 0) == 1 ? 0 : -EPROTO;
    if (!ret) ret = ImportSyncFile(dmabuf, fence, DMA_BUF_SYNC_WRITE);
    // a pending writer: neither reads nor writes may start; its signal wakes the poll
    if (!ret) ret = PollDmaBuf(dmabuf, POLLIN, 0) == 0 ? 0 : -EPROTO;
    if (!ret) ret = SwSyncInc(timeline, 1);
    if (!ret) ret = PollDmaBuf(dmabuf, POLLIN | POLLOUT, 10000) == 1 ? 0 : -ETIMEDOUT;
    close(fence);
    close(timeline);
    close(dmabuf);
    return ret;
  });
}

TEST(UapiTest, DmaBufOutlivesHandleAndFile) {
  RunCase("dma-buf after close", [](const Driver& d, int) {
    // a DRM file of its own: the buffer's handle and then the file go, the dma-buf stays
    int fd = Open(d);
    if (fd < 0) return fd;
    Dumb b;
    int ret = PatternedDumb(fd, 0x5eed0006, &b);
    int dmabuf = ret ? ret : ExportFd(fd, b.handle);
    if (dmabuf >= 0) {
      drm_mode_destroy_dumb des{b.handle};
      ret = Ioctl(fd, DRM_IOCTL_MODE_DESTROY_DUMB, &des);
    }
    close(fd);
    if (dmabuf < 0) return dmabuf;
    if (!ret) {
      void* m = mmap(nullptr, b.size, PROT_READ, MAP_SHARED, dmabuf, 0);
      ret = m == MAP_FAILED ? -errno : CheckPattern(m, b.size, 0x5eed0006);
      if (m != MAP_FAILED) munmap(m, b.size);
    }
    close(dmabuf);
    return ret;
  });
}

TEST(UapiTest, BadInputIsRefused) {
  RunCase("bad input refused", [](const Driver&, int fd) {
    drm_prime_handle ph{};
    ph.fd = -1;
    if (Ioctl(fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, &ph) == 0) return -EPROTO;
    ph = {};
    ph.handle = 0xdead;
    ph.flags = DRM_CLOEXEC | DRM_RDWR;
    if (Ioctl(fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, &ph) != -ENOENT) return -EPROTO;
    drm_mode_create_dumb c{};
    c.width = kWidth;
    c.height = kHeight;
    c.bpp = 0;
    if (Ioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &c) == 0) return -EPROTO;
    drm_mode_map_dumb m{};
    m.handle = 0xdead;
    if (Ioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &m) == 0) return -EPROTO;
    return 0;
  });
}

}  // namespace
