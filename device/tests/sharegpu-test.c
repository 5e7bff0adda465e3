/*
 * QTest for the sharegpu device (docs/hardware.md)
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

#define RING_ENTRIES 16
#define BO_SIZE (64 * 1024)

typedef struct Gpu {
    QPCIDevice *dev;
    QPCIBar mmio;
    QPCIBar vram;
    uint64_t vram_size;
    uint64_t ring;
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

static void gpu_init(Ctx *c, Gpu *g)
{
    uint64_t size;

    qpci_device_enable(g->dev);
    g->mmio = qpci_iomap(g->dev, SGPU_BAR_MMIO, &size);
    g_assert_cmpuint(size, ==, SGPU_MMIO_SIZE);
    g->vram = qpci_iomap(g->dev, SGPU_BAR_VRAM, &size);
    g_assert_cmphex(rd(g, SGPU_REG_VERSION), ==, SGPU_VERSION);
    g->vram_size = rd(g, SGPU_REG_VRAM_SIZE_LO) | ((uint64_t)rd(g, SGPU_REG_VRAM_SIZE_HI) << 32);
    g_assert_cmpuint(size, ==, 2 * g->vram_size);

    g->ring = qmalloc(c->qs, RING_ENTRIES * sizeof(struct sgpu_hw_cmd));
    g->evring = qmalloc(c->qs, RING_ENTRIES * sizeof(struct sgpu_hw_event));
    wr(g, SGPU_REG_CMD_BASE_LO, (uint32_t)g->ring);
    wr(g, SGPU_REG_CMD_BASE_HI, g->ring >> 32);
    wr(g, SGPU_REG_CMD_SIZE, RING_ENTRIES);
    wr(g, SGPU_REG_EVT_BASE_LO, (uint32_t)g->evring);
    wr(g, SGPU_REG_EVT_BASE_HI, g->evring >> 32);
    wr(g, SGPU_REG_EVT_SIZE, RING_ENTRIES);
    g_assert_cmphex(rd(g, SGPU_REG_STATUS) & 7, ==,
                    SGPU_STATUS_READY | SGPU_STATUS_CMD_ENABLED | SGPU_STATUS_EVT_ENABLED);
}

/* Submits one command, waits for it, returns the completed entry. */
static struct sgpu_hw_cmd submit(Ctx *c, Gpu *g, struct sgpu_hw_cmd cmd)
{
    QTestState *qts = c->qs->qts;
    uint32_t tail = rd(g, SGPU_REG_CMD_TAIL);
    uint64_t addr = g->ring + tail * sizeof(cmd);
    int i;

    cmd.seqno = ++g->seqno;
    cmd.status = SGPU_ST_PENDING;
    qtest_memwrite(qts, addr, &cmd, sizeof(cmd));
    wr(g, SGPU_REG_CMD_TAIL, (tail + 1) % RING_ENTRIES);
    wr(g, SGPU_REG_DOORBELL, 1);
    for (i = 0; i < 100000 && rd(g, SGPU_REG_CMD_HEAD) != (tail + 1) % RING_ENTRIES; i++) {
        g_usleep(10);
    }
    g_assert_cmpuint(rd(g, SGPU_REG_CMD_HEAD), ==, (tail + 1) % RING_ENTRIES);
    qtest_memread(qts, addr, &cmd, sizeof(cmd));
    g_assert_cmpuint(rd(g, SGPU_REG_LAST_SEQNO_LO), ==, (uint32_t)g->seqno);
    return cmd;
}

static bool pop_event(Ctx *c, Gpu *g, struct sgpu_hw_event *ev)
{
    if (rd(g, SGPU_REG_EVT_TAIL) == g->evhead) {
        return false;
    }
    qtest_memread(c->qs->qts, g->evring + g->evhead * sizeof(*ev), ev, sizeof(*ev));
    g->evhead = (g->evhead + 1) % RING_ENTRIES;
    wr(g, SGPU_REG_EVT_HEAD, g->evhead);
    return true;
}

