#include "broker/broker_client.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <utility>

#include "common/log.h"

namespace sharegpu::broker {
namespace {

Result<OwnedFd> ConnectSocket(const std::string& path) {
  auto addr = UnixAddress(path);
  if (!addr.ok()) return Result<OwnedFd>::Error(addr.status());
  OwnedFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Result<OwnedFd>::Error(-errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr.value()), sizeof(sockaddr_un)) != 0) {
    return Result<OwnedFd>::Error(-errno);
  }
  return fd;
}

// Sends one request on `sock` and waits for its reply; events, and the replies of other
// requests (queued exports, or late ones), that arrive first go to `on_event`. The reply's
// status, body and fd are returned.
Status Roundtrip(int sock, uint32_t seq, MsgType type, const void* body, size_t len, int fd,
                 int timeout_ms, Packet* p, std::vector<uint8_t>* reply_body,
                 OwnedFd* reply_fd, const std::function<void(const MsgHeader&)>& on_event,
                 bool* lost) {
  *lost = false;
  Status st = SendPacket(sock, BuildMessage(type, seq, body, len), fd, false);
  if (st != kOk) {
    *lost = st == -EPIPE || st == -ECONNRESET || st == -ENOTCONN;
    return *lost ? -ENOTCONN : st;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) return -ETIMEDOUT;
    Status r = WaitReadable(sock, static_cast<int>(left.count()));
    if (r < 0) return r;
    if (r == 0) return -ETIMEDOUT;
    r = RecvPacket(sock, p, true);
    if (r == -EAGAIN) continue;
    if (r <= 0) {
      *lost = true;
      return -ENOTCONN;
    }
    MsgHeader hdr{};
    if (CheckHeader(*p, &hdr) != kOk) {
      Logf(LogLevel::kError, "broker client: malformed message from the broker dropped");
      continue;
    }
    if (hdr.type != static_cast<uint16_t>(MsgType::kReply)) {
      on_event(hdr);
      continue;
    }
    if (hdr.length < sizeof(ReplyHead)) continue;
    ReplyHead head;
    std::memcpy(&head, Payload(*p), sizeof(head));
    if (hdr.seq == 0 && head.request_type == 0 && head.status < 0) {
      *lost = true;  // the broker refused the connection (credentials, too many peers)
      return head.status;
    }
    if (hdr.seq != seq) {
      on_event(hdr);
      continue;
    }
    if (head.status == 0) {
      if (reply_body) {
        reply_body->assign(Payload(*p) + sizeof(head), Payload(*p) + hdr.length);
      }
      if (reply_fd && !p->fds.empty()) *reply_fd = std::move(p->fds[0]);
    }
    return head.status;
  }
}

template <class T>
bool BodyAs(const std::vector<uint8_t>& body, T* out) {
  if (body.size() != sizeof(T)) return false;
  std::memcpy(out, body.data(), sizeof(T));
  return true;
}

}  // namespace

BrokerClient::BrokerClient(std::string path, std::string name, uint32_t hello_flags)
    : path_(std::move(path)), name_(std::move(name)), hello_flags_(hello_flags) {}

BrokerClient::~BrokerClient() = default;

Result<std::unique_ptr<BrokerClient>> BrokerClient::Connect(const std::string& path,
                                                            const std::string& name,
                                                            int timeout_ms,
                                                            uint32_t hello_flags) {
  using R = Result<std::unique_ptr<BrokerClient>>;
  if (!ValidName(name) || (hello_flags & ~kHelloAcceptOffers) != 0) return R::Error(-EINVAL);
  std::unique_ptr<BrokerClient> c(new BrokerClient(path, name, hello_flags));
  c->epoll_ = OwnedFd(::epoll_create1(EPOLL_CLOEXEC));
  c->notify_ = OwnedFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!c->epoll_.valid() || !c->notify_.valid()) return R::Error(-errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  if (::epoll_ctl(c->epoll_.get(), EPOLL_CTL_ADD, c->notify_.get(), &ev) != 0) {
    return R::Error(-errno);
  }
  std::lock_guard lock(c->mu_);
  c->timeout_ms_ = timeout_ms;
  if (Status st = c->ConnectLocked(); st != kOk) return R::Error(st);
  return c;
}

