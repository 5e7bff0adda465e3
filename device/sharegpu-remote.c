/*
 * sharegpu: a device's side of sharing between VMs through the host broker
 * (docs/hardware.md 13, docs/broker.md)
 *
 * Exports: BROKER_EXPORT gives the broker the buffer's storage, which must be storage of its
 * own (sgb_bo_own_storage: a sealed memfd of exactly the buffer's pages; a range of the
 * device's VRAM arena or system pool would hand the importer the whole file). The buffer
 * keeps it while exported. A relocation (BO_MOVE / BO_EVICT to SYSTEM, the monitor's
 * x-sharegpu-move-bo) moves it into new storage of its own and publishes that with
 * sgbk_move_begin; a duplicate of the old memfd is held until the broker's RELEASE_OK (every
 * importer has unmapped it, or was revoked for not doing so in time).
 *
 * Remote imports: BROKER_IMPORT asks the broker for the id and gets a descriptor of the
 * exporter's pages (O_RDONLY for a READ grant); the handle (SGHW_REMOTE_HANDLE_BIT) is an
 * entry of the device's handle table with a SharegpuRemote beside the window mapping.
 * MAP_IMPORT maps the descriptor in the import window (sharegpu-window.c). An invalidation
 * (the exporter moved) removes the mapping and drops the descriptor before the broker is
 * acknowledged (sharegpu-broker.c); the next MAP_IMPORT imports the new storage. A
 * revocation removes the mapping and makes every later use of the handle NO_DEVICE.
 *
 * Jobs (1.7): a remote import's jobs run on a backend buffer over the imported descriptor
 * (sgb_bo_create_foreign: the exporter's pages, zero copy), made at the first job after an
 * import or invalidation. An invalidation retires it: the broker is acknowledged only once
 * every job of this VM on the old pages has signalled its fence, so the exporter's old
 * storage is released after the remote jobs, as a local move waits for the importers'
 * fences (rule S7b; docs/broker.md "Jobs across VMs").
 *
 * Everything here runs on the main loop under the BQL (ring commands, broker callbacks).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "qapi/util.h"
#include "qapi/qapi-commands-sharegpu.h"
#include "qapi/qapi-events-sharegpu.h"
#include "hw/pci/pci_device.h"
#include "trace.h"
#include "sharegpu.h"

/* A buffer of this device exported through the broker. */
typedef struct SharegpuBrokerExport {
    uint32_t handle;
    sgbk_id id;
    uint64_t size;
    uint64_t generation;
    int old_fd;          /* the storage moved from, held until RELEASE_OK; -1: none */
    GHashTable *grants;  /* peer name -> right (as this VM set them) */
} SharegpuBrokerExport;

/* Beside a remote import handle's SharegpuBo. */
struct SharegpuRemote {
    SharegpuBroker *broker;
    sgbk_id id;
    int fd;              /* -1: not imported since the last invalidation */
    uint64_t size;
    bool writable;
    uint64_t generation;
    uint32_t revoked;    /* enum sghw_revoke_reason; 0 while alive */
    uint32_t job_handle; /* backend buffer over fd for jobs; 0: none yet */
    uint32_t acks_pending; /* invalidations waiting for jobs on retired job buffers */
};

/* A retired job buffer whose jobs still run; holds the broker's acknowledgement. */
typedef struct SharegpuRemoteRetired {
    uint32_t handle;         /* the remote import's (it may be destroyed meanwhile) */
    uint32_t job_handle;
    uint64_t size;
    SharegpuBrokerAck *ack;
} SharegpuRemoteRetired;

static void sharegpu_broker_export_free(gpointer data)
{
    SharegpuBrokerExport *e = data;

    if (e->old_fd >= 0) {
        close(e->old_fd);
    }
    g_hash_table_destroy(e->grants);
    g_free(e);
}

void sharegpu_remote_init(SharegpuState *s)
{
    s->broker_exports = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
                                              sharegpu_broker_export_free);
    s->job_buffers = g_hash_table_new(g_direct_hash, g_direct_equal);
}

/*
 * A job buffer is the device's own, behind a remote import handle: its backend handle is
 * not the guest's to name. A command naming it (as a local handle) is BAD_HANDLE, as for a
 * handle that does not exist.
 */
bool sharegpu_remote_hidden(SharegpuState *s, const struct sghw_cmd *c)
{
    bool hidden;

    switch (c->opcode) {
    case SGHW_OP_NOP:
    case SGHW_OP_BO_CREATE:
    case SGHW_OP_FENCE:
    case SGHW_OP_IMPORT:
    case SGHW_OP_BROKER_IMPORT:
        return false;   /* no handle in */
    default:
        break;
    }
    if (!s->job_buffers) {
        return false;
    }
    hidden = g_hash_table_contains(s->job_buffers, GUINT_TO_POINTER(c->handle)) ||
             (c->opcode == SGHW_OP_COPY &&
              g_hash_table_contains(s->job_buffers, GUINT_TO_POINTER(c->handle2)));
    if (hidden) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: opcode 0x%x names a handle that is "
                      "not the guest's\n", s->name, c->opcode);
    }
    return hidden;
}

