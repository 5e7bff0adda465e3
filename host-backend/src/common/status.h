// Error convention for the whole backend: negative errno values, as in the kernel, so that
// -EDEADLK / -EALREADY / -EBUSY keep exactly their dma-buf and ww_mutex meanings across the
// C API. Zero is success. Nothing in the backend throws across a public boundary.
#pragma once

#include <cerrno>
#include <cstdint>
#include <optional>
#include <utility>
#include <variant>

namespace sharegpu {

// A plain error code; 0 = ok, otherwise -errno.
using Status = int;

inline constexpr Status kOk = 0;

// The value of a fallible factory: either a fully built T or an error, never half of one.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  static Result Error(Status err) { return Result(ErrorTag{}, err); }

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  Status status() const { return ok() ? kOk : std::get<1>(v_); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  struct ErrorTag {};
  Result(ErrorTag, Status err) : v_(std::in_place_index<1>, err) {}
  std::variant<T, Status> v_;
};

// Overflow-safe "off + len <= size" for ranges that come from untrusted callers.
inline bool RangeFits(uint64_t off, uint64_t len, uint64_t size) {
  return off <= size && len <= size - off;
}

}  // namespace sharegpu