Status BrokerClient::ConnectLocked() {
  auto sock = ConnectSocket(path_);
  if (!sock.ok()) return sock.status();
  HelloReq req{};
  SetName(req.name, name_);
  req.flags = hello_flags_;
  std::vector<uint8_t> body;
  bool lost = false;
  Status st = Roundtrip(sock->get(), ++seq_, MsgType::kHello, &req, sizeof(req), -1,
                        timeout_ms_, &packet_, &body, nullptr,
                        [this](const MsgHeader& h) { HandleEventLocked(h, packet_); }, &lost);
  if (st != kOk) return st;
  HelloReply r;
  if (!BodyAs(body, &r)) return -EPROTO;
  peer_id_ = r.peer_id;
  udmabuf_ = r.udmabuf != 0;
  epoll_event ev{};
  ev.events = EPOLLIN;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, sock->get(), &ev) != 0) return -errno;
  sock_ = std::move(sock.value());
  return kOk;
}

Result<std::string> BrokerClient::QueryStatus(const std::string& path, int timeout_ms) {
  auto sock = ConnectSocket(path);
  if (!sock.ok()) return Result<std::string>::Error(sock.status());
  Packet p;
  std::vector<uint8_t> body;
  bool lost = false;
  Status st = Roundtrip(sock->get(), 1, MsgType::kStatus, nullptr, 0, -1, timeout_ms, &p,
                        &body, nullptr, [](const MsgHeader&) {}, &lost);
  if (st != kOk) return Result<std::string>::Error(st);
  return std::string(body.begin(), body.end());
}

void BrokerClient::SetCallbacks(Callbacks callbacks) {
  std::lock_guard lock(cb_mu_);
  callbacks_ = std::move(callbacks);
}

void BrokerClient::set_timeout_ms(int ms) {
  std::lock_guard lock(mu_);
  timeout_ms_ = ms;
}

bool BrokerClient::connected() const {
  std::lock_guard lock(mu_);
  return sock_.valid();
}

uint64_t BrokerClient::peer_id() const {
  std::lock_guard lock(mu_);
  return peer_id_;
}

bool BrokerClient::udmabuf_available() const {
  std::lock_guard lock(mu_);
  return udmabuf_;
}

Status BrokerClient::Reconnect() {
  std::lock_guard lock(mu_);
  if (sock_.valid()) return -EISCONN;
  return ConnectLocked();
}

void BrokerClient::QueueLocked(Event e) {
  events_.push_back(std::move(e));
  if (notified_) return;  // one wake-up per Dispatch is enough
  notified_ = true;
  uint64_t one = 1;
  ssize_t n = ::write(notify_.get(), &one, sizeof(one));
  (void)n;
}