static uint32_t sharegpu_status_from_broker(SharegpuState *s, const char *op, int ret)
{
    switch (ret) {
    case 0:
        return SGHW_ST_OK;
    case -ENOENT:
        return SGHW_ST_NOT_FOUND;
    case -EACCES:
        return SGHW_ST_ACCESS_DENIED;
    case -ENODEV:
    case -ENOTCONN:
    case -ECONNRESET:
    case -EPIPE:
        return SGHW_ST_NO_DEVICE;
    case -EBUSY:
        return SGHW_ST_BUSY;
    case -EINVAL:
        return SGHW_ST_INVALID;
    case -ENOSPC:
    case -ENOMEM:
        return SGHW_ST_NO_SPACE;
    default:
        warn_report("sharegpu: %s: broker %s: %s", s->name, op, sgbk_strerror(ret));
        return SGHW_ST_INTERNAL;
    }
}

/* ------------------------------------------------------------------ guest input */

/* A struct sghw_peer_name at gpa: 1..31 of [A-Za-z0-9._-] and a NUL. */
static uint32_t sharegpu_read_peer(SharegpuState *s, uint64_t gpa, char out[SGHW_PEER_NAME_LEN])
{
    struct sghw_peer_name raw;
    size_t i;

    if (pci_dma_read(PCI_DEVICE(s), gpa, &raw, sizeof(raw)) != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: cannot read a peer name at 0x%" PRIx64
                      "\n", s->name, gpa);
        return SGHW_ST_DMA_ERROR;
    }
    for (i = 0; i < sizeof(raw.name) && raw.name[i]; i++) {
        char ch = raw.name[i];

        if (!g_ascii_isalnum(ch) && ch != '.' && ch != '_' && ch != '-') {
            break;
        }
    }
    if (i == 0 || i == sizeof(raw.name) || raw.name[i]) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: bad peer name at 0x%" PRIx64
                      " (1..31 of [A-Za-z0-9._-], NUL-terminated)\n", s->name, gpa);
        return SGHW_ST_INVALID;
    }
    memcpy(out, raw.name, i + 1);
    return SGHW_ST_OK;
}

/* A local handle of this device (not an import of any kind); BAD_HANDLE otherwise. */
static uint32_t sharegpu_local_handle(SharegpuState *s, uint32_t handle, const char *op)
{
    sgb_bo_state info;
    int ret;

    if (handle & SGHW_REMOTE_HANDLE_BIT) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s of remote import 0x%x\n",
                      s->name, op, handle);
        return SGHW_ST_BAD_HANDLE;
    }
    ret = sgb_bo_state_get(s->dev, handle, &info);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    if (info.imported) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s of import %u (a VM exports only "
                      "its own buffers)\n", s->name, op, handle);
        return SGHW_ST_BAD_HANDLE;
    }
    return SGHW_ST_OK;
}

static uint32_t sharegpu_need_broker(SharegpuState *s, const char *op)
{
    if (!s->broker) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s without a broker (FEATURES.BROKER "
                      "clear)\n", s->name, op);
        return SGHW_ST_BAD_OPCODE;
    }
    return sharegpu_broker_connected(s->broker) ? SGHW_ST_OK : SGHW_ST_NO_DEVICE;
}

/* ------------------------------------------------------------------ exports */

static gboolean sharegpu_export_has_id(gpointer key, gpointer value, gpointer id)
{
    return !memcmp(&((SharegpuBrokerExport *)value)->id, id, sizeof(sgbk_id));
}

/* By broker id (broker events; a device has few exports and remote imports) */
static SharegpuBrokerExport *sharegpu_export_by_id(SharegpuState *s, const sgbk_id *id)
{
    return g_hash_table_find(s->broker_exports, sharegpu_export_has_id, (gpointer)id);
}

/* The buffer's current storage (its own memfd, offset 0) and its exported size. */
static int sharegpu_own_storage_fd(SharegpuState *s, uint32_t handle, int *fd,
                                   uint64_t *size)
{
    uint64_t off = 0, sz = 0;
    int ret = sgb_bo_storage(s->dev, handle, fd, &off, NULL, &sz);

    if (!ret && off != 0) {
        error_report("sharegpu: %s: handle %u: storage of its own at offset %" PRIu64,
                     s->name, handle, off);
        return -EIO;
    }
    *size = ROUND_UP(sz, SGHW_VRAM_ALIGN);
    return ret;
}

