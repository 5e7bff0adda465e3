/*
 * Randomized register / ring fuzz test for the sharegpu device (docs/hardware.md).
 *
 * A seeded PRNG drives random MMIO accesses to BAR0 (any offset, sizes 1/2/4/8, unaligned
 * too), BAR2 (VRAM and import window), random ring bases (RAM, unmapped, beyond RAM, the
 * devices' own BARs), random command entries (random opcodes, handles, offsets, lengths,
 * flags, gpa pointers for scatter lists and BO_QUERY results), doorbells, resets, bus master
 * toggles and QMP x-sharegpu-move-bo calls, against two devices (one non-coherent). Afterwards
 * QEMU must be alive and answer query-sharegpu; QEMU must exit cleanly (a sanitizer report
 * makes it exit non-zero, which libqtest turns into a test failure). Two more oracles:
 *  - canaries: a guest RAM region no command ever names and the VRAM of a third device the
 *    fuzzer never touches hold a pattern that must survive the run unchanged (a DMA or a
 *    copy that strays, or a backend that writes another device's arena, changes them);
 *  - coverage floors: the run must have got past the validation into the real work
 *    (successful commands, jobs, imports, moves, mapped imports), or it proves nothing.
 *
 *   SHAREGPU_FUZZ_SEED=N    seed (default: time based; printed either way; scripts/qemu-tests.sh
 *                           runs seeds 1, 2, 3 and a random one)
 *   SHAREGPU_FUZZ_ITERS=N   iterations per run (default 4000)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/libqos-pc.h"
#include "libqos/pci.h"
#include "standard-headers/linux/pci_regs.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "sharegpu_hw.h"

#define NDEV 2                /* fuzzed devices; a third one is the VRAM canary */
#define CANARY_BYTES (64 * 1024)
/* coverage floors per 1000 iterations, see test_fuzz() */
#define FLOOR_COMMANDS 2000
#define FLOOR_SUCCESSFUL 1000
#define FLOOR_JOBS 10
#define FLOOR_IMPORTS 1
#define FLOOR_MOVES 4
#define FLOOR_SUCCESS_PERCENT 25 /* of all commands */
#define RING_MAX 64          /* entries of the rings the fuzzer allocates */
#define POOL_BYTES (256 * 1024)

typedef struct FuzzGpu {
    QPCIDevice *dev;
    uint32_t handles[32];   /* handles this device returned (may be stale) */
    unsigned nhandles;
    unsigned hcursor;
    QPCIBar mmio;
    QPCIBar vram;
    uint64_t vram_size;
    uint64_t bar0_gpa;      /* physical address of BAR0 (as DMA target) */
    uint64_t bar2_gpa;
    uint64_t ring;          /* a RAM ring of RING_MAX entries */
    uint64_t evring;
} FuzzGpu;

typedef struct Fuzz {
    QOSState *qs;
    QTestState *qts;
    FuzzGpu g[NDEV];
    int found;
    GRand *rnd;
    uint64_t pool;          /* RAM scratch area: sg lists, BO_QUERY targets, backing pages */
    uint64_t ram_size;
    uint32_t handles[64];   /* handles seen in completions */
    unsigned nhandles;
    unsigned hcursor;
    uint8_t uuid[16];       /* last EXPORT uuid seen */
    uint64_t stats[8];
    QPCIDevice *canary_dev; /* the third device: its whole VRAM is a canary */
    uint64_t canary_gpa;    /* guest RAM canary, CANARY_BYTES */
} Fuzz;

enum { ST_MMIO, ST_CMDS, ST_DOORBELL, ST_RESET, ST_QMP, ST_BAR2, ST_RINGBASE, ST_BM };

static void found_fn(QPCIDevice *dev, int devfn, void *data)
{
    Fuzz *f = data;

    g_assert_cmpint(f->found, <, NDEV + 1);
    if (f->found == NDEV) {
        f->canary_dev = dev;
        f->found++;
        return;
    }
    f->g[f->found++].dev = dev;
}

static uint32_t rnd(Fuzz *f, uint32_t n)
{
    return n ? g_rand_int_range(f->rnd, 0, n) : 0;
}

static uint64_t rnd64(Fuzz *f)
{
    return ((uint64_t)g_rand_int(f->rnd) << 32) | g_rand_int(f->rnd);
}

static bool chance(Fuzz *f, uint32_t percent)
{
    return rnd(f, 100) < percent;
}

static void wr(FuzzGpu *g, uint32_t reg, uint32_t val)
{
    qpci_io_writel(g->dev, g->mmio, reg, val);
}

