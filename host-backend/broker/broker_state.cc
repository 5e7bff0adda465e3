#include "broker/broker_state.h"

#include <fcntl.h>
#include <linux/udmabuf.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "common/log.h"

namespace sharegpu::broker {
namespace {

constexpr uint32_t kMaxErrorLogsPerPeer = 16;
constexpr size_t kMaxDeniedTold = 64;

const char* RightName(uint32_t right) { return right == kRightReadWrite ? "rw" : "ro"; }

const char* TypeName(uint16_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::kHello: return "HELLO";
    case MsgType::kExport: return "EXPORT";
    case MsgType::kGrant: return "GRANT";
    case MsgType::kWithdraw: return "WITHDRAW";
    case MsgType::kUnexport: return "UNEXPORT";
    case MsgType::kImport: return "IMPORT";
    case MsgType::kReleaseImport: return "RELEASE_IMPORT";
    case MsgType::kMoveBegin: return "MOVE_BEGIN";
    case MsgType::kAckInvalidate: return "ACK_INVALIDATE";
    case MsgType::kStatus: return "STATUS";
    case MsgType::kReserveIds: return "RESERVE_IDS";
    default: return "?";
  }
}

}  // namespace

Status ValidateStorageFd(int fd, uint64_t size) {
  if (size == 0 || size % kPageSize != 0) return -EINVAL;
  if (size > kMaxBufferSize) return -E2BIG;
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) return -EBADF;
  constexpr int kRequired = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
  if ((seals & kRequired) != kRequired) return -EPERM;
  if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) return -EPERM;
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || (fl & O_ACCMODE) != O_RDWR) return -EACCES;
  struct stat st;
  if (::fstat(fd, &st) != 0) return -EBADF;
  if (static_cast<uint64_t>(st.st_size) != size) return -EINVAL;
  return kOk;
}

Broker::Broker(BrokerOptions options) : options_(options) {}

size_t Broker::import_count() const {
  size_t n = 0;
  for (const auto& [id, p] : peers_) n += p.imports.size();
  return n;
}

uint64_t Broker::AddPeer(const PeerCred& cred) {
  if (peers_.size() >= options_.max_peers) return 0;
  uint64_t id = next_peer_++;
  Peer& p = peers_[id];
  p.id = id;
  p.cred = cred;
  return id;
}

std::string Broker::PeerLabel(const Peer& peer) const {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "peer %" PRIu64 " \"%s\" (pid %d)", peer.id,
                peer.name.empty() ? "-" : peer.name.c_str(), peer.cred.pid);
  return buf;
}

void Broker::Send(uint64_t peer, std::vector<uint8_t> bytes, OwnedFd fd) {
  out_.push_back(Outgoing{peer, std::move(bytes), std::move(fd)});
}

std::vector<Outgoing> Broker::TakeOutgoing() { return std::exchange(out_, {}); }

Broker::Export* Broker::OwnedExport(const Peer& peer, const WireId& id) {
  auto it = exports_.find(id);
  // Another peer's export answers exactly like a forged id: existence is not revealed.
  if (it == exports_.end() || it->second.owner != peer.id) return nullptr;
  return &it->second;
}

Broker::Peer* Broker::PeerByName(const std::string& name) {
  auto it = names_.find(name);
  return it == names_.end() ? nullptr : &peers_.at(it->second);
}

void Broker::LogPeerError(Peer& peer, uint16_t type, Status err) {
  ++counters_.errors;
  if (peer.errors_logged > kMaxErrorLogsPerPeer) return;
  if (++peer.errors_logged > kMaxErrorLogsPerPeer) {
    Logf(LogLevel::kWarn, "broker: %s: further request errors not logged",
         PeerLabel(peer).c_str());
    return;
  }
  Logf(LogLevel::kWarn, "broker: %s: %s (type %u) refused: %s", PeerLabel(peer).c_str(),
       TypeName(type), type, strerror(-err));
}

