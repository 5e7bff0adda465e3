// SPDX-License-Identifier: GPL-2.0
// sharegpu guest stateful ioctl fuzzer (issue 14: a hostile guest process must not crash or
// freeze the VM).
//
// N processes x M threads ("workers") hammer both sharegpu devices and vgem. Every worker
// keeps pools of valid objects (GEM handles, dma-buf fds, CPU mappings, sync_files,
// syncobjs, kept jobs, vgem fences) and mixes valid and garbage calls. A few dma-bufs are
// created by the parent before fork, so every process imports, maps, touches, moves and
// pins the same buffers; dma-buf and fence fds also travel between processes over unix
// sockets.
//
// Replay: the master seed gives every worker its own seed; a worker draws its op kind and
// eight parameter words from its own generator before looking at its pools, so the same
// seed and op count yield the same op sequence per worker whatever the timing (what the
// ops hit - pool contents, errors - still depends on timing).
//
// Oracle (last line): "SHAREGPU-FUZZ: PASS seed=..." or "SHAREGPU-FUZZ: FAIL <reason>":
// every worker exited cleanly (no process killed by a signal or exiting non-zero, no op
// stuck, no SIGSEGV touching a live mapping) and the coverage floors hold. The kernel log
// and QEMU's exit are judged by the host runner (scripts/guest-fuzz.sh).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sgpu_common.h"
#include "vgem_drm.h"

namespace {

// ioctl() retried on EINTR only: unlike sgt::Ioctl an EAGAIN (e.g. too many jobs in flight)
// is a result to count, not a reason to spin. 0 or -errno.
int Ioctl(int fd, unsigned long req, void* arg) {
  int ret;
  do ret = ioctl(fd, req, arg);
  while (ret == -1 && errno == EINTR);
  return ret == -1 ? -errno : ret;
}

// ------------------------------------------------------------------------------ output

// One write() per line so lines of concurrent processes do not interleave.
__attribute__((format(printf, 1, 2))) void Say(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof(buf) - 2) n = sizeof(buf) - 2;
  buf[n++] = '\n';
  for (int off = 0; off < n;) {
    ssize_t w = write(STDOUT_FILENO, buf + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    off += w;
  }
}

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000ll + ts.tv_nsec / 1000000;
}

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

// ------------------------------------------------------------------------------ random

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t WorkerSeed(uint64_t master, int proc, int thread) {
  uint64_t s = master ^ (0x5348415245475055ull + ((uint64_t)proc << 32) + (uint64_t)thread);
  SplitMix64(&s);
  return SplitMix64(&s);
}

// A payload word: mostly values a driver treats as plausible (0, small handles/counts),
// sometimes anything. Never a mid-sized length, so a random BO_CREATE cannot allocate GiBs.
uint64_t PayloadWord(uint64_t r) {
  switch (r & 3) {
    case 0: return 0;
    case 1: return (r >> 8) & 63;
    case 2: return ((r >> 8) & 0xffffffff00000000ull) | ((r >> 2) & 63);
    default: return r | (1ull << 40);
  }
}

// ------------------------------------------------------------------------------ ops

enum Op {
  kBoCreate, kBoCreateBad, kGemClose, kGemCloseRandom, kMmapBo, kMmapDmabuf, kMmapBad,
  kTouch, kMunmap, kSubmit, kWaitBo, kWaitJob, kBoMove, kBoPin, kBoInfo, kCpuAccess,
  kPrimeExport, kPrimeImport, kDmabufSync, kExportSyncFile, kImportSyncFile, kSyncobjCreate,
  kSyncobjDestroy, kSyncobjExport, kSyncobjImport, kSyncobjWait, kSyncobjSignalReset,
  kDumbCreate, kDumbDestroy, kRandomIoctl, kSendFd, kRecvFd, kVgemFence, kReopen, kCloseFd,
  kGetInfo, kBrokerExport, kBrokerGrant, kBrokerUnexport, kBrokerImport, kNumOps
};

struct OpDesc {
  const char* name;
  int weight;
};

// Weights favour what found the QEMU aborts: cross-device imports mapped and touched while
// other workers move the exporter's BO.
constexpr OpDesc kOps[kNumOps] = {
    {"bo_create", 8},       {"bo_create_bad", 1},   {"gem_close", 4},
    {"gem_close_random", 1}, {"mmap_bo", 6},         {"mmap_dmabuf", 4},
    {"mmap_bad", 1},        {"touch", 14},          {"munmap", 2},
    {"submit", 12},         {"wait_bo", 3},         {"wait_job", 2},
    {"bo_move", 10},        {"bo_pin", 3},          {"bo_info", 2},
    {"cpu_access", 2},      {"prime_export", 5},    {"prime_import", 8},
    {"dmabuf_sync", 3},     {"export_sync_file", 2}, {"import_sync_file", 2},
    {"syncobj_create", 2},  {"syncobj_destroy", 1}, {"syncobj_export", 1},
    {"syncobj_import", 1},  {"syncobj_wait", 1},    {"syncobj_signal_reset", 1},
    {"dumb_create", 2},     {"dumb_destroy", 1},    {"random_ioctl", 3},
    {"send_fd", 2},         {"recv_fd", 2},         {"vgem_fence", 1},
    {"reopen", 1},          {"close_fd", 2},        {"get_info", 1},
    {"broker_export", 3},   {"broker_grant", 2},    {"broker_unexport", 1},
    {"broker_import", 2},
};

constexpr int kErrnoMax = 134;  // histogram slots; larger values land in slot 0

// What a CPU mapping maps: native BO (through the DRM fd), an import of another device's
// buffer (sharegpu: its p2p import window), a dma-buf fd, a dumb buffer.
enum MapKind { kMapNative, kMapImport, kMapDmabuf, kMapDumb, kMapOther, kNumMapKinds };
constexpr const char* kMapKindName[kNumMapKinds] = {"native", "import", "dmabuf", "dumb",
                                                    "other"};

// ------------------------------------------------------------------------------ shared state

// Per-worker counters in a MAP_SHARED page: the parent reads them while the worker runs
// (stuck detection) and after the process died (oracle).
struct WorkerStats {
  std::atomic<uint64_t> ops;
  std::atomic<int> cur_op;
  std::atomic<int64_t> op_start_ms;  // 0 while between ops
  std::atomic<int> tid;
  std::atomic<int> finished;         // the worker's loop returned
  std::atomic<int> stuck_reported;   // parent already dumped its stack
  uint64_t seed;
  std::atomic<uint64_t> calls[kNumOps];
  std::atomic<uint64_t> oks[kNumOps];
  std::atomic<uint64_t> errnos[kNumOps][kErrnoMax];
  std::atomic<uint64_t> touched[kNumMapKinds];  // touches that completed without a signal
  std::atomic<uint64_t> sigbus[kNumMapKinds];
  std::atomic<uint64_t> sigsegv;
};

struct Options {
  uint64_t seed = 0;
  bool seed_given = false;
  int duration = 60;
  uint64_t max_ops = 0;  // per worker, 0 = unbounded
  int procs = 3;
  int threads = 2;
  int heartbeat = 10;
  int stuck = 90;   // an op running longer than this fails the run
  int grace = 120;  // after the duration, how long workers get to finish
  uint64_t budget_mib = 16;
  int uid = -1;
  bool trace = false;
  uint64_t min_submits = 0, min_imports = 0, min_moves = 0, min_mmaps = 0;
  uint64_t min_broker_exports = 0;  // only where g0 has a broker (scripts/guest-fuzz.sh)
};

// Node slots of a worker: render nodes of g0, g1, vgem, then card (primary) nodes.
enum { kG0R, kG1R, kVgemR, kG0C, kG1C, kVgemC, kNumNodes };
constexpr int kDevOfNode[kNumNodes] = {0, 1, 2, 0, 1, 2};
constexpr const char* kNodeName[kNumNodes] = {"g0", "g1", "vgem", "g0-card", "g1-card",
                                              "vgem-card"};

struct Global {
  Options opt;
  std::string node_path[kNumNodes];
  std::string pci[2];
  std::vector<int> shared_bufs;  // dma-buf fds created before fork, inherited by children
  std::vector<uint64_t> shared_size;
  WorkerStats* stats = nullptr;  // procs * threads
  int64_t end_ms = 0;
};
Global g;

// ------------------------------------------------------------------------------ devices

// The node of the same device named PREFIX* (card/renderD), from sysfs; empty if none.
std::string SiblingNode(int fd, const char* prefix) {
  struct stat st;
  if (fd < 0 || fstat(fd, &st)) return "";
  char dir[96];
  snprintf(dir, sizeof(dir), "/sys/dev/char/%u:%u/device/drm", major(st.st_rdev),
           minor(st.st_rdev));
  std::string found;
  if (DIR* d = opendir(dir)) {
    while (dirent* e = readdir(d))
      if (!strncmp(e->d_name, prefix, strlen(prefix))) found = "/dev/dri/" + std::string(e->d_name);
    closedir(d);
  }
  return found;
}

