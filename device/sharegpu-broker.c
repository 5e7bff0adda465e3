/*
 * sharegpu: the connection to the host's sharegpu-broker (docs/broker.md), a user-creatable
 * QOM object, and its monitor commands
 *
 *   -object sharegpu-broker,id=b0,path=/run/sharegpu/broker.sock[,vm-name=vm-a]
 *   -device sharegpu,broker=b0
 *
 * complete() connects (a failure is an error: QEMU does not start without its broker); the
 * client's descriptor (an epoll fd that stays the same across reconnects) is watched by the
 * main loop, which runs sgbk_client_dispatch(): every broker callback runs on the main loop
 * under the BQL. When the broker goes away the client revokes every import (the revoked
 * callbacks run first), then calls `disconnected`; a timer then tries to reconnect every
 * SHAREGPU_BROKER_RECONNECT_MS under the same name. Exports do not survive: the devices
 * report them lost to their guests (BO_REVOKED with SGHW_EVT_F_EXPORT), which export again.
 *
 * Requests to the broker block the main loop until it answers (microseconds for a local
 * broker; at most the client timeout, SHAREGPU_BROKER_TIMEOUT_MS). A guest's first import of
 * an id granted to this VM makes none: the client accepts offers (sharegpu_broker_offered).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sharegpu.h"
#include "qapi/qapi-events-sharegpu.h"
#include "qom/object_interfaces.h"
#include "system/system.h"
#include "trace.h"
#include "sharegpu.h"

#define SHAREGPU_BROKER_RECONNECT_MS 1000
#define SHAREGPU_BROKER_TIMEOUT_MS 5000

static QTAILQ_HEAD(, SharegpuBroker) sharegpu_brokers =
    QTAILQ_HEAD_INITIALIZER(sharegpu_brokers);

static const char *sharegpu_broker_id(SharegpuBroker *b)
{
    const char *id = object_get_canonical_path_component(OBJECT(b));

    return id ? id : "?";
}

bool sharegpu_broker_connected(SharegpuBroker *b)
{
    return b && b->client && sgbk_client_connected(b->client);
}

/* ------------------------------------------------------------------ broker callbacks */

struct SharegpuBrokerAck {
    SharegpuBroker *b;   /* referenced */
    sgbk_id id;
    uint64_t generation;
    uint32_t holders;
    bool handled;        /* some device imports the id */
};

void sharegpu_broker_ack_hold(SharegpuBrokerAck *ack)
{
    ack->holders++;
    if (ack->holders == 2) {
        /* the first device that waits for its jobs: counted once per invalidation */
        ack->b->acks_deferred++;
    }
}

/* The last holder acknowledges: every device has unmapped the old pages and no job of this
 * VM runs on them any more, so the exporter may release them. */
void sharegpu_broker_ack_put(SharegpuBrokerAck *ack)
{
    SharegpuBroker *b = ack->b;
    char text[33];
    int ret;

    assert(ack->holders > 0);
    if (--ack->holders) {
        return;
    }
    sgbk_id_format(&ack->id, text);
    trace_sharegpu_broker_ack(sharegpu_broker_id(b), text, ack->generation);
    ret = sharegpu_broker_connected(b) ?
          sgbk_ack_invalidate(b->client, &ack->id, ack->generation) : -ENODEV;
    if (ret && ret != -ENODEV) {
        warn_report("sharegpu-broker %s: ack of %s generation %" PRIu64 ": %s%s",
                    sharegpu_broker_id(b), text, ack->generation, sgbk_strerror(ret),
                    ack->handled ? "" : " (no device imports it)");
    }
    object_unref(OBJECT(b));
    g_free(ack);
}

