#include "ratio_reporter.h"
// placeholder
SHAREGPU_BENCH_MAIN()