// Render and card nodes of g0 (the coherent sharegpu), g1 (the other one) and vgem, found
// by driver name, not by minor number.
std::string FindNodes() {
  const sgt::Dev* sgpu[2] = {sgt::FindDev(true), sgt::FindDev(false)};
  int vgem = sgt::OpenVgem();
  int fds[3] = {sgpu[0] ? sgpu[0]->fd : -1, sgpu[1] ? sgpu[1]->fd : -1, vgem};
  for (int dev = 0; dev < 3; dev++) {
    g.node_path[dev] = SiblingNode(fds[dev], "renderD");
    g.node_path[dev + 3] = SiblingNode(fds[dev], "card");
  }
  for (int dev = 0; dev < 2; dev++) g.pci[dev] = sgpu[dev] ? sgpu[dev]->pci : "";
  if (vgem >= 0) close(vgem);
  for (int i = 0; i < kNumNodes; i++)
    if (g.node_path[i].empty())
      return std::string("no node for ") + kNodeName[i] +
             " (want a coherent and a non-coherent sharegpu, and vgem)";
  return "";
}

// ------------------------------------------------------------------------------ SIGBUS

thread_local sigjmp_buf* t_fault_jmp;

void FaultHandler(int sig) {
  if (t_fault_jmp) siglongjmp(*t_fault_jmp, sig);
  // not inside a touch: a real crash, let it kill the process with this signal
  signal(sig, SIG_DFL);
}

void InstallFaultHandler() {
  struct sigaction sa {};
  sa.sa_handler = FaultHandler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  sigaction(SIGSEGV, &sa, nullptr);
}

// Reads (and writes, when writable) a few pages of a mapping, always its first and last
// byte.
__attribute__((noinline)) void TouchPages(volatile uint8_t* p, size_t len, bool writable,
                                          uint64_t r1, uint64_t r2) {
  size_t pages = len / 4096;
  int n = 1 + r1 % 8;
  uint8_t first = p[0];
  if (writable) p[0] = first + 1;
  for (int i = 0; i < n; i++) {
    r2 = r2 * 6364136223846793005ull + 1442695040888963407ull;
    size_t off = ((r2 >> 33) % pages) * 4096 + ((r2 >> 13) & 4092);
    volatile uint32_t* w = reinterpret_cast<volatile uint32_t*>(p + off);
    uint32_t v = *w;
    if (writable) *w = v ^ (uint32_t)r1;
  }
  uint8_t last = p[len - 1];
  if (writable) p[len - 1] = last ^ 0x5a;
}

// Returns the signal that interrupted the touch (SIGBUS on an invalidated or foreign
// mapping), or 0.
int TouchMapping(volatile uint8_t* p, size_t len, bool writable, uint64_t r1, uint64_t r2) {
  sigjmp_buf jb;
  int sig = sigsetjmp(jb, 1);
  if (sig == 0) {
    t_fault_jmp = &jb;
    TouchPages(p, len, writable, r1, r2);
  }
  t_fault_jmp = nullptr;
  return sig;
}

// ------------------------------------------------------------------------------ worker

constexpr int kNothing = 1;  // op found nothing to act on (counted, not an error)

struct Bo {
  int node;
  uint32_t handle;
  uint64_t size;
  bool dumb;
  bool imported;
};
struct Map {
  uint8_t* p;
  size_t len;
  bool writable;
  MapKind kind;
};
struct Buf {  // an fd with a size: dma-buf (size = buffer), sync_file / syncobj fd (size 0)
  int fd;
  uint64_t size;
};
struct Syncobj {
  int node;
  uint32_t handle;
};
struct Job {
  int node;
  uint64_t id;
};
struct VgemFence {
  int node;
  uint32_t id;
};
struct BrokerId {  // a broker id this VM exported (BROKER_EXPORT)
  uint8_t b[SHAREGPU_BROKER_ID_LEN];
};

constexpr size_t kMaxBos = 24, kMaxBufs = 12, kMaxMaps = 12, kMaxSyncFiles = 12,
                 kMaxSyncobjs = 12, kMaxJobs = 32, kMaxSyncobjFds = 4, kMaxVgemFences = 2,
                 kMaxBrokerIds = 8;

// fd-passing message between processes: one fd and what it is
struct FdMsg {
  uint32_t kind;  // 0 dma-buf, 1 sync_file, 2 syncobj fd
  uint64_t size;
};
struct FdPacket {
  FdMsg msg{};
  char ctrl[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{&msg, sizeof(msg)};
  msghdr mh{};
  FdPacket() {
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof(ctrl);
  }
  FdPacket(const FdPacket&) = delete;
  FdPacket& operator=(const FdPacket&) = delete;
};

class Worker {
 public:
  Worker(int proc, int thread, WorkerStats* st, int send_sock, int recv_sock)
      : proc_(proc), thread_(thread), st_(st), send_sock_(send_sock), recv_sock_(recv_sock) {
    rng_ = st->seed;
  }

  void Run() {
    st_->tid = (int)syscall(SYS_gettid);
    for (int i = 0; i < kNumNodes; i++) {
      OpenNode(i);
      if (fds_[i] < 0)  // every op on it then fails with EBADF; the floors tell
        Say("SHAREGPU-FUZZ: p%d.t%d cannot open %s: %s", proc_, thread_,
            g.node_path[i].c_str(), strerror(errno));
    }
    int total = 0;
    for (const OpDesc& d : kOps) total += d.weight;
    while (NowMs() < g.end_ms && (!g.opt.max_ops || st_->ops < g.opt.max_ops)) {
      uint64_t pick = SplitMix64(&rng_) % total;
      int op = 0;
      while (pick >= (uint64_t)kOps[op].weight) pick -= kOps[op++].weight;
      for (uint64_t& w : r_) w = SplitMix64(&rng_);
      if (g.opt.trace)
        Say("SHAREGPU-FUZZ-TRACE: p%d.t%d %llu %s", proc_, thread_,
            (unsigned long long)st_->ops.load(), kOps[op].name);
      st_->cur_op = op;
      st_->op_start_ms = NowMs();
      int ret = Dispatch(op);
      st_->op_start_ms = 0;
      st_->calls[op]++;
      if (ret == 0)
        st_->oks[op]++;
      else if (ret < 0)
        st_->errnos[op][-ret < kErrnoMax ? -ret : 0]++;
      st_->ops++;
    }
    ReleaseAll();
    st_->finished = 1;
  }

 private:
  // ---- helpers
  uint64_t R(int i) const { return r_[i]; }
  bool Chance(int i, int one_in) const { return (r_[i] >> 7) % one_in == 0; }
  template <class T>
  static T* Pick(std::vector<T>& v, uint64_t r) {
    return v.empty() ? nullptr : &v[r % v.size()];
  }
  template <class T>
  static void Erase(std::vector<T>& v, T* e) {
    *e = v.back();
    v.pop_back();
  }
  bool IsSgpu(int node) const { return kDevOfNode[node] != 2; }
  int SgpuNode(uint64_t r) const {
    static const int nodes[] = {kG0R, kG1R, kG0R, kG1R, kG0C, kG1C};
    return nodes[r % 6];
  }

  void OpenNode(int i) {
    fds_[i] = open(g.node_path[i].c_str(), O_RDWR | O_CLOEXEC);
  }

  uint64_t Charged() const {
    uint64_t c = 0;
    for (const Bo& b : bos_) c += b.size;
    for (const Buf& b : bufs_) c += b.size;
    for (const Map& m : maps_) c += m.len;
    return c;
  }
  bool OverBudget(uint64_t extra) const {
    return Charged() + extra > (g.opt.budget_mib << 20);
  }

  int Release(Bo& b) {
    drm_gem_close c{};
    c.handle = b.handle;
    return Ioctl(fds_[b.node], DRM_IOCTL_GEM_CLOSE, &c);
  }
  static int Release(Map& m) { return munmap(m.p, m.len) ? -errno : 0; }
  static int Release(Buf& b) { return close(b.fd) ? -errno : 0; }
  int Release(Syncobj& s) {
    drm_syncobj_destroy d{};
    d.handle = s.handle;
    return Ioctl(fds_[s.node], DRM_IOCTL_SYNCOBJ_DESTROY, &d);
  }
  static int Release(Job&) { return 0; }
  static int Release(BrokerId&) { return 0; }  // the id lives as long as its BO's export
  int Release(VgemFence& f) {
    drm_vgem_fence_signal s{};
    s.fence = f.id;
    return Ioctl(fds_[f.node], DRM_IOCTL_VGEM_FENCE_SIGNAL, &s);
  }

  // Releases a pool entry and forgets it; the release's result.
  template <class T>
  int Drop(std::vector<T>& v, uint64_t r) {
    if (v.empty()) return kNothing;
    T* e = &v[r % v.size()];
    int ret = Release(*e);
    Erase(v, e);
    return ret;
  }
  template <class T>
  void Add(std::vector<T>& v, const T& e, size_t cap, uint64_t r) {
    if (v.size() >= cap) Drop(v, r);
    v.push_back(e);
  }
  // Frees memory when the budget is exhausted: one mapping, dma-buf or BO.
  int MakeRoom(uint64_t r) {
    switch (r % 3) {
      case 0: Drop(maps_, r >> 8); break;
      case 1: Drop(bufs_, r >> 8); break;
      default: Drop(bos_, r >> 8); break;
    }
    return kNothing;
  }

  template <class T>
  void DropNode(std::vector<T>& v, int node) {
    for (size_t i = 0; i < v.size();)
      if (v[i].node == node) {
        v[i] = v.back();
        v.pop_back();
      } else {
        i++;
      }
  }

  void ReleaseAll() {
    for (Map& m : maps_) Release(m);
    for (Buf& b : bufs_) Release(b);
    for (Buf& b : sync_files_) Release(b);
    for (Buf& b : syncobj_fds_) Release(b);
    for (VgemFence& f : vgem_fences_) Release(f);
    maps_.clear();
    bufs_.clear();
    sync_files_.clear();
    syncobj_fds_.clear();
    vgem_fences_.clear();
    // BOs, syncobjs and kept jobs go with the DRM fds: file close with work in flight
    for (int i = 0; i < kNumNodes; i++)
      if (fds_[i] >= 0) close(fds_[i]);
  }

