// The ratio reporter's own check (a meson test that must FAIL): a benchmark that errors makes
// the run exit non-zero and prints `ratio-error` lines instead of a ratio, so `make check`
// cannot pass on a benchmark that did not run.
#include <benchmark/benchmark.h>

#include "ratio_reporter.h"

namespace {

void BM_Works(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(state.iterations());
}
void BM_Errors(benchmark::State& state) {
  for (auto _ : state) state.SkipWithError("broken on purpose");
}
BENCHMARK(BM_Works);
BENCHMARK(BM_Errors);

const bool registered = [] {
  sharegpu::bench::RegisterRatio("works_vs_errors", "BM_Works", "BM_Errors",
                                 sharegpu::bench::RatioKind::kTime);
  return true;
}();

}  // namespace

SHAREGPU_BENCH_MAIN()
