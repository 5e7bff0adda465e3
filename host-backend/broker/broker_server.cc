#include "broker/broker_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"

namespace sharegpu::broker {
namespace {

constexpr int kPacketsPerWake = 32;  // per peer and poll round: fairness under floods

}  // namespace

BrokerServer::BrokerServer(const ServerOptions& options)
    : options_(options), broker_(options.broker) {}

BrokerServer::~BrokerServer() {
  conns_.clear();
  if (listen_.valid()) ::unlink(options_.socket_path.c_str());
}

Result<std::unique_ptr<BrokerServer>> BrokerServer::Listen(const ServerOptions& options) {
  using R = Result<std::unique_ptr<BrokerServer>>;
  auto addr = UnixAddress(options.socket_path);
  if (!addr.ok()) return R::Error(addr.status());
  std::unique_ptr<BrokerServer> s(new BrokerServer(options));
  s->wake_ = OwnedFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->wake_.valid()) return R::Error(-errno);

  struct stat st;
  if (::lstat(options.socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return R::Error(-EEXIST);
    OwnedFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (probe.valid() &&
        ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr.value()),
                  sizeof(sockaddr_un)) == 0) {
      return R::Error(-EADDRINUSE);
    }
    ::unlink(options.socket_path.c_str());  // stale: its broker is gone
  }
  OwnedFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return R::Error(-errno);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr.value()), sizeof(sockaddr_un))) {
    return R::Error(-errno);
  }
  if (::chmod(options.socket_path.c_str(), options.socket_mode) != 0 ||
      ::listen(fd.get(), 64) != 0) {
    Status err = -errno;
    ::unlink(options.socket_path.c_str());
    return R::Error(err);
  }
  s->listen_ = std::move(fd);
  Logf(LogLevel::kInfo, "broker: listening on %s", options.socket_path.c_str());
  return s;
}

void BrokerServer::Stop() {
  stop_.store(true);
  uint64_t one = 1;
  ssize_t n = ::write(wake_.get(), &one, sizeof(one));
  (void)n;
}

bool BrokerServer::UidAllowed(uint32_t uid) const {
  if (uid == 0 || uid == ::geteuid()) return true;
  return std::find(options_.allowed_uids.begin(), options_.allowed_uids.end(), uid) !=
         options_.allowed_uids.end();
}

void BrokerServer::AcceptAll() {
  for (;;) {
    OwnedFd sock(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!sock.valid()) return;  // EAGAIN, or a connection that went away meanwhile
    ucred cred{};
    socklen_t len = sizeof(cred);
    Status refuse = kOk;
    if (::getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      refuse = -EACCES;
    } else if (!UidAllowed(cred.uid)) {
      Logf(LogLevel::kWarn, "broker: refused connection from pid %d uid %u (not allowed)",
           cred.pid, cred.uid);
      refuse = -EACCES;
    }
    uint64_t id = 0;
    if (refuse == kOk) {
      id = broker_.AddPeer(PeerCred{cred.pid, cred.uid, cred.gid});
      if (id == 0) {
        Logf(LogLevel::kWarn, "broker: refused connection from pid %d: too many peers",
             cred.pid);
        refuse = -EUSERS;
      }
    }
    if (refuse != kOk) {
      (void)SendPacket(sock.get(), BuildReply(0, 0, refuse), -1, true);
      continue;
    }
    conns_[id].sock = std::move(sock);
  }
}

// An IMPORT of an id the broker does not know may have overtaken its EXPORT: a peer that
// exports under a reserved id hands the id on (out of band) without waiting for the reply,
// so the EXPORT is in the exporter's socket before the IMPORT was even sent, just not read
// yet. The other connections are read first, so such an IMPORT finds the export.
bool BrokerServer::ImportOfUnknownId(const Packet& p) const {
  MsgHeader hdr{};
  if (CheckHeader(p, &hdr) != kOk || hdr.type != uint16_t(MsgType::kImport) ||
      hdr.length != sizeof(ImportReq)) {
    return false;
  }
  return !broker_.HasExport(LoadPayload<ImportReq>(p).id);
}

