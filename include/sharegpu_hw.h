/* SPDX-License-Identifier: GPL-2.0-or-later OR MIT */
/*
 * sharegpu hardware contract: PCI identity, BAR0 registers, ring formats, opcodes, status
 * codes. Shared verbatim by the QEMU device model (hw/misc/sharegpu), the Linux guest driver
 * and userspace tests. docs/hardware.md is the normative prose; this header must match it.
 *
 * All multi-byte values are little-endian. Structures are naturally aligned and their sizes
 * are fixed (checked below). Registers are 32 bits wide and must be accessed with aligned
 * 4-byte accesses; 64-bit values are split into _LO/_HI pairs.
 */
#ifndef SHAREGPU_HW_H
#define SHAREGPU_HW_H

/*
 * sghw_le16/32/64: the little-endian fields of the ring and memory structures. In the kernel
 * they are sparse's __le types (fill and read them with cpu_to_le*() / le*_to_cpu());
 * elsewhere plain integers that the QEMU device converts with its own cpu_to_le*().
 */
#if defined(__KERNEL__)
#include <linux/types.h>
typedef __u8 sghw_u8;
typedef __u16 sghw_u16;
typedef __u32 sghw_u32;
typedef __u64 sghw_u64;
typedef __le16 sghw_le16;
typedef __le32 sghw_le32;
typedef __le64 sghw_le64;
#else
#include <stdint.h>
typedef uint8_t sghw_u8;
typedef uint16_t sghw_u16;
typedef uint32_t sghw_u32;
typedef uint64_t sghw_u64;
typedef uint16_t sghw_le16;
typedef uint32_t sghw_le32;
typedef uint64_t sghw_le64;
#endif

/* ---------------------------------------------------------------- PCI identity */
#define SGHW_PCI_VENDOR_ID 0x1234 /* QEMU */
#define SGHW_PCI_DEVICE_ID 0x5a47 /* "ZG" */
#define SGHW_PCI_CLASS 0x0380     /* display controller, other */
#define SGHW_PCI_REVISION 0x01
#define SGHW_PCI_SUBVENDOR_ID 0x1af4
#define SGHW_PCI_SUBDEVICE_ID 0x1100

#define SGHW_BAR_MMIO 0  /* 4 KiB registers */
#define SGHW_BAR_VRAM 2  /* 64-bit prefetchable VRAM aperture (+ import window) */
#define SGHW_BAR_MSIX 4  /* MSI-X table and PBA */
#define SGHW_MMIO_SIZE 0x1000

#define SGHW_MSIX_VECTORS 2
#define SGHW_MSIX_VEC_CMD 0   /* command completion, ring errors */
#define SGHW_MSIX_VEC_EVENT 1 /* event ring */

/* ---------------------------------------------------------------- version / features */
#define SGHW_VERSION_MAJOR 1
#define SGHW_VERSION_MINOR 8 /* 1.1: NO_EVICT, RESYNC, INT_EVT_OVERFLOW
                               1.2: SGHW_EVT_F_OWN_COMMAND
                               1.3: asynchronous jobs, QUEUE_DEPTH
                               1.4: JOB_ABORT
                               1.5: WINDOW_FAULT
                               1.6: BROKER_* (sharing between VMs)
                               1.7: jobs and cache commands on remote imports
                               1.8: BROKER_EXPORT does not wait for the broker;
                                    SGHW_REVOKE_EXPORT_REFUSED */
#define SGHW_VERSION ((SGHW_VERSION_MAJOR << 16) | SGHW_VERSION_MINOR)

