#include "engine/cpu_engine.h"

#include "common/log.h"
#if SHAREGPU_HAVE_VIRGL
#include "engine/virgl_engine.h"
#endif

namespace sharegpu {

std::unique_ptr<Engine> CpuEngine::Create(std::string name) {
  std::unique_ptr<CpuEngine> engine(new CpuEngine(std::move(name)));
  engine->Start();
  return engine;
}

CpuEngine::~CpuEngine() { Stop(); }

Result<uint64_t> CpuEngine::Execute(Job& job) {
  const size_t want = job.op == JobOp::kCopy ? 2 : 1;
  if (job.buffers.size() != want) return Result<uint64_t>::Error(-EINVAL);
  const DeviceView& first = job.buffers[0].view;
  switch (job.op) {
    case JobOp::kCopy:
      if (Status err = CopyEngine::Copy(job.buffers[1].view, job.off2, first, job.off, job.len)) {
        return Result<uint64_t>::Error(err);
      }
      return uint64_t{0};
    case JobOp::kFill:
      if (Status err = CopyEngine::Fill(first, job.off, job.len, job.pattern)) {
        return Result<uint64_t>::Error(err);
      }
      return uint64_t{0};
    case JobOp::kChecksum: {
      auto crc = CopyEngine::Checksum(first, job.off, job.len);
      if (!crc) return Result<uint64_t>::Error(crc.status());
      return uint64_t{*crc};
    }
  }
  return Result<uint64_t>::Error(-EINVAL);
}

Result<std::unique_ptr<Engine>> CreateEngine(const std::string& kind, std::string name) {
  using R = Result<std::unique_ptr<Engine>>;
  if (kind.empty() || kind == "cpu") return CpuEngine::Create(std::move(name));
#if SHAREGPU_HAVE_VIRGL
  if (kind == "virgl") return VirglEngine::Create(std::move(name));
  constexpr const char* kBuilt = "cpu, virgl";
#else
  if (kind == "virgl") {
    Logf(LogLevel::kError,
         "%s: engine 'virgl' is not in this build: libvirglrenderer was not found when the "
         "backend was configured (Debian: libvirglrenderer-dev; scripts/setup-host.sh)",
         name.c_str());
    return R::Error(-ENODEV);
  }
  constexpr const char* kBuilt = "cpu";
#endif
  Logf(LogLevel::kError, "%s: unknown engine '%s' (this build has: %s)", name.c_str(),
       kind.c_str(), kBuilt);
  return R::Error(-ENODEV);
}

}  // namespace sharegpu
