// Clang thread-safety annotations (as in Fuchsia magma). They document which lock guards what;
// under clang with -Wthread-safety they are checked, under GCC they compile away.
#pragma once

#if defined(__clang__)
#define SGB_TA(x) __attribute__((x))
#else
#define SGB_TA(x)
#endif

#define SGB_CAPABILITY(x) SGB_TA(capability(x))
#define SGB_GUARDED_BY(x) SGB_TA(guarded_by(x))
#define SGB_PT_GUARDED_BY(x) SGB_TA(pt_guarded_by(x))
#define SGB_REQUIRES(...) SGB_TA(requires_capability(__VA_ARGS__))
#define SGB_EXCLUDES(...) SGB_TA(locks_excluded(__VA_ARGS__))
#define SGB_ACQUIRE(...) SGB_TA(acquire_capability(__VA_ARGS__))
#define SGB_RELEASE(...) SGB_TA(release_capability(__VA_ARGS__))
#define SGB_NO_THREAD_SAFETY_ANALYSIS SGB_TA(no_thread_safety_analysis)
