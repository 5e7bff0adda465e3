// Moving broker messages over a SOCK_SEQPACKET socket: building them, sending them with at
// most one descriptor, receiving them with every descriptor that came along (owned, so none
// leaks), and checking the header. Shared by the broker and its client library.
#pragma once

#include <sys/un.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "broker/broker_protocol.h"
#include "common/owned_fd.h"
#include "common/status.h"

namespace sharegpu::broker {

// Header + payload, ready for SendPacket. `body2` is appended after `body` (a reply's head and
// body, say).
std::vector<uint8_t> BuildMessage(MsgType type, uint32_t seq, const void* body, size_t len,
                                  const void* body2 = nullptr, size_t len2 = 0);
template <class T>
std::vector<uint8_t> BuildMessage(MsgType type, uint32_t seq, const T& body) {
  static_assert(std::is_trivially_copyable_v<T>);
  return BuildMessage(type, seq, &body, sizeof(body));
}
std::vector<uint8_t> BuildReply(uint16_t request_type, uint32_t seq, Status status,
                                const void* body = nullptr, size_t len = 0);

// One sendmsg with the descriptors in `fds` (at most 8; the protocol itself never sends more
// than one: tests send more). MSG_NOSIGNAL always; `dontwait` adds MSG_DONTWAIT.
// 0 or -errno (-EAGAIN when a non-blocking send would block).
Status SendPacketFds(int sock, const std::vector<uint8_t>& bytes, std::span<const int> fds,
                     bool dontwait);
// The same with one descriptor, or none when fd < 0.
inline Status SendPacket(int sock, const std::vector<uint8_t>& bytes, int fd, bool dontwait) {
  return SendPacketFds(sock, bytes, std::span<const int>(&fd, fd >= 0 ? 1 : 0), dontwait);
}

// The address of a UNIX socket path (-ENAMETOOLONG when empty or too long).
Result<sockaddr_un> UnixAddress(const std::string& path);

struct Packet {
  std::vector<uint8_t> bytes;  // what was received (at most kMaxMessage)
  bool truncated = false;      // the message was larger than kMaxMessage (MSG_TRUNC)
  bool fds_truncated = false;  // descriptors were dropped by the kernel (MSG_CTRUNC)
  std::vector<OwnedFd> fds;    // every descriptor received, close-on-exec
  // RecvPacket's receive buffer (kMaxMessage bytes, allocated once): only what arrived is
  // copied into `bytes`, so a small message costs no 64 KiB clearing.
  std::unique_ptr<uint8_t[]> scratch;
};

// One recvmsg: 1 with a packet, 0 at end of stream, or -errno (-EAGAIN: nothing to read).
Status RecvPacket(int sock, Packet* out, bool dontwait);

// Checks the framing: size, magic, version, length. 0, -EMSGSIZE (truncated), -EBADMSG (short
// or inconsistent length, bad magic) or -EPROTONOSUPPORT (other version). *hdr is filled
// whenever at least a header's worth of bytes arrived.
Status CheckHeader(const Packet& p, MsgHeader* hdr);

// The payload of a packet whose header passed CheckHeader.
inline const uint8_t* Payload(const Packet& p) { return p.bytes.data() + sizeof(MsgHeader); }

template <class T>
T LoadPayload(const Packet& p) {
  T v;
  std::memcpy(&v, Payload(p), sizeof(T));
  return v;
}

// 128 random bits (getrandom).
WireId RandomId();

// Milliseconds to wait for fd to become readable (poll). 1 readable, 0 timed out, -errno.
Status WaitReadable(int fd, int timeout_ms);

}  // namespace sharegpu::broker
