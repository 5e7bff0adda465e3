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

#if defined(__KERNEL__)
#include <linux/types.h>
typedef __u8 sgpu_u8;
typedef __u16 sgpu_u16;
typedef __u32 sgpu_u32;
typedef __u64 sgpu_u64;
#else
#include <stdint.h>
typedef uint8_t sgpu_u8;
typedef uint16_t sgpu_u16;
typedef uint32_t sgpu_u32;
typedef uint64_t sgpu_u64;
#endif

/* ---------------------------------------------------------------- PCI identity */
#define SGPU_PCI_VENDOR_ID 0x1234 /* QEMU */
#define SGPU_PCI_DEVICE_ID 0x5a47 /* "ZG" */
#define SGPU_PCI_CLASS 0x0380     /* display controller, other */
#define SGPU_PCI_REVISION 0x01
#define SGPU_PCI_SUBVENDOR_ID 0x1af4
#define SGPU_PCI_SUBDEVICE_ID 0x1100

#define SGPU_BAR_MMIO 0  /* 4 KiB registers */
#define SGPU_BAR_VRAM 2  /* 64-bit prefetchable VRAM aperture (+ import window) */
#define SGPU_BAR_MSIX 4  /* MSI-X table and PBA */
#define SGPU_MMIO_SIZE 0x1000

#define SGPU_MSIX_VECTORS 2
#define SGPU_MSIX_VEC_CMD 0   /* command completion, ring errors */
#define SGPU_MSIX_VEC_EVENT 1 /* event ring */

/* ---------------------------------------------------------------- version / features */
#define SGPU_VERSION_MAJOR 1
#define SGPU_VERSION_MINOR 1 /* 1.1: NO_EVICT, RESYNC, INT_EVT_OVERFLOW */
#define SGPU_VERSION ((SGPU_VERSION_MAJOR << 16) | SGPU_VERSION_MINOR)

#define SGPU_FEAT_COHERENT (1u << 0)     /* device caches are coherent (no flush needed) */
#define SGPU_FEAT_MSIX (1u << 1)         /* MSI-X with SGPU_MSIX_VECTORS vectors */
#define SGPU_FEAT_SHARING (1u << 2)      /* EXPORT / IMPORT */
#define SGPU_FEAT_IMPORT_WINDOW (1u << 3)/* MAP_IMPORT / UNMAP_IMPORT, BAR2 upper half */
#define SGPU_FEAT_COPY_ENGINE (1u << 4)  /* COPY / FILL / CHECKSUM */
#define SGPU_FEAT_SYSTEM_PAGES (1u << 5) /* ATTACH_BACKING / TRANSFER_* */

/* ---------------------------------------------------------------- BAR0 registers */
#define SGPU_REG_VERSION 0x000       /* RO */
#define SGPU_REG_FEATURES 0x004      /* RO SGPU_FEAT_* */
#define SGPU_REG_VRAM_SIZE_LO 0x008  /* RO bytes of VRAM (BAR2 lower half) */
#define SGPU_REG_VRAM_SIZE_HI 0x00c
#define SGPU_REG_STATUS 0x010        /* RO SGPU_STATUS_* */
#define SGPU_REG_RESET 0x014         /* WO write SGPU_RESET_MAGIC: full device reset */
#define SGPU_REG_IMPORT_WIN_LO 0x018 /* RO offset of the import window in BAR2 */
#define SGPU_REG_IMPORT_WIN_HI 0x01c
#define SGPU_REG_IMPORT_WIN_SIZE_LO 0x020 /* RO size of the import window */
#define SGPU_REG_IMPORT_WIN_SIZE_HI 0x024
#define SGPU_REG_SCRATCH 0x028       /* RW, no effect (probe / tests) */

