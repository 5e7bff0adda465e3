/*
 * QTest for the sharegpu device (docs/hardware.md)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qapi/error.h"
#include "libqos/libqos-pc.h"
#include "libqos/pci.h"
#include "standard-headers/linux/pci_regs.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"
#include "qobject/qstring.h"
#include "qemu/bswap.h"
#include "sharegpu_hw.h"

#define RING_ENTRIES 16
#define BO_SIZE (64 * 1024)

typedef struct Gpu {
    QPCIDevice *dev;
    QPCIBar mmio;
    QPCIBar vram;
    uint64_t vram_size;
    uint64_t ring;
    uint32_t ring_entries;
    uint64_t evring;
    uint32_t evhead;
    uint64_t seqno;
} Gpu;

typedef struct Ctx {
    QOSState *qs;
    Gpu g[2];
    int found;
} Ctx;

static void found_fn(QPCIDevice *dev, int devfn, void *data)
{
    Ctx *c = data;

    g_assert_cmpint(c->found, <, 2);
    c->g[c->found++].dev = dev;
}

static uint32_t rd(Gpu *g, uint32_t reg)
{
    return qpci_io_readl(g->dev, g->mmio, reg);
}

static void wr(Gpu *g, uint32_t reg, uint32_t val)
{
    qpci_io_writel(g->dev, g->mmio, reg, val);
}

static void gpu_rings(Ctx *c, Gpu *g, uint32_t entries)
{
    g->ring_entries = entries;
    g->ring = qmalloc(c->qs, entries * sizeof(struct sghw_cmd));
    g->evring = qmalloc(c->qs, RING_ENTRIES * sizeof(struct sghw_event));
    g->evhead = 0;
    wr(g, SGHW_REG_CMD_BASE_LO, (uint32_t)g->ring);
    wr(g, SGHW_REG_CMD_BASE_HI, g->ring >> 32);
    wr(g, SGHW_REG_CMD_SIZE, entries);
    wr(g, SGHW_REG_EVT_BASE_LO, (uint32_t)g->evring);
    wr(g, SGHW_REG_EVT_BASE_HI, g->evring >> 32);
    wr(g, SGHW_REG_EVT_SIZE, RING_ENTRIES);
    g_assert_cmphex(rd(g, SGHW_REG_STATUS) & 7, ==,
                    SGHW_STATUS_READY | SGHW_STATUS_CMD_ENABLED | SGHW_STATUS_EVT_ENABLED);
}

static void gpu_init(Ctx *c, Gpu *g)
{
    uint64_t size;

    qpci_device_enable(g->dev);
    g->mmio = qpci_iomap(g->dev, SGHW_BAR_MMIO, &size);
    g_assert_cmpuint(size, ==, SGHW_MMIO_SIZE);
    g->vram = qpci_iomap(g->dev, SGHW_BAR_VRAM, &size);
    g_assert_cmphex(rd(g, SGHW_REG_VERSION), ==, SGHW_VERSION);
    g->vram_size = rd(g, SGHW_REG_VRAM_SIZE_LO) | ((uint64_t)rd(g, SGHW_REG_VRAM_SIZE_HI) << 32);
    g_assert_cmpuint(size, ==, 2 * g->vram_size);
    gpu_rings(c, g, RING_ENTRIES);
}

/* Submits one command, waits for it, returns the completed entry. */
static struct sghw_cmd submit(Ctx *c, Gpu *g, struct sghw_cmd cmd)
{
    QTestState *qts = c->qs->qts;
    uint32_t tail = rd(g, SGHW_REG_CMD_TAIL);
    uint64_t addr = g->ring + tail * sizeof(cmd);
    int i;

    cmd.seqno = ++g->seqno;
    cmd.status = SGHW_ST_PENDING;
    qtest_memwrite(qts, addr, &cmd, sizeof(cmd));
    wr(g, SGHW_REG_CMD_TAIL, (tail + 1) % g->ring_entries);
    wr(g, SGHW_REG_DOORBELL, 1);
    for (i = 0; i < 100000 && rd(g, SGHW_REG_CMD_HEAD) != (tail + 1) % g->ring_entries; i++) {
        g_usleep(10);
    }
    g_assert_cmpuint(rd(g, SGHW_REG_CMD_HEAD), ==, (tail + 1) % g->ring_entries);
    qtest_memread(qts, addr, &cmd, sizeof(cmd));
    g_assert_cmpuint(rd(g, SGHW_REG_LAST_SEQNO_LO), ==, (uint32_t)g->seqno);
    return cmd;
}

static bool pop_event(Ctx *c, Gpu *g, struct sghw_event *ev)
{
    if (rd(g, SGHW_REG_EVT_TAIL) == g->evhead) {
        return false;
    }
    qtest_memread(c->qs->qts, g->evring + g->evhead * sizeof(*ev), ev, sizeof(*ev));
    g->evhead = (g->evhead + 1) % RING_ENTRIES;
    wr(g, SGHW_REG_EVT_HEAD, g->evhead);
    return true;
}

static void drain_events(Ctx *c, Gpu *g)
{
    struct sghw_event ev;

    while (pop_event(c, g, &ev)) {
    }
}

/* g0 (coherent) and g1 (non-coherent), 4 MiB VRAM each, plus the given properties. */
static Ctx *setup_devices(const char *g0_props, const char *g1_props)
{
    Ctx *c = g_new0(Ctx, 1);

    c->qs = qtest_pc_boot("-nodefaults -device sharegpu,id=g0,vram-size=4M%s "
                          "-device sharegpu,id=g1,vram-size=4M,coherent=off%s",
                          g0_props, g1_props);
    qpci_device_foreach(c->qs->pcibus, SGHW_PCI_VENDOR_ID, SGHW_PCI_DEVICE_ID, found_fn, c);
    g_assert_cmpint(c->found, ==, 2);
    gpu_init(c, &c->g[0]);
    gpu_init(c, &c->g[1]);
    return c;
}

/* `props` is added to both devices. */
static Ctx *setup_with(const char *props)
{
    return setup_devices(props, props);
}

static Ctx *setup(void)
{
    return setup_with("");
}

static void teardown(Ctx *c)
{
    g_free(c->g[0].dev);
    g_free(c->g[1].dev);
    qtest_shutdown(c->qs);
    g_free(c);
}

/* CRC-32C (Castagnoli), byte-table driven: the long-job tests check hundreds of MiB. */
static uint32_t crc32c_ref(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    uint32_t crc = ~0u;

    if (!table[1]) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t v = i;

            for (int k = 0; k < 8; k++) {
                v = (v >> 1) ^ (0x82f63b78u & -(v & 1));
            }
            table[i] = v;
        }
    }
    while (n--) {
        crc = (crc >> 8) ^ table[(crc ^ *p++) & 0xff];
    }
    return ~crc;
}

static uint32_t create_bo_sz(Ctx *c, Gpu *g, uint64_t size, uint32_t placement,
                             uint64_t *vram_off)
{
    struct sghw_cmd r = submit(c, g, (struct sghw_cmd) {
        .opcode = SGHW_OP_BO_CREATE, .len = size, .arg = placement });

    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.out_handle, !=, 0);
    if (vram_off) {
        *vram_off = r.result;
    }
    return r.out_handle;
}

static uint32_t create_bo(Ctx *c, Gpu *g, uint32_t placement, uint64_t *vram_off)
{
    return create_bo_sz(c, g, BO_SIZE, placement, vram_off);
}

/* Exports `h` on `exp` and imports it on `imp`; returns the import handle. */
static uint32_t share_bo(Ctx *c, Gpu *exp, uint32_t h, Gpu *imp)
{
    struct sghw_cmd e, r;

    e = submit(c, exp, (struct sghw_cmd) { .opcode = SGHW_OP_EXPORT, .handle = h });
    g_assert_cmpuint(e.status, ==, SGHW_ST_OK);
    r = (struct sghw_cmd) { .opcode = SGHW_OP_IMPORT };
    memcpy(r.uuid, e.uuid, sizeof(r.uuid));
    r = submit(c, imp, r);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    return r.out_handle;
}

static void test_identity(void)
{
    Ctx *c = setup();

    g_assert_cmpuint(qpci_config_readw(c->g[0].dev, PCI_CLASS_DEVICE), ==, SGHW_PCI_CLASS);
    g_assert_cmpuint(qpci_config_readb(c->g[0].dev, PCI_REVISION_ID), ==, SGHW_PCI_REVISION);
    g_assert_true(rd(&c->g[0], SGHW_REG_FEATURES) & SGHW_FEAT_COHERENT);
    g_assert_false(rd(&c->g[1], SGHW_REG_FEATURES) & SGHW_FEAT_COHERENT);
    wr(&c->g[0], SGHW_REG_SCRATCH, 0xdeadbeef);
    g_assert_cmphex(rd(&c->g[0], SGHW_REG_SCRATCH), ==, 0xdeadbeef);
    teardown(c);
}

static void test_fill_checksum_transfer(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0];
    uint64_t off;
    uint32_t h = create_bo(c, g, SGHW_PLACEMENT_DEVICE, &off);
    g_autofree uint8_t *buf = g_malloc(BO_SIZE);
    g_autofree uint8_t *expect = g_malloc(BO_SIZE);
    struct sghw_mem_entry ents[2];
    uint64_t sg, pages;
    struct sghw_cmd r;

    for (int i = 0; i < BO_SIZE; i += 4) {
        memcpy(expect + i, &(uint32_t){ 0xa5a5f00d }, 4);
    }
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = h,
                                            .len = BO_SIZE, .arg = 0xa5a5f00d });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = h,
                                            .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(r.result, ==, crc32c_ref(expect, BO_SIZE));

    /* the CPU sees it through BAR2 */
    qpci_memread(g->dev, g->vram, off, buf, BO_SIZE);
    g_assert(memcmp(buf, expect, BO_SIZE) == 0);

    /* system pages: two scatter entries, transfer from the device */
    pages = qmalloc(c->qs, BO_SIZE);
    sg = qmalloc(c->qs, sizeof(ents));
    ents[0] = (struct sghw_mem_entry) { .addr = pages, .length = BO_SIZE / 2 };
    ents[1] = (struct sghw_mem_entry) { .addr = pages + BO_SIZE / 2, .length = BO_SIZE / 2 };
    qtest_memwrite(c->qs->qts, sg, ents, sizeof(ents));
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_ATTACH_BACKING, .handle = h,
                                            .off0 = sg, .arg = 2 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, BO_SIZE);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_FROM_DEVICE,
                                            .handle = h, .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    qtest_memread(c->qs->qts, pages, buf, BO_SIZE);
    g_assert(memcmp(buf, expect, BO_SIZE) == 0);

    /* and back: guest writes its pages, transfers to the device at an offset */
    memset(buf, 0x5a, 4096);
    qtest_memwrite(c->qs->qts, pages + BO_SIZE / 2 - 2048, buf, 4096);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_TO_DEVICE, .handle = h,
                                            .off0 = 8192, .off1 = BO_SIZE / 2 - 2048,
                                            .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    qpci_memread(g->dev, g->vram, off + 8192, buf, 4096);
    for (int i = 0; i < 4096; i++) {
        g_assert_cmpuint(buf[i], ==, 0x5a);
    }
    teardown(c);
}

static void test_errors(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0];
    uint32_t h = create_bo(c, g, SGHW_PLACEMENT_SYSTEM, NULL);
    struct sghw_cmd r;
    struct sghw_event ev;

    drain_events(c, g);
    wr(g, SGHW_REG_INT_MASK, SGHW_INT_ERROR);
    r = submit(c, g, (struct sghw_cmd) { .opcode = 0x7777 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_OPCODE);
    g_assert_cmpuint(rd(g, SGHW_REG_ERROR_CODE), ==, SGHW_ST_BAD_OPCODE);
    g_assert_true(rd(g, SGHW_REG_INT_STATUS) & SGHW_INT_ERROR);
    wr(g, SGHW_REG_INT_ACK, SGHW_INT_ERROR);
    g_assert_false(rd(g, SGHW_REG_INT_STATUS) & SGHW_INT_ERROR);
    g_assert_true(pop_event(c, g, &ev));
    g_assert_cmpuint(ev.type, ==, SGHW_EVT_ERROR);
    g_assert_cmpuint(ev.placement, ==, SGHW_ST_BAD_OPCODE);

    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = 4242,
                                            .len = 4 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = h,
                                            .off0 = BO_SIZE - 4, .len = 8 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OUT_OF_RANGE);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_TO_DEVICE, .handle = h,
                                            .len = 8 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_BACKING);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_CREATE, .len = 1ull << 40 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_TOO_BIG);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_ATTACH_BACKING, .handle = h,
                                            .off0 = 1ull << 50, .arg = 1 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_DMA_ERROR);
    /* bad register values are ignored, the device keeps working */
    wr(g, SGHW_REG_CMD_TAIL, 999);
    wr(g, SGHW_REG_RESET, 1);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_NOP });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(rd(g, SGHW_REG_ERROR_COUNT), ==, 6);

    /* reset: rings off, handles gone */
    wr(g, SGHW_REG_RESET, SGHW_RESET_MAGIC);
    g_assert_cmpuint(rd(g, SGHW_REG_CMD_SIZE), ==, 0);
    g_assert_cmpuint(rd(g, SGHW_REG_ERROR_COUNT), ==, 0);
    gpu_init(c, g);
    g->evhead = 0;
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_DESTROY, .handle = h });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
    teardown(c);
}

static uint64_t dev_counter(Ctx *c, const char *id, const char *name);

static void test_share_and_move(void)
{
    Ctx *c = setup();
    Gpu *g0 = &c->g[0], *g1 = &c->g[1];
    uint64_t off;
    uint32_t h = create_bo(c, g0, SGHW_PLACEMENT_DEVICE, &off);
    struct sghw_cmd r, e;
    struct sghw_event ev;
    uint32_t imp, crc0;
    uint64_t win;
    QDict *resp;
    QList *list;
    bool moved = false, invalidated = false;

    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = h,
                                             .len = BO_SIZE, .arg = 0x01020304 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    crc0 = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = h,
                                                .len = BO_SIZE }).result;

    e = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_EXPORT, .handle = h });
    g_assert_cmpuint(e.status, ==, SGHW_ST_OK);
    r = (struct sghw_cmd) { .opcode = SGHW_OP_IMPORT };
    memcpy(r.uuid, e.uuid, sizeof(r.uuid));
    r = submit(c, g1, r);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    imp = r.out_handle;

    /* the importer's copy engine reads the exporter's storage */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = imp,
                                             .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(r.result, ==, crc0);

    /* zero copy: map into g1's import window, write through g0's VRAM, read through g1 */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp,
                                             .off0 = 0x10000 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    win = r.result;
    g_assert_cmpuint(win, ==, g1->vram_size + 0x10000);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win), ==, 0x01020304);
    qpci_io_writel(g0->dev, g0->vram, off + 64, 0xcafef00d);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win + 64), ==, 0xcafef00d);

    /* unknown uuid */
    r = (struct sghw_cmd) { .opcode = SGHW_OP_IMPORT };
    memset(r.uuid, 0x42, sizeof(r.uuid));
    g_assert_cmpuint(submit(c, g1, r).status, ==, SGHW_ST_NOT_FOUND);

    /* monitor-forced eviction: exporter gets BO_MOVED, importer BO_INVALIDATED + unmap */
    drain_events(c, g0);
    drain_events(c, g1);
    resp = qtest_qmp(c->qs->qts, "{'execute': 'x-sharegpu-move-bo', 'arguments': "
                     "{'id': 'g0', 'handle': %u, 'placement': 'system'}}", h);
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    /*
     * 1.1: the window mapping is gone when the monitor command returns (UNMAP_IMPORT's result
     * 0 below; 1.5: reading the window now would fault it back in, test_window_fault_after_move)
     */
    for (int i = 0; i < 1000 && !(moved && invalidated); i++) {
        while (pop_event(c, g0, &ev)) {
            moved |= ev.type == SGHW_EVT_BO_MOVED && ev.handle == h &&
                     ev.placement == SGHW_PLACEMENT_SYSTEM;
        }
        while (pop_event(c, g1, &ev)) {
            invalidated |= ev.type == SGHW_EVT_BO_INVALIDATED && ev.handle == imp;
        }
        g_usleep(100);
    }
    g_assert_true(moved);
    g_assert_true(invalidated);
    /* 1.1: UNMAP_IMPORT after the device dropped the mapping is OK (result 0) */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_UNMAP_IMPORT, .handle = imp });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, 0);
    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_UNMAP_IMPORT, .handle = h });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
    /* map again, unmap: result 1 */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp,
                                             .off0 = 0x10000 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win + 64), ==, 0xcafef00d);
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_UNMAP_IMPORT, .handle = imp });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, 1);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win), ==, 0xffffffff);

    /* 1.1: a BO_MOVE command on the exporter: when its completion is visible, the
     * importer's window is already unmapped and BO_INVALIDATED is in the importer's ring */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp,
                                             .off0 = 0x10000 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    drain_events(c, g0);
    drain_events(c, g1);
    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = h,
                                             .arg = SGHW_PLACEMENT_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_true(pop_event(c, g1, &ev));
    g_assert_cmpuint(ev.type, ==, SGHW_EVT_BO_INVALIDATED);
    g_assert_cmpuint(ev.handle, ==, imp);
    g_assert_true(pop_event(c, g0, &ev));
    g_assert_cmpuint(ev.type, ==, SGHW_EVT_BO_MOVED);
    g_assert_cmpuint(ev.placement, ==, SGHW_PLACEMENT_DEVICE);
    g_assert_cmphex(ev.vram_offset, ==, r.result);
    /* the mapping was gone when the command completed (the range is still the import's) */
    g_assert_cmpuint(dev_counter(c, "g1", "window-faults"), ==, 0);
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_UNMAP_IMPORT, .handle = imp });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, 0);

    /* import handles: CACHE_* / CPU_ACCESS_* accepted, TRANSFER reads the exporter's bytes */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_CACHE_FLUSH, .handle = imp,
                                             .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_CACHE_INVALIDATE,
                                             .handle = imp, .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_CPU_ACCESS_BEGIN,
                                             .handle = imp, .arg = SGHW_DIR_FROM_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_CPU_ACCESS_END,
                                             .handle = imp, .arg = SGHW_DIR_FROM_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    {
        uint64_t pages = qmalloc(c->qs, BO_SIZE), sg = qmalloc(c->qs, 16);
        struct sghw_mem_entry ent = { .addr = pages, .length = BO_SIZE };
        uint32_t w;

        qtest_memwrite(c->qs->qts, sg, &ent, sizeof(ent));
        r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_ATTACH_BACKING,
                                                 .handle = imp, .off0 = sg, .arg = 1 });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_FROM_DEVICE,
                                                 .handle = imp, .len = BO_SIZE });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        qtest_memread(c->qs->qts, pages + 64, &w, 4);
        g_assert_cmphex(w, ==, 0xcafef00d);
        qtest_memread(c->qs->qts, pages, &w, 4);
        g_assert_cmphex(w, ==, 0x01020304);
    }
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = imp,
                                             .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);

    resp = qtest_qmp(c->qs->qts, "{'execute': 'query-sharegpu'}");
    list = qdict_get_qlist(resp, "return");
    g_assert_cmpuint(qlist_size(list), ==, 2);
    qobject_unref(resp);
    teardown(c);
}


/* ------------------------------------------------------------------ 1.1 / robustness tests */

static QDict *query_dev(Ctx *c, const char *id)
{
    QDict *resp = qtest_qmp(c->qs->qts, "{'execute': 'query-sharegpu', "
                            "'arguments': {'id': %s}}", id);
    QList *list = qdict_get_qlist(resp, "return");
    QDict *d;

    g_assert_nonnull(list);
    g_assert_cmpuint(qlist_size(list), ==, 1);
    d = qobject_to(QDict, qlist_peek(list));
    qobject_ref(d);
    qobject_unref(resp);
    return d;
}

static uint64_t dev_counter(Ctx *c, const char *id, const char *name)
{
    QDict *d = query_dev(c, id);
    uint64_t v = qdict_get_int(qdict_get_qdict(d, "counters"), name);

    qobject_unref(d);
    return v;
}

static void qmp_move(Ctx *c, const char *id, uint32_t handle, const char *placement)
{
    QDict *resp = qtest_qmp(c->qs->qts, "{'execute': 'x-sharegpu-move-bo', 'arguments': "
                            "{'id': %s, 'handle': %u, 'placement': %s}}",
                            id, handle, placement);

    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
}

static uint32_t checksum(Ctx *c, Gpu *g, uint32_t h, uint64_t len)
{
    struct sghw_cmd r = submit(c, g, (struct sghw_cmd) {
        .opcode = SGHW_OP_CHECKSUM, .handle = h, .len = len });

    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    return r.result;
}

