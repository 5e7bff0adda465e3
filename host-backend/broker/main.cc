// sharegpu-broker: the host daemon that lets a buffer exported in one VM be imported in
// another (docs/broker.md). `--status` asks a running broker for its state.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "broker/broker_client.h"
#include "broker/broker_server.h"
#include "common/log.h"

namespace {

using sharegpu::broker::BrokerClient;
using sharegpu::broker::BrokerServer;
using sharegpu::broker::ServerOptions;

BrokerServer* g_server = nullptr;

void OnSignal(int) {
  if (g_server) g_server->Stop();
}

bool g_verbose = false;

void LogToStderr(void*, sharegpu::LogLevel level, const char* msg) {
  if (level < sharegpu::LogLevel::kWarn && !g_verbose) return;
  std::fprintf(stderr, "sharegpu-broker: %s\n", msg);
}

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: sharegpu-broker --socket PATH [options]   run the broker\n"
               "       sharegpu-broker --socket PATH --status     print a running broker's "
               "state\n"
               "options:\n"
               "  --socket PATH         the UNIX socket (created with mode 0660; put it in a\n"
               "                        directory only the VMs' users can enter)\n"
               "  --ack-timeout-ms N    revoke importers that do not acknowledge an\n"
               "                        invalidation within N ms (default 2000)\n"
               "  --allow-uid UID       also accept peers of this uid (repeatable; the broker's\n"
               "                        own uid and root are always accepted)\n"
               "  --max-peers N         connections at once (default 256)\n"
               "  --max-exports N       live exports per peer (default 1024)\n"
               "  --no-udmabuf          never hand out /dev/udmabuf dma-bufs\n"
               "  --verbose             log connections and informational messages\n"
               "  --help                this text\n");
}

bool ParseInt(const char* s, long lo, long hi, long* out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  ServerOptions opts;
  bool status = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool has_value = i + 1 < argc;
    long v = 0;
    if (a == "--help" || a == "-h") {
      Usage(stdout);
      return 0;
    } else if (a == "--status") {
      status = true;
    } else if (a == "--verbose") {
      g_verbose = true;
    } else if (a == "--no-udmabuf") {
      opts.broker.allow_udmabuf = false;
    } else if (a == "--socket" && has_value) {
      opts.socket_path = argv[++i];
    } else if (a == "--ack-timeout-ms" && has_value && ParseInt(argv[++i], 1, 3600000, &v)) {
      opts.broker.ack_timeout_ms = static_cast<int>(v);
    } else if (a == "--allow-uid" && has_value && ParseInt(argv[++i], 0, 0xfffffffe, &v)) {
      opts.allowed_uids.push_back(static_cast<uint32_t>(v));
    } else if (a == "--max-peers" && has_value && ParseInt(argv[++i], 1, 65536, &v)) {
      opts.broker.max_peers = static_cast<size_t>(v);
    } else if (a == "--max-exports" && has_value && ParseInt(argv[++i], 0, 1 << 20, &v)) {
      opts.broker.max_exports_per_peer = static_cast<size_t>(v);
    } else {
      std::fprintf(stderr, "sharegpu-broker: bad argument '%s'\n", argv[i]);
      Usage(stderr);
      return 2;
    }
  }
  if (opts.socket_path.empty()) {
    std::fprintf(stderr, "sharegpu-broker: --socket PATH is required\n");
    Usage(stderr);
    return 2;
  }
  sharegpu::SetLogSink(LogToStderr, nullptr);

  if (status) {
    auto text = BrokerClient::QueryStatus(opts.socket_path);
    if (!text.ok()) {
      std::fprintf(stderr, "sharegpu-broker: no broker answers on %s: %s\n",
                   opts.socket_path.c_str(), std::strerror(-text.status()));
      return 1;
    }
    std::fputs(text->c_str(), stdout);
    return 0;
  }

  auto server = BrokerServer::Listen(opts);
  if (!server.ok()) {
    std::fprintf(stderr, "sharegpu-broker: cannot listen on %s: %s\n", opts.socket_path.c_str(),
                 std::strerror(-server.status()));
    return 1;
  }
  g_server = server->get();
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // "ready" on stdout once accepting: scripts and tests wait for this line.
  std::printf("sharegpu-broker: ready on %s\n", opts.socket_path.c_str());
  std::fflush(stdout);
  int rc = (*server)->Run();
  g_server = nullptr;
  return rc == 0 ? 0 : 1;
}
