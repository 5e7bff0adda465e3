// The broker as a separate process (the built sharegpu-broker binary) and peers as separate
// processes: kill -9 of an exporter, of an importer and of the broker itself.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "broker/broker_client.h"
#include "broker_test_util.h"

namespace sharegpu::broker {
namespace {

using testing::DispatchUntil;
using testing::kWaitMs;
using testing::NewStorage;
using testing::TempDir;

const char* BrokerBinary() {
  const char* p = std::getenv("SHAREGPU_BROKER");
  return p ? p : "./sharegpu-broker";
}

// Reads up to `want` bytes from fd within kWaitMs.
std::string ReadWithin(int fd, size_t want) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
  while (out.size() < want && std::chrono::steady_clock::now() < deadline) {
    if (WaitReadable(fd, 100) <= 0) continue;
    char buf[256];
    ssize_t n = ::read(fd, buf, std::min(sizeof(buf), want - out.size()));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess() { Kill(); }
  // Runs fn in a forked child; its end of a pipe pair is passed in (write end); the parent
  // keeps the read end.
  template <class Fn>
  bool Fork(Fn fn) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(p[0]);
      fn(p[1]);
      ::_exit(0);
    }
    ::close(p[1]);
    out_ = OwnedFd(p[0]);
    return pid_ > 0;
  }
  bool StartBroker(const std::string& socket) {
    return Fork([&](int out) {
      ::dup2(out, STDOUT_FILENO);
      ::execl(BrokerBinary(), BrokerBinary(), "--socket", socket.c_str(), "--ack-timeout-ms",
              "60000", static_cast<char*>(nullptr));
      ::_exit(127);
    }) && ReadWithin(out_.get(), 22) == "sharegpu-broker: ready";
  }
  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    out_.Reset();
  }
  int out() const { return out_.get(); }

 private:
  pid_t pid_ = -1;
  OwnedFd out_;
};

class BrokerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override { fds_before_ = testing::CountOpenFds(); }
  void TearDown() override {
    broker_.Kill();
    EXPECT_EQ(testing::CountOpenFds(), fds_before_) << "descriptor leak";
  }
  std::unique_ptr<BrokerClient> Client(const std::string& name) {
    auto c = BrokerClient::Connect(path_, name, kWaitMs);
    EXPECT_TRUE(c.ok()) << name << ": " << c.status();
    return c.ok() ? std::move(c.value()) : nullptr;
  }
  TempDir dir_;
  std::string path_ = dir_.Sub("broker.sock");
  ChildProcess broker_;
  int fds_before_ = 0;
};

TEST_F(BrokerProcessTest, DaemonHelpAndStatusQuery) {
  std::string help = std::string(BrokerBinary()) + " --help >/dev/null";
  EXPECT_EQ(std::system(help.c_str()), 0);
  std::string none = std::string(BrokerBinary()) + " --status --socket " + path_ + " 2>/dev/null";
  EXPECT_NE(std::system(none.c_str()), 0) << "--status without a broker fails";
  ASSERT_TRUE(broker_.StartBroker(path_));
  auto a = Client("vm-a");
  auto b = Client("vm-b");
  auto mem = NewStorage(kPageSize);
  auto id = a->Export(mem->fd(), kPageSize);
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(a->Grant(*id, "vm-b", kRightRead), kOk);
  ASSERT_TRUE(b->Import(*id).ok());
  std::string cmd = std::string(BrokerBinary()) + " --status --socket " + path_;
  FILE* f = ::popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string text;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof(buf), f)) text.append(buf, n);
  EXPECT_EQ(::pclose(f), 0);
  EXPECT_NE(text.find("name vm-a"), std::string::npos) << text;
  EXPECT_NE(text.find("grants vm-b:ro importers vm-b"), std::string::npos) << text;
  EXPECT_NE(text.find("by vm-b right ro generation 1 state mapped"), std::string::npos) << text;
}

TEST_F(BrokerProcessTest, ExporterKilledRevokesImportersWithEnodev) {
  ASSERT_TRUE(broker_.StartBroker(path_));
  auto b = Client("vm-b");
  std::vector<uint32_t> reasons;
  BrokerClient::Callbacks cb;
  cb.revoked = [&](const WireId&, uint32_t r) { reasons.push_back(r); };
  b->SetCallbacks(cb);
  ChildProcess exporter;
  ASSERT_TRUE(exporter.Fork([&](int out) {
    auto a = BrokerClient::Connect(path_, "vm-a", kWaitMs);
    auto mem = NewStorage(kPageSize, 0x5e);
    if (!a.ok() || !mem) ::_exit(1);
    auto id = (*a)->Export(mem->fd(), kPageSize);
    if (!id.ok() || (*a)->Grant(*id, "vm-b", kRightReadWrite) != kOk) ::_exit(2);
    if (::write(out, id->bytes, sizeof(id->bytes)) != sizeof(id->bytes)) ::_exit(3);
    for (;;) ::pause();  // until SIGKILL
  }));
  std::string bytes = ReadWithin(exporter.out(), sizeof(WireId));
  ASSERT_EQ(bytes.size(), sizeof(WireId));
  WireId id;
  std::memcpy(id.bytes, bytes.data(), sizeof(id.bytes));
  auto imp = b->Import(id);
  ASSERT_TRUE(imp.ok()) << imp.status();
  auto* p = static_cast<uint8_t*>(
      ::mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, imp->fd.get(), 0));
  ASSERT_NE(p, MAP_FAILED);
  EXPECT_EQ(p[0], 0x5e);
  exporter.Kill();  // kill -9 of the exporting VM
  ASSERT_TRUE(DispatchUntil(*b, [&] { return !reasons.empty(); }));
  EXPECT_EQ(reasons[0], kRevokeExporterGone);
  EXPECT_EQ(b->Import(id).status(), -ENODEV);
  EXPECT_EQ(b->Import(id).status(), -ENODEV);
  EXPECT_EQ(p[0], 0x5e) << "pages still mapped stay readable: nothing faults";
  ::munmap(p, kPageSize);
  EXPECT_EQ(b->ReleaseImport(id), kOk);
}