void BrokerClient::HandleEventLocked(const MsgHeader& hdr, Packet& p) {
  Event e{static_cast<MsgType>(hdr.type), {}, 0, 0, {}};
  switch (e.type) {
    case MsgType::kReply: {  // not the reply a request waits for
      auto it = queued_exports_.find(hdr.seq);
      if (it == queued_exports_.end() || hdr.length < sizeof(ReplyHead)) {
        return;  // the late reply of a request that timed out
      }
      ReplyHead head;
      std::memcpy(&head, Payload(p), sizeof(head));
      WireId id = it->second;
      queued_exports_.erase(it);
      if (head.status == 0) return;
      Logf(LogLevel::kWarn, "broker client %s: queued export %s refused: %s", name_.c_str(),
           IdToString(id).c_str(), strerror(-head.status));
      e.type = MsgType::kExport;  // stands for "export failed"
      e.id = id;
      e.value = static_cast<uint32_t>(-head.status);
      QueueLocked(std::move(e));
      return;
    }
    case MsgType::kOffer: {
      if (hdr.length != sizeof(EventOffer) || p.fds.size() != 1) break;
      auto ev = LoadPayload<EventOffer>(p);
      ImportInfo info;
      info.fd = std::move(p.fds[0]);
      info.size = ev.size;
      info.generation = ev.generation;
      info.writable = (ev.flags & kImportWritable) != 0;
      offers_[ev.id] = std::move(info);
      imports_[ev.id] = false;
      unclaimed_.insert(ev.id);
      e.id = ev.id;
      e.generation = ev.size;
      e.value = ev.flags;
      e.peer = NameOf(ev.exporter);
      QueueLocked(std::move(e));
      return;
    }
    case MsgType::kInvalidate: {
      if (hdr.length != sizeof(EventGen)) break;
      auto ev = LoadPayload<EventGen>(p);
      offers_.erase(ev.id);  // an unclaimed offer of the old storage is stale
      e.id = ev.id;
      e.generation = ev.generation;
      QueueLocked(std::move(e));
      return;
    }
    case MsgType::kRevoked: {
      if (hdr.length != sizeof(EventRevoked)) break;
      auto ev = LoadPayload<EventRevoked>(p);
      e.id = ev.id;
      e.value = ev.reason;
      offers_.erase(ev.id);
      if (unclaimed_.erase(ev.id)) {
        // An offer nobody took: nobody would ever release it, and the broker would keep the
        // dead import and count it against our import limit. Released here; the reply is
        // dropped like a late one (a REPLY with another seq). A later Import() asks the
        // broker, which answers as for any export we do not hold (-ENOENT, -EACCES, ...).
        imports_.erase(ev.id);
        IdReq req{ev.id};
        (void)SendPacket(sock_.get(), BuildMessage(MsgType::kReleaseImport, ++seq_, &req,
                                                   sizeof(req)),
                         -1, true);
      } else if (auto it = imports_.find(ev.id); it != imports_.end()) {
        it->second = true;  // at once: from now on Import() answers -ENODEV
      }
      Logf(LogLevel::kInfo, "broker client %s: import %s revoked (reason %u)", name_.c_str(),
           IdToString(ev.id).c_str(), ev.reason);
      QueueLocked(std::move(e));
      return;
    }
    case MsgType::kReleaseOk: {
      if (hdr.length != sizeof(EventReleaseOk)) break;
      auto ev = LoadPayload<EventReleaseOk>(p);
      e.id = ev.id;
      e.generation = ev.generation;
      e.value = ev.revoked;
      QueueLocked(std::move(e));
      return;
    }
    case MsgType::kDenied: {
      if (hdr.length != sizeof(EventDenied)) break;
      auto ev = LoadPayload<EventDenied>(p);
      e.id = ev.id;
      e.peer = NameOf(ev.peer);
      Logf(LogLevel::kWarn, "broker client %s: peer %s was refused import of %s (no grant)",
           name_.c_str(), e.peer.c_str(), IdToString(ev.id).c_str());
      QueueLocked(std::move(e));
      return;
    }
    default: break;
  }
  Logf(LogLevel::kError, "broker client %s: unexpected message type %u dropped", name_.c_str(),
       hdr.type);
}

void BrokerClient::LostConnectionLocked() {
  if (!sock_.valid()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, sock_.get(), nullptr);
  sock_.Reset();
  offers_.clear();
  id_stock_.clear();        // reservations die with the connection
  queued_exports_.clear();  // forgotten like every export
  Logf(LogLevel::kWarn, "broker client %s: connection to the broker lost", name_.c_str());
  for (auto& [id, revoked] : imports_) {
    if (revoked) continue;
    revoked = true;
    QueueLocked(Event{MsgType::kRevoked, id, 0, kRevokeBrokerGone, {}});
  }
  // offers nobody took: nothing to release at a broker that is gone
  for (const WireId& id : unclaimed_) imports_.erase(id);
  unclaimed_.clear();
  QueueLocked(Event{MsgType::kHello, {}, 0, 0, {}});  // stands for "disconnected"
}

Status BrokerClient::RequestLocked(MsgType type, const void* body, size_t len, int fd,
                                   std::vector<uint8_t>* reply_body, OwnedFd* reply_fd) {
  if (!sock_.valid()) return -ENOTCONN;
  bool lost = false;
  Status st = Roundtrip(sock_.get(), ++seq_, type, body, len, fd, timeout_ms_, &packet_,
                        reply_body, reply_fd,
                        [this](const MsgHeader& h) { HandleEventLocked(h, packet_); }, &lost);
  if (lost) LostConnectionLocked();
  return st;
}

Status BrokerClient::Request(MsgType type, const void* body, size_t len, int fd,
                             std::vector<uint8_t>* reply_body, OwnedFd* reply_fd) {
  std::lock_guard lock(mu_);
  return RequestLocked(type, body, len, fd, reply_body, reply_fd);
}