static void sharegpu_broker_invalidate(void *opaque, const sgbk_id *id, uint64_t generation)
{
    SharegpuBroker *b = opaque;
    SharegpuBrokerAck *ack = g_new0(SharegpuBrokerAck, 1);
    SharegpuState *s;
    char text[33];

    sgbk_id_format(id, text);
    trace_sharegpu_broker_invalidate(sharegpu_broker_id(b), text, generation);
    b->invalidations++;
    ack->b = b;
    object_ref(OBJECT(b));
    ack->id = *id;
    ack->generation = generation;
    ack->holders = 1;
    QTAILQ_FOREACH(s, &sharegpu_devices, next) {
        if (s->broker == b) {
            ack->handled |= sharegpu_remote_invalidate(s, id, generation, ack);
        }
    }
    /* the window mappings are gone; jobs on the old pages may still hold the ack */
    sharegpu_broker_ack_put(ack);
}

static void sharegpu_broker_revoked(void *opaque, const sgbk_id *id, uint32_t reason)
{
    SharegpuBroker *b = opaque;
    SharegpuState *s;
    char text[33];

    sgbk_id_format(id, text);
    trace_sharegpu_broker_revoked(sharegpu_broker_id(b), text, reason);
    b->revocations++;
    QTAILQ_FOREACH(s, &sharegpu_devices, next) {
        if (s->broker == b) {
            sharegpu_remote_revoke(s, id, reason);
        }
    }
}

static void sharegpu_broker_release_ok(void *opaque, const sgbk_id *id, uint64_t generation,
                                       uint32_t revoked)
{
    SharegpuBroker *b = opaque;
    SharegpuState *s;
    char text[33];

    sgbk_id_format(id, text);
    trace_sharegpu_broker_release_ok(sharegpu_broker_id(b), text, generation, revoked);
    QTAILQ_FOREACH(s, &sharegpu_devices, next) {
        if (s->broker == b) {
            sharegpu_broker_export_release_ok(s, id, generation);
        }
    }
}

static void sharegpu_broker_denied(void *opaque, const sgbk_id *id, const char *peer)
{
    SharegpuBroker *b = opaque;
    char text[33];

    /* the client library has logged it (a warning): count it for the monitor */
    sgbk_id_format(id, text);
    b->denied++;
    trace_sharegpu_broker_denied(sharegpu_broker_id(b), text, peer);
}

/*
 * An export granted to this VM was imported for it: the client library keeps the descriptor,
 * and the guest's BROKER_IMPORT of the id takes it without a round trip to the broker (which
 * would block the main loop). An offer the guest never imports costs one descriptor until the
 * exporter unexports or withdraws; its invalidations are acknowledged at once (no device
 * maps it).
 */
static void sharegpu_broker_offered(void *opaque, const sgbk_id *id, const char *exporter,
                                    uint64_t size, uint32_t writable)
{
    SharegpuBroker *b = opaque;
    char text[33];

    sgbk_id_format(id, text);
    trace_sharegpu_broker_offered(sharegpu_broker_id(b), text, exporter, size, writable);
}

static void sharegpu_broker_export_failed(void *opaque, const sgbk_id *id, int err)
{
    SharegpuBroker *b = opaque;
    SharegpuState *s;
    char text[33];

    sgbk_id_format(id, text);
    trace_sharegpu_broker_export_failed(sharegpu_broker_id(b), text, err);
    QTAILQ_FOREACH(s, &sharegpu_devices, next) {
        if (s->broker == b) {
            sharegpu_broker_export_refused(s, id, err);
        }
    }
}

static void sharegpu_broker_reconnect_cb(void *opaque)
{
    SharegpuBroker *b = opaque;
    int ret = sgbk_client_reconnect(b->client);

    if (ret == 0 || ret == -EISCONN) {
        b->reconnects++;
        info_report("sharegpu-broker %s: reconnected to %s as '%s'",
                    sharegpu_broker_id(b), b->path, b->vm_name);
        return;
    }
    timer_mod(b->reconnect_timer,
              qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + SHAREGPU_BROKER_RECONNECT_MS);
}