void Broker::OnPacket(uint64_t peer_id, Packet& p, Clock::time_point now) {
  auto pit = peers_.find(peer_id);
  if (pit == peers_.end()) return;
  Peer& peer = pit->second;
  ++counters_.messages;
  MsgHeader hdr{};
  Status st = CheckHeader(p, &hdr);
  bool have_header = p.bytes.size() >= sizeof(MsgHeader);
  uint32_t seq = have_header ? hdr.seq : 0;
  uint16_t type = have_header ? hdr.type : 0;
  // The reply's place in the queue is taken first: events the request causes (RELEASE_OK of
  // a move nobody has mapped, say) follow their reply.
  size_t slot = out_.size();
  out_.push_back(Outgoing{peer_id, {}, OwnedFd()});
  std::vector<uint8_t> body;
  OwnedFd reply_fd;
  if (st == kOk) st = Dispatch(peer, hdr, p, now, &body, &reply_fd);
  if (st != kOk) LogPeerError(peer, type, st);
  out_[slot].bytes = BuildReply(type, seq, st, body.data(), body.size());
  out_[slot].fd = std::move(reply_fd);
  // What the request causes for other peers is sent before the requester hears back: an
  // OFFER is in the grantee's socket before the exporter has the id (so an id passed on out
  // of band finds the offer), and the grantee, the one with work to do, is woken first.
  // Stable: each peer's own messages keep their order.
  std::stable_partition(out_.begin() + static_cast<std::ptrdiff_t>(slot), out_.end(),
                        [peer_id](const Outgoing& o) { return o.peer != peer_id; });
}

Status Broker::Dispatch(Peer& peer, const MsgHeader& hdr, Packet& p, Clock::time_point now,
                        std::vector<uint8_t>* body, OwnedFd* reply_fd) {
  int want = RequestPayloadSize(hdr.type);
  if (want < 0) return -EOPNOTSUPP;
  if (hdr.length != static_cast<uint32_t>(want)) return -EBADMSG;
  size_t fds_wanted = RequestTakesFd(hdr.type) ? 1 : 0;
  if (p.fds_truncated || p.fds.size() > fds_wanted) return -ETOOMANYREFS;
  if (p.fds.size() < fds_wanted) return -EBADF;
  auto type = static_cast<MsgType>(hdr.type);
  if (peer.name.empty() && type != MsgType::kHello && type != MsgType::kStatus) return -EPROTO;
  switch (type) {
    case MsgType::kHello: return Hello(peer, LoadPayload<HelloReq>(p), body);
    case MsgType::kExport:
      return DoExport(peer, LoadPayload<ExportReq>(p), std::move(p.fds[0]), body);
    case MsgType::kGrant: return Grant(peer, LoadPayload<GrantReq>(p));
    case MsgType::kWithdraw: return Withdraw(peer, LoadPayload<PeerReq>(p));
    case MsgType::kUnexport: return Unexport(peer, LoadPayload<IdReq>(p));
    case MsgType::kImport: return DoImport(peer, LoadPayload<ImportReq>(p), body, reply_fd);
    case MsgType::kReleaseImport: return ReleaseImport(peer, LoadPayload<IdReq>(p));
    case MsgType::kMoveBegin:
      return MoveBegin(peer, LoadPayload<MoveReq>(p), std::move(p.fds[0]), now, body);
    case MsgType::kAckInvalidate: return Ack(peer, LoadPayload<AckReq>(p));
    case MsgType::kReserveIds: return Reserve(peer, LoadPayload<ReserveReq>(p), body);
    case MsgType::kStatus: {
      std::string text = StatusText();
      size_t room = kMaxMessage - sizeof(MsgHeader) - sizeof(ReplyHead);
      if (text.size() > room) text = text.substr(0, room - 4) + "...\n";
      body->assign(text.begin(), text.end());
      return kOk;
    }
    default: return -EOPNOTSUPP;
  }
}

