// SPDX-License-Identifier: GPL-2.0
// Sharing between VMs through the host broker, end to end (scripts/guest-multivm.sh): three
// guests run this binary, vm-a with sgputest.role=a (suite MultiVmA, the exporter), vm-b
// with sgputest.role=b (suite MultiVmB, the importer) and vm-c with sgputest.role=c (suite
// MultiVmC, granted one buffer and refused the others); the runner selects the suite with
// sgputest.filter. They coordinate through the host agent's mailbox (MailboxPut/Get): every
// step waits for the other guest's explicit message, never for time. A guest whose test
// fails puts "abort", so the other one's waits end at once instead of at their deadline.
//
// The messages, in order (A = vm-a, B = vm-b, C = vm-c):
//   C: c-ready (its QEMU's descriptors counted)
//   B: b-ready (the broker's and its QEMU's)       A: ids (rw, ro, c: three exports)
//   C: c-done                                      A: a-withdrew (vm-c's grant withdrawn)
//   C: c-refused (then A unexports it)
//   B: b-read-1 (its job wrote kP4 into A's pages) A: a-wrote (after BO_CPU_ACCESS end)
//   B: b-primed, b-filled-unflushed, b-flushed,    A: a-wrote-2, a-saw-stale, a-saw-flushed
//      b-restored (barriers across VMs)
//   B: b-ro-done                                   B: b-mapped
//   A: a-moved (host monitor relocated the rw BO)  B: b-remapped
//   A: a-done; its hold step (sgpu_multivm_hold) puts a-holding and waits to be killed;
//   B has the host kill -9 vm-a's QEMU and checks the revocation and the descriptors,
//   then b-done (vm-c stays connected until then).
//   B: b-restart-id (an export for vm-c)           C: c-imported (mapped, read)
//   B has the host kill -9 the broker and start it again: B's export is lost, C's import
//   revoked, both keep their own buffers; once both QEMUs have reconnected
//   B: b-restart-id2 (exported again)              C: c-reimported (read through the new one)
//
// Each step also says what it did in a "SHAREGPU-DEMO: vm-X: ..." console line: the two-VM
// demo of `make run` (scripts/guest-multivm.sh --demo: vm-a and vm-b only, a subset of the
// cases) shows them as its narrative; with sgputest.demo=1 vm-a also has the host print its
// QEMU monitor's `info sharegpu-broker` once vm-b has imported.
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sgpu_common.h"

namespace {

using sgt::Dev;

constexpr uint32_t kFeatBroker = 1u << 8;  // SGHW_FEAT_BROKER
constexpr size_t kSize = 64 << 10;
constexpr uint32_t kP1 = 0x1111a001, kP2 = 0x2222b002, kP3 = 0x3333c003, kP4 = 0x4444d004;
constexpr uint32_t kP5 = 0x5555e005, kP6 = 0x6666f006;
constexpr uint64_t kNoOff = ~0ull;

Dev* FindBrokerDev(bool with) {
  for (Dev& d : sgt::Devices())
    if (!!(d.info.hw_features & kFeatBroker) == with) return &d;
  return nullptr;
}

void FillPattern(uint8_t* p, size_t n, uint32_t pattern) {
  for (size_t i = 0; i + 4 <= n; i += 4) memcpy(p + i, &pattern, 4);
}

uint32_t PatternCrcOf(uint32_t pattern) {
  std::vector<uint8_t> v(kSize);
  FillPattern(v.data(), v.size(), pattern);
  return sgt::Crc32c(v.data(), v.size());
}

std::string Hex(const uint8_t* id, size_t n) {
  std::string s;
  char b[3];
  for (size_t i = 0; i < n; i++) {
    snprintf(b, sizeof(b), "%02x", id[i]);
    s += b;
  }
  return s;
}

bool Unhex(const std::string& s, uint8_t* id, size_t n) {
  if (s.size() != 2 * n) return false;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(s.c_str() + 2 * i, "%2x", &v) != 1) return false;
    id[i] = static_cast<uint8_t>(v);
  }
  return true;
}

void SetPeer(char* dst, const char* name) {
  memset(dst, 0, SHAREGPU_BROKER_NAME_LEN);
  memcpy(dst, name, strnlen(name, SHAREGPU_BROKER_NAME_LEN));
}

int Export(int fd, uint32_t handle, uint32_t right, const char* peer,
           drm_sharegpu_broker_export* out) {
  drm_sharegpu_broker_export e{};
  e.handle = handle;
  e.right = right;
  if (peer) SetPeer(e.peer, peer);
  int ret = sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_EXPORT, &e);
  if (out) *out = e;
  return ret;
}

int Grant(int fd, uint32_t handle, uint32_t right, const char* peer) {
  drm_sharegpu_broker_grant g{};
  g.handle = handle;
  g.right = right;
  SetPeer(g.peer, peer);
  return sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_GRANT, &g);
}

int Import(int fd, const uint8_t* id, drm_sharegpu_broker_import* out) {
  drm_sharegpu_broker_import i{};
  memcpy(i.id, id, sizeof(i.id));
  int ret = sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_IMPORT, &i);
  if (out) *out = i;
  return ret;
}

int MmapOffset(int fd, uint32_t handle, uint64_t* off) {
  drm_sharegpu_bo_mmap_offset m{};
  m.handle = handle;
  int ret = sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BO_MMAP_OFFSET, &m);
  *off = m.offset;
  return ret;
}

// A remote import as debugfs sharegpu_bos lists it ("remote imports:" section).
struct RemoteRow {
  bool found = false;
  std::string access;  // "rw" / "ro"
  unsigned mapped = 0, revoked = 0, reason = 0;
};

RemoteRow DebugfsRemote(const Dev& d, uint32_t hw_handle) {
  RemoteRow row;
  std::istringstream in(sgt::ReadFile(d.debugfs_dir() + "/sharegpu_bos"));
  std::string line;
  bool section = false;
  while (std::getline(in, line)) {
    if (line.rfind("remote imports:", 0) == 0) {
      section = true;
      continue;
    }
    if (!section) continue;
    std::istringstream f(line);
    unsigned long long handle = 0, size = 0, window = 0;
    unsigned invalidations = 0;
    RemoteRow r;
    if (!(f >> handle >> size >> r.access >> r.mapped >> std::hex >> window >> std::dec >>
          r.revoked >> r.reason >> invalidations)) {
      continue;
    }
    if (handle == hw_handle) {
      r.found = true;
      return r;
    }
  }
  return row;
}

// The device's counter through the host agent (QMP query-sharegpu), or -1.
int64_t HostCounter(const Dev& d, const char* name) {
  std::string r;
  if (sgt::HostRequest(std::string("counter ") + d.pci + " " + name, &r)) return -1;
  return strtoll(r.c_str(), nullptr, 10);
}

// Open descriptors of a host process: the broker daemon ("broker") or a VM's QEMU ("vm-b"),
// through the host agent ("fds NAME": "TOTAL MEMFDS").
struct FdCount {
  long total = -1, memfds = -1;
  bool operator==(const FdCount& o) const { return total == o.total && memfds == o.memfds; }
};

bool HostFds(const char* who, FdCount* n) {
  std::string r;
  return !sgt::HostRequest(std::string("fds ") + who, &r) &&
         sscanf(r.c_str(), "%ld %ld", &n->total, &n->memfds) == 2;
}

// Counts a VM's QEMU's descriptors as a baseline: first makes sure the device's system pool
// exists (its one memfd is made at the first SYSTEM buffer and kept; not a leak).
void CountQemuFds(const Dev& d, const char* vm, FdCount* n) {
  sgt::ScopedBo bo;
  ASSERT_EQ(bo.Create(d.fd, kSize, SHAREGPU_DOMAIN_SYSTEM), 0);
  ASSERT_EQ(sgt::Fill(d.fd, bo.handle, 0, kSize, 0, SHAREGPU_SUBMIT_F_WAIT), 0);
  bo.reset();
  ASSERT_TRUE(HostFds(vm, n)) << "host agent fds " << vm;
}

