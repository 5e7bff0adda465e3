/*
 * sharegpu: asynchronous jobs and buffer waits (docs/hardware.md 3, "Asynchronous execution")
 *
 * COPY, FILL and CHECKSUM are queued on the backend's engine (sgb_job_submit) and run off
 * the BQL; their ring slots stay pending until the engine's done callback marks them done
 * and schedules the ring bottom half, which writes completions in ring order
 * (sharegpu-ring.c). Commands that read, write or move a buffer's storage on the main loop
 * (TRANSFER_*, CPU_ACCESS_BEGIN, BO_MOVE, BO_EVICT) first wait, without blocking, until
 * every job of any device that conflicts with them has signalled (sgb_bo_await_idle).
 *
 * Backend callbacks run on engine threads and may arrive after a reset (their slot belongs
 * to an older epoch: ignored) or after the device is gone (another device's fence can
 * signal later): they reach the device only through a reference-counted link whose pointer
 * unrealize clears.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "trace.h"
#include "sharegpu.h"

struct SharegpuLink {
    QemuMutex lock;
    SharegpuState *s;   /* NULL once the device is unrealized */
    int refs;           /* atomic */
};

typedef struct SharegpuJobToken {
    SharegpuLink *link;
    uint32_t epoch;
    uint32_t slot;      /* index into s->inflight */
} SharegpuJobToken;

static SharegpuLink *sharegpu_link_ref(SharegpuLink *link)
{
    qatomic_inc(&link->refs);
    return link;
}

static void sharegpu_link_unref(SharegpuLink *link)
{
    if (qatomic_fetch_dec(&link->refs) == 1) {
        qemu_mutex_destroy(&link->lock);
        g_free(link);
    }
}

void sharegpu_job_init(SharegpuState *s)
{
    s->link = g_new0(SharegpuLink, 1);
    qemu_mutex_init(&s->link->lock);
    s->link->s = s;
    s->link->refs = 1;
    s->inflight = g_new0(SharegpuInflight, s->queue_depth);
}

void sharegpu_job_fini(SharegpuState *s)
{
    if (s->link) {
        qemu_mutex_lock(&s->link->lock);
        s->link->s = NULL;
        qemu_mutex_unlock(&s->link->lock);
        sharegpu_link_unref(s->link);
        s->link = NULL;
    }
    g_free(s->inflight);
    s->inflight = NULL;
    s->inflight_count = 0;
}

/*
 * An engine's event fd (the virgl engine's: virglrenderer's poll fd) is watched from the
 * main loop, as virtio-gpu-virgl watches it; the handler has the backend collect the
 * completions, which come back through sharegpu_job_done like every other. The fd is one
 * per process, shared by every device whose engine uses it, so there is one handler per fd,
 * which serves it through the first device on its list.
 */
typedef struct SharegpuEngineWatch {
    int fd;
    GSList *devices;    /* SharegpuState watching fd, never empty */
} SharegpuEngineWatch;

static GSList *sharegpu_engine_watches;

static SharegpuEngineWatch *sharegpu_engine_watch_find(int fd)
{
    GSList *l;

    for (l = sharegpu_engine_watches; l; l = l->next) {
        SharegpuEngineWatch *w = l->data;

        if (w->fd == fd) {
            return w;
        }
    }
    return NULL;
}

static void sharegpu_engine_fd_read(void *opaque)
{
    SharegpuEngineWatch *w = opaque;
    SharegpuState *s = w->devices->data;

    trace_sharegpu_engine_fd_ready(s->name, w->fd);
    sgb_engine_watch_ready(s->dev);
}