void BrokerClient::DrainLocked() {
  while (sock_.valid()) {
    Status r = RecvPacket(sock_.get(), &packet_, true);
    if (r == -EAGAIN) break;
    if (r <= 0) {
      LostConnectionLocked();
      break;
    }
    MsgHeader hdr{};
    if (CheckHeader(packet_, &hdr) != kOk) continue;  // malformed
    HandleEventLocked(hdr, packet_);
  }
}

Status BrokerClient::Dispatch() {
  std::deque<Event> events;
  {
    std::lock_guard lock(mu_);
    // What the drain below queues is taken here, so it needs no wake-up; the eventfd (not a
    // semaphore: one read resets it) is read only if someone wrote it.
    const bool was_notified = std::exchange(notified_, true);
    DrainLocked();
    events.swap(events_);
    if (was_notified) {
      uint64_t v;
      ssize_t n = ::read(notify_.get(), &v, sizeof(v));
      (void)n;
    }
    notified_ = false;
  }
  std::lock_guard cb_lock(cb_mu_);
  for (const Event& e : events) {
    switch (e.type) {
      case MsgType::kInvalidate:
        if (callbacks_.invalidate) {
          callbacks_.invalidate(e.id, e.generation);
        } else {
          (void)AckInvalidate(e.id, e.generation);
        }
        break;
      case MsgType::kRevoked:
        if (callbacks_.revoked) callbacks_.revoked(e.id, e.value);
        break;
      case MsgType::kReleaseOk:
        if (callbacks_.release_ok) callbacks_.release_ok(e.id, e.generation, e.value);
        break;
      case MsgType::kDenied:
        if (callbacks_.denied) callbacks_.denied(e.id, e.peer);
        break;
      case MsgType::kOffer:
        if (callbacks_.offered) {
          callbacks_.offered(e.id, e.peer, e.generation, (e.value & kImportWritable) != 0);
        }
        break;
      case MsgType::kHello:
        if (callbacks_.disconnected) callbacks_.disconnected();
        break;
      case MsgType::kExport:
        if (callbacks_.export_failed) {
          callbacks_.export_failed(e.id, -static_cast<Status>(e.value));
        }
        break;
      default: break;
    }
  }
  return connected() ? kOk : -ENOTCONN;
}

Status BrokerClient::WaitAndDispatch(int timeout_ms) {
  Status r = WaitReadable(epoll_.get(), timeout_ms);
  if (r < 0) return r;
  if (r == 0) return -ETIMEDOUT;
  return Dispatch();
}

Result<WireId> BrokerClient::Export(int memfd, uint64_t size, const std::string& grant_peer,
                                    uint32_t right) {
  if (memfd < 0) return Result<WireId>::Error(-EBADF);
  if (right != 0 && !ValidName(grant_peer)) return Result<WireId>::Error(-EINVAL);
  ExportReq req{{}, size, 0, right, {}};
  if (right != 0) SetName(req.peer, grant_peer);
  std::vector<uint8_t> body;
  Status st = Request(MsgType::kExport, &req, sizeof(req), memfd, &body);
  if (st != kOk) return Result<WireId>::Error(st);
  ExportReply r;
  if (!BodyAs(body, &r)) return Result<WireId>::Error(-EPROTO);
  return r.id;
}

Status BrokerClient::RefillIdsLocked() {
  ReserveReq req{kIdStock, 0};
  std::vector<uint8_t> body;
  Status st = RequestLocked(MsgType::kReserveIds, &req, sizeof(req), -1, &body, nullptr);
  if (st != kOk) return st;
  if (body.size() != size_t{kIdStock} * sizeof(WireId)) return -EPROTO;
  for (size_t off = 0; off < body.size(); off += sizeof(WireId)) {
    WireId id;
    std::memcpy(&id, body.data() + off, sizeof(id));
    id_stock_.push_back(id);
  }
  return kOk;
}

Result<WireId> BrokerClient::ExportQueued(int memfd, uint64_t size,
                                          const std::string& grant_peer, uint32_t right) {
  using R = Result<WireId>;
  if (memfd < 0) return R::Error(-EBADF);
  if (right != 0 && !ValidName(grant_peer)) return R::Error(-EINVAL);
  std::lock_guard lock(mu_);
  if (!sock_.valid()) return R::Error(-ENOTCONN);
  if (id_stock_.empty()) {
    if (Status st = RefillIdsLocked(); st != kOk) return R::Error(st);
  }
  ExportReq req{id_stock_.back(), size, 0, right, {}};
  if (right != 0) SetName(req.peer, grant_peer);
  id_stock_.pop_back();  // the broker uses it up with this EXPORT, refused or not
  const uint32_t seq = ++seq_;
  Status st = SendPacket(sock_.get(), BuildMessage(MsgType::kExport, seq, &req, sizeof(req)),
                         memfd, false);
  if (st != kOk) {
    if (st == -EPIPE || st == -ECONNRESET || st == -ENOTCONN) {
      LostConnectionLocked();
      return R::Error(-ENOTCONN);
    }
    return R::Error(st);
  }
  queued_exports_[seq] = req.id;
  return req.id;
}

