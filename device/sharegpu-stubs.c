/*
 * sharegpu monitor commands when the device is not built (CONFIG_SHAREGPU=n)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sharegpu.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"

SharegpuInfoList *qmp_query_sharegpu(const char *id, Error **errp)
{
    return NULL;
}

SharegpuBrokerInfoList *qmp_query_sharegpu_broker(const char *id, Error **errp)
{
    error_setg(errp, "sharegpu device support is not compiled in");
    return NULL;
}

void hmp_info_sharegpu_broker(Monitor *mon, const QDict *qdict)
{
    monitor_printf(mon, "sharegpu device support is not compiled in\n");
}

SharegpuGraph *qmp_query_sharegpu_graph(Error **errp)
{
    error_setg(errp, "sharegpu device support is not compiled in");
    return NULL;
}

void hmp_info_sharegpu_graph(Monitor *mon, const QDict *qdict)
{
    monitor_printf(mon, "sharegpu device support is not compiled in\n");
}

void qmp_x_sharegpu_move_bo(const char *id, uint32_t handle,
                            SharegpuPlacement placement, Error **errp)
{
    error_setg(errp, "sharegpu device support is not compiled in");
}

void hmp_info_sharegpu(Monitor *mon, const QDict *qdict)
{
    monitor_printf(mon, "sharegpu device support is not compiled in\n");
}

void hmp_x_sharegpu_move_bo(Monitor *mon, const QDict *qdict)
{
    monitor_printf(mon, "sharegpu device support is not compiled in\n");
}

void qmp_x_sharegpu_hold(const char *id, bool has_handle, uint32_t handle, bool has_ms,
                         uint32_t ms, Error **errp)
{
    error_setg(errp, "sharegpu device support is not compiled in");
}

void qmp_x_sharegpu_stall(const char *id, bool stall, Error **errp)
{
    error_setg(errp, "sharegpu device support is not compiled in");
}

void qmp_x_sharegpu_release(const char *id, Error **errp)
{
    error_setg(errp, "sharegpu device support is not compiled in");
}

void qmp_x_sharegpu_drop_irq(const char *id, Error **errp)
{
    error_setg(errp, "sharegpu device support is not compiled in");
}

void hmp_x_sharegpu_hold(Monitor *mon, const QDict *qdict)
{
    monitor_printf(mon, "sharegpu device support is not compiled in\n");
}

void hmp_x_sharegpu_stall(Monitor *mon, const QDict *qdict)
{
    monitor_printf(mon, "sharegpu device support is not compiled in\n");
}

void hmp_x_sharegpu_release(Monitor *mon, const QDict *qdict)
{
    monitor_printf(mon, "sharegpu device support is not compiled in\n");
}

void hmp_x_sharegpu_drop_irq(Monitor *mon, const QDict *qdict)
{
    monitor_printf(mon, "sharegpu device support is not compiled in\n");
}