static uint32_t sharegpu_cmd_broker_export(SharegpuState *s, struct sghw_cmd *c)
{
    char peer[SGHW_PEER_NAME_LEN] = "";
    SharegpuBrokerExport *e;
    uint64_t size;
    sgbk_id id;
    uint32_t st;
    int fd, ret;

    if (c->arg > SGHW_BROKER_RIGHT_READ_WRITE) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: BROKER_EXPORT right %u\n",
                      s->name, c->arg);
        return SGHW_ST_INVALID;
    }
    st = sharegpu_local_handle(s, c->handle, "BROKER_EXPORT");
    if (st == SGHW_ST_OK && c->arg) {
        st = sharegpu_read_peer(s, c->off0, peer);
    }
    if (st != SGHW_ST_OK) {
        return st;
    }
    e = g_hash_table_lookup(s->broker_exports, GUINT_TO_POINTER(c->handle));
    if (e) {
        if (c->arg) {
            ret = sgbk_grant(s->broker->client, &e->id, peer, c->arg);
            if (ret) {
                return sharegpu_status_from_broker(s, "grant", ret);
            }
            g_hash_table_replace(e->grants, g_strdup(peer), GUINT_TO_POINTER(c->arg));
        }
        memcpy(c->uuid, e->id.bytes, sizeof(c->uuid));
        c->result = e->size;
        return SGHW_ST_OK;
    }
    /* storage of its own first (a move: BO_MOVED, local importers invalidated) */
    ret = sgb_bo_own_storage(s->dev, c->handle, SGB_OWN_KEEP);
    if (ret) {
        return sharegpu_status_from_errno(ret);
    }
    ret = sharegpu_own_storage_fd(s, c->handle, &fd, &size);
    if (!ret) {
        /*
         * Without waiting for the broker (the main loop does not block on it): the id,
         * reserved ahead, is valid at once; a refusal (the broker's limits) arrives later
         * and loses the export like a lost broker connection (BO_REVOKED, EXPORT).
         */
        ret = sgbk_export_queued(s->broker->client, fd, size, c->arg ? peer : NULL, c->arg,
                                 &id);
    }
    if (ret) {
        sgb_bo_own_storage(s->dev, c->handle, 0);
        return sharegpu_status_from_broker(s, "export", ret);
    }
    e = g_new0(SharegpuBrokerExport, 1);
    e->handle = c->handle;
    e->id = id;
    e->size = size;
    e->generation = 1;
    e->old_fd = -1;
    e->grants = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    if (c->arg) {
        g_hash_table_replace(e->grants, g_strdup(peer), GUINT_TO_POINTER(c->arg));
    }
    g_hash_table_insert(s->broker_exports, GUINT_TO_POINTER(c->handle), e);
    memcpy(c->uuid, id.bytes, sizeof(c->uuid));
    c->result = size;
    trace_sharegpu_broker_export(s->name, c->handle, size);
    return SGHW_ST_OK;
}

static uint32_t sharegpu_cmd_broker_grant(SharegpuState *s, struct sghw_cmd *c)
{
    char peer[SGHW_PEER_NAME_LEN];
    SharegpuBrokerExport *e;
    uint32_t st;
    int ret;

    if (c->arg > SGHW_BROKER_RIGHT_READ_WRITE) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: BROKER_GRANT right %u\n",
                      s->name, c->arg);
        return SGHW_ST_INVALID;
    }
    st = sharegpu_local_handle(s, c->handle, "BROKER_GRANT");
    if (st != SGHW_ST_OK) {
        return st;
    }
    e = g_hash_table_lookup(s->broker_exports, GUINT_TO_POINTER(c->handle));
    if (!e) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: BROKER_GRANT of handle %u, which is "
                      "not broker-exported\n", s->name, c->handle);
        return SGHW_ST_INVALID;
    }
    st = sharegpu_read_peer(s, c->off0, peer);
    if (st != SGHW_ST_OK) {
        return st;
    }
    if (c->arg) {
        ret = sgbk_grant(s->broker->client, &e->id, peer, c->arg);
    } else {
        ret = sgbk_withdraw(s->broker->client, &e->id, peer);
        ret = ret == -ENOENT ? 0 : ret;  /* nothing granted: nothing to withdraw */
    }
    if (ret) {
        return sharegpu_status_from_broker(s, c->arg ? "grant" : "withdraw", ret);
    }
    if (c->arg) {
        g_hash_table_replace(e->grants, g_strdup(peer), GUINT_TO_POINTER(c->arg));
    } else {
        g_hash_table_remove(e->grants, peer);
    }
    return SGHW_ST_OK;
}

/* Forgets the export (the broker revokes its importers); the buffer may move freely again. */
static void sharegpu_broker_unexport(SharegpuState *s, SharegpuBrokerExport *e, bool tell)
{
    int ret;

    if (tell && sharegpu_broker_connected(s->broker)) {
        ret = sgbk_unexport(s->broker->client, &e->id);
        if (ret && ret != -ENOENT) {
            warn_report("sharegpu: %s: broker unexport of handle %u: %s", s->name,
                        e->handle, sgbk_strerror(ret));
        }
    }
    sgb_bo_own_storage(s->dev, e->handle, 0);
    trace_sharegpu_broker_unexport(s->name, e->handle);
    g_hash_table_remove(s->broker_exports, GUINT_TO_POINTER(e->handle));
}

static uint32_t sharegpu_cmd_broker_unexport(SharegpuState *s, struct sghw_cmd *c)
{
    SharegpuBrokerExport *e;
    uint32_t st = sharegpu_local_handle(s, c->handle, "BROKER_UNEXPORT");

    if (st != SGHW_ST_OK) {
        return st;
    }
    e = g_hash_table_lookup(s->broker_exports, GUINT_TO_POINTER(c->handle));
    c->result = e != NULL;
    if (e) {
        sharegpu_broker_unexport(s, e, true);
    }
    return SGHW_ST_OK;
}

/*
 * A move of a local buffer (BO_MOVE, BO_EVICT, x-sharegpu-move-bo). *handled is false for a
 * buffer that is not broker-exported (the caller moves it as usual). A broker-exported one
 * cannot go to DEVICE (-EBUSY) and relocates for SYSTEM: new storage of its own, published to
 * the broker, the old one held until RELEASE_OK.
 */
