// Shared by the broker tests: sealed memfds, descriptor counts, a broker running on a thread
// of the test process, and packets built by hand for the state machine.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "broker/broker_client.h"
#include "broker/broker_server.h"
#include "broker/broker_state.h"
#include "broker/wire.h"
#include "mem/memfd.h"

namespace sharegpu::broker::testing {

// Every wait in these tests is bounded by this; hitting it fails the test.
inline constexpr int kWaitMs = 10000;

inline int CountOpenFds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the directory's own descriptor
}

// A sealed memfd of `size` bytes, mapped; fd() is what gets exported.
inline std::unique_ptr<Memfd> NewStorage(uint64_t size, uint8_t fill = 0) {
  auto m = Memfd::Create("broker-test", size);
  if (!m.ok()) return nullptr;
  std::memset(m.value()->data(), fill, size);
  return std::move(m.value());
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sgbk-test-XXXXXX";
    char* p = ::mkdtemp(tmpl);
    path_ = p ? p : "";
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path_ + "'";
    if (!path_.empty()) (void)::system(cmd.c_str());
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A broker serving on its own thread of the test process.
class ThreadBroker {
 public:
  explicit ThreadBroker(const std::string& path, BrokerOptions opts = {}) {
    ServerOptions so;
    so.socket_path = path;
    so.broker = opts;
    auto s = BrokerServer::Listen(so);
    status_ = s.status();
    if (!s.ok()) return;
    server_ = std::move(s.value());
    thread_ = std::thread([this] { (void)server_->Run(); });
  }
  ~ThreadBroker() { Stop(); }
  void Stop() {
    if (!server_) return;
    server_->Stop();
    thread_.join();
    server_.reset();
  }
  // Stops serving and cross-checks the state machine's indexes ("" when consistent).
  std::string StopAndCheckInvariants() {
    if (!server_) return "not running";
    server_->Stop();
    thread_.join();
    std::string s = server_->broker().CheckInvariants();
    server_.reset();
    return s;
  }
  Status status() const { return status_; }

 private:
  Status status_ = kOk;
  std::unique_ptr<BrokerServer> server_;
  std::thread thread_;
};

// A packet as the event loop would hand it to the state machine.
inline Packet MakePacket(std::vector<uint8_t> bytes, std::vector<OwnedFd> fds = {}) {
  Packet p;
  p.bytes = std::move(bytes);
  p.fds = std::move(fds);
  return p;
}

inline std::vector<OwnedFd> OneFd(OwnedFd fd) {
  std::vector<OwnedFd> v;
  v.push_back(std::move(fd));
  return v;
}

inline OwnedFd DupFd(int fd) { return OwnedFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

// Dispatches the client's events until pred() holds; fails after kWaitMs.
template <class Pred>
::testing::AssertionResult DispatchUntil(BrokerClient& c, Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return ::testing::AssertionFailure() << "event did not arrive in " << kWaitMs << " ms";
    }
    Status st = c.WaitAndDispatch(100);
    if (st != kOk && st != -ETIMEDOUT && st != -ENOTCONN) {
      return ::testing::AssertionFailure() << "dispatch: " << st;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace sharegpu::broker::testing
