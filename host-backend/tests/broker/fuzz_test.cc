// Hostile and malformed broker messages, randomized from a seed: truncated, oversized, wrong
// version or magic, inconsistent lengths, unknown and broker-only types, forged and real ids,
// descriptors where none belong (and several where one does), floods that fill the socket,
// abrupt disconnects, mixed with well-formed requests on real exports so that the paths
// behind validation run too. SHAREGPU_BROKER_FUZZ_COUNT messages per case (10^5 in the ASan
// run), SHAREGPU_BROKER_FUZZ_SEED picks the sequence. Nothing may crash, hang, leak memory
// (LeakSanitizer) or leak a descriptor; every request gets exactly one reply.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>
#include <random>

#include "broker/broker_client.h"
#include "broker_test_util.h"

namespace sharegpu::broker {
namespace {

using testing::kWaitMs;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// Descriptors a hostile peer might attach.
struct FdPool {
  std::unique_ptr<Memfd> page = testing::NewStorage(kPageSize);
  std::unique_ptr<Memfd> two_pages = testing::NewStorage(2 * kPageSize);
  OwnedFd unsealed{::memfd_create("unsealed", MFD_CLOEXEC)};
  OwnedFd event{::eventfd(0, EFD_CLOEXEC)};
  OwnedFd pipe_r, pipe_w;
  FdPool() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) == 0) {
      pipe_r = OwnedFd(p[0]);
      pipe_w = OwnedFd(p[1]);
    }
    (void)::ftruncate(unsealed.get(), kPageSize);
  }
  int Pick(std::mt19937_64& rng) const {
    switch (rng() % 6) {
      case 0: return page->fd();
      case 1: return two_pages->fd();
      case 2: return unsealed.get();
      case 3: return event.get();
      case 4: return pipe_r.get();
      default: return page->fd();
    }
  }
};

struct FuzzMsg {
  std::vector<uint8_t> bytes;
  std::vector<int> fds;  // borrowed
  bool header_intact = true;
  bool empty = false;  // a zero-length message: the broker takes it as end of stream
};

class Generator {
 public:
  Generator(uint64_t seed, const FdPool& fds) : rng_(seed), fds_(fds) {}
  std::mt19937_64& rng() { return rng_; }
  void AddId(const WireId& id) {
    if (ids_.size() < 64) {
      ids_.push_back(id);
    } else {
      ids_[rng_() % ids_.size()] = id;
    }
  }

  FuzzMsg Next(uint32_t seq) {
    FuzzMsg m;
    uint64_t kind = rng_() % 100;
    if (kind < 55) {
      Request(seq, &m);
    } else if (kind < 62) {  // truncated anywhere, header included
      Request(seq, &m);
      m.bytes.resize(rng_() % m.bytes.size());
      m.header_intact = m.bytes.size() >= sizeof(MsgHeader);
      if (m.bytes.empty() && m.fds.empty()) m.empty = true;
    } else if (kind < 66) {  // oversized, with a header that claims it all
      size_t n = kMaxMessage + 1 + rng_() % 4096;
      m.bytes.assign(n, static_cast<uint8_t>(rng_()));
      MsgHeader h{kMagic, kVersion, uint16_t(1 + rng_() % 11), uint32_t(n - sizeof(MsgHeader)),
                  seq};
      std::memcpy(m.bytes.data(), &h, sizeof(h));
    } else if (kind < 71) {  // wrong version
      Request(seq, &m);
      uint16_t v = static_cast<uint16_t>(rng_());
      if (v == kVersion) v = 0;
      std::memcpy(m.bytes.data() + 4, &v, 2);
    } else if (kind < 74) {  // bad magic
      Request(seq, &m);
      m.bytes[rng_() % 4] ^= static_cast<uint8_t>(1 + rng_() % 255);
      m.header_intact = false;
    } else if (kind < 79) {  // length field that lies
      Request(seq, &m);
      uint32_t len = static_cast<uint32_t>(rng_() % 2 ? rng_() : rng_() % 128);
      std::memcpy(m.bytes.data() + 8, &len, 4);
    } else if (kind < 84) {  // unknown or broker-only type, random payload
      uint16_t types[] = {0, 11, 63, 64, 65, 66, 67, 68, 999, 0xffff};
      std::vector<uint8_t> junk(rng_() % 80);
      for (auto& b : junk) b = static_cast<uint8_t>(rng_());
      m.bytes = BuildMessage(static_cast<MsgType>(types[rng_() % 10]), seq, junk.data(),
                             junk.size());
    } else if (kind < 90) {  // pure junk (never empty: see `empty`)
      m.bytes.resize(1 + rng_() % 200);
      for (auto& b : m.bytes) b = static_cast<uint8_t>(rng_());
      m.header_intact = false;
    } else {  // descriptors where none belong, or too many
      Request(seq, &m);
      m.fds.clear();
      size_t n = 1 + rng_() % 3;
      for (size_t i = 0; i < n; ++i) m.fds.push_back(fds_.Pick(rng_));
    }
    if (m.header_intact && m.bytes.size() >= sizeof(MsgHeader)) {
      MsgHeader h;
      std::memcpy(&h, m.bytes.data(), sizeof(h));
      m.header_intact = h.seq == seq;
    } else {
      m.header_intact = false;
    }
    return m;
  }