int sharegpu_remote_move(SharegpuState *s, uint32_t handle, uint32_t placement,
                         bool *handled)
{
    SharegpuBrokerExport *e = g_hash_table_lookup(s->broker_exports,
                                                  GUINT_TO_POINTER(handle));
    uint64_t size, generation = 0;
    int old_fd, fd, ret;

    *handled = e != NULL;
    if (!e) {
        return 0;
    }
    if (placement != SGB_PLACEMENT_SYSTEM) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: move of broker-exported handle %u to "
                      "DEVICE\n", s->name, handle);
        return -EBUSY;
    }
    if (e->old_fd >= 0 || !sharegpu_broker_connected(s->broker)) {
        return -EBUSY;  /* the previous move waits for its importers */
    }
    ret = sharegpu_own_storage_fd(s, handle, &fd, &size);
    if (ret) {
        return ret;
    }
    /* the pages live while a descriptor does: the broker's and ours keep them for importers */
    old_fd = qemu_dup(fd);
    if (old_fd < 0) {
        return -errno;
    }
    ret = sgb_bo_own_storage(s->dev, handle, SGB_OWN_KEEP | SGB_OWN_RELOCATE);
    if (!ret) {
        ret = sharegpu_own_storage_fd(s, handle, &fd, &size);
    }
    if (!ret) {
        ret = sgbk_move_begin(s->broker->client, &e->id, fd, size, &generation);
    }
    if (ret) {
        close(old_fd);
        error_report("sharegpu: %s: relocation of broker-exported handle %u: %s", s->name,
                     handle, sgbk_strerror(ret));
        return ret == -EBUSY ? ret : -EIO;
    }
    e->old_fd = old_fd;
    e->generation = generation;
    trace_sharegpu_broker_move(s->name, handle, generation);
    return 0;
}

void sharegpu_broker_export_release_ok(SharegpuState *s, const sgbk_id *id,
                                       uint64_t generation)
{
    SharegpuBrokerExport *e = sharegpu_export_by_id(s, id);

    if (e && e->old_fd >= 0) {
        close(e->old_fd);
        e->old_fd = -1;
    }
}

/* The broker refused a queued export: the guest learns that it is not exported. */
void sharegpu_broker_export_refused(SharegpuState *s, const sgbk_id *id, int err)
{
    SharegpuBrokerExport *e = sharegpu_export_by_id(s, id);

    if (!e) {
        return;
    }
    warn_report("sharegpu: %s: the broker refused the export of handle %u: %s", s->name,
                e->handle, sgbk_strerror(err));
    sharegpu_evt_push(s, SGHW_EVT_BO_REVOKED, e->handle, SGHW_REVOKE_EXPORT_REFUSED,
                      SGHW_EVT_F_EXPORT, SGHW_INVALID_OFFSET, e->generation);
    sharegpu_broker_unexport(s, e, false);
}

/* The broker connection is gone: every export with it (the guest learns, and re-exports). */
void sharegpu_broker_exports_lost(SharegpuState *s)
{
    GHashTableIter it;
    gpointer value;
    GList *handles = NULL, *l;

    g_hash_table_iter_init(&it, s->broker_exports);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        SharegpuBrokerExport *e = value;

        handles = g_list_prepend(handles, GUINT_TO_POINTER(e->handle));
        sharegpu_evt_push(s, SGHW_EVT_BO_REVOKED, e->handle, SGHW_REVOKE_BROKER_GONE,
                          SGHW_EVT_F_EXPORT, SGHW_INVALID_OFFSET, e->generation);
    }
    for (l = handles; l; l = l->next) {
        sharegpu_broker_unexport(s, g_hash_table_lookup(s->broker_exports, l->data), false);
    }
    g_list_free(handles);
}

bool sharegpu_remote_exported(SharegpuState *s, uint32_t handle)
{
    return g_hash_table_contains(s->broker_exports, GUINT_TO_POINTER(handle));
}

/* BO_DESTROY of a local handle: its export goes with it. */
void sharegpu_remote_destroyed(SharegpuState *s, uint32_t handle)
{
    SharegpuBrokerExport *e = g_hash_table_lookup(s->broker_exports,
                                                  GUINT_TO_POINTER(handle));

    if (e) {
        sharegpu_broker_unexport(s, e, true);
    }
}

/* ------------------------------------------------------------------ remote imports */

static void sharegpu_remote_drop_fd(SharegpuRemote *r)
{
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
}

/*
 * The job buffer goes. A non-coherent device's cache may still hold the last jobs' writes
 * that no CACHE_FLUSH reached yet: written back first, as a move writes back before it
 * switches storage. Jobs in flight keep the backend's mapping until they end.
 */
static void sharegpu_remote_job_buffer_free(SharegpuState *s, uint32_t job_handle,
                                            uint64_t size)
{
    int ret = sgb_bo_cache_flush(s->dev, job_handle, 0, size);

    if (!ret) {
        ret = sgb_bo_destroy(s->dev, job_handle);
    }
    if (s->job_buffers) {
        g_hash_table_remove(s->job_buffers, GUINT_TO_POINTER(job_handle));
    }
    if (ret) {
        error_report("sharegpu: %s: remote import job buffer %u: %s", s->name, job_handle,
                     sgb_strerror(ret));
    }
}