#define SGHW_FEAT_COHERENT (1u << 0)     /* device caches are coherent (no flush needed) */
#define SGHW_FEAT_MSIX (1u << 1)         /* MSI-X with SGHW_MSIX_VECTORS vectors */
#define SGHW_FEAT_SHARING (1u << 2)      /* EXPORT / IMPORT */
#define SGHW_FEAT_IMPORT_WINDOW (1u << 3)/* MAP_IMPORT / UNMAP_IMPORT, BAR2 upper half */
#define SGHW_FEAT_COPY_ENGINE (1u << 4)  /* COPY / FILL / CHECKSUM */
#define SGHW_FEAT_SYSTEM_PAGES (1u << 5) /* ATTACH_BACKING / TRANSFER_* */
#define SGHW_FEAT_JOB_ABORT (1u << 6)    /* 1.4: SGHW_REG_JOB_ABORT */
#define SGHW_FEAT_WINDOW_FAULT (1u << 7) /* 1.5: a moved import's window range re-maps on access */
#define SGHW_FEAT_BROKER (1u << 8)       /* 1.6: connected to a host broker: BROKER_* work */

/* ---------------------------------------------------------------- BAR0 registers */
#define SGHW_REG_VERSION 0x000       /* RO */
#define SGHW_REG_FEATURES 0x004      /* RO SGHW_FEAT_* */
#define SGHW_REG_VRAM_SIZE_LO 0x008  /* RO bytes of VRAM (BAR2 lower half) */
#define SGHW_REG_VRAM_SIZE_HI 0x00c
#define SGHW_REG_STATUS 0x010        /* RO SGHW_STATUS_* */
#define SGHW_REG_RESET 0x014         /* WO write SGHW_RESET_MAGIC: full device reset */
#define SGHW_REG_IMPORT_WIN_LO 0x018 /* RO offset of the import window in BAR2 */
#define SGHW_REG_IMPORT_WIN_HI 0x01c
#define SGHW_REG_IMPORT_WIN_SIZE_LO 0x020 /* RO size of the import window */
#define SGHW_REG_IMPORT_WIN_SIZE_HI 0x024
#define SGHW_REG_SCRATCH 0x028       /* RW, no effect (probe / tests) */
#define SGHW_REG_QUEUE_DEPTH 0x02c   /* RO (1.3) jobs the device runs concurrently, >= 1 */
#define SGHW_REG_JOB_ABORT 0x030     /* WO (1.4) write SGHW_JOB_ABORT_MAGIC: abort every job
                                        not completed yet; buffers and handles are kept */

#define SGHW_REG_CMD_BASE_LO 0x040   /* RW guest-physical ring base, 64-byte aligned */
#define SGHW_REG_CMD_BASE_HI 0x044
#define SGHW_REG_CMD_SIZE 0x048      /* RW entries: 0 = disabled, else power of 2, 2..4096 */
#define SGHW_REG_CMD_HEAD 0x04c      /* RO index of the oldest command not completed */
#define SGHW_REG_CMD_TAIL 0x050      /* RW next index the driver will fill (mod size) */
#define SGHW_REG_DOORBELL 0x054      /* WO any value: process CMD_HEAD .. CMD_TAIL */
#define SGHW_REG_LAST_SEQNO_LO 0x058 /* RO seqno of the newest completed command */
#define SGHW_REG_LAST_SEQNO_HI 0x05c

#define SGHW_REG_EVT_BASE_LO 0x080   /* RW guest-physical event ring base, 32-byte aligned */
#define SGHW_REG_EVT_BASE_HI 0x084
#define SGHW_REG_EVT_SIZE 0x088      /* RW entries: 0 = disabled, else power of 2, 2..4096 */
#define SGHW_REG_EVT_HEAD 0x08c      /* RW consumer index (driver) */
#define SGHW_REG_EVT_TAIL 0x090      /* RO producer index (device) */
#define SGHW_REG_EVT_DROPPED 0x094   /* RO events lost because the ring was full/disabled */

#define SGHW_REG_INT_STATUS 0x0c0    /* RO SGHW_INT_* pending causes */
#define SGHW_REG_INT_MASK 0x0c4      /* RW 1 = cause enabled (reset value 0) */
#define SGHW_REG_INT_ACK 0x0c8       /* WO write-1-to-clear INT_STATUS bits */

