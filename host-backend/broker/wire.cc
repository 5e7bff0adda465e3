#include "broker/wire.h"

#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <cstdio>

namespace sharegpu::broker {

std::string IdToString(const WireId& id) {
  char buf[33];
  for (int i = 0; i < 16; ++i) std::snprintf(buf + 2 * i, 3, "%02x", id.bytes[i]);
  return std::string(buf, 32);
}

bool IdFromString(const std::string& s, WireId* out) {
  if (s.size() != 32) return false;
  for (int i = 0; i < 16; ++i) {
    unsigned v = 0;
    for (int j = 0; j < 2; ++j) {
      char c = s[2 * i + j];
      int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
      if (d < 0) return false;
      v = v * 16 + static_cast<unsigned>(d);
    }
    out->bytes[i] = static_cast<uint8_t>(v);
  }
  return true;
}

std::vector<uint8_t> BuildMessage(MsgType type, uint32_t seq, const void* body, size_t len,
                                  const void* body2, size_t len2) {
  MsgHeader h{kMagic, kVersion, static_cast<uint16_t>(type), static_cast<uint32_t>(len + len2),
              seq};
  std::vector<uint8_t> out(sizeof(h) + len + len2);
  std::memcpy(out.data(), &h, sizeof(h));
  if (len) std::memcpy(out.data() + sizeof(h), body, len);
  if (len2) std::memcpy(out.data() + sizeof(h) + len, body2, len2);
  return out;
}

std::vector<uint8_t> BuildReply(uint16_t request_type, uint32_t seq, Status status,
                                const void* body, size_t len) {
  ReplyHead head{status, request_type, 0};
  return BuildMessage(MsgType::kReply, seq, &head, sizeof(head), status == 0 ? body : nullptr,
                      status == 0 ? len : 0);
}

Result<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Result<sockaddr_un>::Error(-ENAMETOOLONG);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

Status SendPacketFds(int sock, const std::vector<uint8_t>& bytes, std::span<const int> fds,
                     bool dontwait) {
  constexpr size_t kMaxFds = 8;
  if (fds.size() > kMaxFds) return -EINVAL;
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  int flags = MSG_NOSIGNAL | (dontwait ? MSG_DONTWAIT : 0);
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, flags);
    if (n >= 0) return n == static_cast<ssize_t>(bytes.size()) ? kOk : -EMSGSIZE;
    if (errno == EINTR) continue;
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

Status RecvPacket(int sock, Packet* out, bool dontwait) {
  if (!out->scratch) out->scratch.reset(new uint8_t[kMaxMessage]);
  out->bytes.clear();
  out->truncated = false;
  out->fds_truncated = false;
  out->fds.clear();
  iovec iov{out->scratch.get(), kMaxMessage};
  // Room for many descriptors, so that a hostile sender's extra fds are received (and closed
  // by OwnedFd) rather than silently left to the kernel.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 64)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  int flags = MSG_CMSG_CLOEXEC | (dontwait ? MSG_DONTWAIT : 0);
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      out->fds.emplace_back(fd);
    }
  }
  out->truncated = (msg.msg_flags & MSG_TRUNC) != 0;
  out->fds_truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  out->bytes.assign(out->scratch.get(), out->scratch.get() + n);
  // A zero-length read with no descriptors is the end of the stream (SEQPACKET peers cannot
  // send an empty message through this protocol: every message has a header).
  if (n == 0 && out->fds.empty() && !out->truncated) return 0;
  return 1;
}

Status CheckHeader(const Packet& p, MsgHeader* hdr) {
  if (p.bytes.size() >= sizeof(MsgHeader)) std::memcpy(hdr, p.bytes.data(), sizeof(*hdr));
  if (p.truncated) return -EMSGSIZE;
  if (p.bytes.size() < sizeof(MsgHeader)) return -EBADMSG;
  if (hdr->magic != kMagic) return -EBADMSG;
  if (hdr->version != kVersion) return -EPROTONOSUPPORT;
  if (hdr->length != p.bytes.size() - sizeof(MsgHeader)) return -EBADMSG;
  return kOk;
}

WireId RandomId() {
  WireId id;
  size_t got = 0;
  while (got < sizeof(id.bytes)) {
    ssize_t n = ::getrandom(id.bytes + got, sizeof(id.bytes) - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  return id;
}

Status WaitReadable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, timeout_ms);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

}  // namespace sharegpu::broker