// One poll() over the others finds which have something to read: a flood of forged IMPORTs
// costs the broker one system call each, not one per connection.
void BrokerServer::DrainOthers(uint64_t id) {
  std::vector<pollfd> fds;
  std::vector<uint64_t> ids;
  for (auto& [other, oc] : conns_) {
    if (other == id || oc.dead || !oc.queue.empty()) continue;
    fds.push_back({oc.sock.get(), POLLIN, 0});
    ids.push_back(other);
  }
  if (fds.empty() || ::poll(fds.data(), fds.size(), 0) <= 0) return;
  for (size_t i = 0; i < fds.size(); ++i) {
    if (!(fds[i].revents & POLLIN)) continue;
    auto it = conns_.find(ids[i]);
    if (it != conns_.end() && !it->second.dead) ReadFrom(ids[i], it->second);
  }
}

void BrokerServer::ReadFrom(uint64_t id, Conn& c) {
  for (int i = 0; i < kPacketsPerWake && !c.dead; ++i) {
    Status r = RecvPacket(c.sock.get(), &packet_, true);
    if (r == -EAGAIN) return;
    if (r <= 0) {
      c.dead = true;
      return;
    }
    if (!draining_ && ImportOfUnknownId(packet_)) {
      std::swap(packet_, held_);
      draining_ = true;
      DrainOthers(id);
      draining_ = false;
      std::swap(packet_, held_);
      held_.fds.clear();
    }
    broker_.OnPacket(id, packet_, Clock::now());
    packet_.fds.clear();  // any descriptor the state machine did not take is closed here
    Route();
    if (!c.queue.empty()) return;  // back-pressure: answer before reading more
  }
}

void BrokerServer::Route() {
  for (Outgoing& o : broker_.TakeOutgoing()) {
    auto it = conns_.find(o.peer);
    if (it == conns_.end() || it->second.dead) continue;
    Conn& c = it->second;
    c.queue.push_back(std::move(o));
    Flush(it->first, c);
    if (c.queue.size() > options_.max_queued) {
      Logf(LogLevel::kWarn, "broker: peer %llu does not read its messages: disconnected",
           static_cast<unsigned long long>(it->first));
      c.dead = true;
    }
  }
}

void BrokerServer::Flush(uint64_t, Conn& c) {
  while (!c.queue.empty() && !c.dead) {
    Outgoing& o = c.queue.front();
    Status st = SendPacket(c.sock.get(), o.bytes, o.fd.get(), true);
    if (st == -EAGAIN) return;
    if (st != kOk) c.dead = true;
    c.queue.pop_front();
  }
}

void BrokerServer::ReapDead() {
  for (bool again = true; again;) {
    again = false;
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (!it->second.dead) {
        ++it;
        continue;
      }
      uint64_t id = it->first;
      it = conns_.erase(it);
      broker_.RemovePeer(id);
      Route();  // revocations for the others; may mark more peers dead
      again = true;
    }
  }
}

Status BrokerServer::Run() {
  while (!stop_.load()) {
    Status st = RunOnce(-1);
    if (st != kOk) return st;
  }
  return kOk;
}

Status BrokerServer::RunOnce(int timeout_ms) {
  fds_.clear();
  ids_.clear();
  fds_.push_back({listen_.get(), POLLIN, 0});
  fds_.push_back({wake_.get(), POLLIN, 0});
  for (auto& [id, c] : conns_) {
    fds_.push_back({c.sock.get(), static_cast<short>(c.queue.empty() ? POLLIN : POLLOUT), 0});
    ids_.push_back(id);
  }
  int timeout = timeout_ms < 0 ? -1 : timeout_ms;
  if (auto deadline = broker_.NextDeadline()) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
    int until = static_cast<int>(std::clamp<int64_t>(left.count(), 0, 60000));
    timeout = timeout < 0 ? until : std::min(timeout, until);
  }
  int n = ::poll(fds_.data(), fds_.size(), timeout);
  if (n < 0) return errno == EINTR ? kOk : -errno;
  if (fds_[1].revents) {
    uint64_t v;
    ssize_t r = ::read(wake_.get(), &v, sizeof(v));
    (void)r;
  }
  broker_.Tick(Clock::now());
  Route();
  if (fds_[0].revents & POLLIN) AcceptAll();
  for (size_t i = 0; i < ids_.size(); ++i) {
    short rev = fds_[i + 2].revents;
    if (!rev) continue;
    auto it = conns_.find(ids_[i]);
    if (it == conns_.end() || it->second.dead) continue;
    Conn& c = it->second;
    if (rev & POLLOUT) Flush(ids_[i], c);
    if (rev & POLLIN) {
      ReadFrom(ids_[i], c);
    } else if (rev & (POLLHUP | POLLERR | POLLNVAL)) {
      c.dead = true;
    }
  }
  ReapDead();
  return kOk;
}

}  // namespace sharegpu::broker