static uint32_t rd(FuzzGpu *g, uint32_t reg)
{
    return qpci_io_readl(g->dev, g->mmio, reg);
}

/* A guest-physical address: mostly valid RAM, sometimes hostile. */
static uint64_t rnd_gpa(Fuzz *f, FuzzGpu *g, uint64_t len)
{
    uint64_t gpa;

    switch (rnd(f, 10)) {
    case 0:
        gpa = rnd64(f);                                /* anywhere but the canary */
        return gpa + len > f->canary_gpa && gpa < f->canary_gpa + CANARY_BYTES ?
               f->canary_gpa + CANARY_BYTES : gpa;
    case 1:
        return f->ram_size + rnd(f, 1 << 20);          /* just beyond RAM */
    case 2:
        return 0xfee00000 + rnd(f, 0x1000);            /* LAPIC / MSI area */
    case 3:
        return g->bar0_gpa + (rnd(f, 0x100) & ~3u);     /* own registers (reentrancy) */
    case 4:
        return f->g[rnd(f, NDEV)].bar2_gpa + rnd(f, 2 * f->g[0].vram_size);
    case 5:
        return 0;
    default:
        return f->pool + rnd(f, POOL_BYTES > len ? POOL_BYTES - len : 1);
    }
}

static uint64_t rnd_len(Fuzz *f)
{
    switch (rnd(f, 10)) {
    case 0:
        return 0;
    case 1:
        return rnd64(f);
    case 2:
        return UINT64_MAX - rnd(f, 8);
    case 3:
        return 4096 * (1 + rnd(f, 64));
    case 4:
        return 1 + rnd(f, 8);
    default:
        return 4 * (1 + rnd(f, 4096));
    }
}

static uint64_t rnd_off(Fuzz *f)
{
    switch (rnd(f, 8)) {
    case 0:
        return rnd64(f);
    case 1:
        return UINT64_MAX - rnd(f, 4096);
    case 2:
    case 3:
        return 0;
    default:
        return 4 * rnd(f, 16384);
    }
}

static uint32_t rnd_handle(Fuzz *f, FuzzGpu *g)
{
    if (g && g->nhandles && chance(f, 80)) {
        return g->handles[rnd(f, g->nhandles)];
    }
    if (f->nhandles && chance(f, 50)) {
        return f->handles[rnd(f, f->nhandles)];
    }
    return chance(f, 50) ? rnd(f, 24) : g_rand_int(f->rnd);
}

static const uint16_t opcodes[] = {
    SGHW_OP_NOP, SGHW_OP_BO_CREATE, SGHW_OP_BO_DESTROY, SGHW_OP_BO_QUERY, SGHW_OP_BO_MOVE,
    SGHW_OP_BO_EVICT, SGHW_OP_BO_PIN, SGHW_OP_BO_UNPIN, SGHW_OP_ATTACH_BACKING,
    SGHW_OP_DETACH_BACKING, SGHW_OP_TRANSFER_TO_DEVICE, SGHW_OP_TRANSFER_FROM_DEVICE,
    SGHW_OP_COPY, SGHW_OP_FILL, SGHW_OP_CHECKSUM, SGHW_OP_FENCE, SGHW_OP_CACHE_FLUSH,
    SGHW_OP_CACHE_INVALIDATE, SGHW_OP_CPU_ACCESS_BEGIN, SGHW_OP_CPU_ACCESS_END,
    SGHW_OP_EXPORT, SGHW_OP_IMPORT, SGHW_OP_MAP_IMPORT, SGHW_OP_UNMAP_IMPORT,
    /* weighted: the interesting ones again */
    SGHW_OP_BO_CREATE, SGHW_OP_BO_CREATE, SGHW_OP_ATTACH_BACKING, SGHW_OP_TRANSFER_TO_DEVICE,
    SGHW_OP_TRANSFER_FROM_DEVICE, SGHW_OP_COPY, SGHW_OP_MAP_IMPORT, SGHW_OP_IMPORT,
    SGHW_OP_EXPORT, SGHW_OP_BO_MOVE,
};

