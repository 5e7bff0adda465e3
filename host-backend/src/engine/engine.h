// Execution engines: where a device's jobs run, asynchronously to their submission.
//
// A job arrives with everything it touches already resolved and kept alive (the buffers'
// storage views, the objects that own them), its fence already in every buffer's reservation
// (WRITE for written buffers, READ for read ones) and the fences it must wait for (what the
// reservations held when it was submitted: implicit sync). The submitter has dropped every
// reservation lock by then; the storage cannot go away under the job because a move, an
// eviction or a CPU access waits for the job's fence first (rules S7b, S4).
//
// Engine (this file) owns the worker thread, the FIFO, the dependency waits, completion in
// submission order, the fault injection (stall the engine, hold completions of every job
// or of jobs that touch a given buffer, until released or for a time) and the abort of every
// job in flight (the device's JOB_ABORT, docs/hardware.md 3). A concrete engine
// implements Execute() only: CpuEngine (cpu_engine.h) runs the copy engine through the
// device-cache model; the virgl engine runs virgl command streams.
//
// Ownership: the Device owns its Engine (unique_ptr). Jobs are owned by the engine from
// Submit() until their done callback has run. The destructor cancels what has not started
// (fence error -ECANCELED, done called), finishes the job in execution and joins the worker.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "mem/copy_engine.h"
#include "sync/fence.h"

namespace sharegpu {

enum class JobOp : uint8_t { kCopy = 0, kFill = 1, kChecksum = 2 };
const char* JobOpName(JobOp op);

// One buffer of a job as the engine reaches it.
struct JobBuffer {
  DeviceView view;                 // storage and the device's cache of it, valid until signal
  std::shared_ptr<void> keepalive; // whatever owns view.mem / view.cache (BO, attachment, ...)
  const void* identity = nullptr;  // the buffer (exporter-side object) for per-buffer holds
  uint32_t handle = 0;             // the submitting device's handle, for the monitor
  bool write = false;
};

// What a finished job reports: its status and, for CHECKSUM, the CRC-32C.
using JobDone = std::function<void(Status status, uint64_t result)>;

struct Job {
  JobOp op = JobOp::kCopy;
  // As the ring command names them: buffers[0] is COPY's and FILL's destination and
  // CHECKSUM's source, buffers[1] COPY's source; off is the offset in buffers[0], off2 in
  // buffers[1].
  std::vector<JobBuffer> buffers;
  uint64_t off = 0;
  uint64_t off2 = 0;
  uint64_t len = 0;
  uint32_t pattern = 0;            // FILL
  FenceRef fence;                  // signalled by the engine, in submission order
  std::vector<FenceRef> dependencies;
  JobDone done;                    // after the fence signalled, on the engine's thread
};

// A job in flight, as the monitor shows it.
struct JobInfo {
  uint64_t seqno = 0;
  JobOp op = JobOp::kCopy;
  std::vector<uint32_t> handles;
  std::string state;           // "queued", "waiting", "stalled", "running", "held"
  uint32_t dependencies_pending = 0;
};

struct EngineStats {
  uint64_t submitted = 0;
  uint64_t completed = 0;
  uint64_t failed = 0;      // completed with an error (cancelled included)
  uint64_t held = 0;        // completions that were held by fault injection
  uint64_t waited_on_dependencies = 0;  // jobs that found a dependency unsignalled
  uint64_t aborted = 0;     // jobs AbortAll() cancelled before they started (also in failed)
  uint32_t in_flight = 0;
  uint32_t max_in_flight = 0;
};

class Engine {
 public:
  virtual ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  virtual const char* kind() const = 0;
  // The cache each buffer gets on this engine's device (its BufferObject's, its dma-buf
  // attachments'): empty, the default, is the model cache (mem/device_cache.h); the virgl
  // engine's is the buffer's GL resource (engine/virgl_engine.h).
  virtual CacheFactory cache_factory() const { return {}; }

  // Queues the job; it is executed after its dependencies signalled, then its fence is
  // signalled (with the job's error, if any) and `done` runs. -ESHUTDOWN once stopping
  // (the job is then not taken: the caller signals its fence).
  Status Submit(std::unique_ptr<Job> job);

  // Fault injection (docs/engines.md). A stalled engine starts no job. A held completion: the
  // job has executed but its fence stays unsignalled (and later jobs' fences behind it).
  // `buffer` nullptr: every job; else jobs touching that buffer. `duration` zero: until
  // released. Release() ends every hold and the stall.
  void Stall(bool stalled);
  void HoldCompletions(const void* buffer, std::chrono::milliseconds duration);
  void Release();

