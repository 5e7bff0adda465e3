#include "ratio_reporter.h"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace sharegpu::bench {
namespace {

struct Ratio {
  std::string name, candidate, baseline;
  RatioKind kind;
};

std::vector<Ratio>& Ratios() {
  static std::vector<Ratio> ratios;
  return ratios;
}

// The median of a run's repetitions: with --benchmark_repetitions and random interleaving, a
// burst of host noise lands in one repetition of one benchmark, not in the ratio.
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Console output as usual, plus the per-iteration real time of every repetition of every run,
// keyed by run name.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  // No colour: the output goes to logs, and `ratio` lines must start at column 0.
  RecordingReporter() : ConsoleReporter(OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) {
        errors_.push_back(run.benchmark_name() + ": " + run.error_message);
        continue;
      }
      if (run.run_type != Run::RT_Iteration || run.iterations == 0) continue;
      samples_[run.benchmark_name()].push_back(run.GetAdjustedRealTime());
    }
  }
  std::map<std::string, double> times() const {
    std::map<std::string, double> t;
    for (const auto& [name, v] : samples_) t[name] = Median(v);
    return t;
  }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::map<std::string, std::vector<double>> samples_;
  std::vector<std::string> errors_;
};

// --benchmark_filter leaves runs out on purpose: their ratios are not missing.
bool Filtered(int argc, char** argv) {
  for (int i = 1; i < argc; i++)
    if (std::strncmp(argv[i], "--benchmark_filter", 18) == 0) return true;
  return false;
}

}  // namespace

void RegisterRatio(const std::string& name, const std::string& candidate,
                   const std::string& baseline, RatioKind kind) {
  Ratios().push_back({name, candidate, baseline, kind});
}

// A benchmark that errored, or a ratio that cannot be computed without a filter, fails the
// run (exit status 1), so that `make check` cannot pass on a benchmark that did not run.
int RunBenchmarksAndPrintRatios(int argc, char** argv) {
  const bool filtered = Filtered(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  const auto times = reporter.times();
  int failures = 0;
  for (const std::string& e : reporter.errors()) {
    std::printf("ratio-error benchmark failed: %s\n", e.c_str());
    ++failures;
  }
  for (const Ratio& r : Ratios()) {
    auto c = times.find(r.candidate);
    auto b = times.find(r.baseline);
    if (c == times.end() || b == times.end() || c->second <= 0 || b->second <= 0) {
      if (!filtered) {
        std::printf("ratio-error %s: no result for %s\n", r.name.c_str(),
                    c == times.end() || c->second <= 0 ? r.candidate.c_str()
                                                       : r.baseline.c_str());
        ++failures;
      }
      continue;
    }
    double value = r.kind == RatioKind::kTime ? c->second / b->second : b->second / c->second;
    std::printf("ratio %s %.3f\n", r.name.c_str(), value);
  }
  std::fflush(stdout);
  return failures ? 1 : 0;
}

}  // namespace sharegpu::bench