 private:
  WireId Id() {
    if (!ids_.empty() && rng_() % 4 != 0) return ids_[rng_() % ids_.size()];
    return RandomId();  // forged
  }
  void Name(char (&field)[kNameSize]) {
    static const char* kNames[] = {"fz0", "fz1", "fz2", "fz3", "vm-x", "", "bad name",
                                   "x\x01y"};
    std::memset(field, 0, kNameSize);
    uint64_t k = rng_() % 10;
    if (k < 8) {
      std::strncpy(field, kNames[k], kNameSize - 1);
    } else {
      for (auto& c : field) c = static_cast<char>(rng_());  // unterminated garbage
    }
  }
  uint64_t Size() {
    uint64_t sizes[] = {kPageSize, 2 * kPageSize, 0, 1, kPageSize + 1, ~uint64_t{0},
                        kMaxBufferSize + kPageSize};
    return sizes[rng_() % 7];
  }
  uint32_t Small() { return rng_() % 4 == 0 ? static_cast<uint32_t>(rng_()) : rng_() % 3; }
  template <class T>
  void Put(MsgType type, uint32_t seq, const T& body, FuzzMsg* m) {
    m->bytes = BuildMessage(type, seq, body);
  }
  void Request(uint32_t seq, FuzzMsg* m) {
    switch (rng_() % 11) {
      case 0: {
        HelloReq r{};
        Name(r.name);
        r.flags = rng_() % 8 == 0 ? Small() : 0;
        Put(MsgType::kHello, seq, r, m);
        break;
      }
      case 1: {
        // the id: none (the broker picks), or a known or forged one (reserved, if lucky)
        ExportReq r{rng_() % 2 ? WireId{} : Id(), Size(), rng_() % 8 == 0 ? Small() : 0,
                    rng_() % 2 ? Small() : 0, {}};
        if (r.right != 0 || rng_() % 16 == 0) Name(r.peer);
        Put(MsgType::kExport, seq, r, m);
        if (rng_() % 8 != 0) m->fds.push_back(fds_.Pick(rng_));
        break;
      }
      case 2: {
        GrantReq r{Id(), {}, Small(), rng_() % 16 == 0 ? 1u : 0u};
        Name(r.peer);
        Put(MsgType::kGrant, seq, r, m);
        break;
      }
      case 3: {
        PeerReq r{Id(), {}};
        Name(r.peer);
        Put(MsgType::kWithdraw, seq, r, m);
        break;
      }
      case 4: Put(MsgType::kUnexport, seq, IdReq{Id()}, m); break;
      case 5: {
        ImportReq r{Id(), rng_() % 4 == 0 ? Small() : 0, 0};
        Put(MsgType::kImport, seq, r, m);
        break;
      }
      case 6: Put(MsgType::kReleaseImport, seq, IdReq{Id()}, m); break;
      case 7: {
        MoveReq r{Id(), Size()};
        Put(MsgType::kMoveBegin, seq, r, m);
        if (rng_() % 8 != 0) m->fds.push_back(fds_.Pick(rng_));
        break;
      }
      case 8: Put(MsgType::kAckInvalidate, seq, AckReq{Id(), rng_() % 4}, m); break;
      case 9: {
        ReserveReq r{rng_() % 4 == 0 ? Small() : 1 + static_cast<uint32_t>(rng_() % 8),
                     rng_() % 16 == 0 ? 1u : 0u};
        Put(MsgType::kReserveIds, seq, r, m);
        break;
      }
      default: m->bytes = BuildMessage(MsgType::kStatus, seq, nullptr, 0); break;
    }
  }

  std::mt19937_64 rng_;
  const FdPool& fds_;
  std::vector<WireId> ids_;
};

OwnedFd RawConnect(const std::string& path) {
  auto addr = UnixAddress(path);
  OwnedFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!addr.ok() ||
      ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr.value()), sizeof(sockaddr_un))) {
    fd.Reset();
  }
  return fd;
}

