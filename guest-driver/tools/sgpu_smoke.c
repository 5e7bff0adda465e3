// SPDX-License-Identifier: GPL-2.0
/*
 * sharegpu guest smoke test: probe, jobs (fill/copy/checksum), fences, moves,
 * eviction, PRIME export/import between two sharegpu devices (p2p by UUID,
 * import window mmap), udmabuf import, bad input, fdinfo and debugfs.
 *
 * Build static: make -C guest-driver/tools KDIR=<kernel tree>
 * Exit status 0 = all checks passed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <linux/udmabuf.h>

#include "drm.h"
#include "sharegpu_drm.h"

static int failures;

#define CHECK(cond, ...)							\
	do {								\
		if (!(cond)) {						\
			failures++;					\
			printf("FAIL %s:%d: ", __func__, __LINE__);	\
			printf(__VA_ARGS__);				\
			printf(" (errno %d %s)\n", errno, strerror(errno)); \
		}							\
	} while (0)

static uint32_t crc32c(const uint8_t *p, size_t n)
{
	uint32_t crc = ~0u;

	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & -(crc & 1));
	}
	return ~crc;
}

static int xioctl(int fd, unsigned long req, void *arg)
{
	int ret;

	do {
		ret = ioctl(fd, req, arg);
	} while (ret == -1 && (errno == EINTR || errno == EAGAIN));
	return ret;
}

struct dev {
	int fd;
	char path[64];
	struct drm_sharegpu_info info;
};

static int open_sharegpu(struct dev *devs, int max)
{
	int n = 0;

	for (int i = 128; i < 144 && n < max; i++) {
		char name[32] = {};
		struct drm_version v = { .name = name, .name_len = sizeof(name) - 1 };
		char path[64];
		int fd;

		snprintf(path, sizeof(path), "/dev/dri/renderD%d", i);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (xioctl(fd, DRM_IOCTL_VERSION, &v) || strcmp(name, "sharegpu")) {
			close(fd);
			continue;
		}
		devs[n].fd = fd;
		snprintf(devs[n].path, sizeof(devs[n].path), "%s", path);
		n++;
	}
	return n;
}

static uint32_t bo_create(struct dev *d, uint64_t size, uint32_t domains, uint64_t *off)
{
	struct drm_sharegpu_bo_create c = { .size = size, .domains = domains };

	if (xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_CREATE, &c))
		return 0;
	if (off)
		*off = c.vram_offset;
	return c.handle;
}

static void *bo_map(struct dev *d, uint32_t h, size_t size)
{
	struct drm_sharegpu_bo_mmap_offset m = { .handle = h };
	void *p;

	if (xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_MMAP_OFFSET, &m))
		return NULL;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, d->fd, m.offset);
	return p == MAP_FAILED ? NULL : p;
}

static int cpu_access(struct dev *d, uint32_t h, uint32_t flags)
{
	struct drm_sharegpu_bo_cpu_access a = { .handle = h, .flags = flags };

	return xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_CPU_ACCESS, &a);
}

static int submit_wait(struct dev *d, struct drm_sharegpu_cmd *cmds, uint32_t n)
{
	struct drm_sharegpu_submit s = {
		.cmds = (uintptr_t)cmds, .num_cmds = n, .flags = SHAREGPU_SUBMIT_F_WAIT,
	};

	return xioctl(d->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s);
}

static int fill(struct dev *d, uint32_t h, uint64_t off, uint64_t size, uint32_t pat)
{
	struct drm_sharegpu_cmd c = {
		.op = SHAREGPU_CMD_FILL, .dst_handle = h, .dst_offset = off, .size = size,
		.pattern = pat,
	};

	return submit_wait(d, &c, 1);
}

static int64_t checksum(struct dev *d, uint32_t h, uint64_t off, uint64_t size)
{
	struct drm_sharegpu_cmd c = {
		.op = SHAREGPU_CMD_CHECKSUM, .src_handle = h, .src_offset = off, .size = size,
	};

	if (submit_wait(d, &c, 1))
		return -1;
	return (int64_t)(uint32_t)c.result;
}

static uint32_t pattern_crc(uint32_t pat, size_t size)
{
	uint32_t *buf = malloc(size);
	uint32_t crc;

	for (size_t i = 0; i < size / 4; i++)
		buf[i] = pat;
	crc = crc32c((uint8_t *)buf, size);
	free(buf);
	return crc;
}

static void test_info(struct dev *d)
{
	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_GET_INFO, &d->info), "GET_INFO");
	printf("%s: vram %llu MiB, window %llu MiB, features %#x, %s, %s\n", d->path,
	       (unsigned long long)d->info.vram_size >> 20,
	       (unsigned long long)d->info.import_window_size >> 20, d->info.hw_features,
	       d->info.flags & SHAREGPU_INFO_F_COHERENT ? "coherent" : "non-coherent",
	       d->info.flags & SHAREGPU_INFO_F_MSIX ? "MSI-X" : "INTx");
}

static void test_jobs(struct dev *d)
{
	const size_t sz = 256 * 1024;
	uint64_t off = ~0ull;
	uint32_t a = bo_create(d, sz, SHAREGPU_DOMAIN_VRAM, &off);
	uint32_t b = bo_create(d, sz, SHAREGPU_DOMAIN_SYSTEM, NULL);
	uint8_t *pa, *pb;
	int64_t crc;

	CHECK(a && b, "bo_create");
	CHECK(off != ~0ull, "VRAM BO has a VRAM offset");
	pa = bo_map(d, a, sz);
	pb = bo_map(d, b, sz);
	CHECK(pa && pb, "mmap");
	if (!pa || !pb)
		return;

	/* CPU writes, device checksums */
	CHECK(!cpu_access(d, a, SHAREGPU_CPU_ACCESS_WRITE), "cpu begin");
	for (size_t i = 0; i < sz; i++)
		pa[i] = (uint8_t)(i * 7 + 3);
	CHECK(!cpu_access(d, a, SHAREGPU_CPU_ACCESS_WRITE | SHAREGPU_CPU_ACCESS_END), "cpu end");
	crc = checksum(d, a, 0, sz);
	CHECK(crc == crc32c(pa, sz), "checksum of CPU data: dev %llx cpu %x",
	      (long long)crc, crc32c(pa, sz));

	/* fill + copy to a SYSTEM BO with an out-fence, read back on the CPU */
	struct drm_sharegpu_cmd cmds[2] = {
		{ .op = SHAREGPU_CMD_FILL, .dst_handle = a, .dst_offset = 4096, .size = 8192,
		  .pattern = 0xdeadbeef },
		{ .op = SHAREGPU_CMD_COPY, .dst_handle = b, .src_handle = a, .size = sz },
	};
	struct drm_sharegpu_submit s = {
		.cmds = (uintptr_t)cmds, .num_cmds = 2, .flags = SHAREGPU_SUBMIT_F_OUT_FENCE,
	};
	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s), "submit");
	struct pollfd pfd = { .fd = s.out_fence_fd, .events = POLLIN };

	CHECK(poll(&pfd, 1, 10000) == 1, "out fence signals");
	close(s.out_fence_fd);
	struct drm_sharegpu_wait_job wj = { .job_id = s.job_id, .timeout_ns = 1000000000 };

	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_WAIT_JOB, &wj) && !wj.status, "wait job");
	CHECK(!cpu_access(d, b, SHAREGPU_CPU_ACCESS_READ), "cpu begin read");
	CHECK(*(uint32_t *)(pb + 4096) == 0xdeadbeef && *(uint32_t *)(pb + 12284) == 0xdeadbeef &&
	      pb[0] == 3 && pb[sz - 1] == (uint8_t)((sz - 1) * 7 + 3),
	      "copied data visible in SYSTEM BO: %x", *(uint32_t *)(pb + 4096));
	CHECK(!cpu_access(d, b, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END), "end");

	/* placement moves keep the contents */
	crc = checksum(d, a, 0, sz);
	struct drm_sharegpu_bo_move mv = { .handle = a, .domain = SHAREGPU_DOMAIN_SYSTEM };

	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_MOVE, &mv) && mv.vram_offset == ~0ull,
	      "move to system");
	struct drm_sharegpu_bo_info bi = { .handle = a };

	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_INFO, &bi) &&
	      bi.domain == SHAREGPU_DOMAIN_SYSTEM && bi.hw_placement == 1,
	      "driver and device agree: system (%u/%u)", bi.domain, bi.hw_placement);
	CHECK(checksum(d, a, 0, sz) == crc, "contents after move to system");
	mv.domain = SHAREGPU_DOMAIN_VRAM;
	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_MOVE, &mv) && mv.vram_offset != ~0ull,
	      "move to vram");
	bi.handle = a;
	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_INFO, &bi) && bi.hw_placement == 0 &&
	      bi.vram_offset == bi.hw_vram_offset, "driver and device agree: vram");
	CHECK(checksum(d, a, 0, sz) == crc, "contents after move to vram");

	/* pin blocks moves */
	struct drm_sharegpu_bo_pin pin = { .handle = a };

	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_PIN, &pin) && pin.pin_count == 1, "pin");
	mv.domain = SHAREGPU_DOMAIN_SYSTEM;
	CHECK(xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_MOVE, &mv) && errno == EBUSY, "pinned: EBUSY");
	pin.flags = SHAREGPU_PIN_F_UNPIN;
	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_PIN, &pin) && pin.pin_count == 0, "unpin");

	munmap(pa, sz);
	munmap(pb, sz);
	struct drm_gem_close gc = { .handle = a };

	xioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	gc.handle = b;
	xioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
}