TEST_F(BrokerProcessTest, ImporterKilledCountsAsAcknowledgement) {
  ASSERT_TRUE(broker_.StartBroker(path_));  // ack timeout 60 s: only the death can end it
  auto a = Client("vm-a");
  std::vector<uint32_t> released;
  BrokerClient::Callbacks cb;
  cb.release_ok = [&](const WireId&, uint64_t, uint32_t revoked) { released.push_back(revoked); };
  a->SetCallbacks(cb);
  auto mem = NewStorage(kPageSize), next = NewStorage(kPageSize);
  auto id = a->Export(mem->fd(), kPageSize);
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(a->Grant(*id, "vm-b", kRightRead), kOk);
  ChildProcess importer;
  ASSERT_TRUE(importer.Fork([&](int out) {
    auto b = BrokerClient::Connect(path_, "vm-b", kWaitMs);
    if (!b.ok() || !(*b)->Import(*id).ok()) ::_exit(1);
    if (::write(out, "i", 1) != 1) ::_exit(3);
    for (;;) ::pause();  // never acknowledges
  }));
  ASSERT_EQ(ReadWithin(importer.out(), 1), "i");
  auto mv = a->MoveBegin(*id, next->fd(), kPageSize);
  ASSERT_TRUE(mv.ok());
  EXPECT_EQ(mv->notified, 1u);
  EXPECT_EQ(a->WaitAndDispatch(100), -ETIMEDOUT);
  EXPECT_TRUE(released.empty());
  importer.Kill();
  ASSERT_TRUE(DispatchUntil(*a, [&] { return !released.empty(); }));
  EXPECT_EQ(released[0], 0u);
  auto status = BrokerClient::QueryStatus(path_, kWaitMs);
  ASSERT_TRUE(status.ok());
  EXPECT_NE(status->find("imports: 0"), std::string::npos) << *status;
}

TEST_F(BrokerProcessTest, BrokerKilledAndRestartedPeersReconnect) {
  ASSERT_TRUE(broker_.StartBroker(path_));
  auto a = Client("vm-a"), b = Client("vm-b");
  int a_gone = 0, b_gone = 0;
  std::vector<uint32_t> reasons;
  BrokerClient::Callbacks ca, cbb;
  ca.disconnected = [&] { ++a_gone; };
  cbb.disconnected = [&] { ++b_gone; };
  cbb.revoked = [&](const WireId&, uint32_t r) { reasons.push_back(r); };
  a->SetCallbacks(ca);
  b->SetCallbacks(cbb);
  auto mem = NewStorage(kPageSize, 1);
  auto id = a->Export(mem->fd(), kPageSize);
  ASSERT_EQ(a->Grant(*id, "vm-b", kRightReadWrite), kOk);
  auto imp = b->Import(*id);
  ASSERT_TRUE(imp.ok());
  broker_.Kill();  // kill -9 of the broker
  ASSERT_TRUE(DispatchUntil(*a, [&] { return a_gone > 0; }));
  ASSERT_TRUE(DispatchUntil(*b, [&] { return b_gone > 0; }));
  ASSERT_EQ(reasons.size(), 1u);
  EXPECT_EQ(reasons[0], kRevokeBrokerGone);
  EXPECT_EQ(b->Import(*id).status(), -ENODEV);
  mem->data()[1] = 42;  // each VM's own buffers keep working
  EXPECT_EQ(mem->data()[1], 42);
  // The socket file is stale now; a new broker replaces it and the peers come back.
  ASSERT_TRUE(broker_.StartBroker(path_));
  ASSERT_EQ(a->Reconnect(), kOk);
  ASSERT_EQ(b->Reconnect(), kOk);
  auto id2 = a->Export(mem->fd(), kPageSize);
  ASSERT_TRUE(id2.ok());
  ASSERT_EQ(a->Grant(*id2, "vm-b", kRightRead), kOk);
  auto imp2 = b->Import(*id2);
  ASSERT_TRUE(imp2.ok());
  uint8_t byte = 0;
  ASSERT_EQ(::pread(imp2->fd.get(), &byte, 1, 1), 1);
  EXPECT_EQ(byte, 42);
}

}  // namespace
}  // namespace sharegpu::broker