// Waits for the next REPLY on sock (events are skipped, their fds closed). 1 with the reply's
// header and status, 0 at end of stream, <0 on error or timeout.
int NextReply(int sock, Packet* p, MsgHeader* hdr, ReplyHead* head) {
  for (;;) {
    Status r = WaitReadable(sock, kWaitMs);
    if (r <= 0) return r == 0 ? -ETIMEDOUT : r;
    r = RecvPacket(sock, p, true);
    if (r == -EAGAIN) continue;
    if (r <= 0) return r;
    if (CheckHeader(*p, hdr) != kOk) return -EBADMSG;  // the broker never sends those
    if (hdr->type != uint16_t(MsgType::kReply)) continue;
    if (hdr->length < sizeof(ReplyHead)) return -EBADMSG;
    std::memcpy(head, Payload(*p), sizeof(*head));
    return 1;
  }
}

TEST(BrokerFuzzTest, HostileMessagesOverTheSocket) {
  const int count = EnvInt("SHAREGPU_BROKER_FUZZ_COUNT", 20000);
  const uint64_t seed = static_cast<uint64_t>(EnvInt("SHAREGPU_BROKER_FUZZ_SEED", 12));
  std::printf("fuzz over the socket: %d messages, seed %llu\n", count,
              static_cast<unsigned long long>(seed));
  const int fds_before = testing::CountOpenFds();
  {
    testing::TempDir dir;
    std::string path = dir.Sub("fuzz.sock");
    BrokerOptions bo;
    bo.ack_timeout_ms = 20;
    bo.max_exports_per_peer = 16;
    bo.max_imports_per_peer = 16;
    auto broker = std::make_unique<testing::ThreadBroker>(path, bo);
    ASSERT_EQ(broker->status(), kOk);
    FdPool pool;
    Generator gen(seed, pool);

    // A well-behaved exporter whose exports the fuzzers may (sometimes) legitimately use.
    auto x = BrokerClient::Connect(path, "vm-x", kWaitMs);
    ASSERT_TRUE(x.ok());
    std::vector<std::unique_ptr<Memfd>> storage;
    std::vector<WireId> exports;
    for (int i = 0; i < 4; ++i) {
      storage.push_back(testing::NewStorage(kPageSize));
      auto id = (*x)->Export(storage.back()->fd(), kPageSize);
      ASSERT_TRUE(id.ok());
      ASSERT_EQ((*x)->Grant(*id, "fz" + std::to_string(i), i % 2 ? kRightRead : kRightReadWrite),
                kOk);
      exports.push_back(*id);
      gen.AddId(*id);
    }

    constexpr int kPeers = 4;
    std::vector<OwnedFd> peers;
    for (int i = 0; i < kPeers; ++i) peers.push_back(RawConnect(path));
    Packet p;
    MsgHeader hdr;
    ReplyHead head;
    uint32_t seq = 0;
    uint64_t replies = 0, floods = 0, reconnects = 0;
    for (int n = 0; n < count;) {
      auto& rng = gen.rng();
      int who = static_cast<int>(rng() % kPeers);
      if (!peers[who].valid()) peers[who] = RawConnect(path);
      ASSERT_TRUE(peers[who].valid());
      int sock = peers[who].get();
      uint64_t action = rng() % 1000;
      if (action == 0) {  // vanish without a word
        peers[who] = RawConnect(path);
        ++reconnects;
        continue;
      }
      if (action == 1) {  // flood: send until the socket is full, then read every reply
        int sent = 0;
        while (n < count && sent < 2000) {
          FuzzMsg m = gen.Next(++seq);
          if (m.empty) continue;
          Status st = SendPacketFds(sock, m.bytes, m.fds, true);
          if (st == -EAGAIN) break;
          ASSERT_EQ(st, kOk);
          ++sent;
          ++n;
        }
        for (int i = 0; i < sent; ++i) {
          ASSERT_EQ(NextReply(sock, &p, &hdr, &head), 1) << "flood reply " << i << "/" << sent;
        }
        replies += static_cast<uint64_t>(sent);
        ++floods;
        continue;
      }
      if (action < 6) {  // the exporter moves and keeps up with its events
        auto next = testing::NewStorage(kPageSize);
        (void)(*x)->MoveBegin(exports[rng() % exports.size()], next->fd(), kPageSize);
      }
      if (action < 30) {
        ASSERT_NE((*x)->Dispatch(), -ENOTCONN);
      }

      FuzzMsg m = gen.Next(++seq);
      ++n;
      ASSERT_EQ(SendPacketFds(sock, m.bytes, m.fds, false), kOk);
      int r = NextReply(sock, &p, &hdr, &head);
      if (m.empty) {  // a zero-length message ends the connection
        ASSERT_EQ(r, 0);
        peers[who] = RawConnect(path);
        continue;
      }
      ASSERT_EQ(r, 1) << "message " << n << " got no reply";
      ++replies;
      // A damaged header's seq field is echoed as received (0 when under 16 bytes came).
      if (m.header_intact) {
        ASSERT_EQ(hdr.seq, seq);
      }
      // Learn the ids the broker hands out, so later messages use them.
      if (head.status == 0 && head.request_type == uint16_t(MsgType::kExport) &&
          hdr.length == sizeof(ReplyHead) + sizeof(ExportReply)) {
        ExportReply er;
        std::memcpy(&er, Payload(p) + sizeof(ReplyHead), sizeof(er));
        gen.AddId(er.id);
      }
      if (head.status == 0 && head.request_type == uint16_t(MsgType::kReserveIds)) {
        for (size_t off = sizeof(ReplyHead); off + sizeof(WireId) <= hdr.length;
             off += sizeof(WireId)) {
          WireId id;
          std::memcpy(&id, Payload(p) + off, sizeof(id));
          gen.AddId(id);  // EXPORTs may use them (or another peer may try to)
        }
      }
    }
    std::printf("fuzz over the socket: %llu replies, %llu floods, %llu reconnects\n",
                static_cast<unsigned long long>(replies), static_cast<unsigned long long>(floods),
                static_cast<unsigned long long>(reconnects));
    EXPECT_TRUE((*x)->connected()) << "the well-behaved exporter was not disconnected";
    auto status = BrokerClient::QueryStatus(path, kWaitMs);
    EXPECT_TRUE(status.ok());
    peers.clear();
    x->reset();
    EXPECT_EQ(broker->StopAndCheckInvariants(), "");
  }
  EXPECT_EQ(testing::CountOpenFds(), fds_before) << "descriptor leak";
}