static void query_bo(Ctx *c, Gpu *g, uint32_t h, struct sghw_bo_info *info,
                     uint32_t expect_status)
{
    uint64_t addr = qmalloc(c->qs, sizeof(*info));
    struct sghw_cmd r = submit(c, g, (struct sghw_cmd) {
        .opcode = SGHW_OP_BO_QUERY, .handle = h, .off0 = addr });

    g_assert_cmpuint(r.status, ==, expect_status);
    if (info) {
        qtest_memread(c->qs->qts, addr, info, sizeof(*info));
    }
}

/* Attaches `len` bytes of fresh guest pages as h's backing; returns their gpa. */
static uint64_t attach_pages(Ctx *c, Gpu *g, uint32_t h, uint64_t len)
{
    uint64_t pages = qmalloc(c->qs, len);
    uint64_t sg = qmalloc(c->qs, sizeof(struct sghw_mem_entry));
    struct sghw_mem_entry ent = { .addr = pages, .length = len };
    struct sghw_cmd r;

    qtest_memwrite(c->qs->qts, sg, &ent, sizeof(ent));
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_ATTACH_BACKING, .handle = h,
                                            .off0 = sg, .arg = 1 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    return pages;
}

/* Reads the whole BO back through TRANSFER_FROM_DEVICE into its backing and compares. */
static void assert_bo_bytes(Ctx *c, Gpu *g, uint32_t h, uint64_t pages,
                            const uint8_t *expect, uint64_t len)
{
    g_autofree uint8_t *buf = g_malloc0(len);
    struct sghw_cmd r;

    qtest_memwrite(c->qs->qts, pages, buf, len); /* clear */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_FROM_DEVICE,
                                            .handle = h, .len = len });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    qtest_memread(c->qs->qts, pages, buf, len);
    g_assert(memcmp(buf, expect, len) == 0);
}

/* The event is already in the ring (no waiting): 1.1 delivers it before completion. */
static void expect_moved(Ctx *c, Gpu *g, uint32_t h, uint32_t placement, uint64_t *gen)
{
    struct sghw_event ev;
    bool found = false;

    while (pop_event(c, g, &ev)) {
        g_assert_cmpuint(ev.type, ==, SGHW_EVT_BO_MOVED);
        if (ev.handle == h) {
            g_assert_cmpuint(ev.placement, ==, placement);
            if (placement == SGHW_PLACEMENT_SYSTEM) {
                g_assert_cmphex(ev.vram_offset, ==, SGHW_INVALID_OFFSET);
            } else {
                g_assert_cmpuint(ev.vram_offset % SGHW_VRAM_ALIGN, ==, 0);
            }
            if (gen) {
                g_assert_cmpuint(ev.generation, >, *gen);
                *gen = ev.generation;
            }
            found = true;
        }
    }
    g_assert_true(found);
}

#define EV_BO (256 * 1024)

static void test_evict_preserves(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0], *g1 = &c->g[1];
    g_autofree uint8_t *data = g_malloc(EV_BO);
    g_autofree uint8_t *buf = g_malloc(EV_BO);
    struct sghw_bo_info info;
    struct sghw_cmd r;
    struct sghw_event ev;
    uint64_t off, pages, gen, evictions;
    uint32_t h, crc0, big[8], bigcrc[8], nbig = 0, extra;
    GRand *rnd = g_rand_new_with_seed(1234);

    for (int i = 0; i < EV_BO; i++) {
        data[i] = g_rand_int(rnd);
    }
    g_rand_free(rnd);
    h = create_bo_sz(c, g, EV_BO, SGHW_PLACEMENT_DEVICE, &off);
    g_assert_cmpuint(off % SGHW_VRAM_ALIGN, ==, 0);
    pages = attach_pages(c, g, h, EV_BO);
    qtest_memwrite(c->qs->qts, pages, data, EV_BO);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_TO_DEVICE,
                                            .handle = h, .len = EV_BO });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    crc0 = checksum(c, g, h, EV_BO);
    g_assert_cmphex(crc0, ==, crc32c_ref(data, EV_BO));
    query_bo(c, g, h, &info, SGHW_ST_OK);
    gen = info.generation;
    drain_events(c, g);

    /* 1. monitor-forced eviction */
    qmp_move(c, "g0", h, "system");
    expect_moved(c, g, h, SGHW_PLACEMENT_SYSTEM, &gen);
    g_assert_cmphex(checksum(c, g, h, EV_BO), ==, crc0);
    assert_bo_bytes(c, g, h, pages, data, EV_BO);
    query_bo(c, g, h, &info, SGHW_ST_OK);
    g_assert_cmpuint(info.placement, ==, SGHW_PLACEMENT_SYSTEM);
    g_assert_cmphex(info.vram_offset, ==, SGHW_INVALID_OFFSET);

    /* 2. back to VRAM with BO_MOVE; the event is queued before the completion */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = h,
                                            .arg = SGHW_PLACEMENT_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    off = r.result;
    g_assert_cmpuint(off % SGHW_VRAM_ALIGN, ==, 0);
    expect_moved(c, g, h, SGHW_PLACEMENT_DEVICE, &gen);
    qpci_memread(g->dev, g->vram, off, buf, EV_BO);
    g_assert(memcmp(buf, data, EV_BO) == 0);

    /* move to the current placement: no-op, no event */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = h,
                                            .arg = SGHW_PLACEMENT_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(r.result, ==, off);
    g_assert_false(pop_event(c, g, &ev));

    /* 3. BO_EVICT command */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_EVICT, .handle = h });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    expect_moved(c, g, h, SGHW_PLACEMENT_SYSTEM, &gen);
    g_assert_cmphex(checksum(c, g, h, EV_BO), ==, crc0);
    assert_bo_bytes(c, g, h, pages, data, EV_BO);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_EVICT, .handle = h });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_false(pop_event(c, g, &ev));

    /* NO_EVICT only on BO_CREATE / BO_MOVE */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_EVICT, .handle = h,
                                            .flags = SGHW_CMD_F_NO_EVICT });
    g_assert_cmpuint(r.status, ==, SGHW_ST_INVALID);
    drain_events(c, g); /* the ERROR event */

    /* 4. VRAM pressure during BO_CREATE: h back in VRAM, then fill VRAM with 1 MiB BOs */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = h,
                                            .arg = SGHW_PLACEMENT_DEVICE,
                                            .flags = SGHW_CMD_F_NO_EVICT });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    expect_moved(c, g, h, SGHW_PLACEMENT_DEVICE, &gen);
    for (;;) {
        r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_CREATE, .len = 1 << 20,
                                                .arg = SGHW_PLACEMENT_DEVICE,
                                                .flags = SGHW_CMD_F_NO_EVICT });
        if (r.status == SGHW_ST_NO_SPACE) {
            break;
        }
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        g_assert_cmpuint(nbig, <, ARRAY_SIZE(big));
        big[nbig] = r.out_handle;
        r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL,
                                                .handle = big[nbig], .len = 1 << 20,
                                                .arg = 0x11111111 * (nbig + 1) });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        bigcrc[nbig] = checksum(c, g, big[nbig], 1 << 20);
        nbig++;
    }
    g_assert_cmpuint(nbig, ==, 3); /* 4 MiB VRAM, 256 KiB used by h */
    /* fill the rest with 256 KiB BOs (NO_EVICT) until NO_SPACE */
    for (;;) {
        r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_CREATE, .len = EV_BO,
                                                .arg = SGHW_PLACEMENT_DEVICE,
                                                .flags = SGHW_CMD_F_NO_EVICT });
        if (r.status == SGHW_ST_NO_SPACE) {
            break;
        }
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    }
    drain_events(c, g); /* ERROR events of the NO_SPACE completions */
    evictions = dev_counter(c, "g0", "evictions");
    g_assert_false(pop_event(c, g, &ev));

    /* an older BO is evicted to make room; every content survives */
    extra = create_bo_sz(c, g, 1 << 20, SGHW_PLACEMENT_DEVICE, NULL);
    g_assert_cmpuint(dev_counter(c, "g0", "evictions"), >, evictions);
    expect_moved(c, g, h, SGHW_PLACEMENT_SYSTEM, &gen); /* h is the least recently used */
    g_assert_cmphex(checksum(c, g, h, EV_BO), ==, crc0);
    assert_bo_bytes(c, g, h, pages, data, EV_BO);
    for (uint32_t i = 0; i < nbig; i++) {
        g_assert_cmphex(checksum(c, g, big[i], 1 << 20), ==, bigcrc[i]);
    }
    query_bo(c, g, extra, &info, SGHW_ST_OK);
    g_assert_cmpuint(info.placement, ==, SGHW_PLACEMENT_DEVICE);

    /* VRAM is full again: NO_EVICT move of h fails, nothing moves */
    evictions = dev_counter(c, "g0", "evictions");
    drain_events(c, g);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = h,
                                            .arg = SGHW_PLACEMENT_DEVICE,
                                            .flags = SGHW_CMD_F_NO_EVICT });
    if (r.status == SGHW_ST_NO_SPACE) {
        g_assert_cmpuint(dev_counter(c, "g0", "evictions"), ==, evictions);
        g_assert_true(pop_event(c, g, &ev));
        g_assert_cmpuint(ev.type, ==, SGHW_EVT_ERROR);
        g_assert_false(pop_event(c, g, &ev));
    } else {
        /* the victim left a hole big enough: then it simply fits */
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        g_assert_cmpuint(dev_counter(c, "g0", "evictions"), ==, evictions);
    }
    query_bo(c, g, h, &info, SGHW_ST_OK);
    for (uint32_t i = 0; i < nbig; i++) {
        g_assert_cmphex(checksum(c, g, big[i], 1 << 20), ==, bigcrc[i]);
    }

    /* non-coherent device: dirty cache lines are written back by the eviction */
    {
        uint32_t h1 = create_bo(c, g1, SGHW_PLACEMENT_DEVICE, NULL);
        uint64_t p1 = attach_pages(c, g1, h1, BO_SIZE);
        g_autofree uint8_t *pat = g_malloc(BO_SIZE);
        uint32_t crc1;

        for (int i = 0; i < BO_SIZE; i += 4) {
            memcpy(pat + i, &(uint32_t){ 0x5eed5eed }, 4);
        }
        drain_events(c, g1);
        r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = h1,
                                                 .len = BO_SIZE, .arg = 0x5eed5eed });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        crc1 = checksum(c, g1, h1, BO_SIZE);
        g_assert_cmphex(crc1, ==, crc32c_ref(pat, BO_SIZE));
        qmp_move(c, "g1", h1, "system");
        expect_moved(c, g1, h1, SGHW_PLACEMENT_SYSTEM, NULL);
        g_assert_cmphex(checksum(c, g1, h1, BO_SIZE), ==, crc1);
        assert_bo_bytes(c, g1, h1, p1, pat, BO_SIZE);
    }
    teardown(c);
}

#define RESET_RING 4096
#define RESET_BO (1 << 20)

static void reset_mid_job(Ctx *c, Gpu *g, const char *id, Gpu *other)
{
    QTestState *qts = c->qs->qts;
    g_autofree struct sghw_cmd *ring = g_new0(struct sghw_cmd, RESET_RING);
    g_autofree uint8_t *expect = g_malloc(RESET_BO);
    g_autofree uint8_t *buf = g_malloc(RESET_BO);
    uint32_t a, b, imp = 0, done, last_fill = UINT32_MAX, st, head;
    uint64_t win = 0, pages;
    struct sghw_cmd r;
    struct sghw_bo_info info;
    QDict *d;
    int i;

    gpu_rings(c, g, RESET_RING);
    a = create_bo_sz(c, g, RESET_BO, SGHW_PLACEMENT_DEVICE, NULL);
    b = create_bo_sz(c, g, RESET_BO, SGHW_PLACEMENT_DEVICE, NULL);
    if (other) {
        /* the other device imports a and maps it: it must survive the reset */
        imp = share_bo(c, g, a, other);
        r = submit(c, other, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                    .handle = imp, .off0 = 0 });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        win = r.result;
    }

    /* a long ring of big jobs, starting after the entries used so far */
    head = rd(g, SGHW_REG_CMD_HEAD);
    for (i = 0; i < RESET_RING - 1; i++) {
        uint32_t idx = (head + i) % RESET_RING;
        struct sghw_cmd *cmd = &ring[idx];

        switch (i % 3) {
        case 0:
            *cmd = (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a,
                                          .len = RESET_BO, .arg = 0x1000 + i };
            break;
        case 1:
            *cmd = (struct sghw_cmd) { .opcode = SGHW_OP_COPY, .handle = b,
                                          .handle2 = a, .len = RESET_BO };
            break;
        default:
            *cmd = (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = b,
                                          .len = RESET_BO };
            break;
        }
        cmd->seqno = 1000 + i;
        cmd->status = SGHW_ST_PENDING;
    }
    qtest_memwrite(qts, g->ring, ring, RESET_RING * sizeof(*ring));
    wr(g, SGHW_REG_CMD_TAIL, (head + RESET_RING - 1) % RESET_RING);
    wr(g, SGHW_REG_DOORBELL, 1);
    wr(g, SGHW_REG_RESET, SGHW_RESET_MAGIC);

    /* documented reset state */
    g_assert_cmphex(rd(g, SGHW_REG_VERSION), ==, SGHW_VERSION);
    g_assert_cmpuint(rd(g, SGHW_REG_STATUS), ==, SGHW_STATUS_READY);
    for (uint32_t reg = SGHW_REG_CMD_BASE_LO; reg <= SGHW_REG_LAST_SEQNO_HI; reg += 4) {
        g_assert_cmphex(rd(g, reg), ==, 0);
    }
    for (uint32_t reg = SGHW_REG_EVT_BASE_LO; reg <= SGHW_REG_EVT_DROPPED; reg += 4) {
        g_assert_cmphex(rd(g, reg), ==, 0);
    }
    g_assert_cmphex(rd(g, SGHW_REG_INT_STATUS), ==, 0);
    g_assert_cmphex(rd(g, SGHW_REG_INT_MASK), ==, 0);
    g_assert_cmphex(rd(g, SGHW_REG_ERROR_CODE), ==, 0);
    g_assert_cmphex(rd(g, SGHW_REG_ERROR_INDEX), ==, 0);
    g_assert_cmphex(rd(g, SGHW_REG_ERROR_COUNT), ==, 0);
    g_assert_cmphex(rd(g, SGHW_REG_SCRATCH), ==, 0);
    d = query_dev(c, id);
    g_assert_cmpuint(qdict_get_int(d, "bo-count"), ==, 0);
    g_assert_cmpuint(qdict_get_int(d, "import-count"), ==, 0);
    g_assert_false(qdict_get_bool(qdict_get_qdict(d, "cmd-ring"), "enabled"));
    g_assert_false(qdict_get_bool(d, "halted"));
    qobject_unref(d);

    /* a prefix completed (in order), the rest was cancelled and stays untouched */
    g_usleep(20000);
    rd(g, SGHW_REG_STATUS); /* let the main loop run */
    qtest_memread(qts, g->ring, ring, RESET_RING * sizeof(*ring));
    for (done = 0; done < RESET_RING - 1; done++) {
        st = ring[(head + done) % RESET_RING].status;
        if (st == SGHW_ST_PENDING) {
            break;
        }
        g_assert_cmpuint(st, ==, SGHW_ST_OK);
        if (done % 3 == 0) {
            last_fill = done;
        }
    }
    g_test_message("reset landed after %u of %u commands", done, RESET_RING - 1);
    g_assert_cmpuint(done, <, RESET_RING - 1);
    for (i = done; i < RESET_RING - 1; i++) {
        g_assert_cmphex(ring[(head + i) % RESET_RING].status, ==, SGHW_ST_PENDING);
    }

    /*
     * The import lives on. Jobs in flight at the reset were abandoned, not undone (1.3):
     * they ran to their end, so the buffer holds the pattern of the last FILL the device
     * had started: the last completed one or one of at most QUEUE_DEPTH after it. The
     * other device's CHECKSUM waits for them (implicit sync) and sees one uniform pattern.
     */
    if (other) {
        uint32_t depth = rd(g, SGHW_REG_QUEUE_DEPTH);
        uint32_t pat, k;

        g_assert_cmpuint(depth, >=, 1);
        r = submit(c, other, (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM,
                                                    .handle = imp, .len = RESET_BO });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        pat = qpci_io_readl(other->dev, other->vram, win + 4096);
        if (last_fill == UINT32_MAX && pat == 0) {
            k = 0;
        } else {
            g_assert_cmpuint(pat, >=, 0x1000);
            k = pat - 0x1000;
            g_assert_cmpuint(k % 3, ==, 0);
            g_assert_cmpuint(k, <, done + depth);
            if (last_fill != UINT32_MAX) {
                g_assert_cmpuint(k, >=, last_fill);
            }
        }
        for (i = 0; i < RESET_BO; i += 4) {
            memcpy(expect + i, &pat, 4);
        }
        g_assert_cmphex(r.result, ==, crc32c_ref(expect, RESET_BO));
        g_test_message("the import holds FILL %u's pattern", k);
        r = submit(c, other, (struct sghw_cmd) { .opcode = SGHW_OP_BO_DESTROY,
                                                    .handle = imp });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    }

    /* the device works again: new rings; old handles are gone */
    g->seqno = 0;
    gpu_rings(c, g, RING_ENTRIES);
    query_bo(c, g, a, NULL, SGHW_ST_BAD_HANDLE);
    query_bo(c, g, b, NULL, SGHW_ST_BAD_HANDLE);
    a = create_bo_sz(c, g, RESET_BO, SGHW_PLACEMENT_DEVICE, NULL);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a,
                                            .len = RESET_BO, .arg = 0xfeedc0de });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    for (i = 0; i < RESET_BO; i += 4) {
        memcpy(expect + i, &(uint32_t){ 0xfeedc0de }, 4);
    }
    g_assert_cmphex(checksum(c, g, a, RESET_BO), ==, crc32c_ref(expect, RESET_BO));
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_CACHE_FLUSH, .handle = a,
                                            .len = RESET_BO });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    pages = attach_pages(c, g, a, RESET_BO);
    assert_bo_bytes(c, g, a, pages, expect, RESET_BO);
    query_bo(c, g, a, &info, SGHW_ST_OK);
    g_assert_cmpuint(info.size, ==, RESET_BO);
    (void)buf;
}

static void test_reset_mid_job(void)
{
    Ctx *c = setup();

    reset_mid_job(c, &c->g[0], "g0", &c->g[1]);
    reset_mid_job(c, &c->g[1], "g1", NULL); /* non-coherent */
    reset_mid_job(c, &c->g[0], "g0", NULL); /* again, on a device reset before */
    teardown(c);
}

static void test_event_overflow(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0];
    struct sghw_event ev;
    struct sghw_cmd r;
    int i, errors = 0, resync = 0;

    wr(g, SGHW_REG_INT_MASK, SGHW_INT_EVENT | SGHW_INT_EVT_OVERFLOW);
    g_assert_cmphex(rd(g, SGHW_REG_INT_MASK), ==, SGHW_INT_EVENT | SGHW_INT_EVT_OVERFLOW);
    /* 20 failing commands: 20 ERROR events into a 16-entry ring (15 usable) */
    for (i = 0; i < 20; i++) {
        r = submit(c, g, (struct sghw_cmd) { .opcode = 0x7777 });
        g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_OPCODE);
    }
    g_assert_cmpuint(rd(g, SGHW_REG_EVT_DROPPED), ==, 5);
    g_assert_true(rd(g, SGHW_REG_INT_STATUS) & SGHW_INT_EVT_OVERFLOW);
    wr(g, SGHW_REG_INT_ACK, SGHW_INT_EVT_OVERFLOW);
    g_assert_false(rd(g, SGHW_REG_INT_STATUS) & SGHW_INT_EVT_OVERFLOW);
    /* the first EVT_HEAD write makes room: RESYNC follows the 15 kept events */
    for (i = 0; pop_event(c, g, &ev); i++) {
        if (i < 15) {
            g_assert_cmpuint(ev.type, ==, SGHW_EVT_ERROR);
            g_assert_cmpuint(ev.generation, ==, i + 1); /* seqno */
            errors++;
        } else {
            g_assert_cmpuint(ev.type, ==, SGHW_EVT_RESYNC);
            g_assert_cmpuint(ev.generation, ==, 5);
            g_assert_cmphex(ev.vram_offset, ==, SGHW_INVALID_OFFSET);
            resync++;
        }
    }
    g_assert_cmpint(errors, ==, 15);
    g_assert_cmpint(resync, ==, 1);
    /* new events follow normally */
    r = submit(c, g, (struct sghw_cmd) { .opcode = 0x7777 });
    g_assert_true(pop_event(c, g, &ev));
    g_assert_cmpuint(ev.type, ==, SGHW_EVT_ERROR);
    g_assert_false(pop_event(c, g, &ev));
    g_assert_false(rd(g, SGHW_REG_INT_STATUS) & SGHW_INT_EVT_OVERFLOW);

    /* drops while the ring is disabled: RESYNC as soon as it is enabled again */
    wr(g, SGHW_REG_EVT_SIZE, 0);
    r = submit(c, g, (struct sghw_cmd) { .opcode = 0x7777 });
    g_assert_cmpuint(rd(g, SGHW_REG_EVT_DROPPED), ==, 6);
    wr(g, SGHW_REG_EVT_SIZE, RING_ENTRIES);
    g->evhead = 0;
    g_assert_true(pop_event(c, g, &ev));
    g_assert_cmpuint(ev.type, ==, SGHW_EVT_RESYNC);
    g_assert_cmpuint(ev.generation, ==, 6);
    g_assert_false(pop_event(c, g, &ev));
    teardown(c);
}

