// Concurrency: jobs over overlapping buffer sets (ww back-off, S6), attach/detach and mappings
// racing moves (S8). Every wait is bounded by RunThreadsBounded (a deadlock fails the binary).
#include <atomic>
#include <cstdio>
#include <latch>
#include <semaphore>
#include <set>

#include "core/backend.h"
#include "core/device.h"
#include "core_test_util.h"

namespace sharegpu::testing {
namespace {

constexpr uint64_t kPage = 4096;

// Paces a mover thread by the workers' progress: one move per unit of work, so a mover that
// wins the lock every time cannot starve the workers (ww locks are not fair). Workers call
// Tick() per unit and Done() once; the mover loops while Next().
class Pacer {
 public:
  explicit Pacer(int workers) : workers_(workers) {}
  void Tick() { tokens_.release(); }
  void Done() {
    finished_.fetch_add(1);
    tokens_.release();
  }
  bool Next() {
    tokens_.acquire();
    return finished_.load() < workers_;
  }

 private:
  const int workers_;
  std::atomic<int> finished_{0};
  std::counting_semaphore<> tokens_{0};
};

// Every 4-byte word of `bytes` is the same; that word, or nullopt.
std::optional<uint32_t> UniformWord(const std::vector<uint8_t>& bytes) {
  uint32_t first;
  std::memcpy(&first, bytes.data(), 4);
  for (size_t i = 4; i + 4 <= bytes.size(); i += 4) {
    uint32_t w;
    std::memcpy(&w, bytes.data() + i, 4);
    if (w != first) return std::nullopt;
  }
  return first;
}

TEST(DeviceJobTest, OverlappingJobsFromManyThreadsComplete) {
  auto backend = Backend::Create();
  auto a = Device::Create(backend, DeviceConfig{"A", 2 * kMiB, CacheMode::kCoherent});
  auto b = Device::Create(backend, DeviceConfig{"B", 2 * kMiB, CacheMode::kCoherent});
  ASSERT_TRUE(a.ok() && b.ok());
  Device& da = **a;
  Device& db = **b;
  constexpr uint64_t kSize = 4 * kPage;
  constexpr int kBos = 6;
  std::set<uint32_t> patterns;  // every whole-buffer value ever written
  std::vector<uint32_t> a_handles, b_handles;
  for (int i = 0; i < kBos; ++i) {
    auto h = da.CreateBo(kSize, i % 2 ? Placement::kSystem : Placement::kDevice);
    ASSERT_TRUE(h.ok());
    const uint32_t p = 0x1000u + static_cast<uint32_t>(i);
    ASSERT_EQ(da.Fill(*h, 0, kSize, p, nullptr), kOk);
    patterns.insert(p);
    a_handles.push_back(*h);
  }
  // B works on imports of four of A's buffers plus two of its own.
  for (int i = 0; i < 4; ++i) {
    sgb_uuid uuid{};
    ASSERT_EQ(da.Export(a_handles[i], &uuid, nullptr), kOk);
    auto d = backend->LookupUuid(uuid);
    ASSERT_TRUE(d.ok());
    auto h = db.ImportDmaBuf(*d);
    ASSERT_TRUE(h.ok());
    b_handles.push_back(*h);
  }
  for (int i = 0; i < 2; ++i) {
    auto h = db.CreateBo(kSize, Placement::kDevice);
    ASSERT_TRUE(h.ok());
    const uint32_t p = 0x2000u + static_cast<uint32_t>(i);
    ASSERT_EQ(db.Fill(*h, 0, kSize, p, nullptr), kOk);
    patterns.insert(p);
    b_handles.push_back(*h);
  }
  constexpr int kThreads = 4;
  constexpr int kJobs = 400;
  for (int t = 0; t < kThreads; ++t) {
    for (int j = 0; j < kJobs; ++j) patterns.insert(0xF0000000u | (t << 16) | j);
  }
  const uint64_t jobs_before = da.Stats().jobs + db.Stats().jobs;
  std::atomic<int> failures{0};
  Pacer pacer(kThreads);
  std::latch go(kThreads + 1);  // start together: maximise overlap
  RunThreadsBounded(kThreads + 1, [&](int t) {
    go.arrive_and_wait();
    if (t == kThreads) {
      // A mover: A's buffers change placement under the jobs (imports re-map).
      std::mt19937 rng(99);
      while (pacer.Next()) {
        uint32_t h = a_handles[rng() % kBos];
        Status err = da.Move(h, rng() % 2 ? Placement::kDevice : Placement::kSystem);
        if (err != kOk && err != -ENOSPC) failures++;
      }
      return;
    }
    Device& dev = t % 2 ? db : da;
    const auto& hs = t % 2 ? b_handles : a_handles;
    std::mt19937 rng(t);
    for (int j = 0; j < kJobs; ++j) {
      Status err;
      if (j % 10 == 9) {
        err = dev.Fill(hs[rng() % hs.size()], 0, kSize, 0xF0000000u | (t << 16) | j, nullptr);
      } else {
        uint32_t src = hs[rng() % hs.size()];
        uint32_t dst = hs[rng() % hs.size()];
        err = dev.Copy(src, 0, dst, 0, kSize, nullptr);
      }
      if (err != kOk) failures++;
      pacer.Tick();
    }
    pacer.Done();
  });
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(da.Stats().jobs + db.Stats().jobs - jobs_before, uint64_t{kThreads} * kJobs);
  EXPECT_EQ(da.Stats().job_errors + db.Stats().job_errors, 0u);
  // Every buffer holds exactly one whole-buffer value: no copy was torn by another job.
  auto check = [&](Device& dev, uint32_t h) {
    std::vector<uint8_t> bytes(kSize);
    ASSERT_EQ(dev.CpuRead(h, 0, bytes.data(), kSize), kOk);
    auto w = UniformWord(bytes);
    ASSERT_TRUE(w.has_value()) << "torn buffer " << h;
    EXPECT_TRUE(patterns.count(*w)) << std::hex << *w;
  };
  for (uint32_t h : a_handles) check(da, h);
  for (uint32_t h : b_handles) check(db, h);
  std::printf("[ stats    ] ww_backoffs=%llu\n",
              static_cast<unsigned long long>(da.Stats().ww_backoffs + db.Stats().ww_backoffs));
}

TEST(AttachStressTest, ConcurrentAttachDetach) {
  auto mm = MakeMm("attach-stress");
  auto bo = MakeBo(mm, 2 * kPage, Placement::kDevice);
  const auto bytes = RandomBytes(bo->size(), 77);
  WriteBo(*bo, bytes);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  constexpr int kAttachers = 4;
  constexpr int kRounds = 500;
  Pacer pacer(kAttachers);
  std::atomic<int> errors{0};
  std::atomic<uint64_t> moved{0}, busy{0};
  std::latch go(kAttachers + 1);
  RunThreadsBounded(kAttachers + 1, [&](int t) {
    go.arrive_and_wait();
    if (t == kAttachers) {
      int i = 0;
      while (pacer.Next()) {
        ResvGuard g(bo->resv());
        Status err = bo->Move(i++ % 2 ? Placement::kDevice : Placement::kSystem);
        if (err == kOk) {
          moved++;
        } else if (err == -EBUSY) {
          busy++;  // a static attachment pinned it
        } else {
          errors++;
        }
      }
      return;
    }
    for (int r = 0; r < kRounds; ++r) {
      const bool dynamic = (t + r) % 3 != 0;
      ImporterOps ops = dynamic ? DynamicImporter("dyn", nullptr, t % 2 == 0)
                                : StaticImporter("static", nullptr, t % 2 == 0);
      // An importer that cannot reach VRAM needs the buffer in SYSTEM; while another static
      // attachment pins it in DEVICE that is impossible: -EBUSY, and nothing may be left over.
      const bool p2p = t % 2 == 0;
      auto att = (*dmabuf)->Attach(std::move(ops));
      if (!att.ok()) {
        if (p2p || att.status() != -EBUSY) errors++;
        continue;
      }
      if (dynamic) {
        MappingRef m;
        {
          ResvGuard g(bo->resv());
          auto r2 = (*dmabuf)->Map(**att, DmaDirection::kBidirectional);
          if (!r2.ok()) {
            if (p2p || r2.status() != -EBUSY || bo->pin_count() == 0) errors++;
          } else {
            m = *r2;
          }
        }
        if (m) {
          ResvGuard g(bo->resv());
          if ((*dmabuf)->Unmap(**att, m) != kOk) errors++;
        }
      } else {
        ResvGuard g(bo->resv());
        if (bo->pin_count() == 0) errors++;  // static attachments pin
      }
      if ((*dmabuf)->Detach(*att) != kOk) errors++;
      pacer.Tick();
    }
    pacer.Done();
  });
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ((*dmabuf)->attachment_count(), 0u);
  EXPECT_EQ(bo->pin_count(), 0u);
  EXPECT_EQ(ReadBo(*bo), bytes);
  {
    ResvGuard g(bo->resv());
    EXPECT_TRUE((*dmabuf)->attachments().empty());
    EXPECT_EQ((*dmabuf)->live_mapping_count(), 0u);
  }
  std::printf("[ stats    ] moves=%llu refused_pinned=%llu\n",
              static_cast<unsigned long long>(moved.load()),
              static_cast<unsigned long long>(busy.load()));
}

TEST(AttachStressTest, MappingsRaceMoves) {
  auto mm = MakeMm("map-stress");
  auto bo = MakeBo(mm, 4 * kPage, Placement::kDevice);
  const auto bytes = RandomBytes(bo->size(), 88);
  WriteBo(*bo, bytes);
  auto dmabuf = bo->GetOrExport();
  ASSERT_TRUE(dmabuf.ok());
  constexpr int kMappers = 4;
  constexpr int kRounds = 600;
  struct MapperState {
    bool mapped = false;  // guarded by the reservation
    int notifications = 0;  // guarded by the reservation
    int bad_notifications = 0;
    int invalid_seen = 0;  // mappings found invalidated after the lock was dropped
    AttachmentRef att;
  };
  std::vector<MapperState> state(kMappers);
  int device_identity = 0;
  for (int t = 0; t < kMappers; ++t) {
    MapperState* s = &state[t];
    // Mapper 0 cannot reach VRAM: its own Maps move the buffer to SYSTEM.
    auto att = (*dmabuf)->Attach(DynamicImporter(
        "mapper" + std::to_string(t), &device_identity, /*p2p=*/t != 0, [s](Attachment& a) {
          if (!a.dmabuf().resv().IsHeld() || !s->mapped || a.live_mappings() != 0) {
            s->bad_notifications++;
          }
          s->notifications++;
        }));
    ASSERT_TRUE(att.ok());
    state[t].att = *att;
  }
  Pacer pacer(kMappers);
  std::atomic<int> errors{0}, bad_reads{0};
  std::atomic<uint64_t> invalid_seen{0};
  std::latch go(kMappers + 1);
  RunThreadsBounded(kMappers + 1, [&](int t) {
    go.arrive_and_wait();
    if (t == kMappers) {
      int i = 0;
      while (pacer.Next()) {
        ResvGuard g(bo->resv());
        if (bo->Move(i++ % 2 ? Placement::kDevice : Placement::kSystem) != kOk) errors++;
      }
      return;
    }
    MapperState& s = state[t];
    for (int r = 0; r < kRounds; ++r) {
      MappingRef m;
      {
        ResvGuard g(bo->resv());
        auto res = (*dmabuf)->Map(*s.att, DmaDirection::kBidirectional);
        if (!res.ok()) {
          errors++;
          continue;
        }
        m = *res;
        s.mapped = true;
        if (!m->valid() || m->host() != bo->storage()->data() ||
            std::memcmp(m->host(), bytes.data(), bytes.size()) != 0) {
          bad_reads++;
        }
      }
      // The lock is dropped here: a move may invalidate the mapping meanwhile.
      {
        ResvGuard g(bo->resv());
        if (m->valid()) {
          if (m->host() != bo->storage()->data() ||
              std::memcmp(m->host(), bytes.data(), bytes.size()) != 0) {
            bad_reads++;
          }
        } else {
          invalid_seen++;
          s.invalid_seen++;
        }
        if ((*dmabuf)->Unmap(*s.att, m) != kOk) errors++;
        s.mapped = false;
      }
      pacer.Tick();
    }
    pacer.Done();
  });
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(bad_reads.load(), 0);
  uint64_t notified = 0;
  for (auto& s : state) {
    EXPECT_EQ(s.bad_notifications, 0) << "a notification without a live mapping";
    EXPECT_EQ(static_cast<uint64_t>(s.notifications), s.att->move_notifies());
    // Each mapping a move invalidated while its importer held it was announced exactly once
    // (an importer never has another mapping while its own Map moves the buffer).
    EXPECT_EQ(s.notifications, s.invalid_seen);
    notified += s.notifications;
    EXPECT_EQ((*dmabuf)->Detach(s.att), kOk);
  }
  EXPECT_EQ((*dmabuf)->attachment_count(), 0u);
  EXPECT_EQ(ReadBo(*bo), bytes);
  std::printf("[ stats    ] moves=%llu invalidated_while_mapped=%llu notified=%llu\n",
              static_cast<unsigned long long>(bo->moves()),
              static_cast<unsigned long long>(invalid_seen.load()),
              static_cast<unsigned long long>(notified));
}

}  // namespace
}  // namespace sharegpu::testing