static void drain_events(Ctx *c, Gpu *g)
{
    struct sgpu_hw_event ev;

    while (pop_event(c, g, &ev)) {
    }
}

static Ctx *setup(void)
{
    Ctx *c = g_new0(Ctx, 1);

    c->qs = qtest_pc_boot("-nodefaults -device sharegpu,id=g0,vram-size=4M "
                          "-device sharegpu,id=g1,vram-size=4M,coherent=off");
    qpci_device_foreach(c->qs->pcibus, SGPU_PCI_VENDOR_ID, SGPU_PCI_DEVICE_ID, found_fn, c);
    g_assert_cmpint(c->found, ==, 2);
    gpu_init(c, &c->g[0]);
    gpu_init(c, &c->g[1]);
    return c;
}

static void teardown(Ctx *c)
{
    g_free(c->g[0].dev);
    g_free(c->g[1].dev);
    qtest_shutdown(c->qs);
    g_free(c);
}

static uint32_t crc32c_ref(const uint8_t *p, size_t n)
{
    uint32_t crc = ~0u;

    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0x82f63b78u & -(crc & 1));
        }
    }
    return ~crc;
}

static uint32_t create_bo(Ctx *c, Gpu *g, uint32_t placement, uint64_t *vram_off)
{
    struct sgpu_hw_cmd r = submit(c, g, (struct sgpu_hw_cmd) {
        .opcode = SGPU_OP_BO_CREATE, .len = BO_SIZE, .arg = placement });

    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    g_assert_cmpuint(r.out_handle, !=, 0);
    if (vram_off) {
        *vram_off = r.result;
    }
    return r.out_handle;
}

static void test_identity(void)
{
    Ctx *c = setup();

    g_assert_cmpuint(qpci_config_readw(c->g[0].dev, PCI_CLASS_DEVICE), ==, SGPU_PCI_CLASS);
    g_assert_cmpuint(qpci_config_readb(c->g[0].dev, PCI_REVISION_ID), ==, SGPU_PCI_REVISION);
    g_assert_true(rd(&c->g[0], SGPU_REG_FEATURES) & SGPU_FEAT_COHERENT);
    g_assert_false(rd(&c->g[1], SGPU_REG_FEATURES) & SGPU_FEAT_COHERENT);
    wr(&c->g[0], SGPU_REG_SCRATCH, 0xdeadbeef);
    g_assert_cmphex(rd(&c->g[0], SGPU_REG_SCRATCH), ==, 0xdeadbeef);
    teardown(c);
}