Status Broker::Hello(Peer& peer, const HelloReq& req, std::vector<uint8_t>* body) {
  if (!peer.name.empty()) return -EALREADY;
  if ((req.flags & ~kHelloAcceptOffers) != 0 || req.reserved != 0 || !ValidName(req.name)) {
    return -EINVAL;
  }
  std::string name = NameOf(req.name);
  if (names_.count(name)) return -EADDRINUSE;
  peer.name = name;
  peer.accepts_offers = (req.flags & kHelloAcceptOffers) != 0;
  names_[name] = peer.id;
  if (udmabuf_state_ == 0) {
    udmabuf_dev_ = OwnedFd(::open("/dev/udmabuf", O_RDWR | O_CLOEXEC));
    udmabuf_state_ = udmabuf_dev_.valid() ? 1 : -1;
  }
  HelloReply r{peer.id, static_cast<uint32_t>(kMaxMessage),
               options_.allow_udmabuf && udmabuf_state_ == 1 ? 1u : 0u};
  body->resize(sizeof(r));
  std::memcpy(body->data(), &r, sizeof(r));
  Logf(LogLevel::kInfo, "broker: %s connected (uid %u)", PeerLabel(peer).c_str(),
       peer.cred.uid);
  if (peer.accepts_offers) {  // grants made before it connected
    for (auto& [id, e] : exports_) {
      if (e.grants.count(name)) MaybeOffer(e, name);
    }
  }
  return kOk;
}

Status Broker::DoExport(Peer& peer, const ExportReq& req, OwnedFd fd,
                        std::vector<uint8_t>* body) {
  // An id of its own must be one reserved for this peer; the EXPORT uses it up, refused or
  // not (its sender, which did not wait for the reply, has forgotten it already).
  const bool own_id = req.id != WireId{};
  if (own_id) {
    if (!peer.reserved.erase(req.id)) return -EINVAL;
    reserved_.erase(req.id);
  }
  if (req.flags != 0) return -EINVAL;
  // The optional first grant saves the exporter a round trip (export -> grant is the common
  // case); it is checked like GRANT's, and before anything is created.
  std::string grantee;
  if (req.right != 0) {
    if ((req.right != kRightRead && req.right != kRightReadWrite) || !ValidName(req.peer)) {
      return -EINVAL;
    }
    grantee = NameOf(req.peer);
    if (grantee == peer.name || options_.max_grants_per_export == 0) return -EINVAL;
  } else {
    for (char c : req.peer) {
      if (c != '\0') return -EINVAL;
    }
  }
  if (Status st = ValidateStorageFd(fd.get(), req.size); st != kOk) return st;
  if (peer.exports.size() >= options_.max_exports_per_peer) return -ENOSPC;
  const WireId id = own_id ? req.id : NewId();
  Export& e = exports_[id];
  e.id = id;
  e.owner = peer.id;
  e.fd = std::move(fd);
  e.size = req.size;
  if (!grantee.empty()) e.grants[grantee] = req.right;
  peer.exports.insert(id);
  ++counters_.exports;
  ExportReply r{id, e.generation};
  body->resize(sizeof(r));
  std::memcpy(body->data(), &r, sizeof(r));
  if (!grantee.empty()) MaybeOffer(e, grantee);
  return kOk;
}

WireId Broker::NewId() const {
  WireId id = RandomId();
  while (id == WireId{} || exports_.count(id) || reserved_.count(id)) id = RandomId();
  return id;
}

Status Broker::Reserve(Peer& peer, const ReserveReq& req, std::vector<uint8_t>* body) {
  if (req.reserved != 0 || req.count == 0 || req.count > kMaxReservedIds) return -EINVAL;
  if (peer.reserved.size() + req.count > kMaxReservedIds) return -ENOSPC;
  body->resize(size_t{req.count} * sizeof(WireId));
  for (uint32_t i = 0; i < req.count; ++i) {
    WireId id = NewId();
    peer.reserved.insert(id);
    reserved_[id] = peer.id;
    std::memcpy(body->data() + size_t{i} * sizeof(WireId), &id, sizeof(id));
  }
  return kOk;
}

