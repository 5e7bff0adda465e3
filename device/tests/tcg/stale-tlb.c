/*
 * sharegpu TCG reproducer: a vCPU must resolve its TLB entries in the memory map they were
 * filled from, even while the device changes the map (patches/qemu/0004).
 *
 * A multiboot kernel (32-bit, paging off, one vCPU) for
 *   qemu-system-x86_64 -M q35 -accel tcg -smp 1 -kernel stale-tlb.elf
 *     -device sharegpu,id=g0,vram-size=1M -device sharegpu,id=g1,vram-size=1M
 *     -device isa-debug-exit,iobase=0xf4,iosize=4 -debugcon file:LOG
 *
 * It exports a buffer on g0 and imports it on g1, then queues MAP_IMPORT / UNMAP_IMPORT pairs
 * on g1's ring: QEMU's main loop executes them while this vCPU runs, and each one changes the
 * memory map below a page of g1's import-window hole (the probe). Meanwhile the vCPU runs
 * translation blocks of a few hundred instructions that end in a read of the probe (TCG makes
 * an MMIO access the last instruction of its block). The vCPU learns of a map change only at
 * its next block boundary, so a change that lands while such a block runs is followed by a
 * probe read through the TLB entry filled before it. Correct: the hole (0xffffffff).
 * QEMU 10.0.13 as shipped resolves the entry's section index in the *new* map and aborts in
 * iotlb_to_section(), msix_table_mmio_write(), or reads another region.
 *
 * The vCPU brackets each block with reads of LAST_SEQNO; when they differ a command (and its
 * map change) completed while the block ran. The run fails unless that happened at least
 * MIN_OVERLAPS times, so a pass means the race was exercised, not avoided.
 *
 * Exit status of QEMU: 33 = pass ((0x10 << 1) | 1), 35 = fail; messages on port 0xe9.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stddef.h>
#include <stdint.h>

#include "sharegpu_hw.h"

#define MULTIBOOT_MAGIC 0x1BADB002u
#define DEBUG_EXIT_PORT 0xf4
#define DEBUG_EXIT_PASS 0x10
#define DEBUG_EXIT_FAIL 0x11
#define DEBUGCON_PORT 0xe9
#define RING_ENTRIES 16
#define PROBE_WINDOW_OFFSET 0x10000u /* a hole page well past the 4 KiB mapping */
#define FILL_PATTERN 0x5a5a5a5au
#define HOLE_VALUE 0xffffffffu

__attribute__((section(".multiboot"), used, aligned(4)))
static const uint32_t multiboot_header[3] = {
    MULTIBOOT_MAGIC, 0, -MULTIBOOT_MAGIC,
};

uint8_t stack[16384] __attribute__((aligned(16), used));

void stale_tlb_main(void);

__asm__(".globl _start\n"
        "_start:\n"
        "    mov $stack + 16384, %esp\n"
        "    call stale_tlb_main\n"
        "1:  hlt\n"
        "    jmp 1b\n");

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t v;

    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static void puts_con(const char *s)
{
    while (*s) {
        outb(DEBUGCON_PORT, (uint8_t)*s++);
    }
}

static void puthex(uint32_t v)
{
    static const char digits[] = "0123456789abcdef";
    char buf[11] = "0x";

    for (int i = 0; i < 8; i++) {
        buf[2 + i] = digits[(v >> (28 - 4 * i)) & 0xf];
    }
    buf[10] = 0;
    puts_con(buf);
}

static void finish(int pass, const char *why)
{
    puts_con(pass ? "stale-tlb: PASS: " : "stale-tlb: FAIL: ");
    puts_con(why);
    puts_con("\n");
    outl(DEBUG_EXIT_PORT, pass ? DEBUG_EXIT_PASS : DEBUG_EXIT_FAIL);
    for (;;) {
        __asm__ volatile("hlt");
    }
}

static uint32_t pci_read(uint32_t bdf, uint32_t reg)
{
    outl(0xcf8, 0x80000000u | (bdf << 8) | (reg & 0xfc));
    return inl(0xcfc);
}

static void pci_write(uint32_t bdf, uint32_t reg, uint32_t v)
{
    outl(0xcf8, 0x80000000u | (bdf << 8) | (reg & 0xfc));
    outl(0xcfc, v);
}