  Bo* PickBo(uint64_t r, bool sgpu_only) {
    if (bos_.empty()) return nullptr;
    Bo* b = &bos_[r % bos_.size()];
    if (sgpu_only && !IsSgpu(b->node)) {
      for (Bo& c : bos_)
        if (IsSgpu(c.node)) return &c;
      return nullptr;
    }
    return b;
  }
  // A BO of the node's file, else a garbage handle for that file.
  uint32_t HandleOn(int node, uint64_t r) {
    size_t n = 0;
    for (const Bo& b : bos_) n += b.node == node;
    if (!n || (r & 15) == 0) return (r >> 4) & 63;
    size_t k = (r >> 4) % n;
    for (const Bo& b : bos_)
      if (b.node == node && k-- == 0) return b.handle;
    return 0;
  }
  uint64_t SizeOfHandle(int node, uint32_t h) const {
    for (const Bo& b : bos_)
      if (b.node == node && b.handle == h) return b.size;
    return 4096;
  }
  // A dma-buf fd: own or one created before fork (never closed by workers).
  const Buf* PickDmabuf(uint64_t r, Buf* tmp) {
    size_t n = bufs_.size() + g.shared_bufs.size();
    if (!n) return nullptr;
    size_t i = r % n;
    if (i < bufs_.size()) return &bufs_[i];
    i -= bufs_.size();
    *tmp = Buf{g.shared_bufs[i], g.shared_size[i]};
    return tmp;
  }
  // Mostly small; sometimes large enough that VRAM fills up and TTM evicts.
  uint64_t NewBoSize(uint64_t r) const {
    switch (r % 16) {
      case 0: return 4 << 20;
      case 1: return 1 << 20;
      case 2: case 3: return 4096 * (1 + (r >> 4) % 64);
      default: return 4096 * (1 + (r >> 4) % 16);
    }
  }
  int AddMapping(void* p, size_t len, MapKind kind, bool writable = true) {
    if (p == MAP_FAILED) return -errno;
    Add(maps_, Map{static_cast<uint8_t*>(p), len, writable, kind}, kMaxMaps, R(6));
    return 0;
  }
  // Node of a random sharegpu BO of the pools (so that handles resolve), sometimes any.
  int NodeForBoOp(uint64_t r) {
    Bo* b = PickBo(r >> 3, true);
    return b && (r & 7) ? b->node : SgpuNode(r >> 3);
  }

  // ---- ops
  int Dispatch(int op) {
    switch (op) {
      case kBoCreate: return BoCreate();
      case kBoCreateBad: return BoCreateBad();
      case kGemClose: return GemClose();
      case kGemCloseRandom: return GemCloseRandom();
      case kMmapBo: return MmapBo();
      case kMmapDmabuf: return MmapDmabuf();
      case kMmapBad: return MmapBad();
      case kTouch: return Touch();
      case kMunmap: return Drop(maps_, R(0));
      case kSubmit: return Submit();
      case kWaitBo: return WaitBo();
      case kWaitJob: return WaitJob();
      case kBoMove: return BoMove();
      case kBoPin: return BoPin();
      case kBoInfo: return BoInfo();
      case kCpuAccess: return CpuAccess();
      case kPrimeExport: return PrimeExport();
      case kPrimeImport: return PrimeImport();
      case kDmabufSync: return DmabufSync();
      case kExportSyncFile: return ExportSyncFile();
      case kImportSyncFile: return ImportSyncFile();
      case kSyncobjCreate: return SyncobjCreate();
      case kSyncobjDestroy: return SyncobjDestroy();
      case kSyncobjExport: return SyncobjExport();
      case kSyncobjImport: return SyncobjImport();
      case kSyncobjWait: return SyncobjWait();
      case kSyncobjSignalReset: return SyncobjSignalReset();
      case kDumbCreate: return DumbCreate();
      case kDumbDestroy: return DumbDestroy();
      case kRandomIoctl: return RandomIoctl();
      case kSendFd: return SendFd();
      case kRecvFd: return RecvFd();
      case kVgemFence: return VgemFenceOp();
      case kReopen: return Reopen();
      case kCloseFd: return CloseFd();
      case kGetInfo: return GetInfo();
      case kBrokerExport: return BrokerExport();
      case kBrokerGrant: return BrokerGrant();
      case kBrokerUnexport: return BrokerUnexport();
      case kBrokerImport: return BrokerImport();
    }
    return kNothing;
  }

  int BoCreate() {
    int node = SgpuNode(R(0));
    uint64_t size = NewBoSize(R(1));
    if (OverBudget(size)) return MakeRoom(R(2));
    static const uint32_t domains[] = {SHAREGPU_DOMAIN_VRAM, SHAREGPU_DOMAIN_SYSTEM,
                                       SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM};
    drm_sharegpu_bo_create c{};
    c.size = size;
    c.domains = domains[R(3) % 3];
    int ret = Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_BO_CREATE, &c);
    if (!ret) Add(bos_, Bo{node, c.handle, size, false, false}, kMaxBos, R(4));
    return ret;
  }

  // Invalid arguments only: a "bad" size that is valid would allocate it.
  int BoCreateBad() {
    drm_sharegpu_bo_create c{};
    switch (R(0) % 5) {
      case 0: c.size = 0; c.domains = SHAREGPU_DOMAIN_SYSTEM; break;
      case 1: c.size = (5ull << 30) + (R(1) >> 20); c.domains = 3; break;  // > 4 GiB
      case 2: c.size = 1ull << 30; c.domains = SHAREGPU_DOMAIN_VRAM; break;  // > VRAM
      case 3: c.size = 4096; c.domains = (uint32_t)R(1) | 4; break;
      default: c.size = 4096; c.domains = 1; c.flags = 1 + (uint32_t)R(1) % 7; c.pad = R(2) & 1; break;
    }
    Bo accepted{SgpuNode(R(3)), 0, 0, false, false};
    int ret = Ioctl(fds_[accepted.node], DRM_IOCTL_SHAREGPU_BO_CREATE, &c);
    accepted.handle = c.handle;
    if (!ret) Release(accepted);  // a driver that accepted it: do not leak the BO
    return ret;
  }

  int GemClose() { return Drop(bos_, R(0)); }

  // Closes a handle number the pools may still hold (stale entries then hit ENOENT or
  // another object).
  int GemCloseRandom() {
    drm_gem_close c{};
    c.handle = R(0) % 48;
    c.pad = Chance(1, 16);
    return Ioctl(fds_[R(2) % kNumNodes], DRM_IOCTL_GEM_CLOSE, &c);
  }

