// The wire layer: framing checks, descriptors over SEQPACKET, names, ids, storage validation.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include "broker/broker_protocol.h"
#include "broker/broker_state.h"
#include "broker/wire.h"
#include "broker_test_util.h"

namespace sharegpu::broker {
namespace {

using testing::MakePacket;

TEST(BrokerProtocolTest, HeaderChecksNameTheirErrors) {
  MsgHeader h{};
  auto good = BuildMessage(MsgType::kStatus, 7, nullptr, 0);
  EXPECT_EQ(CheckHeader(MakePacket(good), &h), kOk);
  EXPECT_EQ(h.seq, 7u);

  auto shorter = good;
  shorter.resize(sizeof(MsgHeader) - 1);
  EXPECT_EQ(CheckHeader(MakePacket(shorter), &h), -EBADMSG);

  auto magic = good;
  magic[0] ^= 0xff;
  EXPECT_EQ(CheckHeader(MakePacket(magic), &h), -EBADMSG);

  auto version = good;
  version[4] = kVersion + 1;
  EXPECT_EQ(CheckHeader(MakePacket(version), &h), -EPROTONOSUPPORT);

  auto length = good;
  length.push_back(0);  // one byte more than the header says
  EXPECT_EQ(CheckHeader(MakePacket(length), &h), -EBADMSG);

  Packet big = MakePacket(good);
  big.truncated = true;
  EXPECT_EQ(CheckHeader(big, &h), -EMSGSIZE);
}

TEST(BrokerProtocolTest, PacketsCarryOneDescriptorAndExtrasAreReceivedOwned) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  OwnedFd a(sv[0]), b(sv[1]);
  auto mem = testing::NewStorage(kPageSize, 0x5a);
  ASSERT_TRUE(mem);
  auto msg = BuildMessage(MsgType::kExport, 3, ExportReq{{}, kPageSize, 0, 0, {}});
  ASSERT_EQ(SendPacket(a.get(), msg, mem->fd(), false), kOk);
  Packet p;
  ASSERT_EQ(RecvPacket(b.get(), &p, false), 1);
  ASSERT_EQ(p.fds.size(), 1u);
  EXPECT_EQ(ValidateStorageFd(p.fds[0].get(), kPageSize), kOk);
  EXPECT_EQ(p.bytes, msg);

  // Three descriptors in one message are all received (and closed with the packet).
  int fds[3] = {mem->fd(), mem->fd(), mem->fd()};
  ASSERT_EQ(SendPacketFds(a.get(), msg, fds, false), kOk);
  ASSERT_EQ(RecvPacket(b.get(), &p, false), 1);
  EXPECT_EQ(p.fds.size(), 3u);

  // Oversized: the receiver sees the truncation.
  std::vector<uint8_t> huge(kMaxMessage + 100, 0);
  ASSERT_EQ(SendPacket(a.get(), huge, -1, false), kOk);
  ASSERT_EQ(RecvPacket(b.get(), &p, false), 1);
  EXPECT_TRUE(p.truncated);

  a.Reset();
  EXPECT_EQ(RecvPacket(b.get(), &p, false), 0);  // end of stream
}

TEST(BrokerProtocolTest, NamesAreValidated) {
  EXPECT_TRUE(ValidName(std::string("vm-a.0_B")));
  EXPECT_FALSE(ValidName(std::string("")));
  EXPECT_FALSE(ValidName(std::string(32, 'a')));
  EXPECT_TRUE(ValidName(std::string(31, 'a')));
  EXPECT_FALSE(ValidName(std::string("a b")));
  EXPECT_FALSE(ValidName(std::string("a/b")));
  char field[kNameSize] = {'a', 0, 'b'};  // bytes after the NUL must be NUL
  EXPECT_FALSE(ValidName(field));
}

TEST(BrokerProtocolTest, IdsAreRandomAndRoundTripAsHex) {
  WireId a = RandomId(), b = RandomId();
  EXPECT_FALSE(a == b);
  WireId back;
  ASSERT_TRUE(IdFromString(IdToString(a), &back));
  EXPECT_TRUE(back == a);
  EXPECT_FALSE(IdFromString("xyz", &back));
  EXPECT_FALSE(IdFromString(std::string(32, 'g'), &back));
}

TEST(BrokerProtocolTest, StorageMustBeASealedReadWriteMemfdOfTheDeclaredSize) {
  auto mem = testing::NewStorage(2 * kPageSize);
  ASSERT_TRUE(mem);
  EXPECT_EQ(ValidateStorageFd(mem->fd(), 2 * kPageSize), kOk);
  EXPECT_EQ(ValidateStorageFd(mem->fd(), kPageSize), -EINVAL);
  EXPECT_EQ(ValidateStorageFd(mem->fd(), 0), -EINVAL);
  EXPECT_EQ(ValidateStorageFd(mem->fd(), kPageSize + 1), -EINVAL);
  EXPECT_EQ(ValidateStorageFd(mem->fd(), kMaxBufferSize + kPageSize), -E2BIG);

  OwnedFd unsealed(::memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_EQ(::ftruncate(unsealed.get(), kPageSize), 0);
  EXPECT_EQ(ValidateStorageFd(unsealed.get(), kPageSize), -EPERM);
  ASSERT_EQ(::fcntl(unsealed.get(), F_ADD_SEALS,
                    F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL), 0);
  EXPECT_EQ(ValidateStorageFd(unsealed.get(), kPageSize), -EPERM);  // write-sealed

  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  OwnedFd r(p[0]), w(p[1]);
  EXPECT_EQ(ValidateStorageFd(r.get(), kPageSize), -EBADF);

  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", mem->fd());
  OwnedFd ro(::open(path, O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(ro.valid());
  EXPECT_EQ(ValidateStorageFd(ro.get(), 2 * kPageSize), -EACCES);
}

}  // namespace
}  // namespace sharegpu::broker
