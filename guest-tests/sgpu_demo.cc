// SPDX-License-Identifier: GPL-2.0
// sharegpu guest demo: export on one device, import on the other, a move with move_notify,
// a coherency barrier on the non-coherent device, and (with the host agent) an eviction
// forced from the QEMU monitor. Prints what happens; exit 0 when everything behaved.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "sgpu_common.h"

using namespace sgt;

static int g_bad;

static void Step(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("\n== ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
}

static void Say(bool ok, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("   %s ", ok ? "[ok]  " : "[FAIL]");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  if (!ok) g_bad++;
}

static const char* DomName(uint32_t d) {
  return d == SHAREGPU_DOMAIN_VRAM ? "VRAM" : d == SHAREGPU_DOMAIN_SYSTEM ? "SYSTEM" : "-";
}

static void ShowInfo(const char* who, int fd, uint32_t h) {
  drm_sharegpu_bo_info i{};
  if (BoInfo(fd, h, &i)) {
    printf("   %s: BO_INFO failed\n", who);
    return;
  }
  printf("   %s: handle %u hw_handle %u %s%s%s%s domain %s hw_placement %s vram/window off %#llx "
         "gen %llu\n",
         who, h, i.hw_handle, (i.flags & SHAREGPU_BO_INFO_F_EXPORTED) ? "exported " : "",
         (i.flags & SHAREGPU_BO_INFO_F_IMPORTED) ? "imported " : "",
         (i.flags & SHAREGPU_BO_INFO_F_P2P) ? "p2p " : "",
         (i.flags & SHAREGPU_BO_INFO_F_PINNED) ? "pinned " : "", DomName(i.domain),
         i.hw_placement == 0 ? "DEVICE" : "SYSTEM", (unsigned long long)i.hw_vram_offset,
         (unsigned long long)i.hw_generation);
}

int main() {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  Step("sharegpu demo: devices");
  for (const Dev& d : Devices()) printf("   %s\n", d.Describe().c_str());
  Dev* a = FindDev(true);
  Dev* b = FindDev(false);
  if (!a || !b) {
    printf("need a coherent and a non-coherent sharegpu device\n");
    return 1;
  }
  constexpr size_t kSize = 1 << 20;

  Step("export on %s (A), import on %s (B)", a->pci.c_str(), b->pci.c_str());
  ScopedBo x, y;
  if (x.Create(a->fd, kSize, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM) || !x.Map()) {
    printf("BO create/map on A failed: %s\n", strerror(errno));
    return 1;
  }
  CpuAccess(a->fd, x.handle, SHAREGPU_CPU_ACCESS_WRITE);
  FillRandom(x.map, kSize, 2024);
  snprintf(static_cast<char*>(x.map), 64, "hello from device A");
  uint32_t crc = Crc32c(x.map, kSize);
  CpuAccess(a->fd, x.handle, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END);
  x.Unmap();
  printf("   CPU wrote 1 MiB into A's VRAM BO, CRC32C %08x\n", crc);
  ScopedFd buf(ExportFd(a->fd, x.handle));
  uint32_t yh = 0;
  if (buf.get() < 0 || ImportFd(b->fd, buf.get(), &yh)) {
    printf("PRIME export/import failed\n");
    return 1;
  }
  y.Adopt(b->fd, yh, kSize);
  printf("   PRIME: A handle %u -> dma-buf fd %d -> B handle %u\n", x.handle, buf.get(), yh);
  ShowInfo("A", a->fd, x.handle);
  ShowInfo("B", b->fd, y.handle);
  int64_t c = Checksum(b->fd, y.handle, 0, kSize);
  Say(c == crc, "B's CHECKSUM job on the import: %08llx (CPU computed %08x)", (long long)c, crc);
  uint8_t* win = y.Map();
  Say(win && !strcmp(reinterpret_cast<char*>(win), "hello from device A"),
      "B's CPU mapping (import window) reads \"%s\"", win ? reinterpret_cast<char*>(win) : "?");

  Step("move: A evicts the BO to SYSTEM while B holds live mappings");
  int64_t n0 = Counter(*b, "move_notifies");
  int ret = BoMove(a->fd, x.handle, SHAREGPU_DOMAIN_SYSTEM);
  Say(ret == 0, "BO_MOVE on A: %s", ret ? strerror(-ret) : "done");
  int64_t n1 = Counter(*b, "move_notifies");
  Say(n1 > n0, "B's move_notify count %lld -> %lld (debugfs sharegpu_counters)",
      (long long)n0, (long long)n1);
  ShowInfo("A", a->fd, x.handle);
  c = Checksum(b->fd, y.handle, 0, kSize);
  Say(c == crc, "B re-mapped on its next job: checksum %08llx", (long long)c);
  Say(win && !strcmp(reinterpret_cast<char*>(win), "hello from device A"),
      "B's CPU mapping re-faulted into the new storage: \"%s\"",
      win ? reinterpret_cast<char*>(win) : "?");
  ShowInfo("B", b->fd, y.handle);

  Step("pinning: a pinned BO refuses to move");
  BoPin(a->fd, x.handle, false);
  ret = BoMove(a->fd, x.handle, SHAREGPU_DOMAIN_VRAM);
  Say(ret == -EBUSY, "BO_MOVE of the pinned BO: %s", ret ? strerror(-ret) : "moved (!)");
  BoPin(a->fd, x.handle, true);

  Step("coherency barrier on the non-coherent device %s", b->pci.c_str());
  {
    constexpr size_t kS = 64 * 1024;
    ScopedBo z;
    if (z.Create(b->fd, kS, SHAREGPU_DOMAIN_VRAM) || !z.Map()) return 1;
    std::vector<uint8_t> v1(kS), v2(kS);
    FillRandom(v1.data(), kS, 1);
    FillRandom(v2.data(), kS, 2);
    CpuAccess(b->fd, z.handle, SHAREGPU_CPU_ACCESS_WRITE);
    memcpy(z.map, v1.data(), kS);
    CpuAccess(b->fd, z.handle, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END);
    Checksum(b->fd, z.handle, 0, kS, SHAREGPU_SUBMIT_F_NO_CACHE_MAINT);  // device caches it
    memcpy(z.map, v2.data(), kS);
    int64_t stale = Checksum(b->fd, z.handle, 0, kS, SHAREGPU_SUBMIT_F_NO_CACHE_MAINT);
    printf("   CPU rewrote the BO without a barrier; device checksum %08llx: old data %08x, "
           "new data %08x\n",
           (long long)stale, Crc32c(v1.data(), kS), Crc32c(v2.data(), kS));
    Say(stale == Crc32c(v1.data(), kS), "without DMA_BUF_IOCTL_SYNC the device sees STALE data");
    ScopedFd zb(ExportFd(b->fd, z.handle));
    DmaBufSync(zb.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
    memcpy(z.map, v2.data(), kS);
    DmaBufSync(zb.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
    int64_t right = Checksum(b->fd, z.handle, 0, kS, SHAREGPU_SUBMIT_F_NO_CACHE_MAINT);
    Say(right == Crc32c(v2.data(), kS), "with SYNC_START/SYNC_END it sees the new data: %08llx",
        (long long)right);
  }

  if (HostAgentAvailable()) {
    Step("host: the sharing graph (query-sharegpu-graph, drawn with Graphviz)");
    std::string graph;
    ret = HostRequest("graph", &graph);
    Say(ret == 0, "host agent: %s %s", ret ? strerror(-ret) : "ok", graph.c_str());

    Step("host: QEMU monitor forces A's BO out of VRAM (x-sharegpu-move-bo)");
    BoMove(a->fd, x.handle, SHAREGPU_DOMAIN_VRAM);
    drm_sharegpu_bo_info i{};
    BoInfo(a->fd, x.handle, &i);
    int64_t m0 = Counter(*a, "unexpected_moves");
    std::string reply;
    ret = HostRequest("move " + a->pci + " " + std::to_string(i.hw_handle) + " system", &reply);
    Say(ret == 0, "host agent: %s %s", ret ? strerror(-ret) : "ok", reply.c_str());
    bool adopted = WaitUntil(
        [&] {
          drm_sharegpu_bo_info j{};
          return !BoInfo(a->fd, x.handle, &j) && j.domain == SHAREGPU_DOMAIN_SYSTEM;
        },
        30000);
    Say(adopted, "A's driver adopted the device-side move (unexpected_moves %lld -> %lld)",
        (long long)m0, (long long)Counter(*a, "unexpected_moves"));
    ShowInfo("A", a->fd, x.handle);
    c = Checksum(b->fd, y.handle, 0, kSize);
    Say(c == crc, "B's data intact after the forced eviction: %08llx", (long long)c);
  } else {
    printf(
        "\n(no host agent: boot with scripts/guest-tests.sh --demo for the monitor-forced "
        "move)\n");
  }

  Step("demo %s", g_bad ? "FAILED" : "done");
  printf("   try: cat /sys/kernel/debug/dri/%s/sharegpu_bos\n", a->pci.c_str());
  return g_bad ? 1 : 0;
}