// Releases reach the broker through its socket and QEMU drops an import window's mapping
// after an RCU grace period: waits (a deadline as failure detector) for `who` to hold `want`.
FdCount ExpectHostFds(const char* who, FdCount want, const char* when) {
  FdCount now;
  EXPECT_TRUE(sgt::WaitUntil([&] { return HostFds(who, &now) && now == want; }, 30000))
      << who << " descriptors " << when << ": " << now.total << " (" << now.memfds
      << " memfds), expected " << want.total << " (" << want.memfds << " memfds)";
  return now;
}

// One line of the demo's narrative (see the top of this file).
__attribute__((format(printf, 1, 2))) void Tell(const char* fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  printf("SHAREGPU-DEMO: %s\n", line);
  fflush(stdout);
}

const char* ErrName(int ret) { return ret ? strerrorname_np(-ret) : "0"; }

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000ll + ts.tv_nsec / 1000000;
}

// The importers' copy of vm-a's three broker ids (message "ids": rw,ro,c in hex).
struct Ids {
  uint8_t rw[16], ro[16], c[16];
  bool ok = false;
} g_ids;

void GetIds() {
  std::string ids;
  ASSERT_EQ(sgt::MailboxGet("ids", &ids), 0) << ids;
  ASSERT_EQ(ids.size(), 3 * 32 + 2u) << ids;
  ASSERT_TRUE(Unhex(ids.substr(0, 32), g_ids.rw, 16) && Unhex(ids.substr(33, 32), g_ids.ro, 16) &&
              Unhex(ids.substr(66, 32), g_ids.c, 16))
      << ids;
  g_ids.ok = true;
}

// CRC32C of an exported BO read by this VM's CPU between BO_CPU_ACCESS begin and end; 0
// (and a test failure) when either fails.
uint32_t ReadCrc(int fd, uint32_t h, const uint8_t* map) {
  int ret = sgt::CpuAccess(fd, h, SHAREGPU_CPU_ACCESS_READ);
  if (ret) {
    ADD_FAILURE() << "BO_CPU_ACCESS begin: " << strerror(-ret);
    return 0;
  }
  uint32_t crc = sgt::Crc32c(map, kSize);
  ret = sgt::CpuAccess(fd, h, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END);
  if (ret) {
    ADD_FAILURE() << "BO_CPU_ACCESS end: " << strerror(-ret);
    return 0;
  }
  return crc;
}

// Waits (a deadline as failure detector) for a BO_REVOKED after `since` (the device's
// evt_revoked count then), then checks that import `handle` is revoked for `reason`.
void ExpectRevoked(const Dev& d, uint32_t handle, int64_t since, uint32_t reason,
                   const char* after) {
  EXPECT_TRUE(sgt::WaitUntil([&] { return sgt::Counter(d, "evt_revoked") > since; }, 60000))
      << "no BO_REVOKED after " << after;
  drm_sharegpu_bo_info info{};
  ASSERT_EQ(sgt::BoInfo(d.fd, handle, &info), 0);
  EXPECT_TRUE(info.flags & SHAREGPU_BO_INFO_F_REVOKED);
  EXPECT_EQ(info.revoke_reason, reason) << "revoke_reason after " << after;
}

// A failed step tells the other guest (its waits end at once).
class MultiVm : public testing::Test {
 protected:
  void SetUp() override {
    if (!sgt::HostAgentAvailable()) GTEST_SKIP() << "no host agent (sgputest.host=1 missing)";
    dev_ = FindBrokerDev(true);
    ASSERT_NE(dev_, nullptr) << "no sharegpu device with FEATURES bit8 BROKER";
  }
  void TearDown() override {
    if (HasFailure()) sgt::MailboxPut("abort", sgt::CmdlineParam("sgputest.role"));
  }
  Dev* dev_ = nullptr;
};

// ---------------------------------------------------------------- vm-a, the exporter

struct AState {
  uint32_t rw = 0, ro = 0, c = 0;  // GEM handles on the broker device
  uint8_t* rw_map = nullptr;
  uint8_t* ro_map = nullptr;
  std::string rw_id;
} g_a;

using MultiVmA = MultiVm;

// Every bad argument is refused before anything reaches the device; no broker: EOPNOTSUPP.
TEST_F(MultiVmA, BadInput) {
  int fd = dev_->fd;
  sgt::ScopedBo bo;
  ASSERT_EQ(bo.Create(fd, kSize, SHAREGPU_DOMAIN_SYSTEM), 0);
  drm_sharegpu_broker_export e{};
  e.handle = bo.handle;
  e.flags = 1;
  EXPECT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_EXPORT, &e), -EINVAL) << "flags";
  e = {};
  e.handle = bo.handle;
  e.pad = 1;
  EXPECT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_EXPORT, &e), -EINVAL) << "pad";
  EXPECT_EQ(Export(fd, bo.handle, 3, "vm-b", nullptr), -EINVAL) << "right 3";
  EXPECT_EQ(Export(fd, bo.handle, SHAREGPU_BROKER_RIGHT_NONE, "vm-b", nullptr), -EINVAL)
      << "a name without a right";
  for (const char* bad : {"", "vm b", "vm/b", "v\xe9m", "vm:b"}) {
    drm_sharegpu_broker_export b{};
    b.handle = bo.handle;
    b.right = SHAREGPU_BROKER_RIGHT_READ;
    memcpy(b.peer, bad, strlen(bad));
    EXPECT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_EXPORT, &b), -EINVAL) << "'" << bad << "'";
  }
  drm_sharegpu_broker_export full{};
  full.handle = bo.handle;
  full.right = SHAREGPU_BROKER_RIGHT_READ;
  memset(full.peer, 'a', sizeof(full.peer));  // 32 characters, no NUL
  EXPECT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_EXPORT, &full), -EINVAL) << "no NUL";
  drm_sharegpu_broker_export junk{};
  junk.handle = bo.handle;
  junk.right = SHAREGPU_BROKER_RIGHT_READ;
  memcpy(junk.peer, "vm-b\0x", 6);
  EXPECT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_EXPORT, &junk), -EINVAL)
      << "bytes after the NUL";
  EXPECT_EQ(Export(fd, 0xdead, SHAREGPU_BROKER_RIGHT_READ, "vm-b", nullptr), -ENOENT);
  EXPECT_EQ(Grant(fd, bo.handle, SHAREGPU_BROKER_RIGHT_READ, "vm-b"), -EINVAL)
      << "grant on a BO that is not broker-exported";
  EXPECT_EQ(Grant(fd, bo.handle, 7, "vm-b"), -EINVAL);
  drm_sharegpu_broker_unexport u{};
  u.handle = bo.handle;
  EXPECT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_UNEXPORT, &u), -EINVAL) << "not exported";
  u.flags = 1;
  EXPECT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_UNEXPORT, &u), -EINVAL) << "flags";
  uint8_t forged[16];
  memset(forged, 0x5a, sizeof(forged));
  EXPECT_EQ(Import(fd, forged, nullptr), -ENOENT) << "forged id";
  drm_sharegpu_broker_import fi{};
  fi.flags = 1;
  EXPECT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_IMPORT, &fi), -EINVAL) << "flags";

  Dev* plain = FindBrokerDev(false);
  if (!plain) return;  // the runner gives every guest one device without a broker (g1)
  sgt::ScopedBo pbo;
  ASSERT_EQ(pbo.Create(plain->fd, kSize, SHAREGPU_DOMAIN_SYSTEM), 0);
  EXPECT_EQ(Export(plain->fd, pbo.handle, SHAREGPU_BROKER_RIGHT_READ, "vm-b", nullptr),
            -EOPNOTSUPP);
  EXPECT_EQ(Import(plain->fd, forged, nullptr), -EOPNOTSUPP);
  EXPECT_EQ(Export(plain->fd, pbo.handle, 3, "vm-b", nullptr), -EINVAL)
      << "arguments are checked before the feature";
}

