// The broker's state machine: the one owner of every peer, export, grant and import. It does
// no I/O of its own: the event loop (broker_server.h) feeds it received packets, connection
// events and the time, and sends what TakeOutgoing() returns. Single-threaded by design (the
// loop thread is its only caller), which is what makes "owned in one place" literal.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "broker/broker_protocol.h"
#include "broker/wire.h"
#include "common/owned_fd.h"
#include "common/status.h"

namespace sharegpu::broker {

using Clock = std::chrono::steady_clock;

struct PeerCred {
  int pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
};

// A message for one peer; the fd (if any) goes along with it (SCM_RIGHTS).
struct Outgoing {
  uint64_t peer = 0;
  std::vector<uint8_t> bytes;
  OwnedFd fd;
};

struct BrokerOptions {
  int ack_timeout_ms = 2000;  // an importer that has not acknowledged an invalidation by then
                              // is revoked, and the exporter gets RELEASE_OK
  size_t max_peers = 256;
  size_t max_exports_per_peer = 1024;
  size_t max_imports_per_peer = 1024;
  size_t max_grants_per_export = 64;
  bool allow_udmabuf = true;  // hand out /dev/udmabuf dma-bufs when asked and available
};

struct BrokerCounters {
  uint64_t messages = 0;
  uint64_t errors = 0;  // requests answered with an error
  uint64_t exports = 0;
  uint64_t imports = 0;
  uint64_t denied = 0;
  uint64_t moves = 0;
  uint64_t invalidations = 0;
  uint64_t revocations = 0;
  uint64_t ack_timeouts = 0;
};

class Broker {
 public:
  explicit Broker(BrokerOptions options = {});
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // A new connection whose credentials the loop has checked. Returns its peer id, or 0 when
  // max_peers are connected already.
  uint64_t AddPeer(const PeerCred& cred);
  // The connection closed (or was dropped): its imports are released (counting as
  // acknowledgements of pending invalidations) and its exports revoked.
  void RemovePeer(uint64_t peer);
  // One received packet (any content at all); queues exactly one REPLY, plus events.
  void OnPacket(uint64_t peer, Packet& packet, Clock::time_point now);
  // Revokes importers whose acknowledgement deadline has passed.
  void Tick(Clock::time_point now);
  std::optional<Clock::time_point> NextDeadline() const;
  std::vector<Outgoing> TakeOutgoing();

  std::string StatusText() const;
  const BrokerCounters& counters() const { return counters_; }
  size_t peer_count() const { return peers_.size(); }
  size_t export_count() const { return exports_.size(); }
  size_t import_count() const;
  // Whether `id` names a live export (the event loop asks before an IMPORT: see
  // BrokerServer::ReadFrom).
  bool HasExport(const WireId& id) const { return exports_.count(id) != 0; }
  // Cross-checks every index (importer sets, waiting sets, names, ownership); "" when
  // consistent, else a description. For tests and the fuzzer.
  std::string CheckInvariants() const;

 private:
  enum class ImportState { kMapped, kInvalidating, kIdle, kRevoked };
  struct Import {
    WireId id{};
    uint32_t right = 0;
    uint64_t generation = 0;
    ImportState state = ImportState::kIdle;
  };
  struct Peer {
    uint64_t id = 0;
    PeerCred cred;
    std::string name;  // empty until HELLO
    std::set<WireId> exports;
    std::map<WireId, Import> imports;
    std::set<WireId> reserved;  // RESERVE_IDS handed out, not yet used by an EXPORT
    uint32_t errors_logged = 0;
    bool accepts_offers = false;
  };
  struct Export {
    WireId id{};
    uint64_t owner = 0;
    OwnedFd fd;
    uint64_t size = 0;
    uint64_t generation = 1;
    std::map<std::string, uint32_t> grants;  // peer name -> Right
    std::set<uint64_t> importers;            // peers with a live (not revoked) import
    bool moving = false;
    Clock::time_point deadline{};
    std::set<uint64_t> waiting;  // importers that have not acknowledged the move yet
    uint32_t move_revoked = 0;
    std::set<std::string> denied_told;  // names the exporter has heard about (bounded)
  };

  Status Dispatch(Peer& peer, const MsgHeader& hdr, Packet& p, Clock::time_point now,
                  std::vector<uint8_t>* body, OwnedFd* reply_fd);
  Status Hello(Peer& peer, const HelloReq& req, std::vector<uint8_t>* body);
  Status DoExport(Peer& peer, const ExportReq& req, OwnedFd fd, std::vector<uint8_t>* body);
  Status Grant(Peer& peer, const GrantReq& req);
  Status Withdraw(Peer& peer, const PeerReq& req);
  Status Unexport(Peer& peer, const IdReq& req);
  Status DoImport(Peer& peer, const ImportReq& req, std::vector<uint8_t>* body, OwnedFd* fd);
  Status ReleaseImport(Peer& peer, const IdReq& req);
  Status MoveBegin(Peer& peer, const MoveReq& req, OwnedFd fd, Clock::time_point now,
                   std::vector<uint8_t>* body);
  Status Ack(Peer& peer, const AckReq& req);
  Status Reserve(Peer& peer, const ReserveReq& req, std::vector<uint8_t>* body);
  // A fresh random id: no live export's and nobody's reservation.
  WireId NewId() const;
  // Imports `e` for a peer that accepts offers and sends it the OFFER (no-op otherwise).
  void MaybeOffer(Export& e, const std::string& grantee);
  // Records peer's import of e with `right` (generation current, mapped).
  void RecordImport(Peer& peer, Export& e, uint32_t right);

  Export* OwnedExport(const Peer& peer, const WireId& id);
  Peer* PeerByName(const std::string& name);
  // Kills one import: REVOKED to its peer, out of the export's importer and waiting sets.
  void Revoke(Peer& peer, Import& imp, RevokeReason reason);
  // Revokes every live import of `e` (optionally only those of peer `only`).
  void RevokeImporters(Export& e, RevokeReason reason, const std::string* only_name);
  // Drops `peer` from a move's waiting set; RELEASE_OK when the set is empty.
  void StopWaiting(Export& e, uint64_t peer);
  void MaybeFinishMove(Export& e);
  Result<OwnedFd> ImportFd(const Export& e, uint32_t right, uint32_t flags, uint32_t* out_flags);
  void Send(uint64_t peer, std::vector<uint8_t> bytes, OwnedFd fd = OwnedFd());
  void LogPeerError(Peer& peer, uint16_t type, Status err);
  std::string PeerLabel(const Peer& peer) const;

  BrokerOptions options_;
  uint64_t next_peer_ = 1;
  std::map<uint64_t, Peer> peers_;
  std::map<std::string, uint64_t> names_;
  std::map<WireId, Export> exports_;
  std::map<WireId, uint64_t> reserved_;  // reserved id -> the peer that holds it
  std::vector<Outgoing> out_;
  BrokerCounters counters_;
  int udmabuf_state_ = 0;  // 0 unknown, 1 present, -1 absent
  OwnedFd udmabuf_dev_;
};

// Checks that fd is a memfd sealed F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL (and not sealed
// against writes), opened read-write, of exactly `size` bytes, `size` a page multiple.
// 0, -EINVAL (size 0, unaligned or different), -E2BIG, -EBADF (not a sealable file), -EPERM
// (seals missing or write-sealed), -EACCES (not opened read-write).
Status ValidateStorageFd(int fd, uint64_t size);

}  // namespace sharegpu::broker