static inline uint32_t mmio_read(uintptr_t addr)
{
    return *(volatile uint32_t *)addr;
}

static inline void mmio_write(uintptr_t addr, uint32_t v)
{
    *(volatile uint32_t *)addr = v;
}

struct gpu {
    uintptr_t bar0;
    uintptr_t bar2;
    uint32_t vram_size;
    uint32_t tail;
    struct sghw_cmd *ring;
};

static struct sghw_cmd rings[2][RING_ENTRIES] __attribute__((aligned(64)));

/* The two sharegpu functions on bus 0, in slot order, with BARs as the firmware set them. */
static int find_gpus(struct gpu gpus[2])
{
    int n = 0;

    for (uint32_t slot = 0; slot < 32 && n < 2; slot++) {
        uint32_t bdf = slot << 3;
        uint32_t id = pci_read(bdf, 0x00);

        if (id != (SGHW_PCI_VENDOR_ID | ((uint32_t)SGHW_PCI_DEVICE_ID << 16))) {
            continue;
        }
        if (pci_read(bdf, 0x1c) != 0) {
            finish(0, "BAR2 above 4 GiB: this 32-bit test cannot reach it");
        }
        pci_write(bdf, 0x04, pci_read(bdf, 0x04) | 0x6); /* memory space + bus master */
        gpus[n].bar0 = pci_read(bdf, 0x10) & ~0xfu;
        gpus[n].bar2 = pci_read(bdf, 0x18) & ~0xfu;
        gpus[n].ring = rings[n];
        n++;
    }
    return n;
}

static void gpu_init(struct gpu *g)
{
    g->vram_size = mmio_read(g->bar0 + SGHW_REG_VRAM_SIZE_LO);
    mmio_write(g->bar0 + SGHW_REG_CMD_BASE_LO, (uint32_t)(uintptr_t)g->ring);
    mmio_write(g->bar0 + SGHW_REG_CMD_BASE_HI, 0);
    mmio_write(g->bar0 + SGHW_REG_CMD_SIZE, RING_ENTRIES);
    g->tail = 0;
}

/* Runs one command to completion (the device works on the main loop; we poll). */
static struct sghw_cmd *gpu_submit(struct gpu *g, const struct sghw_cmd *cmd)
{
    struct sghw_cmd *slot = &g->ring[g->tail];
    volatile uint32_t *status = &slot->status;

    *slot = *cmd;
    *status = SGHW_ST_PENDING;
    g->tail = (g->tail + 1) % RING_ENTRIES;
    mmio_write(g->bar0 + SGHW_REG_CMD_TAIL, g->tail);
    mmio_write(g->bar0 + SGHW_REG_DOORBELL, 1);
    while (*status == SGHW_ST_PENDING) {
        __asm__ volatile("pause");
    }
    if (slot->status != SGHW_ST_OK) {
        puts_con("command ");
        puthex(cmd->opcode);
        puts_con(" status ");
        puthex(slot->status);
        finish(0, "command failed");
    }
    return slot;
}

static void putdec(uint32_t v)
{
    char buf[11];
    int i = sizeof(buf) - 1;

    buf[i] = 0;
    do {
        buf[--i] = '0' + v % 10;
        v /= 10;
    } while (v);
    puts_con(buf + i);
}

/*
 * One translation block: 480 x87 square roots (each a helper call, so the block runs for
 * tens of microseconds without needing the BQL), then the probe read (an MMIO access ends a
 * block). Page-aligned so that it never straddles a page (which would split the block).
 */
uint32_t probe_block(uintptr_t probe);
__asm__(".text\n"
        ".p2align 12\n"
        ".globl probe_block\n"
        "probe_block:\n"
        "    mov 4(%esp), %edx\n"
        "    .rept 480\n"
        "    fsqrt\n"
        "    .endr\n"
        "    mov (%edx), %eax\n"
        "    ret\n");

/*
 * How often a change lands inside a probe block depends on how the host schedules the main
 * loop against the vCPU (5-70% of changes measured, lower on a loaded host): run at least
 * MAP_CHANGES and go on until MIN_OVERLAPS happened, up to MAX_MAP_CHANGES.
 */
#define MAP_CHANGES 3000
#define MAX_MAP_CHANGES 60000
#define MIN_OVERLAPS 300