  int MmapBo() {
    Bo* b = PickBo(R(0), false);
    if (!b) return kNothing;
    if (OverBudget(b->size)) return MakeRoom(R(1));
    uint64_t offset;
    int fd = fds_[b->node];
    if (IsSgpu(b->node) && !b->dumb) {
      drm_sharegpu_bo_mmap_offset m{};
      m.handle = b->handle;
      int ret = Ioctl(fd, DRM_IOCTL_SHAREGPU_BO_MMAP_OFFSET, &m);
      if (ret) return ret;
      offset = m.offset;
    } else {
      drm_mode_map_dumb m{};
      m.handle = b->handle;
      int ret = Ioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &m);
      if (ret) return ret;
      offset = m.offset;
    }
    // sometimes only a part of the object (from its start: the fake offset is exact)
    size_t len = Chance(2, 4) ? 4096 * (1 + R(3) % (b->size / 4096)) : b->size;
    MapKind kind = b->dumb ? kMapDumb : b->imported ? kMapImport : kMapNative;
    return AddMapping(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset), len,
                      kind);
  }

  int MmapDmabuf() {
    Buf tmp;
    const Buf* d = PickDmabuf(R(0), &tmp);
    if (!d) return kNothing;
    if (OverBudget(d->size)) return MakeRoom(R(1));
    bool writable = !Chance(2, 8);
    int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    return AddMapping(mmap(nullptr, d->size, prot, MAP_SHARED, d->fd, 0), d->size, kMapDmabuf,
                      writable);
  }

  // mmap with garbage offsets/lengths on DRM and dma-buf fds
  int MmapBad() {
    int fd;
    Buf tmp;
    const Buf* d = Chance(0, 2) ? PickDmabuf(R(1), &tmp) : nullptr;
    fd = d ? d->fd : fds_[R(2) % kNumNodes];
    size_t len = 4096 * (1 + R(3) % 512);
    off_t off = (off_t)((R(4) % 4 == 0) ? (R(4) >> 8) & ~4095ull : 4096 * (R(4) % 4096));
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off & 0x7fffffffffff);
    if (p == MAP_FAILED) return -errno;
    // accepted: keep it only if it fits the budget (it may be a valid mapping by chance)
    if (OverBudget(len)) {
      munmap(p, len);
      return 0;
    }
    return AddMapping(p, len, kMapOther);
  }

  int Touch() {
    Map* m = Pick(maps_, R(0));
    if (!m) return kNothing;
    int sig = TouchMapping(m->p, m->len, m->writable, R(1), R(2));
    if (sig == SIGBUS) {  // expected: e.g. an import whose exporter cannot be mapped now
      st_->sigbus[m->kind]++;
      return -EFAULT;
    }
    if (sig) {  // a fault inside a live mapping of the right protection: the oracle fails
      st_->sigsegv++;
      return -EFAULT;
    }
    st_->touched[m->kind]++;
    return 0;
  }

  int Submit() {
    int node = NodeForBoOp(R(0));
    drm_sharegpu_cmd cmds[SHAREGPU_MAX_CMDS + 1] = {};
    uint32_t n = 1 + R(1) % 4;
    if (Chance(1, 16)) n = (R(1) >> 20) % (SHAREGPU_MAX_CMDS + 2);  // 0, many, too many
    uint64_t rr = R(2);
    for (uint32_t i = 0; i < n && i <= SHAREGPU_MAX_CMDS; i++) {
      drm_sharegpu_cmd& c = cmds[i];
      rr = SplitMix64(&rr);
      c.op = (rr & 31) == 0 ? (uint32_t)(rr >> 5) % 8 : 1 + (rr >> 5) % 3;
      c.dst_handle = HandleOn(node, rr >> 8);
      c.src_handle = HandleOn(node, rr >> 16);
      uint64_t dsz = SizeOfHandle(node, c.dst_handle), ssz = SizeOfHandle(node, c.src_handle);
      uint64_t lim = std::min<uint64_t>(std::min(dsz, ssz), 64 << 10);
      uint64_t rs = SplitMix64(&rr);
      c.size = 4 * (1 + rs % (lim / 4));
      c.dst_offset = ((rs >> 20) % (dsz - c.size + 1)) & ~3ull;
      c.src_offset = ((rs >> 40) % (ssz - c.size + 1)) & ~3ull;
      c.pattern = (uint32_t)rr;
      if ((rs & 63) == 0) c.size = rs >> 3;  // garbage range
      if ((rs & 63) == 1) c.dst_offset = ~0ull - (rs & 0xfff);
      if ((rs & 63) == 2) c.size |= 1;       // FILL wants multiples of 4
      if ((rs & 63) == 3) c.result = rs;     // out-only field with garbage
    }
    drm_sharegpu_submit s{};
    s.cmds = reinterpret_cast<uintptr_t>(cmds);
    s.num_cmds = n;
    s.flags = (uint32_t)R(3) & SHAREGPU_SUBMIT_F_MASK & ~SHAREGPU_SUBMIT_F_IN_FENCE;
    if (Chance(4, 32)) s.flags |= 1u << (6 + (R(4) >> 16) % 26);
    s.in_fence_fd = -1;
    s.out_fence_fd = (int)(R(4) >> 32);
    // an in-fence mostly when there is a sync_file to wait for, sometimes a bad fd
    Buf* sf = Pick(sync_files_, R(5));
    if ((sf && Chance(3, 2)) || Chance(5, 16)) {
      s.flags |= SHAREGPU_SUBMIT_F_IN_FENCE;
      s.in_fence_fd = sf && !Chance(5, 8) ? sf->fd : (int)(R(5) % 64) - 1;
    }
    if (Chance(6, 4)) {
      Syncobj* so = Pick(syncobjs_, R(6) >> 8);
      s.in_syncobj = so && so->node == node ? so->handle : (uint32_t)(R(6) >> 40) % 8;
    }
    if (Chance(7, 4)) {
      Syncobj* so = Pick(syncobjs_, R(7) >> 8);
      s.out_syncobj = so && so->node == node ? so->handle : (uint32_t)(R(7) >> 40) % 8;
    }
    // in_syncs / out_syncs: syncobjs of this node (timeline points or binary), sync_files,
    // and garbage (unknown handles, bad flags, a point on a sync_file, bad pointers, too many)
    drm_sharegpu_sync ins[4] = {}, outs[3] = {};
    uint64_t rsync = R(6) ^ (R(7) << 1);
    uint64_t ri = SplitMix64(&rsync), ro = SplitMix64(&rsync), rbad = SplitMix64(&rsync);
    if ((ri >> 58) % 4 == 0) {
      s.num_in_syncs = 1 + ri % 4;
      for (uint32_t i = 0; i < s.num_in_syncs; i++, ri = SplitMix64(&ri)) {
        Syncobj* so = Pick(syncobjs_, ri >> 8);
        Buf* f = Pick(sync_files_, ri >> 16);
        if (f && (ri & 3) == 0) {
          ins[i] = {static_cast<uint32_t>(f->fd), SHAREGPU_SYNC_F_SYNC_FILE, 0};
        } else {
          ins[i].handle = so && so->node == node ? so->handle : (uint32_t)(ri >> 40) % 8;
          ins[i].point = (ri & 4) ? (ri >> 24) % 8 : 0;
        }
        if ((ri & 63) == 5) ins[i].flags = (uint32_t)(ri >> 32);
        if ((ri & 63) == 6) ins[i].point = ri;
      }
      s.in_syncs = reinterpret_cast<uintptr_t>(ins);
      if (rbad % 32 == 0) s.in_syncs = rbad | (1ull << 47);
      if (rbad % 64 == 1) s.num_in_syncs = (uint32_t)(rbad >> 32);
    }
    if ((ro >> 58) % 4 == 0) {
      s.num_out_syncs = 1 + ro % 3;
      for (uint32_t i = 0; i < s.num_out_syncs; i++, ro = SplitMix64(&ro)) {
        Syncobj* so = Pick(syncobjs_, ro >> 8);
        outs[i].handle = so && so->node == node ? so->handle : (uint32_t)(ro >> 40) % 8;
        outs[i].point = (ro & 4) ? 1 + (ro >> 24) % 64 : 0;
        if ((ro & 63) == 7) outs[i].flags = SHAREGPU_SYNC_F_SYNC_FILE;  // in only
      }
      s.out_syncs = reinterpret_cast<uintptr_t>(outs);
      if (rbad % 64 == 2) s.num_out_syncs = SHAREGPU_MAX_SYNCS + 1;
    }
    // rarely: the kernel reads the command array out of a BO mapping (it may fault)
    if (Chance(5, 64) && !maps_.empty()) {
      Map* m = Pick(maps_, R(5) >> 16);
      if (m->len >= n * sizeof(drm_sharegpu_cmd)) s.cmds = reinterpret_cast<uintptr_t>(m->p);
    }
    int ret = Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_SUBMIT, &s);
    if (ret) return ret;
    if ((s.flags & SHAREGPU_SUBMIT_F_OUT_FENCE) && s.out_fence_fd >= 0)
      Add(sync_files_, Buf{s.out_fence_fd, 0}, kMaxSyncFiles, R(4));
    if (s.flags & SHAREGPU_SUBMIT_F_KEEP) Add(jobs_, Job{node, s.job_id}, kMaxJobs, R(4));
    else if (Chance(3, 4)) Add(jobs_, Job{node, s.job_id}, kMaxJobs, R(4));
    return 0;
  }

  int WaitBo() {
    int node = NodeForBoOp(R(0));
    drm_sharegpu_wait_bo w{};
    w.handle = HandleOn(node, R(1));
    w.flags = Chance(2, 16) ? (uint32_t)R(2) : (uint32_t)(R(2) & 1);
    w.timeout_ns = Chance(3, 16) ? -(int64_t)(R(3) % 1000) : (int64_t)(R(3) % 20000000);
    return Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_WAIT_BO, &w);
  }

  int WaitJob() {
    uint64_t results[SHAREGPU_MAX_CMDS];
    Job* j = Pick(jobs_, R(0));
    drm_sharegpu_wait_job w{};
    int node = j ? j->node : SgpuNode(R(1));
    w.job_id = j && !Chance(1, 8) ? j->id : R(1) % 4096;
    w.timeout_ns = Chance(2, 16) ? -1 : (int64_t)(R(2) % 50000000);
    w.num_results = R(3) % (SHAREGPU_MAX_CMDS + 2);
    w.results = reinterpret_cast<uintptr_t>(results);
    if (Chance(4, 16)) w.results = R(4) | (1ull << 47);          // bad pointer
    else if (Chance(4, 32) && !maps_.empty())                     // results land in a mapping
      w.results = reinterpret_cast<uintptr_t>(Pick(maps_, R(4) >> 8)->p);
    if (w.num_results > SHAREGPU_MAX_CMDS && w.results == reinterpret_cast<uintptr_t>(results))
      w.num_results = SHAREGPU_MAX_CMDS;
    int ret = Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_WAIT_JOB, &w);
    if (!ret && j) Erase(jobs_, j);
    return ret;
  }

  int BoMove() {
    Bo* b = PickBo(R(0), true);
    if (!b) return kNothing;
    drm_sharegpu_bo_move m{};
    m.handle = b->handle;
    m.domain = R(1) & 1 ? SHAREGPU_DOMAIN_VRAM : SHAREGPU_DOMAIN_SYSTEM;
    if (Chance(2, 16)) m.domain = (uint32_t)R(2) % 8;
    return Ioctl(fds_[b->node], DRM_IOCTL_SHAREGPU_BO_MOVE, &m);
  }

  // Unpins twice as often as it pins: pins of shared BOs (they live all run) must not pile
  // up to the point where nobody can move them any more.
  int BoPin() {
    Bo* b = PickBo(R(0), true);
    if (!b) return kNothing;
    drm_sharegpu_bo_pin p{};
    p.handle = b->handle;
    p.flags = R(1) % 3 ? SHAREGPU_PIN_F_UNPIN : 0;
    if (Chance(2, 16)) p.flags = (uint32_t)R(2);
    if (Chance(3, 32)) p.pad = 1;
    return Ioctl(fds_[b->node], DRM_IOCTL_SHAREGPU_BO_PIN, &p);
  }

  int BoInfo() {
    int node = NodeForBoOp(R(0));
    drm_sharegpu_bo_info i{};
    i.handle = HandleOn(node, R(1));
    return Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_BO_INFO, &i);
  }

  // begin and end independently: windows left open, ends without begins
  int CpuAccess() {
    int node = NodeForBoOp(R(0));
    drm_sharegpu_bo_cpu_access a{};
    a.handle = HandleOn(node, R(1));
    a.flags = Chance(2, 16) ? (uint32_t)R(2) : (uint32_t)(R(2) % 8);
    return Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_BO_CPU_ACCESS, &a);
  }

  int PrimeExport() {
    Bo* b = Pick(bos_, R(0));
    if (!b) return kNothing;
    if (OverBudget(b->size)) return MakeRoom(R(1));
    drm_prime_handle p{};
    p.handle = b->handle;
    p.flags = DRM_CLOEXEC | (Chance(2, 8) ? 0 : DRM_RDWR);
    if (Chance(3, 16)) p.flags |= (uint32_t)R(3) << 3;
    p.fd = -1;
    int ret = Ioctl(fds_[b->node], DRM_IOCTL_PRIME_HANDLE_TO_FD, &p);
    if (!ret) Add(bufs_, Buf{p.fd, b->size}, kMaxBufs, R(4));
    return ret;
  }

  // ---- sharing between VMs (the broker: g0 is connected to one in scripts/guest-fuzz.sh,
  // g1 is not, so its BROKER_* calls fail with EOPNOTSUPP). An export moves the BO to
  // storage of its own while other workers map, move, submit and close it.

  // A peer name: mostly well formed (granted VMs that never connect), sometimes not.
  void BrokerPeer(char* peer, uint64_t r) {
    static const char* names[] = {"vm-b", "vm-c", "fuzz", "x", "vm.b_2-", "", "bad name",
                                  "vm/b", "0123456789012345678901234567890"};
    memset(peer, 0, SHAREGPU_BROKER_NAME_LEN);
    if ((r & 15) == 0) {  // raw bytes, maybe without a NUL
      for (int i = 0; i < SHAREGPU_BROKER_NAME_LEN; i++) peer[i] = (char)(r >> (i % 8 * 8));
      return;
    }
    snprintf(peer, SHAREGPU_BROKER_NAME_LEN, "%s", names[(r >> 4) % 9]);
  }
  uint32_t BrokerRight(uint64_t r) { return (r & 7) == 0 ? (uint32_t)(r >> 3) : (r >> 3) % 3; }

  int BrokerExport() {
    int node = NodeForBoOp(R(0));
    drm_sharegpu_broker_export e{};
    e.handle = HandleOn(node, R(1));
    e.right = BrokerRight(R(2));
    if (e.right) BrokerPeer(e.peer, R(3));
    if (Chance(4, 32)) e.flags = (uint32_t)R(4);
    int ret = Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_BROKER_EXPORT, &e);
    if (!ret) {
      BrokerId id;
      memcpy(id.b, e.id, sizeof(id.b));
      Add(broker_ids_, id, kMaxBrokerIds, R(5));
    }
    return ret;
  }

  int BrokerGrant() {
    int node = NodeForBoOp(R(0));
    drm_sharegpu_broker_grant g{};
    g.handle = HandleOn(node, R(1));
    g.right = BrokerRight(R(2));
    BrokerPeer(g.peer, R(3));
    return Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_BROKER_GRANT, &g);
  }

  int BrokerUnexport() {
    int node = NodeForBoOp(R(0));
    drm_sharegpu_broker_unexport u{};
    u.handle = HandleOn(node, R(1));
    if (Chance(2, 32)) u.flags = (uint32_t)R(2);
    return Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_BROKER_UNEXPORT, &u);
  }

  // This VM's own ids (refused: a VM imports only other VMs' buffers), flipped and forged ones.
  int BrokerImport() {
    int node = SgpuNode(R(0));
    drm_sharegpu_broker_import i{};
    BrokerId* id = Pick(broker_ids_, R(1));
    if (id && !Chance(2, 4)) memcpy(i.id, id->b, sizeof(i.id));
    else for (size_t k = 0; k < sizeof(i.id); k++) i.id[k] = (uint8_t)(R(3) >> (k % 8 * 8));
    if (id && Chance(4, 8)) i.id[R(4) % sizeof(i.id)] ^= 1;
    if (Chance(5, 32)) i.flags = (uint32_t)R(5);
    int ret = Ioctl(fds_[node], DRM_IOCTL_SHAREGPU_BROKER_IMPORT, &i);
    if (!ret) Add(bos_, Bo{node, i.handle, i.size, false, true}, kMaxBos, R(6));
    return ret;
  }

  int PrimeImport() {
    Buf tmp;
    const Buf* d = PickDmabuf(R(0), &tmp);
    if (!d) return kNothing;
    if (OverBudget(d->size)) return MakeRoom(R(1));
    // half the time a sharegpu render node: p2p imports are what map import windows
    int node = R(2) & 1 ? (int)(R(2) >> 1) % kNumNodes : (R(2) & 2 ? kG0R : kG1R);
    drm_prime_handle p{};
    p.fd = d->fd;
    if (Chance(3, 16)) {  // not a dma-buf: a sync_file, a DRM fd, nothing
      Buf* sf = Pick(sync_files_, R(3) >> 8);
      p.fd = sf ? sf->fd : Chance(4, 2) ? fds_[R(4) % kNumNodes] : (int)(R(4) % 1024);
    }
    int ret = Ioctl(fds_[node], DRM_IOCTL_PRIME_FD_TO_HANDLE, &p);
    if (!ret) Add(bos_, Bo{node, p.handle, d->size, false, true}, kMaxBos, R(5));
    return ret;
  }

  int DmabufSync() {
    Buf tmp;
    const Buf* d = PickDmabuf(R(0), &tmp);
    if (!d) return kNothing;
    static const uint64_t rw[] = {DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_RW};
    dma_buf_sync s{};
    s.flags = rw[R(1) % 3] | (R(2) & 1 ? DMA_BUF_SYNC_END : DMA_BUF_SYNC_START);
    if (Chance(3, 16)) s.flags = R(3);
    return Ioctl(d->fd, DMA_BUF_IOCTL_SYNC, &s);
  }

  int ExportSyncFile() {
    Buf tmp;
    const Buf* d = PickDmabuf(R(0), &tmp);
    if (!d) return kNothing;
    dma_buf_export_sync_file e{};
    e.flags = 1 + R(1) % 3;
    if (Chance(2, 16)) e.flags = (uint32_t)R(2);
    e.fd = -1;
    int ret = Ioctl(d->fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &e);
    if (!ret) Add(sync_files_, Buf{e.fd, 0}, kMaxSyncFiles, R(3));
    return ret;
  }

  int ImportSyncFile() {
    Buf tmp;
    const Buf* d = PickDmabuf(R(0), &tmp);
    Buf* sf = Pick(sync_files_, R(1));
    if (!d) return kNothing;
    dma_buf_import_sync_file i{};
    i.flags = 1 + R(2) % 3;
    if (Chance(3, 16)) i.flags = (uint32_t)R(3);
    i.fd = sf && !Chance(4, 16) ? sf->fd : (int)(R(4) % 64) - 1;
    return Ioctl(d->fd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, &i);
  }

  int SyncobjCreate() {
    int node = R(0) % kNumNodes;  // vgem has no syncobjs: EOPNOTSUPP
    drm_syncobj_create c{};
    c.flags = Chance(1, 16) ? (uint32_t)R(1) : (uint32_t)(R(1) & DRM_SYNCOBJ_CREATE_SIGNALED);
    int ret = Ioctl(fds_[node], DRM_IOCTL_SYNCOBJ_CREATE, &c);
    if (!ret) Add(syncobjs_, Syncobj{node, c.handle}, kMaxSyncobjs, R(2));
    return ret;
  }

  int SyncobjDestroy() {
    if (!syncobjs_.empty() && !Chance(1, 8)) return Drop(syncobjs_, R(0));
    drm_syncobj_destroy d{};
    d.handle = R(1) % 32;
    d.pad = Chance(2, 8);
    return Ioctl(fds_[R(2) % kNumNodes], DRM_IOCTL_SYNCOBJ_DESTROY, &d);
  }

  int SyncobjExport() {
    Syncobj* s = Pick(syncobjs_, R(0));
    if (!s) return kNothing;
    drm_syncobj_handle h{};
    h.handle = s->handle;
    h.flags = R(1) & DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE;
    if (Chance(2, 16)) h.flags = (uint32_t)R(2);
    h.fd = -1;
    int ret = Ioctl(fds_[s->node], DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD, &h);
    if (ret) return ret;
    if (h.flags & DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE)
      Add(sync_files_, Buf{h.fd, 0}, kMaxSyncFiles, R(3));
    else
      Add(syncobj_fds_, Buf{h.fd, 0}, kMaxSyncobjFds, R(3));
    return 0;
  }

  int SyncobjImport() {
    int node = R(0) % kNumNodes;
    drm_syncobj_handle h{};
    if (R(1) & 1) {  // a sync_file into an existing syncobj
      Buf* sf = Pick(sync_files_, R(2));
      Syncobj* s = Pick(syncobjs_, R(3));
      if (s) node = s->node;
      h.flags = DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE;
      h.fd = sf ? sf->fd : -1;
      h.handle = s ? s->handle : (uint32_t)R(3) % 16;
      return Ioctl(fds_[node], DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE, &h);
    }
    Buf* sfd = Pick(syncobj_fds_, R(2));
    h.fd = sfd ? sfd->fd : (int)(R(2) % 64);
    if (Chance(4, 16)) h.flags = (uint32_t)R(4);
    int ret = Ioctl(fds_[node], DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE, &h);
    if (!ret && !(h.flags & DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE))
      Add(syncobjs_, Syncobj{node, h.handle}, kMaxSyncobjs, R(5));
    return ret;
  }

  // Absolute CLOCK_MONOTONIC deadlines a few ms ahead: an unsubmitted syncobj with
  // WAIT_FOR_SUBMIT must not block the worker for good.
  int SyncobjWait() {
    Syncobj* s = Pick(syncobjs_, R(0));
    int node = s ? s->node : R(0) % kNumNodes;
    uint32_t handles[4];
    uint32_t n = 0;
    for (const Syncobj& o : syncobjs_)
      if (o.node == node && n < 4) handles[n++] = o.handle;
    if (!n || Chance(1, 8)) handles[n++] = R(1) % 16;
    drm_syncobj_wait w{};
    w.handles = reinterpret_cast<uintptr_t>(handles);
    w.count_handles = Chance(2, 16) ? (uint32_t)R(2) % 8 : n;
    if (w.count_handles > n && !Chance(2, 2)) w.count_handles = n;
    w.flags = (uint32_t)R(3) % 4;
    if (Chance(4, 16)) w.flags = (uint32_t)R(4);
    w.timeout_nsec = NowNs() + (int64_t)(R(5) % 20000000);
    if (w.count_handles > n) w.handles = R(6) | (1ull << 46);  // past our array: a bad pointer
    return Ioctl(fds_[node], DRM_IOCTL_SYNCOBJ_WAIT, &w);
  }

  int SyncobjSignalReset() {
    Syncobj* s = Pick(syncobjs_, R(0));
    if (!s) return kNothing;
    uint32_t h = s->handle;
    drm_syncobj_array a{};
    a.handles = reinterpret_cast<uintptr_t>(&h);
    a.count_handles = 1;
    if (Chance(2, 16)) a.pad = 1;
    return Ioctl(fds_[s->node], R(1) & 1 ? DRM_IOCTL_SYNCOBJ_SIGNAL : DRM_IOCTL_SYNCOBJ_RESET,
                 &a);
  }

  int DumbCreate() {
    static const int nodes[] = {kVgemC, kG0C, kG1C, kVgemC, kG0C, kG1C, kVgemR, kG0R};
    int node = nodes[R(0) % 8];  // render nodes refuse dumb buffers
    drm_mode_create_dumb c{};
    c.width = 1 + R(1) % 256;
    c.height = 1 + (R(1) >> 16) % 128;
    c.bpp = 8 * (1 + (R(1) >> 32) % 4);
    if (Chance(2, 16)) {  // invalid only: zero, or beyond 4 GiB
      c.width = R(2) & 1 ? 0 : 0x40000;
      c.height = 0x10000;
      c.bpp = R(2) & 2 ? 0 : 32;
    }
    uint64_t est = (uint64_t)c.width * c.height * ((c.bpp + 7) / 8) + 65536;
    if (est < (1ull << 32) && OverBudget(est)) return MakeRoom(R(3));
    int ret = Ioctl(fds_[node], DRM_IOCTL_MODE_CREATE_DUMB, &c);
    if (!ret) Add(bos_, Bo{node, c.handle, c.size, true, false}, kMaxBos, R(4));
    return ret;
  }

  int DumbDestroy() {
    Bo* b = Pick(bos_, R(0));
    drm_mode_destroy_dumb d{};
    int node = b ? b->node : R(1) % kNumNodes;
    d.handle = b && !Chance(1, 8) ? b->handle : R(1) % 48;
    int ret = Ioctl(fds_[node], DRM_IOCTL_MODE_DESTROY_DUMB, &d);
    if (!ret && b && b->handle == d.handle) Erase(bos_, b);
    return ret;
  }

  // Driver-private ioctl numbers (sharegpu 0x00..0x0d, the BROKER_* ones -EOPNOTSUPP on a
  // device without a broker once their arguments pass, vgem 0x01..0x02, and the unused rest)
  // with random direction, size and payload.
  int RandomIoctl() {
    uint64_t payload[32];
    uint64_t rr = R(0);
    for (uint64_t& w : payload) w = PayloadWord(SplitMix64(&rr));
    unsigned nr = DRM_COMMAND_BASE + R(1) % 16;
    unsigned dir = (R(2) & 3) ? (unsigned)(R(2) & 3) : _IOC_NONE;
    unsigned size = (R(3) % 4) ? 8 * (1 + R(3) % 8) : R(3) % sizeof(payload);
    unsigned long req = _IOC(dir, DRM_IOCTL_BASE, nr, size);
    return Ioctl(fds_[R(4) % kNumNodes], req, payload);
  }

  int SendFd() {
    FdPacket pk;
    FdMsg& msg = pk.msg;
    int fd;
    switch (R(0) % 4) {
      case 0: case 1: {
        Buf tmp;
        const Buf* d = PickDmabuf(R(1), &tmp);
        if (!d) return kNothing;
        fd = d->fd;
        msg = {0, d->size};
        break;
      }
      case 2: {
        Buf* sf = Pick(sync_files_, R(1));
        if (!sf) return kNothing;
        fd = sf->fd;
        msg = {1, 0};
        break;
      }
      default: {
        Buf* so = Pick(syncobj_fds_, R(1));
        if (!so) return kNothing;
        fd = so->fd;
        msg = {2, 0};
        break;
      }
    }
    cmsghdr* c = CMSG_FIRSTHDR(&pk.mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    // the receiver's queue is short: a full queue is EAGAIN, not unbounded kernel memory
    return sendmsg(send_sock_, &pk.mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
  }

  int RecvFd() {
    FdPacket pk;
    const FdMsg& msg = pk.msg;
    if (recvmsg(recv_sock_, &pk.mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0) return -errno;
    cmsghdr* c = CMSG_FIRSTHDR(&pk.mh);
    if (!c || c->cmsg_type != SCM_RIGHTS) return -EBADMSG;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    if (msg.kind == 0) {
      // the budget counts what this worker can keep alive
      if (OverBudget(msg.size)) MakeRoom(R(0));
      Add(bufs_, Buf{fd, msg.size}, kMaxBufs, R(1));
    } else if (msg.kind == 1) {
      Add(sync_files_, Buf{fd, 0}, kMaxSyncFiles, R(1));
    } else {
      Add(syncobj_fds_, Buf{fd, 0}, kMaxSyncobjFds, R(1));
    }
    return 0;
  }

  // vgem fences block every importer's implicit sync until signalled (or vgem's 10 s
  // timeout): signal twice as often as attach, so such stalls stay occasional.
  int VgemFenceOp() {
    if (R(0) % 3 && !vgem_fences_.empty()) {
      VgemFence* f = Pick(vgem_fences_, R(1));
      drm_vgem_fence_signal s{};
      s.fence = f->id;
      if (Chance(2, 16)) s.flags = 1;
      int ret = Ioctl(fds_[f->node], DRM_IOCTL_VGEM_FENCE_SIGNAL, &s);
      Erase(vgem_fences_, f);
      return ret;
    }
    int node = R(3) & 1 ? kVgemR : kVgemC;
    drm_vgem_fence_attach a{};
    a.handle = HandleOn(node, R(4));
    a.flags = R(5) & VGEM_FENCE_WRITE;
    if (Chance(6, 16)) a.pad = 1;
    int ret = Ioctl(fds_[node], DRM_IOCTL_VGEM_FENCE_ATTACH, &a);
    if (!ret) Add(vgem_fences_, VgemFence{node, a.out_fence}, kMaxVgemFences, R(6));
    return ret;
  }

  // File close with BOs, imports, syncobjs and kept jobs of that file still around.
  int Reopen() {
    int node = R(0) % kNumNodes;
    close(fds_[node]);
    DropNode(bos_, node);
    DropNode(syncobjs_, node);
    DropNode(jobs_, node);
    DropNode(vgem_fences_, node);
    OpenNode(node);
    return fds_[node] < 0 ? -errno : 0;
  }

  int CloseFd() {
    switch (R(0) % 3) {
      case 0: return Drop(bufs_, R(1));
      case 1: return Drop(sync_files_, R(1));
      default: return Drop(syncobj_fds_, R(1));
    }
  }

  int GetInfo() {
    drm_sharegpu_info i{};
    return Ioctl(fds_[SgpuNode(R(0))], DRM_IOCTL_SHAREGPU_GET_INFO, &i);
  }

  int proc_, thread_;
  WorkerStats* st_;
  int send_sock_, recv_sock_;
  uint64_t rng_;
  uint64_t r_[8] = {};
  int fds_[kNumNodes] = {-1, -1, -1, -1, -1, -1};
  std::vector<Bo> bos_;
  std::vector<Map> maps_;
  std::vector<Buf> bufs_, sync_files_, syncobj_fds_;
  std::vector<Syncobj> syncobjs_;
  std::vector<Job> jobs_;
  std::vector<VgemFence> vgem_fences_;
  std::vector<BrokerId> broker_ids_;
};

// ------------------------------------------------------------------------------ processes

WorkerStats& Stats(int proc, int thread) { return g.stats[proc * g.opt.threads + thread]; }

uint64_t SumOks(int op) {
  uint64_t s = 0;
  for (int i = 0; i < g.opt.procs * g.opt.threads; i++) s += g.stats[i].oks[op];
  return s;
}

// Child: M worker threads and a heartbeat thread (a frozen guest stops printing it).
[[noreturn]] void ChildMain(int proc, int send_sock, int recv_sock) {
  InstallFaultHandler();
  if (g.opt.uid >= 0) {
    if (setgroups(0, nullptr) || setgid(g.opt.uid) || setuid(g.opt.uid)) {
      Say("SHAREGPU-FUZZ: p%d cannot drop to uid %d: %s", proc, g.opt.uid, strerror(errno));
      _exit(2);
    }
  }
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread heartbeat([&] {
    int64_t start = NowMs();
    std::unique_lock<std::mutex> lock(mu);
    while (!cv.wait_for(lock, std::chrono::seconds(g.opt.heartbeat), [&] { return done; })) {
      std::string ops;
      for (int t = 0; t < g.opt.threads; t++) {
        WorkerStats& s = Stats(proc, t);
        int64_t since = s.op_start_ms.load();
        ops += " t" + std::to_string(t) + "=" + std::to_string(s.ops.load());
        if (since) ops += std::string("(") + kOps[s.cur_op.load()].name + ")";
      }
      Say("SHAREGPU-FUZZ-HEARTBEAT: p%d %llds ops%s", proc,
          (long long)(NowMs() - start) / 1000, ops.c_str());
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < g.opt.threads; t++)
    threads.emplace_back([=] {
      Worker w(proc, t, &Stats(proc, t), send_sock, recv_sock);
      w.Run();
    });
  for (std::thread& t : threads) t.join();
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  cv.notify_all();
  heartbeat.join();
  _exit(0);
}

// Where a stuck worker sits in the kernel (the parent stays root to read it).
void DumpWorkerStack(int tid) {
  std::string s = sgt::ReadFile("/proc/" + std::to_string(tid) + "/stack");
  std::string wchan = sgt::ReadFile("/proc/" + std::to_string(tid) + "/wchan");
  Say("SHAREGPU-FUZZ: kernel stack of tid %d (wchan %s):\n%s", tid, wchan.c_str(), s.c_str());
}

void CreateSharedBuffers() {
  struct Spec {
    int node;
    uint64_t size;
  };
  static const Spec specs[] = {{kG0R, 64 << 10}, {kG0R, 256 << 10}, {kG0R, 1 << 20},
                               {kG1R, 64 << 10}, {kG1R, 256 << 10}, {kG1R, 1 << 20},
                               {kVgemC, 256 << 10}, {kVgemC, 64 << 10}};
  for (const Spec& s : specs) {
    int fd = open(g.node_path[s.node].c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;
    uint32_t h = 0;
    int ret;
    if (s.node == kVgemC) {
      drm_mode_create_dumb c{};
      c.width = s.size / 256;
      c.height = 64;
      c.bpp = 32;
      ret = Ioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &c);
      h = c.handle;
    } else {
      ret = sgt::BoCreateFd(fd, s.size, SHAREGPU_DOMAIN_VRAM | SHAREGPU_DOMAIN_SYSTEM, &h);
    }
    int buf = ret ? ret : sgt::ExportFd(fd, h);
    if (buf >= 0) {
      // inherited across fork by every worker process
      g.shared_bufs.push_back(buf);
      g.shared_size.push_back((uint64_t)lseek(buf, 0, SEEK_END));
    } else {
      Say("SHAREGPU-FUZZ: shared buffer on %s: %s", kNodeName[s.node], strerror(-buf));
    }
    close(fd);  // the dma-buf keeps the BO
  }
}

std::string ErrnoName(int e) {
  const char* n = e ? strerrorname_np(e) : nullptr;
  return n ? n : "E" + std::to_string(e);
}

void PrintCounters() {
  for (int d = 0; d < 2; d++) {
    auto m = sgt::Counters(sgt::Dev{-1, "", g.pci[d], {}});
    std::string line;
    for (auto& kv : m) line += " " + kv.first + "=" + std::to_string(kv.second);
    Say("SHAREGPU-FUZZ: counters g%d (%s):%s", d, g.pci[d].c_str(), line.c_str());
  }
}

uint64_t ParseU64(const char* s, const char* what) {
  char* end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end || end == s) {
    fprintf(stderr, "sgpu_fuzz: bad %s '%s'\n", what, s);
    exit(2);
  }
  return v;
}

void Usage() {
  printf(
      "usage: sgpu_fuzz [options]\n"
      "  --seed N          master seed (default: random, printed)\n"
      "  --duration SECS   run time (default 60)\n"
      "  --ops N           stop each worker after N ops (replay; default unbounded)\n"
      "  --procs N         processes (default 3)      --threads M  threads each (default 2)\n"
      "  --min-submits N --min-imports N --min-moves N --min-mmaps N\n"
      "                    coverage floors (successful calls summed over workers);\n"
      "                    default 30/30/30/60 per minute of --duration\n"
      "  --min-broker-exports N  floor of successful BROKER_EXPORTs (default 0: g0 may\n"
      "                    have no broker)\n"
      "  --budget-mib N    buffer bytes a worker may keep referenced (default 16)\n"
      "  --uid N           workers drop to this uid/gid after fork (default: stay)\n"
      "  --heartbeat SECS  heartbeat period (default 10)\n"
      "  --stuck SECS      one op longer than this fails the run (default 90)\n"
      "  --grace SECS      time after --duration for workers to finish (default 120)\n"
      "  --trace           print every op (SHAREGPU-FUZZ-TRACE) for replay debugging\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options& o = g.opt;
  bool floors_given[4] = {};
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&](const char* what) {
      if (i + 1 >= argc) {
        fprintf(stderr, "sgpu_fuzz: %s needs a value\n", what);
        exit(2);
      }
      return ParseU64(argv[++i], what);
    };
    if (a == "--seed") o.seed = val("--seed"), o.seed_given = true;
    else if (a == "--duration") o.duration = val("--duration");
    else if (a == "--ops") o.max_ops = val("--ops");
    else if (a == "--procs") o.procs = val("--procs");
    else if (a == "--threads") o.threads = val("--threads");
    else if (a == "--min-submits") o.min_submits = val(a.c_str()), floors_given[0] = true;
    else if (a == "--min-imports") o.min_imports = val(a.c_str()), floors_given[1] = true;
    else if (a == "--min-moves") o.min_moves = val(a.c_str()), floors_given[2] = true;
    else if (a == "--min-mmaps") o.min_mmaps = val(a.c_str()), floors_given[3] = true;
    else if (a == "--min-broker-exports") o.min_broker_exports = val(a.c_str());
    else if (a == "--budget-mib") o.budget_mib = val(a.c_str());
    else if (a == "--uid") o.uid = val(a.c_str());
    else if (a == "--heartbeat") o.heartbeat = val(a.c_str());
    else if (a == "--stuck") o.stuck = val(a.c_str());
    else if (a == "--grace") o.grace = val(a.c_str());
    else if (a == "--trace") o.trace = true;
    else if (a == "-h" || a == "--help") { Usage(); return 0; }
    else { fprintf(stderr, "sgpu_fuzz: unknown argument %s\n", a.c_str()); Usage(); return 2; }
  }
  if (o.procs < 1 || o.threads < 1 || o.procs * o.threads > 64 || o.heartbeat < 1) {
    fprintf(stderr, "sgpu_fuzz: bad --procs/--threads/--heartbeat\n");
    return 2;
  }
  if (!o.seed_given) {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &o.seed, sizeof(o.seed)) != sizeof(o.seed)) o.seed = NowNs();
    if (fd >= 0) close(fd);
    o.seed &= 0xffffffffull;  // short enough to type
  }
  // Floors per minute of fuzzing. The slowest seed measured (3, idle 2-core host) made per
  // minute about 200 successful submits, 320 imports, 340 moves and 700 touches; a loaded
  // host makes a quarter of that, a fuzzer whose calls all fail none. Only floors not given
  // on the command line; none with --ops.
  const uint64_t per_minute[4] = {30, 30, 30, 60};
  uint64_t* floors[4] = {&o.min_submits, &o.min_imports, &o.min_moves, &o.min_mmaps};
  for (int i = 0; i < 4; i++)
    if (!floors_given[i] && !o.max_ops) *floors[i] = per_minute[i] * o.duration / 60;

  setvbuf(stdout, nullptr, _IONBF, 0);
  Say("SHAREGPU-FUZZ: START seed=%llu procs=%d threads=%d duration=%ds ops=%llu "
      "floors: submits>=%llu imports>=%llu moves>=%llu mmaps>=%llu",
      (unsigned long long)o.seed, o.procs, o.threads, o.duration,
      (unsigned long long)o.max_ops, (unsigned long long)o.min_submits,
      (unsigned long long)o.min_imports, (unsigned long long)o.min_moves,
      (unsigned long long)o.min_mmaps);
  std::string err = FindNodes();
  if (!err.empty()) {
    Say("SHAREGPU-FUZZ: FAIL setup: %s", err.c_str());
    return 1;
  }
  for (int i = 0; i < kNumNodes; i++)
    Say("SHAREGPU-FUZZ: node %s = %s", kNodeName[i], g.node_path[i].c_str());

  size_t nworkers = o.procs * o.threads;
  void* shm = mmap(nullptr, nworkers * sizeof(WorkerStats), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shm == MAP_FAILED) {
    Say("SHAREGPU-FUZZ: FAIL setup: mmap: %s", strerror(errno));
    return 1;
  }
  g.stats = static_cast<WorkerStats*>(shm);  // zero-filled: every atomic starts at 0
  for (int p = 0; p < o.procs; p++)
    for (int t = 0; t < o.threads; t++) {
      Stats(p, t).seed = WorkerSeed(o.seed, p, t);
      Say("SHAREGPU-FUZZ: worker p%d.t%d seed=%#llx", p, t,
          (unsigned long long)Stats(p, t).seed);
    }

  CreateSharedBuffers();
  // ring of fd-passing sockets: process p sends on pairs[p][0], receives on pairs[p-1][1]
  std::vector<std::array<int, 2>> pairs(o.procs);
  for (auto& sp : pairs) {
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp.data())) {
      Say("SHAREGPU-FUZZ: FAIL setup: socketpair: %s", strerror(errno));
      return 1;
    }
    int small = 4096;
    setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  }

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, nullptr);
  int64_t start = NowMs();
  g.end_ms = start + o.duration * 1000ll;
  std::vector<pid_t> pids(o.procs, -1);
  std::vector<int> status(o.procs, -1);
  for (int p = 0; p < o.procs; p++) {
    pid_t pid = fork();
    if (pid == 0) {
      sigprocmask(SIG_UNBLOCK, &chld, nullptr);
      ChildMain(p, pairs[p][0], pairs[(p + o.procs - 1) % o.procs][1]);
    }
    if (pid < 0) Say("SHAREGPU-FUZZ: fork: %s", strerror(errno));
    pids[p] = pid;
  }
  for (auto& sp : pairs) close(sp[0]), close(sp[1]);

  // Watchdog and reaper. The 1 s wake-up is the detector's resolution, not synchronisation.
  std::string fail;
  int alive = 0;
  for (pid_t pid : pids) alive += pid > 0;
  int64_t hard_end = g.end_ms + o.grace * 1000ll;
  while (alive > 0) {
    timespec one{1, 0};
    sigtimedwait(&chld, nullptr, &one);
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
      for (int p = 0; p < o.procs; p++)
        if (pids[p] == pid) status[p] = st, alive--;
    int64_t now = NowMs();
    for (int p = 0; p < o.procs; p++)
      for (int t = 0; t < o.threads; t++) {
        WorkerStats& s = Stats(p, t);
        int64_t since = s.op_start_ms.load();
        if (status[p] != -1 || !since || now - since < o.stuck * 1000ll || s.stuck_reported)
          continue;
        s.stuck_reported = 1;
        Say("SHAREGPU-FUZZ: p%d.t%d stuck in %s for %llds (op #%llu)", p, t,
            kOps[s.cur_op.load()].name, (long long)(now - since) / 1000,
            (unsigned long long)s.ops.load());
        DumpWorkerStack(s.tid);
        if (fail.empty())
          fail = "p" + std::to_string(p) + ".t" + std::to_string(t) + " stuck in " +
                 kOps[s.cur_op.load()].name;
      }
    if (now > hard_end && alive > 0) {
      for (int p = 0; p < o.procs; p++) {
        if (status[p] != -1 || pids[p] <= 0) continue;
        for (int t = 0; t < o.threads; t++) {
          WorkerStats& s = Stats(p, t);
          if (s.finished) continue;
          Say("SHAREGPU-FUZZ: p%d.t%d did not finish %ds after the end (in %s)", p, t,
              o.grace, s.op_start_ms ? kOps[s.cur_op.load()].name : "-");
          DumpWorkerStack(s.tid);
        }
        kill(pids[p], SIGKILL);
      }
      if (fail.empty()) fail = "workers did not finish in time";
      // a task in D state ignores SIGKILL: give them 10 s, then stop waiting
      int64_t kill_end = NowMs() + 10000;
      while (alive > 0 && NowMs() < kill_end) {
        sigtimedwait(&chld, nullptr, &one);
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
          for (int p = 0; p < o.procs; p++)
            if (pids[p] == pid) status[p] = st, alive--;
      }
      break;
    }
  }
  double secs = (NowMs() - start) / 1000.0;

  // ---- oracle
  for (int p = 0; p < o.procs; p++) {
    int st = status[p];
    std::string how = pids[p] < 0 ? "not started"
                      : st == -1  ? "still running"
                      : WIFSIGNALED(st) ? std::string("killed by signal ") +
                                              strsignal(WTERMSIG(st))
                      : "exit " + std::to_string(WEXITSTATUS(st));
    bool clean = pids[p] > 0 && st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    for (int t = 0; t < o.threads; t++) clean = clean && Stats(p, t).finished;
    Say("SHAREGPU-FUZZ: process p%d pid %d: %s%s", p, (int)pids[p], how.c_str(),
        clean ? " (clean)" : "");
    if (!clean && fail.empty()) fail = "process p" + std::to_string(p) + " " + how;
    for (int t = 0; t < o.threads; t++)
      if (Stats(p, t).sigsegv && fail.empty())
        fail = "p" + std::to_string(p) + ".t" + std::to_string(t) +
               " got SIGSEGV touching a live mapping";
    for (int t = 0; t < o.threads; t++) {
      WorkerStats& s = Stats(p, t);
      Say("SHAREGPU-FUZZ: worker p%d.t%d seed=%#llx ops=%llu sigsegv=%llu%s", p, t,
          (unsigned long long)s.seed, (unsigned long long)s.ops.load(),
          (unsigned long long)s.sigsegv.load(), s.finished ? "" : " (did not finish)");
    }
  }
  // per op: calls, successes and its errno histogram; then the histogram over all ops
  uint64_t all_errnos[kErrnoMax] = {};
  for (int op = 0; op < kNumOps; op++) {
    uint64_t calls = 0;
    std::string errs;
    for (size_t i = 0; i < nworkers; i++) calls += g.stats[i].calls[op];
    for (int e = 0; e < kErrnoMax; e++) {
      uint64_t n = 0;
      for (size_t i = 0; i < nworkers; i++) n += g.stats[i].errnos[op][e];
      all_errnos[e] += n;
      if (n) errs += " " + ErrnoName(e) + "=" + std::to_string(n);
    }
    Say("SHAREGPU-FUZZ: op %-20s calls=%llu ok=%llu%s", kOps[op].name,
        (unsigned long long)calls, (unsigned long long)SumOks(op), errs.c_str());
  }
  std::string hist;
  for (int e = 0; e < kErrnoMax; e++)
    if (all_errnos[e]) hist += " " + ErrnoName(e) + "=" + std::to_string(all_errnos[e]);
  Say("SHAREGPU-FUZZ: errno%s", hist.c_str());
  PrintCounters();

  uint64_t ops = 0, touched = 0, sigbus = 0, sigsegv = 0;
  uint64_t by_kind[kNumMapKinds] = {}, bus_by_kind[kNumMapKinds] = {};
  for (size_t i = 0; i < nworkers; i++) {
    ops += g.stats[i].ops;
    for (int k = 0; k < kNumMapKinds; k++) {
      by_kind[k] += g.stats[i].touched[k];
      bus_by_kind[k] += g.stats[i].sigbus[k];
    }
    sigsegv += g.stats[i].sigsegv;
  }
  std::string kinds;
  for (int k = 0; k < kNumMapKinds; k++) {
    touched += by_kind[k];
    sigbus += bus_by_kind[k];
    kinds += std::string(" ") + kMapKindName[k] + "=" + std::to_string(by_kind[k]) + "/" +
             std::to_string(bus_by_kind[k]);
  }
  Say("SHAREGPU-FUZZ: mappings touched/SIGBUS by kind:%s", kinds.c_str());
  uint64_t submits = SumOks(kSubmit), imports = SumOks(kPrimeImport), moves = SumOks(kBoMove);
  uint64_t broker_exports = SumOks(kBrokerExport);
  Say("SHAREGPU-FUZZ: COVERAGE ops=%llu submits=%llu imports=%llu moves=%llu mmaps=%llu "
      "sigbus=%llu sigsegv=%llu broker_exports=%llu broker_grants=%llu broker_unexports=%llu "
      "time=%.1fs",
      (unsigned long long)ops, (unsigned long long)submits, (unsigned long long)imports,
      (unsigned long long)moves, (unsigned long long)touched, (unsigned long long)sigbus,
      (unsigned long long)sigsegv, (unsigned long long)broker_exports,
      (unsigned long long)SumOks(kBrokerGrant), (unsigned long long)SumOks(kBrokerUnexport),
      secs);
  struct {
    const char* name;
    uint64_t got, floor;
  } cov[] = {{"submits", submits, o.min_submits}, {"imports", imports, o.min_imports},
             {"moves", moves, o.min_moves}, {"mmaps", touched, o.min_mmaps},
             {"broker_exports", broker_exports, o.min_broker_exports}};
  for (auto& c : cov)
    if (fail.empty() && c.got < c.floor)
      fail = std::string("coverage ") + c.name + "=" + std::to_string(c.got) + " < floor " +
             std::to_string(c.floor);
  if (!fail.empty()) {
    Say("SHAREGPU-FUZZ: FAIL %s (seed=%llu)", fail.c_str(), (unsigned long long)o.seed);
    return 1;
  }
  Say("SHAREGPU-FUZZ: PASS seed=%llu submits=%llu imports=%llu moves=%llu mmaps=%llu",
      (unsigned long long)o.seed, (unsigned long long)submits, (unsigned long long)imports,
      (unsigned long long)moves, (unsigned long long)touched);
  return 0;
}
