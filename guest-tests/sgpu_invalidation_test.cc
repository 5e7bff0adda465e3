// SPDX-License-Identifier: GPL-2.0
// Invalidation end to end (dynamic dma-buf, rule S5a): the importer holds a live mapping,
// the exporter moves the BO (BO_MOVE ioctl, or the host monitor's x-sharegpu-move-bo through
// the host agent), the importer gets move_notify (debugfs counters), re-maps and the data is
// intact; a pinned BO refuses the move with -EBUSY.
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sgpu_common.h"

using namespace sgt;

namespace {

constexpr size_t kSize = 256 * 1024;

class InvalidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    exp_ = FindDev(true);
    imp_ = FindDev(false);
    ASSERT_NE(exp_, nullptr);
    ASSERT_NE(imp_, nullptr);
    ASSERT_FALSE(Counters(*imp_).empty())
        << "debugfs counters unreadable: " << imp_->debugfs_dir() << "/sharegpu_counters";
  }

  void WriteThroughImportDuringMoves(int moves, const std::function<int(int)>& move);

  // The importing device's window-faults counter (QMP, through the host agent); -1 on error.
  int64_t HostWindowFaults() {
    std::string reply;
    if (HostRequest("counter " + imp_->pci + " window-faults", &reply) != 0) {
      ADD_FAILURE() << "counter request failed: " << reply;
      return -1;
    }
    return std::stoll(reply);
  }

  // Exporter BO with random data (VRAM), exported and imported on the other device; the
  // importer has a live device mapping (a checksum job) and a live CPU mapping (window).
  void Share(uint32_t seed) {
    ASSERT_EQ(x_.Create(exp_->fd, kSize, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM), 0);
    ASSERT_EQ(BoMove(exp_->fd, x_.handle, SHAREGPU_DOMAIN_VRAM), 0);
    ASSERT_NE(x_.Map(), nullptr);
    ASSERT_EQ(CpuAccess(exp_->fd, x_.handle, SHAREGPU_CPU_ACCESS_WRITE), 0);
    FillRandom(x_.map, kSize, seed);
    crc_ = Crc32c(x_.map, kSize);
    ASSERT_EQ(CpuAccess(exp_->fd, x_.handle, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END),
              0);
    x_.Unmap();  // the exporter keeps no CPU mapping across moves (hardware.md section 4)
    dmabuf_.reset(ExportFd(exp_->fd, x_.handle));
    ASSERT_GE(dmabuf_.get(), 0);
    uint32_t h = 0;
    ASSERT_EQ(ImportFd(imp_->fd, dmabuf_.get(), &h), 0);
    y_.Adopt(imp_->fd, h, kSize);
    ASSERT_EQ(Checksum(imp_->fd, y_.handle, 0, kSize), crc_);
    ASSERT_NE(y_.Map(), nullptr) << strerror(errno);
    uint32_t c = 0;
    ASSERT_EQ(ProbeCrc(y_.map, kSize, &c), 0)
        << "SIGBUS reading the importer's window mapping (MAP_IMPORT failed?)";
    ASSERT_EQ(c, crc_) << "import window mapping shows other bytes";
  }

  void ExpectIntactThroughImport(const char* when) {
    SCOPED_TRACE(when);
    // CPU: the window mapping was zapped on invalidation; touching it re-faults and re-maps
    uint32_t c = 0;
    EXPECT_EQ(ProbeCrc(y_.map, kSize, &c), 0) << "SIGBUS re-faulting the importer's mapping";
    EXPECT_EQ(c, crc_) << "importer CPU mapping after the move";
    // device: the next job re-maps the attachment
    EXPECT_EQ(Checksum(imp_->fd, y_.handle, 0, kSize), crc_) << "importer job after the move";
    drm_sharegpu_bo_info yi{};
    ASSERT_EQ(BoInfo(imp_->fd, y_.handle, &yi), 0);
    EXPECT_NE(yi.vram_offset, kNoOffset) << "import not re-mapped in the window";
  }

  Dev* exp_ = nullptr;
  Dev* imp_ = nullptr;
  ScopedBo x_, y_;
  ScopedFd dmabuf_;
  uint32_t crc_ = 0;
};