Status Broker::Grant(Peer& peer, const GrantReq& req) {
  if (req.reserved != 0 || (req.right != kRightRead && req.right != kRightReadWrite) ||
      !ValidName(req.peer)) {
    return -EINVAL;
  }
  Export* e = OwnedExport(peer, req.id);
  if (!e) return -ENOENT;
  std::string name = NameOf(req.peer);
  if (name == peer.name) return -EINVAL;
  auto it = e->grants.find(name);
  if (it == e->grants.end()) {
    if (e->grants.size() >= options_.max_grants_per_export) return -ENOSPC;
    e->grants[name] = req.right;
    MaybeOffer(*e, name);
    return kOk;
  }
  if (it->second == req.right) return kOk;
  // A changed right applies to new imports only: the peer's current import (mapped with the
  // old right) is revoked, as a withdrawal would.
  it->second = req.right;
  RevokeImporters(*e, kRevokeGrantWithdrawn, &name);
  return kOk;
}

Status Broker::Withdraw(Peer& peer, const PeerReq& req) {
  if (!ValidName(req.peer)) return -EINVAL;
  Export* e = OwnedExport(peer, req.id);
  if (!e) return -ENOENT;
  std::string name = NameOf(req.peer);
  if (e->grants.erase(name) == 0) return -ENOENT;
  RevokeImporters(*e, kRevokeGrantWithdrawn, &name);
  return kOk;
}

Status Broker::Unexport(Peer& peer, const IdReq& req) {
  Export* e = OwnedExport(peer, req.id);
  if (!e) return -ENOENT;
  e->moving = false;  // an unexport ends a pending move: no RELEASE_OK follows
  e->waiting.clear();
  RevokeImporters(*e, kRevokeUnexported, nullptr);
  peer.exports.erase(req.id);
  exports_.erase(req.id);
  return kOk;
}

Result<OwnedFd> Broker::ImportFd(const Export& e, uint32_t right, uint32_t flags,
                                 uint32_t* out_flags) {
  if (right == kRightReadWrite) {
    *out_flags = kImportWritable;
    if ((flags & kImportWantDmabuf) && options_.allow_udmabuf && udmabuf_state_ == 1) {
      udmabuf_create create{};
      create.memfd = static_cast<uint32_t>(e.fd.get());
      create.flags = UDMABUF_FLAGS_CLOEXEC;
      create.offset = 0;
      create.size = e.size;
      int fd = ::ioctl(udmabuf_dev_.get(), UDMABUF_CREATE, &create);
      if (fd >= 0) {
        *out_flags |= kImportDmabuf;
        return OwnedFd(fd);
      }
      Logf(LogLevel::kWarn, "broker: UDMABUF_CREATE failed (errno %d), handing out the memfd",
           errno);
    }
    return e.fd.Dup();
  }
  // Read-only: a new open file description of the same memfd, O_RDONLY, so that the kernel
  // refuses a shared writable mapping (mmap: EACCES) and writes (EBADF).
  *out_flags = 0;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", e.fd.get());
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Result<OwnedFd>::Error(-errno);
  return OwnedFd(fd);
}

Status Broker::DoImport(Peer& peer, const ImportReq& req, std::vector<uint8_t>* body,
                        OwnedFd* fd) {
  if ((req.flags & ~kImportWantDmabuf) != 0 || req.reserved != 0) return -EINVAL;
  auto iit = peer.imports.find(req.id);
  if (iit != peer.imports.end()) {
    if (iit->second.state == ImportState::kRevoked) return -ENODEV;
    if (iit->second.state == ImportState::kInvalidating) return -EBUSY;
  }
  auto eit = exports_.find(req.id);
  if (eit == exports_.end()) return -ENOENT;
  Export& e = eit->second;
  if (e.owner == peer.id) return -EINVAL;
  auto git = e.grants.find(peer.name);
  if (git == e.grants.end()) {
    ++counters_.denied;
    Peer& owner = peers_.at(e.owner);
    Logf(LogLevel::kWarn, "broker: %s denied import of %s (exported by %s): no grant",
         PeerLabel(peer).c_str(), IdToString(e.id).c_str(), PeerLabel(owner).c_str());
    if (!e.denied_told.count(peer.name) && e.denied_told.size() < kMaxDeniedTold) {
      e.denied_told.insert(peer.name);
      EventDenied ev{e.id, {}};
      SetName(ev.peer, peer.name);
      Send(owner.id, BuildMessage(MsgType::kDenied, 0, ev));
    }
    return -EACCES;
  }
  if (iit == peer.imports.end() && peer.imports.size() >= options_.max_imports_per_peer) {
    return -ENOSPC;
  }
  uint32_t out_flags = 0;
  auto got = ImportFd(e, git->second, req.flags, &out_flags);
  if (!got.ok()) return got.status();
  RecordImport(peer, e, git->second);
  ImportReply r{e.size, e.generation, out_flags, 0};
  body->resize(sizeof(r));
  std::memcpy(body->data(), &r, sizeof(r));
  *fd = std::move(got.value());
  return kOk;
}

