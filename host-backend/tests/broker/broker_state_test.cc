// The state machine alone, driven with hand-built packets and a fake clock: every request,
// error and event of docs/broker.md.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <deque>
#include <map>

#include "broker/broker_state.h"
#include "broker_test_util.h"

namespace sharegpu::broker {
namespace {

using testing::DupFd;
using testing::MakePacket;
using testing::NewStorage;
using testing::OneFd;

struct Reply {
  Status status = -999;
  std::vector<uint8_t> body;
  OwnedFd fd;
  template <class T>
  T As() const {
    T v{};
    EXPECT_EQ(body.size(), sizeof(T));
    if (body.size() == sizeof(T)) std::memcpy(&v, body.data(), sizeof(T));
    return v;
  }
};

struct Event {
  MsgType type;
  std::vector<uint8_t> payload;
  template <class T>
  T As() const {
    T v{};
    EXPECT_EQ(payload.size(), sizeof(T));
    if (payload.size() == sizeof(T)) std::memcpy(&v, payload.data(), sizeof(T));
    return v;
  }
};

class BrokerStateTest : public ::testing::Test {
 protected:
  BrokerStateTest() : broker_(Options()) {}
  static BrokerOptions Options() {
    BrokerOptions o;
    o.ack_timeout_ms = 100;
    o.max_exports_per_peer = 4;
    return o;
  }
  void TearDown() override { EXPECT_EQ(broker_.CheckInvariants(), ""); }

  uint64_t Join(const std::string& name) {
    uint64_t id = broker_.AddPeer(PeerCred{1, 1000, 1000});
    HelloReq req{};
    SetName(req.name, name);
    EXPECT_EQ(Send(id, MsgType::kHello, req).status, kOk);
    return id;
  }

  Reply SendRaw(uint64_t peer, std::vector<uint8_t> bytes, std::vector<OwnedFd> fds = {}) {
    Packet p = MakePacket(std::move(bytes), std::move(fds));
    broker_.OnPacket(peer, p, now_);
    return Collect(peer);
  }
  template <class T>
  Reply Send(uint64_t peer, MsgType type, const T& body, std::vector<OwnedFd> fds = {}) {
    return SendRaw(peer, BuildMessage(type, ++seq_, body), std::move(fds));
  }

  // Sorts what the broker queued: the one REPLY for `peer` is returned, the rest kept.
  Reply Collect(uint64_t peer) {
    Reply r;
    int replies = 0;
    for (Outgoing& o : broker_.TakeOutgoing()) {
      MsgHeader h;
      std::memcpy(&h, o.bytes.data(), sizeof(h));
      std::vector<uint8_t> payload(o.bytes.begin() + sizeof(h), o.bytes.end());
      if (h.type == uint16_t(MsgType::kReply) && o.peer == peer) {
        ++replies;
        ReplyHead head;
        std::memcpy(&head, payload.data(), sizeof(head));
        r.status = head.status;
        r.body.assign(payload.begin() + sizeof(head), payload.end());
        r.fd = std::move(o.fd);
      } else {
        events_[o.peer].push_back(Event{static_cast<MsgType>(h.type), payload});
      }
    }
    EXPECT_EQ(replies, peer == 0 ? 0 : 1) << "exactly one reply per request";
    return r;
  }
  std::deque<Event>& EventsOf(uint64_t peer) {
    Collect(0);
    return events_[peer];
  }
  Event Pop(uint64_t peer) {
    auto& q = EventsOf(peer);
    EXPECT_FALSE(q.empty());
    if (q.empty()) return Event{MsgType::kReply, {}};
    Event e = q.front();
    q.pop_front();
    return e;
  }

