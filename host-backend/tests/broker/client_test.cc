// The client library against a broker serving on a thread of the test process: zero-copy
// sharing, rights, moves with acknowledgements, revocation, the broker going away, the C API,
// and descriptor counts before and after.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>

#include <atomic>
#include <set>

#include "broker/broker_client.h"
#include "broker_test_util.h"
#include "sharegpu/broker-client.h"

namespace sharegpu::broker {
namespace {

using testing::DispatchUntil;
using testing::kWaitMs;
using testing::NewStorage;
using testing::TempDir;
using testing::ThreadBroker;

struct Mapping {
  uint8_t* p = nullptr;
  size_t size = 0;
  Mapping(int fd, size_t n, bool writable) : size(n) {
    void* v = ::mmap(nullptr, n, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
    p = v == MAP_FAILED ? nullptr : static_cast<uint8_t*>(v);
  }
  ~Mapping() {
    if (p) ::munmap(p, size);
  }
};

// Records the events Dispatch delivers.
struct Recorder {
  std::vector<std::pair<WireId, uint64_t>> invalidations;
  std::vector<std::pair<WireId, uint32_t>> revocations;
  std::vector<std::pair<WireId, uint32_t>> releases;
  std::vector<std::string> denied;
  int disconnects = 0;
  BrokerClient::Callbacks Callbacks(bool record_invalidate = true) {
    BrokerClient::Callbacks cb;
    if (record_invalidate) {
      cb.invalidate = [this](const WireId& id, uint64_t g) { invalidations.push_back({id, g}); };
    }
    cb.revoked = [this](const WireId& id, uint32_t r) { revocations.push_back({id, r}); };
    cb.release_ok = [this](const WireId& id, uint64_t, uint32_t n) {
      releases.push_back({id, n});
    };
    cb.denied = [this](const WireId&, const std::string& peer) { denied.push_back(peer); };
    cb.disconnected = [this] { ++disconnects; };
    return cb;
  }
};

class BrokerClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fds_before_ = testing::CountOpenFds();
    broker_ = std::make_unique<ThreadBroker>(path_, Options());
    ASSERT_EQ(broker_->status(), kOk);
  }
  void TearDown() override {
    broker_.reset();
    EXPECT_EQ(testing::CountOpenFds(), fds_before_) << "descriptor leak";
  }
  virtual BrokerOptions Options() { return BrokerOptions{}; }
  std::unique_ptr<BrokerClient> Client(const std::string& name) {
    auto c = BrokerClient::Connect(path_, name, kWaitMs);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(c.value()) : nullptr;
  }

  TempDir dir_;
  std::string path_ = dir_.Sub("broker.sock");
  std::unique_ptr<ThreadBroker> broker_;
  int fds_before_ = 0;
};

TEST_F(BrokerClientTest, ExportGrantImportIsZeroCopyBothWays) {
  auto a = Client("vm-a"), b = Client("vm-b");
  auto mem = NewStorage(4 * kPageSize, 0x33);
  auto id = a->Export(mem->fd(), mem->size());
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(a->Grant(*id, "vm-b", kRightReadWrite), kOk);
  auto imp = b->Import(*id);
  ASSERT_TRUE(imp.ok()) << imp.status();
  EXPECT_TRUE(imp->writable);
  EXPECT_FALSE(imp->dmabuf);
  EXPECT_EQ(imp->size, mem->size());
  Mapping m(imp->fd.get(), imp->size, true);
  ASSERT_NE(m.p, nullptr);
  EXPECT_EQ(m.p[3 * kPageSize], 0x33);
  m.p[100] = 0xab;
  EXPECT_EQ(mem->data()[100], 0xab);
  mem->data()[200] = 0xcd;
  EXPECT_EQ(m.p[200], 0xcd);
  EXPECT_EQ(b->ReleaseImport(*id), kOk);
  EXPECT_EQ(a->Unexport(*id), kOk);
}

TEST_F(BrokerClientTest, ReadOnlyGrantIsMappedReadOnly) {
  auto a = Client("vm-a"), b = Client("vm-b");
  auto mem = NewStorage(kPageSize, 0x44);
  auto id = a->Export(mem->fd(), mem->size());
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(a->Grant(*id, "vm-b", kRightRead), kOk);
  auto imp = b->Import(*id);
  ASSERT_TRUE(imp.ok());
  EXPECT_FALSE(imp->writable);
  EXPECT_EQ(::mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, imp->fd.get(), 0),
            MAP_FAILED);
  Mapping m(imp->fd.get(), kPageSize, false);
  ASSERT_NE(m.p, nullptr);
  EXPECT_EQ(m.p[7], 0x44);
  EXPECT_EQ(::mprotect(m.p, kPageSize, PROT_READ | PROT_WRITE), -1);
  EXPECT_EQ(::write(imp->fd.get(), "x", 1), -1);
}

