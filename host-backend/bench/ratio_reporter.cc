#include "ratio_reporter.h"

#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
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

// Console output as usual, plus the per-iteration real time of every run, keyed by run name.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  // No colour: the output goes to logs, and `ratio` lines must start at column 0.
  RecordingReporter() : ConsoleReporter(OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.iterations == 0) continue;
      times_[run.benchmark_name()] = run.GetAdjustedRealTime();
    }
  }
  const std::map<std::string, double>& times() const { return times_; }

 private:
  std::map<std::string, double> times_;
};

}  // namespace

void RegisterRatio(const std::string& name, const std::string& candidate,
                   const std::string& baseline, RatioKind kind) {
  Ratios().push_back({name, candidate, baseline, kind});
}

int RunBenchmarksAndPrintRatios(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  const auto& times = reporter.times();
  int printed = 0;
  for (const Ratio& r : Ratios()) {
    auto c = times.find(r.candidate);
    auto b = times.find(r.baseline);
    if (c == times.end() || b == times.end() || c->second <= 0 || b->second <= 0) continue;
    double value = r.kind == RatioKind::kTime ? c->second / b->second : b->second / c->second;
    std::printf("ratio %s %.3f\n", r.name.c_str(), value);
    ++printed;
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace sharegpu::bench