  WireId Export(uint64_t peer, const Memfd& m) {
    Reply r = Send(peer, MsgType::kExport, ExportReq{{}, m.size(), 0, 0, {}}, OneFd(DupFd(m.fd())));
    EXPECT_EQ(r.status, kOk);
    return r.As<ExportReply>().id;
  }
  Status Grant(uint64_t peer, const WireId& id, const std::string& to, uint32_t right) {
    GrantReq g{id, {}, right, 0};
    SetName(g.peer, to);
    return Send(peer, MsgType::kGrant, g).status;
  }
  Reply Move(uint64_t peer, const WireId& id, const Memfd& next) {
    return Send(peer, MsgType::kMoveBegin, MoveReq{id, next.size()}, OneFd(DupFd(next.fd())));
  }
  // vm-a exports a page read-only to vm-b, which imports it.
  WireId SharedPage(uint64_t a, uint64_t b, const Memfd& mem) {
    WireId id = Export(a, mem);
    EXPECT_EQ(Grant(a, id, "vm-b", kRightRead), kOk);
    EXPECT_EQ(Import(b, id).status, kOk);
    return id;
  }
  Reply Import(uint64_t peer, const WireId& id) {
    return Send(peer, MsgType::kImport, ImportReq{id, 0, 0});
  }