#define SGHW_REG_ERROR_CODE 0x0d0    /* RO last non-OK status (enum sghw_status) */
#define SGHW_REG_ERROR_INDEX 0x0d4   /* RO ring index of the command that caused it */
#define SGHW_REG_ERROR_COUNT 0x0d8   /* RO commands completed with a non-OK status */

#define SGHW_RESET_MAGIC 0x52534554u /* "RSET" */
/* 1.4: jobs of the ring (CMD_HEAD .. CMD_TAIL) not started yet complete SGHW_ST_CANCELLED
 * without effect; started (or held) ones finish with their own status; stall/holds end */
#define SGHW_JOB_ABORT_MAGIC 0x41425254u /* "ABRT" */

#define SGHW_STATUS_READY (1u << 0)
#define SGHW_STATUS_CMD_ENABLED (1u << 1)
#define SGHW_STATUS_EVT_ENABLED (1u << 2)
#define SGHW_STATUS_HALTED (1u << 3) /* ring-level fault; only RESET recovers */

#define SGHW_INT_CMD (1u << 0)   /* a command with SGHW_CMD_F_IRQ (or a FENCE) completed */
#define SGHW_INT_EVENT (1u << 1) /* event ring TAIL moved */
#define SGHW_INT_ERROR (1u << 2) /* a command failed or the ring halted */
#define SGHW_INT_EVT_OVERFLOW (1u << 3) /* 1.1: an event was dropped (ring full/disabled) */

#define SGHW_RING_MAX_ENTRIES 4096

/* ---------------------------------------------------------------- placements */
enum sghw_placement {
    SGHW_PLACEMENT_DEVICE = 0, /* VRAM (BAR2 lower half) */
    SGHW_PLACEMENT_SYSTEM = 1, /* host system memory, not CPU-visible through BAR2 */
};

/* ---------------------------------------------------------------- commands */
enum sghw_opcode {
    SGHW_OP_NOP = 0x00,
    SGHW_OP_BO_CREATE = 0x01,      /* len=size arg=placement -> out_handle, result=vram off */
    SGHW_OP_BO_DESTROY = 0x02,     /* handle */
    SGHW_OP_BO_QUERY = 0x03,       /* handle addr0=gpa of sghw_bo_info -> result=size */
    SGHW_OP_BO_MOVE = 0x04,        /* handle arg=placement -> result=vram off or ~0 */
    SGHW_OP_BO_EVICT = 0x05,       /* handle -> DEVICE to SYSTEM */
    SGHW_OP_BO_PIN = 0x06,         /* handle */
    SGHW_OP_BO_UNPIN = 0x07,       /* handle */
    SGHW_OP_ATTACH_BACKING = 0x10, /* handle addr0=gpa of sghw_mem_entry[arg] */
    SGHW_OP_DETACH_BACKING = 0x11, /* handle */
    SGHW_OP_TRANSFER_TO_DEVICE = 0x12,   /* handle off0=bo off off1=backing off len */
    SGHW_OP_TRANSFER_FROM_DEVICE = 0x13, /* handle off0=bo off off1=backing off len */
    SGHW_OP_COPY = 0x20,           /* handle=dst off0 handle2=src off1 len */
    SGHW_OP_FILL = 0x21,           /* handle off0 len arg=32-bit pattern */
    SGHW_OP_CHECKSUM = 0x22,       /* handle off0 len -> result=crc32c */
    SGHW_OP_FENCE = 0x28,          /* -> result=seqno; always raises SGHW_INT_CMD */
    SGHW_OP_CACHE_FLUSH = 0x30,    /* handle off0 len */
    SGHW_OP_CACHE_INVALIDATE = 0x31, /* handle off0 len */
    SGHW_OP_CPU_ACCESS_BEGIN = 0x32, /* handle arg=enum sghw_dir */
    SGHW_OP_CPU_ACCESS_END = 0x33,   /* handle arg=enum sghw_dir */
    SGHW_OP_EXPORT = 0x40,         /* handle -> uuid (in place) */
    SGHW_OP_IMPORT = 0x41,         /* uuid -> out_handle */
    SGHW_OP_MAP_IMPORT = 0x42,     /* handle off0=import window offset -> result=BAR2 off */
    SGHW_OP_UNMAP_IMPORT = 0x43,   /* handle */
    /* 1.6: sharing between VMs through the host broker (docs/hardware.md 13) */
    SGHW_OP_BROKER_EXPORT = 0x48,  /* handle arg=right off0=gpa of sghw_peer_name
                                      -> uuid = broker id (in place), result=size */
    SGHW_OP_BROKER_GRANT = 0x49,   /* handle off0=gpa of sghw_peer_name arg=right (0 withdraw) */
    SGHW_OP_BROKER_UNEXPORT = 0x4a, /* handle -> result=1 if it was broker-exported */
    SGHW_OP_BROKER_IMPORT = 0x4b,  /* uuid = broker id -> out_handle (remote import),
                                      result=size | SGHW_BROKER_IMPORT_WRITABLE */
};