/* ------------------------------------------------------------------ long jobs */

/* device-side SHAREGPU_JOB_CHUNK: jobs longer than this run in chunks */
#define JOB_CHUNK (4 << 20)

static void fill_pattern(uint8_t *buf, uint64_t len, uint32_t pat)
{
    for (uint64_t i = 0; i < len; i += 4) {
        memcpy(buf + i, &pat, 4);
    }
}

static QDict *job_in_progress(Ctx *c, const char *id)
{
    QDict *d = query_dev(c, id);
    QDict *job = qdict_haskey(d, "job-in-progress") ?
                 qdict_get_qdict(d, "job-in-progress") : NULL;

    if (job) {
        qobject_ref(job);
    }
    qobject_unref(d);
    return job;
}

/*
 * Jobs run on the engine off the main loop whatever their length (1.3); a TRANSFER runs on
 * the main loop, at most x-job-slice bytes per bottom-half run, longer ones chunk by chunk
 * with the same result as one piece, checked as a whole before their first chunk.
 */
static void test_long_jobs_split(void)
{
    /* two chunks: one split, one yield; more only slows qtest's reads (see below) */
    const uint64_t len = 2 * JOB_CHUNK;
    Ctx *c = setup_with(",x-job-slice=1M");
    Gpu *g = &c->g[1]; /* non-coherent: jobs go through the device cache model */
    g_autofree uint8_t *expect = g_malloc(len);
    g_autofree uint8_t *got = g_malloc(len);
    uint32_t a, b, small;
    uint64_t pages;
    struct sghw_cmd r;

    a = create_bo_sz(c, g, len, SGHW_PLACEMENT_SYSTEM, NULL);
    b = create_bo_sz(c, g, len, SGHW_PLACEMENT_SYSTEM, NULL);
    fill_pattern(expect, len, 0xc0ffee01);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a, .len = len,
                                            .arg = 0xc0ffee01 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_COPY, .handle = b,
                                            .handle2 = a, .len = len });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    /* jobs are never split and never use the main loop's slice */
    g_assert_cmpuint(dev_counter(c, "g1", "split-jobs"), ==, 0);
    g_assert_cmpuint(dev_counter(c, "g1", "bh-yields"), ==, 0);
    g_assert_cmpuint(dev_counter(c, "g1", "jobs-submitted"), ==, 2);
    g_assert_cmphex(checksum(c, g, a, len), ==, crc32c_ref(expect, len));
    g_assert_cmphex(checksum(c, g, b, len), ==, crc32c_ref(expect, len));
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_CACHE_FLUSH, .handle = b,
                                            .len = len });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    pages = attach_pages(c, g, b, len);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_FROM_DEVICE,
                                            .handle = b, .len = len });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    /* one chunk per run (slice < chunk): the run yields after each but the last */
    g_assert_cmpuint(dev_counter(c, "g1", "split-jobs"), ==, 1);
    g_assert_cmpuint(dev_counter(c, "g1", "bh-yields"), ==, len / JOB_CHUNK - 1);
    qtest_bufread(c->qs->qts, pages, got, len);
    g_assert(memcmp(got, expect, len) == 0);

    /* a job out of range fails on the engine before writing anything */
    small = create_bo_sz(c, g, JOB_CHUNK, SGHW_PLACEMENT_SYSTEM, NULL);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_COPY, .handle = small,
                                            .handle2 = a, .len = len });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OUT_OF_RANGE);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a,
                                            .off0 = 4096, .len = len, .arg = 0xbad });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OUT_OF_RANGE);
    /* a transfer that would fail in a later chunk fails before the first */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_TO_DEVICE,
                                            .handle = a, .off1 = 4096, .len = len });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_BACKING);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_TO_DEVICE,
                                            .handle = b, .off1 = 4096, .len = len });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OUT_OF_RANGE);
    g_assert_cmpuint(dev_counter(c, "g1", "split-jobs"), ==, 1);
    g_assert_cmphex(checksum(c, g, a, len), ==, crc32c_ref(expect, len));
    g_assert_cmphex(checksum(c, g, b, len), ==, crc32c_ref(expect, len));
    memset(got, 0, JOB_CHUNK);
    g_assert_cmphex(checksum(c, g, small, JOB_CHUNK), ==, crc32c_ref(got, JOB_CHUNK));
    teardown(c);
}

/*
 * A reset while a long TRANSFER is half done: the transfer completes first
 * (docs/hardware.md 9), the commands after it are never executed. The buffer lives on in
 * the other device's import with every transferred byte.
 */
static void test_reset_during_long_job(void)
{
    /*
     * Many small chunks: the main loop may run several between two monitor queries when the
     * host is busy (8 chunks of 4 MiB were all done before the first query on a loaded host).
     */
    const uint64_t chunk = 64 * 1024;
    /*
     * 8 MiB: 2048 slices of 4K, one per main-loop turn. Not more: qtest's text protocol
     * moves a buffer in time that grows faster than its size (a 32 MiB write took 60 s, most
     * of this binary's run, and 16 MiB read back ~170 s under ASan).
     */
    const uint64_t len = 2 * JOB_CHUNK;
    Ctx *c = setup_with(",x-job-slice=4K,x-job-chunk=64K");
    Gpu *g = &c->g[0], *other = &c->g[1];
    QTestState *qts = c->qs->qts;
    g_autofree uint8_t *expect = g_malloc(len);
    uint32_t a, imp, tail, i;
    uint64_t xfer_addr, nop_addr, pages;
    struct sghw_cmd r, ring[2];
    QDict *job = NULL;

    a = create_bo_sz(c, g, len, SGHW_PLACEMENT_SYSTEM, NULL);
    imp = share_bo(c, g, a, other);
    pages = attach_pages(c, g, a, len);
    fill_pattern(expect, len, 0x0dd0f11e);
    qtest_bufwrite(qts, pages, expect, len);

    /* TRANSFER (128 chunks) followed by a NOP */
    tail = rd(g, SGHW_REG_CMD_TAIL);
    ring[0] = (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_TO_DEVICE, .handle = a,
                                     .len = len, .seqno = 77, .status = SGHW_ST_PENDING };
    ring[1] = (struct sghw_cmd) { .opcode = SGHW_OP_NOP, .seqno = 78,
                                     .status = SGHW_ST_PENDING };
    xfer_addr = g->ring + tail * sizeof(r);
    nop_addr = g->ring + ((tail + 1) % g->ring_entries) * sizeof(r);
    qtest_memwrite(qts, xfer_addr, &ring[0], sizeof(r));
    qtest_memwrite(qts, nop_addr, &ring[1], sizeof(r));
    wr(g, SGHW_REG_CMD_TAIL, (tail + 2) % g->ring_entries);
    wr(g, SGHW_REG_DOORBELL, 1);
    for (i = 0; i < len / chunk && !job; i++) {
        job = job_in_progress(c, "g0");
    }
    g_assert_nonnull(job); /* seen while running, not after */
    g_assert_cmpuint(qdict_get_int(job, "opcode"), ==, SGHW_OP_TRANSFER_TO_DEVICE);
    g_assert_cmpuint(qdict_get_int(job, "len"), ==, len);
    g_assert_cmpuint(qdict_get_int(job, "done"), <, len);
    qobject_unref(job);

    wr(g, SGHW_REG_RESET, SGHW_RESET_MAGIC);
    g_assert_null(job_in_progress(c, "g0"));
    qtest_memread(qts, xfer_addr, &r, sizeof(r));
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    qtest_memread(qts, nop_addr, &r, sizeof(r));
    g_assert_cmphex(r.status, ==, SGHW_ST_PENDING);
    g_assert_cmphex(checksum(c, other, imp, len), ==, crc32c_ref(expect, len));
    teardown(c);
}

static uint64_t dev_hostmem_used(Ctx *c, const char *id)
{
    QDict *d = query_dev(c, id);
    uint64_t v = qdict_get_int(d, "hostmem-used");

    g_assert_cmpuint(qdict_get_int(d, "hostmem-limit"), ==, 8 << 20);
    qobject_unref(d);
    return v;
}

/*
 * max-hostmem bounds the host memory a guest can make QEMU hold in SYSTEM placements
 * (without it, 4 GiB buffers filled one after another end in the host's OOM killer).
 */
static void test_hostmem_budget(void)
{
    Ctx *c = setup_with(",max-hostmem=8M");
    Gpu *g = &c->g[0];
    g_autofree uint8_t *expect = g_malloc(BO_SIZE);
    uint32_t a, b, v;
    struct sghw_cmd r;

    g_assert_cmpuint(dev_hostmem_used(c, "g0"), ==, 0);
    a = create_bo_sz(c, g, 4 << 20, SGHW_PLACEMENT_SYSTEM, NULL);
    g_assert_cmpuint(dev_hostmem_used(c, "g0"), ==, 4 << 20);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_CREATE, .len = 8 << 20,
                                            .arg = SGHW_PLACEMENT_SYSTEM });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_SPACE);
    b = create_bo_sz(c, g, 4 << 20, SGHW_PLACEMENT_SYSTEM, NULL);
    g_assert_cmpuint(dev_hostmem_used(c, "g0"), ==, 8 << 20);

    /* budget full: evicting a VRAM buffer fails and leaves it, bytes intact, where it is */
    v = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = v,
                                            .len = BO_SIZE, .arg = 0xfeed0001 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    fill_pattern(expect, BO_SIZE, 0xfeed0001);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_EVICT, .handle = v });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_SPACE);
    g_assert_cmphex(checksum(c, g, v, BO_SIZE), ==, crc32c_ref(expect, BO_SIZE));
    g_assert_cmpuint(dev_hostmem_used(c, "g0"), ==, 8 << 20);

    /* destroying a buffer gives its bytes back */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_DESTROY, .handle = a });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(dev_hostmem_used(c, "g0"), ==, 4 << 20);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_EVICT, .handle = v });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(checksum(c, g, v, BO_SIZE), ==, crc32c_ref(expect, BO_SIZE));
    g_assert_cmpuint(dev_hostmem_used(c, "g0"), ==, (4 << 20) + BO_SIZE);
    (void)b;
    teardown(c);
}

/* ------------------------------------------------------------------ sharing graph */

static QDict *graph_find(QList *list, const char *key, const char *value, const char *key2,
                         const char *value2)
{
    const QListEntry *e;

    QLIST_FOREACH_ENTRY(list, e) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));

        if (!g_strcmp0(qdict_get_try_str(d, key), value) &&
            (!key2 || !g_strcmp0(qdict_get_try_str(d, key2), value2))) {
            return d;
        }
    }
    return NULL;
}

/*
 * A known setup: g0 owns A (exported, imported by g1 and mapped into g1's import window)
 * and B (pinned, not shared); the graph must show exactly those nodes and edges.
 */
static void test_sharing_graph(void)
{
    Ctx *c = setup();
    Gpu *g0 = &c->g[0], *g1 = &c->g[1];
    uint32_t a = create_bo(c, g0, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t b = create_bo(c, g0, SGHW_PLACEMENT_SYSTEM, NULL);
    uint32_t imp = share_bo(c, g0, a, g1);
    g_autofree char *id_a = g_strdup_printf("buf:g0:%u", a);
    g_autofree char *id_b = g_strdup_printf("buf:g0:%u", b);
    QDict *resp, *graph, *n, *e;
    QList *nodes, *edges;
    struct sghw_cmd r;
    uint64_t map_off;

    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp,
                                          .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    map_off = r.result; /* BAR2 offset of the mapping */
    g_assert_cmpuint(map_off, >=, g1->vram_size);
    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_BO_PIN, .handle = b });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);

    resp = qtest_qmp(c->qs->qts, "{'execute': 'query-sharegpu-graph'}");
    graph = qdict_get_qdict(resp, "return");
    g_assert_nonnull(graph);
    nodes = qdict_get_qlist(graph, "nodes");
    edges = qdict_get_qlist(graph, "edges");
    g_assert_cmpuint(qlist_size(nodes), ==, 4); /* two devices, two buffers */
    g_assert_cmpuint(qlist_size(edges), ==, 3); /* two owns, one import */

    n = graph_find(nodes, "id", "dev:g1", NULL, NULL);
    g_assert_nonnull(n);
    g_assert_cmpstr(qdict_get_str(n, "kind"), ==, "device");
    g_assert_false(qdict_get_bool(n, "coherent"));
    n = graph_find(nodes, "id", id_a, NULL, NULL);
    g_assert_nonnull(n);
    g_assert_cmpstr(qdict_get_str(n, "kind"), ==, "buffer");
    g_assert_true(qdict_get_bool(n, "exported"));
    g_assert_nonnull(qdict_get_try_str(n, "uuid"));
    g_assert_cmpstr(qdict_get_str(n, "placement"), ==, "device");
    g_assert_cmpint(qdict_get_int(n, "attachments"), ==, 1);
    g_assert_cmpint(qdict_get_int(n, "pin-count"), ==, 0);
    n = graph_find(nodes, "id", id_b, NULL, NULL);
    g_assert_nonnull(n);
    g_assert_false(qdict_get_bool(n, "exported"));
    g_assert_cmpint(qdict_get_int(n, "pin-count"), ==, 1);

    e = graph_find(edges, "target", id_a, "kind", "owns");
    g_assert_nonnull(e);
    g_assert_cmpstr(qdict_get_str(e, "source"), ==, "dev:g0");
    g_assert_cmpint(qdict_get_int(e, "handle"), ==, a);
    g_assert_false(qdict_get_bool(e, "mapped"));
    e = graph_find(edges, "target", id_a, "kind", "imports");
    g_assert_nonnull(e);
    g_assert_cmpstr(qdict_get_str(e, "source"), ==, "dev:g1");
    g_assert_cmpint(qdict_get_int(e, "handle"), ==, imp);
    g_assert_true(qdict_get_bool(e, "mapped"));
    g_assert_cmpuint(qdict_get_int(e, "window-offset"), ==, map_off);
    e = graph_find(edges, "target", id_b, "kind", "owns");
    g_assert_nonnull(e);
    g_assert_null(graph_find(edges, "target", id_b, "kind", "imports"));
    qobject_unref(resp);

    /* the HMP view names the same relations */
    {
        g_autofree char *out = qtest_hmp(c->qs->qts, "info sharegpu-graph");
        g_autofree char *line = g_strdup_printf("dev:g1 -imports-> %s handle %u mapped@",
                                                id_a, imp);

        g_assert_nonnull(strstr(out, line));
    }
    teardown(c);
}

/* Open descriptors of the QEMU process under test. */
static unsigned qemu_fd_count(Ctx *c)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int)qtest_pid(c->qs->qts));
    GDir *dir = g_dir_open(path, 0, NULL);
    unsigned n = 0;

    g_assert_nonnull(dir);
    while (g_dir_read_name(dir)) {
        n++;
    }
    g_dir_close(dir);
    return n;
}

/*
 * Issue 15: mapping imports into the window costs no descriptor per import. 24 imports of
 * exporter VRAM and 24 of exporter system memory (the backend's one system memfd) map into
 * g1's window with two descriptors in all; each mapping shows its own buffer; the window
 * still refuses overlaps (but a buffer may move its own mapping); and the descriptors go
 * when the mappings do.
 */
#define WINDOW_IMPORTS 24

static void test_import_window_descriptors(void)
{
    Ctx *c = setup();
    Gpu *g0 = &c->g[0], *g1 = &c->g[1];
    uint32_t imp[2 * WINDOW_IMPORTS];
    g_autofree uint8_t *bytes = g_malloc(BO_SIZE);
    unsigned before, with_both_kinds, with_all;
    struct sghw_cmd r;
    int i;

    for (i = 0; i < 2 * WINDOW_IMPORTS; i++) {
        uint32_t h = create_bo(c, g0, i % 2 ? SGHW_PLACEMENT_SYSTEM : SGHW_PLACEMENT_DEVICE,
                               NULL);

        r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = h,
                                              .len = BO_SIZE, .arg = 0x5a000000 + i });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        imp[i] = share_bo(c, g0, h, g1);
    }
    before = qemu_fd_count(c);
    for (i = 0; i < 2 * WINDOW_IMPORTS; i++) {
        uint64_t win;
        uint32_t word = 0xc0de0000 + i;

        r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                              .handle = imp[i], .off0 = i * BO_SIZE });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        win = r.result;
        if (i == 1) {
            with_both_kinds = qemu_fd_count(c);
        }
        /* the alias points at this buffer's bytes, not a neighbour's */
        g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win + 128), ==, 0x5a000000 + i);
        /* and a write through it reaches the exporter's storage */
        qpci_io_writel(g1->dev, g1->vram, win + 256, word);
        for (int k = 0; k < BO_SIZE; k += 4) {
            uint32_t v = k == 256 ? word : 0x5a000000 + i;

            memcpy(bytes + k, &v, 4);
        }
        r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = imp[i],
                                              .len = BO_SIZE });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        g_assert_cmphex(r.result, ==, crc32c_ref(bytes, BO_SIZE));
    }
    with_all = qemu_fd_count(c);
    g_assert_cmpuint(with_both_kinds, <=, before + 2);
    g_assert_cmpuint(with_all, ==, with_both_kinds);

    /* overlap with another mapping: BUSY, the other mapping intact */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp[0],
                                          .off0 = BO_SIZE + BO_SIZE / 2 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BUSY);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, g1->vram_size + BO_SIZE + 128), ==,
                    0x5a000001);
    /* moving a buffer's own mapping over itself is fine */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_UNMAP_IMPORT,
                                          .handle = imp[2 * WINDOW_IMPORTS - 1] });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp[0],
                                          .off0 = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BUSY); /* overlaps imp[1] at BO_SIZE */
    r = submit(c, g1, (struct sghw_cmd) {
        .opcode = SGHW_OP_MAP_IMPORT, .handle = imp[2 * WINDOW_IMPORTS - 2],
        .off0 = (2 * WINDOW_IMPORTS - 2) * BO_SIZE + 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, r.result + 128), ==,
                    0x5a000000 + 2 * WINDOW_IMPORTS - 2);

    /* unmapping everything releases the backings (after the flatviews let go: bounded) */
    for (i = 0; i < 2 * WINDOW_IMPORTS; i++) {
        r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_UNMAP_IMPORT,
                                              .handle = imp[i] });
        g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    }
    for (i = 0; i < 5000 && qemu_fd_count(c) != before; i++) {
        g_usleep(1000);
    }
    g_assert_cmpuint(qemu_fd_count(c), ==, before);
    teardown(c);
}

/*
 * 1.2: a BO_MOVED that reports what a BO_MOVE / BO_EVICT / BO_CREATE of the same ring did to
 * its own handle carries SGHW_EVT_F_OWN_COMMAND; a BO evicted to make room for another, a
 * host-forced move and a move caused through another device's import do not.
 */
static void pop_moved(Ctx *c, Gpu *g, uint32_t h, uint32_t placement, uint32_t flags)
{
    struct sghw_event ev;

    g_assert_true(pop_event(c, g, &ev));
    g_assert_cmpuint(ev.type, ==, SGHW_EVT_BO_MOVED);
    g_assert_cmpuint(ev.handle, ==, h);
    g_assert_cmpuint(ev.placement, ==, placement);
    g_assert_cmphex(ev.flags, ==, flags);
}