static void sharegpu_broker_disconnected(void *opaque)
{
    SharegpuBroker *b = opaque;
    SharegpuState *s;

    warn_report("sharegpu-broker %s: lost the broker at %s; imports revoked, exports lost; "
                "reconnecting every %d ms", sharegpu_broker_id(b), b->path,
                SHAREGPU_BROKER_RECONNECT_MS);
    QTAILQ_FOREACH(s, &sharegpu_devices, next) {
        if (s->broker == b) {
            sharegpu_broker_exports_lost(s);
        }
    }
    timer_mod(b->reconnect_timer,
              qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + SHAREGPU_BROKER_RECONNECT_MS);
}

static void sharegpu_broker_readable(void *opaque)
{
    SharegpuBroker *b = opaque;

    /* -ENOTCONN once the broker is gone: the disconnected callback has run */
    sgbk_client_dispatch(b->client);
}

/* ------------------------------------------------------------------ QOM */

static void sharegpu_broker_complete(UserCreatable *uc, Error **errp)
{
    SharegpuBroker *b = SHAREGPU_BROKER(uc);
    sgbk_callbacks cbs = {
        .opaque = b,
        .invalidate = sharegpu_broker_invalidate,
        .revoked = sharegpu_broker_revoked,
        .release_ok = sharegpu_broker_release_ok,
        .denied = sharegpu_broker_denied,
        .offered = sharegpu_broker_offered,
        .disconnected = sharegpu_broker_disconnected,
        .export_failed = sharegpu_broker_export_failed,
    };
    int ret;

    if (!b->path || !*b->path) {
        error_setg(errp, "sharegpu-broker: 'path' (the broker's socket) is required");
        return;
    }
    if (!b->vm_name) {
        b->vm_name = g_strdup(qemu_name);
    }
    if (!b->vm_name || !*b->vm_name) {
        error_setg(errp, "sharegpu-broker: 'vm-name' is required (or -name)");
        return;
    }
    sgb_set_log_handler(sharegpu_log_sink, NULL);
    /* offers: what is granted to this VM is imported for it at the grant (see above) */
    ret = sgbk_client_connect(b->path, b->vm_name, SGBK_CONNECT_ACCEPT_OFFERS, &b->client);
    if (ret) {
        /* the client's names are the protocol's: say what a failed connect means */
        error_setg(errp, "sharegpu-broker: cannot connect to %s as '%s': %s", b->path,
                   b->vm_name, ret == -ENOENT || ret == -ECONNREFUSED ?
                   "no broker is listening there" : sgbk_strerror(ret));
        b->client = NULL;
        return;
    }
    sgbk_client_set_timeout(b->client, SHAREGPU_BROKER_TIMEOUT_MS);
    sgbk_client_set_callbacks(b->client, &cbs);
    b->reconnect_timer = timer_new_ms(QEMU_CLOCK_REALTIME, sharegpu_broker_reconnect_cb, b);
    qemu_set_fd_handler(sgbk_client_fd(b->client), sharegpu_broker_readable, NULL, b);
    QTAILQ_INSERT_TAIL(&sharegpu_brokers, b, next);
    trace_sharegpu_broker_connect(sharegpu_broker_id(b), b->path, b->vm_name);
}

static bool sharegpu_broker_can_be_deleted(UserCreatable *uc)
{
    return SHAREGPU_BROKER(uc)->users == 0;
}

static char *sharegpu_broker_get_path(Object *obj, Error **errp)
{
    return g_strdup(SHAREGPU_BROKER(obj)->path);
}

static void sharegpu_broker_set_path(Object *obj, const char *value, Error **errp)
{
    SharegpuBroker *b = SHAREGPU_BROKER(obj);

    if (b->client) {
        error_setg(errp, "sharegpu-broker: 'path' cannot change once connected");
        return;
    }
    g_free(b->path);
    b->path = g_strdup(value);
}

static char *sharegpu_broker_get_vm_name(Object *obj, Error **errp)
{
    return g_strdup(SHAREGPU_BROKER(obj)->vm_name);
}

