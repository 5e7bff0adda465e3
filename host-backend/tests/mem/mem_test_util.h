// Test helpers for the memory module: page-backed buffers with a device cache.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "mem/arena.h"
#include "mem/copy_engine.h"
#include "mem/device_cache.h"

namespace sharegpu::testing {

// A buffer object's memory (its own memfd, as the cache model requires whole pages) and its
// device cache.
struct TestBuffer {
  TestBuffer(uint64_t size, CacheMode mode) : cache(std::make_unique<DeviceCache>(mode)) {
    auto s = Storage::CreateSystem("mem-test", size);
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) storage = s.value();
  }
  uint8_t* mem() const { return storage->data(); }
  uint64_t size() const { return storage->size(); }
  DeviceView view() const { return DeviceView{mem(), size(), cache.get()}; }
  std::vector<uint8_t> Snapshot() const { return std::vector<uint8_t>(mem(), mem() + size()); }
  void FillRandom(uint32_t seed) {
    std::mt19937 rng(seed);
    for (uint64_t i = 0; i < size(); ++i) mem()[i] = static_cast<uint8_t>(rng());
  }

  std::shared_ptr<Storage> storage;
  std::unique_ptr<DeviceCache> cache;
};

inline std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

}  // namespace sharegpu::testing