static void rnd_cmd(Fuzz *f, FuzzGpu *g, struct sghw_cmd *c)
{
    memset(c, 0, sizeof(*c));
    c->opcode = chance(f, 95) ? opcodes[rnd(f, ARRAY_SIZE(opcodes))] : g_rand_int(f->rnd);
    switch (rnd(f, 20)) {
    case 0:
    case 1:
        c->flags = rnd(f, 4);                   /* NO_EVICT, also where it is INVALID */
        break;
    case 2:
        c->flags = g_rand_int(f->rnd);
        break;
    case 3:
    case 4:
        c->flags = SGHW_CMD_F_IRQ;
        break;
    default:
        c->flags = 0;
        break;
    }
    c->handle = rnd_handle(f, g);
    c->handle2 = rnd_handle(f, g);
    c->seqno = rnd64(f);
    c->off0 = rnd_off(f);
    c->off1 = rnd_off(f);
    c->len = rnd_len(f);
    c->arg = chance(f, 70) ? rnd(f, 3) : g_rand_int(f->rnd);
    c->status = SGHW_ST_PENDING;

    switch (c->opcode) {
    case SGHW_OP_BO_CREATE:
        /* keep memory bounded: big sizes only where they are rejected */
        if (chance(f, 90)) {
            c->len = chance(f, 80) ? 4096 * (1 + rnd(f, 64)) : 1 + rnd(f, 1 << 20);
        } else if (chance(f, 50)) {
            c->len = (1ull << 32) + 1 + rnd(f, 1000);
        } else {
            c->len = 0;
        }
        if (c->arg == SGHW_PLACEMENT_SYSTEM && c->len > (16 << 20) &&
            c->len <= (1ull << 32)) {
            c->len = 16 << 20;
        }
        break;
    case SGHW_OP_ATTACH_BACKING: {
        /* a scatter list in the pool with random entries */
        uint32_t n = chance(f, 90) ? 1 + rnd(f, 8) : g_rand_int(f->rnd);
        uint32_t k, write = MIN(n, 64);
        struct sghw_mem_entry ents[64];
        uint64_t sg = f->pool + 4096 * rnd(f, 4);

        for (k = 0; k < write; k++) {
            ents[k].addr = chance(f, 85) ? f->pool + 8192 * 4 + rnd(f, POOL_BYTES / 2)
                                         : rnd_gpa(f, g, 4096);
            ents[k].length = chance(f, 90) ? 1 + rnd(f, 65536) : g_rand_int(f->rnd);
            ents[k].padding = 0;
        }
        qtest_memwrite(f->qts, sg, ents, write * sizeof(ents[0]));
        c->arg = n;
        c->off0 = chance(f, 90) ? sg : rnd_gpa(f, g, 64);
        break;
    }
    case SGHW_OP_BO_QUERY:
        c->off0 = rnd_gpa(f, g, 64);
        break;
    case SGHW_OP_IMPORT:
        if (chance(f, 70)) {
            memcpy(c->uuid, f->uuid, sizeof(c->uuid));
        } else {
            for (int k = 0; k < 16; k++) {
                c->uuid[k] = g_rand_int(f->rnd);
            }
        }
        break;
    case SGHW_OP_MAP_IMPORT:
        c->off0 = chance(f, 80) ? 4096 * rnd(f, g->vram_size / 4096) : rnd_off(f);
        break;
    case SGHW_OP_TRANSFER_TO_DEVICE:
    case SGHW_OP_TRANSFER_FROM_DEVICE:
    case SGHW_OP_COPY:
    case SGHW_OP_FILL:
    case SGHW_OP_CHECKSUM:
    case SGHW_OP_CACHE_FLUSH:
    case SGHW_OP_CACHE_INVALIDATE:
        if (chance(f, 80)) {
            c->off0 = chance(f, 50) ? 0 : 4 * rnd(f, 2048);
            c->off1 = chance(f, 50) ? 0 : 4 * rnd(f, 2048);
            c->len = 4 * (1 + rnd(f, 2048));
        }
        break;
    default:
        break;
    }
}

/* Harvests handles and uuids from the completions the device wrote. */
static void harvest(Fuzz *f, FuzzGpu *g)
{
    struct sghw_cmd ring[RING_MAX];

    qtest_memread(f->qts, g->ring, ring, sizeof(ring));
    for (int i = 0; i < RING_MAX; i++) {
        struct sghw_cmd *c = &ring[i];

        if (c->status != SGHW_ST_OK) {
            continue;
        }
        if ((c->opcode == SGHW_OP_BO_CREATE || c->opcode == SGHW_OP_IMPORT) && c->out_handle) {
            f->handles[f->hcursor++ % ARRAY_SIZE(f->handles)] = c->out_handle;
            f->nhandles = MIN(f->nhandles + 1, ARRAY_SIZE(f->handles));
            g->handles[g->hcursor++ % ARRAY_SIZE(g->handles)] = c->out_handle;
            g->nhandles = MIN(g->nhandles + 1, ARRAY_SIZE(g->handles));
        }
        if (c->opcode == SGHW_OP_EXPORT) {
            memcpy(f->uuid, c->uuid, sizeof(f->uuid));
        }
    }
}