static void sharegpu_broker_set_vm_name(Object *obj, const char *value, Error **errp)
{
    SharegpuBroker *b = SHAREGPU_BROKER(obj);

    if (b->client) {
        error_setg(errp, "sharegpu-broker: 'vm-name' cannot change once connected");
        return;
    }
    g_free(b->vm_name);
    b->vm_name = g_strdup(value);
}

static void sharegpu_broker_finalize(Object *obj)
{
    SharegpuBroker *b = SHAREGPU_BROKER(obj);

    if (b->client) {
        qemu_set_fd_handler(sgbk_client_fd(b->client), NULL, NULL, NULL);
        QTAILQ_REMOVE(&sharegpu_brokers, b, next);
        sgbk_client_free(b->client);
        b->client = NULL;
    }
    if (b->reconnect_timer) {
        timer_free(b->reconnect_timer);
        b->reconnect_timer = NULL;
    }
    g_free(b->path);
    g_free(b->vm_name);
}

static void sharegpu_broker_class_init(ObjectClass *oc, void *data)
{
    UserCreatableClass *ucc = USER_CREATABLE_CLASS(oc);

    ucc->complete = sharegpu_broker_complete;
    ucc->can_be_deleted = sharegpu_broker_can_be_deleted;
    object_class_property_add_str(oc, "path", sharegpu_broker_get_path,
                                  sharegpu_broker_set_path);
    object_class_property_set_description(oc, "path", "the broker's unix socket");
    object_class_property_add_str(oc, "vm-name", sharegpu_broker_get_vm_name,
                                  sharegpu_broker_set_vm_name);
    object_class_property_set_description(oc, "vm-name",
                                          "this VM's name at the broker (default: -name)");
}

/* ------------------------------------------------------------------ monitor */

static const char *const sharegpu_revoke_reasons[] = {
    [SGHW_REVOKE_UNEXPORTED] = "unexported",
    [SGHW_REVOKE_EXPORTER_GONE] = "exporter-gone",
    [SGHW_REVOKE_GRANT_WITHDRAWN] = "grant-withdrawn",
    [SGHW_REVOKE_ACK_TIMEOUT] = "ack-timeout",
    [SGHW_REVOKE_BROKER_GONE] = "broker-gone",
};

const char *sharegpu_revoke_reason_name(uint32_t reason)
{
    if (reason < ARRAY_SIZE(sharegpu_revoke_reasons) && sharegpu_revoke_reasons[reason]) {
        return sharegpu_revoke_reasons[reason];
    }
    return "unknown";
}

/* "  export ID owner NAME size S generation G moving M waiting W grants A:ro.. importers B.." */
static SharegpuBrokerHostExportInfo *sharegpu_broker_parse_export(const char *line)
{
    g_auto(GStrv) words = g_strsplit(line, " ", -1);
    SharegpuBrokerHostExportInfo *e = g_new0(SharegpuBrokerHostExportInfo, 1);
    strList **tail = NULL;
    int i;

    for (i = 0; words[i]; i++) {
        const char *w = words[i], *next = words[i + 1];

        if (!*w) {
            continue;
        }
        if (next && !strcmp(w, "export") && !e->broker_id) {
            e->broker_id = g_strdup(next);
            i++;
        } else if (next && !strcmp(w, "owner")) {
            e->owner = g_strdup(next);
            i++;
        } else if (next && !strcmp(w, "size")) {
            e->size = g_ascii_strtoull(next, NULL, 10);
            i++;
        } else if (next && !strcmp(w, "generation")) {
            e->generation = g_ascii_strtoull(next, NULL, 10);
            i++;
        } else if (!strcmp(w, "grants")) {
            tail = &e->grants;
        } else if (!strcmp(w, "importers")) {
            tail = &e->importers;
        } else if (tail && strcmp(w, "-")) {
            QAPI_LIST_APPEND(tail, g_strdup(w));
        } else if (next && (!strcmp(w, "moving") || !strcmp(w, "waiting"))) {
            i++;
        }
    }
    if (!e->broker_id || !e->owner) {
        qapi_free_SharegpuBrokerHostExportInfo(e);
        return NULL;
    }
    return e;
}