void Broker::RecordImport(Peer& peer, Export& e, uint32_t right) {
  Import& imp = peer.imports[e.id];
  imp.id = e.id;
  imp.right = right;
  imp.generation = e.generation;
  imp.state = ImportState::kMapped;
  e.importers.insert(peer.id);
  ++counters_.imports;
}

void Broker::MaybeOffer(Export& e, const std::string& grantee) {
  Peer* p = PeerByName(grantee);
  if (!p || !p->accepts_offers || p->imports.count(e.id) ||
      p->imports.size() >= options_.max_imports_per_peer) {
    return;  // not there, not interested, imported already, or at its limit: it may IMPORT
  }
  uint32_t right = e.grants.at(grantee);
  uint32_t flags = 0;
  auto fd = ImportFd(e, right, 0, &flags);
  if (!fd.ok()) return;
  RecordImport(*p, e, right);
  EventOffer ev{e.id, e.size, e.generation, flags, 0, {}};
  SetName(ev.exporter, peers_.at(e.owner).name);
  Send(p->id, BuildMessage(MsgType::kOffer, 0, ev), std::move(fd.value()));
}

Status Broker::ReleaseImport(Peer& peer, const IdReq& req) {
  auto iit = peer.imports.find(req.id);
  if (iit == peer.imports.end()) return -ENOENT;
  if (iit->second.state != ImportState::kRevoked) {
    Export& e = exports_.at(req.id);
    e.importers.erase(peer.id);
    StopWaiting(e, peer.id);
  }
  peer.imports.erase(iit);
  return kOk;
}

Status Broker::MoveBegin(Peer& peer, const MoveReq& req, OwnedFd fd, Clock::time_point now,
                         std::vector<uint8_t>* body) {
  Export* e = OwnedExport(peer, req.id);
  if (!e) return -ENOENT;
  if (e->moving) return -EBUSY;
  if (req.size != e->size) return -EINVAL;
  if (Status st = ValidateStorageFd(fd.get(), req.size); st != kOk) return st;
  ++counters_.moves;
  e->fd = std::move(fd);  // the new storage: every later IMPORT gets it
  ++e->generation;
  e->moving = true;
  e->deadline = now + std::chrono::milliseconds(options_.ack_timeout_ms);
  e->move_revoked = 0;
  uint32_t notified = 0;
  for (uint64_t pid : e->importers) {
    Import& imp = peers_.at(pid).imports.at(e->id);
    if (imp.state != ImportState::kMapped) continue;  // holds no pages: nothing to stop
    imp.state = ImportState::kInvalidating;
    e->waiting.insert(pid);
    ++notified;
    ++counters_.invalidations;
    Send(pid, BuildMessage(MsgType::kInvalidate, 0, EventGen{e->id, e->generation}));
  }
  MoveReply r{e->generation, notified, 0};
  body->resize(sizeof(r));
  std::memcpy(body->data(), &r, sizeof(r));
  MaybeFinishMove(*e);
  return kOk;
}

Status Broker::Ack(Peer& peer, const AckReq& req) {
  auto iit = peer.imports.find(req.id);
  if (iit == peer.imports.end()) return -ENOENT;
  Import& imp = iit->second;
  if (imp.state == ImportState::kRevoked) return -ENODEV;
  if (imp.state != ImportState::kInvalidating) return -EALREADY;
  Export& e = exports_.at(req.id);
  if (req.generation != e.generation) return -ESTALE;
  imp.state = ImportState::kIdle;
  StopWaiting(e, peer.id);
  return kOk;
}

