// Cross-process sharing through the broker against the raw mechanism underneath it.
//   BM_BrokerExportImport: export -> grant -> import -> first map of a buffer, exporter and
//     importer in two processes and the broker in a third (all forked from here); the export
//     carries the grant and the importer accepts offers, so the broker imports for it.
//   BM_BrokerExportImportById: the same, but the id travels from the exporter to the importer
//     outside the broker and the importer, which accepts offers, imports it by id. The
//     exporter exports under an id reserved ahead (ExportQueued) and sends it on at once, so
//     the importer finds the offer in its socket, or asks the broker, which reads the EXPORT
//     first (the QEMU device's path for a guest import).
//   BM_BrokerExportImportPull: the same, but the importer does not accept offers: it always
//     IMPORTs the id (a round trip to the broker).
//   BM_ScmRightsRoundTrip: the same memfd sent over SCM_RIGHTS from the exporter process to the
//     importer process, mapped there (first map), and acknowledged back: the floor.
// Both time exactly the same span: from the exporter starting until it hears that the
// importer has touched the first page (manual time; clean-up between iterations - unexport,
// release of the import, closing the descriptor - is outside it).
//   ratio broker_import_vs_scm_rights = broker time / raw time (target <= 2.0)
//   ratio broker_import_by_id_vs_scm_rights = by-id time / raw time
//   ratio broker_pull_import_vs_scm_rights = pull time / raw time
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "broker/broker_client.h"
#include "broker/broker_server.h"
#include "mem/memfd.h"
#include "ratio_reporter.h"

namespace sharegpu::broker {
namespace {

constexpr uint64_t kSize = 64 * 1024;
constexpr int kWaitMs = 10000;

struct Child {
  pid_t pid = -1;
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      int st;
      ::waitpid(pid, &st, 0);
    }
  }
};

// Maps the first page of fd, reads and writes a byte, unmaps.
bool FirstMap(int fd, bool writable) {
  void* p = ::mmap(nullptr, kSize, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return false;
  volatile uint8_t* b = static_cast<uint8_t*>(p);
  uint8_t v = b[0];
  if (writable) b[1] = static_cast<uint8_t>(v + 1);
  ::munmap(p, kSize);
  return true;
}

bool SendByte(int sock, char c) { return ::send(sock, &c, 1, MSG_NOSIGNAL) == 1; }
bool RecvByte(int sock) {
  char c;
  return WaitReadable(sock, kWaitMs) == 1 && ::recv(sock, &c, 1, 0) == 1;
}

void BM_ScmRightsRoundTrip(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  Child importer;
  importer.pid = ::fork();
  if (importer.pid == 0) {
    ::close(sv[0]);
    Packet p;
    while (RecvPacket(sv[1], &p, false) == 1 && p.fds.size() == 1) {
      if (!FirstMap(p.fds[0].get(), true) || !SendByte(sv[1], 'm')) ::_exit(1);
      p.fds.clear();  // close outside the timed span, like the broker path's clean-up
      if (!SendByte(sv[1], 'c')) ::_exit(1);
    }
    ::_exit(0);
  }
  ::close(sv[1]);
  OwnedFd ctrl(sv[0]);
  auto mem = Memfd::Create("bench", kSize).value();
  std::vector<uint8_t> msg(16, 0);
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    if (SendPacket(ctrl.get(), msg, mem->fd(), false) != kOk || !RecvByte(ctrl.get())) {
      state.SkipWithError("raw round trip failed");
      break;
    }
    auto t1 = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
    if (!RecvByte(ctrl.get())) {
      state.SkipWithError("clean-up failed");
      break;
    }
  }
}
BENCHMARK(BM_ScmRightsRoundTrip)->UseManualTime();

// The broker and the importer processes of one broker benchmark run.
struct BrokerRig {
  std::string dir, path;
  Child broker, importer;
  OwnedFd ctrl;  // to the importer
  std::unique_ptr<BrokerClient> exporter;
  ~BrokerRig() {
    exporter.reset();
    ctrl.Reset();
    std::string rm = "rm -rf '" + dir + "'";
    if (!dir.empty()) (void)std::system(rm.c_str());
  }
};

enum class ImportPath {
  kOffer,  // the importer accepts offers and waits for one; no id travels out of band
  kById,   // it accepts offers, and imports the id the exporter sends it
  kPull,   // it does not accept offers, and IMPORTs the id the exporter sends it
};