  // Aborts every job submitted so far (job-timeout recovery that keeps the buffers): a job
  // not started yet (queued, waiting for a dependency, behind the stall) never executes: its
  // fence signals with -ECANCELED and its done runs with -ECANCELED, in submission order as
  // always; the job executing or held finishes with its own status (holds and the stall end,
  // as Release()). Jobs submitted later are not affected. Returns how many were cancelled.
  // `wait`: returns only once every job submitted before the call has completed (its done
  // has returned), so it must not be called from a done callback; called on the engine's
  // own thread it does not wait. Without `wait` the completions come as they always do.
  size_t AbortAll(bool wait = true);

  // An event source the embedding program's loop should watch for this engine (the virgl
  // engine: virglrenderer's poll fd, one per process): WatchBegin returns the fd, or -ENOENT
  // when the engine has none; then call WatchReady whenever it is readable (any thread, never
  // blocks) and WatchEnd when done. Polls counts the polls the loop asked for and those the
  // engine made by itself after a pending fence waited for the loop.
  virtual int WatchBegin() { return -ENOENT; }
  virtual void WatchReady() {}
  virtual void WatchEnd() {}
  struct WatchPolls {
    uint64_t loop = 0;
    uint64_t fallback = 0;
  };
  virtual WatchPolls watch_polls() const { return {}; }

  std::vector<JobInfo> InFlight() const;
  EngineStats stats() const;
  // Blocks until every job submitted so far has completed (tests, reset, teardown).
  void Drain();
  // Stops the worker (idempotent; the concrete engine's destructor calls it first, while
  // Execute can still run): cancels queued jobs, waits for the one in execution.
  void Stop();

 protected:
  explicit Engine(std::string name);
  // Starts the worker; the concrete engine calls it at the end of its construction.
  void Start();
  // Runs one job on the worker thread: its result (CHECKSUM: the CRC) or its error.
  virtual Result<uint64_t> Execute(Job& job) = 0;

 private:
  struct Hold {
    const void* buffer = nullptr;  // nullptr: every job
    std::optional<std::chrono::steady_clock::time_point> until;
  };
  struct Entry {
    std::unique_ptr<Job> job;
    uint64_t ticket = 0;     // submission number: completion order
    std::string state = "queued";
    uint32_t dependencies_pending = 0;
    bool started = false;    // Execute() called: AbortAll() lets it finish
    bool cancelled = false;  // AbortAll() before it started: completes without executing
  };

  void WorkerLoop();
  // Whether a hold applies to `job` now; drops expired holds; *wake: when one expires.
  bool HeldLocked(const Job& job, std::chrono::steady_clock::time_point now,
                  std::optional<std::chrono::steady_clock::time_point>* wake)
      SGB_REQUIRES(mu_);
  // Waits until every dependency of the front job signalled, it is cancelled or the engine
  // stops.
  void WaitDependenciesLocked(Entry& e, std::unique_lock<std::mutex>& lock) SGB_REQUIRES(mu_);
  void Complete(std::unique_ptr<Job> job, Status status, uint64_t result);

  // The lock and the wake-up the worker sleeps on, shared with the callbacks it leaves on
  // dependency fences (of other devices too), which may run after this engine is gone.
  struct Wakeup {
    std::mutex mu;
    std::condition_variable cv;  // work, dependency signalled, hold/stall change, stop
  };

  const std::string name_;
  const std::shared_ptr<Wakeup> wake_ = std::make_shared<Wakeup>();
  std::mutex& mu_ = wake_->mu;
  std::condition_variable& cv_ = wake_->cv;
  std::condition_variable idle_cv_;
  std::deque<Entry> queue_ SGB_GUARDED_BY(mu_);  // front: the job being worked on
  uint32_t completing_ SGB_GUARDED_BY(mu_) = 0;  // popped, fence / done callback running
  uint64_t next_ticket_ SGB_GUARDED_BY(mu_) = 1;
  uint64_t done_ticket_ SGB_GUARDED_BY(mu_) = 0;  // newest job whose done has returned
  bool stopping_ SGB_GUARDED_BY(mu_) = false;
  bool stalled_ SGB_GUARDED_BY(mu_) = false;
  std::vector<Hold> holds_ SGB_GUARDED_BY(mu_);
  EngineStats stats_ SGB_GUARDED_BY(mu_);
  std::thread worker_;
  std::thread::id worker_id_;  // set before any job can run: AbortAll() must not wait on it
};

}  // namespace sharegpu
