// Shared by every test module: run n threads and fail loudly (never hang) on a deadlock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sharegpu::testing {

// Failure detector for tests that could deadlock; never used to wait for progress.
inline constexpr std::chrono::seconds kDeadlockTimeout{60};

// Runs fn(i) on n threads and joins them; if they do not all finish within kDeadlockTimeout
// (a deadlock or a lost wake-up), the test binary fails loudly rather than hanging.
inline void RunThreadsBounded(int n, const std::function<void(int)>& fn) {
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      fn(i);
      std::lock_guard lock(mu);
      ++done;
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, kDeadlockTimeout, [&] { return done == n; })) {
      std::fprintf(stderr, "FATAL: %d of %d threads did not finish: deadlock or lost wake-up\n",
                   n - done, n);
      std::fflush(stderr);
      std::_Exit(1);
    }
  }
  for (auto& t : threads) t.join();
}

}  // namespace sharegpu::testing