static void test_own_command_flag(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0], *g1 = &c->g[1];
    uint32_t h[4], a, imp;
    struct sghw_event ev;
    struct sghw_cmd r;
    int i, n_own, n_other;

    drain_events(c, g);
    a = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    g_assert_false(pop_event(c, g, &ev)); /* a create in place moves nothing */

    /* own moves and evictions */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = a,
                                            .arg = SGHW_PLACEMENT_SYSTEM });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    pop_moved(c, g, a, SGHW_PLACEMENT_SYSTEM, SGHW_EVT_F_OWN_COMMAND);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = a,
                                            .arg = SGHW_PLACEMENT_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    pop_moved(c, g, a, SGHW_PLACEMENT_DEVICE, SGHW_EVT_F_OWN_COMMAND);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_EVICT, .handle = a });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    pop_moved(c, g, a, SGHW_PLACEMENT_SYSTEM, SGHW_EVT_F_OWN_COMMAND);
    g_assert_false(pop_event(c, g, &ev));

    /* a host-forced move is nobody's command */
    qmp_move(c, "g0", a, "device");
    pop_moved(c, g, a, SGHW_PLACEMENT_DEVICE, 0);
    qmp_move(c, "g0", a, "system");
    pop_moved(c, g, a, SGHW_PLACEMENT_SYSTEM, 0);

    /* fill the 4 MiB of VRAM; a fifth create evicts the oldest (h[0]): not its own move */
    for (i = 0; i < 4; i++) {
        h[i] = create_bo_sz(c, g, 1 << 20, SGHW_PLACEMENT_DEVICE, NULL);
    }
    g_assert_false(pop_event(c, g, &ev));
    create_bo_sz(c, g, 1 << 20, SGHW_PLACEMENT_DEVICE, NULL);
    g_assert_true(pop_event(c, g, &ev));
    g_assert_cmpuint(ev.type, ==, SGHW_EVT_BO_MOVED);
    g_assert_cmpuint(ev.placement, ==, SGHW_PLACEMENT_SYSTEM);
    g_assert_cmphex(ev.flags, ==, 0);
    g_assert_true(ev.handle == h[0] || ev.handle == h[1] || ev.handle == h[2] ||
                  ev.handle == h[3]);
    g_assert_false(pop_event(c, g, &ev));

    /* the same for a move to DEVICE that evicts: only the moved BO's event is its own */
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = a,
                                            .arg = SGHW_PLACEMENT_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    n_own = n_other = 0;
    while (pop_event(c, g, &ev)) {
        g_assert_cmpuint(ev.type, ==, SGHW_EVT_BO_MOVED);
        g_assert_cmphex(ev.flags, ==, ev.handle == a ? SGHW_EVT_F_OWN_COMMAND : 0);
        g_assert_cmpuint(ev.placement, ==, ev.handle == a ? SGHW_PLACEMENT_DEVICE
                                                         : SGHW_PLACEMENT_SYSTEM);
        *(ev.handle == a ? &n_own : &n_other) += 1;
    }
    g_assert_cmpint(n_own, ==, 1);
    g_assert_cmpint(n_other, >=, 1);

    /* a BO_MOVE through g1's import moves g0's buffer: g0's event is not g0's command */
    imp = share_bo(c, g, a, g1);
    drain_events(c, g1);
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = imp,
                                             .arg = SGHW_PLACEMENT_SYSTEM });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    pop_moved(c, g, a, SGHW_PLACEMENT_SYSTEM, 0);
    while (pop_event(c, g1, &ev)) {
        g_assert_cmphex(ev.flags, ==, 0);
    }
    teardown(c);
}

/* ------------------------------------------------------------------ 1.3: asynchronous jobs */

/* Writes `n` commands at the ring tail and rings the doorbell without waiting. */
static void post(Ctx *c, Gpu *g, struct sghw_cmd *cmds, int n, uint64_t *addrs)
{
    uint32_t tail = rd(g, SGHW_REG_CMD_TAIL);
    int i;

    for (i = 0; i < n; i++) {
        addrs[i] = g->ring + ((tail + i) % g->ring_entries) * sizeof(cmds[i]);
        cmds[i].seqno = ++g->seqno;
        cmds[i].status = SGHW_ST_PENDING;
        qtest_memwrite(c->qs->qts, addrs[i], &cmds[i], sizeof(cmds[i]));
    }
    wr(g, SGHW_REG_CMD_TAIL, (tail + n) % g->ring_entries);
    wr(g, SGHW_REG_DOORBELL, 1);
}

static struct sghw_cmd read_cmd(Ctx *c, uint64_t addr)
{
    struct sghw_cmd r;

    qtest_memread(c->qs->qts, addr, &r, sizeof(r));
    return r;
}

/* Waits (bounded) until CMD_HEAD reaches `idx`. */
static void wait_head(Gpu *g, uint32_t idx)
{
    int i;

    for (i = 0; i < 100000 && rd(g, SGHW_REG_CMD_HEAD) != idx; i++) {
        g_usleep(10);
    }
    g_assert_cmpuint(rd(g, SGHW_REG_CMD_HEAD), ==, idx);
}

static void qmp_ok(Ctx *c, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void qmp_ok(Ctx *c, const char *fmt, ...)
{
    va_list ap;
    QDict *resp;

    va_start(ap, fmt);
    resp = qtest_vqmp(c->qs->qts, fmt, ap);
    va_end(ap);
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
}

/*
 * Waits (bounded: the engine runs on its own thread, each query lets the main loop run)
 * until the device shows a job in `state`; returns that job's waits-for count.
 */
static uint32_t wait_job_state(Ctx *c, const char *id, const char *state)
{
    int i;

    for (i = 0; i < 20000; i++) {
        QDict *d = query_dev(c, id);
        QList *jobs = qdict_get_qlist(d, "jobs");
        QListEntry *e;

        QLIST_FOREACH_ENTRY(jobs, e) {
            QDict *j = qobject_to(QDict, qlist_entry_obj(e));

            if (!strcmp(qdict_get_str(j, "state"), state)) {
                uint32_t waits = qdict_get_int(j, "waits-for");

                qobject_unref(d);
                return waits;
            }
        }
        qobject_unref(d);
        g_usleep(50);
    }
    g_error("no job of %s reached state %s", id, state);
}

static uint32_t fill_crc(uint64_t len, uint32_t pat)
{
    g_autofree uint8_t *buf = g_malloc(len);

    fill_pattern(buf, len, pat);
    return crc32c_ref(buf, len);
}

/*
 * A held job keeps its ring slot pending; later commands complete only after it, FENCE
 * starts only after it; releasing completes them in ring order.
 */
static void test_held_job(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0];
    uint32_t a = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t b = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t head = rd(g, SGHW_REG_CMD_HEAD);
    uint32_t last = rd(g, SGHW_REG_LAST_SEQNO_LO);
    struct sghw_cmd cmds[3] = {
        { .opcode = SGHW_OP_FILL, .handle = a, .len = BO_SIZE, .arg = 0xa1a1a1a1 },
        { .opcode = SGHW_OP_FILL, .handle = b, .len = BO_SIZE, .arg = 0xb2b2b2b2 },
        { .opcode = SGHW_OP_FENCE },
    };
    uint64_t addr[3];
    QDict *d;
    int i;

    g_assert_cmpuint(rd(g, SGHW_REG_QUEUE_DEPTH), ==, 16);
    qmp_ok(c, "{'execute': 'x-sharegpu-hold', 'arguments': {'id': 'g0', 'handle': %u}}", a);
    post(c, g, cmds, 3, addr);
    g_assert_cmpuint(wait_job_state(c, "g0", "held"), ==, 0);
    for (i = 0; i < 3; i++) {
        g_assert_cmphex(read_cmd(c, addr[i]).status, ==, SGHW_ST_PENDING);
    }
    g_assert_cmpuint(rd(g, SGHW_REG_CMD_HEAD), ==, head);
    g_assert_cmpuint(rd(g, SGHW_REG_LAST_SEQNO_LO), ==, last);
    d = query_dev(c, "g0");
    g_assert_cmpuint(qdict_get_int(d, "ring-in-flight"), ==, 2); /* FENCE not started */
    g_assert_cmpstr(qdict_get_str(d, "engine"), ==, "cpu");
    g_assert_cmpuint(qdict_get_int(qdict_get_qdict(d, "counters"), "jobs-held"), ==, 1);
    qobject_unref(d);
    {
        g_autofree char *out = qtest_hmp(c->qs->qts, "info sharegpu g0");

        g_assert_nonnull(strstr(out, "FILL handle"));
        g_assert_nonnull(strstr(out, " held"));
    }

    qmp_ok(c, "{'execute': 'x-sharegpu-release', 'arguments': {'id': 'g0'}}");
    wait_head(g, (head + 3) % g->ring_entries);
    for (i = 0; i < 3; i++) {
        g_assert_cmpuint(read_cmd(c, addr[i]).status, ==, SGHW_ST_OK);
    }
    g_assert_cmpuint(read_cmd(c, addr[2]).result, ==, cmds[2].seqno);
    g_assert_cmpuint(rd(g, SGHW_REG_LAST_SEQNO_LO), ==, (uint32_t)cmds[2].seqno);
    g_assert_cmphex(checksum(c, g, a, BO_SIZE), ==, fill_crc(BO_SIZE, 0xa1a1a1a1));
    g_assert_cmphex(checksum(c, g, b, BO_SIZE), ==, fill_crc(BO_SIZE, 0xb2b2b2b2));

    /* a hold with a duration ends by itself */
    qmp_ok(c, "{'execute': 'x-sharegpu-hold', 'arguments': {'id': 'g0', 'ms': 200}}");
    head = rd(g, SGHW_REG_CMD_HEAD);
    post(c, g, cmds, 1, addr);
    wait_job_state(c, "g0", "held");
    wait_head(g, (head + 1) % g->ring_entries);
    g_assert_cmpuint(read_cmd(c, addr[0]).status, ==, SGHW_ST_OK);
    teardown(c);
}

/*
 * Implicit synchronisation between devices: g1's job on its import of g0's buffer waits for
 * g0's held FILL and then sees its data; g1's BO_MOVE of the buffer waits too and keeps the
 * data; a monitor move of the busy buffer is refused, not blocked.
 */
static void test_implicit_sync(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0], *g1 = &c->g[1];
    uint32_t a = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t imp = share_bo(c, g, a, g1);
    struct sghw_cmd fill = { .opcode = SGHW_OP_FILL, .handle = a, .len = BO_SIZE,
                             .arg = 0x5eed5eed };
    struct sghw_cmd sum = { .opcode = SGHW_OP_CHECKSUM, .handle = imp, .len = BO_SIZE };
    struct sghw_cmd move = { .opcode = SGHW_OP_BO_MOVE, .handle = imp,
                             .arg = SGHW_PLACEMENT_SYSTEM };
    uint32_t head0 = rd(g, SGHW_REG_CMD_HEAD), head1 = rd(g1, SGHW_REG_CMD_HEAD);
    uint64_t addr0, addr1;
    struct sghw_bo_info info;
    QDict *resp, *d;
    int i;

    /* g1's job on the import waits for g0's held FILL, then reads its data */
    qmp_ok(c, "{'execute': 'x-sharegpu-hold', 'arguments': {'id': 'g0'}}");
    post(c, g, &fill, 1, &addr0);
    wait_job_state(c, "g0", "held");
    post(c, g1, &sum, 1, &addr1);
    g_assert_cmpuint(wait_job_state(c, "g1", "waiting"), ==, 1);
    g_assert_cmphex(read_cmd(c, addr1).status, ==, SGHW_ST_PENDING);
    qmp_ok(c, "{'execute': 'x-sharegpu-release', 'arguments': {'id': 'g0'}}");
    wait_head(g, (head0 + 1) % g->ring_entries);
    wait_head(g1, (head1 + 1) % g1->ring_entries);
    g_assert_cmpuint(read_cmd(c, addr1).status, ==, SGHW_ST_OK);
    g_assert_cmphex(read_cmd(c, addr1).result, ==, fill_crc(BO_SIZE, 0x5eed5eed));
    g_assert_cmpuint(dev_counter(c, "g1", "jobs-waited"), ==, 1);

    /* g1's BO_MOVE of the buffer waits (without blocking) for g0's held FILL */
    fill.arg = 0x0ddba11;
    qmp_ok(c, "{'execute': 'x-sharegpu-hold', 'arguments': {'id': 'g0'}}");
    post(c, g, &fill, 1, &addr0);
    wait_job_state(c, "g0", "held");
    post(c, g1, &move, 1, &addr1);
    for (i = 0; i < 20000; i++) {
        bool waiting;

        d = query_dev(c, "g1");
        waiting = qdict_get_bool(d, "waiting-for-buffer");
        qobject_unref(d);
        if (waiting) {
            break;
        }
        g_usleep(50);
    }
    g_assert_cmpint(i, <, 20000);
    g_assert_cmphex(read_cmd(c, addr1).status, ==, SGHW_ST_PENDING);
    g_assert_cmpuint(dev_counter(c, "g1", "buffer-waits"), ==, 1);

    resp = qtest_qmp(c->qs->qts, "{'execute': 'x-sharegpu-move-bo', 'arguments': "
                     "{'id': 'g0', 'handle': %u, 'placement': 'system'}}", a);
    g_assert(qdict_haskey(resp, "error"));
    g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(resp, "error"), "desc"),
                            "in use"));
    qobject_unref(resp);

    qmp_ok(c, "{'execute': 'x-sharegpu-release', 'arguments': {'id': 'g0'}}");
    wait_head(g, (head0 + 2) % g->ring_entries);
    wait_head(g1, (head1 + 2) % g1->ring_entries);
    g_assert_cmpuint(read_cmd(c, addr1).status, ==, SGHW_ST_OK);
    query_bo(c, g, a, &info, SGHW_ST_OK);
    g_assert_cmpuint(info.placement, ==, SGHW_PLACEMENT_SYSTEM);
    g_assert_cmphex(checksum(c, g, a, BO_SIZE), ==, fill_crc(BO_SIZE, 0x0ddba11));
    drain_events(c, g);
    drain_events(c, g1);
    teardown(c);
}

/*
 * A reset with jobs in flight: their completions are never written, the reset ends the
 * engine's stall, and the device works again.
 */
static void test_reset_with_jobs_in_flight(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0];
    uint32_t a = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    struct sghw_cmd cmds[2] = {
        { .opcode = SGHW_OP_FILL, .handle = a, .len = BO_SIZE, .arg = 1 },
        { .opcode = SGHW_OP_NOP },
    };
    uint64_t addr[2];
    struct sghw_cmd r;
    int i;

    qmp_ok(c, "{'execute': 'x-sharegpu-stall', 'arguments': {'id': 'g0', 'stall': true}}");
    post(c, g, cmds, 2, addr);
    wait_job_state(c, "g0", "stalled");
    wr(g, SGHW_REG_RESET, SGHW_RESET_MAGIC);
    g_assert_cmpuint(rd(g, SGHW_REG_CMD_HEAD), ==, 0);
    g_assert_cmpuint(rd(g, SGHW_REG_LAST_SEQNO_LO), ==, 0);
    /* the abandoned job ends (the stall is gone) without its completion being written */
    for (i = 0; i < 20000; i++) {
        QDict *d = query_dev(c, "g0");
        bool idle = qlist_empty(qdict_get_qlist(d, "jobs"));

        qobject_unref(d);
        if (idle) {
            break;
        }
        g_usleep(50);
    }
    g_assert_cmpint(i, <, 20000);
    g_assert_cmphex(read_cmd(c, addr[0]).status, ==, SGHW_ST_PENDING);
    g_assert_cmphex(read_cmd(c, addr[1]).status, ==, SGHW_ST_PENDING);

    g->seqno = 0;
    gpu_rings(c, g, RING_ENTRIES);
    a = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a,
                                            .len = BO_SIZE, .arg = 0x600d600d });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(checksum(c, g, a, BO_SIZE), ==, fill_crc(BO_SIZE, 0x600d600d));
    teardown(c);
}

/*
 * JOB_ABORT (1.4) with a held job: it has executed, so it completes OK with its data; the
 * FILL queued behind it on the engine had not started: CANCELLED, its buffer unchanged; the
 * FENCE after them completes in ring order, and the hold is over.
 */
static void test_job_abort_held(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0];
    uint32_t a = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t b = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t old_b = checksum(c, g, b, BO_SIZE);
    uint32_t head = rd(g, SGHW_REG_CMD_HEAD);
    struct sghw_cmd cmds[3] = {
        { .opcode = SGHW_OP_FILL, .handle = a, .len = BO_SIZE, .arg = 0xa5a5a5a5 },
        { .opcode = SGHW_OP_FILL, .handle = b, .len = BO_SIZE, .arg = 0xb6b6b6b6 },
        { .opcode = SGHW_OP_FENCE },
    };
    uint64_t addr[3];

    g_assert_true(rd(g, SGHW_REG_FEATURES) & SGHW_FEAT_JOB_ABORT);
    g_assert_true(rd(g, SGHW_REG_FEATURES) & SGHW_FEAT_WINDOW_FAULT);
    g_assert_cmphex(rd(g, SGHW_REG_VERSION), >=, 0x00010005);
    qmp_ok(c, "{'execute': 'x-sharegpu-hold', 'arguments': {'id': 'g0', 'handle': %u}}", a);
    post(c, g, cmds, 3, addr);
    wait_job_state(c, "g0", "held");
    g_assert_cmphex(read_cmd(c, addr[0]).status, ==, SGHW_ST_PENDING);

    wr(g, SGHW_REG_JOB_ABORT, SGHW_JOB_ABORT_MAGIC);
    wait_head(g, (head + 3) % g->ring_entries);
    g_assert_cmpuint(read_cmd(c, addr[0]).status, ==, SGHW_ST_OK);
    g_assert_cmpuint(read_cmd(c, addr[1]).status, ==, SGHW_ST_CANCELLED);
    g_assert_cmpuint(read_cmd(c, addr[2]).status, ==, SGHW_ST_OK);
    g_assert_cmpuint(read_cmd(c, addr[2]).result, ==, cmds[2].seqno);
    g_assert_cmpuint(rd(g, SGHW_REG_LAST_SEQNO_LO), ==, (uint32_t)cmds[2].seqno);
    g_assert_cmpuint(rd(g, SGHW_REG_ERROR_CODE), ==, SGHW_ST_CANCELLED);
    g_assert_cmpuint(rd(g, SGHW_REG_ERROR_INDEX), ==, (head + 1) % g->ring_entries);
    g_assert_true(rd(g, SGHW_REG_INT_STATUS) & SGHW_INT_CMD);
    g_assert_cmphex(checksum(c, g, a, BO_SIZE), ==, fill_crc(BO_SIZE, 0xa5a5a5a5));
    g_assert_cmphex(checksum(c, g, b, BO_SIZE), ==, old_b);
    g_assert_cmpuint(dev_counter(c, "g0", "job-aborts"), ==, 1);
    g_assert_cmpuint(dev_counter(c, "g0", "jobs-cancelled"), ==, 1);

    /* the hold ended with the abort */
    cmds[0].arg = 0x5a5a5a5a;
    g_assert_cmpuint(submit(c, g, cmds[0]).status, ==, SGHW_ST_OK);
    g_assert_cmphex(checksum(c, g, a, BO_SIZE), ==, fill_crc(BO_SIZE, 0x5a5a5a5a));
    drain_events(c, g);
    teardown(c);
}

/*
 * JOB_ABORT on a stalled engine, queue depth 1: the FILL on the engine (stalled) and the COPY
 * the ring has not submitted yet both complete CANCELLED, in order; neither buffer changed;
 * the handles are still valid, the stall is over and a new FILL on the same handle works.
 */
static void test_job_abort_stalled(void)
{
    Ctx *c = setup_with(",queue-depth=1");
    Gpu *g = &c->g[0];
    uint32_t a = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t b = create_bo(c, g, SGHW_PLACEMENT_SYSTEM, NULL);
    uint32_t old_b = checksum(c, g, b, BO_SIZE);
    uint32_t head, errors;
    struct sghw_cmd cmds[2] = {
        { .opcode = SGHW_OP_FILL, .handle = a, .len = BO_SIZE, .arg = 0xdeadbeef },
        { .opcode = SGHW_OP_COPY, .handle = b, .handle2 = a, .len = BO_SIZE },
    };
    struct sghw_cmd r;
    struct sghw_bo_info info;
    uint64_t addr[2];
    QDict *d;

    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a,
                                        .len = BO_SIZE, .arg = 0x11111111 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    head = rd(g, SGHW_REG_CMD_HEAD);
    errors = rd(g, SGHW_REG_ERROR_COUNT);
    qmp_ok(c, "{'execute': 'x-sharegpu-stall', 'arguments': {'id': 'g0', 'stall': true}}");
    post(c, g, cmds, 2, addr);
    wait_job_state(c, "g0", "stalled");
    d = query_dev(c, "g0");
    g_assert_cmpuint(qdict_get_int(d, "ring-in-flight"), ==, 1); /* the COPY waits a slot */
    qobject_unref(d);

    wr(g, SGHW_REG_JOB_ABORT, SGHW_JOB_ABORT_MAGIC);
    wait_head(g, (head + 2) % g->ring_entries);
    g_assert_cmpuint(read_cmd(c, addr[0]).status, ==, SGHW_ST_CANCELLED);
    g_assert_cmpuint(read_cmd(c, addr[1]).status, ==, SGHW_ST_CANCELLED);
    g_assert_cmpuint(rd(g, SGHW_REG_LAST_SEQNO_LO), ==, (uint32_t)cmds[1].seqno);
    g_assert_cmpuint(rd(g, SGHW_REG_ERROR_COUNT), ==, errors + 2);
    g_assert_cmpuint(dev_counter(c, "g0", "jobs-cancelled"), ==, 2);
    /* the setup FILL, its CHECKSUM and the stalled FILL: never the COPY */
    g_assert_cmpuint(dev_counter(c, "g0", "jobs-submitted"), ==, 3);

    query_bo(c, g, a, &info, SGHW_ST_OK);
    g_assert_cmpuint(info.size, ==, BO_SIZE);
    query_bo(c, g, b, &info, SGHW_ST_OK);
    g_assert_cmphex(checksum(c, g, a, BO_SIZE), ==, fill_crc(BO_SIZE, 0x11111111));
    g_assert_cmphex(checksum(c, g, b, BO_SIZE), ==, old_b);
    r = submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a,
                                        .len = BO_SIZE, .arg = 0x22222222 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(checksum(c, g, a, BO_SIZE), ==, fill_crc(BO_SIZE, 0x22222222));
    drain_events(c, g);
    teardown(c);
}