/* A sane configuration so that most random commands actually execute. */
static void sane_rings(Fuzz *f, FuzzGpu *g)
{
    wr(g, SGHW_REG_CMD_SIZE, 0);
    wr(g, SGHW_REG_CMD_BASE_LO, (uint32_t)g->ring);
    wr(g, SGHW_REG_CMD_BASE_HI, g->ring >> 32);
    wr(g, SGHW_REG_CMD_SIZE, RING_MAX);
    wr(g, SGHW_REG_EVT_SIZE, 0);
    wr(g, SGHW_REG_EVT_BASE_LO, (uint32_t)g->evring);
    wr(g, SGHW_REG_EVT_BASE_HI, g->evring >> 32);
    wr(g, SGHW_REG_EVT_SIZE, 16);
    wr(g, SGHW_REG_INT_MASK, 0xf);
}

static void step_cmds(Fuzz *f, FuzzGpu *g)
{
    uint32_t size = rd(g, SGHW_REG_CMD_SIZE);
    uint32_t tail, n, i;
    uint64_t base;

    if (size == 0 || (rd(g, SGHW_REG_STATUS) & SGHW_STATUS_HALTED) || chance(f, 5)) {
        if (chance(f, 30)) {
            wr(g, SGHW_REG_RESET, SGHW_RESET_MAGIC);
        }
        sane_rings(f, g);
        size = RING_MAX;
    }
    base = rd(g, SGHW_REG_CMD_BASE_LO) | ((uint64_t)rd(g, SGHW_REG_CMD_BASE_HI) << 32);
    tail = rd(g, SGHW_REG_CMD_TAIL);
    n = 1 + rnd(f, MIN(size - 1, 16));
    for (i = 0; i < n; i++) {
        struct sghw_cmd c;

        rnd_cmd(f, g, &c);
        if (base == g->ring && size <= RING_MAX) {
            qtest_memwrite(f->qts, base + ((tail + i) % size) * sizeof(c), &c, sizeof(c));
        }
    }
    wr(g, SGHW_REG_CMD_TAIL, (tail + n) % size);
    wr(g, SGHW_REG_DOORBELL, g_rand_int(f->rnd));
    if (chance(f, 10)) {
        /* 1.4: abort whatever jobs are in flight, read or not, at a random moment */
        wr(g, SGHW_REG_JOB_ABORT, SGHW_JOB_ABORT_MAGIC);
    }
    if (base == g->ring && size <= RING_MAX) {
        rd(g, SGHW_REG_CMD_HEAD); /* lets the bottom half run */
        harvest(f, g);
    }
    /* consume events now and then */
    if (chance(f, 50)) {
        wr(g, SGHW_REG_EVT_HEAD, rd(g, SGHW_REG_EVT_TAIL));
    }
}

static const uint32_t interesting_regs[] = {
    SGHW_REG_CMD_BASE_LO, SGHW_REG_CMD_BASE_HI, SGHW_REG_CMD_SIZE, SGHW_REG_CMD_TAIL,
    SGHW_REG_DOORBELL, SGHW_REG_EVT_BASE_LO, SGHW_REG_EVT_BASE_HI, SGHW_REG_EVT_SIZE,
    SGHW_REG_EVT_HEAD, SGHW_REG_INT_MASK, SGHW_REG_INT_ACK, SGHW_REG_SCRATCH,
    SGHW_REG_JOB_ABORT,
};

static uint32_t rnd_reg_value(Fuzz *f, FuzzGpu *g, uint32_t reg)
{
    switch (rnd(f, 6)) {
    case 0:
        return g_rand_int(f->rnd);
    case 1:
        return 1u << rnd(f, 13);            /* ring sizes, some valid */
    case 2:
        return rnd(f, 70);
    case 3: {
        uint64_t gpa = rnd_gpa(f, g, RING_MAX * 64);

        return (reg & 4) ? gpa >> 32 : (uint32_t)gpa;
    }
    default:
        return rnd(f, 17);
    }
}

/*
 * A ring base the device will DMA to (up to SGHW_RING_MAX_ENTRIES entries) must stay clear of
 * the RAM canary: the base the write would make, with the other half as the device has it.
 */
