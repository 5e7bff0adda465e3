// The device's copy engine (the cpu engine's jobs): copy / fill / checksum over buffer-object
// ranges. Every access goes through the object's DeviceCache (the model), so device jobs obey
// the cache model. Ranges are bounds-checked (overflow-safe) before any byte moves: -EINVAL
// for len 0 or misaligned fill, -ERANGE for a range outside the object. Overlapping copies
// within one object behave like memmove. A view without memory or cache, or whose cache is
// not the model (another engine's), is -EINVAL.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "mem/device_cache.h"

namespace sharegpu {

// What the engine needs of a buffer object for the duration of one job; the caller keeps the
// storage alive and the object locked or pinned. `cache` is the device's cache of the buffer,
// of the engine's kind (Engine::cache_factory()).
struct DeviceView {
  uint8_t* mem = nullptr;
  uint64_t size = 0;
  BufferCache* cache = nullptr;
};

// CRC-32C (Castagnoli), the checksum jobs report; `seed` chains calls (start with 0).
uint32_t Crc32c(uint32_t seed, const uint8_t* data, uint64_t len);
// The table-driven fallback Crc32c uses without SSE4.2; exposed so tests can cross-check.
uint32_t Crc32cPortable(uint32_t seed, const uint8_t* data, uint64_t len);

class CopyEngine {
 public:
  static Status Copy(const DeviceView& src, uint64_t src_off, const DeviceView& dst,
                     uint64_t dst_off, uint64_t len);
  // Fills with a repeated 32-bit little-endian pattern; off and len must be multiples of 4.
  static Status Fill(const DeviceView& dst, uint64_t off, uint64_t len, uint32_t pattern);
  static Result<uint32_t> Checksum(const DeviceView& src, uint64_t off, uint64_t len);
};

}  // namespace sharegpu