TEST_F(BrokerClientTest, OffersImportForTheGranteeWithoutARoundTrip) {
  auto b = BrokerClient::Connect(path_, "vm-b", kWaitMs, kHelloAcceptOffers);
  ASSERT_TRUE(b.ok());
  std::vector<std::string> offers;
  BrokerClient::Callbacks cb;
  cb.offered = [&](const WireId&, const std::string& exporter, uint64_t size, bool writable) {
    offers.push_back(exporter + ":" + std::to_string(size) + (writable ? ":rw" : ":ro"));
  };
  (*b)->SetCallbacks(cb);
  auto a = Client("vm-a");
  auto early = NewStorage(kPageSize, 0x61), late = NewStorage(2 * kPageSize, 0x62);
  auto id1 = a->Export(early->fd(), early->size(), "vm-b", kRightRead);  // export + grant
  ASSERT_TRUE(id1.ok());
  auto id2 = a->Export(late->fd(), late->size());
  ASSERT_TRUE(id2.ok());
  ASSERT_EQ(a->Grant(*id2, "vm-b", kRightReadWrite), kOk);
  ASSERT_TRUE(DispatchUntil(**b, [&] { return offers.size() == 2; }));
  EXPECT_EQ(offers[0], "vm-a:4096:ro");
  EXPECT_EQ(offers[1], "vm-a:8192:rw");
  auto i2 = (*b)->Import(*id2);
  ASSERT_TRUE(i2.ok());
  EXPECT_TRUE(i2->writable);
  Mapping m(i2->fd.get(), i2->size, true);
  EXPECT_EQ(m.p[0], 0x62);
  // A peer that connects after the grant gets its offers at HELLO.
  auto id3 = a->Export(early->fd(), early->size(), "vm-c", kRightRead);
  ASSERT_TRUE(id3.ok());
  auto c = BrokerClient::Connect(path_, "vm-c", kWaitMs, kHelloAcceptOffers);
  ASSERT_TRUE(c.ok());
  auto i3 = (*c)->Import(*id3);
  ASSERT_TRUE(i3.ok());
  EXPECT_FALSE(i3->writable);
  EXPECT_EQ(i3->generation, 1u);
  // Offered imports are imports: unexport revokes them. One taken by Import() is dead until
  // released (-ENODEV); one never taken (id1) the client releases itself, so the broker
  // forgets it and a later Import() asks the broker (the export is gone: -ENOENT).
  ASSERT_EQ(a->Unexport(*id2), kOk);
  ASSERT_EQ(a->Unexport(*id1), kOk);
  auto status = BrokerClient::QueryStatus(path_, kWaitMs);
  ASSERT_TRUE(status.ok());
  EXPECT_NE(status->find("by vm-b right ro generation 1 state revoked"), std::string::npos)
      << *status;
  EXPECT_EQ((*b)->Import(*id2).status(), -ENODEV);
  EXPECT_EQ((*b)->Import(*id1).status(), -ENOENT);
  status = BrokerClient::QueryStatus(path_, kWaitMs);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->find("by vm-b right ro"), std::string::npos) << *status;
  EXPECT_NE(status->find("by vm-b right rw generation 1 state revoked"), std::string::npos)
      << *status;
}