/* Main loop: the retired job buffer's jobs are done; its ack may go. */
static void sharegpu_remote_retired_idle(SharegpuState *s, void *opaque)
{
    SharegpuRemoteRetired *ret = opaque;

    if (s) {
        SharegpuBo *bo = sharegpu_bo_lookup(s, ret->handle);

        sharegpu_remote_job_buffer_free(s, ret->job_handle, ret->size);
        if (bo && bo->remote && bo->remote->acks_pending) {
            bo->remote->acks_pending--;
        }
        trace_sharegpu_remote_jobs_idle(s->name, ret->handle, ret->job_handle);
    }
    sharegpu_broker_ack_put(ret->ack);
    g_free(ret);
}

/*
 * The remote import's pages are about to be released by the exporter (invalidation, with
 * its ack) or are dead (revocation, release: ack NULL). The job buffer over them goes; with
 * an ack, once its jobs have signalled.
 */
static void sharegpu_remote_retire_jobs(SharegpuState *s, SharegpuBo *bo,
                                        SharegpuBrokerAck *ack)
{
    SharegpuRemote *r = bo->remote;
    SharegpuRemoteRetired *ret;

    if (!r->job_handle) {
        return;
    }
    ret = g_new0(SharegpuRemoteRetired, 1);
    ret->handle = bo->handle;
    ret->job_handle = r->job_handle;
    ret->size = r->size;
    ret->ack = ack;
    r->job_handle = 0;
    if (ack && sharegpu_job_when_idle(s, ret->job_handle, sharegpu_remote_retired_idle,
                                      ret)) {
        sharegpu_broker_ack_hold(ack);
        r->acks_pending++;
        trace_sharegpu_remote_ack_deferred(s->name, bo->handle, ret->job_handle);
        return;
    }
    sharegpu_remote_job_buffer_free(s, ret->job_handle, ret->size);
    g_free(ret);
}

/* Called when the SharegpuBo goes (BO_DESTROY, reset, unrealize): the broker forgets it. */
static void sharegpu_remote_free(SharegpuState *s, SharegpuBo *bo)
{
    SharegpuRemote *r = bo->remote;

    sharegpu_remote_retire_jobs(s, bo, NULL);
    bo->remote = NULL;
    sharegpu_remote_drop_fd(r);
    if (sharegpu_broker_connected(r->broker)) {
        sgbk_release_import(r->broker->client, &r->id);
    }
    g_free(r);
}

void sharegpu_remote_reset(SharegpuState *s)
{
    GHashTableIter it;
    gpointer value;

    if (!s->broker_exports) {
        return;
    }
    g_hash_table_iter_init(&it, s->bos);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        SharegpuBo *bo = value;

        if (bo->remote) {
            sharegpu_window_unmap(s, bo);
            sharegpu_remote_free(s, bo);
            g_hash_table_iter_remove(&it);
        }
    }
    while (g_hash_table_size(s->broker_exports)) {
        g_hash_table_iter_init(&it, s->broker_exports);
        g_hash_table_iter_next(&it, NULL, &value);
        sharegpu_broker_unexport(s, value, true);
    }
    /* retired ones still waiting for their jobs go with the backend's reset too */
    if (s->job_buffers) {
        g_hash_table_remove_all(s->job_buffers);
    }
    s->next_remote = 0;
}

static gboolean sharegpu_remote_has_id(gpointer key, gpointer value, gpointer id)
{
    SharegpuRemote *r = ((SharegpuBo *)value)->remote;

    return r && !memcmp(&r->id, id, sizeof(sgbk_id));
}

static SharegpuBo *sharegpu_remote_by_id(SharegpuState *s, const sgbk_id *id)
{
    return g_hash_table_find(s->bos, sharegpu_remote_has_id, (gpointer)id);
}

/* (Re-)imports the id: the descriptor of its current storage. */
static int sharegpu_remote_fetch(SharegpuRemote *r)
{
    sgbk_import_info info;
    int ret = sgbk_import(r->broker->client, &r->id, 0, &info);

    if (ret) {
        return ret;
    }
    sharegpu_remote_drop_fd(r);
    r->fd = info.fd;
    r->size = info.size;
    r->writable = info.writable;
    r->generation = info.generation;
    return 0;
}

static uint32_t sharegpu_cmd_broker_import(SharegpuState *s, struct sghw_cmd *c)
{
    SharegpuRemote *r;
    SharegpuBo *bo;
    sgbk_id id;
    uint32_t handle;
    int ret;

    memcpy(id.bytes, c->uuid, sizeof(id.bytes));
    bo = sharegpu_remote_by_id(s, &id);
    if (bo && bo->remote->revoked) {
        return SGHW_ST_NO_DEVICE;
    }
    if (!bo) {
        if (s->next_remote >= SGHW_REMOTE_HANDLE_BIT - 1) {
            return SGHW_ST_NO_SPACE;
        }
        r = g_new0(SharegpuRemote, 1);
        r->broker = s->broker;
        r->id = id;
        r->fd = -1;
        ret = sharegpu_remote_fetch(r);
        if (ret) {
            g_free(r);
            if (ret == -EACCES) {
                qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: BROKER_IMPORT refused: this "
                              "VM holds no grant\n", s->name);
            }
            return sharegpu_status_from_broker(s, "import", ret);
        }
        handle = SGHW_REMOTE_HANDLE_BIT | ++s->next_remote;
        bo = sharegpu_bo_get(s, handle);
        bo->remote = r;
        trace_sharegpu_broker_import(s->name, handle, r->size, r->writable);
    }
    c->out_handle = bo->handle;
    c->result = bo->remote->size | (bo->remote->writable ? SGHW_BROKER_IMPORT_WRITABLE : 0);
    return SGHW_ST_OK;
}

