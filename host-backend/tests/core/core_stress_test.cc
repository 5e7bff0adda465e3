// Concurrency: jobs over overlapping buffer sets (ww back-off, S6), attach/detach and mappings
// racing moves (S8). Every wait is bounded by RunThreadsBounded (a deadlock fails the binary).
// The movers are not paced (see Race): only the reservation locks' fairness (the ww hand-off,
// issue 11) lets both sides make progress, and each test asserts that its race happened.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <latch>
#include <set>

#include "core/backend.h"
#include "core/device.h"
#include "core_test_util.h"

namespace sharegpu::testing {
namespace {

constexpr uint64_t kPage = 4096;

// A race between workers and a mover, without pacing: the mover loops as fast as it can until
// every worker is done, and nobody waits for anyone's progress. Each worker does at least
// `rounds` rounds, then goes on until `seen()` (the interleaving the test exists for has
// happened) or until kDeadline. A fixed round count alone could end the race before it began:
// a worker's 500 attach rounds take about 0.4 ms when it runs alone, while on two CPUs the
// threads start up to milliseconds apart. A side that starves shows up as `seen()` still false
// at the deadline (each test asserts its interleaving), not as a hang.
class Race {
 public:
  // Well inside RunThreadsBounded's deadlock timeout, so that a race never seen is reported
  // by the test's own assertion.
  static constexpr auto kDeadline = kDeadlockTimeout / 3;

  Race(int workers, int rounds, std::function<bool()> seen)
      : workers_(workers),
        rounds_(rounds),
        seen_(std::move(seen)),
        deadline_(std::chrono::steady_clock::now() + kDeadline) {}
  bool MoverGoesOn() const { return finished_.load() < workers_; }
  bool WorkerDoesRound(int round) {
    if (round < rounds_) return true;
    if (seen_() || std::chrono::steady_clock::now() >= deadline_) return false;
    extra_rounds_.fetch_add(1);
    return true;
  }
  void WorkerDone() { finished_.fetch_add(1); }
  // Rounds done beyond `rounds` (all workers) because the race had not been seen yet.
  uint64_t extra_rounds() const { return extra_rounds_.load(); }

