// The event loop, driven one round at a time (RunOnce) so that messages can be queued on
// several connections before the broker reads any of them.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "broker/broker_server.h"
#include "broker_test_util.h"

namespace sharegpu::broker {
namespace {

using testing::kWaitMs;
using testing::NewStorage;
using testing::TempDir;

// A peer speaking the protocol by hand over its own socket.
class RawPeer {
 public:
  RawPeer(BrokerServer& server, const std::string& path) : server_(server) {
    auto addr = UnixAddress(path);
    sock_ = OwnedFd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    EXPECT_TRUE(addr.ok());
    EXPECT_EQ(::connect(sock_.get(), reinterpret_cast<sockaddr*>(&addr.value()),
                        sizeof(sockaddr_un)),
              0);
  }
  Status Send(MsgType type, const void* body, size_t len, int fd = -1) {
    return SendPacket(sock_.get(), BuildMessage(type, ++seq_, body, len), fd, false);
  }
  // The reply to the last request: the broker runs round by round until it arrives.
  Status Reply(std::vector<uint8_t>* body = nullptr, OwnedFd* fd = nullptr) {
    for (int round = 0; round < 100; ++round) {
      while (WaitReadable(sock_.get(), 0) == 1) {
        Packet p;
        if (RecvPacket(sock_.get(), &p, true) != 1) return -EPIPE;
        MsgHeader hdr{};
        if (CheckHeader(p, &hdr) != kOk) return -EBADMSG;
        if (hdr.type != uint16_t(MsgType::kReply) || hdr.seq != seq_) continue;
        auto head = LoadPayload<ReplyHead>(p);
        if (body) body->assign(Payload(p) + sizeof(head), Payload(p) + hdr.length);
        if (fd && !p.fds.empty()) *fd = std::move(p.fds[0]);
        return head.status;
      }
      if (server_.RunOnce(kWaitMs / 100) != kOk) return -EIO;
    }
    return -ETIMEDOUT;
  }
  Status Call(MsgType type, const void* body, size_t len, std::vector<uint8_t>* out = nullptr) {
    Status st = Send(type, body, len);
    return st != kOk ? st : Reply(out);
  }

 private:
  BrokerServer& server_;
  OwnedFd sock_;
  uint32_t seq_ = 0;
};

// An exporter hands a reserved id on without waiting for EXPORT's reply, so the importer's
// IMPORT can reach the broker in the same round as the EXPORT, and be read first (the
// importer connected first: its connection is served first). The broker reads the other
// connections before it answers an IMPORT of an id it does not know.
TEST(BrokerServerTest, ImportOfAnIdWhoseExportIsStillQueuedFindsIt) {
  TempDir dir;
  ServerOptions so;
  so.socket_path = dir.Sub("broker.sock");
  auto server = BrokerServer::Listen(so);
  ASSERT_TRUE(server.ok());
  BrokerServer& s = **server;
  RawPeer b(s, so.socket_path), a(s, so.socket_path);
  HelloReq hello{};
  SetName(hello.name, "vm-b");
  ASSERT_EQ(b.Call(MsgType::kHello, &hello, sizeof(hello)), kOk);
  SetName(hello.name, "vm-a");
  ASSERT_EQ(a.Call(MsgType::kHello, &hello, sizeof(hello)), kOk);
  ReserveReq reserve{2, 0};
  std::vector<uint8_t> ids;
  ASSERT_EQ(a.Call(MsgType::kReserveIds, &reserve, sizeof(reserve), &ids), kOk);
  ASSERT_EQ(ids.size(), 2 * sizeof(WireId));
  auto mem = NewStorage(kPageSize, 0x77);

  for (int i = 0; i < 2; ++i) {
    WireId id;
    std::memcpy(&id, ids.data() + i * sizeof(WireId), sizeof(id));
    ExportReq ex{id, kPageSize, 0, kRightRead, {}};
    SetName(ex.peer, "vm-b");
    ASSERT_EQ(a.Send(MsgType::kExport, &ex, sizeof(ex), mem->fd()), kOk);
    ImportReq im{id, 0, 0};
    ASSERT_EQ(b.Send(MsgType::kImport, &im, sizeof(im)), kOk);
    // both are queued now; vm-b's IMPORT is read first
    EXPECT_FALSE(s.broker().HasExport(id));
    std::vector<uint8_t> body;
    OwnedFd fd;
    ASSERT_EQ(b.Reply(&body, &fd), kOk) << "export " << i;
    ASSERT_TRUE(fd.valid());
    EXPECT_EQ(a.Reply(), kOk);
  }
  EXPECT_EQ(s.broker().CheckInvariants(), "");
  // an id nobody exports is still unknown after the others were read
  ImportReq forged{RandomId(), 0, 0};
  EXPECT_EQ(b.Call(MsgType::kImport, &forged, sizeof(forged)), -ENOENT);
}

}  // namespace
}  // namespace sharegpu::broker