uint32_t MakeExported(int fd, uint32_t domains, uint32_t pattern, uint32_t right,
                      const char* peer, std::string* id_hex, uint8_t** map) {
  uint32_t h = 0;
  if (sgt::BoCreateFd(fd, kSize, domains, &h)) return 0;
  auto* p = static_cast<uint8_t*>(sgt::BoMmap(fd, h, kSize));
  if (!p) return 0;
  if (sgt::CpuAccess(fd, h, SHAREGPU_CPU_ACCESS_WRITE)) return 0;
  FillPattern(p, kSize, pattern);
  if (sgt::CpuAccess(fd, h, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END)) return 0;
  drm_sharegpu_broker_export e{};
  int ret = Export(fd, h, right, peer, &e);
  if (ret) {
    ADD_FAILURE() << "BROKER_EXPORT: " << strerror(-ret);
    return 0;
  }
  EXPECT_EQ(e.size, kSize);
  *id_hex = Hex(e.id, sizeof(e.id));
  *map = p;
  return h;
}

// Contract 1.8: BROKER_EXPORT returns before the broker has answered. One export over the
// broker's limit per VM (its --max-exports, which the runner passes as
// sgputest.broker_max_exports) still returns an id, and is then lost: one BO_REVOKED with the
// EXPORT flag clears BROKER_EXPORTED; the exports within the limit stay.
TEST_F(MultiVmA, ExportOverTheBrokerLimitIsLostAfterTheIoctl) {
  const std::string param = sgt::CmdlineParam("sgputest.broker_max_exports");
  ASSERT_FALSE(param.empty()) << "no sgputest.broker_max_exports (scripts/guest-multivm.sh)";
  const int limit = std::atoi(param.c_str());
  constexpr int kMaxLimit = 32;
  ASSERT_TRUE(limit > 0 && limit < kMaxLimit) << param;
  int fd = dev_->fd;
  int64_t revoked = sgt::Counter(*dev_, "evt_revoked");
  ASSERT_GE(revoked, 0);
  sgt::ScopedBo bos[kMaxLimit];  // this VM holds no other export yet
  for (int i = 0; i <= limit; ++i) {
    ASSERT_EQ(bos[i].Create(fd, kSize, SHAREGPU_DOMAIN_SYSTEM), 0);
    drm_sharegpu_broker_export e{};
    ASSERT_EQ(Export(fd, bos[i].handle, SHAREGPU_BROKER_RIGHT_NONE, nullptr, &e), 0)
        << "export " << i << ": the broker's verdict comes later";
  }
  drm_sharegpu_bo_info info{};
  // a deadline as failure detector: the refusal is an event
  EXPECT_TRUE(sgt::WaitUntil(
      [&] {
        return sgt::BoInfo(fd, bos[limit].handle, &info) == 0 &&
               !(info.flags & SHAREGPU_BO_INFO_F_BROKER_EXPORTED);
      },
      30000))
      << "the export over the limit is still marked exported";
  EXPECT_EQ(sgt::Counter(*dev_, "evt_revoked"), revoked + 1) << "one BO_REVOKED (EXPORT)";
  for (int i = 0; i < limit; ++i) {
    ASSERT_EQ(sgt::BoInfo(fd, bos[i].handle, &info), 0);
    EXPECT_TRUE(info.flags & SHAREGPU_BO_INFO_F_BROKER_EXPORTED) << "export " << i;
  }
  Tell("vm-a: %d exports with the broker taking %d: every BROKER_EXPORT returned an id at once, "
       "the last one was then reported lost (BO_REVOKED, EXPORT)", limit + 1, limit);
}

// Exports to vm-b (read-write and read-only) and to vm-c (not running: B is refused).
TEST_F(MultiVmA, ExportAndGrant) {
  int fd = dev_->fd;
  std::string v, ro_id, c_id;
  ASSERT_EQ(sgt::MailboxGet("b-ready", &v), 0) << v;
  uint8_t* cmap = nullptr;
  // in VRAM first: the export moves it to SYSTEM (storage of its own)
  g_a.rw = MakeExported(fd, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM, kP1,
                        SHAREGPU_BROKER_RIGHT_READ_WRITE, "vm-b", &g_a.rw_id, &g_a.rw_map);
  ASSERT_NE(g_a.rw, 0u);
  g_a.ro = MakeExported(fd, SHAREGPU_DOMAIN_SYSTEM, kP2, SHAREGPU_BROKER_RIGHT_READ, "vm-b",
                        &ro_id, &g_a.ro_map);
  ASSERT_NE(g_a.ro, 0u);
  g_a.c = MakeExported(fd, SHAREGPU_DOMAIN_SYSTEM, kP1, SHAREGPU_BROKER_RIGHT_NONE, nullptr,
                       &c_id, &cmap);
  ASSERT_NE(g_a.c, 0u);
  ASSERT_EQ(Grant(fd, g_a.c, SHAREGPU_BROKER_RIGHT_READ, "vm-c"), 0);
  EXPECT_NE(g_a.rw_id, ro_id);
  EXPECT_NE(g_a.rw_id, std::string(32, '0'));

  drm_sharegpu_bo_info info{};
  ASSERT_EQ(sgt::BoInfo(fd, g_a.rw, &info), 0);
  EXPECT_TRUE(info.flags & SHAREGPU_BO_INFO_F_BROKER_EXPORTED);
  EXPECT_EQ(info.domain, SHAREGPU_DOMAIN_SYSTEM) << "a broker export lives in SYSTEM";
  drm_sharegpu_broker_export again{};
  ASSERT_EQ(Export(fd, g_a.rw, SHAREGPU_BROKER_RIGHT_NONE, nullptr, &again), 0);
  EXPECT_EQ(Hex(again.id, sizeof(again.id)), g_a.rw_id) << "exporting again: the same id";
  // the contents went along (checked here, the importer checks its view)
  EXPECT_EQ(ReadCrc(fd, g_a.rw, g_a.rw_map), PatternCrcOf(kP1));
  Tell("vm-a: filled a 64 KiB buffer with 0x%08x (CRC32C %08x), BROKER_EXPORT: id %s, "
       "READ_WRITE granted to vm-b",
       kP1, PatternCrcOf(kP1), g_a.rw_id.c_str());
  Tell("vm-a: two more exports: one READ-only for vm-b, one granted to vm-c only; the three "
       "ids go to the other VMs through the host mailbox");

  ASSERT_EQ(sgt::MailboxPut("ids", g_a.rw_id + "," + ro_id + "," + c_id), 0);
}

// A CPU write ended with BO_CPU_ACCESS end reaches the importing VM.
TEST_F(MultiVmA, WriteAfterEndCpuAccess) {
  ASSERT_NE(g_a.rw_map, nullptr);
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("b-read-1", &v), 0) << v;
  uint32_t crc = ReadCrc(dev_->fd, g_a.rw, g_a.rw_map);
  EXPECT_EQ(crc, PatternCrcOf(kP4)) << "vm-b's FILL job wrote into vm-a's buffer";
  Tell("vm-a: after BO_CPU_ACCESS begin it reads what vm-b's job wrote: CRC32C %08x", crc);
  if (sgt::CmdlineParam("sgputest.demo") == "1") {
    Tell("vm-a: its QEMU monitor, 'info sharegpu-broker' (the export, vm-b's grant and import):");
    ASSERT_EQ(sgt::HostRequest("hmp info sharegpu-broker", &v), 0) << v;
  }
  ASSERT_EQ(sgt::CpuAccess(dev_->fd, g_a.rw, SHAREGPU_CPU_ACCESS_WRITE), 0);
  FillPattern(g_a.rw_map, kSize, kP3);
  ASSERT_EQ(sgt::CpuAccess(dev_->fd, g_a.rw, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END),
            0);
  Tell("vm-a: wrote 0x%08x over the buffer between BO_CPU_ACCESS begin and end", kP3);
  ASSERT_EQ(sgt::MailboxPut("a-wrote", "1"), 0);
}