static uint32_t canary_safe_base(Fuzz *f, FuzzGpu *g, uint64_t reg, uint32_t val)
{
    uint64_t guard = SGHW_RING_MAX_ENTRIES * sizeof(struct sghw_cmd);
    uint64_t base;

    switch (reg) {
    case SGHW_REG_CMD_BASE_LO:
    case SGHW_REG_EVT_BASE_LO:
        base = ((uint64_t)rd(g, reg + 4) << 32) | val;
        break;
    case SGHW_REG_CMD_BASE_HI:
    case SGHW_REG_EVT_BASE_HI:
        base = ((uint64_t)val << 32) | rd(g, reg - 4);
        break;
    default:
        return val;
    }
    if (base < f->canary_gpa + CANARY_BYTES && base + guard > f->canary_gpa) {
        return (reg & 4) ? f->pool >> 32 : (uint32_t)f->pool;
    }
    return val;
}

static void step_mmio(Fuzz *f, FuzzGpu *g)
{
    static const unsigned sizes[] = { 1, 2, 4, 8 };
    unsigned size = chance(f, 70) ? 4 : sizes[rnd(f, 4)];
    uint64_t addr = chance(f, 70) ? interesting_regs[rnd(f, ARRAY_SIZE(interesting_regs))]
                                  : rnd(f, SGHW_MMIO_SIZE);
    uint64_t val;

    if (chance(f, 10)) {
        addr += 1 + rnd(f, 3);              /* unaligned */
    }
    if (addr + size > SGHW_MMIO_SIZE) {
        addr = SGHW_MMIO_SIZE - size;
    }
    if (chance(f, 40)) {
        switch (size) {
        case 1:
            qpci_io_readb(g->dev, g->mmio, addr);
            break;
        case 2:
            qpci_io_readw(g->dev, g->mmio, addr);
            break;
        case 4:
            qpci_io_readl(g->dev, g->mmio, addr);
            break;
        default:
            qpci_io_readq(g->dev, g->mmio, addr);
            break;
        }
        return;
    }
    val = rnd_reg_value(f, g, addr & ~3u);
    if (addr == SGHW_REG_RESET && !chance(f, 20)) {
        val = g_rand_int(f->rnd);           /* bad magic mostly; real resets elsewhere */
    }
    if (size == 4) {                        /* other sizes never reach the registers */
        val = canary_safe_base(f, g, addr, val);
    }
    switch (size) {
    case 1:
        qpci_io_writeb(g->dev, g->mmio, addr, val);
        break;
    case 2:
        qpci_io_writew(g->dev, g->mmio, addr, val);
        break;
    case 4:
        qpci_io_writel(g->dev, g->mmio, addr, val);
        break;
    default:
        qpci_io_writeq(g->dev, g->mmio, addr, val | ((uint64_t)g_rand_int(f->rnd) << 32));
        break;
    }
}

static void step_ringbase(Fuzz *f, FuzzGpu *g)
{
    uint64_t base = rnd_gpa(f, g, RING_MAX * 64);
    uint32_t size = chance(f, 80) ? 1u << (1 + rnd(f, 12)) : g_rand_int(f->rnd);
    bool evt = chance(f, 40);

    if (base < f->canary_gpa + CANARY_BYTES &&
        base + SGHW_RING_MAX_ENTRIES * sizeof(struct sghw_cmd) > f->canary_gpa) {
        base = f->pool;
    }

    /* idle the ring first (a busy ring ignores base writes) */
    wr(g, evt ? SGHW_REG_EVT_SIZE : SGHW_REG_CMD_SIZE, 0);
    wr(g, evt ? SGHW_REG_EVT_BASE_LO : SGHW_REG_CMD_BASE_LO, (uint32_t)base);
    wr(g, evt ? SGHW_REG_EVT_BASE_HI : SGHW_REG_CMD_BASE_HI, base >> 32);
    wr(g, evt ? SGHW_REG_EVT_SIZE : SGHW_REG_CMD_SIZE, size);
    if (!evt && rd(g, SGHW_REG_CMD_SIZE)) {
        size = rd(g, SGHW_REG_CMD_SIZE);
        wr(g, SGHW_REG_CMD_TAIL, rnd(f, size));
        wr(g, SGHW_REG_DOORBELL, 0);
        rd(g, SGHW_REG_STATUS);
    }
}