void Broker::StopWaiting(Export& e, uint64_t peer) {
  if (e.waiting.erase(peer)) MaybeFinishMove(e);
}

void Broker::MaybeFinishMove(Export& e) {
  if (!e.moving || !e.waiting.empty()) return;
  e.moving = false;
  Send(e.owner, BuildMessage(MsgType::kReleaseOk, 0,
                             EventReleaseOk{e.id, e.generation, e.move_revoked, 0}));
}

void Broker::Revoke(Peer& peer, Import& imp, RevokeReason reason) {
  if (imp.state == ImportState::kRevoked) return;
  imp.state = ImportState::kRevoked;
  ++counters_.revocations;
  Send(peer.id, BuildMessage(MsgType::kRevoked, 0, EventRevoked{imp.id, reason, 0}));
  auto eit = exports_.find(imp.id);
  if (eit == exports_.end()) return;
  eit->second.importers.erase(peer.id);
  StopWaiting(eit->second, peer.id);
}

void Broker::RevokeImporters(Export& e, RevokeReason reason, const std::string* only_name) {
  std::vector<uint64_t> victims(e.importers.begin(), e.importers.end());
  for (uint64_t pid : victims) {
    Peer& p = peers_.at(pid);
    if (only_name && p.name != *only_name) continue;
    Revoke(p, p.imports.at(e.id), reason);
  }
}

void Broker::RemovePeer(uint64_t peer_id) {
  auto pit = peers_.find(peer_id);
  if (pit == peers_.end()) return;
  Peer& peer = pit->second;
  // Its imports go away: each counts as an acknowledgement of a pending invalidation.
  for (auto& [id, imp] : peer.imports) {
    if (imp.state == ImportState::kRevoked) continue;
    Export& e = exports_.at(id);
    e.importers.erase(peer_id);
    StopWaiting(e, peer_id);
  }
  peer.imports.clear();
  for (const WireId& id : peer.reserved) reserved_.erase(id);
  peer.reserved.clear();
  // Its exports are revoked everywhere.
  for (const WireId& id : peer.exports) {
    Export& e = exports_.at(id);
    e.moving = false;
    e.waiting.clear();
    RevokeImporters(e, kRevokeExporterGone, nullptr);
    exports_.erase(id);
  }
  if (!peer.name.empty()) {
    names_.erase(peer.name);
    Logf(LogLevel::kInfo, "broker: %s disconnected", PeerLabel(peer).c_str());
  }
  peers_.erase(pit);
  // Nothing more goes to a peer that is gone.
  std::erase_if(out_, [peer_id](const Outgoing& o) { return o.peer == peer_id; });
}

void Broker::Tick(Clock::time_point now) {
  for (auto& [id, e] : exports_) {
    if (!e.moving || now < e.deadline) continue;
    std::vector<uint64_t> late(e.waiting.begin(), e.waiting.end());
    for (uint64_t pid : late) {
      Peer& p = peers_.at(pid);
      Logf(LogLevel::kWarn, "broker: %s did not acknowledge invalidation of %s in %d ms: revoked",
           PeerLabel(p).c_str(), IdToString(e.id).c_str(), options_.ack_timeout_ms);
      ++counters_.ack_timeouts;
      ++e.move_revoked;
      Revoke(p, p.imports.at(e.id), kRevokeAckTimeout);  // finishes the move at the last one
    }
  }
}

std::optional<Clock::time_point> Broker::NextDeadline() const {
  std::optional<Clock::time_point> next;
  for (const auto& [id, e] : exports_) {
    if (e.moving && (!next || e.deadline < *next)) next = e.deadline;
  }
  return next;
}