/*
 * JOB_ABORT with nothing in flight changes nothing; a value other than the magic is ignored
 * (the stalled job stays pending, and completes OK once released).
 */
static void test_job_abort_idle_and_bad_value(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0];
    uint32_t a = create_bo(c, g, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t head = rd(g, SGHW_REG_CMD_HEAD);
    uint32_t errors = rd(g, SGHW_REG_ERROR_COUNT);
    uint64_t last = rd(g, SGHW_REG_LAST_SEQNO_LO);
    struct sghw_cmd fill = { .opcode = SGHW_OP_FILL, .handle = a, .len = BO_SIZE,
                             .arg = 0x0badf00d };
    uint64_t addr;
    int i;

    wr(g, SGHW_REG_JOB_ABORT, SGHW_JOB_ABORT_MAGIC);
    g_assert_cmpuint(rd(g, SGHW_REG_CMD_HEAD), ==, head);
    g_assert_cmpuint(rd(g, SGHW_REG_LAST_SEQNO_LO), ==, last);
    g_assert_cmpuint(rd(g, SGHW_REG_ERROR_COUNT), ==, errors);
    g_assert_cmpuint(dev_counter(c, "g0", "job-aborts"), ==, 1);
    g_assert_cmpuint(dev_counter(c, "g0", "jobs-cancelled"), ==, 0);
    g_assert_cmpuint(submit(c, g, fill).status, ==, SGHW_ST_OK);

    fill.arg = 0x600df00d;
    qmp_ok(c, "{'execute': 'x-sharegpu-stall', 'arguments': {'id': 'g0', 'stall': true}}");
    head = rd(g, SGHW_REG_CMD_HEAD);
    post(c, g, &fill, 1, &addr);
    wait_job_state(c, "g0", "stalled");
    wr(g, SGHW_REG_JOB_ABORT, SGHW_RESET_MAGIC);
    wr(g, SGHW_REG_JOB_ABORT, 0);
    for (i = 0; i < 20; i++) {  /* give a wrongly accepted abort time to show */
        g_assert_cmphex(read_cmd(c, addr).status, ==, SGHW_ST_PENDING);
        g_usleep(1000);
    }
    g_assert_cmpuint(dev_counter(c, "g0", "job-aborts"), ==, 1);
    g_assert_cmpuint(wait_job_state(c, "g0", "stalled"), ==, 0);
    qmp_ok(c, "{'execute': 'x-sharegpu-release', 'arguments': {'id': 'g0'}}");
    wait_head(g, (head + 1) % g->ring_entries);
    g_assert_cmpuint(read_cmd(c, addr).status, ==, SGHW_ST_OK);
    g_assert_cmphex(checksum(c, g, a, BO_SIZE), ==, fill_crc(BO_SIZE, 0x600df00d));
    g_assert_cmpuint(submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_NOP }).status, ==,
                     SGHW_ST_OK);
    teardown(c);
}

/* The SHAREGPU_* QMP events, in arrival order (an event callback keeps them all). */
typedef struct EventLog {
    GPtrArray *events; /* QDict */
} EventLog;

static void event_free(gpointer event)
{
    qobject_unref((QDict *)event);
}

static bool event_log_cb(QTestState *qts, const char *name, QDict *event, void *opaque)
{
    EventLog *log = opaque;

    if (!g_str_has_prefix(name, "SHAREGPU_")) {
        return false;
    }
    qobject_ref(event);
    g_ptr_array_add(log->events, event);
    return true;
}

/* Reads QMP until every event emitted so far is in the log. */
static void event_log_sync(Ctx *c)
{
    qobject_unref(qtest_qmp(c->qs->qts, "{'execute': 'query-status'}"));
}

/* The only event `name` of device `id` in the log since index *from (advanced past it). */
static QDict *event_log_one(EventLog *log, guint *from, const char *name, const char *id)
{
    QDict *found = NULL;

    for (guint i = *from; i < log->events->len; i++) {
        QDict *ev = g_ptr_array_index(log->events, i);
        QDict *data = qdict_get_qdict(ev, "data");

        if (!strcmp(qdict_get_str(ev, "event"), name) &&
            !strcmp(qdict_get_str(data, "id"), id)) {
            g_assert_null(found);
            found = data;
        }
    }
    if (!found) {
        for (guint i = *from; i < log->events->len; i++) {
            g_autoptr(GString) json = qobject_to_json(g_ptr_array_index(log->events, i));

            g_test_message("event %u: %s", i, json->str);
        }
        g_test_message("no %s of %s among events %u..%u", name, id, *from, log->events->len);
    }
    g_assert_nonnull(found);
    *from = log->events->len;
    return found;
}

/*
 * Issue 8 §4: QMP events for moves (with their cause), invalidations, command errors, fence
 * holds and stalls, job aborts and resets; the guest-caused ones are rate limited, and what
 * the limit left out is counted and reported by the next event.
 */
static void test_qmp_events(void)
{
    Ctx *c = setup();
    Gpu *g0 = &c->g[0], *g1 = &c->g[1];
    EventLog log = { .events = g_ptr_array_new_with_free_func(event_free) };
    uint32_t h = create_bo(c, g0, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t loner = create_bo(c, g0, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t imp = share_bo(c, g0, h, g1);
    uint64_t received = 0, reported = 0, moves = 0, suppressed_before;
    guint from;
    QDict *d;
    struct sghw_cmd r;

    qtest_qmp_set_event_callback(c->qs->qts, event_log_cb, &log);
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    event_log_sync(c);
    from = log.events->len;

    /* a move forced from the monitor: the exporter's BO_MOVED, the importer's invalidation */
    qmp_ok(c, "{'execute': 'x-sharegpu-move-bo', 'arguments': "
           "{'id': 'g0', 'handle': %u, 'placement': 'system'}}", h);
    event_log_sync(c);
    d = event_log_one(&log, &(guint){ from }, "SHAREGPU_BO_MOVED", "g0");
    g_assert_cmpuint(qdict_get_int(d, "handle"), ==, h);
    g_assert_cmpstr(qdict_get_str(d, "placement"), ==, "system");
    g_assert_cmpstr(qdict_get_str(d, "cause"), ==, "other");
    g_assert_false(qdict_haskey(d, "vram-offset"));
    g_assert_cmpuint(qdict_get_int(d, "suppressed"), ==, 0);
    d = event_log_one(&log, &from, "SHAREGPU_BO_INVALIDATED", "g1");
    g_assert_cmpuint(qdict_get_int(d, "handle"), ==, imp);

    /* the guest's own move back: cause command, with the new VRAM offset */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    event_log_sync(c);
    from = log.events->len;
    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = h,
                                          .arg = SGHW_PLACEMENT_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    event_log_sync(c);
    d = event_log_one(&log, &(guint){ from }, "SHAREGPU_BO_MOVED", "g0");
    g_assert_cmpstr(qdict_get_str(d, "cause"), ==, "command");
    g_assert_cmpstr(qdict_get_str(d, "placement"), ==, "device");
    g_assert_cmpuint(qdict_get_int(d, "vram-offset"), ==, r.result);
    event_log_one(&log, &from, "SHAREGPU_BO_INVALIDATED", "g1");

    /* a command error names the command and the status */
    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = 0xdead,
                                          .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
    event_log_sync(c);
    d = event_log_one(&log, &from, "SHAREGPU_DEVICE_ERROR", "g0");
    g_assert_cmpstr(qdict_get_str(d, "opcode"), ==, "FILL");
    g_assert_cmpstr(qdict_get_str(d, "status"), ==, "BAD_HANDLE");
    g_assert_cmpuint(qdict_get_int(d, "seqno"), ==, r.seqno);
    g_assert_cmpuint(qdict_get_int(d, "index"), ==, rd(g0, SGHW_REG_ERROR_INDEX));
    g_assert_false(qdict_get_bool(d, "halted"));

    /* fault injection from the monitor */
    qmp_ok(c, "{'execute': 'x-sharegpu-hold', 'arguments': "
           "{'id': 'g0', 'handle': %u, 'ms': 60000}}", h);
    event_log_sync(c);
    d = event_log_one(&log, &from, "SHAREGPU_FENCES_HELD", "g0");
    g_assert_cmpstr(qdict_get_str(d, "kind"), ==, "hold");
    g_assert_cmpuint(qdict_get_int(d, "handle"), ==, h);
    g_assert_cmpuint(qdict_get_int(d, "ms"), ==, 60000);
    qmp_ok(c, "{'execute': 'x-sharegpu-release', 'arguments': {'id': 'g0'}}");
    event_log_sync(c);
    d = event_log_one(&log, &from, "SHAREGPU_FENCES_RELEASED", "g0");
    g_assert_cmpstr(qdict_get_str(d, "kind"), ==, "hold");
    qmp_ok(c, "{'execute': 'x-sharegpu-stall', 'arguments': {'id': 'g1', 'stall': true}}");
    event_log_sync(c);
    d = event_log_one(&log, &from, "SHAREGPU_FENCES_HELD", "g1");
    g_assert_cmpstr(qdict_get_str(d, "kind"), ==, "stall");
    g_assert_false(qdict_haskey(d, "handle"));
    qmp_ok(c, "{'execute': 'x-sharegpu-stall', 'arguments': {'id': 'g1', 'stall': false}}");
    event_log_sync(c);
    d = event_log_one(&log, &from, "SHAREGPU_FENCES_RELEASED", "g1");
    g_assert_cmpstr(qdict_get_str(d, "kind"), ==, "stall");

    /*
     * The rate limit: moves of a buffer nobody imports until an event reports left-out
     * ones (the limit's window is a second: this spans at least two). Every move is either
     * sent or counted.
     */
    suppressed_before = dev_counter(c, "g0", "qmp-events-suppressed");
    g_assert_cmpuint(suppressed_before, ==, 0);
    while (reported == 0) {
        for (int i = 0; i < 50; i++, moves++) {
            r = submit(c, g0, (struct sghw_cmd) {
                .opcode = SGHW_OP_BO_MOVE, .handle = loner,
                .arg = moves % 2 ? SGHW_PLACEMENT_DEVICE : SGHW_PLACEMENT_SYSTEM });
            g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
        }
        event_log_sync(c);
        for (guint i = from; i < log.events->len; i++) {
            QDict *ev = g_ptr_array_index(log.events, i);

            if (!strcmp(qdict_get_str(ev, "event"), "SHAREGPU_BO_MOVED")) {
                d = qdict_get_qdict(ev, "data");
                g_assert_cmpuint(qdict_get_int(d, "handle"), ==, loner);
                received++;
                reported += qdict_get_int(d, "suppressed");
            }
        }
        from = log.events->len;
        g_assert_cmpuint(moves, <, 100000);
    }
    g_assert_cmpuint(received, <, moves);
    g_assert_cmpuint(received + dev_counter(c, "g0", "qmp-events-suppressed"), ==, moves);
    g_assert_cmpuint(reported, <=, moves - received);
    {
        g_autofree char *out = qtest_hmp(c->qs->qts, "info sharegpu g0");

        g_assert_nonnull(strstr(out, "qmp events suppressed"));
    }

    /* recovery and reset are always reported */
    wr(g0, SGHW_REG_JOB_ABORT, SGHW_JOB_ABORT_MAGIC);
    event_log_sync(c);
    d = event_log_one(&log, &from, "SHAREGPU_DEVICE_RESET", "g0");
    g_assert_cmpstr(qdict_get_str(d, "kind"), ==, "job-abort");
    g_assert_cmpuint(qdict_get_int(d, "jobs-cancelled"), ==, 0);
    wr(g1, SGHW_REG_RESET, SGHW_RESET_MAGIC);
    event_log_sync(c);
    d = event_log_one(&log, &from, "SHAREGPU_DEVICE_RESET", "g1");
    g_assert_cmpstr(qdict_get_str(d, "kind"), ==, "device");
    g_assert_false(qdict_haskey(d, "jobs-cancelled"));

    qtest_qmp_set_event_callback(c->qs->qts, NULL, NULL);
    g_ptr_array_free(log.events, true);
    teardown(c);
}

/* x-sharegpu-drop-irq: the next completion interrupt is lost, INT_STATUS still says so. */
static void test_drop_irq(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0];
    uint64_t irqs;

    wr(g, SGHW_REG_INT_MASK, SGHW_INT_CMD);
    submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FENCE });
    wr(g, SGHW_REG_INT_ACK, SGHW_INT_CMD);
    irqs = dev_counter(c, "g0", "interrupts");
    qmp_ok(c, "{'execute': 'x-sharegpu-drop-irq', 'arguments': {'id': 'g0'}}");
    submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FENCE });
    g_assert_cmpuint(dev_counter(c, "g0", "interrupts"), ==, irqs);
    g_assert_cmpuint(dev_counter(c, "g0", "irqs-dropped"), ==, 1);
    g_assert_true(rd(g, SGHW_REG_INT_STATUS) & SGHW_INT_CMD);
    wr(g, SGHW_REG_INT_ACK, SGHW_INT_CMD);
    submit(c, g, (struct sghw_cmd) { .opcode = SGHW_OP_FENCE });
    g_assert_cmpuint(dev_counter(c, "g0", "interrupts"), ==, irqs + 1);
    teardown(c);
}

/* device_add of a sharegpu with property `prop` = `value` (JSON) fails saying `why` */
static void device_add_refused(QTestState *qts, const char *prop, const char *value,
                               const char *why)
{
    QDict *args = qdict_new();
    QDict *resp;

    qdict_put_str(args, "driver", "sharegpu");
    qdict_put_str(args, "id", "bad");
    qdict_put_obj(args, prop, qobject_from_json(value, &error_abort));
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': %p}", args);

    g_assert(qdict_haskey(resp, "error"));
    g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(resp, "error"), "desc"), why));
    qobject_unref(resp);
}

/* engine= and queue-depth= are checked at realize, with errors that say what is wrong. */
static void test_engine_property(void)
{
    /* pc: its PCI bus takes device_add (q35's pcie.0 refuses any hotplug) */
    QTestState *qts = qtest_init("-M pc -nodefaults -S "
                                 "-device sharegpu,id=g0,queue-depth=1,engine=cpu");
    QDict *resp;

    device_add_refused(qts, "engine", "\"nonsense\"", "engine 'nonsense'");
    device_add_refused(qts, "queue-depth", "0", "queue-depth");
    resp = qtest_qmp(qts, "{'execute': 'query-sharegpu'}");
    g_assert_cmpuint(qlist_size(qdict_get_qlist(resp, "return")), ==, 1);
    {
        QDict *d = qobject_to(QDict, qlist_peek(qdict_get_qlist(resp, "return")));

        g_assert_cmpuint(qdict_get_int(d, "queue-depth"), ==, 1);
        g_assert_cmpstr(qdict_get_str(d, "engine"), ==, "cpu");
    }
    qobject_unref(resp);
    qtest_quit(qts);
}

/*
 * The virgl engine completes through virglrenderer's poll fd, watched from QEMU's main loop:
 * two virgl devices share the one fd (one handler), and their jobs completed through polls
 * the main loop asked for (each job waits for its renderer fence before the next).
 */
static void test_engine_virgl_main_loop(void)
{
    Ctx *c = setup_with(",engine=virgl");
    uint32_t a = create_bo(c, &c->g[0], SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t b = create_bo(c, &c->g[1], SGHW_PLACEMENT_DEVICE, NULL);
    uint64_t loop_polls, fallback_polls;
    g_autofree char *hmp = NULL;
    QDict *d;

    g_assert_cmphex(submit(c, &c->g[0], (struct sghw_cmd) {
        .opcode = SGHW_OP_FILL, .handle = a, .len = BO_SIZE, .arg = 0x76190001 }).status,
        ==, SGHW_ST_OK);
    g_assert_cmphex(submit(c, &c->g[1], (struct sghw_cmd) {
        .opcode = SGHW_OP_FILL, .handle = b, .len = BO_SIZE, .arg = 0x76190002 }).status,
        ==, SGHW_ST_OK);
    g_assert_cmphex(checksum(c, &c->g[0], a, BO_SIZE), ==, fill_crc(BO_SIZE, 0x76190001));
    g_assert_cmphex(checksum(c, &c->g[1], b, BO_SIZE), ==, fill_crc(BO_SIZE, 0x76190002));

    d = query_dev(c, "g1");
    g_assert_cmpstr(qdict_get_str(d, "engine"), ==, "virgl");
    loop_polls = qdict_get_int(qdict_get_qdict(d, "counters"), "engine-loop-polls");
    fallback_polls = qdict_get_int(qdict_get_qdict(d, "counters"), "engine-fallback-polls");
    qobject_unref(d);
    if (g_test_verbose()) {
        g_test_message("virgl polls: main loop %" PRIu64 ", fallback %" PRIu64,
                       loop_polls, fallback_polls);
    }
    /* a fallback poll (100 ms without the loop: a loaded host) may take a fence's turn */
    g_assert_cmpuint(loop_polls, >=, 1);
    g_assert_cmpuint(loop_polls + fallback_polls, >=, 4);
    hmp = qtest_hmp(c->qs->qts, "info sharegpu g0");
    g_assert_nonnull(strstr(hmp, "engine event fd: main-loop polls"));
    teardown(c);
}

static void test_q35_monitor(void)
{
    QTestState *qts = qtest_init("-M q35 -nodefaults -device sharegpu,id=g0 "
                                 "-device sharegpu,id=g1,coherent=off");
    QDict *resp = qtest_qmp(qts, "{'execute': 'query-sharegpu'}");
    QList *list = qdict_get_qlist(resp, "return");
    g_autofree char *hmp = NULL;

    g_assert_cmpuint(qlist_size(list), ==, 2);
    qobject_unref(resp);
    hmp = qtest_hmp(qts, "info sharegpu");
    g_assert_nonnull(strstr(hmp, "sharegpu g0"));
    g_assert_nonnull(strstr(hmp, "sharegpu g1"));
    g_assert_nonnull(strstr(hmp, "non-coherent"));
    qtest_quit(qts);
}

static void test_bad_property(void)
{
    /* pc: its PCI bus takes device_add (q35's pcie.0 refuses any hotplug) */
    QTestState *qts = qtest_init("-M pc -nodefaults -S");

    device_add_refused(qts, "vram-size", "3000000", "vram-size must be a power of two");
    device_add_refused(qts, "x-job-chunk", "512", "x-job-chunk must be at least 4096 bytes");
    qtest_quit(qts);
}

/*
 * Issue 12: sharing between VMs through the host broker (docs/hardware.md 13). One broker,
 * three QEMUs: vm-a exports to vm-b; vm-c holds no grant.
 */
typedef struct Broker {
    int ack_timeout_ms;  /* 0: 20 s, long enough for a loaded machine */
    int max_exports;     /* per VM; 0: the broker's default */
    GPid pid;
    char *dir;
    char *sock;
    char *log;
} Broker;

/* The daemon: $SHAREGPU_BROKER, or the one published beside this test binary. */
static char *broker_binary(void)
{
    const char *env = g_getenv("SHAREGPU_BROKER");
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *dir = self ? g_path_get_dirname(self) : NULL;
    char *path;

    if (env && *env) {
        return g_strdup(env);
    }
    path = dir ? g_build_filename(dir, "sharegpu-broker", NULL) : NULL;
    if (path && g_file_test(path, G_FILE_TEST_IS_EXECUTABLE)) {
        return path;
    }
    g_free(path);
    return NULL;
}

/* Starts the daemon (again, for a restart: same socket) and waits until it listens. */
static bool broker_start(Broker *b)
{
    g_autofree char *bin = broker_binary();
    g_autofree char *cmd = NULL;
    g_autofree char *text = NULL;
    char *argv[4] = { (char *)"/bin/sh", (char *)"-c", NULL, NULL };
    int i;

    if (!bin) {
        g_test_skip("no sharegpu-broker binary (set SHAREGPU_BROKER)");
        return false;
    }
    if (!b->dir) {
        b->dir = g_dir_make_tmp("sharegpu-broker-XXXXXX", NULL);
        g_assert_nonnull(b->dir);
        b->sock = g_build_filename(b->dir, "broker.sock", NULL);
        b->log = g_build_filename(b->dir, "broker.log", NULL);
    }
    unlink(b->log);
    cmd = g_strdup_printf("exec '%s' --socket '%s' --ack-timeout-ms %d --max-exports %d "
                          ">'%s' 2>&1", bin, b->sock,
                          b->ack_timeout_ms ? b->ack_timeout_ms : 20000,
                          b->max_exports ? b->max_exports : 1024, b->log);
    argv[2] = cmd;
    g_assert_true(g_spawn_async(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                &b->pid, NULL));
    for (i = 0; i < 2000; i++) {
        g_free(text);
        text = NULL;
        if (g_file_get_contents(b->log, &text, NULL, NULL) && strstr(text, "ready on")) {
            return true;
        }
        g_usleep(5000);
    }
    g_error("sharegpu-broker did not start: %s", text ? text : "(no output)");
}

static void broker_stop(Broker *b)
{
    int status;

    kill(b->pid, SIGTERM);
    g_assert_cmpint(waitpid(b->pid, &status, 0), ==, b->pid);
    g_spawn_close_pid(b->pid);
}

static void broker_free(Broker *b)
{
    const char *names[] = { "vm-a.log", "vm-b.log", "vm-c.log", "broker.log" };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(names); i++) {
        g_autofree char *path = g_build_filename(b->dir, names[i], NULL);

        unlink(path);
    }
    unlink(b->sock);
    rmdir(b->dir);
    g_free(b->dir);
    g_free(b->sock);
    g_free(b->log);
}

