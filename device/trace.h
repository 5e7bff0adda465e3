#include "trace/trace-hw_misc_sharegpu.h"