// Barriers across VMs, on coherent=off devices (the run gives both broker devices
// coherent=off): each VM's barriers maintain its own device's cache, so a write reaches the
// other VM only through the writer's and the reader's own barriers (docs/broker.md, "Jobs
// across VMs"). vm-b checks the CPU -> device direction; here the device -> CPU one: vm-b's
// FILL without cache maintenance stays in vm-b's device cache, which vm-a's begin_cpu_access
// cannot reach (stale), until vm-b's own begin_cpu_access flushes it.
TEST_F(MultiVmA, BarriersAcrossVms) {
  ASSERT_NE(g_a.rw_map, nullptr);
  ASSERT_FALSE(dev_->coherent()) << "the multi-VM run gives the broker devices coherent=off";
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("b-primed", &v), 0) << v;
  ASSERT_EQ(sgt::CpuAccess(dev_->fd, g_a.rw, SHAREGPU_CPU_ACCESS_WRITE), 0);
  FillPattern(g_a.rw_map, kSize, kP5);
  ASSERT_EQ(sgt::CpuAccess(dev_->fd, g_a.rw, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END),
            0);
  Tell("vm-a: wrote 0x%08x with its barriers; vm-b's device still caches 0x%08x", kP5, kP3);
  ASSERT_EQ(sgt::MailboxPut("a-wrote-2", "1"), 0);

  ASSERT_EQ(sgt::MailboxGet("b-filled-unflushed", &v), 0) << v;
  uint32_t crc = ReadCrc(dev_->fd, g_a.rw, g_a.rw_map);
  EXPECT_EQ(crc, PatternCrcOf(kP5)) << "vm-b's unflushed FILL must not be visible yet";
  EXPECT_NE(crc, PatternCrcOf(kP6)) << "vm-b's FILL visible without vm-b's barrier";
  Tell("vm-a: vm-b's FILL of 0x%08x without cache maintenance is not visible after vm-a's own "
       "BO_CPU_ACCESS begin: it reads 0x%08x (stale, as it must be)",
       kP6, kP5);
  ASSERT_EQ(sgt::MailboxPut("a-saw-stale", "1"), 0);

  ASSERT_EQ(sgt::MailboxGet("b-flushed", &v), 0) << v;
  crc = ReadCrc(dev_->fd, g_a.rw, g_a.rw_map);
  EXPECT_EQ(crc, PatternCrcOf(kP6)) << "vm-b's FILL after vm-b's begin_cpu_access (its flush)";
  Tell("vm-a: after vm-b's BO_CPU_ACCESS begin flushed vm-b's device cache it reads 0x%08x",
       kP6);
  ASSERT_EQ(sgt::MailboxPut("a-saw-flushed", "1"), 0);
  ASSERT_EQ(sgt::MailboxGet("b-restored", &v), 0) << v;
  EXPECT_EQ(ReadCrc(dev_->fd, g_a.rw, g_a.rw_map), PatternCrcOf(kP3));
}

// vm-b's write attempts on its read-only import left the data as it was.
TEST_F(MultiVmA, ReadOnlyGrantUnchanged) {
  ASSERT_NE(g_a.ro_map, nullptr);
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("b-ro-done", &v), 0) << v;
  uint32_t crc = ReadCrc(dev_->fd, g_a.ro, g_a.ro_map);
  EXPECT_EQ(crc, PatternCrcOf(kP2));
  Tell("vm-a: its READ-only export still holds 0x%08x (CRC32C %08x)", kP2, crc);
}

// The host monitor relocates the exported BO (x-sharegpu-move-bo ... system): vm-b is
// invalidated and maps the new storage; the contents are intact on both sides.
TEST_F(MultiVmA, MoveInvalidatesImporter) {
  ASSERT_NE(g_a.rw, 0u);
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("b-mapped", &v), 0) << v;
  drm_sharegpu_bo_info before{}, after{};
  ASSERT_EQ(sgt::BoInfo(dev_->fd, g_a.rw, &before), 0);
  ASSERT_EQ(sgt::HostRequest("move " + dev_->pci + " " + std::to_string(before.hw_handle) +
                                 " system",
                             &v),
            0)
      << v;
  ASSERT_EQ(sgt::BoInfo(dev_->fd, g_a.rw, &after), 0);
  EXPECT_GT(after.hw_generation, before.hw_generation) << "the monitor's move relocated it";
  Tell("vm-a: its QEMU monitor relocated the export (x-sharegpu-move-bo of handle %u on the "
       "device at %s, to system): generation %llu -> %llu",
       before.hw_handle, dev_->pci.c_str(), (unsigned long long)before.hw_generation,
       (unsigned long long)after.hw_generation);
  ASSERT_EQ(sgt::MailboxPut("a-moved", std::to_string(after.hw_generation)), 0);
  ASSERT_EQ(sgt::MailboxGet("b-remapped", &v), 0) << v;
  EXPECT_EQ(ReadCrc(dev_->fd, g_a.rw, g_a.rw_map), PatternCrcOf(kP3));
}

// Withdrawing vm-c's grant revokes its import (vm-c checks); then the buffer is unexported.
TEST_F(MultiVmA, WithdrawAndUnexport) {
  ASSERT_NE(g_a.c, 0u);
  int fd = dev_->fd;
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("c-done", &v), 0) << v;
  ASSERT_EQ(Grant(fd, g_a.c, SHAREGPU_BROKER_RIGHT_NONE, "vm-c"), 0);
  ASSERT_EQ(sgt::MailboxPut("a-withdrew", "1"), 0);
  EXPECT_EQ(Grant(fd, g_a.c, SHAREGPU_BROKER_RIGHT_NONE, "vm-c"), 0)
      << "withdrawing a grant that is not there (any more) is a no-op";
  ASSERT_EQ(sgt::MailboxGet("c-refused", &v), 0) << v;
  drm_sharegpu_broker_unexport u{};
  u.handle = g_a.c;
  ASSERT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_UNEXPORT, &u), 0);
  drm_sharegpu_bo_info info{};
  ASSERT_EQ(sgt::BoInfo(fd, g_a.c, &info), 0);
  EXPECT_FALSE(info.flags & SHAREGPU_BO_INFO_F_BROKER_EXPORTED);
  EXPECT_EQ(sgt::Ioctl(fd, DRM_IOCTL_SHAREGPU_BROKER_UNEXPORT, &u), -EINVAL) << "twice";
  EXPECT_EQ(Grant(fd, g_a.c, SHAREGPU_BROKER_RIGHT_READ, "vm-c"), -EINVAL) << "unexported";
}

// The exports must outlive this process (its exit would close the DRM file: BO_DESTROY,
// unexported): a child keeps the file, silently, until the VM is killed; the hold step
// (sgpu_multivm_hold) then tells vm-b and waits for the kill.
TEST_F(MultiVmA, ExportsKeptForTheKill) {
  ASSERT_NE(g_a.rw, 0u);
  fflush(stdout);
  pid_t pid = fork();
  ASSERT_GE(pid, 0) << strerror(errno);
  if (pid == 0) {
    setsid();
    for (;;) pause();
  }
  drm_sharegpu_bo_info info{};
  ASSERT_EQ(sgt::BoInfo(dev_->fd, g_a.rw, &info), 0);
  EXPECT_TRUE(info.flags & SHAREGPU_BO_INFO_F_BROKER_EXPORTED);
  Tell("vm-a: keeps its exports alive and waits for vm-b to have its QEMU killed");
}

// ---------------------------------------------------------------- vm-b, the importer

struct BState {
  FdCount broker, qemu;  // the broker's and vm-b's QEMU's, before any export
  uint32_t rw = 0, ro = 0;
  uint32_t rw_hw = 0;  // the device's handle of the rw import (debugfs)
  uint8_t* rw_map = nullptr;
  uint8_t* ro_map = nullptr;
} g_b;

using MultiVmB = MultiVm;

TEST_F(MultiVmB, Ready) {
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("c-ready", &v), 0) << v;  // every VM is connected
  ASSERT_TRUE(HostFds("broker", &g_b.broker)) << "host agent fds broker";
  ASSERT_NO_FATAL_FAILURE(CountQemuFds(*dev_, "vm-b", &g_b.qemu));
  EXPECT_EQ(g_b.broker.memfds, 0) << "the broker holds buffers before anything was exported";
  ASSERT_EQ(sgt::MailboxPut("b-ready", "1"), 0);
  GetIds();
  Tell("vm-b: got vm-a's ids from the host mailbox");
}