void sharegpu_engine_watch_init(SharegpuState *s)
{
    SharegpuEngineWatch *w;
    int fd = sgb_engine_watch_begin(s->dev);

    if (fd == -ENOENT) {
        return;     /* the engine has no event fd (cpu) */
    }
    if (fd < 0) {
        /* the backend keeps watching it itself: slower, still correct */
        warn_report("sharegpu %s: cannot watch the engine's event fd from the main loop: %s",
                    s->name, sgb_strerror(fd));
        return;
    }
    w = sharegpu_engine_watch_find(fd);
    if (!w) {
        w = g_new0(SharegpuEngineWatch, 1);
        w->fd = fd;
        sharegpu_engine_watches = g_slist_prepend(sharegpu_engine_watches, w);
        qemu_set_fd_handler(fd, sharegpu_engine_fd_read, NULL, w);
    }
    w->devices = g_slist_append(w->devices, s);
    s->engine_fd = fd;
    s->engine_watched = true;
    trace_sharegpu_engine_watch(s->name, fd, g_slist_length(w->devices));
}

void sharegpu_engine_watch_fini(SharegpuState *s)
{
    SharegpuEngineWatch *w;

    if (!s->engine_watched) {
        return;
    }
    w = sharegpu_engine_watch_find(s->engine_fd);
    assert(w);
    w->devices = g_slist_remove(w->devices, s);
    trace_sharegpu_engine_watch(s->name, w->fd, g_slist_length(w->devices));
    if (!w->devices) {
        qemu_set_fd_handler(w->fd, NULL, NULL, NULL);
        sharegpu_engine_watches = g_slist_remove(sharegpu_engine_watches, w);
        g_free(w);
    }
    /* the handler no longer reaches this device: the fd may go with the renderer now */
    sgb_engine_watch_end(s->dev);
    s->engine_watched = false;
}

bool sharegpu_job_is_async(const struct sghw_cmd *c)
{
    return c->opcode == SGHW_OP_COPY || c->opcode == SGHW_OP_FILL ||
           c->opcode == SGHW_OP_CHECKSUM;
}

/* Engine thread: record the outcome, let the main loop write the completion. */
static void sharegpu_job_done(void *opaque, uint64_t fence, int ret, uint64_t result)
{
    SharegpuJobToken *tok = opaque;
    SharegpuLink *link = tok->link;
    SharegpuState *s;

    qemu_mutex_lock(&link->lock);
    s = link->s;
    if (s && tok->epoch == s->epoch) {
        SharegpuInflight *e = &s->inflight[tok->slot];

        e->done = true;
        e->status = sharegpu_status_from_errno(ret);
        e->result = result;
        trace_sharegpu_job_done(s->name, e->index, fence, e->status);
        qemu_bh_schedule(s->cmd_bh);
    }
    qemu_mutex_unlock(&link->lock);
    sharegpu_link_unref(link);
    g_free(tok);
}

uint32_t sharegpu_job_submit(SharegpuState *s, const struct sghw_cmd *c, uint32_t slot)
{
    SharegpuJobToken *tok;
    sgb_job job = {
        .handle = c->handle,
        .off = c->off0,
        .len = c->len,
    };
    uint64_t fence = 0;
    uint32_t st;
    int ret;

    if (c->flags & ~SGHW_CMD_F_IRQ) {
        qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: undefined flags 0x%x on a job\n",
                      s->name, c->flags);
        return SGHW_ST_INVALID;
    }
    if (c->len == 0) {
        return SGHW_ST_INVALID;
    }
    if (sharegpu_remote_hidden(s, c)) {
        return SGHW_ST_BAD_HANDLE;
    }
    switch (c->opcode) {
    case SGHW_OP_COPY:
        if (c->handle == c->handle2 &&
            c->off0 < c->off1 + c->len && c->off1 < c->off0 + c->len) {
            qemu_log_mask(LOG_GUEST_ERROR, "sharegpu: %s: COPY ranges overlap\n", s->name);
            return SGHW_ST_INVALID;
        }
        job.op = SGB_JOB_COPY;
        job.handle2 = c->handle2;
        job.off2 = c->off1;
        break;
    case SGHW_OP_FILL:
        if (c->len & 3) {
            return SGHW_ST_INVALID;
        }
        job.op = SGB_JOB_FILL;
        job.pattern = c->arg;
        break;
    default:
        job.op = SGB_JOB_CHECKSUM;
        break;
    }
    /* a remote import runs on the backend buffer over the exporter's pages (1.7) */
    st = sharegpu_remote_job_handles(s, c, &job);
    if (st != SGHW_ST_OK) {
        return st;
    }
    tok = g_new0(SharegpuJobToken, 1);
    tok->link = sharegpu_link_ref(s->link);
    tok->epoch = s->epoch;
    tok->slot = slot;
    ret = sgb_job_submit(s->dev, &job, sharegpu_job_done, tok, &fence);
    if (ret) {
        sharegpu_link_unref(tok->link);
        g_free(tok);
        return sharegpu_status_from_errno(ret);
    }
    trace_sharegpu_job_submit(s->name, s->inflight[slot].index, c->opcode, fence);
    sharegpu_coherency_job(s, c);
    return SGHW_ST_PENDING;
}