TEST_F(InvalidationTest, ExporterMoveNotifiesImporterWhichRemaps) {
  ASSERT_NO_FATAL_FAILURE(Share(1));
  drm_sharegpu_bo_info xi{};
  ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
  ASSERT_EQ(xi.domain, SHAREGPU_DOMAIN_VRAM);
  uint64_t gen0 = xi.hw_generation;

  uint32_t domains[] = {SHAREGPU_DOMAIN_SYSTEM, SHAREGPU_DOMAIN_VRAM, SHAREGPU_DOMAIN_SYSTEM,
                        SHAREGPU_DOMAIN_VRAM};
  int moves = 0;
  for (uint32_t dom : domains) {
    int64_t notifies = Counter(*imp_, "move_notifies");
    int64_t evt_inval = Counter(*imp_, "evt_invalidated");
    ASSERT_EQ(BoMove(exp_->fd, x_.handle, dom), 0);
    moves++;
    // move_notify runs synchronously inside the exporter's move
    EXPECT_GT(Counter(*imp_, "move_notifies"), notifies) << "importer got no move_notify";
    // the device's BO_INVALIDATED event arrives asynchronously (event ring + IRQ)
    EXPECT_TRUE(WaitUntil([&] { return Counter(*imp_, "evt_invalidated") > evt_inval; }, 20000))
        << "no BO_INVALIDATED event on the importer";
    ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
    EXPECT_EQ(xi.domain, dom);
    EXPECT_EQ(xi.hw_placement, dom == SHAREGPU_DOMAIN_VRAM ? 0u : 1u) << "device disagrees";
    ASSERT_NO_FATAL_FAILURE(ExpectIntactThroughImport(dom == SHAREGPU_DOMAIN_VRAM ? "vram"
                                                                                 : "system"));
  }
  ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
  EXPECT_GE(xi.hw_generation, gen0 + moves) << "device generation did not bump per move";
  std::string bos = ReadFile(imp_->debugfs_dir() + "/sharegpu_bos");
  printf("[ info     ] importer debugfs:\n%s", bos.c_str());
}

TEST_F(InvalidationTest, PinnedExportRefusesMove) {
  ASSERT_NO_FATAL_FAILURE(Share(2));
  uint32_t pins = 0;
  ASSERT_EQ(BoPin(exp_->fd, x_.handle, false, &pins), 0);
  EXPECT_GE(pins, 1u);
  int64_t notifies = Counter(*imp_, "move_notifies");
  EXPECT_EQ(BoMove(exp_->fd, x_.handle, SHAREGPU_DOMAIN_SYSTEM), -EBUSY);
  drm_sharegpu_bo_info xi{};
  ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
  EXPECT_EQ(xi.domain, SHAREGPU_DOMAIN_VRAM);
  EXPECT_EQ(xi.hw_placement, 0u);
  EXPECT_TRUE(xi.flags & SHAREGPU_BO_INFO_F_PINNED);
  EXPECT_GE(xi.hw_pin_count, 1u) << "pinned in the driver but not on the device";
  EXPECT_EQ(Counter(*imp_, "move_notifies"), notifies) << "refused move notified the importer";
  // moving to where it already is is fine even when pinned
  EXPECT_EQ(BoMove(exp_->fd, x_.handle, SHAREGPU_DOMAIN_VRAM), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectIntactThroughImport("pinned"));
  ASSERT_EQ(BoPin(exp_->fd, x_.handle, true, &pins), 0);
  EXPECT_EQ(BoMove(exp_->fd, x_.handle, SHAREGPU_DOMAIN_SYSTEM), 0) << "unpinned BO cannot move";
  ASSERT_NO_FATAL_FAILURE(ExpectIntactThroughImport("after unpin"));
}