  Clock::time_point now_ = Clock::now();
  Broker broker_;
  uint32_t seq_ = 0;
  std::map<uint64_t, std::deque<Event>> events_;
};

TEST_F(BrokerStateTest, HelloComesFirstAndNamesAreUnique) {
  uint64_t p = broker_.AddPeer(PeerCred{});
  auto mem = NewStorage(kPageSize);
  EXPECT_EQ(Send(p, MsgType::kExport, ExportReq{{}, kPageSize, 0, 0, {}}, OneFd(DupFd(mem->fd()))).status,
            -EPROTO);
  EXPECT_EQ(SendRaw(p, BuildMessage(MsgType::kStatus, 1, nullptr, 0)).status, kOk);
  HelloReq bad{};
  SetName(bad.name, "no spaces");
  EXPECT_EQ(Send(p, MsgType::kHello, bad).status, -EINVAL);
  HelloReq flags{};
  SetName(flags.name, "vm-a");
  flags.flags = 2;  // unknown flag
  EXPECT_EQ(Send(p, MsgType::kHello, flags).status, -EINVAL);
  Join("vm-a");
  HelloReq dup{};
  SetName(dup.name, "vm-a");
  EXPECT_EQ(Send(p, MsgType::kHello, dup).status, -EADDRINUSE);
  SetName(dup.name, "vm-x");
  EXPECT_EQ(Send(p, MsgType::kHello, dup).status, kOk);
  EXPECT_EQ(Send(p, MsgType::kHello, dup).status, -EALREADY);
}

TEST_F(BrokerStateTest, MalformedMessagesAreAnsweredWithTheirError) {
  uint64_t p = Join("vm-a");
  auto mem = NewStorage(kPageSize);
  auto good = BuildMessage(MsgType::kUnexport, 9, IdReq{});
  auto truncated = good;
  truncated.resize(10);
  EXPECT_EQ(SendRaw(p, truncated).status, -EBADMSG);
  auto shortened = good;
  shortened.pop_back();
  EXPECT_EQ(SendRaw(p, shortened).status, -EBADMSG);
  auto version = good;
  version[4] = 9;
  EXPECT_EQ(SendRaw(p, version).status, -EPROTONOSUPPORT);
  Packet big = MakePacket(good);
  big.truncated = true;
  broker_.OnPacket(p, big, now_);
  EXPECT_EQ(Collect(p).status, -EMSGSIZE);
  EXPECT_EQ(SendRaw(p, BuildMessage(static_cast<MsgType>(77), 1, nullptr, 0)).status,
            -EOPNOTSUPP);
  EXPECT_EQ(SendRaw(p, BuildMessage(MsgType::kRevoked, 1, EventRevoked{})).status, -EOPNOTSUPP);
  // Right type, wrong payload size.
  EXPECT_EQ(SendRaw(p, BuildMessage(MsgType::kUnexport, 1, ImportReq{})).status, -EBADMSG);
  // A descriptor where none belongs; a missing one; two where one belongs.
  EXPECT_EQ(Send(p, MsgType::kUnexport, IdReq{}, OneFd(DupFd(mem->fd()))).status,
            -ETOOMANYREFS);
  EXPECT_EQ(Send(p, MsgType::kExport, ExportReq{{}, kPageSize, 0, 0, {}}).status, -EBADF);
  std::vector<OwnedFd> two;
  two.push_back(DupFd(mem->fd()));
  two.push_back(DupFd(mem->fd()));
  EXPECT_EQ(Send(p, MsgType::kExport, ExportReq{{}, kPageSize, 0, 0, {}}, std::move(two)).status,
            -ETOOMANYREFS);
  EXPECT_EQ(Send(p, MsgType::kExport, ExportReq{{}, kPageSize, 1, 0, {}}, OneFd(DupFd(mem->fd()))).status,
            -EINVAL);
  EXPECT_EQ(broker_.export_count(), 0u);
  EXPECT_EQ(broker_.counters().errors, 11u);
}

TEST_F(BrokerStateTest, ImportWithoutGrantIsRefusedAndTheExporterIsToldOnce) {
  uint64_t a = Join("vm-a"), b = Join("vm-b");
  auto mem = NewStorage(kPageSize);
  WireId id = Export(a, *mem);
  EXPECT_EQ(Import(b, id).status, -EACCES);
  EXPECT_EQ(Import(b, id).status, -EACCES);
  auto& ev = EventsOf(a);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, MsgType::kDenied);
  EXPECT_EQ(NameOf(ev[0].As<EventDenied>().peer), "vm-b");
  EXPECT_EQ(broker_.counters().denied, 2u);
  // Forged ids and other peers' exports look the same: -ENOENT.
  EXPECT_EQ(Import(b, RandomId()).status, -ENOENT);
  EXPECT_EQ(Grant(b, id, "vm-b", kRightRead), -ENOENT);
  EXPECT_EQ(Send(b, MsgType::kUnexport, IdReq{id}).status, -ENOENT);
  // Granting yourself, a bad right or name.
  EXPECT_EQ(Grant(a, id, "vm-a", kRightRead), -EINVAL);
  EXPECT_EQ(Grant(a, id, "vm-b", 3), -EINVAL);
  EXPECT_EQ(Grant(a, id, "", kRightRead), -EINVAL);
  EXPECT_EQ(Import(a, id).status, -EINVAL);  // your own export
}

TEST_F(BrokerStateTest, ExportCanGrantInTheSameRoundTrip) {
  uint64_t a = Join("vm-a"), b = Join("vm-b");
  auto mem = NewStorage(kPageSize);
  auto with = [&](const char* name, uint32_t right, const char* junk = nullptr) {
    ExportReq r{{}, kPageSize, 0, right, {}};
    SetName(r.peer, name);
    if (junk) std::memcpy(r.peer + 20, junk, 2);
    return Send(a, MsgType::kExport, r, OneFd(DupFd(mem->fd())));
  };
  EXPECT_EQ(with("vm-b", 3).status, -EINVAL);
  EXPECT_EQ(with("vm-a", kRightRead).status, -EINVAL);  // yourself
  EXPECT_EQ(with("bad name", kRightRead).status, -EINVAL);
  EXPECT_EQ(with("vm-b", 0).status, -EINVAL);  // a name without a right
  EXPECT_EQ(with("", 0, "xx").status, -EINVAL);  // bytes where none belong
  EXPECT_EQ(broker_.export_count(), 0u);
  Reply r = with("vm-b", kRightRead);
  ASSERT_EQ(r.status, kOk);
  EXPECT_EQ(Import(b, r.As<ExportReply>().id).status, kOk);
}

// What a request causes for other peers is queued before the requester's reply, so an id the
// exporter passes on finds the OFFER already in the grantee's socket; a peer's own messages
// keep their order (the reply first, then what followed from it).
TEST_F(BrokerStateTest, OtherPeersHearOfARequestBeforeTheRequesterHearsBack) {
  uint64_t a = Join("vm-a");
  uint64_t b = broker_.AddPeer(PeerCred{1, 1000, 1000});
  HelloReq hello{};
  SetName(hello.name, "vm-b");
  hello.flags = kHelloAcceptOffers;
  ASSERT_EQ(Send(b, MsgType::kHello, hello).status, kOk);
  auto type_of = [](const Outgoing& o) {
    MsgHeader h;
    std::memcpy(&h, o.bytes.data(), sizeof(h));
    return static_cast<MsgType>(h.type);
  };
  auto mem = NewStorage(kPageSize);
  ExportReq req{{}, kPageSize, 0, kRightRead, {}};
  SetName(req.peer, "vm-b");
  Packet p = MakePacket(BuildMessage(MsgType::kExport, ++seq_, req), OneFd(DupFd(mem->fd())));
  broker_.OnPacket(a, p, now_);
  std::vector<Outgoing> out = broker_.TakeOutgoing();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].peer, b);
  EXPECT_EQ(type_of(out[0]), MsgType::kOffer);
  EXPECT_TRUE(out[0].fd.valid());
  EXPECT_EQ(out[1].peer, a);
  EXPECT_EQ(type_of(out[1]), MsgType::kReply);

  // A move of an export nobody imports: the reply, then RELEASE_OK, both to the requester.
  auto alone = NewStorage(kPageSize), next = NewStorage(kPageSize);
  WireId id = Export(a, *alone);
  Packet move = MakePacket(BuildMessage(MsgType::kMoveBegin, ++seq_, MoveReq{id, kPageSize}),
                           OneFd(DupFd(next->fd())));
  broker_.OnPacket(a, move, now_);
  out = broker_.TakeOutgoing();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(type_of(out[0]), MsgType::kReply);
  EXPECT_EQ(type_of(out[1]), MsgType::kReleaseOk);
  EXPECT_EQ(out[1].peer, a);
}

