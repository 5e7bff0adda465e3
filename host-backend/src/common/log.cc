#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace sharegpu {
namespace {

std::mutex g_sink_mu;
LogSink g_sink = nullptr;
void* g_sink_opaque = nullptr;

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warning";
    case LogLevel::kError: return "error";
    case LogLevel::kGuestError: return "guest error";
  }
  return "?";
}

}  // namespace

void SetLogSink(LogSink sink, void* opaque) {
  std::lock_guard lock(g_sink_mu);
  g_sink = sink;
  g_sink_opaque = opaque;
}

void Logf(LogLevel level, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  std::lock_guard lock(g_sink_mu);
  if (g_sink) {
    g_sink(g_sink_opaque, level, buf);
  } else if (level >= LogLevel::kWarn) {
    fprintf(stderr, "sharegpu-backend %s: %s\n", LevelName(level), buf);
  }
}

}  // namespace sharegpu