// The same generator straight into the state machine, with its indexes cross-checked after
// every message and peers dying and the clock moving in between.
TEST(BrokerFuzzTest, HostileMessagesIntoTheStateMachine) {
  const int count = EnvInt("SHAREGPU_BROKER_FUZZ_COUNT", 20000);
  const uint64_t seed = static_cast<uint64_t>(EnvInt("SHAREGPU_BROKER_FUZZ_SEED", 12)) + 1;
  std::printf("fuzz into the state machine: %d messages, seed %llu\n", count,
              static_cast<unsigned long long>(seed));
  const int fds_before = testing::CountOpenFds();
  {
    FdPool pool;
    Generator gen(seed, pool);
    BrokerOptions bo;
    bo.ack_timeout_ms = 5;
    bo.max_exports_per_peer = 8;
    bo.max_imports_per_peer = 8;
    Broker broker(bo);
    auto now = Clock::now();
    std::vector<uint64_t> peers;
    for (int i = 0; i < 5; ++i) peers.push_back(broker.AddPeer(PeerCred{}));
    uint32_t seq = 0;
    for (int n = 0; n < count; ++n) {
      auto& rng = gen.rng();
      size_t who = rng() % peers.size();
      if (rng() % 500 == 0) {
        broker.RemovePeer(peers[who]);
        peers[who] = broker.AddPeer(PeerCred{});
      }
      now += std::chrono::milliseconds(rng() % 3);
      broker.Tick(now);
      FuzzMsg m = gen.Next(++seq);
      Packet p;
      p.bytes = m.bytes;
      p.truncated = m.bytes.size() > kMaxMessage;
      if (p.truncated) p.bytes.resize(kMaxMessage);
      for (int fd : m.fds) p.fds.push_back(testing::DupFd(fd));
      broker.OnPacket(peers[who], p, now);
      int replies = 0;
      for (Outgoing& o : broker.TakeOutgoing()) {
        MsgHeader h;
        ASSERT_GE(o.bytes.size(), sizeof(h));
        std::memcpy(&h, o.bytes.data(), sizeof(h));
        ASSERT_LE(o.bytes.size(), kMaxMessage);
        if (h.type == uint16_t(MsgType::kReply) && o.peer == peers[who]) {
          ++replies;
          ReplyHead head;
          std::memcpy(&head, o.bytes.data() + sizeof(h), sizeof(head));
          if (head.status == 0 && head.request_type == uint16_t(MsgType::kExport)) {
            ExportReply er;
            std::memcpy(&er, o.bytes.data() + sizeof(h) + sizeof(head), sizeof(er));
            gen.AddId(er.id);
          }
        }
      }
      ASSERT_EQ(replies, 1) << "message " << n;
      std::string bad = broker.CheckInvariants();
      ASSERT_EQ(bad, "") << "after message " << n;
    }
    EXPECT_GT(broker.counters().errors, 0u);
    for (uint64_t id : peers) broker.RemovePeer(id);
    EXPECT_EQ(broker.export_count(), 0u);
    EXPECT_EQ(broker.import_count(), 0u);
  }
  EXPECT_EQ(testing::CountOpenFds(), fds_before) << "descriptor leak";
}

}  // namespace
}  // namespace sharegpu::broker