/* The peers and exports of the broker's status text (sharegpu-broker --status). */
static void sharegpu_broker_parse_status(SharegpuBrokerInfo *info, const char *text)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    SharegpuBrokerPeerInfoList **ptail = &info->peers;
    SharegpuBrokerHostExportInfoList **etail = &info->host_exports;
    int i;

    info->has_peers = info->has_host_exports = true;
    for (i = 0; lines[i]; i++) {
        char name[64];
        unsigned long long id, exports, imports;
        unsigned uid;
        int pid;

        /* "-": a connection without a name yet (this status query's own) */
        if (sscanf(lines[i], "  peer %llu name %63s pid %d uid %u exports %llu imports %llu",
                   &id, name, &pid, &uid, &exports, &imports) == 6 && strcmp(name, "-")) {
            SharegpuBrokerPeerInfo *p = g_new0(SharegpuBrokerPeerInfo, 1);

            p->name = g_strdup(name);
            p->pid = pid;
            p->uid = uid;
            p->exports = exports;
            p->imports = imports;
            QAPI_LIST_APPEND(ptail, p);
        } else if (g_str_has_prefix(lines[i], "  export ")) {
            SharegpuBrokerHostExportInfo *e = sharegpu_broker_parse_export(lines[i]);

            if (e) {
                QAPI_LIST_APPEND(etail, e);
            }
        }
    }
}

static SharegpuBrokerInfo *sharegpu_broker_info(SharegpuBroker *b)
{
    SharegpuBrokerInfo *info = g_new0(SharegpuBrokerInfo, 1);
    strList **dtail = &info->devices;
    SharegpuBrokerExportInfoList **etail = &info->exports;
    SharegpuBrokerImportInfoList **itail = &info->imports;
    g_autofree char *status = NULL;
    size_t len = 0;
    SharegpuState *s;

    info->id = g_strdup(sharegpu_broker_id(b));
    info->path = g_strdup(b->path);
    info->vm_name = g_strdup(b->vm_name);
    info->connected = sharegpu_broker_connected(b);
    info->reconnects = b->reconnects;
    info->invalidations = b->invalidations;
    info->revocations = b->revocations;
    info->denied = b->denied;
    info->acks_deferred = b->acks_deferred;
    QTAILQ_FOREACH(s, &sharegpu_devices, next) {
        if (s->broker == b) {
            QAPI_LIST_APPEND(dtail, g_strdup(s->name));
            sharegpu_broker_list(s, &etail, &itail);
        }
    }
    /* the broker's own view: peers, exports with their grants, imports */
    status = g_malloc0(64 * 1024);
    if (sgbk_status(b->path, status, 64 * 1024, &len) == 0) {
        sharegpu_broker_parse_status(info, status);
        info->broker_status = g_steal_pointer(&status);
    } else {
        info->broker_status = g_strdup("(the broker does not answer)");
    }
    return info;
}

SharegpuBrokerInfoList *qmp_query_sharegpu_broker(const char *id, Error **errp)
{
    SharegpuBrokerInfoList *head = NULL, **tail = &head;
    SharegpuBroker *b;

    QTAILQ_FOREACH(b, &sharegpu_brokers, next) {
        if (!id || g_strcmp0(sharegpu_broker_id(b), id) == 0) {
            QAPI_LIST_APPEND(tail, sharegpu_broker_info(b));
        }
    }
    if (id && !head) {
        error_setg(errp, "no sharegpu-broker object '%s'", id);
    }
    return head;
}

static const TypeInfo sharegpu_broker_types[] = {
    {
        .name = TYPE_SHAREGPU_BROKER,
        .parent = TYPE_OBJECT,
        .instance_size = sizeof(SharegpuBroker),
        .instance_finalize = sharegpu_broker_finalize,
        .class_init = sharegpu_broker_class_init,
        .interfaces = (InterfaceInfo[]) {
            { TYPE_USER_CREATABLE },
            { },
        },
    },
};

DEFINE_TYPES(sharegpu_broker_types)