Status BrokerClient::Grant(const WireId& id, const std::string& peer, uint32_t right) {
  if (!ValidName(peer)) return -EINVAL;
  GrantReq req{id, {}, right, 0};
  SetName(req.peer, peer);
  return Request(MsgType::kGrant, &req, sizeof(req));
}

Status BrokerClient::Withdraw(const WireId& id, const std::string& peer) {
  if (!ValidName(peer)) return -EINVAL;
  PeerReq req{id, {}};
  SetName(req.peer, peer);
  return Request(MsgType::kWithdraw, &req, sizeof(req));
}

Status BrokerClient::Unexport(const WireId& id) {
  IdReq req{id};
  return Request(MsgType::kUnexport, &req, sizeof(req));
}

Result<ImportInfo> BrokerClient::Import(const WireId& id, uint32_t flags) {
  using R = Result<ImportInfo>;
  std::lock_guard lock(mu_);
  DrainLocked();  // an OFFER (or a revocation) may be waiting in the socket
  auto it = imports_.find(id);
  if (it != imports_.end() && it->second) return R::Error(-ENODEV);
  auto offer = offers_.find(id);
  if (offer != offers_.end()) {  // imported for us already: no round trip
    ImportInfo info = std::move(offer->second);
    offers_.erase(offer);
    unclaimed_.erase(id);
    return info;
  }
  ImportReq req{id, flags, 0};
  std::vector<uint8_t> body;
  OwnedFd fd;
  Status st = RequestLocked(MsgType::kImport, &req, sizeof(req), -1, &body, &fd);
  if (st == -EACCES) {
    Logf(LogLevel::kWarn, "broker client %s: import of %s refused: no grant", name_.c_str(),
         IdToString(id).c_str());
  }
  if (st == -ENODEV && it != imports_.end()) it->second = true;
  if (st != kOk) return R::Error(st);
  ImportReply r;
  if (!BodyAs(body, &r) || !fd.valid()) return R::Error(-EPROTO);
  imports_[id] = false;
  unclaimed_.erase(id);  // an offer invalidated before it was taken, taken now
  offers_.erase(id);     // one that arrived during the round trip: the same import
  ImportInfo info;
  info.fd = std::move(fd);
  info.size = r.size;
  info.generation = r.generation;
  info.writable = (r.flags & kImportWritable) != 0;
  info.dmabuf = (r.flags & kImportDmabuf) != 0;
  return info;
}

Status BrokerClient::ReleaseImport(const WireId& id) {
  std::lock_guard lock(mu_);
  auto it = imports_.find(id);
  if (it == imports_.end()) return -ENOENT;
  imports_.erase(it);
  offers_.erase(id);
  unclaimed_.erase(id);
  IdReq req{id};
  Status st = RequestLocked(MsgType::kReleaseImport, &req, sizeof(req), -1, nullptr, nullptr);
  // Without a broker there is nothing left to release.
  return st == -ENOTCONN ? kOk : st;
}

Result<MoveReply> BrokerClient::MoveBegin(const WireId& id, int new_memfd, uint64_t size) {
  if (new_memfd < 0) return Result<MoveReply>::Error(-EBADF);
  MoveReq req{id, size};
  std::vector<uint8_t> body;
  Status st = Request(MsgType::kMoveBegin, &req, sizeof(req), new_memfd, &body);
  if (st != kOk) return Result<MoveReply>::Error(st);
  MoveReply r;
  if (!BodyAs(body, &r)) return Result<MoveReply>::Error(-EPROTO);
  return r;
}

Status BrokerClient::AckInvalidate(const WireId& id, uint64_t generation) {
  AckReq req{id, generation};
  return Request(MsgType::kAckInvalidate, &req, sizeof(req));
}

}  // namespace sharegpu::broker
