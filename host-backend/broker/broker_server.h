// The broker's event loop: one thread, poll() over the listening socket, a wake-up eventfd
// and every peer connection; it checks each peer's credentials (SO_PEERCRED), feeds packets
// to the state machine (broker_state.h) and sends what it answers, without ever blocking on
// a peer: a peer whose socket is full is not read from until it drains (back-pressure), and
// one that lets more than max_queued messages pile up is disconnected.
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "broker/broker_state.h"
#include "common/owned_fd.h"
#include "common/status.h"

namespace sharegpu::broker {

struct ServerOptions {
  std::string socket_path;
  BrokerOptions broker;
  // Peers are accepted when their uid is the broker's effective uid, root, or listed here.
  std::vector<uint32_t> allowed_uids;
  mode_t socket_mode = 0660;
  size_t max_queued = 4096;  // messages waiting for one peer before it is dropped
};

class BrokerServer {
 public:
  // Binds and listens. A stale socket file (nobody accepting) is replaced; a live broker on
  // the path is -EADDRINUSE; a non-socket file there is -EEXIST.
  static Result<std::unique_ptr<BrokerServer>> Listen(const ServerOptions& options);
  ~BrokerServer();  // closes every connection and unlinks the socket
  BrokerServer(const BrokerServer&) = delete;
  BrokerServer& operator=(const BrokerServer&) = delete;

  // Serves until Stop(). 0, or -errno when poll itself fails.
  Status Run();
  // One round of Run()'s loop: waits up to timeout_ms (-1: no limit; the next ack deadline
  // shortens it) for something to happen, then serves it. For a caller with a loop of its
  // own, and for tests that queue messages on several connections before the broker reads
  // any (a stopped Run() leaves the connections open).
  Status RunOnce(int timeout_ms);
  // From any thread or a signal handler (one write to an eventfd).
  void Stop();
  const std::string& path() const { return options_.socket_path; }
  // The state machine, for tests once Run() has returned (it is the loop thread's alone).
  const Broker& broker() const { return broker_; }

 private:
  struct Conn {
    OwnedFd sock;
    std::deque<Outgoing> queue;
    bool dead = false;
  };
  explicit BrokerServer(const ServerOptions& options);
  void AcceptAll();
  void ReadFrom(uint64_t id, Conn& c);
  bool ImportOfUnknownId(const Packet& p) const;
  // Reads every other connection with something queued (for an IMPORT of an unknown id).
  void DrainOthers(uint64_t id);
  void Route();
  void Flush(uint64_t id, Conn& c);
  void ReapDead();
  bool UidAllowed(uint32_t uid) const;

  ServerOptions options_;
  Broker broker_;
  OwnedFd listen_;
  OwnedFd wake_;
  std::atomic<bool> stop_{false};
  std::map<uint64_t, Conn> conns_;
  std::vector<pollfd> fds_;  // RunOnce's poll set: listen, wake, then conns_ in ids_ order
  std::vector<uint64_t> ids_;
  Packet packet_;
  Packet held_;            // the IMPORT waiting while the other connections are read
  bool draining_ = false;  // reading the others for an IMPORT of an unknown id
};

}  // namespace sharegpu::broker