#define SGPU_REG_CMD_BASE_LO 0x040   /* RW guest-physical ring base, 64-byte aligned */
#define SGPU_REG_CMD_BASE_HI 0x044
#define SGPU_REG_CMD_SIZE 0x048      /* RW entries: 0 = disabled, else power of 2, 2..4096 */
#define SGPU_REG_CMD_HEAD 0x04c      /* RO next index the device will consume (mod size) */
#define SGPU_REG_CMD_TAIL 0x050      /* RW next index the driver will fill (mod size) */
#define SGPU_REG_DOORBELL 0x054      /* WO any value: process CMD_HEAD .. CMD_TAIL */
#define SGPU_REG_LAST_SEQNO_LO 0x058 /* RO seqno of the newest completed command */
#define SGPU_REG_LAST_SEQNO_HI 0x05c

#define SGPU_REG_EVT_BASE_LO 0x080   /* RW guest-physical event ring base, 32-byte aligned */
#define SGPU_REG_EVT_BASE_HI 0x084
#define SGPU_REG_EVT_SIZE 0x088      /* RW entries: 0 = disabled, else power of 2, 2..4096 */
#define SGPU_REG_EVT_HEAD 0x08c      /* RW consumer index (driver) */
#define SGPU_REG_EVT_TAIL 0x090      /* RO producer index (device) */
#define SGPU_REG_EVT_DROPPED 0x094   /* RO events lost because the ring was full/disabled */

#define SGPU_REG_INT_STATUS 0x0c0    /* RO SGPU_INT_* pending causes */
#define SGPU_REG_INT_MASK 0x0c4      /* RW 1 = cause enabled (reset value 0) */
#define SGPU_REG_INT_ACK 0x0c8       /* WO write-1-to-clear INT_STATUS bits */

#define SGPU_REG_ERROR_CODE 0x0d0    /* RO last non-OK status (enum sgpu_hw_status) */
#define SGPU_REG_ERROR_INDEX 0x0d4   /* RO ring index of the command that caused it */
#define SGPU_REG_ERROR_COUNT 0x0d8   /* RO commands completed with a non-OK status */

#define SGPU_RESET_MAGIC 0x52534554u /* "RSET" */

#define SGPU_STATUS_READY (1u << 0)
#define SGPU_STATUS_CMD_ENABLED (1u << 1)
#define SGPU_STATUS_EVT_ENABLED (1u << 2)
#define SGPU_STATUS_HALTED (1u << 3) /* ring-level fault; only RESET recovers */

#define SGPU_INT_CMD (1u << 0)   /* a command with SGPU_CMD_F_IRQ (or a FENCE) completed */
#define SGPU_INT_EVENT (1u << 1) /* event ring TAIL moved */
#define SGPU_INT_ERROR (1u << 2) /* a command failed or the ring halted */
#define SGPU_INT_EVT_OVERFLOW (1u << 3) /* 1.1: an event was dropped (ring full/disabled) */

#define SGPU_RING_MAX_ENTRIES 4096

/* ---------------------------------------------------------------- placements */
enum sgpu_hw_placement {
    SGPU_PLACEMENT_HW_DEVICE = 0, /* VRAM (BAR2 lower half) */
    SGPU_PLACEMENT_HW_SYSTEM = 1, /* host system memory, not CPU-visible through BAR2 */
};