// An importer that accepts offers and never takes them (a VM whose guest does not import
// everything granted to it) does not fill its import limit with dead offers.
class BrokerClientLimitTest : public BrokerClientTest {
 protected:
  BrokerOptions Options() override {
    BrokerOptions o;
    o.max_imports_per_peer = 4;
    return o;
  }
};

TEST_F(BrokerClientLimitTest, RevokedOffersNobodyTookAreReleased) {
  auto b = BrokerClient::Connect(path_, "vm-b", kWaitMs, kHelloAcceptOffers);
  ASSERT_TRUE(b.ok());
  Recorder rb;
  (*b)->SetCallbacks(rb.Callbacks());
  auto a = Client("vm-a");
  auto mem = NewStorage(kPageSize, 0x5a);
  // More cycles than the limit: without the release the broker stops offering at the fifth.
  for (size_t i = 0; i < 2 * 4 + 1; i++) {
    auto id = a->Export(mem->fd(), mem->size(), "vm-b", kRightRead);
    ASSERT_TRUE(id.ok()) << i;
    ASSERT_EQ(a->Unexport(*id), kOk);
    ASSERT_TRUE(DispatchUntil(**b, [&] { return rb.revocations.size() == i + 1; })) << i;
    // vm-b's requests are handled in order, so once this round trip is answered its release
    // is too (the broker may serve vm-a first: it reads up to 32 requests per peer and wake)
    EXPECT_EQ((*b)->Unexport(RandomId()), -ENOENT);
  }
  auto status = BrokerClient::QueryStatus(path_, kWaitMs);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->find("by vm-b"), std::string::npos) << *status;
  // ... so an export granted now is still offered and imported
  auto id = a->Export(mem->fd(), mem->size(), "vm-b", kRightRead);
  ASSERT_TRUE(id.ok());
  auto imp = (*b)->Import(*id);
  ASSERT_TRUE(imp.ok()) << imp.status();
  Mapping m(imp->fd.get(), kPageSize, false);
  ASSERT_NE(m.p, nullptr);
  EXPECT_EQ(m.p[0], 0x5a);
}

// ExportQueued: the id is there before the broker answers, and an importer may use it at
// once; the client's stock of reserved ids is refilled as it runs out.
TEST_F(BrokerClientTest, QueuedExportIdIsImportableAtOnce) {
  auto a = Client("vm-a"), b = Client("vm-b");
  std::set<WireId> seen;
  for (uint32_t i = 0; i < 2 * BrokerClient::kIdStock + 1; ++i) {
    auto mem = NewStorage(kPageSize, static_cast<uint8_t>(i));
    auto id = a->ExportQueued(mem->fd(), mem->size(), "vm-b", kRightRead);
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_TRUE(seen.insert(*id).second) << "ids are never reused";
    auto imp = b->Import(*id);
    ASSERT_TRUE(imp.ok()) << i << ": " << imp.status();
    EXPECT_FALSE(imp->writable);
    Mapping m(imp->fd.get(), kPageSize, false);
    ASSERT_NE(m.p, nullptr);
    EXPECT_EQ(m.p[0], static_cast<uint8_t>(i)) << "zero copy: the exporter's pages";
    ASSERT_EQ(b->ReleaseImport(*id), kOk);
    ASSERT_EQ(a->Unexport(*id), kOk);  // also takes the EXPORT's reply
  }
  auto status = BrokerClient::QueryStatus(path_, kWaitMs);
  ASSERT_TRUE(status.ok());
  EXPECT_NE(status->find("name vm-a"), std::string::npos);
  EXPECT_NE(status->find("exports: 0"), std::string::npos) << *status;
}

class OneExportClientTest : public BrokerClientTest {
 protected:
  BrokerOptions Options() override {
    BrokerOptions o;
    o.max_exports_per_peer = 1;
    return o;
  }
};