static void test_fill_checksum_transfer(void)
{
    Ctx *c = setup();
    Gpu *g = &c->g[0];
    uint64_t off;
    uint32_t h = create_bo(c, g, SGPU_PLACEMENT_HW_DEVICE, &off);
    g_autofree uint8_t *buf = g_malloc(BO_SIZE);
    g_autofree uint8_t *expect = g_malloc(BO_SIZE);
    struct sgpu_hw_mem_entry ents[2];
    uint64_t sg, pages;
    struct sgpu_hw_cmd r;

    for (int i = 0; i < BO_SIZE; i += 4) {
        memcpy(expect + i, &(uint32_t){ 0xa5a5f00d }, 4);
    }
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_FILL, .handle = h,
                                            .len = BO_SIZE, .arg = 0xa5a5f00d });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_CHECKSUM, .handle = h,
                                            .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    g_assert_cmphex(r.result, ==, crc32c_ref(expect, BO_SIZE));

    /* the CPU sees it through BAR2 */
    qpci_memread(g->dev, g->vram, off, buf, BO_SIZE);
    g_assert(memcmp(buf, expect, BO_SIZE) == 0);

    /* system pages: two scatter entries, transfer from the device */
    pages = qmalloc(c->qs, BO_SIZE);
    sg = qmalloc(c->qs, sizeof(ents));
    ents[0] = (struct sgpu_hw_mem_entry) { .addr = pages, .length = BO_SIZE / 2 };
    ents[1] = (struct sgpu_hw_mem_entry) { .addr = pages + BO_SIZE / 2, .length = BO_SIZE / 2 };
    qtest_memwrite(c->qs->qts, sg, ents, sizeof(ents));
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_ATTACH_BACKING, .handle = h,
                                            .off0 = sg, .arg = 2 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    g_assert_cmpuint(r.result, ==, BO_SIZE);
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_TRANSFER_FROM_DEVICE,
                                            .handle = h, .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    qtest_memread(c->qs->qts, pages, buf, BO_SIZE);
    g_assert(memcmp(buf, expect, BO_SIZE) == 0);

    /* and back: guest writes its pages, transfers to the device at an offset */
    memset(buf, 0x5a, 4096);
    qtest_memwrite(c->qs->qts, pages + BO_SIZE / 2 - 2048, buf, 4096);
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_TRANSFER_TO_DEVICE, .handle = h,
                                            .off0 = 8192, .off1 = BO_SIZE / 2 - 2048,
                                            .len = 4096 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
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
    uint32_t h = create_bo(c, g, SGPU_PLACEMENT_HW_SYSTEM, NULL);
    struct sgpu_hw_cmd r;
    struct sgpu_hw_event ev;

    drain_events(c, g);
    wr(g, SGPU_REG_INT_MASK, SGPU_INT_ERROR);
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = 0x7777 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_BAD_OPCODE);
    g_assert_cmpuint(rd(g, SGPU_REG_ERROR_CODE), ==, SGPU_ST_BAD_OPCODE);
    g_assert_true(rd(g, SGPU_REG_INT_STATUS) & SGPU_INT_ERROR);
    wr(g, SGPU_REG_INT_ACK, SGPU_INT_ERROR);
    g_assert_false(rd(g, SGPU_REG_INT_STATUS) & SGPU_INT_ERROR);
    g_assert_true(pop_event(c, g, &ev));
    g_assert_cmpuint(ev.type, ==, SGPU_EVT_ERROR);
    g_assert_cmpuint(ev.placement, ==, SGPU_ST_BAD_OPCODE);

    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_FILL, .handle = 4242,
                                            .len = 4 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_BAD_HANDLE);
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_FILL, .handle = h,
                                            .off0 = BO_SIZE - 4, .len = 8 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OUT_OF_RANGE);
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_TRANSFER_TO_DEVICE, .handle = h,
                                            .len = 8 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_NO_BACKING);
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_BO_CREATE, .len = 1ull << 40 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_TOO_BIG);
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_ATTACH_BACKING, .handle = h,
                                            .off0 = 1ull << 50, .arg = 1 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_DMA_ERROR);
    /* bad register values are ignored, the device keeps working */
    wr(g, SGPU_REG_CMD_TAIL, 999);
    wr(g, SGPU_REG_RESET, 1);
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_NOP });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    g_assert_cmpuint(rd(g, SGPU_REG_ERROR_COUNT), ==, 6);

    /* reset: rings off, handles gone */
    wr(g, SGPU_REG_RESET, SGPU_RESET_MAGIC);
    g_assert_cmpuint(rd(g, SGPU_REG_CMD_SIZE), ==, 0);
    g_assert_cmpuint(rd(g, SGPU_REG_ERROR_COUNT), ==, 0);
    gpu_init(c, g);
    g->evhead = 0;
    r = submit(c, g, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_BO_DESTROY, .handle = h });
    g_assert_cmpuint(r.status, ==, SGPU_ST_BAD_HANDLE);
    teardown(c);
}

