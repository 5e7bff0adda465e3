#include "engine/engine.h"

#include <algorithm>
#include <utility>

#include "common/log.h"

namespace sharegpu {

const char* JobOpName(JobOp op) {
  switch (op) {
    case JobOp::kCopy: return "copy";
    case JobOp::kFill: return "fill";
    case JobOp::kChecksum: return "checksum";
  }
  return "?";
}

Engine::Engine(std::string name) : name_(std::move(name)) {}

Engine::~Engine() {
  // The concrete engine stopped us already (Execute must not run on a half-destroyed
  // object); this is for engines whose constructor failed before Start().
  Stop();
}

void Engine::Start() {
  worker_ = std::thread([this] { WorkerLoop(); });
  worker_id_ = worker_.get_id();
}

void Engine::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  // Whatever never started is cancelled, in order (fences on one timeline signal in order).
  for (;;) {
    std::unique_ptr<Job> job;
    uint64_t ticket = 0;
    {
      std::lock_guard lock(mu_);
      if (queue_.empty()) break;
      job = std::move(queue_.front().job);
      ticket = queue_.front().ticket;
      queue_.pop_front();
      stats_.in_flight = static_cast<uint32_t>(queue_.size());
      ++completing_;  // Drain() and AbortAll() wait for the done callback too
    }
    Complete(std::move(job), -ECANCELED, 0);
    {
      std::lock_guard lock(mu_);
      --completing_;
      done_ticket_ = ticket;
    }
    idle_cv_.notify_all();
  }
  idle_cv_.notify_all();
}

Status Engine::Submit(std::unique_ptr<Job> job) {
  if (!job || !job->fence) return -EINVAL;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return -ESHUTDOWN;
    queue_.push_back(Entry{std::move(job), next_ticket_++});
    stats_.submitted++;
    stats_.in_flight = static_cast<uint32_t>(queue_.size());
    stats_.max_in_flight = std::max(stats_.max_in_flight, stats_.in_flight);
  }
  cv_.notify_all();
  return kOk;
}

void Engine::Stall(bool stalled) {
  {
    std::lock_guard lock(mu_);
    stalled_ = stalled;
  }
  cv_.notify_all();
}

void Engine::HoldCompletions(const void* buffer, std::chrono::milliseconds duration) {
  {
    std::lock_guard lock(mu_);
    Hold hold{buffer, std::nullopt};
    if (duration.count() > 0) hold.until = std::chrono::steady_clock::now() + duration;
    holds_.push_back(hold);
  }
  cv_.notify_all();
}

void Engine::Release() {
  {
    std::lock_guard lock(mu_);
    holds_.clear();
    stalled_ = false;
  }
  cv_.notify_all();
}

size_t Engine::AbortAll(bool wait) {
  size_t cancelled = 0;
  uint64_t target = 0;
  {
    std::lock_guard lock(mu_);
    // Only marked: the worker completes them in their turn, so fences still signal in
    // seqno order and done callbacks still run on the worker, one at a time.
    for (Entry& e : queue_) {
      if (e.started || e.cancelled) continue;
      e.cancelled = true;
      ++cancelled;
    }
    stats_.aborted += cancelled;
    holds_.clear();
    stalled_ = false;
    target = next_ticket_ - 1;
  }
  cv_.notify_all();
  // On the worker (a done callback), waiting would wait for ourselves.
  if (wait && std::this_thread::get_id() != worker_id_) {
    std::unique_lock lock(mu_);
    idle_cv_.wait(lock, [&]() SGB_REQUIRES(mu_) { return done_ticket_ >= target; });
  }
  return cancelled;
}

std::vector<JobInfo> Engine::InFlight() const {
  std::lock_guard lock(mu_);
  std::vector<JobInfo> out;
  out.reserve(queue_.size());
  for (const Entry& e : queue_) {
    if (!e.job) continue;  // being completed
    JobInfo info;
    info.seqno = e.job->fence->seqno();
    info.op = e.job->op;
    for (const JobBuffer& b : e.job->buffers) info.handles.push_back(b.handle);
    info.state = e.state;
    info.dependencies_pending = e.dependencies_pending;
    out.push_back(std::move(info));
  }
  return out;
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Engine::Drain() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [&]() SGB_REQUIRES(mu_) { return queue_.empty() && completing_ == 0; });
}

