// The coherency detector's per-buffer model (core/coherency.h) and its C entry point
// (sgb_coherency_note): each barrier-less sequence yields exactly its kind, the barriered
// ones none; a move (new generation) starts clean; imports share the exporter's state.
#include "core/coherency.h"

#include <vector>

#include "core_test_util.h"
#include "sharegpu/backend.h"

namespace sharegpu::testing {
namespace {

constexpr uint64_t kPages = 8;
constexpr uint64_t kPg = 4096;

sgb_coherency_input N(uint32_t op, uint64_t off = 0, uint64_t len = 0, uint32_t dir = 0,
                      uint32_t opcode = 0, uint64_t seqno = 0) {
  sgb_coherency_input n{};
  n.op = op;
  n.handle = 1;
  n.dir = dir;
  n.opcode = opcode;
  n.seqno = seqno;
  n.off = off;
  n.len = len;
  return n;
}

std::vector<bool> Pages(std::initializer_list<uint64_t> pages) {
  std::vector<bool> d(kPages);
  for (uint64_t p : pages) d[p] = true;
  return d;
}

class CoherencyTrackerTest : public ::testing::Test {
 protected:
  void SetUp() override { EXPECT_TRUE(Note(N(SGB_COH_TRACK)).empty()); }
  std::vector<CoherencyTracker::Report> Note(const sgb_coherency_input& n,
                                             const std::vector<bool>& dirty = {}) {
    return t_.Note(n, kPages, gen_, dirty);
  }
  CoherencyTracker t_;
  uint64_t gen_ = 1;
};

TEST_F(CoherencyTrackerTest, WriteInsideAWriteWindowIsNoViolation) {
  EXPECT_TRUE(Note(N(SGB_COH_CPU_BEGIN, 0, 0, SGB_DIR_TO_DEVICE)).empty());
  EXPECT_TRUE(Note(N(SGB_COH_CPU_END, 0, 0, SGB_DIR_TO_DEVICE), Pages({0, 1, 7})).empty());
  EXPECT_TRUE(Note(N(SGB_COH_JOB_READ, 0, kPages * kPg)).empty());
  EXPECT_EQ(t_.cpu_unflushed_pages(), 0u);
  EXPECT_EQ(t_.open_windows(), 0u);
}

TEST_F(CoherencyTrackerTest, WriteOutsideAWindowIsReportedOnceWithItsRange) {
  auto r = Note(N(SGB_COH_CPU_BEGIN, 0, 0, SGB_DIR_TO_DEVICE, 0x32, 7), Pages({2, 3, 5}));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, SGB_COH_CPU_WRITE_OUTSIDE_ACCESS);
  EXPECT_EQ(r[0].first_page, 2u);
  EXPECT_EQ(r[0].last_page, 5u);
  EXPECT_EQ(r[0].pages, 3u);
  ASSERT_FALSE(r[0].history.empty());
  EXPECT_EQ(r[0].history.back().opcode, 0x32u);
  EXPECT_EQ(r[0].history.back().seqno, 7u);
  EXPECT_TRUE(Note(N(SGB_COH_CPU_END, 0, 0, SGB_DIR_TO_DEVICE)).empty());
  EXPECT_TRUE(Note(N(SGB_COH_CHECK)).empty()) << "reported twice";
}

TEST_F(CoherencyTrackerTest, AReadOnlyWindowDoesNotAllowWrites) {
  Note(N(SGB_COH_CPU_BEGIN, 0, 0, SGB_DIR_FROM_DEVICE));
  auto r = Note(N(SGB_COH_CPU_END, 0, 0, SGB_DIR_FROM_DEVICE), Pages({4}));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, SGB_COH_CPU_WRITE_OUTSIDE_ACCESS);
  // and a read-only end does not invalidate: a job reading the page reads stale data
  r = Note(N(SGB_COH_JOB_READ, 4 * kPg, kPg));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, SGB_COH_JOB_READ_UNFLUSHED_CPU_WRITE);
}