TEST_F(BrokerStateTest, ReadOnlyGrantGivesAReadOnlyDescriptorOfTheSamePages) {
  uint64_t a = Join("vm-a"), b = Join("vm-b"), c = Join("vm-c");
  auto mem = NewStorage(kPageSize, 0x11);
  WireId id = Export(a, *mem);
  ASSERT_EQ(Grant(a, id, "vm-b", kRightRead), kOk);
  ASSERT_EQ(Grant(a, id, "vm-c", kRightReadWrite), kOk);
  Reply rb = Import(b, id);
  ASSERT_EQ(rb.status, kOk);
  auto ib = rb.As<ImportReply>();
  EXPECT_EQ(ib.flags & kImportWritable, 0u);
  EXPECT_EQ(ib.size, kPageSize);
  EXPECT_EQ(ib.generation, 1u);
  EXPECT_EQ(::mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, rb.fd.get(), 0),
            MAP_FAILED);
  EXPECT_EQ(errno, EACCES);
  void* ro = ::mmap(nullptr, kPageSize, PROT_READ, MAP_SHARED, rb.fd.get(), 0);
  ASSERT_NE(ro, MAP_FAILED);
  Reply rc = Import(c, id);
  ASSERT_EQ(rc.status, kOk);
  EXPECT_NE(rc.As<ImportReply>().flags & kImportWritable, 0u);
  auto* rw = static_cast<uint8_t*>(
      ::mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, rc.fd.get(), 0));
  ASSERT_NE(rw, MAP_FAILED);
  rw[5] = 0x77;  // zero copy: the exporter and the read-only importer see it
  EXPECT_EQ(mem->data()[5], 0x77);
  EXPECT_EQ(static_cast<uint8_t*>(ro)[5], 0x77);
  ::munmap(ro, kPageSize);
  ::munmap(rw, kPageSize);
  EXPECT_EQ(broker_.import_count(), 2u);
}

