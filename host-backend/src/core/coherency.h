// The coherency-violation detector's state of one buffer (QEMU check-coherency,
// docs/user-guide.md "Coherency-violation detector"). It models the barriers of rule S4 on a
// non-coherent device, page by page, from what the device model reports: the commands that
// touch the buffer and the pages the guest CPU wrote (dirty logging). It only observes.
//
//   - CPU writes land in memory; a device cache may hold older lines of those pages until a
//     closing barrier (CPU_ACCESS_END for a writing direction, or CACHE_INVALIDATE) drops
//     them: until then the pages are "CPU-unflushed", and a job reading one reads stale data.
//   - Job writes stay in a device cache until an opening barrier (CPU_ACCESS_BEGIN, any
//     direction, or CACHE_FLUSH) writes them back: until then the pages are "job-unflushed",
//     and the CPU touching one sees memory behind the cache (a later flush also overwrites
//     what the CPU wrote).
//   - A CPU write while no write window (BEGIN with a direction in which the CPU writes, not
//     yet ENDed) is open is outside a CPU-access window.
// Each page is reported once per cause: a reported page leaves the set that caused it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sharegpu/backend.h"

namespace sharegpu {

class CoherencyTracker {
 public:
  static constexpr size_t kHistory = SGB_COH_HISTORY;

  struct Report {
    uint32_t kind = 0;  // enum sgb_coherency_kind
    uint64_t first_page = 0;
    uint64_t last_page = 0;
    uint64_t pages = 0;
    std::vector<sgb_coherency_cmd> history;  // oldest first, the noted command last
  };

  // One command on the buffer (`pages` pages, storage generation `generation`); `dirty`:
  // the pages the CPU wrote since the previous note (empty: none seen, else pages bits).
  // A new generation (the buffer moved) or SGB_COH_TRACK starts from a clean state and
  // ignores `dirty`. Returns at most one report per kind, in kind order.
  std::vector<Report> Note(const sgb_coherency_input& note, uint64_t pages, uint64_t generation,
                           const std::vector<bool>& dirty);

  // For tests and the monitor.
  unsigned open_windows() const { return open_; }
  unsigned open_write_windows() const { return open_write_; }
  uint64_t cpu_unflushed_pages() const;
  uint64_t job_unflushed_pages() const;

 private:
  // Pages of one kind found by a note.
  struct Range {
    uint64_t first = 0, last = 0, count = 0;
    void Add(uint64_t page);
  };

  void Reset(uint64_t pages, uint64_t generation);
  void Record(const sgb_coherency_input& note);
  std::vector<sgb_coherency_cmd> History() const;

  uint64_t pages_ = 0;
  uint64_t generation_ = 0;  // 0: never noted
  unsigned open_ = 0;        // CPU-access windows open (BEGIN not yet ENDed)
  unsigned open_write_ = 0;  // of which with a direction in which the CPU writes
  std::vector<bool> cpu_unflushed_;
  std::vector<bool> job_unflushed_;
  std::array<sgb_coherency_cmd, kHistory> history_{};
  size_t history_len_ = 0;
  size_t history_next_ = 0;
};

}  // namespace sharegpu
