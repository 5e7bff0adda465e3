// Clang thread-safety annotations (as in Fuchsia magma). They document which lock guards what;
// under clang with -Wthread-safety they are checked, under GCC they compile away.
#pragma once

#if defined(__clang__)
#define SGPU_TA(x) __attribute__((x))
#else
#define SGPU_TA(x)
#endif

#define SGPU_CAPABILITY(x) SGPU_TA(capability(x))
#define SGPU_GUARDED_BY(x) SGPU_TA(guarded_by(x))
#define SGPU_PT_GUARDED_BY(x) SGPU_TA(pt_guarded_by(x))
#define SGPU_REQUIRES(...) SGPU_TA(requires_capability(__VA_ARGS__))
#define SGPU_EXCLUDES(...) SGPU_TA(locks_excluded(__VA_ARGS__))
#define SGPU_ACQUIRE(...) SGPU_TA(acquire_capability(__VA_ARGS__))
#define SGPU_RELEASE(...) SGPU_TA(release_capability(__VA_ARGS__))
#define SGPU_NO_THREAD_SAFETY_ANALYSIS SGPU_TA(no_thread_safety_analysis)