// vm-b maps vm-a's pages: it reads A's data and the device copied nothing.
TEST_F(MultiVmB, ImportZeroCopy) {
  ASSERT_TRUE(g_ids.ok);
  int fd = dev_->fd;
  drm_sharegpu_broker_import imp{}, imp2{};
  ASSERT_EQ(Import(fd, g_ids.rw, &imp), 0);
  g_b.rw = imp.handle;
  EXPECT_EQ(imp.size, kSize);
  EXPECT_EQ(imp.out_flags, SHAREGPU_BROKER_IMPORT_WRITABLE);
  ASSERT_EQ(Import(fd, g_ids.rw, &imp2), 0) << "importing again";
  drm_sharegpu_bo_info i1{}, i2{};
  ASSERT_EQ(sgt::BoInfo(fd, imp.handle, &i1), 0);
  ASSERT_EQ(sgt::BoInfo(fd, imp2.handle, &i2), 0);
  EXPECT_EQ(i1.hw_handle, i2.hw_handle) << "the same id is the same device import";
  EXPECT_TRUE(i1.hw_handle & 0x80000000u) << "a remote import handle";
  EXPECT_EQ(i1.flags & (SHAREGPU_BO_INFO_F_IMPORTED | SHAREGPU_BO_INFO_F_REMOTE |
                        SHAREGPU_BO_INFO_F_READ_ONLY | SHAREGPU_BO_INFO_F_REVOKED),
            SHAREGPU_BO_INFO_F_IMPORTED | SHAREGPU_BO_INFO_F_REMOTE);
  sgt::GemClose(fd, imp2.handle);

  int64_t copied = HostCounter(*dev_, "bytes-copied");
  ASSERT_GE(copied, 0) << "host agent counter";
  g_b.rw_map = static_cast<uint8_t*>(sgt::BoMmap(fd, g_b.rw, kSize));
  ASSERT_NE(g_b.rw_map, nullptr) << strerror(errno);
  uint32_t crc = 0;
  ASSERT_EQ(sgt::ProbeCrc(g_b.rw_map, kSize, &crc), 0);
  EXPECT_EQ(crc, PatternCrcOf(kP1)) << "vm-a's data through the import window";
  int64_t copied_after = HostCounter(*dev_, "bytes-copied");
  EXPECT_EQ(copied_after, copied) << "zero copy: the device copied";
  RemoteRow row = DebugfsRemote(*dev_, i1.hw_handle);
  EXPECT_TRUE(row.found) << "the remote import is not in debugfs sharegpu_bos";
  EXPECT_EQ(row.access, "rw");
  EXPECT_EQ(row.mapped, 1u) << "mapped in the import window after the first touch";
  EXPECT_EQ(row.revoked, 0u);
  g_b.rw_hw = i1.hw_handle;
  Tell("vm-b: BROKER_IMPORT %s: handle %u (remote, writable), mmap'ed; reads CRC32C %08x = "
       "vm-a's 0x%08x",
       Hex(g_ids.rw, 16).c_str(), g_b.rw, crc, kP1);
  Tell("vm-b: its device's bytes-copied counter (QMP query-sharegpu) %lld before the read, %lld "
       "after: zero copy, these are vm-a's pages",
       (long long)copied, (long long)copied_after);

  // contract 1.7: vm-b's jobs run on vm-a's pages, with nothing copied either
  int64_t job_crc = sgt::Checksum(fd, g_b.rw, 0, kSize);
  EXPECT_EQ(job_crc, static_cast<int64_t>(PatternCrcOf(kP1))) << "vm-b's job reads vm-a's data";
  ASSERT_EQ(sgt::Fill(fd, g_b.rw, 0, kSize, kP4, SHAREGPU_SUBMIT_F_WAIT), 0);
  EXPECT_EQ(sgt::Checksum(fd, g_b.rw, 0, kSize), static_cast<int64_t>(PatternCrcOf(kP4)));
  ASSERT_EQ(sgt::CpuAccess(fd, g_b.rw, SHAREGPU_CPU_ACCESS_READ), 0);
  ASSERT_EQ(sgt::ProbeCrc(g_b.rw_map, kSize, &crc), 0);
  ASSERT_EQ(sgt::CpuAccess(fd, g_b.rw, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END), 0);
  EXPECT_EQ(crc, PatternCrcOf(kP4)) << "the job's FILL through the import window";
  int64_t copied_jobs = HostCounter(*dev_, "bytes-copied");
  EXPECT_EQ(copied_jobs, copied) << "zero copy: the jobs made the device copy";
  Tell("vm-b: a CHECKSUM job on the import reads %08llx = vm-a's data; a FILL job wrote "
       "0x%08x into vm-a's pages; bytes-copied still %lld",
       (long long)job_crc, kP4, (long long)copied_jobs);
  ASSERT_EQ(sgt::MailboxPut("b-read-1", "1"), 0);
}

TEST_F(MultiVmB, SeesWriteAfterBeginCpuAccess) {
  ASSERT_NE(g_b.rw_map, nullptr);
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("a-wrote", &v), 0) << v;
  ASSERT_EQ(sgt::CpuAccess(dev_->fd, g_b.rw, SHAREGPU_CPU_ACCESS_READ), 0);
  uint32_t crc = 0;
  ASSERT_EQ(sgt::ProbeCrc(g_b.rw_map, kSize, &crc), 0);
  EXPECT_EQ(crc, PatternCrcOf(kP3)) << "vm-a's write after its end_cpu_access";
  ASSERT_EQ(sgt::CpuAccess(dev_->fd, g_b.rw, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END),
            0);
  Tell("vm-b: after BO_CPU_ACCESS begin it reads vm-a's new data: CRC32C %08x", crc);
}

// vm-a's side says what this checks in the device -> CPU direction; here CPU -> device too:
// vm-a's CPU write with vm-a's barriers is not seen by vm-b's job without cache maintenance
// (vm-b's device serves its cached lines), and is with it (CACHE_INVALIDATE first).
TEST_F(MultiVmB, BarriersAcrossVms) {
  ASSERT_NE(g_b.rw_map, nullptr);
  ASSERT_FALSE(dev_->coherent()) << "the multi-VM run gives the broker devices coherent=off";
  int fd = dev_->fd;
  constexpr uint32_t kNoMaint = SHAREGPU_SUBMIT_F_NO_CACHE_MAINT;
  // a job with maintenance reads vm-a's kP3 and leaves those lines in vm-b's device cache
  ASSERT_EQ(sgt::Checksum(fd, g_b.rw, 0, kSize), static_cast<int64_t>(PatternCrcOf(kP3)));
  ASSERT_EQ(sgt::MailboxPut("b-primed", "1"), 0);
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("a-wrote-2", &v), 0) << v;
  int64_t stale = sgt::Checksum(fd, g_b.rw, 0, kSize, kNoMaint);
  EXPECT_EQ(stale, static_cast<int64_t>(PatternCrcOf(kP3)))
      << "vm-b's device must still serve its cached lines: vm-a's barrier is vm-a's";
  int64_t fresh = sgt::Checksum(fd, g_b.rw, 0, kSize);
  EXPECT_EQ(fresh, static_cast<int64_t>(PatternCrcOf(kP5))) << "after CACHE_INVALIDATE";
  Tell("vm-b: vm-a's CPU write of 0x%08x: a CHECKSUM job without cache maintenance reads "
       "%08llx (vm-b's cached 0x%08x, stale), with it %08llx",
       kP5, (long long)stale, kP3, (long long)fresh);

  ASSERT_EQ(sgt::Fill(fd, g_b.rw, 0, kSize, kP6, kNoMaint), 0);
  ASSERT_EQ(sgt::MailboxPut("b-filled-unflushed", "1"), 0);
  ASSERT_EQ(sgt::MailboxGet("a-saw-stale", &v), 0) << v;
  uint32_t crc = ReadCrc(fd, g_b.rw, g_b.rw_map);  // its begin flushes vm-b's device cache
  EXPECT_EQ(crc, PatternCrcOf(kP6)) << "vm-b's begin_cpu_access must flush its device's writes";
  Tell("vm-b: its FILL of 0x%08x without cache maintenance, then its BO_CPU_ACCESS begin "
       "flushed it to vm-a's pages: CRC32C %08x",
       kP6, crc);
  ASSERT_EQ(sgt::MailboxPut("b-flushed", "1"), 0);
  ASSERT_EQ(sgt::MailboxGet("a-saw-flushed", &v), 0) << v;
  ASSERT_EQ(sgt::Fill(fd, g_b.rw, 0, kSize, kP3), 0);  // what the later cases expect
  ASSERT_EQ(sgt::MailboxPut("b-restored", "1"), 0);
}

