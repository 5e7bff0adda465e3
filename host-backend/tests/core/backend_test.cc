// The backend's export registry: export identity (UUID, fd), import rules, lifetimes.
#include "core/backend.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/device.h"
#include "core_test_util.h"

namespace sharegpu::testing {
namespace {

constexpr uint64_t kPage = 4096;

class BackendTest : public ::testing::Test {
 protected:
  std::shared_ptr<Device> NewDevice(const std::string& name) {
    auto dev = Device::Create(backend_, DeviceConfig{name, 2 * kMiB, CacheMode::kCoherent});
    EXPECT_TRUE(dev.ok()) << dev.status();
    return dev.ok() ? dev.value() : nullptr;
  }
  static uint32_t NewBo(Device& dev, const std::vector<uint8_t>& bytes) {
    auto h = dev.CreateBo(bytes.size(), Placement::kDevice);
    EXPECT_TRUE(h.ok());
    if (!h.ok()) return 0;
    EXPECT_EQ(dev.CpuWrite(*h, 0, bytes.data(), bytes.size()), kOk);
    return *h;
  }
  static std::vector<uint8_t> Read(Device& dev, uint32_t h, uint64_t len) {
    std::vector<uint8_t> out(len);
    EXPECT_EQ(dev.CpuRead(h, 0, out.data(), len), kOk);
    return out;
  }
  Result<uint32_t> ImportUuid(Device& dev, const sgb_uuid& uuid) {
    auto d = backend_->LookupUuid(uuid);
    if (!d) return Result<uint32_t>::Error(d.status());
    return dev.ImportDmaBuf(*d);
  }
  Result<uint32_t> ImportFd(Device& dev, int fd) {
    auto d = backend_->LookupFd(fd);
    if (!d) return Result<uint32_t>::Error(d.status());
    return dev.ImportDmaBuf(*d);
  }

  std::shared_ptr<Backend> backend_ = Backend::Create();
};

TEST_F(BackendTest, ImportOwnExportReturnsSameHandle) {
  auto a = NewDevice("A");
  uint32_t h = NewBo(*a, RandomBytes(kPage, 1));
  sgb_uuid uuid{};
  int fd = -1;
  ASSERT_EQ(a->Export(h, &uuid, &fd), kOk);
  auto by_uuid = ImportUuid(*a, uuid);
  auto by_fd = ImportFd(*a, fd);
  ASSERT_TRUE(by_uuid.ok() && by_fd.ok());
  EXPECT_EQ(*by_uuid, h);
  EXPECT_EQ(*by_fd, h);
  EXPECT_EQ(a->Stats().bo_count, 1u);
  EXPECT_EQ(a->Stats().import_count, 0u);
  auto info = a->State(h);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->imported, 0u);
  EXPECT_EQ(info->attachments, 0u);  // no self-attachment
  close(fd);
}

TEST_F(BackendTest, ImportTwiceReturnsSameImport) {
  auto a = NewDevice("A");
  auto b = NewDevice("B");
  auto bytes = RandomBytes(2 * kPage, 2);
  uint32_t h = NewBo(*a, bytes);
  sgb_uuid uuid{}, uuid2{};
  ASSERT_EQ(a->Export(h, &uuid, nullptr), kOk);
  ASSERT_EQ(a->Export(h, &uuid2, nullptr), kOk);
  EXPECT_EQ(std::memcmp(uuid.bytes, uuid2.bytes, sizeof(uuid.bytes)), 0)
      << "exporting twice gave two identities";
  auto i1 = ImportUuid(*b, uuid);
  auto i2 = ImportUuid(*b, uuid);
  ASSERT_TRUE(i1.ok() && i2.ok());
  EXPECT_EQ(*i1, *i2);
  EXPECT_EQ(b->Stats().import_count, 1u);
  auto info = a->State(h);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->attachments, 1u);
  EXPECT_EQ(Read(*b, *i1, bytes.size()), bytes);
  // Re-exporting an import names the same buffer.
  sgb_uuid uuid3{};
  ASSERT_EQ(b->Export(*i1, &uuid3, nullptr), kOk);
  EXPECT_EQ(std::memcmp(uuid.bytes, uuid3.bytes, sizeof(uuid.bytes)), 0);
}