static void test_eviction(struct dev *d)
{
	uint64_t bosz = d->info.vram_size / 4;
	enum { N = 6 };
	uint32_t h[N];
	int64_t crc[N];

	for (int i = 0; i < N; i++) {
		h[i] = bo_create(d, bosz, SHAREGPU_DOMAIN_VRAM, NULL);
		CHECK(h[i], "create vram bo %d of %llu MiB", i, (unsigned long long)bosz >> 20);
		if (!h[i])
			return;
		CHECK(!fill(d, h[i], 0, 1 << 20, 0x1000 + i), "fill %d", i);
		crc[i] = checksum(d, h[i], 0, 1 << 20);
	}
	for (int i = 0; i < N; i++) {
		CHECK(checksum(d, h[i], 0, 1 << 20) == crc[i] &&
		      crc[i] == pattern_crc(0x1000 + i, 1 << 20), "bo %d intact after eviction", i);
	}
	for (int i = 0; i < N; i++) {
		struct drm_gem_close gc = { .handle = h[i] };

		xioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	}
}

/* Run the driver's RESYNC recovery (debugfs sharegpu_resync) on every device. */
static int resync_all(void)
{
	DIR *dir = opendir("/sys/kernel/debug/dri");
	struct dirent *de;
	char path[512];
	int n = 0;

	while (dir && (de = readdir(dir))) {
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/kernel/debug/dri/%s/sharegpu_resync",
			 de->d_name);
		fd = open(path, O_WRONLY);
		if (fd < 0)
			continue;
		if (write(fd, "1", 1) == 1)
			n++;
		close(fd);
	}
	if (dir)
		closedir(dir);
	return n;
}