// A READ grant: mapped read-only; every way to write is refused (vm-a checks its data).
TEST_F(MultiVmB, ReadOnlyGrant) {
  ASSERT_TRUE(g_ids.ok);
  int fd = dev_->fd;
  drm_sharegpu_broker_import imp{};
  ASSERT_EQ(Import(fd, g_ids.ro, &imp), 0);
  g_b.ro = imp.handle;
  EXPECT_EQ(imp.out_flags, 0u) << "a READ grant is not writable";
  drm_sharegpu_bo_info info{};
  ASSERT_EQ(sgt::BoInfo(fd, g_b.ro, &info), 0);
  EXPECT_TRUE(info.flags & SHAREGPU_BO_INFO_F_READ_ONLY);
  EXPECT_EQ(DebugfsRemote(*dev_, info.hw_handle).access, "ro") << "debugfs sharegpu_bos";
  uint64_t off = 0;
  ASSERT_EQ(MmapOffset(fd, g_b.ro, &off), 0);
  void* w = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
  const int w_errno = errno;
  EXPECT_EQ(w, MAP_FAILED) << "a writable mapping of a READ grant";
  if (w == MAP_FAILED) {
    EXPECT_EQ(w_errno, EACCES);
  } else {
    // the driver let it through: write, so vm-a's check shows whether the device refuses
    FillPattern(static_cast<uint8_t*>(w), kSize, 0xbad0bad0);
    munmap(w, kSize);
  }
  void* r = mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd, off);
  ASSERT_NE(r, MAP_FAILED) << strerror(errno);
  g_b.ro_map = static_cast<uint8_t*>(r);
  uint32_t crc = 0;
  ASSERT_EQ(sgt::ProbeCrc(r, kSize, &crc), 0);
  EXPECT_EQ(crc, PatternCrcOf(kP2));
  EXPECT_EQ(mprotect(r, kSize, PROT_READ | PROT_WRITE), -1) << "made writable later";
  int fill_ret = sgt::Fill(fd, g_b.ro, 0, 4096, 0xdeadbeef, SHAREGPU_SUBMIT_F_WAIT);
  EXPECT_EQ(fill_ret, -EACCES) << "a job writing a READ grant";
  sgt::ScopedBo local;
  ASSERT_EQ(local.Create(fd, kSize, SHAREGPU_DOMAIN_SYSTEM), 0);
  EXPECT_EQ(sgt::Copy(fd, g_b.ro, 0, local.handle, 0, 4096, SHAREGPU_SUBMIT_F_WAIT), -EACCES)
      << "a COPY into a READ grant";
  ASSERT_EQ(sgt::Copy(fd, local.handle, 0, g_b.ro, 0, kSize, SHAREGPU_SUBMIT_F_WAIT), 0)
      << "a COPY out of a READ grant";
  int64_t job_crc = sgt::Checksum(fd, local.handle, 0, kSize);
  EXPECT_EQ(job_crc, static_cast<int64_t>(PatternCrcOf(kP2))) << "copied out by a job";
  Tell("vm-b: the READ-only grant: reads CRC32C %08x; a writable mmap() is refused (%s), so "
       "are mprotect() to writable and jobs that write it (%s); a job copies it out (%08llx)",
       crc, w == MAP_FAILED ? strerrorname_np(w_errno) : "allowed!", ErrName(fill_ret),
       (long long)job_crc);
  ASSERT_EQ(sgt::MailboxPut("b-ro-done", "1"), 0);
}

// vm-a granted vm-c, not vm-b: refused (the broker tells vm-a's host).
TEST_F(MultiVmB, UngrantedRefused) {
  ASSERT_TRUE(g_ids.ok);
  int ret = Import(dev_->fd, g_ids.c, nullptr);
  EXPECT_EQ(ret, -EACCES);
  Tell("vm-b: BROKER_IMPORT of the buffer granted to vm-c only: %s", ErrName(ret));
}

// vm-a's BO is relocated: this import is invalidated (the window mapping dropped), the
// next access maps the new storage, and the data is intact.
TEST_F(MultiVmB, MoveInvalidates) {
  ASSERT_NE(g_b.rw_map, nullptr);
  int fd = dev_->fd;
  uint32_t crc = 0;
  ASSERT_EQ(sgt::ProbeCrc(g_b.rw_map, kSize, &crc), 0);  // mapped now
  drm_sharegpu_bo_info info{};
  ASSERT_EQ(sgt::BoInfo(fd, g_b.rw, &info), 0);
  ASSERT_NE(info.vram_offset, kNoOff) << "mapped in the import window";
  int64_t inval = sgt::Counter(*dev_, "evt_invalidated");
  ASSERT_GE(inval, 0);
  ASSERT_EQ(sgt::MailboxPut("b-mapped", "1"), 0);
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("a-moved", &v), 0) << v;
  // the event is asynchronous: a deadline as failure detector
  EXPECT_TRUE(sgt::WaitUntil([&] { return sgt::Counter(*dev_, "evt_invalidated") > inval; },
                             60000))
      << "no BO_INVALIDATED after vm-a's move";
  ASSERT_EQ(sgt::BoInfo(fd, g_b.rw, &info), 0);
  EXPECT_EQ(info.vram_offset, kNoOff) << "the invalidation dropped the window mapping";
  Tell("vm-b: BO_INVALIDATED (debugfs evt_invalidated %lld -> %lld): the window mapping is "
       "dropped",
       (long long)inval, (long long)sgt::Counter(*dev_, "evt_invalidated"));
  // the old mapping's first access faults and maps the new storage (a CPU page table entry
  // left behind would read the unmapped window range: 0xff..ff)
  ASSERT_EQ(sgt::ProbeCrc(g_b.rw_map, kSize, &crc), 0) << "re-mapping the new storage";
  EXPECT_EQ(crc, PatternCrcOf(kP3)) << "data intact after the move, read through a fault";
  Tell("vm-b: the next read faulted the new storage in: CRC32C %08x, intact", crc);
  ASSERT_EQ(sgt::CpuAccess(fd, g_b.rw, SHAREGPU_CPU_ACCESS_READ), 0);
  ASSERT_EQ(sgt::ProbeCrc(g_b.rw_map, kSize, &crc), 0);
  EXPECT_EQ(crc, PatternCrcOf(kP3)) << "data intact after the move";
  ASSERT_EQ(sgt::CpuAccess(fd, g_b.rw, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END), 0);
  ASSERT_EQ(sgt::BoInfo(fd, g_b.rw, &info), 0);
  EXPECT_NE(info.vram_offset, kNoOff) << "mapped again";
  EXPECT_EQ(sgt::Checksum(fd, g_b.rw, 0, kSize), static_cast<int64_t>(PatternCrcOf(kP3)))
      << "a job after the invalidation runs on the new storage";
  ASSERT_EQ(sgt::MailboxPut("b-remapped", "1"), 0);
}