/* Engine thread (or another device's): the buffer a command waits for is idle. */
static void sharegpu_idle_cb(void *opaque)
{
    SharegpuJobToken *tok = opaque;
    SharegpuLink *link = tok->link;

    qemu_mutex_lock(&link->lock);
    if (link->s && tok->epoch == link->s->epoch) {
        link->s->idle_fired = true;
        qemu_bh_schedule(link->s->cmd_bh);
    }
    qemu_mutex_unlock(&link->lock);
    sharegpu_link_unref(link);
    g_free(tok);
}

typedef struct SharegpuIdleToken {
    SharegpuLink *link;
    uint32_t epoch;
    SharegpuIdleFn *fn;
    void *opaque;
} SharegpuIdleToken;

/* Main loop: the buffer went idle; s is NULL when the device was reset or is gone. */
static void sharegpu_when_idle_bh(void *opaque)
{
    SharegpuIdleToken *tok = opaque;
    SharegpuState *s;

    qemu_mutex_lock(&tok->link->lock);
    s = tok->link->s && tok->link->s->epoch == tok->epoch ? tok->link->s : NULL;
    qemu_mutex_unlock(&tok->link->lock);
    /* the BQL keeps s alive: unrealize runs on the main loop too */
    tok->fn(s, tok->opaque);
    sharegpu_link_unref(tok->link);
    g_free(tok);
}

/* Whichever thread signalled the last fence: hop to the main loop. */
static void sharegpu_when_idle_cb(void *opaque)
{
    aio_bh_schedule_oneshot(qemu_get_aio_context(), sharegpu_when_idle_bh, opaque);
}

bool sharegpu_job_when_idle(SharegpuState *s, uint32_t handle, SharegpuIdleFn *fn,
                            void *opaque)
{
    SharegpuIdleToken *tok = g_new0(SharegpuIdleToken, 1);
    int ret;

    tok->link = sharegpu_link_ref(s->link);
    tok->epoch = s->epoch;
    tok->fn = fn;
    tok->opaque = opaque;
    ret = sgb_bo_await_idle(s->dev, handle, SGB_AWAIT_PLACEMENT, sharegpu_when_idle_cb, tok);
    if (ret == 1) {
        return true;
    }
    if (ret < 0) {
        error_report("sharegpu: %s: waiting for buffer %u: %s", s->name, handle,
                     sgb_strerror(ret));
    }
    sharegpu_link_unref(tok->link);
    g_free(tok);
    return false;
}

/* What a main-loop command must wait for before it touches a buffer; -1: nothing. */
static int sharegpu_await_kind(const struct sghw_cmd *c)
{
    switch (c->opcode) {
    case SGHW_OP_TRANSFER_TO_DEVICE:
        return SGB_AWAIT_WRITE;
    case SGHW_OP_TRANSFER_FROM_DEVICE:
        return SGB_AWAIT_READ;
    case SGHW_OP_BO_MOVE:
    case SGHW_OP_BO_EVICT:
        return SGB_AWAIT_PLACEMENT;
    case SGHW_OP_CPU_ACCESS_BEGIN:
        /* CPU writes (to-device or bidirectional) wait for readers too */
        return c->arg == SGHW_DIR_FROM_DEVICE ? SGB_AWAIT_READ : SGB_AWAIT_WRITE;
    default:
        return -1;
    }
}