// Forced eviction from the QEMU monitor (x-sharegpu-move-bo) through the host agent: the
// request goes out on the console, the agent runs the QMP command and acks on ttyS1.
TEST_F(InvalidationTest, HostMonitorEvictionInvalidatesImporter) {
  if (!HostAgentAvailable()) GTEST_SKIP() << "no host agent (kernel parameter sgputest.host=1)";
  ASSERT_NO_FATAL_FAILURE(Share(3));
  drm_sharegpu_bo_info xi{};
  ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
  ASSERT_EQ(xi.domain, SHAREGPU_DOMAIN_VRAM);
  int64_t unexpected = Counter(*exp_, "unexpected_moves");
  int64_t evt_moved = Counter(*exp_, "evt_moved");
  int64_t notifies = Counter(*imp_, "move_notifies");
  int64_t evt_inval = Counter(*imp_, "evt_invalidated");

  std::string reply;
  int ret = HostRequest("move " + exp_->pci + " " + std::to_string(xi.hw_handle) + " system",
                        &reply);
  ASSERT_EQ(ret, 0) << "host request failed: " << strerror(-ret) << " " << reply;

  // the device queued BO_MOVED (exporter) / BO_INVALIDATED (importer); the driver adopts the
  // new placement from its event worker
  EXPECT_TRUE(WaitUntil(
      [&] {
        drm_sharegpu_bo_info i{};
        return !BoInfo(exp_->fd, x_.handle, &i) && i.domain == SHAREGPU_DOMAIN_SYSTEM;
      },
      30000))
      << "driver never adopted the host-forced eviction";
  ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
  EXPECT_EQ(xi.hw_placement, 1u);
  EXPECT_GT(Counter(*exp_, "evt_moved"), evt_moved);
  EXPECT_GT(Counter(*exp_, "unexpected_moves"), unexpected);
  EXPECT_TRUE(WaitUntil([&] { return Counter(*imp_, "evt_invalidated") > evt_inval; }, 30000));
  EXPECT_GT(Counter(*imp_, "move_notifies"), notifies) << "importer got no move_notify";
  ASSERT_NO_FATAL_FAILURE(ExpectIntactThroughImport("after host eviction"));
  // and the exporter's own view is intact too
  EXPECT_EQ(Checksum(exp_->fd, x_.handle, 0, kSize), crc_);
}

TEST_F(InvalidationTest, HostMonitorCannotEvictPinnedBo) {
  if (!HostAgentAvailable()) GTEST_SKIP() << "no host agent (kernel parameter sgputest.host=1)";
  ASSERT_NO_FATAL_FAILURE(Share(4));
  ASSERT_EQ(BoPin(exp_->fd, x_.handle, false), 0);
  drm_sharegpu_bo_info xi{};
  ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
  std::string reply;
  int ret = HostRequest("move " + exp_->pci + " " + std::to_string(xi.hw_handle) + " system",
                        &reply);
  EXPECT_EQ(ret, -EIO) << "host eviction of a pinned BO succeeded";
  printf("[ info     ] host reply: %s\n", reply.c_str());
  ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
  EXPECT_EQ(xi.hw_placement, 0u);
  EXPECT_EQ(xi.domain, SHAREGPU_DOMAIN_VRAM);
  ASSERT_NO_FATAL_FAILURE(ExpectIntactThroughImport("pinned, host refused"));
  ASSERT_EQ(BoPin(exp_->fd, x_.handle, true), 0);
}

// VRAM pressure on the exporter evicts the shared BO (asserted: VRAM-only buffers are added
// until it is out of VRAM), the importer is notified and survives it.
TEST_F(InvalidationTest, VramPressureEvictionKeepsImportIntact) {
  ASSERT_NO_FATAL_FAILURE(Share(5));
  int64_t notifies = Counter(*imp_, "move_notifies");
  int64_t evictions = Counter(*exp_, "evictions");
  const uint64_t chunk = exp_->info.vram_size / 4;
  std::vector<std::unique_ptr<ScopedBo>> hogs;
  drm_sharegpu_bo_info xi{};
  ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
  ASSERT_EQ(xi.domain, SHAREGPU_DOMAIN_VRAM);
  // VRAM holds at most 4 chunks: by the 6th the least recently used buffer has had to go
  while (xi.domain == SHAREGPU_DOMAIN_VRAM && hogs.size() < 6) {
    hogs.push_back(std::make_unique<ScopedBo>());
    ASSERT_EQ(hogs.back()->Create(exp_->fd, chunk, SHAREGPU_DOMAIN_VRAM), 0);
    ASSERT_EQ(Fill(exp_->fd, hogs.back()->handle, 0, 4096, 0x600d600d), 0);  // into VRAM
    ASSERT_EQ(BoInfo(exp_->fd, x_.handle, &xi), 0);
  }
  printf("[ info     ] shared BO evicted after %zu VRAM buffers of %llu MiB\n", hogs.size(),
         static_cast<unsigned long long>(chunk >> 20));
  ASSERT_EQ(xi.domain, SHAREGPU_DOMAIN_SYSTEM) << "VRAM pressure never evicted the shared BO";
  EXPECT_GT(Counter(*exp_, "evictions"), evictions);
  EXPECT_GT(Counter(*imp_, "move_notifies"), notifies) << "the importer was not told";
  ASSERT_NO_FATAL_FAILURE(ExpectIntactThroughImport("after VRAM pressure"));
}