static void test_p2p(struct dev *exp, struct dev *imp)
{
	const size_t sz = 64 * 1024;
	uint32_t h = bo_create(exp, sz, SHAREGPU_DOMAIN_VRAM, NULL), ih;
	struct drm_prime_handle ph = { .handle = h, .flags = DRM_CLOEXEC | DRM_RDWR };
	int64_t c1, c2;

	CHECK(h, "export bo");
	CHECK(!fill(exp, h, 0, sz, 0xa5a5a5a5), "fill on exporter");
	CHECK(!xioctl(exp->fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, &ph), "handle to fd");
	struct drm_prime_handle ih_args = { .fd = ph.fd };

	CHECK(!xioctl(imp->fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, &ih_args), "fd to handle on 2nd dev");
	ih = ih_args.handle;
	struct drm_sharegpu_bo_info bi = { .handle = ih };

	CHECK(!xioctl(imp->fd, DRM_IOCTL_SHAREGPU_BO_INFO, &bi) &&
	      (bi.flags & SHAREGPU_BO_INFO_F_P2P), "import is p2p (flags %#x)", bi.flags);
	c1 = checksum(exp, h, 0, sz);
	c2 = checksum(imp, ih, 0, sz);
	CHECK(c1 >= 0 && c1 == c2 && c1 == pattern_crc(0xa5a5a5a5, sz),
	      "importer sees exporter data (%llx %llx)", (long long)c1, (long long)c2);
	CHECK(!fill(imp, ih, 0, 4096, 0x5a5a5a5a), "importer writes");
	c1 = checksum(exp, h, 0, 4096);
	CHECK(c1 == pattern_crc(0x5a5a5a5a, 4096), "exporter sees importer write");

	/* CPU access through the importer's import window */
	uint32_t *p = bo_map(imp, ih, sz);

	CHECK(p, "mmap import (window)");
	if (p) {
		CHECK(p[0] == 0x5a5a5a5a && p[1024] == 0xa5a5a5a5, "window read %x %x", p[0],
		      p[1024]);
		/* move the exporter: move_notify + BO_INVALIDATED, then re-fault */
		struct drm_sharegpu_bo_move mv = { .handle = h, .domain = SHAREGPU_DOMAIN_SYSTEM };

		CHECK(!xioctl(exp->fd, DRM_IOCTL_SHAREGPU_BO_MOVE, &mv), "move exported bo");
		usleep(100000);
		CHECK(p[0] == 0x5a5a5a5a, "window re-mapped after move: %x", p[0]);
		c2 = checksum(imp, ih, 0, 4096);
		CHECK(c2 == pattern_crc(0x5a5a5a5a, 4096), "import still valid after move");
		/* lost events (RESYNC): BOs re-queried, window unmapped, then re-faulted */
		CHECK(resync_all() >= 2, "resync via debugfs");
		CHECK(p[0] == 0x5a5a5a5a && p[1024] == 0xa5a5a5a5,
		      "window re-mapped after resync: %x %x", p[0], p[1024]);
		c1 = checksum(exp, h, 0, sz);
		c2 = checksum(imp, ih, 0, sz);
		CHECK(c1 >= 0 && c1 == c2, "data intact after resync (%llx %llx)",
		      (long long)c1, (long long)c2);
		munmap(p, sz);
	}
	/* the dma-buf fd itself: DMA_BUF_IOCTL_SYNC + mmap (exporter path) */
	struct dma_buf_sync sync = { .flags = DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ };

	CHECK(!xioctl(ph.fd, DMA_BUF_IOCTL_SYNC, &sync), "dma-buf sync start");
	uint32_t *q = mmap(NULL, sz, PROT_READ, MAP_SHARED, ph.fd, 0);

	CHECK(q != MAP_FAILED, "dma-buf mmap");
	if (q != MAP_FAILED) {
		CHECK(q[0] == 0x5a5a5a5a && q[2048] == 0xa5a5a5a5, "dma-buf mmap data %x", q[0]);
		munmap(q, sz);
	}
	sync.flags = DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ;
	CHECK(!xioctl(ph.fd, DMA_BUF_IOCTL_SYNC, &sync), "dma-buf sync end");
	close(ph.fd);
	struct drm_gem_close gc = { .handle = ih };

	xioctl(imp->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	gc.handle = h;
	xioctl(exp->fd, DRM_IOCTL_GEM_CLOSE, &gc);
}

static void test_udmabuf(struct dev *d)
{
	const size_t sz = 64 * 1024;
	int ufd = open("/dev/udmabuf", O_RDWR);
	int mfd;
	uint8_t *m;

	if (ufd < 0) {
		printf("SKIP udmabuf: %s\n", strerror(errno));
		return;
	}
	mfd = memfd_create("sgpu", MFD_ALLOW_SEALING);
	CHECK(mfd >= 0 && !ftruncate(mfd, sz) && !fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK),
	      "memfd");
	m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	for (size_t i = 0; i < sz; i++)
		m[i] = (uint8_t)(i ^ 0x55);
	struct udmabuf_create uc = { .memfd = mfd, .offset = 0, .size = sz,
				     .flags = UDMABUF_FLAGS_CLOEXEC };
	int bfd = xioctl(ufd, UDMABUF_CREATE, &uc);

	CHECK(bfd >= 0, "udmabuf create");
	if (bfd < 0)
		return;
	struct drm_prime_handle ph = { .fd = bfd };

	CHECK(!xioctl(d->fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, &ph), "import udmabuf");
	CHECK(checksum(d, ph.handle, 0, sz) == crc32c(m, sz), "device reads udmabuf pages");
	CHECK(!fill(d, ph.handle, 0, 4096, 0x12345678), "device writes udmabuf");
	CHECK(*(uint32_t *)m == 0x12345678 && m[4096] == (uint8_t)(4096 ^ 0x55),
	      "CPU sees device write in memfd: %x", *(uint32_t *)m);
	struct drm_gem_close gc = { .handle = ph.handle };

	xioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	close(bfd);
	munmap(m, sz);
	close(mfd);
	close(ufd);
}