/* ---------------------------------------------------------------- commands */
enum sgpu_hw_opcode {
    SGPU_OP_NOP = 0x00,
    SGPU_OP_BO_CREATE = 0x01,      /* len=size arg=placement -> out_handle, result=vram off */
    SGPU_OP_BO_DESTROY = 0x02,     /* handle */
    SGPU_OP_BO_QUERY = 0x03,       /* handle addr0=gpa of sgpu_hw_bo_info -> result=size */
    SGPU_OP_BO_MOVE = 0x04,        /* handle arg=placement -> result=vram off or ~0 */
    SGPU_OP_BO_EVICT = 0x05,       /* handle -> DEVICE to SYSTEM */
    SGPU_OP_BO_PIN = 0x06,         /* handle */
    SGPU_OP_BO_UNPIN = 0x07,       /* handle */
    SGPU_OP_ATTACH_BACKING = 0x10, /* handle addr0=gpa of sgpu_hw_mem_entry[arg] */
    SGPU_OP_DETACH_BACKING = 0x11, /* handle */
    SGPU_OP_TRANSFER_TO_DEVICE = 0x12,   /* handle off0=bo off off1=backing off len */
    SGPU_OP_TRANSFER_FROM_DEVICE = 0x13, /* handle off0=bo off off1=backing off len */
    SGPU_OP_COPY = 0x20,           /* handle=dst off0 handle2=src off1 len */
    SGPU_OP_FILL = 0x21,           /* handle off0 len arg=32-bit pattern */
    SGPU_OP_CHECKSUM = 0x22,       /* handle off0 len -> result=crc32c */
    SGPU_OP_FENCE = 0x28,          /* -> result=seqno; always raises SGPU_INT_CMD */
    SGPU_OP_CACHE_FLUSH = 0x30,    /* handle off0 len */
    SGPU_OP_CACHE_INVALIDATE = 0x31, /* handle off0 len */
    SGPU_OP_CPU_ACCESS_BEGIN = 0x32, /* handle arg=enum sgpu_hw_dir */
    SGPU_OP_CPU_ACCESS_END = 0x33,   /* handle arg=enum sgpu_hw_dir */
    SGPU_OP_EXPORT = 0x40,         /* handle -> uuid (in place) */
    SGPU_OP_IMPORT = 0x41,         /* uuid -> out_handle */
    SGPU_OP_MAP_IMPORT = 0x42,     /* handle off0=import window offset -> result=BAR2 off */
    SGPU_OP_UNMAP_IMPORT = 0x43,   /* handle */
};

enum sgpu_hw_dir {
    SGPU_DIR_HW_BIDIRECTIONAL = 0,
    SGPU_DIR_HW_TO_DEVICE = 1,
    SGPU_DIR_HW_FROM_DEVICE = 2,
};

#define SGPU_CMD_F_IRQ (1u << 0) /* raise SGPU_INT_CMD when this command completes */
/* 1.1: BO_CREATE / BO_MOVE to DEVICE: fail with NO_SPACE instead of evicting another BO of
 * this device (INVALID on any other opcode) */
#define SGPU_CMD_F_NO_EVICT (1u << 1)

enum sgpu_hw_status {
    SGPU_ST_PENDING = 0xffffffffu, /* never written by the device; drivers may preset it */
    SGPU_ST_OK = 0,
    SGPU_ST_BAD_OPCODE = 1,
    SGPU_ST_BAD_HANDLE = 2,   /* unknown / destroyed handle, or wrong kind of handle */
    SGPU_ST_OUT_OF_RANGE = 3, /* offset/length outside the BO, backing or window */
    SGPU_ST_NO_SPACE = 4,     /* VRAM (or the import window) full */
    SGPU_ST_BUSY = 5,         /* pinned, or mapped where the operation needs it not to be */
    SGPU_ST_INVALID = 6,      /* malformed argument (size 0, bad placement, flags, ...) */
    SGPU_ST_DMA_ERROR = 7,    /* guest memory named by the command could not be accessed */
    SGPU_ST_NOT_FOUND = 8,    /* IMPORT of an unknown UUID */
    SGPU_ST_TOO_BIG = 9,      /* size above the device limit */
    SGPU_ST_NO_BACKING = 10,  /* TRANSFER without ATTACH_BACKING */
    SGPU_ST_CANCELLED = 11,   /* not executed: device reset */
    SGPU_ST_INTERNAL = 12,    /* backend failure; see the host log */
};

/*
 * One command ring entry, 64 bytes. The driver fills bytes 0..47 and sets status to
 * SGPU_ST_PENDING; the device writes the completion (bytes 48..63; for EXPORT also the uuid
 * bytes 24..39) and then advances CMD_HEAD past the entry. Commands execute and complete in
 * ring order.
 */