static SharegpuBo *sharegpu_remote_lookup(SharegpuState *s, uint32_t handle)
{
    SharegpuBo *bo = sharegpu_bo_lookup(s, handle);

    return bo && bo->remote ? bo : NULL;
}

static uint32_t sharegpu_remote_map(SharegpuState *s, SharegpuBo *bo, struct sghw_cmd *c)
{
    SharegpuRemote *r = bo->remote;
    uint32_t st;
    int ret;

    st = sharegpu_window_check(s, bo, c->off0, r->size);
    if (st != SGHW_ST_OK) {
        return st;
    }
    if (r->fd < 0) {
        /* invalidated since: the exporter's new storage */
        ret = sharegpu_remote_fetch(r);
        if (ret) {
            return sharegpu_status_from_broker(s, "import", ret);
        }
        st = sharegpu_window_check(s, bo, c->off0, r->size);
        if (st != SGHW_ST_OK) {
            return st;
        }
    }
    st = sharegpu_window_map_fd(s, bo, c->off0, r->fd, 0, r->size, r->writable);
    if (st == SGHW_ST_OK) {
        c->result = s->vram_size + c->off0;
    }
    return st;
}

static uint32_t sharegpu_remote_query(SharegpuState *s, SharegpuBo *bo, struct sghw_cmd *c)
{
    SharegpuRemote *r = bo->remote;
    struct sghw_bo_info out = { 0 };
    uint32_t flags = SGHW_BO_F_IMPORTED | SGHW_BO_F_REMOTE;

    flags |= bo->map ? SGHW_BO_F_MAPPED : 0;
    flags |= r->writable ? 0 : SGHW_BO_F_READ_ONLY;
    flags |= r->revoked ? SGHW_BO_F_REVOKED : 0;
    out.size = cpu_to_le64(r->size);
    out.vram_offset = cpu_to_le64(bo->map ? s->vram_size + bo->map_off : SGHW_INVALID_OFFSET);
    out.generation = cpu_to_le64(r->generation);
    out.placement = cpu_to_le32(SGHW_PLACEMENT_SYSTEM);
    out.flags = cpu_to_le32(flags);
    out.live_mappings = cpu_to_le32(bo->map ? 1 : 0);
    memcpy(out.uuid, r->id.bytes, sizeof(out.uuid));
    if (pci_dma_write(PCI_DEVICE(s), c->off0, &out, sizeof(out)) != MEMTX_OK) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: BO_QUERY DMA error at 0x%" PRIx64 "\n",
                      s->name, c->off0);
        return SGHW_ST_DMA_ERROR;
    }
    c->result = r->size;
    return SGHW_ST_OK;
}

static uint32_t sharegpu_remote_cache(SharegpuState *s, SharegpuBo *bo, struct sghw_cmd *c);

/* A command on a remote import handle (the handle has SGHW_REMOTE_HANDLE_BIT). */
static uint32_t sharegpu_remote_handle_cmd(SharegpuState *s, struct sghw_cmd *c)
{
    SharegpuBo *bo = sharegpu_remote_lookup(s, c->handle);
    const char *op = sghw_opcode_name(c->opcode);

    if (!bo) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s of unknown remote handle 0x%x\n",
                      s->name, op ? op : "?", c->handle);
        return SGHW_ST_BAD_HANDLE;
    }
    switch (c->opcode) {
    case SGHW_OP_BO_QUERY:
        return sharegpu_remote_query(s, bo, c);
    case SGHW_OP_BO_DESTROY:
        sharegpu_window_unmap(s, bo);
        sharegpu_remote_free(s, bo);
        g_hash_table_remove(s->bos, GUINT_TO_POINTER(c->handle));
        return SGHW_ST_OK;
    case SGHW_OP_UNMAP_IMPORT:
        c->result = bo->map != NULL;
        sharegpu_window_unmap(s, bo);
        return SGHW_ST_OK;
    case SGHW_OP_MAP_IMPORT:
        if (bo->remote->revoked) {
            return SGHW_ST_NO_DEVICE;
        }
        return sharegpu_remote_map(s, bo, c);
    case SGHW_OP_CACHE_FLUSH:
    case SGHW_OP_CACHE_INVALIDATE:
        return sharegpu_remote_cache(s, bo, c);
    default:
        if (bo->remote->revoked) {
            return SGHW_ST_NO_DEVICE;
        }
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: %s on remote import 0x%x is not "
                      "supported\n", s->name, op ? op : "?", c->handle);
        return SGHW_ST_INVALID;
    }
}