TEST_F(BrokerStateTest, MoveInvalidatesMappedImportersAndReleasesAfterEveryAck) {
  uint64_t a = Join("vm-a"), b = Join("vm-b"), c = Join("vm-c"), d = Join("vm-d");
  auto mem = NewStorage(kPageSize, 1), next = NewStorage(kPageSize, 2);
  WireId id = Export(a, *mem);
  for (const char* n : {"vm-b", "vm-c", "vm-d"}) ASSERT_EQ(Grant(a, id, n, kRightReadWrite), kOk);
  ASSERT_EQ(Import(b, id).status, kOk);
  ASSERT_EQ(Import(c, id).status, kOk);
  // vm-d is granted but never imported: it is not waited for.
  Reply m = Move(a, id, *next);
  ASSERT_EQ(m.status, kOk);
  EXPECT_EQ(m.As<MoveReply>().generation, 2u);
  EXPECT_EQ(m.As<MoveReply>().notified, 2u);
  EXPECT_TRUE(EventsOf(a).empty());
  EXPECT_TRUE(EventsOf(d).empty());
  for (uint64_t p : {b, c}) {
    Event e = Pop(p);
    EXPECT_EQ(e.type, MsgType::kInvalidate);
    EXPECT_EQ(e.As<EventGen>().generation, 2u);
  }
  // A second move waits for the first; an unacknowledged importer may not re-import.
  EXPECT_EQ(Move(a, id, *next).status,
            -EBUSY);
  EXPECT_EQ(Import(b, id).status, -EBUSY);
  EXPECT_EQ(Send(b, MsgType::kAckInvalidate, AckReq{id, 1}).status, -ESTALE);
  EXPECT_EQ(Send(b, MsgType::kAckInvalidate, AckReq{id, 2}).status, kOk);
  EXPECT_EQ(Send(b, MsgType::kAckInvalidate, AckReq{id, 2}).status, -EALREADY);
  EXPECT_TRUE(EventsOf(a).empty()) << "RELEASE_OK before every importer acknowledged";
  EXPECT_EQ(broker_.CheckInvariants(), "");
  EXPECT_EQ(Send(c, MsgType::kAckInvalidate, AckReq{id, 2}).status, kOk);
  Event ok = Pop(a);
  ASSERT_EQ(ok.type, MsgType::kReleaseOk);
  EXPECT_EQ(ok.As<EventReleaseOk>().generation, 2u);
  EXPECT_EQ(ok.As<EventReleaseOk>().revoked, 0u);
  // Lazy re-map: the next import is the new storage.
  Reply again = Import(b, id);
  ASSERT_EQ(again.status, kOk);
  EXPECT_EQ(again.As<ImportReply>().generation, 2u);
  uint8_t byte = 0;
  ASSERT_EQ(::pread(again.fd.get(), &byte, 1, 0), 1);
  EXPECT_EQ(byte, 2);
  // A move nobody has mapped (vm-c acked and did not re-import) completes at once.
  Reply m2 = Move(a, id, *mem);
  EXPECT_EQ(m2.As<MoveReply>().notified, 1u);
  EXPECT_EQ(Pop(b).type, MsgType::kInvalidate);
}

TEST_F(BrokerStateTest, ImporterThatDoesNotAcknowledgeIsRevokedAtTheTimeout) {
  uint64_t a = Join("vm-a"), b = Join("vm-b");
  auto mem = NewStorage(kPageSize), next = NewStorage(kPageSize);
  WireId id = SharedPage(a, b, *mem);
  ASSERT_EQ(Move(a, id, *next).status, kOk);
  ASSERT_TRUE(broker_.NextDeadline().has_value());
  broker_.Tick(now_ + std::chrono::milliseconds(50));
  EXPECT_TRUE(EventsOf(a).empty());
  broker_.Tick(now_ + std::chrono::milliseconds(100));
  Event inv = Pop(b), rev = Pop(b);
  EXPECT_EQ(inv.type, MsgType::kInvalidate);
  ASSERT_EQ(rev.type, MsgType::kRevoked);
  EXPECT_EQ(rev.As<EventRevoked>().reason, kRevokeAckTimeout);
  Event ok = Pop(a);
  ASSERT_EQ(ok.type, MsgType::kReleaseOk);
  EXPECT_EQ(ok.As<EventReleaseOk>().revoked, 1u);
  EXPECT_FALSE(broker_.NextDeadline().has_value());
  EXPECT_EQ(Import(b, id).status, -ENODEV);
  EXPECT_EQ(Send(b, MsgType::kAckInvalidate, AckReq{id, 2}).status, -ENODEV);
  // Releasing the dead import and importing afresh works while the grant stands.
  EXPECT_EQ(Send(b, MsgType::kReleaseImport, IdReq{id}).status, kOk);
  EXPECT_EQ(Import(b, id).status, kOk);
}