std::string Broker::StatusText() const {
  std::string s;
  char line[512];
  auto add = [&](const char* fmt, auto... args) {
    std::snprintf(line, sizeof(line), fmt, args...);
    s += line;
  };
  add("sharegpu-broker: protocol %u, pid %d, udmabuf %s, ack timeout %d ms\n", kVersion,
      static_cast<int>(::getpid()),
      udmabuf_state_ == 1 ? "yes" : udmabuf_state_ == -1 ? "no" : "unknown",
      options_.ack_timeout_ms);
  add("peers: %zu\n", peers_.size());
  for (const auto& [id, p] : peers_) {
    add("  peer %" PRIu64 " name %s pid %d uid %u exports %zu imports %zu reserved %zu\n", id,
        p.name.empty() ? "-" : p.name.c_str(), p.cred.pid, p.cred.uid, p.exports.size(),
        p.imports.size(), p.reserved.size());
  }
  add("exports: %zu\n", exports_.size());
  for (const auto& [id, e] : exports_) {
    std::string grants, importers;
    for (const auto& [name, right] : e.grants) grants += " " + name + ":" + RightName(right);
    for (uint64_t pid : e.importers) importers += " " + peers_.at(pid).name;
    add("  export %s owner %s size %" PRIu64 " generation %" PRIu64
        " moving %s waiting %zu grants%s importers%s\n",
        IdToString(id).c_str(), peers_.at(e.owner).name.c_str(), e.size, e.generation,
        e.moving ? "yes" : "no", e.waiting.size(), grants.empty() ? " -" : grants.c_str(),
        importers.empty() ? " -" : importers.c_str());
  }
  add("imports: %zu\n", import_count());
  static const char* kStates[] = {"mapped", "invalidating", "idle", "revoked"};
  for (const auto& [pid, p] : peers_) {
    for (const auto& [id, imp] : p.imports) {
      add("  import %s by %s right %s generation %" PRIu64 " state %s\n",
          IdToString(id).c_str(), p.name.c_str(), RightName(imp.right), imp.generation,
          kStates[static_cast<int>(imp.state)]);
    }
  }
  add("counters: messages %" PRIu64 " errors %" PRIu64 " exports %" PRIu64 " imports %" PRIu64
      " denied %" PRIu64 " moves %" PRIu64 " invalidations %" PRIu64 " revocations %" PRIu64
      " ack-timeouts %" PRIu64 "\n",
      counters_.messages, counters_.errors, counters_.exports, counters_.imports,
      counters_.denied, counters_.moves, counters_.invalidations, counters_.revocations,
      counters_.ack_timeouts);
  return s;
}

std::string Broker::CheckInvariants() const {
  for (const auto& [name, pid] : names_) {
    auto it = peers_.find(pid);
    if (it == peers_.end() || it->second.name != name) return "name table out of sync";
  }
  size_t reserved = 0;
  for (const auto& [pid, p] : peers_) {
    reserved += p.reserved.size();
    for (const WireId& id : p.reserved) {
      auto it = reserved_.find(id);
      if (it == reserved_.end() || it->second != pid) return "reservation table out of sync";
      if (exports_.count(id)) return "a reserved id names an export";
    }
    for (const WireId& id : p.exports) {
      auto it = exports_.find(id);
      if (it == exports_.end() || it->second.owner != pid) return "peer lists a foreign export";
    }
    for (const auto& [id, imp] : p.imports) {
      if (imp.state == ImportState::kRevoked) continue;
      auto it = exports_.find(id);
      if (it == exports_.end()) return "live import of a missing export";
      if (!it->second.importers.count(pid)) return "live import missing from importer set";
      bool waits = it->second.waiting.count(pid) != 0;
      if (waits != (imp.state == ImportState::kInvalidating)) return "waiting set out of sync";
    }
  }
  if (reserved != reserved_.size()) return "reservation held by nobody";
  for (const auto& [id, e] : exports_) {
    auto o = peers_.find(e.owner);
    if (o == peers_.end() || !o->second.exports.count(id)) return "export without owner";
    if (!e.moving && !e.waiting.empty()) return "waiting without a move";
    for (uint64_t pid : e.importers) {
      auto p = peers_.find(pid);
      if (p == peers_.end()) return "importer gone";
      auto imp = p->second.imports.find(id);
      if (imp == p->second.imports.end() || imp->second.state == ImportState::kRevoked) {
        return "importer set lists a dead import";
      }
    }
  }
  return "";
}

}  // namespace sharegpu::broker
