// SPDX-License-Identifier: GPL-2.0
// sharegpu guest tests: helpers (see sgpu_common.h).
#include "sgpu_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <setjmp.h>
#include <signal.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

namespace sgt {

uint32_t Crc32c(const void* data, size_t n) {
  static uint32_t table[256];
  static std::once_flag once;
  std::call_once(once, [] {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
      table[i] = c;
    }
  });
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t crc = ~0u;
  while (n--) crc = (crc >> 8) ^ table[(crc ^ *p++) & 0xff];
  return ~crc;
}

uint32_t PatternCrc(uint32_t pattern, size_t size) {
  std::vector<uint32_t> buf(size / 4, pattern);
  return Crc32c(buf.data(), size);
}

static thread_local sigjmp_buf* g_probe_jmp;

static void ProbeHandler(int sig) {
  if (g_probe_jmp) siglongjmp(*g_probe_jmp, sig);
  signal(sig, SIG_DFL);
  raise(sig);
}

int ProbeCrc(const void* data, size_t n, uint32_t* crc) {
  Crc32c("", 0);  // table init outside the probe
  struct sigaction sa {}, old_bus, old_segv;
  sa.sa_handler = ProbeHandler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &old_bus);
  sigaction(SIGSEGV, &sa, &old_segv);
  sigjmp_buf jb;
  int sig = sigsetjmp(jb, 1);
  if (sig == 0) {
    g_probe_jmp = &jb;
    *crc = Crc32c(data, n);
  }
  g_probe_jmp = nullptr;
  sigaction(SIGBUS, &old_bus, nullptr);
  sigaction(SIGSEGV, &old_segv, nullptr);
  return sig ? -EFAULT : 0;
}

void FillRandom(void* dst, size_t n, uint32_t seed) {
  uint8_t* p = static_cast<uint8_t*>(dst);
  uint32_t x = seed * 2654435761u + 0x9e3779b9u;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = static_cast<uint8_t>(x);
  }
}

int Ioctl(int fd, unsigned long req, void* arg) {
  int ret;
  do {
    ret = ioctl(fd, req, arg);
  } while (ret == -1 && (errno == EINTR || errno == EAGAIN));
  return ret == -1 ? -errno : ret;
}

std::string Dev::Describe() const {
  char buf[256];
  snprintf(buf, sizeof(buf), "%s (%s): vram %llu MiB, features %#x, %s, %s", node.c_str(),
           pci.c_str(), (unsigned long long)(info.vram_size >> 20), info.hw_features,
           coherent() ? "coherent" : "NON-coherent",
           (info.flags & SHAREGPU_INFO_F_MSIX) ? "MSI-X" : "INTx");
  return buf;
}

static std::string DrmName(int fd) {
  char name[64] = {};
  drm_version v{};
  v.name = name;
  v.name_len = sizeof(name) - 1;
  if (Ioctl(fd, DRM_IOCTL_VERSION, &v)) return "";
  return name;
}

static std::string PciOf(int fd) {
  struct stat st;
  if (fstat(fd, &st)) return "";
  char link[128], target[512];
  snprintf(link, sizeof(link), "/sys/dev/char/%u:%u/device", major(st.st_rdev),
           minor(st.st_rdev));
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  if (n <= 0) return "";
  target[n] = 0;
  const char* base = strrchr(target, '/');
  return base ? base + 1 : target;
}

std::vector<Dev>& Devices() {
  static std::vector<Dev> devs;
  static std::once_flag once;
  std::call_once(once, [] {
    for (int i = 128; i < 192; i++) {
      char path[64];
      snprintf(path, sizeof(path), "/dev/dri/renderD%d", i);
      int fd = open(path, O_RDWR | O_CLOEXEC);
      if (fd < 0) continue;
      if (DrmName(fd) != "sharegpu") {
        close(fd);
        continue;
      }
      Dev d;
      d.fd = fd;
      d.node = path;
      d.pci = PciOf(fd);
      GetInfo(fd, &d.info);
      devs.push_back(d);
    }
  });
  return devs;
}

Dev* FindDev(bool coherent) {
  for (Dev& d : Devices())
    if (d.coherent() == coherent) return &d;
  return nullptr;
}