bool sharegpu_job_await_idle(SharegpuState *s, const struct sghw_cmd *c)
{
    int what = sharegpu_await_kind(c);
    SharegpuJobToken *tok;
    int ret;

    if (what < 0) {
        return false;
    }
    if (s->idle_wait) {
        bool fired;

        qemu_mutex_lock(&s->link->lock);
        fired = s->idle_fired;
        qemu_mutex_unlock(&s->link->lock);
        if (!fired) {
            return true;
        }
        s->idle_wait = false;
    }
    tok = g_new0(SharegpuJobToken, 1);
    tok->link = sharegpu_link_ref(s->link);
    tok->epoch = s->epoch;
    qemu_mutex_lock(&s->link->lock);
    s->idle_fired = false;
    qemu_mutex_unlock(&s->link->lock);
    ret = sgb_bo_await_idle(s->dev, c->handle, what, sharegpu_idle_cb, tok);
    if (ret != 1) {
        /* idle now, or a bad handle: the command itself reports that */
        sharegpu_link_unref(tok->link);
        g_free(tok);
        return false;
    }
    trace_sharegpu_cmd_wait(s->name, c->handle, what);
    s->idle_wait = true;
    s->counters.buffer_waits++;
    return true;
}

/*
 * Reset: the slots in flight are forgotten (their jobs run to the end on buffers the reset
 * destroys, which they keep alive; their completions are never written), a pending buffer
 * wait is dropped, and the engine's fault injection ends so that the jobs behind a held
 * one can complete.
 */
void sharegpu_job_reset(SharegpuState *s)
{
    qemu_mutex_lock(&s->link->lock);
    s->epoch++;
    s->idle_fired = false;
    qemu_mutex_unlock(&s->link->lock);
    s->inflight_head = 0;
    s->inflight_count = 0;
    s->idle_wait = false;
    s->staged_valid = false;
    s->abort_left = 0;
    if (s->dev) {
        sgb_engine_release(s->dev);
    }
}

/*
 * JOB_ABORT (docs/hardware.md 3, "Aborting jobs"). On the engine, the jobs not started are
 * cancelled (their done callbacks bring -ECANCELED: CANCELLED), the running or held one
 * finishes, the stall and holds end. The job entries the ring has not submitted yet, up to
 * CMD_TAIL, are cancelled by the ring as it reaches them (abort_left). Nothing waits here:
 * the MMIO write must not block on a running job; the completions arrive as usual.
 */
void sharegpu_job_abort(SharegpuState *s)
{
    SharegpuRing *r = &s->cmd;
    uint32_t cancelled = 0;
    uint32_t unread = 0;
    int ret;

    if (r->size) {
        /* the first entry not started: after the jobs in flight and a transfer in chunks */
        uint32_t fetch = (r->head + s->inflight_count + (s->job.active ? 1 : 0)) &
                         (r->size - 1);

        unread = (r->tail - fetch) & (r->size - 1);
    }
    s->abort_left = unread;
    s->counters.job_aborts++;
    if (s->dev) {
        ret = sgb_engine_abort(s->dev, SGB_ABORT_NOWAIT, &cancelled);
        if (ret) {
            error_report("sharegpu: %s: engine abort failed: %s", s->name, sgb_strerror(ret));
        }
    }
    trace_sharegpu_job_abort(s->name, cancelled, unread);
    sharegpu_qev_reset(s, true, cancelled);
    if (unread) {
        qemu_bh_schedule(s->cmd_bh);
    }
}

bool sharegpu_job_slot_done(SharegpuState *s, SharegpuInflight *out)
{
    SharegpuInflight *e;
    bool done;

    if (!s->inflight_count) {
        return false;
    }
    e = &s->inflight[s->inflight_head];
    qemu_mutex_lock(&s->link->lock);
    done = e->done;
    *out = *e;
    qemu_mutex_unlock(&s->link->lock);
    return done;
}