/* Whether the command is the broker's or names a remote import: sharegpu_remote_cmd's. */
bool sharegpu_remote_handle(const struct sghw_cmd *c)
{
    switch (c->opcode) {
    case SGHW_OP_BROKER_EXPORT:
    case SGHW_OP_BROKER_GRANT:
    case SGHW_OP_BROKER_UNEXPORT:
    case SGHW_OP_BROKER_IMPORT:
        return true;
    case SGHW_OP_NOP:
    case SGHW_OP_BO_CREATE:
    case SGHW_OP_FENCE:
    case SGHW_OP_EXPORT:
    case SGHW_OP_IMPORT:
        return false;
    default:
        /* unknown opcodes stay BAD_OPCODE whatever their handle */
        return (c->handle & SGHW_REMOTE_HANDLE_BIT) && sghw_opcode_name(c->opcode);
    }
}

uint32_t sharegpu_remote_cmd(SharegpuState *s, struct sghw_cmd *c)
{
    uint32_t st;

    switch (c->opcode) {
    case SGHW_OP_BROKER_EXPORT:
    case SGHW_OP_BROKER_GRANT:
    case SGHW_OP_BROKER_UNEXPORT:
    case SGHW_OP_BROKER_IMPORT:
        st = sharegpu_need_broker(s, sghw_opcode_name(c->opcode));
        if (st != SGHW_ST_OK) {
            return st;
        }
        break;
    default:
        return sharegpu_remote_handle_cmd(s, c);
    }
    switch (c->opcode) {
    case SGHW_OP_BROKER_EXPORT:
        return sharegpu_cmd_broker_export(s, c);
    case SGHW_OP_BROKER_GRANT:
        return sharegpu_cmd_broker_grant(s, c);
    case SGHW_OP_BROKER_UNEXPORT:
        return sharegpu_cmd_broker_unexport(s, c);
    default:
        return sharegpu_cmd_broker_import(s, c);
    }
}

/*
 * The backend buffer a job on the remote import runs on (1.7): made over the imported
 * descriptor at the first job after an import or invalidation (which re-imports, as
 * MAP_IMPORT does). A READ grant's pages are mapped read-only: a job writing them is
 * refused here, before the engine could fault on them.
 */
static uint32_t sharegpu_remote_job_handle(SharegpuState *s, uint32_t handle, bool write,
                                           uint32_t *out)
{
    SharegpuBo *bo = sharegpu_remote_lookup(s, handle);
    SharegpuRemote *r;
    int ret;

    if (!bo) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: job on unknown remote handle 0x%x\n",
                      s->name, handle);
        return SGHW_ST_BAD_HANDLE;
    }
    r = bo->remote;
    if (r->revoked) {
        return SGHW_ST_NO_DEVICE;
    }
    if (write && !r->writable) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: job writes remote import 0x%x, which "
                      "is granted READ only\n", s->name, handle);
        return SGHW_ST_ACCESS_DENIED;
    }
    if (!r->job_handle) {
        if (r->fd < 0) {
            ret = sharegpu_remote_fetch(r);
            if (ret) {
                return sharegpu_status_from_broker(s, "import", ret);
            }
        }
        ret = sgb_bo_create_foreign(s->dev, r->fd, r->size,
                                    r->writable ? SGB_FOREIGN_WRITABLE : 0, &r->job_handle);
        if (ret) {
            error_report("sharegpu: %s: job buffer for remote import 0x%x: %s", s->name,
                         handle, sgb_strerror(ret));
            return sharegpu_status_from_errno(ret);
        }
        g_hash_table_add(s->job_buffers, GUINT_TO_POINTER(r->job_handle));
        trace_sharegpu_remote_job_buffer(s->name, handle, r->job_handle, r->generation);
    }
    *out = r->job_handle;
    return SGHW_ST_OK;
}

uint32_t sharegpu_remote_job_handles(SharegpuState *s, const struct sghw_cmd *c,
                                     sgb_job *job)
{
    uint32_t st;

    /* COPY and FILL write `handle`; CHECKSUM reads it; COPY reads handle2 */
    if (c->handle & SGHW_REMOTE_HANDLE_BIT) {
        st = sharegpu_remote_job_handle(s, c->handle, c->opcode != SGHW_OP_CHECKSUM,
                                        &job->handle);
        if (st != SGHW_ST_OK) {
            return st;
        }
    }
    if (c->opcode == SGHW_OP_COPY && (c->handle2 & SGHW_REMOTE_HANDLE_BIT)) {
        return sharegpu_remote_job_handle(s, c->handle2, false, &job->handle2);
    }
    return SGHW_ST_OK;
}

/* CACHE_FLUSH / CACHE_INVALIDATE: the job buffer's device cache (none yet: nothing cached). */
static uint32_t sharegpu_remote_cache(SharegpuState *s, SharegpuBo *bo, struct sghw_cmd *c)
{
    SharegpuRemote *r = bo->remote;
    int ret;

    if (r->revoked) {
        return SGHW_ST_NO_DEVICE;
    }
    if (!sharegpu_range_ok(c->off0, c->len, r->size)) {
        return SGHW_ST_OUT_OF_RANGE;
    }
    if (!r->job_handle) {
        return SGHW_ST_OK;
    }
    ret = c->opcode == SGHW_OP_CACHE_FLUSH ?
          sgb_bo_cache_flush(s->dev, r->job_handle, c->off0, c->len) :
          sgb_bo_cache_invalidate(s->dev, r->job_handle, c->off0, c->len);
    return sharegpu_status_from_errno(ret);
}

