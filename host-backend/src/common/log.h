// Backend diagnostics. The device routes them to qemu_log (LOG_GUEST_ERROR for bad input);
// standalone users get stderr. Never aborts.
#pragma once

#include <cstdarg>

namespace sharegpu {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kGuestError = 4 };

using LogSink = void (*)(void* opaque, LogLevel level, const char* msg);

// Installs the process-wide sink (nullptr restores stderr). Thread-safe.
void SetLogSink(LogSink sink, void* opaque);
void Logf(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace sharegpu
