// The broker's client library (C++; broker-client.h is its C API for QEMU). One connection
// to a broker for one peer (VM). Requests block, with a timeout, until their REPLY arrives;
// events (INVALIDATE, REVOKED, RELEASE_OK, DENIED, and the loss of the connection) are queued
// and delivered through callbacks by Dispatch(), which the owner calls when fd() is readable
// (QEMU: a main-loop fd handler), so that no callback ever runs inside a request.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "broker/broker_protocol.h"
#include "broker/wire.h"
#include "common/owned_fd.h"
#include "common/status.h"
#include "common/thread_annotations.h"

namespace sharegpu::broker {

struct ImportInfo {
  OwnedFd fd;  // a memfd (read-only unless writable), or a udmabuf when dmabuf
  uint64_t size = 0;
  uint64_t generation = 0;
  bool writable = false;
  bool dmabuf = false;
};

class BrokerClient {
 public:
  static constexpr int kDefaultTimeoutMs = 5000;

  struct Callbacks {
    // The import's pages are moving: stop using (unmap) them, then AckInvalidate(id, gen); the
    // next Import() gets the new storage. When unset, Dispatch acknowledges at once.
    std::function<void(const WireId& id, uint64_t generation)> invalidate;
    // The import is dead (RevokeReason); Import() of it fails with -ENODEV from now on.
    std::function<void(const WireId& id, uint32_t reason)> revoked;
    // A move of our export is complete: the storage moved from may be released.
    std::function<void(const WireId& id, uint64_t generation, uint32_t revoked)> release_ok;
    // A peer asked to import our export without a grant (once per peer and export).
    std::function<void(const WireId& id, const std::string& peer)> denied;
    // (Connected with kHelloAcceptOffers) an export was granted to us and imported for us:
    // the next Import(id) returns it without a round trip. An offer never taken by Import() is
    // released by the client when it is revoked (revoked still reports it); Import() of it
    // then asks the broker instead of answering -ENODEV.
    std::function<void(const WireId& id, const std::string& exporter, uint64_t size,
                       bool writable)>
        offered;
    // An ExportQueued() export was refused (status: -errno, as Export() would have returned):
    // it never existed, and requests about it fail with -ENOENT.
    std::function<void(const WireId& id, Status status)> export_failed;
    // The broker connection is gone: every import was revoked (kRevokeBrokerGone, reported
    // through `revoked` first) and every export forgotten. Reconnect() when it is back.
    std::function<void()> disconnected;
  };

  // Connects and says HELLO as `name` (hello_flags: kHelloAcceptOffers or 0). -ENOENT or
  // -ECONNREFUSED (no broker), -EADDRINUSE (name taken), -EACCES (credentials refused),
  // -EINVAL (bad name or flags), -ETIMEDOUT.
  static Result<std::unique_ptr<BrokerClient>> Connect(const std::string& path,
                                                       const std::string& name,
                                                       int timeout_ms = kDefaultTimeoutMs,
                                                       uint32_t hello_flags = 0);
  // The broker's STATUS text, over a connection of its own (no HELLO).
  static Result<std::string> QueryStatus(const std::string& path,
                                         int timeout_ms = kDefaultTimeoutMs);
  ~BrokerClient();
  BrokerClient(const BrokerClient&) = delete;
  BrokerClient& operator=(const BrokerClient&) = delete;

  void SetCallbacks(Callbacks callbacks);
  void set_timeout_ms(int ms);
  // Readable (level-triggered) when Dispatch() has something to do. Stable for the client's
  // lifetime, across Reconnect().
  int fd() const { return epoll_.get(); }
  // Reads what has arrived and runs the callbacks; never blocks. 0 or -ENOTCONN.
  Status Dispatch();
  // Waits up to timeout_ms for fd() to become readable, then Dispatch(). -ETIMEDOUT.
  Status WaitAndDispatch(int timeout_ms);
  bool connected() const;
  // A new connection and HELLO (same path and name) after the broker restarted.
  Status Reconnect();
  uint64_t peer_id() const;
  bool udmabuf_available() const;