/* 1.6: BROKER_EXPORT / BROKER_GRANT rights */
enum sghw_broker_right {
    SGHW_BROKER_RIGHT_NONE = 0,       /* BROKER_EXPORT: no grant yet; BROKER_GRANT: withdraw */
    SGHW_BROKER_RIGHT_READ = 1,       /* the importing VM maps the buffer read-only */
    SGHW_BROKER_RIGHT_READ_WRITE = 2,
};

/* 1.6: BROKER_IMPORT result bit0 (sizes are multiples of SGHW_VRAM_ALIGN) */
#define SGHW_BROKER_IMPORT_WRITABLE 1u
/* 1.6: remote import handles (BROKER_IMPORT) have this bit set; local handles never do */
#define SGHW_REMOTE_HANDLE_BIT 0x80000000u

/* 1.6: a VM's broker name, at the gpa in off0: 1..31 of [A-Za-z0-9._-], NUL-terminated */
#define SGHW_PEER_NAME_LEN 32
struct sghw_peer_name {
    char name[SGHW_PEER_NAME_LEN];
};

/* 1.6: BO_REVOKED event reasons (placement field); 1..5 are the broker protocol's values */
enum sghw_revoke_reason {
    SGHW_REVOKE_UNEXPORTED = 1,      /* the exporter unexported (or destroyed) the buffer */
    SGHW_REVOKE_EXPORTER_GONE = 2,   /* the exporting VM exited or was killed */
    SGHW_REVOKE_GRANT_WITHDRAWN = 3, /* the grant was withdrawn or its right changed */
    SGHW_REVOKE_ACK_TIMEOUT = 4,     /* an invalidation was not acknowledged in time */
    SGHW_REVOKE_BROKER_GONE = 5,     /* the host broker connection was lost */
    SGHW_REVOKE_EXPORT_REFUSED = 6,  /* (EXPORT) the broker refused the export after
                                      * BROKER_EXPORT completed (its limits) */
};

enum sghw_dir {
    SGHW_DIR_BIDIRECTIONAL = 0,
    SGHW_DIR_TO_DEVICE = 1,
    SGHW_DIR_FROM_DEVICE = 2,
};

#define SGHW_CMD_F_IRQ (1u << 0) /* raise SGHW_INT_CMD when this command completes */
/* 1.1: BO_CREATE / BO_MOVE to DEVICE: fail with NO_SPACE instead of evicting another BO of
 * this device (INVALID on any other opcode) */
#define SGHW_CMD_F_NO_EVICT (1u << 1)