/* two processes lock the same BOs in opposite order: ww -EDEADLK backoffs */
static void test_contention(struct dev *d)
{
	const size_t sz = 64 * 1024;
	uint32_t a = bo_create(d, sz, SHAREGPU_DOMAIN_VRAM, NULL);
	uint32_t b = bo_create(d, sz, SHAREGPU_DOMAIN_SYSTEM, NULL);
	pid_t pid[2];
	int status, ok = 1;

	CHECK(a && b, "create");
	for (int p = 0; p < 2; p++) {
		pid[p] = fork();
		if (pid[p] == 0) {
			struct drm_sharegpu_cmd c[2] = {
				{ .op = SHAREGPU_CMD_COPY, .dst_handle = p ? a : b,
				  .src_handle = p ? b : a, .size = 4096 },
				{ .op = SHAREGPU_CMD_COPY, .dst_handle = p ? b : a,
				  .src_handle = p ? a : b, .dst_offset = 8192, .src_offset = 16384,
				  .size = 4096 },
			};
			struct drm_sharegpu_submit s = {
				.cmds = (uintptr_t)c, .num_cmds = 2,
			};

			for (int i = 0; i < 300; i++)
				if (xioctl(d->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s))
					_exit(1);
			_exit(0);
		}
	}
	for (int p = 0; p < 2; p++)
		ok &= waitpid(pid[p], &status, 0) == pid[p] && WIFEXITED(status) &&
		      !WEXITSTATUS(status);
	CHECK(ok, "concurrent submits in opposite lock order");
	struct drm_sharegpu_wait_bo w = { .handle = a, .timeout_ns = 10000000000ll };

	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_WAIT_BO, &w), "wait idle");
	struct drm_gem_close gc = { .handle = a };

	xioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	gc.handle = b;
	xioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
}