/* One VM with one sharegpu device g0 linked to the broker as `name`; guest errors logged. */
static Ctx *vm_boot(Broker *b, const char *name)
{
    Ctx *c = g_new0(Ctx, 1);

    c->qs = qtest_pc_boot("-nodefaults -object sharegpu-broker,id=b0,path=%s,vm-name=%s "
                          "-device sharegpu,id=g0,vram-size=4M,broker=b0 "
                          "-d guest_errors -D %s/%s.log", b->sock, name, b->dir, name);
    qpci_device_foreach(c->qs->pcibus, SGHW_PCI_VENDOR_ID, SGHW_PCI_DEVICE_ID, found_fn, c);
    g_assert_cmpint(c->found, ==, 1);
    gpu_init(c, &c->g[0]);
    g_assert_true(rd(&c->g[0], SGHW_REG_FEATURES) & SGHW_FEAT_BROKER);
    return c;
}

static void vm_free(Ctx *c)
{
    g_free(c->g[0].dev);
    qtest_shutdown(c->qs);
    g_free(c);
}

static uint64_t peer_name(Ctx *c, const char *name)
{
    struct sghw_peer_name p = { { 0 } };
    uint64_t gpa = qmalloc(c->qs, sizeof(p));

    g_strlcpy(p.name, name, sizeof(p.name));
    qtest_memwrite(c->qs->qts, gpa, &p, sizeof(p));
    return gpa;
}

/* A broker and two VMs, "vm-a" and "vm-b", on it; false (the test skips) without a broker. */
static bool broker_two_vms(Broker *b, Ctx **va, Ctx **vb)
{
    if (!broker_start(b)) {
        return false;
    }
    *va = vm_boot(b, "vm-a");
    *vb = vm_boot(b, "vm-b");
    return true;
}

static void broker_two_vms_free(Broker *b, Ctx *va, Ctx *vb)
{
    vm_free(va);
    vm_free(vb);
    broker_stop(b);
    broker_free(b);
}

static struct sghw_cmd broker_export(Ctx *c, uint32_t h, const char *peer, uint32_t right)
{
    return submit(c, &c->g[0], (struct sghw_cmd) {
        .opcode = SGHW_OP_BROKER_EXPORT, .handle = h, .arg = right,
        .off0 = peer ? peer_name(c, peer) : 0 });
}

static struct sghw_cmd broker_import(Ctx *c, const uint8_t *id)
{
    struct sghw_cmd r = { .opcode = SGHW_OP_BROKER_IMPORT };

    memcpy(r.uuid, id, sizeof(r.uuid));
    return submit(c, &c->g[0], r);
}

/* Waits (the broker's messages reach the QEMU asynchronously) for an event of `type`. */
static void wait_event(Ctx *c, uint32_t type, uint32_t handle, struct sghw_event *out)
{
    struct sghw_event ev;
    int i;

    for (i = 0; i < 4000; i++) {
        while (pop_event(c, &c->g[0], &ev)) {
            if (ev.type == type && ev.handle == handle) {
                if (out) {
                    *out = ev;
                }
                return;
            }
        }
        g_usleep(5000);
    }
    g_error("no event %u for handle 0x%x", type, handle);
}

static uint32_t win_rd(Ctx *c, uint64_t off)
{
    return qpci_io_readl(c->g[0].dev, c->g[0].vram, off);
}

static QDict *broker_info(Ctx *c)
{
    QDict *resp = qtest_qmp(c->qs->qts, "{'execute': 'query-sharegpu-broker'}");
    QList *list = qdict_get_qlist(resp, "return");
    QDict *info;

    g_assert_nonnull(list);
    info = qobject_to(QDict, qlist_peek(list));
    g_assert_nonnull(info);
    qobject_ref(info);
    qobject_unref(resp);
    return info;
}

/*
 * The value of `field` (a bool or an integer) of this VM's entry for `handle` in the list
 * `list` ("exports" or "imports") of its query-sharegpu-broker answer.
 */
static int64_t broker_entry_field(Ctx *c, const char *list, uint32_t handle,
                                  const char *field)
{
    QDict *info = broker_info(c);
    const QListEntry *e;
    int64_t v = -1;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(info, list), e) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));

        if (qdict_get_int(d, "handle") == handle) {
            v = qobject_type(qdict_get(d, field)) == QTYPE_QBOOL ? qdict_get_bool(d, field)
                                                                : qdict_get_int(d, field);
        }
    }
    qobject_unref(info);
    g_assert_cmpint(v, >=, 0);
    return v;
}

/* Whether this VM's export of `handle` still holds the storage it moved from. */
static bool broker_export_moving(Ctx *c, uint32_t handle)
{
    return broker_entry_field(c, "exports", handle, "moving");
}

/* The broker's export of `id` in a query-sharegpu-broker answer (borrowed). */
static QDict *broker_host_export(QDict *info, const uint8_t *id)
{
    QList *list = qdict_get_qlist(info, "host-exports");
    g_autofree char *text = g_malloc0(33);
    const QListEntry *e;
    int i;

    for (i = 0; i < 16; i++) {
        sprintf(text + 2 * i, "%02x", id[i]);
    }
    g_assert_nonnull(list);
    QLIST_FOREACH_ENTRY(list, e) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(d, "broker-id"), text)) {
            return d;
        }
    }
    g_error("the broker does not list export %s", text);
}

static void test_broker_multi_vm(void)
{
    Broker b = { 0 };
    Ctx *va, *vb, *vc;
    g_autofree uint8_t *bytes = g_malloc(BO_SIZE);
    struct sghw_cmd r;
    struct sghw_event ev;
    struct sghw_bo_info bi;
    QDict *hx;
    uint8_t id_rw[16], id_ro[16];
    uint32_t a_rw, a_ro, b_rw, b_ro, crc_ro;
    uint64_t win_rw, win_ro, copied;
    QDict *info, *resp;
    g_autofree char *hmp = NULL;
    g_autofree char *log_path = NULL;
    g_autofree char *log = NULL;
    int i;

    if (!broker_start(&b)) {
        return;
    }
    va = vm_boot(&b, "vm-a");
    vb = vm_boot(&b, "vm-b");
    vc = vm_boot(&b, "vm-c");

    /* a VRAM buffer: the export moves it to storage of its own first */
    a_rw = create_bo(va, &va->g[0], SGHW_PLACEMENT_DEVICE, NULL);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a_rw,
                                                  .len = BO_SIZE, .arg = 0xa1a1a1a1 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    drain_events(va, &va->g[0]);
    r = broker_export(va, a_rw, "vm-b", SGHW_BROKER_RIGHT_READ_WRITE);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, BO_SIZE);
    memcpy(id_rw, r.uuid, sizeof(id_rw));
    /* the move into storage of its own is the command's own (as BO_MOVE's) */
    g_assert_true(pop_event(va, &va->g[0], &ev));
    g_assert_cmpuint(ev.type, ==, SGHW_EVT_BO_MOVED);
    g_assert_cmpuint(ev.handle, ==, a_rw);
    g_assert_cmpuint(ev.placement, ==, SGHW_PLACEMENT_SYSTEM);
    g_assert_cmpuint(ev.flags, ==, SGHW_EVT_F_OWN_COMMAND);
    r = broker_export(va, a_rw, NULL, 0);  /* again: the same id */
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpmem(r.uuid, 16, id_rw, 16);
    /* bad guest input: errors, no abort */
    r = broker_export(va, a_rw, "bad name!", SGHW_BROKER_RIGHT_READ);
    g_assert_cmpuint(r.status, ==, SGHW_ST_INVALID);
    r = broker_export(va, a_rw, "vm-b", 3);
    g_assert_cmpuint(r.status, ==, SGHW_ST_INVALID);
    r = broker_export(va, 0x12345, "vm-b", SGHW_BROKER_RIGHT_READ);
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
    query_bo(va, &va->g[0], a_rw, &bi, SGHW_ST_OK);
    g_assert_cmphex(bi.flags & SGHW_BO_F_BROKER_EXPORTED, ==, SGHW_BO_F_BROKER_EXPORTED);
    g_assert_cmpuint(bi.placement, ==, SGHW_PLACEMENT_SYSTEM);
    /* a move to VRAM is refused while other VMs may map it */
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = a_rw,
                                                  .arg = SGHW_PLACEMENT_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BUSY);

    /* vm-b imports and reads vm-a's bytes through its window: zero copy */
    copied = dev_counter(vb, "g0", "bytes-copied");
    r = broker_import(vb, id_rw);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    b_rw = r.out_handle;
    g_assert_cmphex(b_rw & SGHW_REMOTE_HANDLE_BIT, ==, SGHW_REMOTE_HANDLE_BIT);
    g_assert_cmpuint(r.result, ==, BO_SIZE | SGHW_BROKER_IMPORT_WRITABLE);
    r = broker_import(vb, id_rw);  /* again: the same handle */
    g_assert_cmpuint(r.out_handle, ==, b_rw);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = b_rw, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    win_rw = r.result;
    g_assert_cmpuint(win_rw, ==, vb->g[0].vram_size);
    query_bo(vb, &vb->g[0], b_rw, &bi, SGHW_ST_OK);
    g_assert_cmphex(bi.flags, ==, SGHW_BO_F_IMPORTED | SGHW_BO_F_REMOTE | SGHW_BO_F_MAPPED);
    g_assert_cmpuint(bi.size, ==, BO_SIZE);
    g_assert_cmpmem(bi.uuid, 16, id_rw, 16);
    for (i = 0; i < BO_SIZE; i += 4096) {
        g_assert_cmphex(win_rd(vb, win_rw + i), ==, 0xa1a1a1a1);
    }
    /* a write through vm-b's window lands in vm-a's buffer */
    qpci_io_writel(vb->g[0].dev, vb->g[0].vram, win_rw + 64, 0x0b0b0b0b);
    memset(bytes, 0xa1, BO_SIZE);
    memset(bytes + 64, 0x0b, 4);
    g_assert_cmphex(checksum(va, &va->g[0], a_rw, BO_SIZE), ==, crc32c_ref(bytes, BO_SIZE));
    g_assert_cmpuint(dev_counter(vb, "g0", "bytes-copied"), ==, copied);
    /* no transfers on remote imports (jobs: /sharegpu/broker/remote-jobs) */
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_TRANSFER_TO_DEVICE,
                                                  .handle = b_rw, .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_INVALID);

    /* vm-c has no grant */
    r = broker_import(vc, id_rw);
    g_assert_cmpuint(r.status, ==, SGHW_ST_ACCESS_DENIED);

    /* a read-only grant: mapped read-only, a write changes nothing */
    a_ro = create_bo(va, &va->g[0], SGHW_PLACEMENT_SYSTEM, NULL);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a_ro,
                                                  .len = BO_SIZE, .arg = 0x5e5e5e5e });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    crc_ro = checksum(va, &va->g[0], a_ro, BO_SIZE);
    r = broker_export(va, a_ro, "vm-b", SGHW_BROKER_RIGHT_READ);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    memcpy(id_ro, r.uuid, sizeof(id_ro));
    r = broker_import(vb, id_ro);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    b_ro = r.out_handle;
    g_assert_cmpuint(r.result, ==, BO_SIZE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = b_ro, .off0 = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    win_ro = r.result;
    g_assert_cmphex(win_rd(vb, win_ro + 128), ==, 0x5e5e5e5e);
    qpci_io_writel(vb->g[0].dev, vb->g[0].vram, win_ro + 128, 0xdeadbeef);
    g_assert_cmphex(win_rd(vb, win_ro + 128), ==, 0x5e5e5e5e);
    g_assert_cmphex(checksum(va, &va->g[0], a_ro, BO_SIZE), ==, crc_ro);
    log_path = g_build_filename(b.dir, "vm-b.log", NULL);
    g_assert_true(g_file_get_contents(log_path, &log, NULL, NULL));
    g_assert_nonnull(strstr(log, "write of 4 bytes to a read-only import"));

    /* the monitors: who exports what to whom, who imports what */
    info = broker_info(va);
    g_assert_true(qdict_get_bool(info, "connected"));
    g_assert_cmpstr(qdict_get_str(info, "vm-name"), ==, "vm-a");
    g_assert_cmpuint(qlist_size(qdict_get_qlist(info, "exports")), ==, 2);
    g_assert_nonnull(strstr(qdict_get_str(info, "broker-status"), "vm-b"));
    g_assert_cmpuint(qdict_get_int(info, "denied"), ==, 1);  /* vm-c */
    g_assert_cmpuint(qlist_size(qdict_get_qlist(info, "peers")), ==, 3);
    hx = broker_host_export(info, id_rw);
    g_assert_cmpstr(qdict_get_str(hx, "owner"), ==, "vm-a");
    g_assert_cmpstr(qstring_get_str(qobject_to(QString, qlist_peek(
        qdict_get_qlist(hx, "grants")))), ==, "vm-b:rw");
    g_assert_cmpstr(qstring_get_str(qobject_to(QString, qlist_peek(
        qdict_get_qlist(hx, "importers")))), ==, "vm-b");
    qobject_unref(info);
    info = broker_info(vb);
    g_assert_cmpuint(qlist_size(qdict_get_qlist(info, "imports")), ==, 2);
    qobject_unref(info);
    hmp = qtest_hmp(va->qs->qts, "info sharegpu-broker");
    g_assert_nonnull(strstr(hmp, "vm-b:rw"));
    g_assert_nonnull(strstr(hmp, "vm-b:ro"));

    /* vm-a moves the buffer: vm-b is invalidated, re-maps, and the data is intact */
    drain_events(vb, &vb->g[0]);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = a_rw,
                                                  .arg = SGHW_PLACEMENT_SYSTEM });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    wait_event(vb, SGHW_EVT_BO_INVALIDATED, b_rw, &ev);
    g_assert_cmpuint(ev.generation, ==, 2);
    g_assert_cmphex(win_rd(vb, win_rw + 64), ==, 0xffffffff);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = b_rw, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(win_rd(vb, win_rw + 64), ==, 0x0b0b0b0b);
    g_assert_cmphex(win_rd(vb, win_rw + 128), ==, 0xa1a1a1a1);
    /* vm-b acknowledged: vm-a's old storage is released (RELEASE_OK) */
    for (i = 0; i < 1000 && broker_export_moving(va, a_rw); i++) {
        g_usleep(10000);
    }
    g_assert_cmpint(i, <, 1000);
    /* and vm-a's own accesses go to the new storage vm-b now maps */
    qpci_io_writel(vb->g[0].dev, vb->g[0].vram, win_rw + 64, 0x0c0c0c0c);
    memset(bytes + 64, 0x0c, 4);
    g_assert_cmphex(checksum(va, &va->g[0], a_rw, BO_SIZE), ==, crc32c_ref(bytes, BO_SIZE));

    /* vm-a withdraws the read-only grant: that import is revoked */
    drain_events(vb, &vb->g[0]);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_GRANT,
                                                  .handle = a_ro, .arg = 0,
                                                  .off0 = peer_name(va, "vm-b") });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    wait_event(vb, SGHW_EVT_BO_REVOKED, b_ro, &ev);
    g_assert_cmpuint(ev.placement, ==, SGHW_REVOKE_GRANT_WITHDRAWN);
    query_bo(vb, &vb->g[0], b_ro, &bi, SGHW_ST_OK);
    g_assert_cmphex(bi.flags, ==, SGHW_BO_F_IMPORTED | SGHW_BO_F_REMOTE |
                    SGHW_BO_F_READ_ONLY | SGHW_BO_F_REVOKED);
    g_assert_cmphex(win_rd(vb, win_ro + 128), ==, 0xffffffff);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = b_ro, .off0 = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_DEVICE);

    /* vm-a goes away: vm-b's imports are revoked, everything fails at once (no hang) */
    drain_events(vb, &vb->g[0]);
    qtest_kill_qemu(va->qs->qts);
    wait_event(vb, SGHW_EVT_BO_REVOKED, b_rw, &ev);
    g_assert_cmpuint(ev.placement, ==, SGHW_REVOKE_EXPORTER_GONE);
    g_assert_cmphex(win_rd(vb, win_rw + 64), ==, 0xffffffff);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = b_rw, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_DEVICE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = b_rw,
                                                  .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_DEVICE);
    r = broker_import(vb, id_rw);
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_DEVICE);
    /* QMP: the withdrawn grant's revocation, then vm-a's exit */
    resp = qtest_qmp_eventwait_ref(vb->qs->qts, "SHAREGPU_BROKER_REVOKED");
    g_assert_cmpuint(qdict_get_int(qdict_get_qdict(resp, "data"), "handle"), ==, b_ro);
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(resp, "data"), "reason"), ==,
                    "grant-withdrawn");
    qobject_unref(resp);
    resp = qtest_qmp_eventwait_ref(vb->qs->qts, "SHAREGPU_BROKER_REVOKED");
    g_assert_cmpuint(qdict_get_int(qdict_get_qdict(resp, "data"), "handle"), ==, b_rw);
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(resp, "data"), "reason"), ==,
                    "exporter-gone");
    qobject_unref(resp);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_DESTROY,
                                                  .handle = b_rw });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);

    vm_free(va);
    vm_free(vb);
    vm_free(vc);
    broker_stop(&b);
    broker_free(&b);
}

/* vm `c`'s new SYSTEM BO filled with `pattern`, broker-exported to `peer` with `right`. */
static uint32_t broker_exported_bo(Ctx *c, uint32_t pattern, const char *peer,
                                   uint32_t right, uint8_t id[16])
{
    uint32_t h = create_bo(c, &c->g[0], SGHW_PLACEMENT_SYSTEM, NULL);
    struct sghw_cmd r;

    r = submit(c, &c->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = h,
                                                .len = BO_SIZE, .arg = pattern });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = broker_export(c, h, peer, right);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    memcpy(id, r.uuid, 16);
    return h;
}

/* This VM's broker-status line of peer `name` ("peer N name NAME ... imports K"): K. */
static int64_t broker_peer_imports(Ctx *c, const char *name)
{
    QDict *info = broker_info(c);
    g_autofree char *key = g_strdup_printf(" name %s ", name);
    const char *line = strstr(qdict_get_str(info, "broker-status"), key);
    const char *imports = line ? strstr(line, " imports ") : NULL;
    int64_t n = imports ? g_ascii_strtoll(imports + 9, NULL, 10) : -1;

    qobject_unref(info);
    g_assert_cmpint(n, >=, 0);
    return n;
}

/* Whether this VM's broker-status text contains `text`. */
static bool broker_status_has(Ctx *c, const char *text)
{
    QDict *info = broker_info(c);
    bool has = strstr(qdict_get_str(info, "broker-status"), text) != NULL;

    qobject_unref(info);
    return has;
}