// A queued export the broker refuses is reported through export_failed, with the error
// Export() would have returned; it never existed.
TEST_F(OneExportClientTest, QueuedExportRefusalArrivesAsACallback) {
  auto a = Client("vm-a");
  std::vector<std::pair<WireId, Status>> failed;
  BrokerClient::Callbacks cb;
  cb.export_failed = [&](const WireId& id, Status st) { failed.push_back({id, st}); };
  a->SetCallbacks(cb);
  auto first = NewStorage(kPageSize), second = NewStorage(kPageSize);
  auto ok = a->ExportQueued(first->fd(), kPageSize);
  ASSERT_TRUE(ok.ok());
  auto refused = a->ExportQueued(second->fd(), kPageSize, "vm-b", kRightRead);
  ASSERT_TRUE(refused.ok()) << "the refusal comes later";
  ASSERT_TRUE(DispatchUntil(*a, [&] { return !failed.empty(); }));
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_TRUE(failed[0].first == *refused);
  EXPECT_EQ(failed[0].second, -ENOSPC);
  EXPECT_EQ(a->Grant(*refused, "vm-c", kRightRead), -ENOENT);
  EXPECT_EQ(a->Grant(*ok, "vm-c", kRightRead), kOk) << "the first one exists";
  // A request's round trip consumes a queued reply on the way: the callback still comes.
  auto third = NewStorage(kPageSize);
  auto late = a->ExportQueued(third->fd(), kPageSize);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(a->Grant(*late, "vm-c", kRightRead), -ENOENT);
  ASSERT_TRUE(DispatchUntil(*a, [&] { return failed.size() == 2; }));
  EXPECT_TRUE(failed[1].first == *late);
  EXPECT_EQ(failed[1].second, -ENOSPC);
}

TEST_F(BrokerClientTest, RefusedImportIsReportedToTheImporterAndTheExporter) {
  auto a = Client("vm-a"), b = Client("vm-b");
  Recorder ra;
  a->SetCallbacks(ra.Callbacks());
  auto mem = NewStorage(kPageSize);
  auto id = a->Export(mem->fd(), mem->size());
  ASSERT_TRUE(id.ok());
  auto imp = b->Import(*id);
  EXPECT_EQ(imp.status(), -EACCES);
  ASSERT_TRUE(DispatchUntil(*a, [&] { return !ra.denied.empty(); }));
  EXPECT_EQ(ra.denied[0], "vm-b");
  EXPECT_EQ(b->Import(RandomId()).status(), -ENOENT);
}

TEST_F(BrokerClientTest, MoveInvalidatesImportersWhoAckAndRemapLazily) {
  auto a = Client("vm-a"), b = Client("vm-b"), c = Client("vm-c");
  Recorder ra, rb, rc;
  a->SetCallbacks(ra.Callbacks());
  b->SetCallbacks(rb.Callbacks());
  c->SetCallbacks(rc.Callbacks());
  auto old_storage = NewStorage(2 * kPageSize, 1);
  auto id = a->Export(old_storage->fd(), old_storage->size());
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(a->Grant(*id, "vm-b", kRightReadWrite), kOk);
  ASSERT_EQ(a->Grant(*id, "vm-c", kRightRead), kOk);
  auto ib = b->Import(*id);
  auto ic = c->Import(*id);
  ASSERT_TRUE(ib.ok() && ic.ok());
  auto mb = std::make_unique<Mapping>(ib->fd.get(), ib->size, true);
  auto mc = std::make_unique<Mapping>(ic->fd.get(), ic->size, false);

  // The exporter moves: new storage with the contents copied, then MOVE_BEGIN.
  auto new_storage = NewStorage(2 * kPageSize, 0);
  std::memcpy(new_storage->data(), old_storage->data(), old_storage->size());
  new_storage->data()[0] = 2;
  auto mv = a->MoveBegin(*id, new_storage->fd(), new_storage->size());
  ASSERT_TRUE(mv.ok());
  EXPECT_EQ(mv->generation, 2u);
  EXPECT_EQ(mv->notified, 2u);

  ASSERT_TRUE(DispatchUntil(*b, [&] { return !rb.invalidations.empty(); }));
  ASSERT_TRUE(DispatchUntil(*c, [&] { return !rc.invalidations.empty(); }));
  EXPECT_EQ(rb.invalidations[0].second, 2u);
  EXPECT_EQ(b->Import(*id).status(), -EBUSY) << "no new pages before the acknowledgement";
  mb.reset();  // b stops using the old pages
  ASSERT_EQ(b->AckInvalidate(*id, 2), kOk);
  // Not released yet: c has not acknowledged.
  EXPECT_EQ(a->WaitAndDispatch(50), -ETIMEDOUT);
  EXPECT_TRUE(ra.releases.empty());
  mc.reset();
  ASSERT_EQ(c->AckInvalidate(*id, 2), kOk);
  ASSERT_TRUE(DispatchUntil(*a, [&] { return !ra.releases.empty(); }));
  EXPECT_EQ(ra.releases[0].second, 0u);
  old_storage.reset();  // now the exporter may release it

  auto again = b->Import(*id);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->generation, 2u);
  Mapping m2(again->fd.get(), again->size, true);
  EXPECT_EQ(m2.p[0], 2);
  m2.p[1] = 9;
  EXPECT_EQ(new_storage->data()[1], 9);
}