static int open_vgem(void)
{
	for (int i = 0; i < 16; i++) {
		char name[32] = {};
		struct drm_version v = { .name = name, .name_len = sizeof(name) - 1 };
		char path[64];
		int fd;

		snprintf(path, sizeof(path), "/dev/dri/card%d", i);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (!xioctl(fd, DRM_IOCTL_VERSION, &v) && !strcmp(name, "vgem"))
			return fd;
		close(fd);
	}
	return -1;
}

static void test_vgem(struct dev *d)
{
	int vfd = open_vgem();
	struct drm_mode_create_dumb cd = { .width = 64, .height = 64, .bpp = 32 };
	struct drm_mode_map_dumb md = {};
	uint32_t *m;

	if (vfd < 0) {
		printf("SKIP vgem: no vgem card node\n");
		return;
	}
	CHECK(!xioctl(vfd, DRM_IOCTL_MODE_CREATE_DUMB, &cd), "vgem dumb create");
	md.handle = cd.handle;
	CHECK(!xioctl(vfd, DRM_IOCTL_MODE_MAP_DUMB, &md), "vgem map dumb");
	m = mmap(NULL, cd.size, PROT_READ | PROT_WRITE, MAP_SHARED, vfd, md.offset);
	CHECK(m != MAP_FAILED, "vgem mmap");
	if (m == MAP_FAILED)
		return;
	for (size_t i = 0; i < cd.size / 4; i++)
		m[i] = 0xc0de0000u + i;
	struct drm_prime_handle ph = { .handle = cd.handle, .flags = DRM_CLOEXEC | DRM_RDWR };

	CHECK(!xioctl(vfd, DRM_IOCTL_PRIME_HANDLE_TO_FD, &ph), "vgem export");
	struct drm_prime_handle ih = { .fd = ph.fd };

	CHECK(!xioctl(d->fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, &ih), "import vgem");
	CHECK(checksum(d, ih.handle, 0, cd.size) == crc32c((uint8_t *)m, cd.size),
	      "device reads vgem pages");
	CHECK(!fill(d, ih.handle, 256, 256, 0xfeedf00d), "device writes vgem");
	CHECK(m[64] == 0xfeedf00d && m[63] == 0xc0de0000u + 63 && m[128] == 0xc0de0000u + 128,
	      "CPU sees device write in vgem bo: %x", m[64]);
	struct drm_gem_close gc = { .handle = ih.handle };

	xioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
	close(ph.fd);
	munmap(m, cd.size);
	close(vfd);
}