enum sghw_status {
    SGHW_ST_PENDING = 0xffffffffu, /* never written by the device; drivers may preset it */
    SGHW_ST_OK = 0,
    SGHW_ST_BAD_OPCODE = 1,
    SGHW_ST_BAD_HANDLE = 2,   /* unknown / destroyed handle, or wrong kind of handle */
    SGHW_ST_OUT_OF_RANGE = 3, /* offset/length outside the BO, backing or window */
    SGHW_ST_NO_SPACE = 4,     /* VRAM (or the import window) full */
    SGHW_ST_BUSY = 5,         /* pinned, or mapped where the operation needs it not to be */
    SGHW_ST_INVALID = 6,      /* malformed argument (size 0, bad placement, flags, ...) */
    SGHW_ST_DMA_ERROR = 7,    /* guest memory named by the command could not be accessed */
    SGHW_ST_NOT_FOUND = 8,    /* IMPORT of an unknown UUID */
    SGHW_ST_TOO_BIG = 9,      /* size above the device limit */
    SGHW_ST_NO_BACKING = 10,  /* TRANSFER without ATTACH_BACKING */
    SGHW_ST_CANCELLED = 11,   /* 1.4: job dropped by JOB_ABORT before it started */
    SGHW_ST_INTERNAL = 12,    /* backend failure; see the host log */
    SGHW_ST_NO_DEVICE = 13,   /* 1.6: remote import revoked, or no broker connection */
    SGHW_ST_ACCESS_DENIED = 14, /* 1.6: BROKER_IMPORT without a grant; 1.7: a job
                                   writing a remote import granted READ only */
};

/*
 * One command ring entry, 64 bytes. The driver fills bytes 0..47 and sets status to
 * SGHW_ST_PENDING; the device writes the completion (bytes 48..63; for EXPORT also the uuid
 * bytes 24..39) and then advances CMD_HEAD past the entry. Commands execute and complete in
 * ring order.
 */
struct sghw_cmd {
    sghw_le16 opcode;  /* enum sghw_opcode */
    sghw_le16 flags;   /* SGHW_CMD_F_* */
    sghw_le32 handle;  /* primary BO handle (destination for COPY) */
    sghw_le64 seqno;   /* driver-chosen, reported in LAST_SEQNO / FENCE result */
    sghw_le32 handle2; /* secondary BO handle (COPY source) */
    sghw_le32 arg;     /* placement / pattern / dir / entry count */
    union {
        struct {
            sghw_le64 off0; /* also addr0 (a guest-physical address) */
            sghw_le64 off1;
        };
        sghw_u8 uuid[16];  /* EXPORT result, IMPORT argument */
    };
    sghw_le64 len;
    /* completion (device-written) */
    sghw_le32 status;     /* enum sghw_status */
    sghw_le32 out_handle; /* BO_CREATE, IMPORT */
    sghw_le64 result;     /* opcode-specific, see docs/hardware.md */
};

/* ATTACH_BACKING scatter list entry (as virtio_gpu_mem_entry). */
struct sghw_mem_entry {
    sghw_le64 addr; /* guest-physical, any alignment */
    sghw_le32 length;
    sghw_le32 padding;
};
#define SGHW_MAX_MEM_ENTRIES 16384

/* BO_QUERY result, written to addr0. */
#define SGHW_BO_F_IMPORTED (1u << 0)
#define SGHW_BO_F_EXPORTED (1u << 1)
#define SGHW_BO_F_BACKING (1u << 2)
#define SGHW_BO_F_MAPPED (1u << 3) /* import mapped in the import window */
#define SGHW_BO_F_REMOTE (1u << 4)    /* 1.6: remote import (BROKER_IMPORT) */
#define SGHW_BO_F_READ_ONLY (1u << 5) /* 1.6: remote import granted READ only */
#define SGHW_BO_F_REVOKED (1u << 6)   /* 1.6: remote import revoked: commands fail NO_DEVICE */
#define SGHW_BO_F_BROKER_EXPORTED (1u << 7) /* 1.6: local BO exported through the broker */
struct sghw_bo_info {
    sghw_le64 size;
    sghw_le64 vram_offset; /* offset in BAR2 for DEVICE placement (imports: window offset
                              when mapped), else ~0 */
    sghw_le64 generation;  /* bumps on every move */
    sghw_le32 placement;
    sghw_le32 pin_count;
    sghw_le32 vmap_count;
    sghw_le32 attachments;
    sghw_le32 flags;       /* SGHW_BO_F_* */
    sghw_le32 live_mappings;
    sghw_u8 uuid[16];      /* valid when SGHW_BO_F_EXPORTED or _IMPORTED */
};