static void test_share_and_move(void)
{
    Ctx *c = setup();
    Gpu *g0 = &c->g[0], *g1 = &c->g[1];
    uint64_t off;
    uint32_t h = create_bo(c, g0, SGPU_PLACEMENT_HW_DEVICE, &off);
    struct sgpu_hw_cmd r, e;
    struct sgpu_hw_event ev;
    uint32_t imp, crc0, v;
    uint64_t win;
    QDict *resp;
    QList *list;
    bool moved = false, invalidated = false;

    r = submit(c, g0, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_FILL, .handle = h,
                                             .len = BO_SIZE, .arg = 0x01020304 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    crc0 = submit(c, g0, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_CHECKSUM, .handle = h,
                                                .len = BO_SIZE }).result;

    e = submit(c, g0, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_EXPORT, .handle = h });
    g_assert_cmpuint(e.status, ==, SGPU_ST_OK);
    r = (struct sgpu_hw_cmd) { .opcode = SGPU_OP_IMPORT };
    memcpy(r.uuid, e.uuid, sizeof(r.uuid));
    r = submit(c, g1, r);
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    imp = r.out_handle;

    /* the importer's copy engine reads the exporter's storage */
    r = submit(c, g1, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_CHECKSUM, .handle = imp,
                                             .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    g_assert_cmphex(r.result, ==, crc0);

    /* zero copy: map into g1's import window, write through g0's VRAM, read through g1 */
    r = submit(c, g1, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_MAP_IMPORT, .handle = imp,
                                             .off0 = 0x10000 });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);
    win = r.result;
    g_assert_cmpuint(win, ==, g1->vram_size + 0x10000);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win), ==, 0x01020304);
    qpci_io_writel(g0->dev, g0->vram, off + 64, 0xcafef00d);
    g_assert_cmphex(qpci_io_readl(g1->dev, g1->vram, win + 64), ==, 0xcafef00d);

    /* unknown uuid */
    r = (struct sgpu_hw_cmd) { .opcode = SGPU_OP_IMPORT };
    memset(r.uuid, 0x42, sizeof(r.uuid));
    g_assert_cmpuint(submit(c, g1, r).status, ==, SGPU_ST_NOT_FOUND);

    /* monitor-forced eviction: exporter gets BO_MOVED, importer BO_INVALIDATED + unmap */
    drain_events(c, g0);
    drain_events(c, g1);
    resp = qtest_qmp(c->qs->qts, "{'execute': 'sharegpu-move-bo', 'arguments': "
                     "{'id': 'g0', 'handle': %u, 'placement': 'system'}}", h);
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    for (int i = 0; i < 1000 && !(moved && invalidated); i++) {
        while (pop_event(c, g0, &ev)) {
            moved |= ev.type == SGPU_EVT_BO_MOVED && ev.handle == h &&
                     ev.placement == SGPU_PLACEMENT_HW_SYSTEM;
        }
        while (pop_event(c, g1, &ev)) {
            invalidated |= ev.type == SGPU_EVT_BO_INVALIDATED && ev.handle == imp;
        }
        g_usleep(100);
    }
    g_assert_true(moved);
    g_assert_true(invalidated);
    v = qpci_io_readl(g1->dev, g1->vram, win);
    g_assert_cmphex(v, ==, 0xffffffff);
    r = submit(c, g1, (struct sgpu_hw_cmd) { .opcode = SGPU_OP_CHECKSUM, .handle = imp,
                                             .len = BO_SIZE });
    g_assert_cmpuint(r.status, ==, SGPU_ST_OK);

    resp = qtest_qmp(c->qs->qts, "{'execute': 'query-sharegpu'}");
    list = qdict_get_qlist(resp, "return");
    g_assert_cmpuint(qlist_size(list), ==, 2);
    qobject_unref(resp);
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
    QTestState *qts = qtest_init("-M q35 -nodefaults -S");
    QDict *resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                            "{'driver': 'sharegpu', 'id': 'bad', 'vram-size': 3000000}}");

    g_assert(qdict_haskey(resp, "error"));
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
    qtest_add_func("/sharegpu/q35-monitor", test_q35_monitor);
    qtest_add_func("/sharegpu/bad-property", test_bad_property);
    return g_test_run();
}