  // Exports a sealed memfd (F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL, read-write, `size` bytes),
  // optionally granting `right` to `grant_peer` in the same round trip.
  Result<WireId> Export(int memfd, uint64_t size, const std::string& grant_peer = "",
                        uint32_t right = 0);
  // The same, without waiting for the broker's reply: the export gets an id reserved from
  // the broker ahead (RESERVE_IDS; a round trip only when the client's stock of
  // kIdStock ids is used up), which is returned at once and may be handed on at once: the
  // broker reads the EXPORT before an IMPORT of that id. The reply is consumed later (by any
  // request or Dispatch); a refusal arrives through the export_failed callback. Requests
  // about the export made meanwhile follow it in the broker's order, as after Export().
  // Argument errors (-EBADF, -EINVAL) and a failed send are returned here.
  Result<WireId> ExportQueued(int memfd, uint64_t size, const std::string& grant_peer = "",
                              uint32_t right = 0);
  static constexpr uint32_t kIdStock = 32;
  Status Grant(const WireId& id, const std::string& peer, uint32_t right);
  Status Withdraw(const WireId& id, const std::string& peer);
  Status Unexport(const WireId& id);
  // The current storage of an export we are granted. -ENODEV once the import was revoked
  // (answered locally, without a round trip), -EACCES without a grant, -EBUSY while an
  // invalidation is not acknowledged.
  Result<ImportInfo> Import(const WireId& id, uint32_t flags = 0);
  Status ReleaseImport(const WireId& id);
  // Publishes new storage for our export; importers are invalidated and RELEASE_OK follows
  // when all have acknowledged (or were revoked after the broker's timeout).
  Result<MoveReply> MoveBegin(const WireId& id, int new_memfd, uint64_t size);
  Status AckInvalidate(const WireId& id, uint64_t generation);

 private:
  struct Event {
    MsgType type;
    WireId id{};
    uint64_t generation = 0;  // (OFFER: the size)
    uint32_t value = 0;
    std::string peer;
  };
  BrokerClient(std::string path, std::string name, uint32_t hello_flags);
  void DrainLocked() SGB_REQUIRES(mu_);
  Status ConnectLocked() SGB_REQUIRES(mu_);
  // Reserves kIdStock ids when none are left (a round trip).
  Status RefillIdsLocked() SGB_REQUIRES(mu_);
  Status RequestLocked(MsgType type, const void* body, size_t len, int fd,
                       std::vector<uint8_t>* reply_body, OwnedFd* reply_fd)
      SGB_REQUIRES(mu_);
  Status Request(MsgType type, const void* body, size_t len, int fd = -1,
                 std::vector<uint8_t>* reply_body = nullptr, OwnedFd* reply_fd = nullptr);
  void HandleEventLocked(const MsgHeader& hdr, Packet& p) SGB_REQUIRES(mu_);
  void QueueLocked(Event e) SGB_REQUIRES(mu_);
  void LostConnectionLocked() SGB_REQUIRES(mu_);

  const std::string path_;
  const std::string name_;
  const uint32_t hello_flags_;
  OwnedFd epoll_;
  OwnedFd notify_;  // eventfd: events queued while no socket data is pending
  mutable std::mutex mu_;
  OwnedFd sock_ SGB_GUARDED_BY(mu_);
  int timeout_ms_ SGB_GUARDED_BY(mu_) = kDefaultTimeoutMs;
  uint32_t seq_ SGB_GUARDED_BY(mu_) = 0;
  uint64_t peer_id_ SGB_GUARDED_BY(mu_) = 0;
  bool udmabuf_ SGB_GUARDED_BY(mu_) = false;
  std::deque<Event> events_ SGB_GUARDED_BY(mu_);
  bool notified_ SGB_GUARDED_BY(mu_) = false;  // notify_ written since the last Dispatch
  std::map<WireId, bool> imports_ SGB_GUARDED_BY(mu_);  // id -> revoked
  std::map<WireId, ImportInfo> offers_ SGB_GUARDED_BY(mu_);  // offered, not yet claimed
  // offered and never claimed by Import() (its offer may be gone, invalidated): released by
  // the client itself when revoked
  std::set<WireId> unclaimed_ SGB_GUARDED_BY(mu_);
  std::vector<WireId> id_stock_ SGB_GUARDED_BY(mu_);  // reserved, unused (this connection's)
  std::map<uint32_t, WireId> queued_exports_ SGB_GUARDED_BY(mu_);  // seq -> id, reply due
  Packet packet_ SGB_GUARDED_BY(mu_);
  std::mutex cb_mu_;  // Dispatch runs callbacks under it, so they never run concurrently
  Callbacks callbacks_;
};

}  // namespace sharegpu::broker