class ShortTimeoutClientTest : public BrokerClientTest {
  BrokerOptions Options() override {
    BrokerOptions o;
    o.ack_timeout_ms = 200;
    return o;
  }
};

TEST_F(ShortTimeoutClientTest, SilentImporterIsRevokedAndTheMoveCompletes) {
  auto a = Client("vm-a"), b = Client("vm-b");
  Recorder ra;
  a->SetCallbacks(ra.Callbacks());
  auto mem = NewStorage(kPageSize), next = NewStorage(kPageSize);
  auto id = a->Export(mem->fd(), mem->size());
  ASSERT_EQ(a->Grant(*id, "vm-b", kRightRead), kOk);
  ASSERT_TRUE(b->Import(*id).ok());
  ASSERT_TRUE(a->MoveBegin(*id, next->fd(), next->size()).ok());
  // b never dispatches, so never acknowledges.
  ASSERT_TRUE(DispatchUntil(*a, [&] { return !ra.releases.empty(); }));
  EXPECT_EQ(ra.releases[0].second, 1u);
  Recorder rb;
  b->SetCallbacks(rb.Callbacks());
  ASSERT_TRUE(DispatchUntil(*b, [&] { return !rb.revocations.empty(); }));
  EXPECT_EQ(rb.revocations[0].second, kRevokeAckTimeout);
  EXPECT_EQ(b->Import(*id).status(), -ENODEV);
}

TEST_F(BrokerClientTest, RevokedImportFailsWithEnodevForEveryMap) {
  auto a = Client("vm-a"), b = Client("vm-b");
  Recorder rb;
  b->SetCallbacks(rb.Callbacks());
  auto mem = NewStorage(kPageSize);
  auto id = a->Export(mem->fd(), mem->size());
  ASSERT_EQ(a->Grant(*id, "vm-b", kRightRead), kOk);
  ASSERT_TRUE(b->Import(*id).ok());
  ASSERT_EQ(a->Unexport(*id), kOk);
  ASSERT_TRUE(DispatchUntil(*b, [&] { return !rb.revocations.empty(); }));
  EXPECT_EQ(rb.revocations[0].second, kRevokeUnexported);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b->Import(*id).status(), -ENODEV);
  EXPECT_EQ(b->ReleaseImport(*id), kOk);
  EXPECT_EQ(b->Import(*id).status(), -ENOENT);
}