// kill -9 of vm-a's QEMU: both imports are revoked; afterwards everything on them fails
// with -ENODEV (faults SIGBUS) at once.
TEST_F(MultiVmB, ExporterKilledRevokes) {
  ASSERT_NE(g_b.rw, 0u);
  ASSERT_NE(g_b.ro, 0u);
  int fd = dev_->fd;
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("a-holding", &v), 0) << v;
  int64_t revoked = sgt::Counter(*dev_, "evt_revoked");
  ASSERT_GE(revoked, 0);
  ASSERT_EQ(sgt::HostRequest("kill-vm vm-a", &v), 0) << v;
  EXPECT_TRUE(sgt::WaitUntil([&] { return sgt::Counter(*dev_, "evt_revoked") >= revoked + 2; },
                             60000))
      << "no BO_REVOKED for both imports after vm-a was killed";
  int64_t t0 = NowMs();
  int mmap_ret = 0, access_ret = 0, job_ret = 0;
  uint32_t reason = 0;
  for (uint32_t h : {g_b.rw, g_b.ro}) {
    drm_sharegpu_bo_info info{};
    ASSERT_EQ(sgt::BoInfo(fd, h, &info), 0) << "BO_INFO of a revoked import still works";
    EXPECT_TRUE(info.flags & SHAREGPU_BO_INFO_F_REVOKED);
    EXPECT_EQ(info.revoke_reason, 2u) << "SGHW_REVOKE_EXPORTER_GONE";
    EXPECT_EQ(info.vram_offset, kNoOff);
    reason = info.revoke_reason;
    uint64_t off;
    EXPECT_EQ(mmap_ret = MmapOffset(fd, h, &off), -ENODEV);
    EXPECT_EQ(access_ret = sgt::CpuAccess(fd, h, SHAREGPU_CPU_ACCESS_READ), -ENODEV);
    EXPECT_EQ(job_ret = sgt::Fill(fd, h, 0, 4096, 0, SHAREGPU_SUBMIT_F_WAIT), -ENODEV);
  }
  RemoteRow row = DebugfsRemote(*dev_, g_b.rw_hw);
  EXPECT_TRUE(row.found) << "a revoked import is still listed while its handle lives";
  EXPECT_EQ(row.revoked, 1u);
  EXPECT_EQ(row.reason, 2u);
  uint32_t crc = 0;
  int fault_ret = sgt::ProbeCrc(g_b.rw_map, kSize, &crc);
  EXPECT_EQ(fault_ret, -EFAULT) << "a fault on a revoked import";
  EXPECT_EQ(sgt::ProbeCrc(g_b.ro_map, kSize, &crc), -EFAULT);
  int import_ret = Import(fd, g_ids.rw, nullptr);
  EXPECT_EQ(import_ret, -ENODEV) << "the id of a revoked import";
  int64_t took = NowMs() - t0;
  EXPECT_LT(took, 10000) << "the revoked import made callers wait";
  Tell("vm-b: the host killed vm-a's QEMU (kill -9): both imports revoked, BO_INFO "
       "revoke_reason %u (exporting VM gone)",
       reason);
  Tell("vm-b: now BO_MMAP_OFFSET %s, BO_CPU_ACCESS %s, a job %s, BROKER_IMPORT %s, a read "
       "of the old mapping %s; all in %lld ms, nothing waited for the dead VM",
       ErrName(mmap_ret), ErrName(access_ret), ErrName(job_ret), ErrName(import_ret),
       fault_ret == -EFAULT ? "faults (SIGBUS)" : "does not fault (!)", (long long)took);
}

// The broker holds no descriptor of the dead exporter or of the released imports, and
// vm-b's QEMU no more than before it imported.
TEST_F(MultiVmB, BrokerFdsReleased) {
  ASSERT_GE(g_b.broker.total, 0);
  int fd = dev_->fd;
  if (g_b.rw_map) munmap(g_b.rw_map, kSize);
  if (g_b.ro_map) munmap(g_b.ro_map, kSize);
  g_b.rw_map = g_b.ro_map = nullptr;
  sgt::GemClose(fd, g_b.rw);
  sgt::GemClose(fd, g_b.ro);
  // one fewer: vm-a's connection; vm-b and vm-c are still connected
  FdCount broker = ExpectHostFds("broker", {g_b.broker.total - 1, g_b.broker.memfds},
                                 "without vm-a, the imports released");
  FdCount qemu = ExpectHostFds("vm-b", g_b.qemu, "after the imports were released");
  Tell("vm-b: imports closed; the broker holds %ld descriptors (%ld before the exports, with "
       "vm-a connected) and %ld memfds; vm-b's QEMU %ld (%ld before importing)",
       broker.total, g_b.broker.total, broker.memfds, qemu.total, g_b.qemu.total);
  ASSERT_EQ(sgt::MailboxPut("b-done", "1"), 0);  // vm-c may go
}