/*
 * With sgpu.hostmove=1 on the kernel command line, the host (run-smoke.sh)
 * answers "SGPU-MOVEME <qdev id> <hw handle> <placement>" with the monitor's
 * x_sharegpu_move_bo: an unsolicited BO_MOVED the driver must revalidate.
 */
static int host_move_wanted(void)
{
	char buf[1024] = {};
	int fd = open("/proc/cmdline", O_RDONLY);

	if (fd < 0)
		return 0;
	if (read(fd, buf, sizeof(buf) - 1) < 0)
		buf[0] = 0;
	close(fd);
	return strstr(buf, "sgpu.hostmove=1") != NULL;
}

static int wait_domain(struct dev *d, uint32_t h, uint32_t domain, uint32_t hw)
{
	struct drm_sharegpu_bo_info bi = { .handle = h };

	for (int i = 0; i < 600; i++) {
		bi.handle = h;
		if (!xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_INFO, &bi) && bi.domain == domain &&
		    bi.hw_placement == hw)
			return 0;
		usleep(100000);
	}
	printf("domain %u hw %u\n", bi.domain, bi.hw_placement);
	return -1;
}

static void test_host_move(struct dev *d, const char *qdev_id)
{
	const size_t sz = 128 * 1024;
	uint32_t h = bo_create(d, sz, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM, NULL);
	struct drm_sharegpu_bo_info bi = { .handle = h };
	uint32_t *p;

	if (!host_move_wanted()) {
		printf("SKIP host move: no sgpu.hostmove=1\n");
		return;
	}
	CHECK(h && !fill(d, h, 0, sz, 0x600d600d), "create+fill");
	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_INFO, &bi) && bi.domain == SHAREGPU_DOMAIN_VRAM,
	      "in vram");
	p = bo_map(d, h, sz);
	CHECK(p && p[100] == 0x600d600d, "cpu view before");
	printf("SGPU-MOVEME %s %u system\n", qdev_id, bi.hw_handle);
	CHECK(!wait_domain(d, h, SHAREGPU_DOMAIN_SYSTEM, 1), "driver followed device eviction");
	CHECK(!cpu_access(d, h, SHAREGPU_CPU_ACCESS_READ), "cpu begin");
	CHECK(p && p[100] == 0x600d600d && p[sz / 4 - 1] == 0x600d600d,
	      "contents after host eviction (cpu, system pages): %x", p ? p[100] : 0);
	CHECK(!cpu_access(d, h, SHAREGPU_CPU_ACCESS_READ | SHAREGPU_CPU_ACCESS_END), "cpu end");
	printf("SGPU-MOVEME %s %u device\n", qdev_id, bi.hw_handle);
	CHECK(!wait_domain(d, h, SHAREGPU_DOMAIN_VRAM, 0), "driver adopted device move to vram");
	bi.handle = h;
	CHECK(!xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_INFO, &bi) &&
	      bi.vram_offset == bi.hw_vram_offset, "offsets agree %llx %llx",
	      (unsigned long long)bi.vram_offset, (unsigned long long)bi.hw_vram_offset);
	CHECK(p && p[200] == 0x600d600d, "cpu view after adoption: %x", p ? p[200] : 0);
	CHECK(checksum(d, h, 0, sz) == pattern_crc(0x600d600d, sz), "device view");
	if (p)
		munmap(p, sz);
	struct drm_gem_close gc = { .handle = h };

	xioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
}