/* TRANSFER_* on a remote import: it has no backing (the window maps it). */
uint32_t sharegpu_remote_check_transfer(SharegpuState *s, const struct sghw_cmd *c)
{
    SharegpuBo *bo = sharegpu_remote_lookup(s, c->handle);

    if (!bo) {
        return SGHW_ST_BAD_HANDLE;
    }
    if (bo->remote->revoked) {
        return SGHW_ST_NO_DEVICE;
    }
    qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: transfer on remote import 0x%x is not "
                  "supported\n", s->name, c->handle);
    return SGHW_ST_INVALID;
}

/* ------------------------------------------------------------------ broker events */

/* The exporter moved: unmap, drop the old descriptor, tell the guest. */
bool sharegpu_remote_invalidate(SharegpuState *s, const sgbk_id *id, uint64_t generation,
                                SharegpuBrokerAck *ack)
{
    SharegpuBo *bo = sharegpu_remote_by_id(s, id);

    if (!bo || bo->remote->revoked) {
        return false;
    }
    memory_region_transaction_begin();
    sharegpu_window_unmap(s, bo);
    memory_region_transaction_commit();
    sharegpu_remote_retire_jobs(s, bo, ack);
    sharegpu_remote_drop_fd(bo->remote);
    bo->remote->generation = generation;
    sharegpu_evt_push(s, SGHW_EVT_BO_INVALIDATED, bo->handle, SGHW_PLACEMENT_SYSTEM, 0,
                      SGHW_INVALID_OFFSET, generation);
    sharegpu_qev_bo_invalidated(s, bo->handle, generation);
    return true;
}

void sharegpu_remote_revoke(SharegpuState *s, const sgbk_id *id, uint32_t reason)
{
    SharegpuBo *bo = sharegpu_remote_by_id(s, id);
    char text[33];
    int qreason;

    if (!bo || bo->remote->revoked) {
        return;
    }
    sharegpu_window_unmap(s, bo);
    sharegpu_remote_retire_jobs(s, bo, NULL);
    sharegpu_remote_drop_fd(bo->remote);
    bo->remote->revoked = reason ? reason : SGHW_REVOKE_UNEXPORTED;
    sharegpu_evt_push(s, SGHW_EVT_BO_REVOKED, bo->handle, bo->remote->revoked, 0,
                      SGHW_INVALID_OFFSET, bo->remote->generation);
    sgbk_id_format(id, text);
    qreason = qapi_enum_parse(&SharegpuRevokeReason_lookup,
                              sharegpu_revoke_reason_name(reason),
                              SHAREGPU_REVOKE_REASON_UNKNOWN, NULL);
    qapi_event_send_sharegpu_broker_revoked(s->name, bo->handle, text, qreason);
}

/* ------------------------------------------------------------------ monitor */

void sharegpu_broker_list(SharegpuState *s, SharegpuBrokerExportInfoList ***etail,
                          SharegpuBrokerImportInfoList ***itail)
{
    GHashTableIter it, git;
    gpointer key, value;
    char text[33];

    g_hash_table_iter_init(&it, s->broker_exports);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        SharegpuBrokerExport *e = value;
        SharegpuBrokerExportInfo *info = g_new0(SharegpuBrokerExportInfo, 1);
        SharegpuBrokerGrantInfoList **gtail = &info->grants;

        sgbk_id_format(&e->id, text);
        info->device = g_strdup(s->name);
        info->handle = e->handle;
        info->broker_id = g_strdup(text);
        info->size = e->size;
        info->generation = e->generation;
        info->moving = e->old_fd >= 0;
        g_hash_table_iter_init(&git, e->grants);
        while (g_hash_table_iter_next(&git, &key, &value)) {
            SharegpuBrokerGrantInfo *g = g_new0(SharegpuBrokerGrantInfo, 1);

            g->peer = g_strdup(key);
            g->writable = GPOINTER_TO_UINT(value) == SGHW_BROKER_RIGHT_READ_WRITE;
            QAPI_LIST_APPEND(gtail, g);
        }
        QAPI_LIST_APPEND(*etail, info);
    }
    g_hash_table_iter_init(&it, s->bos);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        SharegpuBo *bo = value;
        SharegpuBrokerImportInfo *info;

        if (!bo->remote) {
            continue;
        }
        info = g_new0(SharegpuBrokerImportInfo, 1);
        sgbk_id_format(&bo->remote->id, text);
        info->device = g_strdup(s->name);
        info->handle = bo->handle;
        info->broker_id = g_strdup(text);
        info->size = bo->remote->size;
        info->writable = bo->remote->writable;
        info->generation = bo->remote->generation;
        info->mapped = bo->map != NULL;
        if (bo->map) {
            info->has_window_offset = true;
            info->window_offset = bo->map_off;
        }
        info->job_buffer = bo->remote->job_handle != 0;
        info->acks_pending = bo->remote->acks_pending;
        if (bo->remote->revoked) {
            info->has_revoked = true;
            info->revoked = qapi_enum_parse(&SharegpuRevokeReason_lookup,
                                            sharegpu_revoke_reason_name(bo->remote->revoked),
                                            SHAREGPU_REVOKE_REASON_UNKNOWN, NULL);
        }
        QAPI_LIST_APPEND(*itail, info);
    }
}