/*
 * The device accepts offers: what vm-a grants to vm-b is imported for vm-b's QEMU at the
 * grant, before its guest asks. An offer the guest has not taken does not hold up vm-a's
 * move (vm-b's QEMU acknowledges the invalidation at once, no ack timeout), the guest's
 * later import gets the moved storage, and an offer revoked before the guest took it is
 * released by vm-b's QEMU (the broker forgets it).
 */
static void test_broker_offers(void)
{
    Broker b = { 0 };
    Ctx *va, *vb;
    struct sghw_cmd r;
    uint8_t id_moved[16], id_dropped[16];
    uint32_t a_moved, a_dropped, b_moved;
    uint64_t win;
    QDict *info;
    int i;

    if (!broker_two_vms(&b, &va, &vb)) {
        return;
    }
    a_moved = broker_exported_bo(va, 0x0f0f0f0f, "vm-b", SGHW_BROKER_RIGHT_READ_WRITE,
                                 id_moved);
    a_dropped = broker_exported_bo(va, 0x0d0d0d0d, "vm-b", SGHW_BROKER_RIGHT_READ, id_dropped);
    /* imported for vm-b at the grant: no guest of vm-b has asked */
    info = broker_info(va);
    g_assert_cmpstr(qstring_get_str(qobject_to(QString, qlist_peek(qdict_get_qlist(
        broker_host_export(info, id_moved), "importers")))), ==, "vm-b");
    qobject_unref(info);
    g_assert_cmpint(broker_peer_imports(va, "vm-b"), ==, 2);

    /* vm-a moves one: vm-b's QEMU acknowledges for the offer nobody took, long before the
     * broker's 20 s acknowledgement timeout */
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE,
                                                  .handle = a_moved,
                                                  .arg = SGHW_PLACEMENT_SYSTEM });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    for (i = 0; i < 1000 && broker_export_moving(va, a_moved); i++) {
        g_usleep(10000);
    }
    g_assert_cmpint(i, <, 1000);
    g_assert_true(broker_status_has(va, "ack-timeouts 0"));
    g_assert_true(broker_status_has(va, "revocations 0"));
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = a_moved,
                                                  .len = 4096, .arg = 0x0e0e0e0e });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);

    /* vm-b's guest imports now: the moved storage, vm-a's latest bytes */
    r = broker_import(vb, id_moved);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    b_moved = r.out_handle;
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = b_moved, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    win = r.result;
    g_assert_cmphex(win_rd(vb, win), ==, 0x0e0e0e0e);
    g_assert_cmphex(win_rd(vb, win + 8192), ==, 0x0f0f0f0f);

    /* vm-a unexports the other before vm-b's guest took it: vm-b's QEMU releases it */
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_UNEXPORT,
                                                  .handle = a_dropped });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    for (i = 0; i < 1000 && broker_peer_imports(va, "vm-b") != 1; i++) {
        g_usleep(10000);
    }
    g_assert_cmpint(broker_peer_imports(va, "vm-b"), ==, 1);
    /* and its guest asking for it now is told it does not exist (not that it was revoked) */
    r = broker_import(vb, id_dropped);
    g_assert_cmpuint(r.status, ==, SGHW_ST_NOT_FOUND);

    broker_two_vms_free(&b, va, vb);
}


/* `field` of this VM's remote import `handle` (query-sharegpu-broker). */
static int64_t broker_import_field(Ctx *c, uint32_t handle, const char *field)
{
    return broker_entry_field(c, "imports", handle, field);
}

/*
 * Jobs on remote imports (1.7): vm-b's CHECKSUM reads vm-a's pages and its FILL writes them,
 * with nothing copied; COPY works both ways with a local buffer; a READ grant refuses every
 * job writing it (ACCESS_DENIED, data unchanged). Then vm-a relocates the buffer while a job
 * of vm-b on the old pages is stalled: vm-b's acknowledgement waits for that job, so vm-a
 * keeps its old storage until the job has completed (with the right result).
 */
static void test_broker_remote_jobs(void)
{
    Broker b = { 0 };
    Ctx *va, *vb;
    g_autofree uint8_t *bytes = g_malloc(BO_SIZE);
    g_autofree char *log_path = NULL;
    g_autofree char *log = NULL;
    struct sghw_cmd r, job[1];
    uint8_t id_rw[16], id_ro[16];
    uint32_t a_rw, a_ro, b_rw, b_ro, b_local, crc_ro, crc_rw;
    uint64_t copied_a, copied_b, addr[1];
    QDict *info;
    int i;

    if (!broker_two_vms(&b, &va, &vb)) {
        return;
    }
    a_rw = broker_exported_bo(va, 0xa1a1a1a1, "vm-b", SGHW_BROKER_RIGHT_READ_WRITE, id_rw);
    a_ro = broker_exported_bo(va, 0x5e5e5e5e, "vm-b", SGHW_BROKER_RIGHT_READ, id_ro);
    crc_ro = checksum(va, &va->g[0], a_ro, BO_SIZE);
    r = broker_import(vb, id_rw);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    b_rw = r.out_handle;
    r = broker_import(vb, id_ro);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    b_ro = r.out_handle;
    g_assert_false(broker_import_field(vb, b_rw, "job-buffer"));

    /* vm-b's jobs on vm-a's pages, never mapped in vm-b's window: nothing is copied */
    copied_a = dev_counter(va, "g0", "bytes-copied");
    copied_b = dev_counter(vb, "g0", "bytes-copied");
    g_assert_cmphex(checksum(vb, &vb->g[0], b_rw, BO_SIZE), ==,
                    fill_crc(BO_SIZE, 0xa1a1a1a1));
    g_assert_true(broker_import_field(vb, b_rw, "job-buffer"));
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = b_rw,
                                                  .off0 = 4096, .len = 4096,
                                                  .arg = 0x0b0b0b0b });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    memset(bytes, 0xa1, BO_SIZE);
    memset(bytes + 4096, 0x0b, 4096);
    crc_rw = crc32c_ref(bytes, BO_SIZE);
    g_assert_cmphex(checksum(va, &va->g[0], a_rw, BO_SIZE), ==, crc_rw);
    g_assert_cmphex(checksum(vb, &vb->g[0], b_ro, BO_SIZE), ==, crc_ro);
    g_assert_cmpuint(dev_counter(va, "g0", "bytes-copied"), ==, copied_a);
    g_assert_cmpuint(dev_counter(vb, "g0", "bytes-copied"), ==, copied_b);

    /* COPY out of the READ grant into a local buffer, and from it into the rw import */
    b_local = create_bo(vb, &vb->g[0], SGHW_PLACEMENT_DEVICE, NULL);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_COPY, .handle = b_local,
                                                  .handle2 = b_ro, .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(checksum(vb, &vb->g[0], b_local, BO_SIZE), ==, crc_ro);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_COPY, .handle = b_rw,
                                                  .handle2 = b_local, .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    memset(bytes, 0x5e, 4096);
    crc_rw = crc32c_ref(bytes, BO_SIZE);
    g_assert_cmphex(checksum(va, &va->g[0], a_rw, BO_SIZE), ==, crc_rw);

    /* the READ grant: no job writes it; bad input is an error, not a crash */
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = b_ro,
                                                  .len = 4096, .arg = 0xdeadbeef });
    g_assert_cmpuint(r.status, ==, SGHW_ST_ACCESS_DENIED);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_COPY, .handle = b_ro,
                                                  .handle2 = b_local, .off1 = 4096,
                                                  .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_ACCESS_DENIED);
    g_assert_cmphex(checksum(va, &va->g[0], a_ro, BO_SIZE), ==, crc_ro);
    log_path = g_build_filename(b.dir, "vm-b.log", NULL);
    g_assert_true(g_file_get_contents(log_path, &log, NULL, NULL));
    g_assert_nonnull(strstr(log, "which is granted READ only"));
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = b_rw,
                                                  .off0 = BO_SIZE, .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OUT_OF_RANGE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM,
                                                  .handle = SGHW_REMOTE_HANDLE_BIT | 77,
                                                  .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CACHE_FLUSH,
                                                  .handle = b_rw, .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CACHE_INVALIDATE,
                                                  .handle = b_rw, .off0 = BO_SIZE,
                                                  .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OUT_OF_RANGE);

    /* vm-a relocates while vm-b's job on the old pages is stalled */
    qmp_ok(vb, "{'execute': 'x-sharegpu-stall', 'arguments': {'id': 'g0', 'stall': true}}");
    job[0] = (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = b_rw, .len = BO_SIZE };
    post(vb, &vb->g[0], job, 1, addr);
    wait_job_state(vb, "g0", "stalled");
    drain_events(vb, &vb->g[0]);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = a_rw,
                                                  .arg = SGHW_PLACEMENT_SYSTEM });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    wait_event(vb, SGHW_EVT_BO_INVALIDATED, b_rw, NULL);
    /* vm-b got the invalidation, but its acknowledgement waits for the job */
    info = broker_info(vb);
    g_assert_cmpuint(qdict_get_int(info, "acks-deferred"), ==, 1);
    qobject_unref(info);
    g_assert_cmpint(broker_import_field(vb, b_rw, "acks-pending"), ==, 1);
    g_assert_false(broker_import_field(vb, b_rw, "job-buffer"));
    g_assert_true(broker_export_moving(va, a_rw));
    qmp_ok(vb, "{'execute': 'x-sharegpu-release', 'arguments': {'id': 'g0'}}");
    for (i = 0; i < 20000 && read_cmd(vb, addr[0]).status == SGHW_ST_PENDING; i++) {
        g_usleep(500);
    }
    r = read_cmd(vb, addr[0]);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex((uint32_t)r.result, ==, crc_rw);
    /* the job is done: vm-b acknowledged, vm-a released the old storage */
    for (i = 0; i < 1000 && broker_export_moving(va, a_rw); i++) {
        g_usleep(10000);
    }
    g_assert_cmpint(i, <, 1000);
    g_assert_cmpint(broker_import_field(vb, b_rw, "acks-pending"), ==, 0);
    /* the next job imports the new storage, which vm-a uses too */
    g_assert_cmphex(checksum(vb, &vb->g[0], b_rw, BO_SIZE), ==, crc_rw);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = b_rw,
                                                  .len = BO_SIZE, .arg = 0x77777777 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(checksum(va, &va->g[0], a_rw, BO_SIZE), ==,
                    fill_crc(BO_SIZE, 0x77777777));

    /* revoked: every job on it fails at once */
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_UNEXPORT,
                                                  .handle = a_rw });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    wait_event(vb, SGHW_EVT_BO_REVOKED, b_rw, NULL);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = b_rw,
                                                  .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_DEVICE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_COPY, .handle = b_local,
                                                  .handle2 = b_rw, .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_DEVICE);
    g_assert_false(broker_import_field(vb, b_rw, "job-buffer"));

    broker_two_vms_free(&b, va, vb);
}

/*
 * The broker goes away and comes back: the importer's import is revoked (BROKER_GONE), the
 * exporter's guest learns its export is lost (BO_REVOKED with SGHW_EVT_F_EXPORT), both QEMUs
 * reconnect by themselves, and a new export works. An unexport revokes too.
 */
static bool broker_wait_connected(Ctx *c)
{
    int i;

    for (i = 0; i < 1000; i++) {
        QDict *info = broker_info(c);
        bool up = qdict_get_bool(info, "connected");

        qobject_unref(info);
        if (up) {
            return true;
        }
        g_usleep(10000);
    }
    return false;
}

static void test_broker_restart(void)
{
    Broker b = { 0 };
    Ctx *va, *vb;
    struct sghw_cmd r;
    struct sghw_event ev;
    uint8_t id[16];
    uint32_t a, bh;
    QDict *info;

    if (!broker_two_vms(&b, &va, &vb)) {
        return;
    }
    a = broker_exported_bo(va, 0x77777777, "vm-b", SGHW_BROKER_RIGHT_READ, id);
    r = broker_import(vb, id);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    bh = r.out_handle;
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = bh, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(win_rd(vb, r.result), ==, 0x77777777);
    drain_events(va, &va->g[0]);
    drain_events(vb, &vb->g[0]);

    broker_stop(&b);
    wait_event(vb, SGHW_EVT_BO_REVOKED, bh, &ev);
    g_assert_cmpuint(ev.placement, ==, SGHW_REVOKE_BROKER_GONE);
    g_assert_cmphex(win_rd(vb, vb->g[0].vram_size), ==, 0xffffffff);
    wait_event(va, SGHW_EVT_BO_REVOKED, a, &ev);
    g_assert_cmpuint(ev.placement, ==, SGHW_REVOKE_BROKER_GONE);
    g_assert_cmpuint(ev.flags, ==, SGHW_EVT_F_EXPORT);
    info = broker_info(va);
    g_assert_false(qdict_get_bool(info, "connected"));
    g_assert_cmpuint(qlist_size(qdict_get_qlist(info, "exports")), ==, 0);
    qobject_unref(info);
    /* without the broker: NO_DEVICE at once */
    r = broker_export(va, a, "vm-b", SGHW_BROKER_RIGHT_READ);
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_DEVICE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = bh, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_DEVICE);

    /* the broker comes back: both reconnect, a new export works; the buffer may move */
    g_assert_true(broker_start(&b));
    g_assert_true(broker_wait_connected(va));
    g_assert_true(broker_wait_connected(vb));
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = a,
                                                  .arg = SGHW_PLACEMENT_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = broker_export(va, a, "vm-b", SGHW_BROKER_RIGHT_READ_WRITE);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_true(memcmp(r.uuid, id, sizeof(id)) != 0);  /* a new id */
    memcpy(id, r.uuid, sizeof(id));
    r = broker_import(vb, id);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.out_handle, !=, bh);
    bh = r.out_handle;
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = bh, .off0 = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(win_rd(vb, r.result + 8), ==, 0x77777777);

    /* an unexport revokes */
    drain_events(vb, &vb->g[0]);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_UNEXPORT,
                                                  .handle = a });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, 1);
    wait_event(vb, SGHW_EVT_BO_REVOKED, bh, &ev);
    g_assert_cmpuint(ev.placement, ==, SGHW_REVOKE_UNEXPORTED);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_UNEXPORT,
                                                  .handle = a });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, 0);

    broker_two_vms_free(&b, va, vb);
}

/*
 * An importer that does not acknowledge an invalidation in time (its QEMU is stopped) is
 * revoked (ACK_TIMEOUT) and the exporter's old storage released anyway; nothing waits for
 * the stopped VM.
 */
static void test_broker_ack_timeout(void)
{
    Broker b = { .ack_timeout_ms = 300 };
    Ctx *va, *vb;
    struct sghw_cmd r;
    struct sghw_event ev;
    uint32_t a, bh;
    pid_t qemu_b;
    int i;

    if (!broker_two_vms(&b, &va, &vb)) {
        return;
    }
    a = create_bo(va, &va->g[0], SGHW_PLACEMENT_SYSTEM, NULL);
    r = broker_export(va, a, "vm-b", SGHW_BROKER_RIGHT_READ_WRITE);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = broker_import(vb, r.uuid);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    bh = r.out_handle;
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = bh, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    drain_events(vb, &vb->g[0]);

    qemu_b = qtest_pid(vb->qs->qts);
    g_assert_cmpint(kill(qemu_b, SIGSTOP), ==, 0);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = a,
                                                  .arg = SGHW_PLACEMENT_SYSTEM });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    for (i = 0; i < 1000 && broker_export_moving(va, a); i++) {
        g_usleep(10000);
    }
    g_assert_cmpint(i, <, 1000);
    g_assert_cmpint(kill(qemu_b, SIGCONT), ==, 0);
    wait_event(vb, SGHW_EVT_BO_REVOKED, bh, &ev);
    g_assert_cmpuint(ev.placement, ==, SGHW_REVOKE_ACK_TIMEOUT);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = bh, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_NO_DEVICE);

    broker_two_vms_free(&b, va, vb);
}

/*
 * Bad guest input on the broker commands and remote handles completes with an error status
 * (and a guest-error log line), never aborts; a reset of the exporter unexports (the importer
 * is revoked, UNEXPORTED) and one of the importer releases its imports.
 */
/*
 * Contract 1.8: BROKER_EXPORT completes before the broker answers, so a refusal arrives
 * afterwards: BO_REVOKED with EXPORT and reason EXPORT_REFUSED, and the BO (contents kept)
 * is no longer broker-exported. The broker here takes one export per VM.
 */
static void test_broker_export_refused(void)
{
    Broker b = { .max_exports = 1 };
    struct sghw_event ev;
    struct sghw_bo_info bi;
    struct sghw_cmd r;
    uint32_t h1, h2, crc;
    uint8_t id2[16];
    QDict *info;
    Ctx *va;

    if (!broker_start(&b)) {
        return;
    }
    va = vm_boot(&b, "vm-a");
    h1 = create_bo(va, &va->g[0], SGHW_PLACEMENT_SYSTEM, NULL);
    h2 = create_bo(va, &va->g[0], SGHW_PLACEMENT_SYSTEM, NULL);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = h2,
                                                  .len = BO_SIZE, .arg = 0x5eed5eed });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = h2,
                                                  .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    crc = r.result;
    r = broker_export(va, h1, NULL, 0);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    /* over the broker's limit: the command still completes OK, with an id */
    r = broker_export(va, h2, NULL, 0);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, BO_SIZE);
    memcpy(id2, r.uuid, sizeof(id2));
    wait_event(va, SGHW_EVT_BO_REVOKED, h2, &ev);
    g_assert_cmpuint(ev.flags & SGHW_EVT_F_EXPORT, ==, SGHW_EVT_F_EXPORT);
    g_assert_cmpuint(ev.placement, ==, SGHW_REVOKE_EXPORT_REFUSED);
    query_bo(va, &va->g[0], h2, &bi, SGHW_ST_OK);
    g_assert_cmphex(bi.flags & SGHW_BO_F_BROKER_EXPORTED, ==, 0);
    query_bo(va, &va->g[0], h1, &bi, SGHW_ST_OK);
    g_assert_cmphex(bi.flags & SGHW_BO_F_BROKER_EXPORTED, ==, SGHW_BO_F_BROKER_EXPORTED);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = h2,
                                                  .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(r.result, ==, crc);
    /* once h1 is unexported there is room again: h2 exports under a new id */
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_UNEXPORT,
                                                  .handle = h1 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = broker_export(va, h2, NULL, 0);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_true(memcmp(r.uuid, id2, sizeof(id2)) != 0);
    /* the broker's view (a round trip, after the export's) lists it */
    info = broker_info(va);
    g_assert_nonnull(broker_host_export(info, r.uuid));
    qobject_unref(info);
    vm_free(va);
    broker_stop(&b);
    broker_free(&b);
}