bool Engine::HeldLocked(const Job& job, std::chrono::steady_clock::time_point now,
                        std::optional<std::chrono::steady_clock::time_point>* wake) {
  std::erase_if(holds_, [&](const Hold& h) { return h.until && *h.until <= now; });
  bool held = false;
  for (const Hold& h : holds_) {
    bool applies = h.buffer == nullptr ||
                   std::any_of(job.buffers.begin(), job.buffers.end(),
                               [&](const JobBuffer& b) { return b.identity == h.buffer; });
    if (!applies) continue;
    held = true;
    if (h.until && (!*wake || *h.until < **wake)) *wake = h.until;
  }
  return held;
}

void Engine::WaitDependenciesLocked(Entry& e, std::unique_lock<std::mutex>& lock) {
  auto pending = [&e]() {
    uint32_t n = 0;
    for (const FenceRef& f : e.job->dependencies) n += !f->IsSignaled();
    return n;
  };
  e.dependencies_pending = pending();
  if (e.dependencies_pending == 0 || e.cancelled) return;
  stats_.waited_on_dependencies++;
  e.state = "waiting";
  // A callback on each fence wakes the worker; it holds the wake-up state, not the engine,
  // because another device's fence may signal after this engine is gone.
  std::vector<FenceRef> deps = e.job->dependencies;
  lock.unlock();
  for (const FenceRef& f : deps) {
    (void)f->AddCallback([wake = wake_](const Fence&) {
      std::lock_guard l(wake->mu);
      wake->cv.notify_all();
    });
  }
  lock.lock();
  cv_.wait(lock, [&]() SGB_REQUIRES(mu_) {
    e.dependencies_pending = pending();
    return stopping_ || e.cancelled || e.dependencies_pending == 0;
  });
}

void Engine::WorkerLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&]() SGB_REQUIRES(mu_) { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Entry& e = queue_.front();  // stays in the queue (and in InFlight) until completed

    WaitDependenciesLocked(e, lock);
    if (stalled_ && !stopping_ && !e.cancelled) {
      e.state = "stalled";
      cv_.wait(lock, [&]() SGB_REQUIRES(mu_) { return stopping_ || !stalled_ || e.cancelled; });
    }
    if (stopping_) return;  // not started: Stop() cancels it

    Status status = -ECANCELED;  // AbortAll(): never executed, touched no buffer
    uint64_t value = 0;
    if (!e.cancelled) {
      e.state = "running";
      e.started = true;
      lock.unlock();
      Result<uint64_t> result = Execute(*e.job);
      lock.lock();

      // A held completion: executed, but the fence (and every later one) waits.
      bool counted = false;
      for (;;) {
        std::optional<std::chrono::steady_clock::time_point> wake;
        if (stopping_ || !HeldLocked(*e.job, std::chrono::steady_clock::now(), &wake)) break;
        e.state = "held";
        if (!counted) stats_.held++;
        counted = true;
        if (wake) {
          cv_.wait_until(lock, *wake);
        } else {
          cv_.wait(lock);
        }
      }
      status = result ? kOk : result.status();
      value = result ? *result : 0;
    }

    // Out of the queue before its fence signals: whoever the fence wakes sees it gone.
    std::unique_ptr<Job> job = std::move(e.job);
    const uint64_t ticket = e.ticket;
    queue_.pop_front();
    stats_.in_flight = static_cast<uint32_t>(queue_.size());
    ++completing_;
    lock.unlock();
    Complete(std::move(job), status, value);
    lock.lock();
    --completing_;
    done_ticket_ = ticket;
    idle_cv_.notify_all();  // Drain() (idle), AbortAll() (its ticket)
  }
}

void Engine::Complete(std::unique_ptr<Job> job, Status status, uint64_t result) {
  if (status) {
    Logf(LogLevel::kDebug, "%s: %s job %llu failed: %d", name_.c_str(), JobOpName(job->op),
         static_cast<unsigned long long>(job->fence->seqno()), status);
    (void)job->fence->SignalWithError(status);
  } else {
    (void)job->fence->Signal();
  }
  {
    std::lock_guard lock(mu_);
    stats_.completed++;
    if (status) stats_.failed++;
  }
  // The job's buffers (and what keeps them alive) go before `done` runs: a caller woken by
  // it may check that nothing holds them any more.
  JobDone done = std::move(job->done);
  job.reset();
  if (done) done(status, result);
}

}  // namespace sharegpu