int Reopen(const Dev& d) {
  int fd = open(d.node.c_str(), O_RDWR | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

int OpenCard(const std::string& driver, std::string* path) {
  for (int i = 0; i < 64; i++) {
    const std::string node = "/dev/dri/card" + std::to_string(i);
    int fd = open(node.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;
    if (DrmName(fd) == driver) {
      if (path) *path = node;
      return fd;
    }
    close(fd);
  }
  return -ENODEV;
}

int OpenVgem() { return OpenCard("vgem"); }

int GetInfo(int fd, drm_sharegpu_info* info) {
  return Ioctl(fd, DRM_IOCTL_SHAREGPU_GET_INFO, info);
}

int BoCreateFd(int fd, uint64_t size, uint32_t domains, uint32_t* handle) {
  drm_sharegpu_bo_create c{};
  c.size = size;
  c.domains = domains;
  int ret = Ioctl(fd, DRM_IOCTL_SHAREGPU_BO_CREATE, &c);
  if (!ret) *handle = c.handle;
  return ret;
}

int BoCreate(const Dev& d, uint64_t size, uint32_t domains, uint32_t* handle,
             uint64_t* vram_off) {
  drm_sharegpu_bo_create c{};
  c.size = size;
  c.domains = domains;
  int ret = Ioctl(d.fd, DRM_IOCTL_SHAREGPU_BO_CREATE, &c);
  if (ret) return ret;
  *handle = c.handle;
  if (vram_off) *vram_off = c.vram_offset;
  return 0;
}

void GemClose(int fd, uint32_t handle) {
  drm_gem_close gc{};
  gc.handle = handle;
  Ioctl(fd, DRM_IOCTL_GEM_CLOSE, &gc);
}

void* BoMmap(int fd, uint32_t handle, size_t size) {
  drm_sharegpu_bo_mmap_offset m{};
  m.handle = handle;
  int ret = Ioctl(fd, DRM_IOCTL_SHAREGPU_BO_MMAP_OFFSET, &m);
  if (ret) {
    errno = -ret;
    return nullptr;
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, m.offset);
  return p == MAP_FAILED ? nullptr : p;
}

int CpuAccess(int fd, uint32_t handle, uint32_t flags) {
  drm_sharegpu_bo_cpu_access a{};
  a.handle = handle;
  a.flags = flags;
  return Ioctl(fd, DRM_IOCTL_SHAREGPU_BO_CPU_ACCESS, &a);
}

int BoInfo(int fd, uint32_t handle, drm_sharegpu_bo_info* info) {
  *info = drm_sharegpu_bo_info{};
  info->handle = handle;
  return Ioctl(fd, DRM_IOCTL_SHAREGPU_BO_INFO, info);
}

int BoMove(int fd, uint32_t handle, uint32_t domain, uint64_t* vram_off) {
  drm_sharegpu_bo_move m{};
  m.handle = handle;
  m.domain = domain;
  int ret = Ioctl(fd, DRM_IOCTL_SHAREGPU_BO_MOVE, &m);
  if (!ret && vram_off) *vram_off = m.vram_offset;
  return ret;
}

int BoPin(int fd, uint32_t handle, bool unpin, uint32_t* pin_count) {
  drm_sharegpu_bo_pin p{};
  p.handle = handle;
  p.flags = unpin ? SHAREGPU_PIN_F_UNPIN : 0;
  int ret = Ioctl(fd, DRM_IOCTL_SHAREGPU_BO_PIN, &p);
  if (!ret && pin_count) *pin_count = p.pin_count;
  return ret;
}

int Submit(int fd, drm_sharegpu_cmd* cmds, uint32_t n, uint32_t flags, drm_sharegpu_submit* out,
           int in_fence_fd) {
  drm_sharegpu_submit s{};
  s.cmds = reinterpret_cast<uintptr_t>(cmds);
  s.num_cmds = n;
  s.flags = flags;
  s.in_fence_fd = in_fence_fd;
  s.out_fence_fd = -1;
  int ret = Ioctl(fd, DRM_IOCTL_SHAREGPU_SUBMIT, &s);
  if (out) *out = s;
  return ret;
}

drm_sharegpu_cmd FillCmd(uint32_t h, uint64_t size, uint32_t pattern, uint64_t off) {
  drm_sharegpu_cmd c{};
  c.op = SHAREGPU_CMD_FILL;
  c.dst_handle = h;
  c.dst_offset = off;
  c.size = size;
  c.pattern = pattern;
  return c;
}

drm_sharegpu_cmd ChecksumCmd(uint32_t h, uint64_t size, uint64_t off) {
  drm_sharegpu_cmd c{};
  c.op = SHAREGPU_CMD_CHECKSUM;
  c.src_handle = h;
  c.src_offset = off;
  c.size = size;
  return c;
}

int Fill(int fd, uint32_t h, uint64_t off, uint64_t size, uint32_t pattern,
         uint32_t extra_flags) {
  drm_sharegpu_cmd c = FillCmd(h, size, pattern, off);
  return Submit(fd, &c, 1, SHAREGPU_SUBMIT_F_WAIT | extra_flags);
}

int Copy(int fd, uint32_t dst, uint64_t dst_off, uint32_t src, uint64_t src_off, uint64_t size,
         uint32_t extra_flags) {
  drm_sharegpu_cmd c{};
  c.op = SHAREGPU_CMD_COPY;
  c.dst_handle = dst;
  c.dst_offset = dst_off;
  c.src_handle = src;
  c.src_offset = src_off;
  c.size = size;
  return Submit(fd, &c, 1, SHAREGPU_SUBMIT_F_WAIT | extra_flags);
}

int64_t Checksum(int fd, uint32_t h, uint64_t off, uint64_t size, uint32_t extra_flags) {
  drm_sharegpu_cmd c = ChecksumCmd(h, size, off);
  int ret = Submit(fd, &c, 1, SHAREGPU_SUBMIT_F_WAIT | extra_flags);
  if (ret) return ret;
  return static_cast<int64_t>(static_cast<uint32_t>(c.result));
}

int WaitBo(int fd, uint32_t h, int64_t timeout_ns, uint32_t flags) {
  drm_sharegpu_wait_bo w{};
  w.handle = h;
  w.flags = flags;
  w.timeout_ns = timeout_ns;
  return Ioctl(fd, DRM_IOCTL_SHAREGPU_WAIT_BO, &w);
}

int WaitJob(int fd, uint64_t job_id, int64_t timeout_ns, uint32_t* status) {
  drm_sharegpu_wait_job w{};
  w.job_id = job_id;
  w.timeout_ns = timeout_ns;
  int ret = Ioctl(fd, DRM_IOCTL_SHAREGPU_WAIT_JOB, &w);
  if (!ret && status) *status = w.status;
  return ret;
}

int ExportFd(int drm_fd, uint32_t handle) {
  drm_prime_handle p{};
  p.handle = handle;
  p.flags = DRM_CLOEXEC | DRM_RDWR;
  p.fd = -1;
  int ret = Ioctl(drm_fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, &p);
  return ret ? ret : p.fd;
}

int ImportFd(int drm_fd, int dmabuf_fd, uint32_t* handle) {
  drm_prime_handle p{};
  p.fd = dmabuf_fd;
  int ret = Ioctl(drm_fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, &p);
  if (!ret) *handle = p.handle;
  return ret;
}

int DmaBufSync(int dmabuf_fd, uint64_t flags) {
  dma_buf_sync s{};
  s.flags = flags;
  return Ioctl(dmabuf_fd, DMA_BUF_IOCTL_SYNC, &s);
}

int ExportSyncFile(int dmabuf_fd, uint32_t flags) {
  dma_buf_export_sync_file e{};
  e.flags = flags;
  e.fd = -1;
  int ret = Ioctl(dmabuf_fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &e);
  return ret ? ret : e.fd;
}

int ImportSyncFile(int dmabuf_fd, int sync_fd, uint32_t flags) {
  dma_buf_import_sync_file i{};
  i.flags = flags;
  i.fd = sync_fd;
  return Ioctl(dmabuf_fd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, &i);
}

int WaitFenceFd(int fd, int timeout_ms) {
  pollfd p{};
  p.fd = fd;
  p.events = POLLIN;
  for (;;) {
    int n = poll(&p, 1, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return 0;
    return (p.revents & POLLIN) ? 1 : -EIO;
  }
}

bool FenceSignaled(int fd) { return WaitFenceFd(fd, 0) == 1; }

int SwSyncTimeline() {
  int fd = open("/sys/kernel/debug/sync/sw_sync", O_RDWR | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

int SwSyncFence(int timeline, uint32_t value) {
  sgpu_sw_sync_create_fence_data d{};
  d.value = value;
  snprintf(d.name, sizeof(d.name), "sgputest-%u", value);
  int ret = Ioctl(timeline, SGPU_SW_SYNC_IOC_CREATE_FENCE, &d);
  return ret ? ret : d.fence;
}

int SwSyncInc(int timeline, uint32_t n) { return Ioctl(timeline, SGPU_SW_SYNC_IOC_INC, &n); }

std::string ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  close(fd);
  return out;
}

std::map<std::string, int64_t> Counters(const Dev& d) {
  std::map<std::string, int64_t> m;
  std::string s = ReadFile(d.debugfs_dir() + "/sharegpu_counters");
  size_t pos = 0;
  while (pos < s.size()) {
    size_t eol = s.find('\n', pos);
    if (eol == std::string::npos) eol = s.size();
    std::string line = s.substr(pos, eol - pos);
    pos = eol + 1;
    char name[64];
    long long v;
    if (sscanf(line.c_str(), "%63s %lld", name, &v) == 2) m[name] = v;
  }
  return m;
}

int WriteDebugfs(const Dev& d, const std::string& name, const std::string& value) {
  ScopedFd f(open((d.debugfs_dir() + "/" + name).c_str(), O_WRONLY | O_CLOEXEC));
  if (f.get() < 0) return -errno;
  return write(f.get(), value.data(), value.size()) == static_cast<ssize_t>(value.size())
             ? 0
             : -errno;
}

int64_t Counter(const Dev& d, const std::string& name) {
  auto m = Counters(d);
  auto it = m.find(name);
  return it == m.end() ? -1 : it->second;
}

static int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000ll + ts.tv_nsec / 1000000;
}

bool WaitUntilImpl(bool (*fn)(void*), void* ctx, int timeout_ms) {
  int64_t deadline = NowMs() + timeout_ms;
  for (;;) {
    if (fn(ctx)) return true;
    if (NowMs() > deadline) return false;
    // poll interval of a failure detector; correctness never depends on it
    timespec ts{0, 2 * 1000 * 1000};
    nanosleep(&ts, nullptr);
  }
}

std::string CmdlineParam(const std::string& key) {
  std::string cmd = ReadFile("/proc/cmdline");
  std::string want = key + "=";
  size_t pos = 0;
  while (pos < cmd.size()) {
    size_t end = cmd.find_first_of(" \n", pos);
    if (end == std::string::npos) end = cmd.size();
    std::string tok = cmd.substr(pos, end - pos);
    if (tok.compare(0, want.size(), want) == 0) return tok.substr(want.size());
    pos = end + 1;
  }
  return "";
}

bool HostAgentAvailable() { return CmdlineParam("sgputest.host") == "1"; }

static int ReplyPort() {
  static int fd = -2;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (fd != -2) return fd;
  std::string path = CmdlineParam("sgputest.reply");
  if (path.empty()) path = "/dev/ttyS1";
  fd = open(path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    fd = -errno;
    return fd;
  }
  termios t;
  if (!tcgetattr(fd, &t)) {
    cfmakeraw(&t);
    cfsetispeed(&t, B115200);
    cfsetospeed(&t, B115200);
    tcsetattr(fd, TCSANOW, &t);
  }
  return fd;
}

int HostRequest(const std::string& request, std::string* reply, int timeout_ms) {
  static int seq;
  if (!HostAgentAvailable()) return -ENODEV;
  int port = ReplyPort();
  if (port < 0) return port;
  char token[32];
  snprintf(token, sizeof(token), "r%d-%d", (int)getpid(), ++seq);
  std::string line = std::string("\nSHAREGPU-HOST-REQUEST: ") + token + " " + request + "\n";
  fflush(stdout);
  fflush(stderr);
  if (write(STDOUT_FILENO, line.data(), line.size()) < 0) return -errno;

  std::string want = std::string("SHAREGPU-HOST-REPLY: ") + token + " ";
  std::string buf;
  int64_t deadline = NowMs() + timeout_ms;
  for (;;) {
    size_t eol;
    while ((eol = buf.find('\n')) != std::string::npos) {
      std::string l = buf.substr(0, eol);
      buf.erase(0, eol + 1);
      if (!l.empty() && l.back() == '\r') l.pop_back();
      size_t at = l.find(want);
      if (at == std::string::npos) continue;  // a stale reply of an earlier request
      std::string rest = l.substr(at + want.size());
      if (rest == "ok" || rest.compare(0, 3, "ok ") == 0) {
        if (reply) *reply = rest.size() > 3 ? rest.substr(3) : "";
        return 0;
      }
      if (reply) *reply = rest;
      return -EIO;
    }
    int64_t left = deadline - NowMs();
    if (left <= 0) return -ETIMEDOUT;
    pollfd p{port, POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno != EINTR) return -errno;
    if (n > 0) {
      char tmp[512];
      ssize_t r = read(port, tmp, sizeof(tmp));
      if (r > 0) buf.append(tmp, r);
    }
  }
}

int MailboxPut(const std::string& key, const std::string& value) {
  return HostRequest("put " + key + " " + value, nullptr);
}

int MailboxGet(const std::string& key, std::string* value, int secs) {
  // the host answers at the deadline at the latest; a little more for the round trip
  return HostRequest("get " + key + " " + std::to_string(secs), value, (secs + 60) * 1000);
}

void ScopedFd::reset(int f) {
  if (fd >= 0) close(fd);
  fd = f;
}

int ScopedBo::Create(int drm_fd, uint64_t sz, uint32_t domains) {
  reset();
  uint32_t h = 0;
  int ret = BoCreateFd(drm_fd, sz, domains, &h);
  if (ret) return ret;
  fd = drm_fd;
  handle = h;
  size = (sz + 4095) & ~4095ull;
  return 0;
}

uint8_t* ScopedBo::Map() {
  if (!map) map = BoMmap(fd, handle, size);
  return static_cast<uint8_t*>(map);
}

void ScopedBo::Unmap() {
  if (map) munmap(map, size);
  map = nullptr;
}

void ScopedBo::reset() {
  Unmap();
  if (handle) GemClose(fd, handle);
  handle = 0;
  fd = -1;
}

}  // namespace sgt
