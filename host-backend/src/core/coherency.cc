#include "core/coherency.h"

#include <algorithm>

#include "mem/memfd.h"

namespace sharegpu {

namespace {

bool DirWrites(uint32_t dir) {
  return dir != SGB_DIR_FROM_DEVICE;
}

// The pages [first, end) an op's byte range covers, clamped to the buffer.
void PageRange(const sgb_coherency_input& n, uint64_t pages, uint64_t* first, uint64_t* end) {
  if (n.len == 0 || n.off >= pages * kPageSize) {
    *first = *end = 0;
    return;
  }
  uint64_t last_byte = std::min(n.off + (n.len - 1), pages * kPageSize - 1);
  if (last_byte < n.off) last_byte = pages * kPageSize - 1;  // off + len overflowed
  *first = n.off / kPageSize;
  *end = last_byte / kPageSize + 1;
}

}  // namespace

void CoherencyTracker::Range::Add(uint64_t page) {
  if (count == 0 || page < first) first = page;
  if (count == 0 || page > last) last = page;
  ++count;
}

void CoherencyTracker::Reset(uint64_t pages, uint64_t generation) {
  pages_ = pages;
  generation_ = generation;
  open_ = open_write_ = 0;
  cpu_unflushed_.assign(pages, false);
  job_unflushed_.assign(pages, false);
}

void CoherencyTracker::Record(const sgb_coherency_input& note) {
  history_[history_next_] = sgb_coherency_cmd{note.opcode, 0, note.seqno};
  history_next_ = (history_next_ + 1) % kHistory;
  history_len_ = std::min(history_len_ + 1, kHistory);
}

std::vector<sgb_coherency_cmd> CoherencyTracker::History() const {
  std::vector<sgb_coherency_cmd> out;
  for (size_t i = 0; i < history_len_; ++i) {
    out.push_back(history_[(history_next_ + kHistory - history_len_ + i) % kHistory]);
  }
  return out;
}

uint64_t CoherencyTracker::cpu_unflushed_pages() const {
  return static_cast<uint64_t>(std::count(cpu_unflushed_.begin(), cpu_unflushed_.end(), true));
}

uint64_t CoherencyTracker::job_unflushed_pages() const {
  return static_cast<uint64_t>(std::count(job_unflushed_.begin(), job_unflushed_.end(), true));
}

std::vector<CoherencyTracker::Report> CoherencyTracker::Note(const sgb_coherency_input& note,
                                                             uint64_t pages, uint64_t generation,
                                                             const std::vector<bool>& dirty) {
  bool fresh = note.op == SGB_COH_TRACK || generation != generation_ || pages != pages_;
  if (fresh) Reset(pages, generation);
  Record(note);
  if (note.op == SGB_COH_TRACK) return {};

  std::array<Range, SGB_COH_KINDS> found{};
  uint64_t first = 0, end = 0;
  PageRange(note, pages, &first, &end);

  // 1. The CPU's writes since the previous note. Over unflushed job output: the CPU touched
  // it before an opening barrier. Otherwise, with no write window open, outside a window --
  // unless this very note is a job reading the page: that is reported as the job's
  // (step 2), the more precise consequence. Either way the page now needs a closing barrier.
  if (!fresh && dirty.size() == pages) {
    for (uint64_t p = 0; p < pages; ++p) {
      if (!dirty[p]) continue;
      if (job_unflushed_[p]) {
        found[SGB_COH_CPU_ACCESS_UNFLUSHED_JOB_WRITE].Add(p);
        job_unflushed_[p] = false;
      } else if (open_write_ == 0 && !(note.op == SGB_COH_JOB_READ && p >= first && p < end)) {
        found[SGB_COH_CPU_WRITE_OUTSIDE_ACCESS].Add(p);
      }
      cpu_unflushed_[p] = true;
    }
  }

  // 2. The command itself.
  switch (note.op) {
    case SGB_COH_CPU_BEGIN:
      ++open_;
      if (DirWrites(note.dir)) ++open_write_;
      // begin flushes every device cache of the buffer, whatever the direction (rule S4)
      job_unflushed_.assign(pages, false);
      break;
    case SGB_COH_CPU_END:
      if (open_ > 0) --open_;
      if (DirWrites(note.dir)) {
        if (open_write_ > 0) --open_write_;
        // end of a writing access invalidates every device cache of the buffer
        cpu_unflushed_.assign(pages, false);
      }
      break;
    case SGB_COH_CACHE_FLUSH:
      for (uint64_t p = first; p < end; ++p) job_unflushed_[p] = false;
      break;
    case SGB_COH_CACHE_INVALIDATE:  // writes back, then drops
      for (uint64_t p = first; p < end; ++p) job_unflushed_[p] = cpu_unflushed_[p] = false;
      break;
    case SGB_COH_JOB_READ:
      for (uint64_t p = first; p < end; ++p) {
        if (cpu_unflushed_[p]) {
          found[SGB_COH_JOB_READ_UNFLUSHED_CPU_WRITE].Add(p);
          cpu_unflushed_[p] = false;
        }
      }
      break;
    case SGB_COH_JOB_WRITE:
      for (uint64_t p = first; p < end; ++p) job_unflushed_[p] = true;
      break;
    case SGB_COH_TRANSFER_TO_DEVICE:
    case SGB_COH_TRANSFER_FROM_DEVICE:
      // TRANSFER accesses memory as the CPU does (docs/hardware.md 5): over unflushed job
      // output it reads memory behind the cache, or writes what a flush will overwrite
      for (uint64_t p = first; p < end; ++p) {
        if (job_unflushed_[p]) {
          found[SGB_COH_CPU_ACCESS_UNFLUSHED_JOB_WRITE].Add(p);
          job_unflushed_[p] = false;
        }
        if (note.op == SGB_COH_TRANSFER_TO_DEVICE) cpu_unflushed_[p] = true;
      }
      break;
    default:
      break;
  }

  std::vector<Report> out;
  for (uint32_t k = 0; k < SGB_COH_KINDS; ++k) {
    if (!found[k].count) continue;
    out.push_back(Report{k, found[k].first, found[k].last, found[k].count, History()});
  }
  return out;
}

}  // namespace sharegpu