struct sgpu_hw_cmd {
    sgpu_u16 opcode;  /* enum sgpu_hw_opcode */
    sgpu_u16 flags;   /* SGPU_CMD_F_* */
    sgpu_u32 handle;  /* primary BO handle (destination for COPY) */
    sgpu_u64 seqno;   /* driver-chosen, reported in LAST_SEQNO / FENCE result */
    sgpu_u32 handle2; /* secondary BO handle (COPY source) */
    sgpu_u32 arg;     /* placement / pattern / dir / entry count */
    union {
        struct {
            sgpu_u64 off0; /* also addr0 (a guest-physical address) */
            sgpu_u64 off1;
        };
        sgpu_u8 uuid[16]; /* EXPORT result, IMPORT argument */
    };
    sgpu_u64 len;
    /* completion (device-written) */
    sgpu_u32 status;     /* enum sgpu_hw_status */
    sgpu_u32 out_handle; /* BO_CREATE, IMPORT */
    sgpu_u64 result;     /* opcode-specific, see docs/hardware.md */
};

/* ATTACH_BACKING scatter list entry (as virtio_gpu_mem_entry). */
struct sgpu_hw_mem_entry {
    sgpu_u64 addr; /* guest-physical, any alignment */
    sgpu_u32 length;
    sgpu_u32 padding;
};
#define SGPU_MAX_MEM_ENTRIES 16384

/* BO_QUERY result, written to addr0. */
#define SGPU_BO_F_IMPORTED (1u << 0)
#define SGPU_BO_F_EXPORTED (1u << 1)
#define SGPU_BO_F_BACKING (1u << 2)
#define SGPU_BO_F_MAPPED (1u << 3) /* import mapped in the import window */
struct sgpu_hw_bo_info {
    sgpu_u64 size;
    sgpu_u64 vram_offset; /* offset in BAR2 for DEVICE placement (imports: window offset
                             when mapped), else ~0 */
    sgpu_u64 generation;  /* bumps on every move */
    sgpu_u32 placement;
    sgpu_u32 pin_count;
    sgpu_u32 vmap_count;
    sgpu_u32 attachments;
    sgpu_u32 flags;       /* SGPU_BO_F_* */
    sgpu_u32 live_mappings;
    sgpu_u8 uuid[16];     /* valid when SGPU_BO_F_EXPORTED or _IMPORTED */
};

/* ---------------------------------------------------------------- events */
enum sgpu_hw_event_type {
    SGPU_EVT_BO_MOVED = 1,       /* local BO changed placement; vram_offset = new or ~0 */
    SGPU_EVT_BO_INVALIDATED = 2, /* import's storage moved: its window mapping is gone */
    SGPU_EVT_ERROR = 3,          /* handle = ring index, placement = status */
    SGPU_EVT_RESYNC = 4,         /* 1.1: events were lost before this one; generation =
                                    EVT_DROPPED. Re-query every BO, re-map every import */
};

struct sgpu_hw_event {
    sgpu_u32 type;
    sgpu_u32 handle;
    sgpu_u32 placement;
    sgpu_u32 flags;
    sgpu_u64 vram_offset;
    sgpu_u64 generation;
};

#define SGPU_INVALID_OFFSET (~(sgpu_u64)0)
#define SGPU_VRAM_ALIGN 4096 /* BO sizes and VRAM offsets are multiples of this */

#if defined(__cplusplus)
static_assert(sizeof(struct sgpu_hw_cmd) == 64, "sgpu_hw_cmd");
static_assert(sizeof(struct sgpu_hw_event) == 32, "sgpu_hw_event");
static_assert(sizeof(struct sgpu_hw_bo_info) == 64, "sgpu_hw_bo_info");
static_assert(sizeof(struct sgpu_hw_mem_entry) == 16, "sgpu_hw_mem_entry");
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct sgpu_hw_cmd) == 64, "sgpu_hw_cmd");
_Static_assert(sizeof(struct sgpu_hw_event) == 32, "sgpu_hw_event");
_Static_assert(sizeof(struct sgpu_hw_bo_info) == 64, "sgpu_hw_bo_info");
_Static_assert(sizeof(struct sgpu_hw_mem_entry) == 16, "sgpu_hw_mem_entry");
#endif

#endif /* SHAREGPU_HW_H */