TEST_F(CoherencyTrackerTest, JobReadingUnflushedCpuWriteIsItsOwnKind) {
  // written outside any window and read by the job: only the job's kind, on the read pages;
  // the unread written page is outside a window
  auto r = Note(N(SGB_COH_JOB_READ, 0, 2 * kPg), Pages({0, 1, 6}));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, SGB_COH_CPU_WRITE_OUTSIDE_ACCESS);
  EXPECT_EQ(r[0].first_page, 6u);
  EXPECT_EQ(r[0].pages, 1u);
  EXPECT_EQ(r[1].kind, SGB_COH_JOB_READ_UNFLUSHED_CPU_WRITE);
  EXPECT_EQ(r[1].first_page, 0u);
  EXPECT_EQ(r[1].last_page, 1u);
  EXPECT_TRUE(Note(N(SGB_COH_JOB_READ, 0, 2 * kPg)).empty()) << "reported twice";
}

TEST_F(CoherencyTrackerTest, JobReadInsideAnOpenWindowBeforeEnd) {
  Note(N(SGB_COH_CPU_BEGIN, 0, 0, SGB_DIR_BIDIRECTIONAL));
  auto r = Note(N(SGB_COH_JOB_READ, 0, kPages * kPg), Pages({3}));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, SGB_COH_JOB_READ_UNFLUSHED_CPU_WRITE);
}

TEST_F(CoherencyTrackerTest, CacheInvalidateIsAClosingBarrier) {
  Note(N(SGB_COH_CPU_BEGIN, 0, 0, SGB_DIR_TO_DEVICE));
  Note(N(SGB_COH_CACHE_INVALIDATE, 0, 2 * kPg), Pages({0, 1, 2}));
  auto r = Note(N(SGB_COH_JOB_READ, 0, 3 * kPg));
  ASSERT_EQ(r.size(), 1u) << "page 2 was not invalidated";
  EXPECT_EQ(r[0].kind, SGB_COH_JOB_READ_UNFLUSHED_CPU_WRITE);
  EXPECT_EQ(r[0].first_page, 2u);
  EXPECT_EQ(r[0].pages, 1u);
}

TEST_F(CoherencyTrackerTest, CpuWriteOverUnflushedJobOutput) {
  EXPECT_TRUE(Note(N(SGB_COH_JOB_WRITE, kPg, 2 * kPg)).empty());
  auto r = Note(N(SGB_COH_CHECK), Pages({1, 5}));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, SGB_COH_CPU_WRITE_OUTSIDE_ACCESS);
  EXPECT_EQ(r[0].first_page, 5u);
  EXPECT_EQ(r[1].kind, SGB_COH_CPU_ACCESS_UNFLUSHED_JOB_WRITE);
  EXPECT_EQ(r[1].first_page, 1u);
  EXPECT_EQ(r[1].pages, 1u);
}

TEST_F(CoherencyTrackerTest, OpeningBarriersPublishJobOutput) {
  Note(N(SGB_COH_JOB_WRITE, 0, kPages * kPg));
  Note(N(SGB_COH_CACHE_FLUSH, 0, 4 * kPg));
  auto r = Note(N(SGB_COH_TRANSFER_FROM_DEVICE, 0, kPages * kPg));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, SGB_COH_CPU_ACCESS_UNFLUSHED_JOB_WRITE);
  EXPECT_EQ(r[0].first_page, 4u);
  EXPECT_EQ(r[0].last_page, 7u);

  Note(N(SGB_COH_JOB_WRITE, 0, kPages * kPg));
  Note(N(SGB_COH_CPU_BEGIN, 0, 0, SGB_DIR_TO_DEVICE));  // any direction flushes
  EXPECT_TRUE(Note(N(SGB_COH_CPU_END, 0, 0, SGB_DIR_TO_DEVICE), Pages({0, 7})).empty());
  EXPECT_EQ(t_.job_unflushed_pages(), 0u);
}