static void step_bar2(Fuzz *f, FuzzGpu *g)
{
    uint64_t off = rnd(f, 2 * g->vram_size - 8) & ~7ull;

    if (chance(f, 50)) {
        qpci_io_writeq(g->dev, g->vram, off, rnd64(f));
    } else {
        qpci_io_readq(g->dev, g->vram, off);
    }
}

static void step_qmp(Fuzz *f)
{
    QDict *resp = qtest_qmp(f->qts, "{'execute': 'x-sharegpu-move-bo', 'arguments': "
                            "{'id': %s, 'handle': %u, 'placement': %s}}",
                            chance(f, 50) ? "g0" : "g1", rnd_handle(f, NULL),
                            chance(f, 50) ? "system" : "device");

    g_assert(qdict_haskey(resp, "return") || qdict_haskey(resp, "error"));
    qobject_unref(resp);
    if (chance(f, 10)) {
        g_autofree char *out = qtest_hmp(f->qts, "info sharegpu");

        g_assert_nonnull(strstr(out, "sharegpu g0"));
    }
}

static void step_bus_master(Fuzz *f, FuzzGpu *g)
{
    uint16_t cmd = qpci_config_readw(g->dev, PCI_COMMAND);

    qpci_config_writew(g->dev, PCI_COMMAND, cmd & ~PCI_COMMAND_MASTER);
    wr(g, SGHW_REG_DOORBELL, 1);
    rd(g, SGHW_REG_STATUS);
    qpci_config_writew(g->dev, PCI_COMMAND, cmd | PCI_COMMAND_MASTER);
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);

    return v && *v ? g_ascii_strtoull(v, NULL, 0) : dflt;
}

static void canary_pattern(uint8_t *buf, size_t len, uint32_t salt)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)((i * 2654435761u) >> 13) ^ salt;
    }
}

/*
 * The canaries. Guest RAM: CANARY_BYTES below everything the fuzzer points the devices at
 * (a spacer keeps it above what a scatter list starting at address 0 can reach) and kept
 * out of every random address and ring base. VRAM: the whole VRAM of the third device,
 * whose BARs do not decode during the run, so no access can reach it legitimately.
 */
static void canaries_set(Fuzz *f)
{
    g_autofree uint8_t *buf = g_malloc(1 << 20);
    QPCIBar bar;
    uint64_t size;

    qmalloc(f->qs, 8 << 20);                    /* spacer */
    f->canary_gpa = qmalloc(f->qs, CANARY_BYTES);
    canary_pattern(buf, CANARY_BYTES, 0x5a);
    qtest_memwrite(f->qts, f->canary_gpa, buf, CANARY_BYTES);

    qpci_device_enable(f->canary_dev);
    bar = qpci_iomap(f->canary_dev, SGHW_BAR_VRAM, &size);
    g_assert_cmpuint(size, ==, 2 << 20);         /* 1 MiB VRAM + the import window */
    canary_pattern(buf, 1 << 20, 0xa5);
    qpci_memwrite(f->canary_dev, bar, 0, buf, 1 << 20);
    qpci_iounmap(f->canary_dev, bar);
    qpci_config_writew(f->canary_dev, PCI_COMMAND, 0);
}

static void canaries_check(Fuzz *f)
{
    g_autofree uint8_t *want = g_malloc(1 << 20);
    g_autofree uint8_t *got = g_malloc(1 << 20);
    QPCIBar bar;
    uint64_t size;

    canary_pattern(want, CANARY_BYTES, 0x5a);
    qtest_memread(f->qts, f->canary_gpa, got, CANARY_BYTES);
    g_assert_cmpmem(got, CANARY_BYTES, want, CANARY_BYTES);

    qpci_device_enable(f->canary_dev);
    bar = qpci_iomap(f->canary_dev, SGHW_BAR_VRAM, &size);
    canary_pattern(want, 1 << 20, 0xa5);
    qpci_memread(f->canary_dev, bar, 0, got, 1 << 20);
    g_assert_cmpmem(got, 1 << 20, want, 1 << 20);
    qpci_iounmap(f->canary_dev, bar);
}

/* The sum of a counter over the fuzzed devices of a query-sharegpu reply. */
static int64_t fuzzed_counter(QList *list, const char *name)
{
    int64_t sum = 0;

    for (QListEntry *e = qlist_first(list); e; e = qlist_next(e)) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));

        if (strcmp(qdict_get_str(d, "id"), "canary")) {
            sum += qdict_get_int(qdict_get_qdict(d, "counters"), name);
        }
    }
    return sum;
}