static void test_broker_bad_input(void)
{
    Broker b = { 0 };
    Ctx *va, *vb, *plain;
    struct sghw_cmd r;
    struct sghw_event ev;
    uint8_t id[16], unknown[16] = { 1, 2, 3 };
    uint32_t a, bh, h;
    uint64_t name_gpa;

    if (!broker_two_vms(&b, &va, &vb)) {
        return;
    }

    /* without a broker the opcodes do not exist */
    plain = g_new0(Ctx, 1);
    plain->qs = qtest_pc_boot("-nodefaults -device sharegpu,id=g0,vram-size=4M");
    qpci_device_foreach(plain->qs->pcibus, SGHW_PCI_VENDOR_ID, SGHW_PCI_DEVICE_ID, found_fn,
                        plain);
    gpu_init(plain, &plain->g[0]);
    g_assert_false(rd(&plain->g[0], SGHW_REG_FEATURES) & SGHW_FEAT_BROKER);
    a = create_bo(plain, &plain->g[0], SGHW_PLACEMENT_SYSTEM, NULL);
    r = broker_export(plain, a, "vm-b", SGHW_BROKER_RIGHT_READ);
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_OPCODE);
    r = broker_import(plain, unknown);
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_OPCODE);
    vm_free(plain);

    a = create_bo(va, &va->g[0], SGHW_PLACEMENT_SYSTEM, NULL);
    /* peer names: 32 bytes without a NUL, empty, unreadable */
    name_gpa = qmalloc(va->qs, SGHW_PEER_NAME_LEN);
    qtest_memset(va->qs->qts, name_gpa, 'x', SGHW_PEER_NAME_LEN);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_EXPORT,
                                                  .handle = a, .arg = 1, .off0 = name_gpa });
    g_assert_cmpuint(r.status, ==, SGHW_ST_INVALID);
    r = broker_export(va, a, "", SGHW_BROKER_RIGHT_READ);
    g_assert_cmpuint(r.status, ==, SGHW_ST_INVALID);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_EXPORT,
                                                  .handle = a, .arg = 1,
                                                  .off0 = 1ull << 50 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_DMA_ERROR);
    /* grant / unexport of a buffer that is not broker-exported */
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_GRANT,
                                                  .handle = a, .arg = 1,
                                                  .off0 = peer_name(va, "vm-b") });
    g_assert_cmpuint(r.status, ==, SGHW_ST_INVALID);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_UNEXPORT,
                                                  .handle = a });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, 0);
    /* an export without a grant, granted afterwards; unknown ids */
    r = broker_export(va, a, NULL, 0);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    memcpy(id, r.uuid, sizeof(id));
    r = broker_import(vb, id);
    g_assert_cmpuint(r.status, ==, SGHW_ST_ACCESS_DENIED);
    r = submit(va, &va->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BROKER_GRANT,
                                                  .handle = a, .arg = 1,
                                                  .off0 = peer_name(va, "vm-b") });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = broker_import(vb, unknown);
    g_assert_cmpuint(r.status, ==, SGHW_ST_NOT_FOUND);
    r = broker_import(vb, id);
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, BO_SIZE);  /* read-only */
    bh = r.out_handle;
    /* a VM re-exports only its own buffers */
    r = broker_export(vb, bh, "vm-a", SGHW_BROKER_RIGHT_READ);
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);

    /* remote handles: unknown, unknown opcode, window range, unsupported commands */
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = bh + 7, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = 0x7e, .handle = bh });
    g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_OPCODE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = bh, .off0 = 100 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OUT_OF_RANGE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = bh,
                                                  .off0 = vb->g[0].vram_size - 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OUT_OF_RANGE);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_PIN, .handle = bh });
    g_assert_cmpuint(r.status, ==, SGHW_ST_INVALID);
    /* a job on it makes the device's job buffer, which no local handle may name */
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = bh,
                                                  .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    for (h = 1; h <= 4; h++) {  /* vm-b made no buffer: no local handle exists */
        r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_QUERY,
                                                      .handle = h, .off0 = qmalloc(vb->qs,
                                                      sizeof(struct sghw_bo_info)) });
        g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
        r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_COPY, .handle = h,
                                                      .handle2 = bh, .len = 4096 });
        g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
        r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM,
                                                      .handle = h, .len = 4096 });
        g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
        r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_BO_DESTROY,
                                                      .handle = h });
        g_assert_cmpuint(r.status, ==, SGHW_ST_BAD_HANDLE);
    }
    g_assert_true(broker_import_field(vb, bh, "job-buffer"));
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = bh,
                                                  .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_ACCESS_DENIED);  /* a READ grant */
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT,
                                                  .handle = bh, .off0 = 0 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_UNMAP_IMPORT,
                                                  .handle = bh });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, 1);
    r = submit(vb, &vb->g[0], (struct sghw_cmd) { .opcode = SGHW_OP_UNMAP_IMPORT,
                                                  .handle = bh });
    g_assert_cmpuint(r.result, ==, 0);

    /* a reset of the exporter unexports: the importer is revoked */
    drain_events(vb, &vb->g[0]);
    wr(&va->g[0], SGHW_REG_RESET, SGHW_RESET_MAGIC);
    wait_event(vb, SGHW_EVT_BO_REVOKED, bh, &ev);
    g_assert_cmpuint(ev.placement, ==, SGHW_REVOKE_UNEXPORTED);

    /* a reset of the importer releases its imports: the broker lists none */
    wr(&vb->g[0], SGHW_REG_RESET, SGHW_RESET_MAGIC);
    {
        QDict *info = broker_info(vb);

        g_assert_cmpuint(qlist_size(qdict_get_qlist(info, "imports")), ==, 0);
        qobject_unref(info);
    }

    broker_two_vms_free(&b, va, vb);
}

/* ------------------------------------------------------------------ import-window faults */

/*
 * Contract 1.5 (issue 9, defect 3): after a move forced from the monitor, before the
 * importer's driver has handled BO_INVALIDATED, an access to the import's window range
 * re-maps the import and reaches the moved buffer: no write is dropped. After the driver's
 * UNMAP_IMPORT the range is gone and accesses there are stray (ignored, counted).
 */
static void test_window_fault_after_move(void)
{
    Ctx *c = setup();
    Gpu *g0 = &c->g[0], *g1 = &c->g[1];
    uint32_t h = create_bo(c, g0, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t imp = share_bo(c, g0, h, g1);
    g_autofree uint8_t *want = g_malloc(BO_SIZE);
    struct sghw_cmd r;
    uint64_t win;

    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_FILL, .handle = h,
                                             .len = BO_SIZE, .arg = 0x01020304 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    for (size_t i = 0; i < BO_SIZE; i += 4) {
        stl_le_p(want + i, 0x01020304);
    }
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp,
                                             .off0 = 0x20000 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    win = r.result;
    qpci_io_writel(g1->dev, g1->vram, win + 8, 0xaaaa0001);
    stl_le_p(want + 8, 0xaaaa0001);

    qmp_move(c, "g0", h, "system");
    g_assert_cmpuint(dev_counter(c, "g1", "window-faults"), ==, 0);
    /* the guest has not handled BO_INVALIDATED: its next write faults the import back in */
    qpci_io_writel(g1->dev, g1->vram, win + 4096 + 16, 0xbbbb0002);
    stl_le_p(want + 4096 + 16, 0xbbbb0002);
    g_assert_cmpuint(dev_counter(c, "g1", "window-faults"), ==, 1);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win + 8), ==, 0xaaaa0001);
    g_assert_cmpuint(dev_counter(c, "g1", "window-faults"), ==, 1);   /* mapped again */
    /* the exporter's engine reads both writes from the moved buffer */
    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = h,
                                             .len = BO_SIZE });
    g_assert_cmphex(r.result, ==, crc32c_ref(want, BO_SIZE));

    /* a move by a guest command: a read faults it back in and sees the bytes */
    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_BO_MOVE, .handle = h,
                                             .arg = SGHW_PLACEMENT_DEVICE });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win + 4096 + 16), ==, 0xbbbb0002);
    g_assert_cmpuint(dev_counter(c, "g1", "window-faults"), ==, 2);

    /* the driver's move_notify: UNMAP_IMPORT ends the range; accesses there are stray */
    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_UNMAP_IMPORT, .handle = imp });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    g_assert_cmpuint(r.result, ==, 1);
    g_assert_cmpuint(dev_counter(c, "g1", "window-stray-accesses"), ==, 0);
    qpci_io_writel(g1->dev, g1->vram, win + 8, 0xdeadbeef);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win + 8), ==, 0xffffffff);
    g_assert_cmpuint(dev_counter(c, "g1", "window-stray-accesses"), ==, 2);
    g_assert_cmpuint(dev_counter(c, "g1", "window-faults"), ==, 2);
    r = submit(c, g0, (struct sghw_cmd) { .opcode = SGHW_OP_CHECKSUM, .handle = h,
                                             .len = BO_SIZE });
    g_assert_cmphex(r.result, ==, crc32c_ref(want, BO_SIZE));
    teardown(c);
}

/* ------------------------------------------------------------------ coherency detector */

/* g1 (coherent=off) with the detector on or off; a VRAM BO on it, at *off in BAR2. */
static Ctx *setup_coherency(bool on, uint32_t *h, uint64_t *off)
{
    Ctx *c = setup_devices("", on ? ",check-coherency=on" : ",check-coherency=off");

    *h = create_bo(c, &c->g[1], SGHW_PLACEMENT_DEVICE, off);
    return c;
}

/* g1's violation counters; -1 each when the device has no detector. */
static void coherency_counts(Ctx *c, int64_t out[3])
{
    static const char *const kinds[3] = {
        "cpu-write-outside-access", "job-read-unflushed-cpu-write",
        "cpu-access-unflushed-job-write",
    };
    QDict *d = query_dev(c, "g1");
    QDict *coh = qdict_get_qdict(d, "coherency");
    int i;

    for (i = 0; i < 3; i++) {
        out[i] = coh ? qdict_get_int(coh, kinds[i]) : -1;
    }
    qobject_unref(d);
}

/*
 * The counters are exactly {outside, job_read, cpu_access}, and the events received since
 * the previous call are exactly one of `kind` (NULL: none) with that byte range, that many
 * violating pages in it (and that exporter, when not NULL). The QMP query returns after
 * every event emitted before it, so the events are all there.
 */
static void expect_violation(Ctx *c, const int64_t want[3], const char *kind, uint32_t handle,
                             uint64_t off, uint64_t len, uint64_t pages, const char *exporter)
{
    int64_t got[3];
    QDict *ev, *data;
    int i;

    coherency_counts(c, got);
    for (i = 0; i < 3; i++) {
        g_assert_cmpint(got[i], ==, want[i]);
    }
    ev = qtest_qmp_event_ref(c->qs->qts, "SHAREGPU_COHERENCY_VIOLATION");
    if (!kind) {
        g_assert_null(ev);
        return;
    }
    g_assert_nonnull(ev);
    data = qdict_get_qdict(ev, "data");
    g_assert_cmpstr(qdict_get_str(data, "id"), ==, "g1");
    g_assert_cmpstr(qdict_get_str(data, "kind"), ==, kind);
    g_assert_cmpuint(qdict_get_int(data, "handle"), ==, handle);
    g_assert_cmphex(qdict_get_int(data, "offset"), ==, off);
    g_assert_cmphex(qdict_get_int(data, "length"), ==, len);
    g_assert_cmpuint(qdict_get_int(data, "pages"), ==, pages);
    g_assert_cmpuint(qlist_size(qdict_get_qlist(data, "history")), >=, 1);
    g_assert_cmpuint(qdict_get_int(data, "suppressed"), ==, 0);
    if (exporter) {
        g_assert_cmpstr(qdict_get_try_str(data, "exporter"), ==, exporter);
    } else {
        g_assert_false(qdict_haskey(data, "exporter"));
    }
    qobject_unref(ev);
    g_assert_null(qtest_qmp_event_ref(c->qs->qts, "SHAREGPU_COHERENCY_VIOLATION"));
}

static void cpu_access(Ctx *c, Gpu *g, uint32_t h, bool end, uint32_t dir)
{
    struct sghw_cmd r = submit(c, g, (struct sghw_cmd) {
        .opcode = end ? SGHW_OP_CPU_ACCESS_END : SGHW_OP_CPU_ACCESS_BEGIN,
        .handle = h, .arg = dir });

    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
}

/* A CPU write to VRAM outside a window: exactly one violation, on the written page. */
static void test_coherency_cpu_write_outside(void)
{
    uint64_t off;
    uint32_t h;
    Ctx *c = setup_coherency(true, &h, &off);
    Gpu *g = &c->g[1];
    int64_t none[3] = { 0, 0, 0 }, one[3] = { 1, 0, 0 };

    expect_violation(c, none, NULL, 0, 0, 0, 0, NULL);
    qpci_io_writel(g->dev, g->vram, off + 4096 + 8, 0x12345678);
    cpu_access(c, g, h, false, SGHW_DIR_TO_DEVICE);
    expect_violation(c, one, "cpu-write-outside-access", h, 4096, 4096, 1, NULL);

    /* inside the window, then a job after END: nothing */
    qpci_io_writel(g->dev, g->vram, off + 3 * 4096, 0x9abcdef0);
    cpu_access(c, g, h, true, SGHW_DIR_TO_DEVICE);
    checksum(c, g, h, BO_SIZE);
    expect_violation(c, one, NULL, 0, 0, 0, 0, NULL);
    teardown(c);
}

/*
 * A guest looping on a violation: every one is counted, the events stop at the QMP events'
 * limit per second, and a later event says how many were left out.
 */
static void test_coherency_rate_limit(void)
{
    uint64_t off, total = 0, received = 0, reported = 0, left_out;
    uint32_t h;
    Ctx *c = setup_coherency(true, &h, &off);
    Gpu *g = &c->g[1];
    int64_t got[3];
    QDict *ev, *d;

    while (reported == 0) {
        for (int i = 0; i < 50; i++, total++) {
            qpci_io_writel(g->dev, g->vram, off, i);   /* outside: BEGIN reveals it */
            cpu_access(c, g, h, false, SGHW_DIR_TO_DEVICE);
            cpu_access(c, g, h, true, SGHW_DIR_TO_DEVICE);
        }
        coherency_counts(c, got);   /* a QMP reply: the events before it are queued */
        g_assert_cmpint(got[0], ==, total);
        while ((ev = qtest_qmp_event_ref(c->qs->qts, "SHAREGPU_COHERENCY_VIOLATION"))) {
            received++;
            reported += qdict_get_int(qdict_get_qdict(ev, "data"), "suppressed");
            qobject_unref(ev);
        }
        g_assert_cmpuint(total, <, 100000);
    }
    d = query_dev(c, "g1");
    left_out = qdict_get_int(qdict_get_qdict(d, "coherency"), "reports-suppressed");
    g_assert_cmpuint(received, <, total);
    g_assert_cmpuint(received + left_out, ==, total);
    g_assert_cmpuint(reported, <=, left_out);
    g_assert_cmpuint(qdict_get_int(qdict_get_qdict(d, "counters"), "qmp-events-suppressed"),
                     ==, left_out);
    qobject_unref(d);
    teardown(c);
}

/* A job reading pages the CPU wrote without a closing barrier: that kind only. */
static void test_coherency_job_reads_unflushed(void)
{
    uint64_t off;
    uint32_t h;
    Ctx *c = setup_coherency(true, &h, &off);
    Gpu *g = &c->g[1];
    int64_t want[3] = { 0, 1, 0 };

    qpci_io_writel(g->dev, g->vram, off, 1);
    qpci_io_writel(g->dev, g->vram, off + 2 * 4096, 2);
    checksum(c, g, h, BO_SIZE);
    expect_violation(c, want, "job-read-unflushed-cpu-write", h, 0, 3 * 4096, 2, NULL);
    /* CACHE_INVALIDATE is a closing barrier too */
    qpci_io_writel(g->dev, g->vram, off + 4096, 3);
    g_assert_cmpuint(submit(c, g, (struct sghw_cmd) {
        .opcode = SGHW_OP_CACHE_INVALIDATE, .handle = h, .len = BO_SIZE }).status, ==,
        SGHW_ST_OK);
    want[0] = 1;   /* ... but the write itself was outside a window */
    expect_violation(c, want, "cpu-write-outside-access", h, 4096, 4096, 1, NULL);
    checksum(c, g, h, BO_SIZE);
    expect_violation(c, want, NULL, 0, 0, 0, 0, NULL);
    teardown(c);
}

/* The CPU writing job output an opening barrier has not published yet. */
static void test_coherency_cpu_over_unflushed_job(void)
{
    uint64_t off;
    uint32_t h;
    Ctx *c = setup_coherency(true, &h, &off);
    Gpu *g = &c->g[1];
    int64_t want[3] = { 0, 0, 1 };

    g_assert_cmpuint(submit(c, g, (struct sghw_cmd) {
        .opcode = SGHW_OP_FILL, .handle = h, .len = BO_SIZE, .arg = 0x55aa55aa }).status, ==,
        SGHW_ST_OK);
    qpci_io_writel(g->dev, g->vram, off + 5 * 4096, 7);
    cpu_access(c, g, h, false, SGHW_DIR_BIDIRECTIONAL);
    expect_violation(c, want, "cpu-access-unflushed-job-write", h, 5 * 4096, 4096, 1, NULL);
    cpu_access(c, g, h, true, SGHW_DIR_BIDIRECTIONAL);
    expect_violation(c, want, NULL, 0, 0, 0, 0, NULL);
    teardown(c);
}

/* Writes through the import window are seen, and the event names the exporter. */
static void test_coherency_import_window(void)
{
    Ctx *c = setup_devices("", ",check-coherency=on");
    Gpu *g0 = &c->g[0], *g1 = &c->g[1];
    uint32_t h = create_bo(c, g0, SGHW_PLACEMENT_DEVICE, NULL);
    uint32_t imp = share_bo(c, g0, h, g1);
    int64_t want[3] = { 0, 1, 0 };
    struct sghw_cmd r;

    r = submit(c, g1, (struct sghw_cmd) { .opcode = SGHW_OP_MAP_IMPORT, .handle = imp,
                                          .off0 = 0x10000 });
    g_assert_cmpuint(r.status, ==, SGHW_ST_OK);
    qpci_io_writel(g1->dev, g1->vram, r.result + 6 * 4096, 0xfeedface);
    checksum(c, g1, imp, BO_SIZE);
    expect_violation(c, want, "job-read-unflushed-cpu-write", imp, 6 * 4096, 4096, 1,
                     "g0");
    teardown(c);
}

/* Without the property: no counters, no events, same data path. */
static void test_coherency_off(void)
{
    uint64_t off;
    uint32_t h;
    Ctx *c = setup_coherency(false, &h, &off);
    Gpu *g = &c->g[1];
    int64_t absent[3] = { -1, -1, -1 };

    qpci_io_writel(g->dev, g->vram, off, 1);
    checksum(c, g, h, BO_SIZE);
    expect_violation(c, absent, NULL, 0, 0, 0, 0, NULL);
    teardown(c);
}

/* check-coherency=on on a coherent device is a realize error. */
static void test_coherency_needs_noncoherent(void)
{
    QTestState *qts = qtest_init("-M pc -nodefaults -S");
    QDict *resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                            "{'driver': 'sharegpu', 'id': 'bad', "
                            "'check-coherency': true}}");

    g_assert(qdict_haskey(resp, "error"));
    g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(resp, "error"), "desc"),
                            "check-coherency=on needs coherent=off"));
    qobject_unref(resp);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/sharegpu/identity", test_identity);
    qtest_add_func("/sharegpu/fill-checksum-transfer", test_fill_checksum_transfer);
    qtest_add_func("/sharegpu/errors", test_errors);
    qtest_add_func("/sharegpu/share-and-move", test_share_and_move);
    qtest_add_func("/sharegpu/evict-preserves", test_evict_preserves);
    qtest_add_func("/sharegpu/reset-mid-job", test_reset_mid_job);
    qtest_add_func("/sharegpu/event-overflow", test_event_overflow);
    qtest_add_func("/sharegpu/long-jobs-split", test_long_jobs_split);
    qtest_add_func("/sharegpu/reset-during-long-job", test_reset_during_long_job);
    qtest_add_func("/sharegpu/hostmem-budget", test_hostmem_budget);
    qtest_add_func("/sharegpu/sharing-graph", test_sharing_graph);
    qtest_add_func("/sharegpu/import-window-descriptors", test_import_window_descriptors);
    qtest_add_func("/sharegpu/qmp-events", test_qmp_events);
    qtest_add_func("/sharegpu/own-command-flag", test_own_command_flag);
    qtest_add_func("/sharegpu/held-job", test_held_job);
    qtest_add_func("/sharegpu/implicit-sync", test_implicit_sync);
    qtest_add_func("/sharegpu/reset-with-jobs-in-flight", test_reset_with_jobs_in_flight);
    qtest_add_func("/sharegpu/job-abort-held", test_job_abort_held);
    qtest_add_func("/sharegpu/job-abort-stalled", test_job_abort_stalled);
    qtest_add_func("/sharegpu/job-abort-idle-and-bad-value", test_job_abort_idle_and_bad_value);
    qtest_add_func("/sharegpu/drop-irq", test_drop_irq);
    qtest_add_func("/sharegpu/engine-property", test_engine_property);
    qtest_add_func("/sharegpu/engine/virgl-main-loop", test_engine_virgl_main_loop);
    qtest_add_func("/sharegpu/q35-monitor", test_q35_monitor);
    qtest_add_func("/sharegpu/bad-property", test_bad_property);
    qtest_add_func("/sharegpu/coherency/cpu-write-outside", test_coherency_cpu_write_outside);
    qtest_add_func("/sharegpu/coherency/job-reads-unflushed",
                   test_coherency_job_reads_unflushed);
    qtest_add_func("/sharegpu/coherency/cpu-over-unflushed-job",
                   test_coherency_cpu_over_unflushed_job);
    qtest_add_func("/sharegpu/coherency/import-window", test_coherency_import_window);
    qtest_add_func("/sharegpu/coherency/rate-limit", test_coherency_rate_limit);
    qtest_add_func("/sharegpu/window-fault-after-move", test_window_fault_after_move);
    qtest_add_func("/sharegpu/coherency/off", test_coherency_off);
    qtest_add_func("/sharegpu/coherency/needs-noncoherent", test_coherency_needs_noncoherent);
    qtest_add_func("/sharegpu/broker/multi-vm", test_broker_multi_vm);
    qtest_add_func("/sharegpu/broker/restart", test_broker_restart);
    qtest_add_func("/sharegpu/broker/remote-jobs", test_broker_remote_jobs);
    qtest_add_func("/sharegpu/broker/ack-timeout", test_broker_ack_timeout);
    qtest_add_func("/sharegpu/broker/offers", test_broker_offers);
    qtest_add_func("/sharegpu/broker/bad-input", test_broker_bad_input);
    qtest_add_func("/sharegpu/broker/export-refused", test_broker_export_refused);
    return g_test_run();
}
