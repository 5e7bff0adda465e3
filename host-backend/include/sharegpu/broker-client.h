/*
 * sharegpu broker client: the C API QEMU (a `sharegpu-broker` QOM object) uses to share
 * buffers with other VMs through the sharegpu-broker daemon. docs/broker.md describes the
 * protocol, the semantics and how QEMU wires this in.
 *
 * Conventions (as sharegpu/backend.h)
 *  - Every function returns 0 or a negative errno (sgbk_strerror() names it).
 *  - A client is one connection for one VM (peer name). Calls may come from any thread; they
 *    are serialized internally. Requests block until the broker answers, at most the client's
 *    timeout (default 5000 ms): -ETIMEDOUT.
 *  - Events (invalidations, revocations, move completions, denied imports, the loss of the
 *    broker) are delivered only by sgbk_client_dispatch(), through the callbacks, never
 *    inside another call. Call it when sgbk_client_fd() is readable (QEMU:
 *    qemu_set_fd_handler). A callback may call any sgbk_ function except dispatch,
 *    set_callbacks and free.
 *  - Descriptors passed in are borrowed (the broker receives its own copy); descriptors
 *    returned through an out parameter are owned by the caller (close them).
 *  - Logging goes through the backend's log sink (sgb_set_log_handler or
 *    sgbk_set_log_handler: one sink per process).
 */
#ifndef SHAREGPU_BROKER_CLIENT_H
#define SHAREGPU_BROKER_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sgbk_client sgbk_client;

/* An export's 128-bit id: unguessable, never reused. */
typedef struct sgbk_id {
    uint8_t bytes[16];
} sgbk_id;

enum sgbk_right {
    SGBK_RIGHT_READ = 1,       /* the importer gets a read-only descriptor */
    SGBK_RIGHT_READ_WRITE = 2,
};

enum sgbk_revoke_reason {
    SGBK_REVOKE_UNEXPORTED = 1,      /* the exporter unexported */
    SGBK_REVOKE_EXPORTER_GONE = 2,   /* the exporter's VM (connection) died */
    SGBK_REVOKE_GRANT_WITHDRAWN = 3, /* the exporter withdrew or changed our grant */
    SGBK_REVOKE_ACK_TIMEOUT = 4,     /* we did not acknowledge an invalidation in time */
    SGBK_REVOKE_BROKER_GONE = 5,     /* the broker connection was lost */
};

/* sgbk_import flags */
#define SGBK_IMPORT_WANT_DMABUF (1u << 0) /* a /dev/udmabuf dma-buf where the host has one */

typedef struct sgbk_import_info {
    int fd;              /* caller-owned: a memfd, or a udmabuf when dmabuf is 1 */
    uint32_t writable;   /* 0: read-only descriptor (a shared writable mmap fails) */
    uint32_t dmabuf;
    uint32_t reserved0;
    uint64_t size;
    uint64_t generation; /* bumps with every move of the export */
} sgbk_import_info;

typedef struct sgbk_callbacks {
    void *opaque;
    /* Stop using the import's pages, then sgbk_ack_invalidate(id, generation); the next
     * sgbk_import gets the new storage. NULL: dispatch acknowledges at once. */
    void (*invalidate)(void *opaque, const sgbk_id *id, uint64_t generation);
    /* The import is dead; sgbk_import of it fails with -ENODEV from now on. */
    void (*revoked)(void *opaque, const sgbk_id *id, uint32_t reason);
    /* Our move completed: the storage moved from may be released. */
    void (*release_ok)(void *opaque, const sgbk_id *id, uint64_t generation, uint32_t revoked);
    /* A peer was refused an import of our export (no grant). */
    void (*denied)(void *opaque, const sgbk_id *id, const char *peer);
    /* (SGBK_CONNECT_ACCEPT_OFFERS) an export was granted to us and imported for us; the next
     * sgbk_import of it returns its descriptor without asking the broker. An offer never
     * taken by sgbk_import is released by the client when it is revoked (the revoked callback
     * still runs); sgbk_import of it then asks the broker instead of answering -ENODEV. */
    void (*offered)(void *opaque, const sgbk_id *id, const char *exporter, uint64_t size,
                    uint32_t writable);
    /* The broker is gone: imports were revoked (revoked callbacks first), exports forgotten. */
    void (*disconnected)(void *opaque);
    /* The broker refused an sgbk_export_queued export (err: -errno, as sgbk_export would
     * have returned): it never existed. */
    void (*export_failed)(void *opaque, const sgbk_id *id, int err);
} sgbk_callbacks;