static void test_fuzz(void)
{
    Fuzz *f = g_new0(Fuzz, 1);
    uint64_t seed = env_u64("SHAREGPU_FUZZ_SEED", (uint64_t)g_get_real_time());
    uint64_t iters = env_u64("SHAREGPU_FUZZ_ITERS", 4000);
    gint64 t0 = g_get_monotonic_time();
    QDict *resp;
    QList *list;
    int i;

    g_test_message("sharegpu fuzz: seed %" PRIu64 " iterations %" PRIu64
                   " (SHAREGPU_FUZZ_SEED / SHAREGPU_FUZZ_ITERS)", seed, iters);
    fprintf(stderr, "# sharegpu fuzz: seed %" PRIu64 " iterations %" PRIu64 "\n", seed, iters);
    f->rnd = g_rand_new_with_seed((guint32)(seed ^ (seed >> 32)));
    f->ram_size = 128 * 1024 * 1024;
    f->qs = qtest_pc_boot("-nodefaults -m 128M "
                          "-device sharegpu,id=g0,vram-size=1M "
                          "-device sharegpu,id=g1,vram-size=1M,coherent=off "
                          "-device sharegpu,id=canary,vram-size=1M");
    f->qts = f->qs->qts;
    qpci_device_foreach(f->qs->pcibus, SGHW_PCI_VENDOR_ID, SGHW_PCI_DEVICE_ID, found_fn, f);
    g_assert_cmpint(f->found, ==, NDEV + 1);
    canaries_set(f);
    f->pool = qmalloc(f->qs, POOL_BYTES);
    for (i = 0; i < NDEV; i++) {
        FuzzGpu *g = &f->g[i];
        uint64_t size;

        qpci_device_enable(g->dev);
        if (i == 0) {
            qpci_msix_enable(g->dev);
        }
        g->mmio = qpci_iomap(g->dev, SGHW_BAR_MMIO, &size);
        g->vram = qpci_iomap(g->dev, SGHW_BAR_VRAM, &size);
        g->vram_size = size / 2;
        g->bar0_gpa = qpci_config_readl(g->dev, PCI_BASE_ADDRESS_0) & ~0xfull;
        g->bar2_gpa = (qpci_config_readl(g->dev, PCI_BASE_ADDRESS_2) & ~0xfull) |
                      ((uint64_t)qpci_config_readl(g->dev, PCI_BASE_ADDRESS_3) << 32);
        g->ring = qmalloc(f->qs, RING_MAX * sizeof(struct sghw_cmd));
        g->evring = qmalloc(f->qs, 16 * sizeof(struct sghw_event));
        sane_rings(f, g);
    }

    for (uint64_t it = 0; it < iters; it++) {
        FuzzGpu *g = &f->g[rnd(f, NDEV)];
        uint32_t what = rnd(f, 100);

        if (what < 45) {
            step_cmds(f, g);
            f->stats[ST_CMDS]++;
        } else if (what < 70) {
            step_mmio(f, g);
            f->stats[ST_MMIO]++;
        } else if (what < 78) {
            step_bar2(f, g);
            f->stats[ST_BAR2]++;
        } else if (what < 85) {
            step_ringbase(f, g);
            f->stats[ST_RINGBASE]++;
        } else if (what < 92) {
            step_qmp(f);
            f->stats[ST_QMP]++;
        } else if (what < 95) {
            wr(g, SGHW_REG_DOORBELL, 1);
            f->stats[ST_DOORBELL]++;
        } else if (what < 97) {
            step_bus_master(f, g);
            f->stats[ST_BM]++;
        } else {
            wr(g, SGHW_REG_RESET, SGHW_RESET_MAGIC);
            f->stats[ST_RESET]++;
            if (chance(f, 50)) {
                g->nhandles = 0;
            }
        }
    }
    fprintf(stderr, "# sharegpu fuzz: %" PRIu64 " iterations in %.1f s: cmd batches %"
            PRIu64 " mmio %" PRIu64 " bar2 %" PRIu64 " ring bases %" PRIu64 " qmp %"
            PRIu64 " doorbells %" PRIu64 " bus-master %" PRIu64 " resets %" PRIu64 "\n",
            iters, (g_get_monotonic_time() - t0) / 1e6, f->stats[ST_CMDS],
            f->stats[ST_MMIO], f->stats[ST_BAR2], f->stats[ST_RINGBASE], f->stats[ST_QMP],
            f->stats[ST_DOORBELL], f->stats[ST_BM], f->stats[ST_RESET]);

    /* still alive and responsive; and both devices still work from a clean reset */
    resp = qtest_qmp(f->qts, "{'execute': 'query-sharegpu'}");
    list = qdict_get_qlist(resp, "return");
    g_assert_nonnull(list);
    g_assert_cmpuint(qlist_size(list), ==, NDEV + 1);
    for (QListEntry *e = qlist_first(list); e; e = qlist_next(e)) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));
        QDict *k = qdict_get_qdict(d, "counters");

        fprintf(stderr, "# sharegpu fuzz: %s: commands %" PRId64 " (errors %" PRId64
                ") events %" PRId64 " (dropped %" PRId64 ") jobs %" PRId64 " bytes %" PRId64
                " moves %" PRId64 " evictions %" PRId64 " imports %" PRId64 " BOs %" PRId64
                "\n", qdict_get_str(d, "id"), qdict_get_int(k, "commands"),
                qdict_get_int(k, "command-errors"), qdict_get_int(k, "events"),
                qdict_get_int(k, "events-dropped"), qdict_get_int(k, "jobs"),
                qdict_get_int(k, "bytes-copied"), qdict_get_int(k, "moves"),
                qdict_get_int(k, "evictions"), qdict_get_int(k, "imports"),
                qdict_get_int(d, "bo-count"));
    }
    /*
     * Coverage floors (per 1000 iterations, a fifth to a quarter of the least seeds 1-5
     * reached at 5000 iterations: commands 8865, successful 6163 (62%), jobs 51, imports 5,
     * moves 17): the run got past validation into real work, or it proved nothing.
     */
    {
        int64_t k = MAX(iters / 1000, 1);
        int64_t cmds = fuzzed_counter(list, "commands");
        int64_t ok = cmds - fuzzed_counter(list, "command-errors");

        fprintf(stderr, "# sharegpu fuzz: floors per 1000 iterations: commands %" PRId64
                " successful %" PRId64 " jobs %" PRId64 " imports %" PRId64 " moves %" PRId64
                "\n", cmds / k, ok / k, fuzzed_counter(list, "jobs") / k,
                fuzzed_counter(list, "imports") / k,
                fuzzed_counter(list, "moves") / k);
        g_assert_cmpint(cmds, >=, FLOOR_COMMANDS * k);
        g_assert_cmpint(ok, >=, FLOOR_SUCCESSFUL * k);
        g_assert_cmpint(ok * 100, >=, cmds * FLOOR_SUCCESS_PERCENT);
        g_assert_cmpint(fuzzed_counter(list, "jobs"), >=, FLOOR_JOBS * k);
        g_assert_cmpint(fuzzed_counter(list, "imports"), >=, FLOOR_IMPORTS * k);
        g_assert_cmpint(fuzzed_counter(list, "moves"), >=, FLOOR_MOVES * k);
    }
    qobject_unref(resp);
    canaries_check(f);
    for (i = 0; i < NDEV; i++) {
        FuzzGpu *g = &f->g[i];
        struct sghw_cmd c = { .opcode = SGHW_OP_BO_CREATE, .len = 4096, .seqno = 77,
                                 .status = SGHW_ST_PENDING };
        uint16_t cmd = qpci_config_readw(g->dev, PCI_COMMAND);

        qpci_config_writew(g->dev, PCI_COMMAND, cmd | PCI_COMMAND_MASTER);
        wr(g, SGHW_REG_RESET, SGHW_RESET_MAGIC);
        sane_rings(f, g);
        qtest_memwrite(f->qts, g->ring, &c, sizeof(c));
        wr(g, SGHW_REG_CMD_TAIL, 1);
        wr(g, SGHW_REG_DOORBELL, 1);
        for (int k = 0; k < 10000 && rd(g, SGHW_REG_CMD_HEAD) != 1; k++) {
            g_usleep(100);
        }
        g_assert_cmpuint(rd(g, SGHW_REG_CMD_HEAD), ==, 1);
        qtest_memread(f->qts, g->ring, &c, sizeof(c));
        g_assert_cmpuint(c.status, ==, SGHW_ST_OK);
        g_assert_cmpuint(c.out_handle, ==, 1);
    }

    for (i = 0; i < NDEV; i++) {
        g_free(f->g[i].dev);
    }
    g_free(f->canary_dev);
    g_rand_free(f->rnd);
    qtest_shutdown(f->qs); /* checks QEMU's exit status (sanitizer reports fail it) */
    g_free(f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/sharegpu/fuzz/random-mmio-rings-commands", test_fuzz);
    return g_test_run();
}