TEST_F(BrokerClientTest, BrokerGoingAwayRevokesImportsKeepsOwnBuffersAndReconnects) {
  auto a = Client("vm-a"), b = Client("vm-b");
  Recorder ra, rb;
  a->SetCallbacks(ra.Callbacks());
  b->SetCallbacks(rb.Callbacks());
  auto mem = NewStorage(kPageSize, 5);
  auto id = a->Export(mem->fd(), mem->size());
  ASSERT_EQ(a->Grant(*id, "vm-b", kRightRead), kOk);
  ASSERT_TRUE(b->Import(*id).ok());
  broker_->Stop();
  ASSERT_TRUE(DispatchUntil(*b, [&] { return rb.disconnects > 0; }));
  ASSERT_EQ(rb.revocations.size(), 1u);
  EXPECT_EQ(rb.revocations[0].second, kRevokeBrokerGone);
  EXPECT_EQ(b->Import(*id).status(), -ENODEV);
  ASSERT_TRUE(DispatchUntil(*a, [&] { return ra.disconnects > 0; }));
  EXPECT_EQ(a->Export(mem->fd(), mem->size()).status(), -ENOTCONN);
  mem->data()[0] = 6;  // the exporter's own buffer keeps working
  EXPECT_EQ(mem->data()[0], 6);
  EXPECT_EQ(a->Reconnect(), -ENOENT) << "no broker yet";

  broker_ = std::make_unique<ThreadBroker>(path_);
  ASSERT_EQ(broker_->status(), kOk);
  ASSERT_EQ(a->Reconnect(), kOk);
  ASSERT_EQ(b->Reconnect(), kOk);
  EXPECT_EQ(a->Reconnect(), -EISCONN);
  auto id2 = a->Export(mem->fd(), mem->size());  // exports are made again, with new ids
  ASSERT_TRUE(id2.ok());
  EXPECT_FALSE(*id2 == *id);
  ASSERT_EQ(a->Grant(*id2, "vm-b", kRightRead), kOk);
  auto imp = b->Import(*id2);
  ASSERT_TRUE(imp.ok());
  Mapping m(imp->fd.get(), kPageSize, false);
  EXPECT_EQ(m.p[0], 6);
}

TEST_F(BrokerClientTest, NamesAreUniqueAndStatusListsEveryone) {
  auto a = Client("vm-a");
  EXPECT_EQ(BrokerClient::Connect(path_, "vm-a", kWaitMs).status(), -EADDRINUSE);
  EXPECT_EQ(BrokerClient::Connect(path_, "bad name", kWaitMs).status(), -EINVAL);
  auto b = Client("vm-b");
  auto status = BrokerClient::QueryStatus(path_, kWaitMs);
  ASSERT_TRUE(status.ok());
  EXPECT_NE(status->find("name vm-a"), std::string::npos) << *status;
  EXPECT_NE(status->find("name vm-b"), std::string::npos) << *status;
  // A second broker on a live socket is refused; a stale socket file is replaced.
  ServerOptions so;
  so.socket_path = path_;
  EXPECT_EQ(BrokerServer::Listen(so).status(), -EADDRINUSE);
}

TEST_F(BrokerClientTest, ManyCyclesLeaveNoDescriptorsBehind) {
  for (int round = 0; round < 20; ++round) {
    auto a = Client("vm-a"), b = Client("vm-b");
    Recorder ra;
    a->SetCallbacks(ra.Callbacks());
    auto mem = NewStorage(kPageSize), next = NewStorage(kPageSize);
    auto id = a->Export(mem->fd(), mem->size());
    ASSERT_EQ(a->Grant(*id, "vm-b", round % 2 ? kRightRead : kRightReadWrite), kOk);
    ASSERT_TRUE(b->Import(*id).ok());
    ASSERT_TRUE(a->MoveBegin(*id, next->fd(), next->size()).ok());
    ASSERT_TRUE(b->WaitAndDispatch(kWaitMs) == kOk);  // no callback: acknowledges itself
    ASSERT_TRUE(DispatchUntil(*a, [&] { return !ra.releases.empty(); }));
    ASSERT_TRUE(b->Import(*id).ok());
    if (round % 3 == 0) {
      ASSERT_EQ(a->Unexport(*id), kOk);
    }
  }
}

// The C API, as QEMU will use it.
struct CEvents {
  int invalidations = 0, revocations = 0, releases = 0;
  sgbk_client* client = nullptr;
};

