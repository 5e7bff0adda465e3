// Runs the registered Google Benchmarks and then prints one line per registered ratio:
//   ratio NAME VALUE
// where VALUE compares a benchmark with a baseline measured in the same run: the median of
// each one's repetitions (--benchmark_repetitions; with --benchmark_enable_random_interleaving
// the repetitions of all benchmarks are run in random order, so host noise hits candidate and
// baseline alike). Use SHAREGPU_BENCH_MAIN() instead of BENCHMARK_MAIN().
#pragma once

#include <string>

namespace sharegpu::bench {

enum class RatioKind {
  kTime,       // candidate time / baseline time (lower is better; e.g. lock cost)
  kBandwidth,  // baseline time / candidate time == candidate bandwidth / baseline bandwidth
};

// Benchmarks are matched by their full run name as Google Benchmark prints it
// (e.g. "BM_WwLock/800/threads:2"). Runs left out by --benchmark_filter print no line;
// otherwise a missing run or an errored benchmark prints a `ratio-error` line and makes
// RunBenchmarksAndPrintRatios() return 1.
void RegisterRatio(const std::string& name, const std::string& candidate,
                   const std::string& baseline, RatioKind kind);

int RunBenchmarksAndPrintRatios(int argc, char** argv);

}  // namespace sharegpu::bench

#define SHAREGPU_BENCH_MAIN()                                            \
  int main(int argc, char** argv) {                                      \
    return ::sharegpu::bench::RunBenchmarksAndPrintRatios(argc, argv);   \
  }