// A real event-ring overflow (not a debugfs trigger): a host-forced move of a VRAM-sized
// buffer makes the device evict a few hundred small buffers at once, more BO_MOVED events
// than the 256-entry event ring holds. The device raises EVT_OVERFLOW, the driver runs its
// RESYNC recovery, and every buffer ends up where the device put it with its contents.
TEST_F(InvalidationTest, EventRingOverflowIsRecoveredByResync) {
  if (!HostAgentAvailable()) GTEST_SKIP() << "no host agent (kernel parameter sgputest.host=1)";
  constexpr int kSmall = 320;
  const uint32_t both = SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM;
  std::vector<std::unique_ptr<ScopedBo>> small;
  for (int i = 0; i < kSmall; i++) {
    small.push_back(std::make_unique<ScopedBo>());
    ASSERT_EQ(small.back()->Create(exp_->fd, 4096, both), 0);
    ASSERT_EQ(Fill(exp_->fd, small.back()->handle, 0, 4096, 0xe0000000u + i), 0);  // in VRAM
  }
  ScopedBo big;
  ASSERT_EQ(big.Create(exp_->fd, exp_->info.vram_size, both), 0);
  ASSERT_EQ(BoMove(exp_->fd, big.handle, SHAREGPU_DOMAIN_SYSTEM), 0);
  drm_sharegpu_bo_info bi{};
  ASSERT_EQ(BoInfo(exp_->fd, big.handle, &bi), 0);
  const int64_t overflows = Counter(*exp_, "evt_overflows"), resyncs = Counter(*exp_, "resyncs");

  std::string reply;
  int ret = HostRequest("move " + exp_->pci + " " + std::to_string(bi.hw_handle) + " device",
                        &reply);
  ASSERT_EQ(ret, 0) << "host request failed: " << strerror(-ret) << " " << reply;
  EXPECT_TRUE(WaitUntil([&] { return Counter(*exp_, "resyncs") > resyncs; }, 60000))
      << "no RESYNC after the overflow";
  EXPECT_GT(Counter(*exp_, "evt_overflows"), overflows) << "the event ring did not overflow";
  EXPECT_GT(Counter(*exp_, "hw_evt_dropped"), 0) << "the device dropped no event";
  for (int i = 0; i < kSmall; i++) {
    drm_sharegpu_bo_info si{};
    ASSERT_EQ(BoInfo(exp_->fd, small[i]->handle, &si), 0);
    EXPECT_EQ(si.domain, SHAREGPU_DOMAIN_SYSTEM) << "buffer " << i << ": the driver's view";
    EXPECT_EQ(si.hw_placement, 1u) << "buffer " << i;
    EXPECT_EQ(Checksum(exp_->fd, small[i]->handle, 0, 4096), PatternCrc(0xe0000000u + i, 4096))
        << "buffer " << i;
  }
}