TEST_F(BrokerClientTest, CApiExportImportMoveRevoke) {
  sgbk_client *a = nullptr, *b = nullptr;
  ASSERT_EQ(sgbk_client_connect(path_.c_str(), "vm-a", 0, &a), 0);
  ASSERT_EQ(sgbk_client_connect(path_.c_str(), "vm-b", 0, &b), 0);
  EXPECT_EQ(sgbk_client_connect(path_.c_str(), "vm-b", 0, &b), -EADDRINUSE);
  EXPECT_EQ(sgbk_client_connect(nullptr, "vm-c", 0, &b), -EINVAL);
  EXPECT_EQ(sgbk_client_connected(a), 1);
  CEvents ea{0, 0, 0, a}, eb{0, 0, 0, b};
  sgbk_callbacks cba{};
  cba.opaque = &ea;
  cba.release_ok = [](void* o, const sgbk_id*, uint64_t, uint32_t) {
    ++static_cast<CEvents*>(o)->releases;
  };
  sgbk_client_set_callbacks(a, &cba);
  sgbk_callbacks cbb{};
  cbb.opaque = &eb;
  cbb.invalidate = [](void* o, const sgbk_id* id, uint64_t gen) {
    auto* e = static_cast<CEvents*>(o);
    ++e->invalidations;
    EXPECT_EQ(sgbk_ack_invalidate(e->client, id, gen), 0);  // allowed inside a callback
  };
  cbb.revoked = [](void* o, const sgbk_id*, uint32_t reason) {
    EXPECT_EQ(reason, uint32_t{SGBK_REVOKE_UNEXPORTED});
    ++static_cast<CEvents*>(o)->revocations;
  };
  sgbk_client_set_callbacks(b, &cbb);

  auto mem = NewStorage(kPageSize, 0x21), next = NewStorage(kPageSize, 0x22);
  sgbk_id id;
  ASSERT_EQ(sgbk_export(a, mem->fd(), kPageSize, nullptr, 0, &id), 0);
  char text[33];
  sgbk_id_format(&id, text);
  sgbk_id parsed;
  ASSERT_EQ(sgbk_id_parse(text, &parsed), 0);
  EXPECT_EQ(std::memcmp(&parsed, &id, sizeof(id)), 0);
  ASSERT_EQ(sgbk_grant(a, &id, "vm-b", SGBK_RIGHT_READ), 0);
  sgbk_import_info info;
  ASSERT_EQ(sgbk_import(b, &id, 0, &info), 0);
  EXPECT_EQ(info.writable, 0u);
  EXPECT_EQ(info.size, kPageSize);
  ::close(info.fd);
  uint64_t gen = 0;
  ASSERT_EQ(sgbk_move_begin(a, &id, next->fd(), kPageSize, &gen), 0);
  EXPECT_EQ(gen, 2u);
  auto wait = [](sgbk_client* c, int* counter) {
    for (int i = 0; i < kWaitMs / 10 && *counter == 0; ++i) {
      pollfd p{sgbk_client_fd(c), POLLIN, 0};
      if (::poll(&p, 1, 10) > 0) {
        EXPECT_EQ(sgbk_client_dispatch(c), 0);
      }
    }
    return *counter > 0;
  };
  ASSERT_TRUE(wait(b, &eb.invalidations));
  ASSERT_TRUE(wait(a, &ea.releases));
  ASSERT_EQ(sgbk_import(b, &id, SGBK_IMPORT_WANT_DMABUF, &info), 0);
  EXPECT_EQ(info.generation, 2u);
  EXPECT_EQ(info.dmabuf, 0u) << "read-only grants never get a udmabuf";
  uint8_t byte = 0;
  EXPECT_EQ(::pread(info.fd, &byte, 1, 0), 1);
  EXPECT_EQ(byte, 0x22);
  ::close(info.fd);
  ASSERT_EQ(sgbk_unexport(a, &id), 0);
  ASSERT_TRUE(wait(b, &eb.revocations));
  EXPECT_EQ(sgbk_import(b, &id, 0, &info), -ENODEV);
  EXPECT_STREQ(sgbk_strerror(-ENODEV), "import revoked");
  char status[4096];
  size_t len = 0;
  ASSERT_EQ(sgbk_status(path_.c_str(), status, sizeof(status), &len), 0);
  EXPECT_NE(std::string(status).find("name vm-b"), std::string::npos);
  sgbk_client_free(a);
  sgbk_client_free(b);
}

}  // namespace
}  // namespace sharegpu::broker