TEST_F(BrokerStateTest, UnexportWithdrawAndExporterDeathRevokeImports) {
  uint64_t a = Join("vm-a"), b = Join("vm-b"), c = Join("vm-c");
  auto m1 = NewStorage(kPageSize), m2 = NewStorage(kPageSize), m3 = NewStorage(kPageSize);
  WireId i1 = Export(a, *m1), i2 = Export(a, *m2), i3 = Export(a, *m3);
  for (const WireId& id : {i1, i2, i3}) {
    ASSERT_EQ(Grant(a, id, "vm-b", kRightRead), kOk);
    ASSERT_EQ(Grant(a, id, "vm-c", kRightRead), kOk);
    ASSERT_EQ(Import(b, id).status, kOk);
    ASSERT_EQ(Import(c, id).status, kOk);
  }
  auto reason_of = [&](uint64_t p) {
    Event e = Pop(p);
    EXPECT_EQ(e.type, MsgType::kRevoked);
    return e.As<EventRevoked>().reason;
  };
  ASSERT_EQ(Send(a, MsgType::kUnexport, IdReq{i1}).status, kOk);
  EXPECT_EQ(reason_of(b), kRevokeUnexported);
  EXPECT_EQ(reason_of(c), kRevokeUnexported);
  EXPECT_EQ(Import(b, i1).status, -ENODEV);

  PeerReq w{i2, {}};
  SetName(w.peer, "vm-b");
  ASSERT_EQ(Send(a, MsgType::kWithdraw, w).status, kOk);
  EXPECT_EQ(reason_of(b), kRevokeGrantWithdrawn);
  EXPECT_TRUE(EventsOf(c).empty()) << "only the withdrawn peer is revoked";
  EXPECT_EQ(Send(a, MsgType::kWithdraw, w).status, -ENOENT);
  // Changing a grant's right revokes the import made with the old one.
  ASSERT_EQ(Grant(a, i2, "vm-c", kRightReadWrite), kOk);
  EXPECT_EQ(reason_of(c), kRevokeGrantWithdrawn);

  broker_.RemovePeer(a);  // the exporter's VM died
  EXPECT_EQ(reason_of(b), kRevokeExporterGone);  // i3 (b's i2 was already revoked)
  EXPECT_EQ(reason_of(c), kRevokeExporterGone);  // i3
  EXPECT_EQ(Import(b, i3).status, -ENODEV);
  EXPECT_EQ(Import(c, i3).status, -ENODEV);
  EXPECT_EQ(broker_.export_count(), 0u);
}

TEST_F(BrokerStateTest, ImporterDeathCountsAsItsAcknowledgement) {
  uint64_t a = Join("vm-a"), b = Join("vm-b");
  auto mem = NewStorage(kPageSize), next = NewStorage(kPageSize);
  WireId id = SharedPage(a, b, *mem);
  ASSERT_EQ(Move(a, id, *next).status, kOk);
  broker_.RemovePeer(b);
  Event ok = Pop(a);
  EXPECT_EQ(ok.type, MsgType::kReleaseOk);
  EXPECT_EQ(broker_.import_count(), 0u);
  // The name is free again: the VM may come back.
  uint64_t b2 = Join("vm-b");
  EXPECT_EQ(Import(b2, id).status, kOk);
}

TEST_F(BrokerStateTest, LimitsAreEnforced) {
  uint64_t a = Join("vm-a");
  std::vector<std::unique_ptr<Memfd>> mems;
  for (int i = 0; i < 4; ++i) {
    mems.push_back(NewStorage(kPageSize));
    Export(a, *mems.back());
  }
  mems.push_back(NewStorage(kPageSize));
  EXPECT_EQ(
      Send(a, MsgType::kExport, ExportReq{{}, kPageSize, 0, 0, {}}, OneFd(DupFd(mems[4]->fd()))).status,
      -ENOSPC);
  BrokerOptions small;
  small.max_peers = 1;
  Broker b(small);
  EXPECT_NE(b.AddPeer(PeerCred{}), 0u);
  EXPECT_EQ(b.AddPeer(PeerCred{}), 0u);
}

TEST_F(BrokerStateTest, StatusShowsPeersExportsAndImports) {
  uint64_t a = Join("vm-a"), b = Join("vm-b");
  auto mem = NewStorage(kPageSize);
  WireId id = Export(a, *mem);
  ASSERT_EQ(Grant(a, id, "vm-b", kRightRead), kOk);
  ASSERT_EQ(Import(b, id).status, kOk);
  std::string s = broker_.StatusText();
  EXPECT_NE(s.find("name vm-a"), std::string::npos) << s;
  EXPECT_NE(s.find("export " + IdToString(id) + " owner vm-a"), std::string::npos) << s;
  EXPECT_NE(s.find("grants vm-b:ro importers vm-b"), std::string::npos) << s;
  EXPECT_NE(s.find("import " + IdToString(id) + " by vm-b right ro generation 1 state mapped"),
            std::string::npos)
      << s;
}