TEST_F(CoherencyTrackerTest, DriverSequencesAroundJobsAreClean) {
  // what sgpu_job.c emits for a maintained job, and sgpu_gem.c for a SYSTEM BO's access
  Note(N(SGB_COH_CPU_BEGIN, 0, 0, SGB_DIR_TO_DEVICE));
  Note(N(SGB_COH_TRANSFER_FROM_DEVICE, 0, kPages * kPg));
  Note(N(SGB_COH_TRANSFER_TO_DEVICE, 0, kPages * kPg), Pages({0, 1}));
  EXPECT_TRUE(Note(N(SGB_COH_CPU_END, 0, 0, SGB_DIR_TO_DEVICE)).empty());
  EXPECT_TRUE(Note(N(SGB_COH_CACHE_INVALIDATE, 0, kPages * kPg)).empty());
  EXPECT_TRUE(Note(N(SGB_COH_JOB_READ, 0, kPages * kPg)).empty());
  EXPECT_TRUE(Note(N(SGB_COH_JOB_WRITE, 0, kPages * kPg)).empty());
  EXPECT_TRUE(Note(N(SGB_COH_CACHE_FLUSH, 0, kPages * kPg)).empty());
  EXPECT_TRUE(Note(N(SGB_COH_CPU_BEGIN, 0, 0, SGB_DIR_FROM_DEVICE)).empty());
  EXPECT_TRUE(Note(N(SGB_COH_TRANSFER_FROM_DEVICE, 0, kPages * kPg)).empty());
  EXPECT_TRUE(Note(N(SGB_COH_CPU_END, 0, 0, SGB_DIR_FROM_DEVICE)).empty());
}

TEST_F(CoherencyTrackerTest, AMoveStartsCleanAndIgnoresTheHarvest) {
  Note(N(SGB_COH_JOB_WRITE, 0, kPages * kPg));
  ++gen_;
  EXPECT_TRUE(Note(N(SGB_COH_CHECK), Pages({0, 1, 2})).empty());
  EXPECT_EQ(t_.job_unflushed_pages(), 0u);
  EXPECT_EQ(t_.cpu_unflushed_pages(), 0u);
}

TEST_F(CoherencyTrackerTest, HistoryKeepsTheLastCommandsOldestFirst) {
  for (uint64_t i = 1; i <= 6; ++i) Note(N(SGB_COH_CHECK, 0, 0, 0, 0x20 + i, i));
  auto r = Note(N(SGB_COH_CHECK, 0, 0, 0, 0x30, 7), Pages({0}));
  ASSERT_EQ(r.size(), 1u);
  ASSERT_EQ(r[0].history.size(), CoherencyTracker::kHistory);
  for (size_t i = 0; i < r[0].history.size(); ++i) EXPECT_EQ(r[0].history[i].seqno, 4 + i);
  EXPECT_EQ(r[0].history.back().opcode, 0x30u);
}

TEST_F(CoherencyTrackerTest, RangesAreClampedAndOverflowSafe) {
  Note(N(SGB_COH_CPU_BEGIN, 0, 0, SGB_DIR_TO_DEVICE));
  Note(N(SGB_COH_CHECK), Pages({7}));
  EXPECT_TRUE(Note(N(SGB_COH_JOB_READ, kPages * kPg, kPg)).empty());
  auto r = Note(N(SGB_COH_JOB_READ, 7 * kPg, ~uint64_t{0}));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].first_page, 7u);
  EXPECT_TRUE(Note(N(SGB_COH_JOB_READ, 0, 0)).empty());
}

