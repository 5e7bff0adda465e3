#include "mem/memfd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace sharegpu {
namespace {

std::unique_ptr<Memfd> MakeMemfd(uint64_t size) {
  auto m = Memfd::Create("memfd-test", size);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(m).value() : nullptr;
}

off_t FileSize(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_size;
}

TEST(MemfdTest, SizeIsRoundedUpToPages) {
  for (uint64_t size : {uint64_t{1}, kPageSize - 1, kPageSize, kPageSize + 1, 5 * kPageSize}) {
    auto m = MakeMemfd(size);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->size(), PageAlignUp(size)) << size;
    EXPECT_TRUE(IsPageAligned(m->size()));
    EXPECT_GE(m->size(), size);
    EXPECT_EQ(static_cast<uint64_t>(FileSize(m->fd())), m->size());
  }
}

TEST(MemfdTest, SealsPresent) {
  auto m = MakeMemfd(kPageSize);
  ASSERT_NE(m, nullptr);
  const int seals = ::fcntl(m->fd(), F_GET_SEALS);
  ASSERT_GE(seals, 0);
  EXPECT_TRUE(seals & F_SEAL_SHRINK);
  EXPECT_TRUE(seals & F_SEAL_GROW);
  EXPECT_TRUE(seals & F_SEAL_SEAL);
  // Writes must stay possible: the device and the CPU share the pages.
  EXPECT_FALSE(seals & F_SEAL_WRITE);
  // F_SEAL_SEAL: nobody can add or remove seals later.
  EXPECT_EQ(::fcntl(m->fd(), F_ADD_SEALS, F_SEAL_WRITE), -1);
  EXPECT_EQ(errno, EPERM);
}

TEST(MemfdTest, ShrinkAndGrowRefused) {
  auto m = MakeMemfd(2 * kPageSize);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(::ftruncate(m->fd(), static_cast<off_t>(kPageSize)), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(m->fd(), static_cast<off_t>(4 * kPageSize)), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(static_cast<uint64_t>(FileSize(m->fd())), 2 * kPageSize);
  // The mapping still covers the whole file: the last byte is accessible.
  m->data()[m->size() - 1] = 0x5a;
  EXPECT_EQ(m->data()[m->size() - 1], 0x5a);
}

TEST(MemfdTest, ZeroAndTooLargeRejected) {
  EXPECT_EQ(Memfd::Create("zero", 0).status(), -EINVAL);
  EXPECT_EQ(Memfd::Create("big", Memfd::kMaxSize + 1).status(), -E2BIG);
  EXPECT_EQ(Memfd::Create("huge", UINT64_MAX).status(), -E2BIG);
  EXPECT_EQ(Memfd::Create("huge", UINT64_MAX - kPageSize + 2).status(), -E2BIG);
}

TEST(MemfdTest, MappingIsSharedWithTheFile) {
  auto m = MakeMemfd(2 * kPageSize);
  ASSERT_NE(m, nullptr);
  std::memset(m->data(), 0xab, m->size());
  const uint8_t marker[4] = {1, 2, 3, 4};
  ASSERT_EQ(::pwrite(m->fd(), marker, sizeof(marker), static_cast<off_t>(kPageSize + 7)), 4);
  EXPECT_EQ(std::memcmp(m->data() + kPageSize + 7, marker, 4), 0);
  uint8_t back = 0;
  ASSERT_EQ(::pread(m->fd(), &back, 1, 3), 1);
  EXPECT_EQ(back, 0xab);
}

TEST(MemfdTest, DupFdRefersToTheSameFileAndIsCloexec) {
  auto m = MakeMemfd(kPageSize);
  ASSERT_NE(m, nullptr);
  auto dup = m->DupFd();
  ASSERT_TRUE(dup.ok());
  EXPECT_NE(dup->get(), m->fd());
  EXPECT_TRUE(::fcntl(dup->get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_TRUE(::fcntl(m->fd(), F_GETFD) & FD_CLOEXEC);
  m->data()[9] = 0x77;
  uint8_t back = 0;
  ASSERT_EQ(::pread(dup->get(), &back, 1, 9), 1);
  EXPECT_EQ(back, 0x77);
}

}  // namespace
}  // namespace sharegpu