/* ---------------------------------------------------------------- events */
enum sghw_event_type {
    SGHW_EVT_BO_MOVED = 1,       /* local BO changed placement; vram_offset = new or ~0 */
    SGHW_EVT_BO_INVALIDATED = 2, /* import's storage moved: its window mapping is gone */
    SGHW_EVT_ERROR = 3,          /* handle = ring index, placement = status */
    SGHW_EVT_RESYNC = 4,         /* 1.1: events were lost before this one; generation =
                                    EVT_DROPPED. Re-query every BO, re-map every import */
    SGHW_EVT_BO_REVOKED = 5,     /* 1.6: remote import revoked (mapping gone), placement =
                                    enum sghw_revoke_reason; with SGHW_EVT_F_EXPORT a local
                                    BO's broker export is gone */
};

/*
 * 1.2: this BO_MOVED reports the placement change that a BO_CREATE, BO_MOVE or BO_EVICT of
 * this device's own command ring made to the command's own handle (not other BOs it evicted,
 * not host-forced moves, not moves made through another device's import).
 */
#define SGHW_EVT_F_OWN_COMMAND (1u << 0)
/* 1.6, BO_REVOKED only: handle is a local BO whose broker export was lost */
#define SGHW_EVT_F_EXPORT (1u << 1)

struct sghw_event {
    sghw_le32 type;       /* enum sghw_event_type */
    sghw_le32 handle;
    sghw_le32 placement;
    sghw_le32 flags;      /* SGHW_EVT_F_* (1.2; 0 before) */
    sghw_le64 vram_offset;
    sghw_le64 generation;
};

#define SGHW_INVALID_OFFSET (~(sghw_u64)0)
#define SGHW_VRAM_ALIGN 4096 /* BO sizes and VRAM offsets are multiples of this */

/* ---------------------------------------------------------------- names (logs, monitor) */
#if !defined(__cplusplus)
/* The one table of each; NULL for values the contract does not define. */
static inline const char *sghw_opcode_name(sghw_u32 op)
{
    static const char *const names[] = {
        [SGHW_OP_NOP] = "NOP",
        [SGHW_OP_BO_CREATE] = "BO_CREATE",
        [SGHW_OP_BO_DESTROY] = "BO_DESTROY",
        [SGHW_OP_BO_QUERY] = "BO_QUERY",
        [SGHW_OP_BO_MOVE] = "BO_MOVE",
        [SGHW_OP_BO_EVICT] = "BO_EVICT",
        [SGHW_OP_BO_PIN] = "BO_PIN",
        [SGHW_OP_BO_UNPIN] = "BO_UNPIN",
        [SGHW_OP_ATTACH_BACKING] = "ATTACH_BACKING",
        [SGHW_OP_DETACH_BACKING] = "DETACH_BACKING",
        [SGHW_OP_TRANSFER_TO_DEVICE] = "TRANSFER_TO_DEVICE",
        [SGHW_OP_TRANSFER_FROM_DEVICE] = "TRANSFER_FROM_DEVICE",
        [SGHW_OP_COPY] = "COPY",
        [SGHW_OP_FILL] = "FILL",
        [SGHW_OP_CHECKSUM] = "CHECKSUM",
        [SGHW_OP_FENCE] = "FENCE",
        [SGHW_OP_CACHE_FLUSH] = "CACHE_FLUSH",
        [SGHW_OP_CACHE_INVALIDATE] = "CACHE_INVALIDATE",
        [SGHW_OP_CPU_ACCESS_BEGIN] = "CPU_ACCESS_BEGIN",
        [SGHW_OP_CPU_ACCESS_END] = "CPU_ACCESS_END",
        [SGHW_OP_EXPORT] = "EXPORT",
        [SGHW_OP_IMPORT] = "IMPORT",
        [SGHW_OP_MAP_IMPORT] = "MAP_IMPORT",
        [SGHW_OP_UNMAP_IMPORT] = "UNMAP_IMPORT",
        [SGHW_OP_BROKER_EXPORT] = "BROKER_EXPORT",
        [SGHW_OP_BROKER_GRANT] = "BROKER_GRANT",
        [SGHW_OP_BROKER_UNEXPORT] = "BROKER_UNEXPORT",
        [SGHW_OP_BROKER_IMPORT] = "BROKER_IMPORT",
    };
    return op < sizeof(names) / sizeof(names[0]) ? names[op] : (const char *)0;
}