// RESERVE_IDS hands out fresh ids that only their holder may EXPORT under, each once.
TEST_F(BrokerStateTest, ReservedIdsAreTheHoldersAndUsedOnce) {
  uint64_t a = Join("vm-a"), b = Join("vm-b");
  Reply r = Send(a, MsgType::kReserveIds, ReserveReq{3, 0});
  ASSERT_EQ(r.status, kOk);
  ASSERT_EQ(r.body.size(), 3 * sizeof(WireId));
  WireId ids[3];
  std::memcpy(ids, r.body.data(), sizeof(ids));
  EXPECT_FALSE(ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2]);
  EXPECT_FALSE(ids[0] == WireId{});
  EXPECT_NE(broker_.StatusText().find("name vm-a pid 1 uid 1000 exports 0 imports 0 reserved 3"),
            std::string::npos);

  auto mem = NewStorage(kPageSize);
  // the export takes the reserved id, and the reply repeats it
  r = Send(a, MsgType::kExport, ExportReq{ids[0], kPageSize, 0, kRightRead, {'v', 'm', '-', 'b'}},
           OneFd(DupFd(mem->fd())));
  ASSERT_EQ(r.status, kOk);
  EXPECT_TRUE(r.As<ExportReply>().id == ids[0]);
  EXPECT_TRUE(broker_.HasExport(ids[0]));
  EXPECT_EQ(Import(b, ids[0]).status, kOk);
  // used up: not again
  EXPECT_EQ(Send(a, MsgType::kExport, ExportReq{ids[0], kPageSize, 0, 0, {}},
                 OneFd(DupFd(mem->fd())))
                .status,
            -EINVAL);
  // not vm-b's to use, nor a made-up one
  EXPECT_EQ(Send(b, MsgType::kExport, ExportReq{ids[1], kPageSize, 0, 0, {}},
                 OneFd(DupFd(mem->fd())))
                .status,
            -EINVAL);
  EXPECT_EQ(Send(a, MsgType::kExport, ExportReq{RandomId(), kPageSize, 0, 0, {}},
                 OneFd(DupFd(mem->fd())))
                .status,
            -EINVAL);
  // a refused EXPORT (bad size) uses its id up too: its sender did not wait to hear
  EXPECT_EQ(Send(a, MsgType::kExport, ExportReq{ids[1], 3 * kPageSize, 0, 0, {}},
                 OneFd(DupFd(mem->fd())))
                .status,
            -EINVAL);
  EXPECT_EQ(Send(a, MsgType::kExport, ExportReq{ids[1], kPageSize, 0, 0, {}},
                 OneFd(DupFd(mem->fd())))
                .status,
            -EINVAL);
  EXPECT_FALSE(broker_.HasExport(ids[1]));
  EXPECT_EQ(broker_.CheckInvariants(), "");
  // the last one dies with its holder's connection
  broker_.RemovePeer(a);
  EXPECT_EQ(broker_.CheckInvariants(), "");
  EXPECT_FALSE(broker_.HasExport(ids[0]));
}

TEST_F(BrokerStateTest, ReserveIdsChecksItsCount) {
  uint64_t a = Join("vm-a");
  EXPECT_EQ(Send(a, MsgType::kReserveIds, ReserveReq{0, 0}).status, -EINVAL);
  EXPECT_EQ(Send(a, MsgType::kReserveIds, ReserveReq{kMaxReservedIds + 1, 0}).status, -EINVAL);
  EXPECT_EQ(Send(a, MsgType::kReserveIds, ReserveReq{1, 1}).status, -EINVAL);
  EXPECT_EQ(Send(a, MsgType::kReserveIds, ReserveReq{kMaxReservedIds - 1, 0}).status, kOk);
  // a peer holds at most kMaxReservedIds unused
  EXPECT_EQ(Send(a, MsgType::kReserveIds, ReserveReq{2, 0}).status, -ENOSPC);
  EXPECT_EQ(Send(a, MsgType::kReserveIds, ReserveReq{1, 0}).status, kOk);
  uint64_t anon = broker_.AddPeer(PeerCred{1, 1000, 1000});  // no HELLO yet
  EXPECT_EQ(Send(anon, MsgType::kReserveIds, ReserveReq{1, 0}).status, -EPROTO);
}

}  // namespace
}  // namespace sharegpu::broker