// The broker is killed (-9) and started again while vm-c imports a buffer of vm-b's (vm-c's
// side: MultiVmC.BrokerRestartRevokesImport). vm-b's export is lost (BO_REVOKED with the
// EXPORT flag clears BROKER_EXPORTED); its buffers, exported or not, keep their contents and
// its jobs run. Once QEMU has reconnected (it retries every second) the BO is exported again,
// under a new id, and vm-c imports that and reads the same data.
TEST_F(MultiVmB, BrokerRestartKeepsLocalBuffers) {
  int fd = dev_->fd;
  std::string first, v;
  uint8_t* map = nullptr;
  uint32_t h = MakeExported(fd, SHAREGPU_DOMAIN_SYSTEM, kP5, SHAREGPU_BROKER_RIGHT_READ, "vm-c",
                            &first, &map);
  ASSERT_NE(h, 0u);
  sgt::ScopedBo exported;
  exported.Adopt(fd, h, kSize);
  exported.map = map;
  sgt::ScopedBo local;  // never exported
  ASSERT_EQ(local.Create(fd, kSize, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_EQ(sgt::Fill(fd, local.handle, 0, kSize, kP6, SHAREGPU_SUBMIT_F_WAIT), 0);
  ASSERT_EQ(sgt::MailboxPut("b-restart-id", first), 0);
  ASSERT_EQ(sgt::MailboxGet("c-imported", &v), 0) << v;

  int64_t revoked = sgt::Counter(*dev_, "evt_revoked");
  ASSERT_GE(revoked, 0);
  ASSERT_EQ(sgt::HostRequest("restart-broker", &v), 0) << v;
  EXPECT_TRUE(sgt::WaitUntil([&] { return sgt::Counter(*dev_, "evt_revoked") > revoked; },
                             60000))
      << "no BO_REVOKED (EXPORT) after the broker was lost";
  drm_sharegpu_bo_info info{};
  ASSERT_EQ(sgt::BoInfo(fd, h, &info), 0);
  EXPECT_FALSE(info.flags & SHAREGPU_BO_INFO_F_BROKER_EXPORTED) << "the export was lost";
  EXPECT_FALSE(info.flags & SHAREGPU_BO_INFO_F_REVOKED) << "a local BO is never revoked";

  // this VM's own buffers: contents kept, the CPU barriers and jobs work
  EXPECT_EQ(ReadCrc(fd, h, map), PatternCrcOf(kP5)) << "the lost export's contents";
  EXPECT_EQ(sgt::Checksum(fd, h, 0, kSize), static_cast<int64_t>(PatternCrcOf(kP5)));
  EXPECT_EQ(sgt::Checksum(fd, local.handle, 0, kSize), static_cast<int64_t>(PatternCrcOf(kP6)))
      << "a buffer never exported";
  ASSERT_EQ(sgt::Fill(fd, local.handle, 0, kSize, kP1, SHAREGPU_SUBMIT_F_WAIT), 0);
  EXPECT_EQ(sgt::Checksum(fd, local.handle, 0, kSize), static_cast<int64_t>(PatternCrcOf(kP1)));

  // -ENODEV until QEMU has reconnected: a deadline as failure detector
  drm_sharegpu_broker_export again{};
  int ret = -1;
  EXPECT_TRUE(sgt::WaitUntil(
      [&] {
        ret = Export(fd, h, SHAREGPU_BROKER_RIGHT_READ, "vm-c", &again);
        return ret != -ENODEV;
      },
      60000));
  ASSERT_EQ(ret, 0) << "exporting after the broker came back";
  const std::string second = Hex(again.id, sizeof(again.id));
  EXPECT_NE(second, first) << "a new id";
  ASSERT_EQ(sgt::BoInfo(fd, h, &info), 0);
  EXPECT_TRUE(info.flags & SHAREGPU_BO_INFO_F_BROKER_EXPORTED);
  ASSERT_EQ(sgt::MailboxPut("b-restart-id2", second), 0);
  // vm-c reads it through the new broker before this VM unexports (closes) it
  ASSERT_EQ(sgt::MailboxGet("c-reimported", &v), 0) << v;
  exported.reset();
  ExpectHostFds("vm-b", g_b.qemu, "after the broker restart, the export closed");
  Tell("vm-b: the broker was killed and restarted: the export was lost and made again as %s; "
       "the buffers kept their contents",
       second.c_str());
}

// ---------------------------------------------------------------- vm-c, a third VM

struct CState {
  uint32_t h = 0;  // the import of the buffer granted to vm-c
  void* map = nullptr;
  FdCount qemu;  // vm-c's QEMU's descriptors before anything was granted to it
} g_c;

using MultiVmC = MultiVm;

TEST_F(MultiVmC, Ready) {
  ASSERT_NO_FATAL_FAILURE(CountQemuFds(*dev_, "vm-c", &g_c.qemu));
  ASSERT_EQ(sgt::MailboxPut("c-ready", "1"), 0);  // vm-a exports only after it
  GetIds();
}

// A READ grant's import refuses a writable mapping: maps it read-only, owned by `bo`.
uint8_t* MapReadOnly(sgt::ScopedBo* bo) {
  uint64_t off = 0;
  if (MmapOffset(bo->fd, bo->handle, &off)) return nullptr;
  void* p = mmap(nullptr, bo->size, PROT_READ, MAP_SHARED, bo->fd, off);
  if (p == MAP_FAILED) return nullptr;
  bo->map = p;
  return static_cast<uint8_t*>(p);
}

// vm-a granted vm-c READ on its third buffer: imported, read-only, vm-a's data.
TEST_F(MultiVmC, GrantedImportReads) {
  ASSERT_TRUE(g_ids.ok);
  int fd = dev_->fd;
  drm_sharegpu_broker_import imp{};
  ASSERT_EQ(Import(fd, g_ids.c, &imp), 0);
  g_c.h = imp.handle;
  EXPECT_EQ(imp.out_flags, 0u) << "a READ grant";
  uint64_t off = 0;
  ASSERT_EQ(MmapOffset(fd, imp.handle, &off), 0);
  void* r = mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd, off);
  ASSERT_NE(r, MAP_FAILED) << strerror(errno);
  g_c.map = r;
  uint32_t crc = 0;
  EXPECT_EQ(sgt::ProbeCrc(r, kSize, &crc), 0);
  EXPECT_EQ(crc, PatternCrcOf(kP1));
}

// The buffers granted to vm-b only: refused to vm-c, whatever the right.
TEST_F(MultiVmC, NotGrantedRefused) {
  ASSERT_TRUE(g_ids.ok);
  EXPECT_EQ(Import(dev_->fd, g_ids.rw, nullptr), -EACCES) << "vm-b's read-write grant";
  EXPECT_EQ(Import(dev_->fd, g_ids.ro, nullptr), -EACCES) << "vm-b's read-only grant";
}

// vm-a withdraws vm-c's grant (BROKER_GRANT right 0): the import is revoked at once, with
// that reason; after releasing it vm-c is refused like any VM without a grant.
TEST_F(MultiVmC, WithdrawnGrantRevokes) {
  ASSERT_NE(g_c.map, nullptr);
  int fd = dev_->fd;
  int64_t revoked = sgt::Counter(*dev_, "evt_revoked");
  ASSERT_GE(revoked, 0);
  ASSERT_EQ(sgt::MailboxPut("c-done", "1"), 0);
  std::string v;
  ASSERT_EQ(sgt::MailboxGet("a-withdrew", &v), 0) << v;
  ExpectRevoked(*dev_, g_c.h, revoked, 3, "vm-a withdrew the grant");  // GRANT_WITHDRAWN
  uint32_t crc = 0;
  EXPECT_EQ(sgt::ProbeCrc(g_c.map, kSize, &crc), -EFAULT) << "a fault on a revoked import";
  uint64_t off;
  EXPECT_EQ(MmapOffset(fd, g_c.h, &off), -ENODEV);
  EXPECT_EQ(Import(fd, g_ids.c, nullptr), -ENODEV) << "the id of a revoked import";
  munmap(g_c.map, kSize);
  g_c.map = nullptr;
  sgt::GemClose(fd, g_c.h);
  // released: now it is a VM without a grant (vm-a unexports only after c-refused)
  EXPECT_EQ(Import(fd, g_ids.c, nullptr), -EACCES) << "import after the withdrawal";
  ExpectHostFds("vm-c", g_c.qemu, "after the revoked import was released");
  ASSERT_EQ(sgt::MailboxPut("c-refused", "1"), 0);
  // stay connected until vm-b has counted the broker's descriptors
  ASSERT_EQ(sgt::MailboxGet("b-done", &v), 0) << v;
}

// The broker dies while vm-c has vm-b's buffer imported and mapped: the import is revoked
// with reason BROKER_GONE and fails like any revoked import; vm-c's own buffer keeps its
// contents and its jobs run; once both QEMUs have reconnected, vm-b's new export is
// imported and read through the new broker.
TEST_F(MultiVmC, BrokerRestartRevokesImport) {
  int fd = dev_->fd;
  sgt::ScopedBo local;
  ASSERT_EQ(local.Create(fd, kSize, SHAREGPU_DOMAIN_SYSTEM), 0);
  ASSERT_EQ(sgt::Fill(fd, local.handle, 0, kSize, kP3, SHAREGPU_SUBMIT_F_WAIT), 0);
  std::string hex;
  uint8_t first[16], second[16];
  ASSERT_EQ(sgt::MailboxGet("b-restart-id", &hex), 0) << hex;
  ASSERT_TRUE(Unhex(hex, first, sizeof(first))) << hex;
  drm_sharegpu_broker_import imp{};
  ASSERT_EQ(Import(fd, first, &imp), 0);
  sgt::ScopedBo import;
  import.Adopt(fd, imp.handle, kSize);
  uint8_t* map = MapReadOnly(&import);
  ASSERT_NE(map, nullptr) << strerror(errno);
  uint32_t crc = 0;
  ASSERT_EQ(sgt::ProbeCrc(map, kSize, &crc), 0);
  EXPECT_EQ(crc, PatternCrcOf(kP5)) << "vm-b's data";
  int64_t revoked = sgt::Counter(*dev_, "evt_revoked");
  ASSERT_GE(revoked, 0);
  ASSERT_EQ(sgt::MailboxPut("c-imported", "1"), 0);  // vm-b restarts the broker now

  ExpectRevoked(*dev_, imp.handle, revoked, 5, "the broker was lost");  // BROKER_GONE
  EXPECT_EQ(sgt::ProbeCrc(map, kSize, &crc), -EFAULT) << "a fault on a revoked import";
  uint64_t off;
  EXPECT_EQ(MmapOffset(fd, imp.handle, &off), -ENODEV);
  EXPECT_EQ(sgt::Fill(fd, imp.handle, 0, 4096, 0, SHAREGPU_SUBMIT_F_WAIT), -ENODEV);
  import.reset();

  // this VM's own buffer: contents kept, jobs and the CPU barriers work
  EXPECT_EQ(sgt::Checksum(fd, local.handle, 0, kSize), static_cast<int64_t>(PatternCrcOf(kP3)));
  ASSERT_EQ(sgt::Fill(fd, local.handle, 0, kSize, kP4, SHAREGPU_SUBMIT_F_WAIT), 0);
  uint8_t* lmap = local.Map();
  ASSERT_NE(lmap, nullptr) << strerror(errno);
  EXPECT_EQ(ReadCrc(fd, local.handle, lmap), PatternCrcOf(kP4));

  // vm-b's export made again through the new broker: -ENODEV until this VM's QEMU has
  // reconnected too (a deadline as failure detector)
  ASSERT_EQ(sgt::MailboxGet("b-restart-id2", &hex), 0) << hex;
  ASSERT_TRUE(Unhex(hex, second, sizeof(second))) << hex;
  int ret = -1;
  EXPECT_TRUE(sgt::WaitUntil(
      [&] {
        ret = Import(fd, second, &imp);
        return ret != -ENODEV;
      },
      60000));
  ASSERT_EQ(ret, 0) << "importing vm-b's new export";
  import.Adopt(fd, imp.handle, kSize);
  map = MapReadOnly(&import);
  ASSERT_NE(map, nullptr) << strerror(errno);
  ASSERT_EQ(sgt::ProbeCrc(map, kSize, &crc), 0);
  EXPECT_EQ(crc, PatternCrcOf(kP5)) << "vm-b's data through the new broker";
  import.reset();
  ExpectHostFds("vm-c", g_c.qemu, "after the broker restart, the imports released");
  ASSERT_EQ(sgt::MailboxPut("c-reimported", "1"), 0);
}

}  // namespace