static inline const char *sghw_status_name(sghw_u32 st)
{
    static const char *const names[] = {
        [SGHW_ST_OK] = "OK",
        [SGHW_ST_BAD_OPCODE] = "BAD_OPCODE",
        [SGHW_ST_BAD_HANDLE] = "BAD_HANDLE",
        [SGHW_ST_OUT_OF_RANGE] = "OUT_OF_RANGE",
        [SGHW_ST_NO_SPACE] = "NO_SPACE",
        [SGHW_ST_BUSY] = "BUSY",
        [SGHW_ST_INVALID] = "INVALID",
        [SGHW_ST_DMA_ERROR] = "DMA_ERROR",
        [SGHW_ST_NOT_FOUND] = "NOT_FOUND",
        [SGHW_ST_TOO_BIG] = "TOO_BIG",
        [SGHW_ST_NO_BACKING] = "NO_BACKING",
        [SGHW_ST_CANCELLED] = "CANCELLED",
        [SGHW_ST_INTERNAL] = "INTERNAL",
        [SGHW_ST_NO_DEVICE] = "NO_DEVICE",
        [SGHW_ST_ACCESS_DENIED] = "ACCESS_DENIED",
    };
    if (st == SGHW_ST_PENDING) {
        return "PENDING";
    }
    return st < sizeof(names) / sizeof(names[0]) ? names[st] : (const char *)0;
}

static inline const char *sghw_event_name(sghw_u32 type)
{
    static const char *const names[] = {
        [SGHW_EVT_BO_MOVED] = "BO_MOVED",
        [SGHW_EVT_BO_INVALIDATED] = "BO_INVALIDATED",
        [SGHW_EVT_ERROR] = "ERROR",
        [SGHW_EVT_RESYNC] = "RESYNC",
        [SGHW_EVT_BO_REVOKED] = "BO_REVOKED",
    };
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : (const char *)0;
}
#endif /* !__cplusplus */

#if defined(__cplusplus)
static_assert(sizeof(struct sghw_cmd) == 64, "sghw_cmd");
static_assert(sizeof(struct sghw_event) == 32, "sghw_event");
static_assert(sizeof(struct sghw_bo_info) == 64, "sghw_bo_info");
static_assert(sizeof(struct sghw_mem_entry) == 16, "sghw_mem_entry");
static_assert(sizeof(struct sghw_peer_name) == 32, "sghw_peer_name");
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct sghw_cmd) == 64, "sghw_cmd");
_Static_assert(sizeof(struct sghw_event) == 32, "sghw_event");
_Static_assert(sizeof(struct sghw_bo_info) == 64, "sghw_bo_info");
_Static_assert(sizeof(struct sghw_mem_entry) == 16, "sghw_mem_entry");
_Static_assert(sizeof(struct sghw_peer_name) == 32, "sghw_peer_name");
#endif

#endif /* SHAREGPU_HW_H */
