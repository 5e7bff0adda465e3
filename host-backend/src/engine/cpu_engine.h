// The `cpu` engine (the default): one worker thread per device running the copy engine
// through the device-cache model (mem/copy_engine.h, mem/device_cache.h), so a strict-mode
// device keeps its writes in its cache until flushed, exactly as before, but off the caller's
// thread (QEMU: off the BQL).
#pragma once

#include <memory>
#include <string>

#include "engine/engine.h"

namespace sharegpu {

class CpuEngine final : public Engine {
 public:
  static std::unique_ptr<Engine> Create(std::string name);
  ~CpuEngine() override;
  const char* kind() const override { return "cpu"; }

 private:
  explicit CpuEngine(std::string name) : Engine(std::move(name)) {}
  Result<uint64_t> Execute(Job& job) override;
};

// The engine called `kind` ("cpu"; "virgl" where built with libvirglrenderer, engine/
// virgl_engine.h), or -ENODEV with the reason logged (unknown kind, virgl not built, or
// virglrenderer unable to initialise).
Result<std::unique_ptr<Engine>> CreateEngine(const std::string& kind, std::string name);

}  // namespace sharegpu