static void test_bad_input(struct dev *d)
{
	struct drm_sharegpu_bo_create c = { .size = 0, .domains = SHAREGPU_DOMAIN_VRAM };

	CHECK(xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_CREATE, &c) && errno == EINVAL, "size 0");
	c.size = 4096;
	c.domains = 0x80;
	CHECK(xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_CREATE, &c) && errno == EINVAL, "bad domain");
	c.size = 1ull << 40;
	c.domains = SHAREGPU_DOMAIN_VRAM;
	CHECK(xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_CREATE, &c), "huge");

	uint32_t h = bo_create(d, 4096, SHAREGPU_DOMAIN_VRAM, NULL);
	struct drm_sharegpu_cmd cmd = { .op = SHAREGPU_CMD_CHECKSUM, .src_handle = 999,
					.size = 16 };
	CHECK(submit_wait(d, &cmd, 1) && errno == ENOENT, "bad handle");
	cmd.src_handle = h;
	cmd.src_offset = 4090;
	CHECK(submit_wait(d, &cmd, 1) && errno == ERANGE, "out of range");
	cmd.src_offset = ~0ull;
	CHECK(submit_wait(d, &cmd, 1) && errno == ERANGE, "overflow");
	cmd.op = 77;
	CHECK(submit_wait(d, &cmd, 1) && errno == EINVAL, "bad op");
	struct drm_sharegpu_submit s = { .cmds = 8, .num_cmds = 1 };

	CHECK(xioctl(d->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s) && errno == EFAULT, "bad pointer");
	s.num_cmds = 100000;
	CHECK(xioctl(d->fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s) && errno == EINVAL, "too many");
	struct drm_sharegpu_wait_job wj = { .job_id = 1ull << 60 };

	CHECK(xioctl(d->fd, DRM_IOCTL_SHAREGPU_WAIT_JOB, &wj) && errno == EINVAL, "bad job");
	struct drm_sharegpu_bo_pin pin = { .handle = h, .flags = SHAREGPU_PIN_F_UNPIN };

	CHECK(xioctl(d->fd, DRM_IOCTL_SHAREGPU_BO_PIN, &pin) && errno == EINVAL, "unbalanced unpin");
	struct drm_gem_close gc = { .handle = h };

	xioctl(d->fd, DRM_IOCTL_GEM_CLOSE, &gc);
}

static void dump_file(const char *path)
{
	char buf[4096];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0) {
		printf("(no %s)\n", path);
		return;
	}
	printf("--- %s\n", path);
	while ((n = read(fd, buf, sizeof(buf) - 1)) > 0) {
		buf[n] = 0;
		fputs(buf, stdout);
	}
	close(fd);
}

int main(void)
{
	struct dev devs[4] = {};
	char path[512];
	int n = open_sharegpu(devs, 4);

	setvbuf(stdout, NULL, _IONBF, 0);
	mkdir("/sys/kernel/debug", 0755);
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	printf("sgpu_smoke: %d sharegpu render node(s)\n", n);
	if (n < 1)
		return 1;
	for (int i = 0; i < n; i++)
		test_info(&devs[i]);
	for (int i = 0; i < n; i++) {
		test_jobs(&devs[i]);
		test_bad_input(&devs[i]);
	}
	test_eviction(&devs[0]);
	test_contention(&devs[0]);
	if (n >= 2) {
		test_p2p(&devs[0], &devs[1]);
		test_p2p(&devs[1], &devs[0]);
	} else {
		printf("SKIP p2p: one device\n");
	}
	test_udmabuf(&devs[n - 1]);
	test_vgem(&devs[0]);
	test_host_move(&devs[0], "sgpu0");

	/* fdinfo memory stats: keep a BO around */
	bo_create(&devs[0], 1 << 20, SHAREGPU_DOMAIN_VRAM, NULL);
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", devs[0].fd);
	dump_file(path);
	DIR *dir = opendir("/sys/kernel/debug/dri");
	struct dirent *de;

	while (dir && (de = readdir(dir))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/kernel/debug/dri/%s/sharegpu_counters",
			 de->d_name);
		if (access(path, R_OK))
			continue;
		dump_file(path);
		snprintf(path, sizeof(path), "/sys/kernel/debug/dri/%s/sharegpu_bos", de->d_name);
		dump_file(path);
	}
	if (dir)
		closedir(dir);
	printf("sgpu_smoke: %s (%d failure(s))\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
