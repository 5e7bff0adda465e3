// The backend-level torture run of issue 9: many threads drive several devices (cpu and virgl
// engines, coherent and strict caches) through the public C API only (sharegpu/backend.h, what
// QEMU uses) with random operations, and a shadow model says what every byte must be.
//
// The model (torture.cc, "Barrier bookkeeping") is one byte array per buffer: what every
// party (the owner's device and each importing device) must see once the barriers the rules
// (docs/semantics.md S4) require have been made. The run makes exactly those barriers, from a
// per-buffer record of which device caches may hold unflushed job writes ("dirty") and which
// may hold lines older than the model ("stale"); CPU reads and CHECKSUM jobs are compared
// with the model. Operations on one buffer are serialised by the test; concurrency comes from
// many buffers and threads, jobs in flight on the engines, implicit sync between devices,
// and moves, evictions, pins and completion holds that the backend must handle
// transparently.
//
// With `barriers` off (the negative run) the same operations skip every barrier; on strict
// devices the oracle must then see stale bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sharegpu::torture {

struct DeviceSpec {
  std::string engine;  // "cpu" or "virgl"
  bool coherent = false;
};

struct Options {
  uint64_t seed = 1;
  double seconds = 2.0;     // wall-clock bound of the random phase
  uint64_t max_ops = 0;     // 0: bounded by `seconds` only
  int threads = 6;
  bool barriers = true;     // false: the negative run (barriers deliberately left out)
  std::vector<DeviceSpec> devices;
  uint64_t vram_size = 1ull << 20;  // small: creates and moves to VRAM evict
  bool verbose = false;     // print every operation as it is logged
  // Close a handle only once the jobs its device submitted through it are done (what the
  // QEMU device does: a close runs with none of its jobs in flight); false: also under them.
  bool close_waits_for_jobs = false;
};

struct Report {
  uint64_t seed = 0;
  double seconds = 0;
  uint64_t ops = 0;
  uint64_t mismatches = 0;             // model disagreed with a CPU read or a CHECKSUM
  std::string first_mismatch;          // its full report (seed, log tail, range, bytes)
  std::vector<std::string> failures;   // anything else unexpected: errors, leaks, rule breaks

  // What happened, so a test can assert that the interleavings it exists for did.
  uint64_t creates = 0, closes = 0, exports = 0, imports = 0;
  uint64_t fills = 0, copies = 0, checksums = 0, cpu_reads = 0, cpu_writes = 0;
  uint64_t jobs_on_imports = 0, cross_engine_jobs = 0, implicit_sync_jobs = 0;
  uint64_t moves = 0, moves_with_jobs_in_flight = 0, moves_with_dirty_caches = 0;
  uint64_t moves_refused_pinned = 0, pins = 0, holds = 0;
  uint64_t closes_with_jobs_in_flight = 0;
  uint64_t barriers = 0;               // begin/end and cache commands the run issued
  // Summed over the devices' stats at the end.
  uint64_t evictions = 0, move_notifies = 0, jobs_held = 0, jobs_waited = 0, jobs = 0;

  std::string Summary() const;
};

// One run: a fresh backend and devices, `threads` workers until the time or op bound, then
// every handle closed and the leak checks (buffers, bytes, descriptors).
Report Run(const Options& options);

// The device sets the tests use: both engines when `virgl` (a shared buffer then crosses
// engines), every device strict when `all_strict`.
std::vector<DeviceSpec> StandardDevices(bool virgl, bool all_strict);

}  // namespace sharegpu::torture