// The C entry point: bad input, bitmap decoding, and an import sharing the exporter's state.
TEST(CoherencyCApiTest, ImportSharesTheExportersStateAndNamesIt) {
  sgb_backend* backend = nullptr;
  ASSERT_EQ(sgb_backend_new(&backend), 0);
  sgb_device_config ca{"exp", 2 * kMiB, 0, 0, nullptr}, cb{"imp", 2 * kMiB, 0, 0, nullptr};
  sgb_device *a = nullptr, *b = nullptr;
  ASSERT_EQ(sgb_device_create(backend, &ca, &a), 0);
  ASSERT_EQ(sgb_device_create(backend, &cb, &b), 0);
  uint32_t h = 0, imp = 0;
  ASSERT_EQ(sgb_bo_create(a, 4 * kPg, SGB_PLACEMENT_DEVICE, 0, &h), 0);
  sgb_uuid uuid{};
  ASSERT_EQ(sgb_bo_export(a, h, &uuid, nullptr), 0);
  ASSERT_EQ(sgb_bo_import_uuid(b, &uuid, &imp), 0);

  sgb_coherency_report rep[SGB_COH_KINDS] = {};
  size_t n = 99;
  sgb_coherency_input note{};
  note.handle = h;
  note.op = SGB_COH_TRACK;
  ASSERT_EQ(sgb_coherency_note(a, &note, rep, SGB_COH_KINDS, &n), 0);
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(sgb_coherency_note(a, nullptr, rep, 1, &n), -EINVAL);
  note.op = 99;
  EXPECT_EQ(sgb_coherency_note(a, &note, rep, 1, &n), -EINVAL);
  note.op = SGB_COH_CHECK;
  note.handle = 77;
  EXPECT_EQ(sgb_coherency_note(a, &note, rep, 1, &n), -ENOENT);
  uint64_t bits = 1u << 2;
  note.handle = imp;
  note.dirty = &bits;
  note.dirty_pages = 3;
  EXPECT_EQ(sgb_coherency_note(b, &note, rep, 1, &n), -EINVAL) << "wrong page count";

  // the exporter opens a write window; the CPU writes page 2 through the importer's window
  note.handle = h;
  note.dirty = nullptr;
  note.op = SGB_COH_CPU_BEGIN;
  note.dir = SGB_DIR_TO_DEVICE;
  ASSERT_EQ(sgb_coherency_note(a, &note, rep, SGB_COH_KINDS, &n), 0);
  note.handle = imp;
  note.op = SGB_COH_JOB_READ;
  note.off = 0;
  note.len = 4 * kPg;
  note.dirty = &bits;
  note.dirty_pages = 4;
  note.opcode = 0x22;
  note.seqno = 42;
  ASSERT_EQ(sgb_coherency_note(b, &note, rep, SGB_COH_KINDS, &n), 0);
  ASSERT_EQ(n, 1u) << "the window is the buffer's, not the handle's";
  EXPECT_EQ(rep[0].kind, SGB_COH_JOB_READ_UNFLUSHED_CPU_WRITE);
  EXPECT_EQ(rep[0].first_page, 2u);
  EXPECT_EQ(rep[0].imported, 1u);
  EXPECT_STREQ(rep[0].exporter, "exp");
  ASSERT_GE(rep[0].history_len, 2u);
  EXPECT_EQ(rep[0].history[rep[0].history_len - 1].seqno, 42u);
  EXPECT_EQ(rep[0].history[rep[0].history_len - 1].opcode, 0x22u);

  // a move starts the buffer's state again
  note.handle = h;
  note.op = SGB_COH_JOB_WRITE;
  note.dirty = nullptr;
  ASSERT_EQ(sgb_coherency_note(a, &note, rep, SGB_COH_KINDS, &n), 0);
  ASSERT_EQ(sgb_bo_move(a, h, SGB_PLACEMENT_SYSTEM, 0), 0);
  note.op = SGB_COH_TRANSFER_FROM_DEVICE;
  ASSERT_EQ(sgb_coherency_note(a, &note, rep, SGB_COH_KINDS, &n), 0);
  EXPECT_EQ(n, 0u) << "the move wrote the job's lines back";

  sgb_device_destroy(b);
  sgb_device_destroy(a);
  sgb_backend_unref(backend);
}

}  // namespace
}  // namespace sharegpu::testing