/* --- connection ---------------------------------------------------------------------------- */
/* sgbk_client_connect flags */
#define SGBK_CONNECT_ACCEPT_OFFERS (1u << 0) /* imports made for us at each grant (offers) */

/* vm_name: 1..31 of [A-Za-z0-9._-], unique among the broker's peers (-EADDRINUSE).
 * -ENOENT/-ECONNREFUSED: no broker; -EACCES: our uid is not accepted. */
int sgbk_client_connect(const char *socket_path, const char *vm_name, uint32_t flags,
                        sgbk_client **out);
void sgbk_client_free(sgbk_client *client);
void sgbk_client_set_callbacks(sgbk_client *client, const sgbk_callbacks *callbacks);
void sgbk_client_set_timeout(sgbk_client *client, int timeout_ms);
/* Readable when sgbk_client_dispatch has work; the same fd for the client's lifetime. */
int sgbk_client_fd(sgbk_client *client);
/* Runs the callbacks of what arrived; never blocks. 0, or -ENOTCONN once the broker is gone. */
int sgbk_client_dispatch(sgbk_client *client);
int sgbk_client_connected(sgbk_client *client);
/* After the broker came back: connect again under the same name (-EISCONN if connected). */
int sgbk_client_reconnect(sgbk_client *client);

/* --- exporting ----------------------------------------------------------------------------- */
/* memfd: read-write, sealed F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL (not write-sealed), exactly
 * `size` bytes, a page multiple. Each export must have storage of its own (never a range of a
 * shared arena: the importer gets the whole file). peer (optional, NULL for none) is granted
 * `right` in the same round trip, as sgbk_grant would. */
int sgbk_export(sgbk_client *client, int memfd, uint64_t size, const char *peer,
                uint32_t right, sgbk_id *out);
/* The same without waiting for the broker's answer: the id (reserved from the broker ahead;
 * a round trip only when the client's stock is used up) is valid at once and may be handed
 * on at once. A refusal arrives later through the export_failed callback. Requests about
 * the id made meanwhile are ordered after the export. */
int sgbk_export_queued(sgbk_client *client, int memfd, uint64_t size, const char *peer,
                       uint32_t right, sgbk_id *out);
int sgbk_grant(sgbk_client *client, const sgbk_id *id, const char *peer, uint32_t right);
int sgbk_withdraw(sgbk_client *client, const sgbk_id *id, const char *peer);
int sgbk_unexport(sgbk_client *client, const sgbk_id *id);
/* Publishes new storage (sealed as for export, same size). Importers are invalidated;
 * the release_ok callback says when the old storage may be released. *generation
 * (optional) is the new generation. -EBUSY while a previous move is not complete. */
int sgbk_move_begin(sgbk_client *client, const sgbk_id *id, int new_memfd, uint64_t size,
                    uint64_t *generation);

/* --- importing ----------------------------------------------------------------------------- */
/* -EACCES not granted (logged here, by the broker and at the exporter), -ENOENT unknown id,
 * -ENODEV revoked, -EBUSY invalidation not yet acknowledged. */
int sgbk_import(sgbk_client *client, const sgbk_id *id, uint32_t flags, sgbk_import_info *out);
int sgbk_ack_invalidate(sgbk_client *client, const sgbk_id *id, uint64_t generation);
int sgbk_release_import(sgbk_client *client, const sgbk_id *id);

/* --- misc ---------------------------------------------------------------------------------- */
/* The broker's state as text (what `sharegpu-broker --status` prints), NUL-terminated and
 * truncated to cap; *len (optional) gets the full length. */
int sgbk_status(const char *socket_path, char *buf, size_t cap, size_t *len);
/* 32 lowercase hex digits + NUL. */
void sgbk_id_format(const sgbk_id *id, char out[33]);
int sgbk_id_parse(const char *text, sgbk_id *out);
const char *sgbk_strerror(int err);
/* levels as enum sgb_log_level (0 debug .. 4 guest error) */
typedef void (*sgbk_log_fn)(void *opaque, int level, const char *msg);
void sgbk_set_log_handler(sgbk_log_fn fn, void *opaque);

#ifdef __cplusplus
}
#endif

#endif /* SHAREGPU_BROKER_CLIENT_H */
