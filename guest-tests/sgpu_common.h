// SPDX-License-Identifier: GPL-2.0
// sharegpu guest tests: plain-ioctl helpers over the driver uAPI (no libdrm), shared by the
// GoogleTest binaries and the demo. Functions return 0 / a value on success and -errno on
// failure unless noted; nothing here aborts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <linux/dma-buf.h>
#include <linux/sync_file.h>

#include "drm.h"
#include "drm_mode.h"
#include "sharegpu_drm.h"

// sw_sync (CONFIG_SW_SYNC, debugfs sync/sw_sync): not exported as uapi.
struct sgpu_sw_sync_create_fence_data {
  uint32_t value;
  char name[32];
  int32_t fence;
};
#define SGPU_SW_SYNC_IOC_CREATE_FENCE _IOWR('W', 0, struct sgpu_sw_sync_create_fence_data)
#define SGPU_SW_SYNC_IOC_INC _IOW('W', 1, uint32_t)

namespace sgt {

constexpr uint64_t kNoOffset = ~0ull;

uint32_t Crc32c(const void* data, size_t n);
uint32_t PatternCrc(uint32_t pattern, size_t size);
// Crc32c of a CPU mapping that may fault: 0, or -EFAULT when reading it raised SIGBUS/SIGSEGV
// (e.g. the driver's fault handler could not map an import), so a test fails instead of the
// whole binary dying.
int ProbeCrc(const void* data, size_t n, uint32_t* crc);
// Deterministic pseudo-random bytes.
void FillRandom(void* dst, size_t n, uint32_t seed);

// ioctl() retried on EINTR/EAGAIN; 0 or -errno.
int Ioctl(int fd, unsigned long req, void* arg);

struct Dev {
  int fd = -1;
  std::string node;  // /dev/dri/renderD128
  std::string pci;   // 0000:00:02.0 (DRM unique name; debugfs dir)
  drm_sharegpu_info info{};
  bool coherent() const { return info.flags & SHAREGPU_INFO_F_COHERENT; }
  std::string debugfs_dir() const { return "/sys/kernel/debug/dri/" + pci; }
  std::string Describe() const;
};

// Every sharegpu render node (opened once per process, in minor order).
std::vector<Dev>& Devices();
// The first device with / without SHAREGPU_INFO_F_COHERENT, or nullptr.
Dev* FindDev(bool coherent);
// A second fd on the same device (own GEM handle namespace), or -errno.
int Reopen(const Dev& d);
// The first card node (/dev/dri/cardN) of the DRM driver named `driver` (DRM_IOCTL_VERSION,
// e.g. "vgem", "virtio_gpu"), opened read-write: its fd, or -ENODEV; *path = its path.
int OpenCard(const std::string& driver, std::string* path = nullptr);
// The vgem card node, or -errno.
int OpenVgem();

// BOs
int BoCreate(const Dev& d, uint64_t size, uint32_t domains, uint32_t* handle,
             uint64_t* vram_off = nullptr);
int BoCreateFd(int fd, uint64_t size, uint32_t domains, uint32_t* handle);
void GemClose(int fd, uint32_t handle);
// mmap through the DRM fd; nullptr on failure (errno set).
void* BoMmap(int fd, uint32_t handle, size_t size);
int CpuAccess(int fd, uint32_t handle, uint32_t flags);
int BoInfo(int fd, uint32_t handle, drm_sharegpu_bo_info* info);
int BoMove(int fd, uint32_t handle, uint32_t domain, uint64_t* vram_off = nullptr);
int BoPin(int fd, uint32_t handle, bool unpin, uint32_t* pin_count = nullptr);
int GetInfo(int fd, drm_sharegpu_info* info);

// One FILL / CHECKSUM command (for batching several into one Submit()).
drm_sharegpu_cmd FillCmd(uint32_t h, uint64_t size, uint32_t pattern, uint64_t off = 0);
drm_sharegpu_cmd ChecksumCmd(uint32_t h, uint64_t size, uint64_t off = 0);

// Jobs. Submit() fills *out (job_id, out_fence_fd) when given.
int Submit(int fd, drm_sharegpu_cmd* cmds, uint32_t n, uint32_t flags,
           drm_sharegpu_submit* out = nullptr, int in_fence_fd = -1);
int Fill(int fd, uint32_t h, uint64_t off, uint64_t size, uint32_t pattern,
         uint32_t extra_flags = 0);
int Copy(int fd, uint32_t dst, uint64_t dst_off, uint32_t src, uint64_t src_off, uint64_t size,
         uint32_t extra_flags = 0);
// CRC32C as the device computes it (>= 0) or -errno.
int64_t Checksum(int fd, uint32_t h, uint64_t off, uint64_t size, uint32_t extra_flags = 0);
int WaitBo(int fd, uint32_t h, int64_t timeout_ns, uint32_t flags = 0);
int WaitJob(int fd, uint64_t job_id, int64_t timeout_ns, uint32_t* status = nullptr);

// PRIME / dma-buf / sync_file
int ExportFd(int drm_fd, uint32_t handle);  // dma-buf fd or -errno
int ImportFd(int drm_fd, int dmabuf_fd, uint32_t* handle);
int DmaBufSync(int dmabuf_fd, uint64_t flags);
int ExportSyncFile(int dmabuf_fd, uint32_t flags);  // sync_file fd or -errno
int ImportSyncFile(int dmabuf_fd, int sync_fd, uint32_t flags);
// poll() a fence fd: 1 signalled, 0 still pending after timeout_ms, -errno.
int WaitFenceFd(int fd, int timeout_ms);
bool FenceSignaled(int fd);

// sw_sync timeline (debugfs); -errno when unavailable.
int SwSyncTimeline();
int SwSyncFence(int timeline, uint32_t value);
int SwSyncInc(int timeline, uint32_t n);

// debugfs sharegpu_counters of a device (empty map when unreadable).
std::map<std::string, int64_t> Counters(const Dev& d);
int64_t Counter(const Dev& d, const std::string& name);  // -1 if missing
std::string ReadFile(const std::string& path);
// Writes `value` to the device's debugfs file `name` (knobs, fault injection); 0 or -errno.
int WriteDebugfs(const Dev& d, const std::string& name, const std::string& value);

// Condition polling with a deadline (a failure detector, not synchronisation): true once
// pred() holds, false if it still does not after timeout_ms.
template <class Pred>
bool WaitUntil(Pred pred, int timeout_ms);
bool WaitUntilImpl(bool (*fn)(void*), void* ctx, int timeout_ms);
template <class Pred>
bool WaitUntil(Pred pred, int timeout_ms) {
  return WaitUntilImpl([](void* c) { return (*static_cast<Pred*>(c))(); }, &pred, timeout_ms);
}

// Kernel command line "key=value" (empty when absent).
std::string CmdlineParam(const std::string& key);

// Host agent (scripts/guest-tests.sh, guest-tests/host-agent.py): print
//   SHAREGPU-HOST-REQUEST: <token> <request...>
// on the console and read "SHAREGPU-HOST-REPLY: <token> ok|error <msg>" from the reply
// serial port (/dev/ttyS1). Returns 0 (ok), -EIO (host error, *reply = message),
// -ETIMEDOUT, -ENODEV (no agent: kernel parameter sgputest.host=1 missing).
bool HostAgentAvailable();
int HostRequest(const std::string& request, std::string* reply, int timeout_ms = 60000);
// The host agent's mailbox between guests (scripts/guest-multivm.sh, host-agent.py
// --mailbox): Put stores KEY=VALUE for the other guests; Get waits on the host until KEY is
// there (*value = VALUE), or a guest put "abort" (-EIO), or secs pass (-EIO).
int MailboxPut(const std::string& key, const std::string& value);
int MailboxGet(const std::string& key, std::string* value, int secs = 600);

// RAII holders (tests return early on ASSERT failures).
struct ScopedFd {
  int fd = -1;
  ScopedFd() = default;
  explicit ScopedFd(int f) : fd(f) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { reset(); }
  void reset(int f = -1);
  int get() const { return fd; }
};

struct ScopedBo {
  int fd = -1;  // DRM fd the handle belongs to
  uint32_t handle = 0;
  size_t size = 0;
  void* map = nullptr;
  ScopedBo() = default;
  ScopedBo(const ScopedBo&) = delete;
  ScopedBo& operator=(const ScopedBo&) = delete;
  ~ScopedBo() { reset(); }
  // Create on fd; 0 or -errno.
  int Create(int drm_fd, uint64_t sz, uint32_t domains);
  // Adopt an imported handle.
  void Adopt(int drm_fd, uint32_t h, size_t sz) { reset(); fd = drm_fd; handle = h; size = sz; }
  // mmap through the DRM fd (cached in map); nullptr on failure.
  uint8_t* Map();
  void Unmap();
  void reset();
};

}  // namespace sgt