 private:
  const int workers_;
  const int rounds_;
  const std::function<bool()> seen_;
  const std::chrono::steady_clock::time_point deadline_;
  std::atomic<int> finished_{0};
  std::atomic<uint64_t> extra_rounds_{0};
};

Placement Other(Placement p) {
  return p == Placement::kDevice ? Placement::kSystem : Placement::kDevice;
}

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
  std::vector<Placement> a_placements;
  for (int i = 0; i < kBos; ++i) {
    a_placements.push_back(i % 2 ? Placement::kSystem : Placement::kDevice);
    auto h = da.CreateBo(kSize, a_placements.back());
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
  // A job's FILL value: unique per thread and job (the job index wraps after 64k).
  auto fill_value = [](int t, int j) { return 0xF0000000u | (t << 16) | (j & 0xFFFF); };
  const uint64_t jobs_before = da.Stats().jobs + db.Stats().jobs;
  const uint64_t a_moves_before = da.Stats().moves;
  const uint64_t notifies_before = db.Stats().move_notifies;
  std::atomic<int> failures{0};
  std::atomic<uint64_t> moves{0};
  std::atomic<uint64_t> jobs_across_moves{0};  // jobs during which a move completed
  std::vector<int> jobs_done(kThreads);
  // Seen: moves landed while jobs were in flight, and B's imports of A's buffers were told.
  Race race(kThreads, kJobs, [&] {
    return jobs_across_moves.load() > 0 && db.Stats().move_notifies > notifies_before;
  });
  std::latch go(kThreads + 1);  // start together: maximise overlap
  RunThreadsBounded(kThreads + 1, [&](int t) {
    go.arrive_and_wait();
    if (t == kThreads) {
      // A mover: A's buffers change placement under the jobs (imports re-map). Nothing else
      // moves them, so each successful move here is a real one.
      std::vector<Placement> where = a_placements;
      std::mt19937 rng(99);
      while (race.MoverGoesOn()) {
        const int i = static_cast<int>(rng() % kBos);
        Status err = da.Move(a_handles[i], Other(where[i]));
        if (err == kOk) {
          where[i] = Other(where[i]);
          moves++;
        } else if (err != -ENOSPC) {
          failures++;
        }
      }
      return;
    }
    Device& dev = t % 2 ? db : da;
    const auto& hs = t % 2 ? b_handles : a_handles;
    std::mt19937 rng(t);
    int j = 0;
    for (; race.WorkerDoesRound(j); ++j) {
      const uint64_t moves_before = moves.load();
      Status err;
      if (j % 10 == 9) {
        err = dev.Fill(hs[rng() % hs.size()], 0, kSize, fill_value(t, j), nullptr);
      } else {
        uint32_t src = hs[rng() % hs.size()];
        uint32_t dst = hs[rng() % hs.size()];
        err = dev.Copy(src, 0, dst, 0, kSize, nullptr);
      }
      if (err != kOk) failures++;
      if (moves.load() != moves_before) jobs_across_moves++;
    }
    jobs_done[t] = j;
    race.WorkerDone();
  });
  uint64_t jobs = 0;
  for (int t = 0; t < kThreads; ++t) {
    jobs += jobs_done[t];
    for (int j = 9; j < jobs_done[t]; j += 10) patterns.insert(fill_value(t, j));
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(da.Stats().jobs + db.Stats().jobs - jobs_before, jobs);
  EXPECT_EQ(da.Stats().job_errors + db.Stats().job_errors, 0u);
  EXPECT_EQ(da.Stats().moves - a_moves_before, moves.load());
  // The race happened: buffers moved while jobs were in flight, and B's imports of them saw it.
  EXPECT_GT(jobs_across_moves.load(), 0u) << "no move completed while a job was in flight";
  const uint64_t notifies = db.Stats().move_notifies - notifies_before;
  EXPECT_GT(notifies, 0u) << "B's imports were never told of a move";
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
  std::printf(
      "[ stats    ] extra_rounds=%llu moves=%llu jobs_across_moves=%llu import_notifies=%llu "
      "ww_backoffs=%llu\n",
      static_cast<unsigned long long>(race.extra_rounds()),
      static_cast<unsigned long long>(moves.load()),
      static_cast<unsigned long long>(jobs_across_moves.load()),
      static_cast<unsigned long long>(notifies),
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
  std::atomic<int> errors{0};
  // Moves made while an importer was attached, and moves refused because a static one pinned
  // the buffer: the two outcomes of the race, both must occur.
  std::atomic<uint64_t> moved{0}, moved_attached{0}, busy{0};
  Race race(kAttachers, kRounds, [&] { return moved_attached.load() > 0 && busy.load() > 0; });
  std::latch go(kAttachers + 1);
  RunThreadsBounded(kAttachers + 1, [&](int t) {
    go.arrive_and_wait();
    if (t == kAttachers) {
      while (race.MoverGoesOn()) {
        ResvGuard g(bo->resv());
        const bool attached = (*dmabuf)->attachment_count() > 0;
        Status err = bo->Move(Other(bo->placement()));
        if (err == kOk) {
          moved++;
          if (attached) moved_attached++;
        } else if (err == -EBUSY) {
          busy++;  // a static attachment pinned it
        } else {
          errors++;
        }
      }
      return;
    }
    for (int r = 0; race.WorkerDoesRound(r); ++r) {
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
    }
    race.WorkerDone();
  });
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(moved_attached.load(), 0u) << "no move while an importer was attached";
  EXPECT_GT(busy.load(), 0u) << "no move was refused by a static attachment's pin";
  EXPECT_EQ((*dmabuf)->attachment_count(), 0u);
  EXPECT_EQ(bo->pin_count(), 0u);
  EXPECT_EQ(ReadBo(*bo), bytes);
  {
    ResvGuard g(bo->resv());
    EXPECT_TRUE((*dmabuf)->attachments().empty());
    EXPECT_EQ((*dmabuf)->live_mapping_count(), 0u);
  }
  std::printf("[ stats    ] extra_rounds=%llu moves=%llu moves_attached=%llu refused_pinned=%llu\n",
              static_cast<unsigned long long>(race.extra_rounds()),
              static_cast<unsigned long long>(moved.load()),
              static_cast<unsigned long long>(moved_attached.load()),
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
  std::atomic<int> errors{0}, bad_reads{0};
  std::atomic<uint64_t> invalid_seen{0};
  // The mover's moves (read after the join), and those that invalidated live mappings.
  uint64_t mover_moves = 0;
  std::atomic<uint64_t> mover_invalidations{0};
  Race race(kMappers, kRounds, [&] { return mover_invalidations.load() > 0; });
  std::latch go(kMappers + 1);
  RunThreadsBounded(kMappers + 1, [&](int t) {
    go.arrive_and_wait();
    if (t == kMappers) {
      while (race.MoverGoesOn()) {
        ResvGuard g(bo->resv());
        const bool live_mappings = (*dmabuf)->live_mapping_count() > 0;
        if (bo->Move(Other(bo->placement())) != kOk) {
          errors++;
          continue;
        }
        mover_moves++;
        if (live_mappings) mover_invalidations++;  // they died under their importers
      }
      return;
    }
    MapperState& s = state[t];
    for (int r = 0; race.WorkerDoesRound(r); ++r) {
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
    }
    race.WorkerDone();
  });
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(bad_reads.load(), 0);
  // The race happened: the mover (not only mapper 0's own Maps) moved the buffer while a
  // mapper held a mapping between its two critical sections.
  EXPECT_GT(mover_invalidations.load(), 0u)
      << "the mover never moved the buffer under a live mapping";
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
  EXPECT_GE(notified, mover_invalidations.load());  // each of those moves notified someone
  EXPECT_EQ((*dmabuf)->attachment_count(), 0u);
  EXPECT_EQ(ReadBo(*bo), bytes);
  std::printf(
      "[ stats    ] extra_rounds=%llu moves=%llu mover_moves=%llu mover_invalidations=%llu "
      "invalidated_while_mapped=%llu notified=%llu\n",
      static_cast<unsigned long long>(race.extra_rounds()),
      static_cast<unsigned long long>(bo->moves()), static_cast<unsigned long long>(mover_moves),
      static_cast<unsigned long long>(mover_invalidations.load()),
      static_cast<unsigned long long>(invalid_seen.load()),
      static_cast<unsigned long long>(notified));
}

}  // namespace
}  // namespace sharegpu::testing