bool StartRig(BrokerRig& rig, ImportPath path) {
  const bool offers = path != ImportPath::kPull;
  const bool by_id = path != ImportPath::kOffer;
  char tmpl[] = "/tmp/sgbk-bench-XXXXXX";
  if (!::mkdtemp(tmpl)) return false;
  rig.dir = tmpl;
  rig.path = rig.dir + "/broker.sock";
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return false;
  rig.broker.pid = ::fork();
  if (rig.broker.pid == 0) {  // the broker process
    ServerOptions so;
    so.socket_path = rig.path;
    auto server = BrokerServer::Listen(so);
    if (!server.ok() || ::write(ready[1], "r", 1) != 1) ::_exit(1);
    (void)(*server)->Run();
    ::_exit(0);
  }
  ::close(ready[1]);
  char r;
  bool up = WaitReadable(ready[0], kWaitMs) == 1 && ::read(ready[0], &r, 1) == 1;
  ::close(ready[0]);
  if (!up) return false;

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return false;
  rig.importer.pid = ::fork();
  if (rig.importer.pid == 0) {  // the importing VM's process
    ::close(sv[0]);
    auto b = BrokerClient::Connect(rig.path, "vm-b", kWaitMs, offers ? kHelloAcceptOffers : 0);
    if (!b.ok() || !SendByte(sv[1], 'r')) ::_exit(1);
    WireId id;
    bool have = false;
    BrokerClient::Callbacks cb;
    cb.offered = [&](const WireId& offered, const std::string&, uint64_t, bool) {
      id = offered;
      have = true;
    };
    (*b)->SetCallbacks(cb);
    for (;;) {
      if (!by_id) {
        have = false;
        while (!have) {
          if ((*b)->WaitAndDispatch(-1) != kOk) ::_exit(0);
        }
      } else if (::recv(sv[1], id.bytes, sizeof(id.bytes), 0) != sizeof(id.bytes)) {
        ::_exit(0);
      }
      auto imp = (*b)->Import(id);
      if (!imp.ok() || !FirstMap(imp->fd.get(), imp->writable) || !SendByte(sv[1], 'm')) {
        ::_exit(2);
      }
      imp->fd.Reset();
      // outside the timed span, as QEMU's main loop does: the queued OFFER events
      if ((*b)->ReleaseImport(id) != kOk || (*b)->Dispatch() != kOk || !SendByte(sv[1], 'c')) {
        ::_exit(3);
      }
    }
  }
  ::close(sv[1]);
  rig.ctrl = OwnedFd(sv[0]);
  if (!RecvByte(rig.ctrl.get())) return false;
  auto a = BrokerClient::Connect(rig.path, "vm-a", kWaitMs);
  if (!a.ok()) return false;
  rig.exporter = std::move(a.value());
  return true;
}

void RunBrokerCycles(benchmark::State& state, ImportPath path) {
  const bool by_id = path != ImportPath::kOffer;
  BrokerRig rig;
  if (!StartRig(rig, path)) {
    state.SkipWithError("could not start the broker and the importer");
    return;
  }
  auto mem = Memfd::Create("bench", kSize).value();
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    // + grant; by id, the id is handed on before the broker has answered
    auto id = by_id ? rig.exporter->ExportQueued(mem->fd(), kSize, "vm-b", kRightReadWrite)
                    : rig.exporter->Export(mem->fd(), kSize, "vm-b", kRightReadWrite);
    if (!id.ok() ||
        (by_id && ::send(rig.ctrl.get(), id->bytes, sizeof(id->bytes), MSG_NOSIGNAL) !=
                      sizeof(id->bytes)) ||
        !RecvByte(rig.ctrl.get())) {
      state.SkipWithError("broker round trip failed");
      break;
    }
    auto t1 = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
    if (rig.exporter->Unexport(*id) != kOk || !RecvByte(rig.ctrl.get())) {
      state.SkipWithError("clean-up failed");
      break;
    }
  }
}

// The broker offers the import to the grantee as it records the grant.
void BM_BrokerExportImport(benchmark::State& state) { RunBrokerCycles(state, ImportPath::kOffer); }
BENCHMARK(BM_BrokerExportImport)->UseManualTime();

// The id travels out of band (exporter -> importer) and the importer imports it by id: the
// path of a guest import in the QEMU device, which accepts offers.
void BM_BrokerExportImportById(benchmark::State& state) {
  RunBrokerCycles(state, ImportPath::kById);
}
BENCHMARK(BM_BrokerExportImportById)->UseManualTime();

// The same without offers: the importer asks the broker for the id.
void BM_BrokerExportImportPull(benchmark::State& state) { RunBrokerCycles(state, ImportPath::kPull); }
BENCHMARK(BM_BrokerExportImportPull)->UseManualTime();

const bool kRatios = [] {
  bench::RegisterRatio("broker_import_vs_scm_rights", "BM_BrokerExportImport/manual_time",
                       "BM_ScmRightsRoundTrip/manual_time", bench::RatioKind::kTime);
  bench::RegisterRatio("broker_import_by_id_vs_scm_rights", "BM_BrokerExportImportById/manual_time",
                       "BM_ScmRightsRoundTrip/manual_time", bench::RatioKind::kTime);
  bench::RegisterRatio("broker_pull_import_vs_scm_rights", "BM_BrokerExportImportPull/manual_time",
                       "BM_ScmRightsRoundTrip/manual_time", bench::RatioKind::kTime);
  return true;
}();

}  // namespace
}  // namespace sharegpu::broker

SHAREGPU_BENCH_MAIN();