TEST_F(BackendTest, ImportByFdAndByUuid) {
  auto a = NewDevice("A");
  auto b = NewDevice("B");
  auto c = NewDevice("C");
  auto bytes = RandomBytes(kPage, 3);
  uint32_t h = NewBo(*a, bytes);
  sgb_uuid uuid{};
  int fd = -1;
  ASSERT_EQ(a->Export(h, &uuid, &fd), kOk);
  ASSERT_GE(fd, 0);
  auto by_fd = ImportFd(*b, fd);
  auto by_uuid = ImportUuid(*b, uuid);
  ASSERT_TRUE(by_fd.ok() && by_uuid.ok());
  EXPECT_EQ(*by_fd, *by_uuid);  // the same buffer, whichever name was used
  EXPECT_EQ(Read(*b, *by_fd, kPage), bytes);
  // A dup of the descriptor (as passed over a socket) names it too.
  int dup_fd = dup(fd);
  ASSERT_GE(dup_fd, 0);
  auto via_dup = ImportFd(*c, dup_fd);
  ASSERT_TRUE(via_dup.ok());
  EXPECT_EQ(Read(*c, *via_dup, kPage), bytes);
  sgb_bo_state info{};
  auto ci = c->State(*via_dup);
  ASSERT_TRUE(ci.ok());
  info = *ci;
  EXPECT_EQ(info.exported, 1u);
  EXPECT_EQ(std::memcmp(info.uuid.bytes, uuid.bytes, sizeof(uuid.bytes)), 0);
  // UUIDs are RFC 4122 version 4.
  EXPECT_EQ(uuid.bytes[6] >> 4, 4);
  EXPECT_EQ(uuid.bytes[8] & 0xc0, 0x80);
  close(dup_fd);
  close(fd);
}

TEST_F(BackendTest, UnknownUuidOrFdRejected) {
  auto a = NewDevice("A");
  auto b = NewDevice("B");
  uint32_t h = NewBo(*a, RandomBytes(kPage, 4));
  sgb_uuid uuid{};
  int fd = -1;
  ASSERT_EQ(a->Export(h, &uuid, &fd), kOk);
  sgb_uuid bogus = uuid;
  bogus.bytes[15] ^= 0xff;
  EXPECT_EQ(ImportUuid(*b, bogus).status(), -ENOENT);
  EXPECT_EQ(ImportUuid(*b, sgb_uuid{}).status(), -ENOENT);
  EXPECT_EQ(ImportFd(*b, -1).status(), -EBADF);
  int closed = dup(fd);
  ASSERT_GE(closed, 0);
  close(closed);
  EXPECT_EQ(ImportFd(*b, closed).status(), -EBADF);
  // A valid descriptor that is not an export.
  int stranger = memfd_create("not-an-export", MFD_CLOEXEC);
  ASSERT_GE(stranger, 0);
  EXPECT_EQ(ImportFd(*b, stranger).status(), -ENOENT);
  close(stranger);
  // The device's own VRAM memfd is not an export either.
  EXPECT_EQ(ImportFd(*b, a->memory().arena().memfd().fd()).status(), -ENOENT);
  EXPECT_EQ(b->Stats().import_count, 0u);
  // Once the export is gone (no handle, no import), its names are unknown.
  ASSERT_EQ(a->DestroyBo(h), kOk);
  EXPECT_EQ(ImportUuid(*b, uuid).status(), -ENOENT);
  EXPECT_EQ(ImportFd(*b, fd).status(), -ENOENT);
  close(fd);
}

TEST_F(BackendTest, ExportOutlivesExporterHandleWhileImported) {
  auto a = NewDevice("A");
  auto b = NewDevice("B");
  auto bytes = RandomBytes(3 * kPage, 5);
  uint32_t h = NewBo(*a, bytes);
  sgb_uuid uuid{};
  ASSERT_EQ(a->Export(h, &uuid, nullptr), kOk);
  auto hb = ImportUuid(*b, uuid);
  ASSERT_TRUE(hb.ok());
  ASSERT_EQ(a->DestroyBo(h), kOk);
  EXPECT_EQ(a->Stats().bo_count, 0u);
  EXPECT_EQ(Read(*b, *hb, bytes.size()), bytes);
  auto crc = b->Checksum(*hb, 0, bytes.size(), nullptr);
  ASSERT_TRUE(crc.ok());
  EXPECT_EQ(*crc, Crc(bytes));
  // Still a named export: another device can import it.
  auto c = NewDevice("C");
  auto hc = ImportUuid(*c, uuid);
  ASSERT_TRUE(hc.ok());
  EXPECT_EQ(Read(*c, *hc, bytes.size()), bytes);
  // Even the exporting device may go away; its VRAM stays while imported.
  a.reset();
  EXPECT_EQ(Read(*b, *hb, bytes.size()), bytes);
  // The last import gone, the export is gone.
  ASSERT_EQ(c->DestroyBo(*hc), kOk);
  ASSERT_EQ(b->DestroyBo(*hb), kOk);
  EXPECT_EQ(ImportUuid(*b, uuid).status(), -ENOENT);
}

}  // namespace
}  // namespace sharegpu::testing