/* Queues MAP_IMPORT (even n) or UNMAP_IMPORT (odd n) without waiting for it. */
static void queue_map_change(struct gpu *g, uint32_t import, uint32_t n)
{
    struct sghw_cmd *slot = &g->ring[g->tail];

    *slot = (struct sghw_cmd){
        .opcode = (n & 1) ? SGHW_OP_UNMAP_IMPORT : SGHW_OP_MAP_IMPORT,
        .handle = import, .off0 = 0, .seqno = 1000 + n, .status = SGHW_ST_PENDING,
    };
    g->tail = (g->tail + 1) % RING_ENTRIES;
    mmio_write(g->bar0 + SGHW_REG_CMD_TAIL, g->tail);
    mmio_write(g->bar0 + SGHW_REG_DOORBELL, 1);
}

void stale_tlb_main(void)
{
    struct gpu gpus[2];
    struct gpu *exporter = &gpus[0], *importer = &gpus[1];
    struct sghw_cmd cmd, *done;
    uint32_t bo, import, n, overlaps = 0, blocks = 0;
    uintptr_t probe;

    if (find_gpus(gpus) != 2) {
        finish(0, "need two sharegpu devices");
    }
    gpu_init(exporter);
    gpu_init(importer);

    cmd = (struct sghw_cmd){ .opcode = SGHW_OP_BO_CREATE, .len = 4096,
                                .arg = SGHW_PLACEMENT_DEVICE };
    bo = gpu_submit(exporter, &cmd)->out_handle;
    cmd = (struct sghw_cmd){ .opcode = SGHW_OP_FILL, .handle = bo, .len = 4096,
                                .arg = FILL_PATTERN };
    gpu_submit(exporter, &cmd);
    cmd = (struct sghw_cmd){ .opcode = SGHW_OP_EXPORT, .handle = bo };
    done = gpu_submit(exporter, &cmd);
    cmd = (struct sghw_cmd){ .opcode = SGHW_OP_IMPORT };
    for (int i = 0; i < 16; i++) {
        cmd.uuid[i] = done->uuid[i];
    }
    import = gpu_submit(importer, &cmd)->out_handle;

    /* the mapping works: the window shows the exporter's bytes, the rest is hole */
    cmd = (struct sghw_cmd){ .opcode = SGHW_OP_MAP_IMPORT, .handle = import, .off0 = 0 };
    if (mmio_read(importer->bar2 + (uint32_t)gpu_submit(importer, &cmd)->result) !=
        FILL_PATTERN) {
        finish(0, "import window does not show the exporter's bytes");
    }
    cmd = (struct sghw_cmd){ .opcode = SGHW_OP_UNMAP_IMPORT, .handle = import };
    gpu_submit(importer, &cmd);
    probe = importer->bar2 + importer->vram_size + PROBE_WINDOW_OFFSET;

    __asm__ volatile("fninit\n\tfld1"); /* fsqrt(1) = 1, forever */
    for (n = 0; n < MAP_CHANGES || (overlaps < MIN_OVERLAPS && n < MAX_MAP_CHANGES); n++) {
        queue_map_change(importer, import, n);
        for (;;) {
            uint32_t before = mmio_read(importer->bar0 + SGHW_REG_LAST_SEQNO_LO);
            uint32_t value = probe_block(probe);
            uint32_t after = mmio_read(importer->bar0 + SGHW_REG_LAST_SEQNO_LO);

            blocks++;
            if (value != HOLE_VALUE) {
                puts_con("probe read ");
                puthex(value);
                puts_con(" after ");
                putdec(overlaps);
                puts_con(" overlapping map changes\n");
                finish(0, "a stale TLB entry reached another memory region");
            }
            overlaps += before != after;
            if (mmio_read(importer->bar0 + SGHW_REG_CMD_HEAD) == importer->tail) {
                break;
            }
        }
    }
    puts_con("probe blocks ");
    putdec(blocks);
    puts_con(", map changes ");
    putdec(n);
    puts_con(", changes completed during a probe block ");
    putdec(overlaps);
    puts_con("\n");
    if (overlaps < MIN_OVERLAPS) {
        finish(0, "too few map changes overlapped a probe block: race not exercised");
    }
    finish(1, "every probe read resolved in the map its TLB entry came from");
}