// An importer writing through its CPU mapping of a p2p import while the buffer moves loses no
// write (issue 9, defect 3). The writer keeps writing for as long as each move is in flight
// and reads every word back at once; the last value of every word must survive. `move(m)`
// makes move m (to SYSTEM for even m, to VRAM for odd m) of `moves`.
void InvalidationTest::WriteThroughImportDuringMoves(int moves,
                                                     const std::function<int(int)>& move) {
  ASSERT_NO_FATAL_FAILURE(Share(9));
  ASSERT_EQ(Fill(exp_->fd, x_.handle, 0, kSize, 0), 0);
  const int kMoves = moves;
  const size_t kWords = kSize / 4, kPerMove = kWords / kMoves;
  volatile uint32_t* words = static_cast<volatile uint32_t*>(y_.map);
  std::vector<uint32_t> want(kWords, 0);  // the writer's last value of every word
  std::atomic<int> phase{-1}, done{0}, started{-1};
  std::atomic<bool> moving{false};
  uint64_t during_moves = 0, readback_errors = 0;
  ASSERT_EQ(DmaBufSync(dmabuf_.get(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE), 0);
  std::thread writer([&] {
    uint32_t value = 1;
    for (int m = 0; m < kMoves; m++) {
      while (phase.load() < m) std::this_thread::yield();
      // round and round its region until the move is over (one more word after it)
      for (size_t i = 0, last = 0; !last; i = (i + 1) % kPerMove, value++) {
        last = !moving.load();
        const size_t w = m * kPerMove + i;
        words[w] = value;
        want[w] = value;
        if (words[w] != value) readback_errors++;
        if (!last) during_moves++;
        if (i == 63) started.store(m);  // the move starts only once the writer is running
      }
      done.store(m + 1);
    }
  });
  for (int m = 0; m < kMoves; m++) {
    moving.store(true);
    phase.store(m);
    while (started.load() < m) std::this_thread::yield();
    int ret = move(m);
    moving.store(false);
    EXPECT_EQ(ret, 0) << "move " << m;
    while (done.load() < m + 1) std::this_thread::yield();
  }
  writer.join();
  ASSERT_EQ(DmaBufSync(dmabuf_.get(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE), 0);
  printf("[ info     ] %llu importer writes while a move was in flight\n",
         static_cast<unsigned long long>(during_moves));
  EXPECT_GT(during_moves, static_cast<uint64_t>(kMoves)) << "the writes did not overlap the moves";
  EXPECT_EQ(readback_errors, 0u) << "writes read back other bytes (dropped by the window's hole)";

  size_t lost = 0, first = kWords;
  for (size_t i = 0; i < kWords; i++) {
    if (words[i] != want[i]) {
      lost++;
      first = std::min(first, i);
    }
  }
  EXPECT_EQ(lost, 0u) << "words the importer wrote are gone (first at word " << first << ")";
  EXPECT_EQ(Checksum(exp_->fd, x_.handle, 0, kSize),
            Crc32c(reinterpret_cast<const uint8_t*>(want.data()), kSize))
      << "the exporter's device sees other bytes than the importer wrote";
}

// Moves by the exporter's driver: it notifies the importers before the storage moves, so the
// importer's mapping is gone first and its next write faults and waits for the move.
TEST_F(InvalidationTest, ImporterCpuWritesDuringExporterMovesAreKept) {
  WriteThroughImportDuringMoves(8, [&](int m) {
    return BoMove(exp_->fd, x_.handle, m % 2 ? SHAREGPU_DOMAIN_VRAM : SHAREGPU_DOMAIN_SYSTEM);
  });
}

// Moves forced from the QEMU monitor, which the guest learns of only afterwards: the device
// removes the window mapping before the copy with the vCPUs stopped, and a write before the
// importer's driver has handled BO_INVALIDATED faults the import back in (contract 1.5).
// Before, such writes went to the old storage after the copy or were dropped by the hole.
TEST_F(InvalidationTest, ImporterCpuWritesDuringHostMonitorMovesAreKept) {
  if (!HostAgentAvailable()) GTEST_SKIP() << "no host agent (kernel parameter sgputest.host=1)";
  drm_sharegpu_bo_info xi{};
  int64_t faults_before = HostWindowFaults();
  // a write reaches the window before the driver's move_notify after about one move in four
  WriteThroughImportDuringMoves(32, [&](int m) {
    if (BoInfo(exp_->fd, x_.handle, &xi)) return -EIO;
    std::string reply;
    int ret = HostRequest("move " + exp_->pci + " " + std::to_string(xi.hw_handle) +
                              (m % 2 ? " device" : " system"),
                          &reply);
    if (ret) ADD_FAILURE() << "host request failed: " << strerror(-ret) << " " << reply;
    return ret;
  });
  const int64_t faults = HostWindowFaults() - faults_before;
  printf("[ info     ] %lld window faults\n", static_cast<long long>(faults));
  // the interleaving this test is for: writes that reached the window before the importer's
  // driver had handled BO_INVALIDATED
  EXPECT_GT(faults, 0) << "no write raced a host-forced move";
}

}  // namespace
