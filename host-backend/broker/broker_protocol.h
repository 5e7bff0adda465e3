// The sharegpu broker wire protocol, version 2: the one place that defines every message
// (docs/broker.md describes each message, field and error in prose).
//
// Transport: a UNIX SOCK_SEQPACKET socket, so one sendmsg is one message and a receiver sees
// truncation (MSG_TRUNC) instead of losing its framing. Every message is a MsgHeader followed
// by `length` payload bytes; header.length must equal the bytes received after the header.
// At most one file descriptor travels with a message (SCM_RIGHTS), and only with EXPORT and
// MOVE_BEGIN requests and IMPORT replies. Integers are in host byte order (both ends run on
// one host). Every struct has explicit reserved fields instead of padding; reserved fields
// must be zero.
//
// Requests (client -> broker) each get exactly one REPLY carrying the request's seq, also when
// the request is malformed (seq 0 when not even the header could be read). Events (broker ->
// client: INVALIDATE, REVOKED, RELEASE_OK, DENIED) carry seq 0 and are never answered, except
// INVALIDATE, which the importer answers with an ACK_INVALIDATE request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace sharegpu::broker {

inline constexpr uint32_t kMagic = 0x4b424753;  // "SGBK" in memory on little-endian hosts
// 2: RESERVE_IDS, and EXPORT may name an id reserved before (ExportReq.id).
inline constexpr uint16_t kVersion = 2;
// Header plus payload; a larger message is refused with -EMSGSIZE.
inline constexpr size_t kMaxMessage = 64 * 1024;
// Peer (VM) names: 1..31 bytes of [A-Za-z0-9._-], NUL-padded to 32 bytes.
inline constexpr size_t kNameSize = 32;
// Exported buffers: page multiples from one page to 64 GiB.
inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kMaxBufferSize = uint64_t{64} << 30;
// Export ids a peer may hold reserved (RESERVE_IDS) and not yet used at once.
inline constexpr uint32_t kMaxReservedIds = 64;

enum class MsgType : uint16_t {
  // Requests.
  kHello = 1,          // HelloReq -> HelloReply; must be first (except STATUS)
  kExport = 2,         // ExportReq + memfd -> ExportReply
  kGrant = 3,          // GrantReq -> (empty)
  kWithdraw = 4,       // PeerReq -> (empty); revokes that peer's imports of the export
  kUnexport = 5,       // IdReq -> (empty); revokes every import of the export
  kImport = 6,         // ImportReq -> ImportReply + fd
  kReleaseImport = 7,  // IdReq -> (empty)
  kMoveBegin = 8,      // MoveReq + new memfd -> MoveReply; RELEASE_OK follows
  kAckInvalidate = 9,  // AckReq -> (empty)
  kStatus = 10,        // (no payload) -> text; allowed before HELLO (`--status`)
  kReserveIds = 11,    // ReserveReq -> count WireIds, for later EXPORTs of this peer
  // Broker -> client.
  kReply = 64,       // ReplyHead [+ body]
  kInvalidate = 65,  // EventGen: stop using the old pages, then ACK_INVALIDATE
  kRevoked = 66,     // EventRevoked: the import is dead; every later IMPORT of it is -ENODEV
  kReleaseOk = 67,   // EventReleaseOk: the exporter may release the storage it moved from
  kDenied = 68,      // EventDenied: to the exporter: a peer asked to import without a grant
  kOffer = 69,       // EventOffer + fd: to a grantee that accepts offers: an import made for it
};

struct MsgHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t type;    // MsgType
  uint32_t length;  // payload bytes after the header
  uint32_t seq;     // chosen by the client, echoed in the REPLY; 0 in events
};

// A 128-bit export id from getrandom(): unguessable, never reused.
struct WireId {
  uint8_t bytes[16];
};

inline bool operator==(const WireId& a, const WireId& b) {
  return std::memcmp(a.bytes, b.bytes, sizeof(a.bytes)) == 0;
}
inline bool operator<(const WireId& a, const WireId& b) {
  return std::memcmp(a.bytes, b.bytes, sizeof(a.bytes)) < 0;
}

enum Right : uint32_t {
  kRightRead = 1,       // the importer gets a read-only descriptor
  kRightReadWrite = 2,  // the importer gets a read-write descriptor
};

enum RevokeReason : uint32_t {
  kRevokeUnexported = 1,      // the exporter unexported
  kRevokeExporterGone = 2,    // the exporter's connection closed (its VM died)
  kRevokeGrantWithdrawn = 3,  // the exporter withdrew this peer's grant
  kRevokeAckTimeout = 4,      // the importer did not acknowledge an invalidation in time
  kRevokeBrokerGone = 5,      // client side only: the broker connection was lost
};

// --- requests --------------------------------------------------------------------------------

// HELLO flags. With kHelloAcceptOffers the broker imports every export granted to this peer
// for it at once (at the grant, or at HELLO for grants made before) and sends the descriptor
// in an OFFER event: the import then costs the importer no round trip.
inline constexpr uint32_t kHelloAcceptOffers = 1u << 0;

struct HelloReq {
  char name[kNameSize];  // this peer's (VM's) name, unique among connected peers
  uint32_t flags;        // kHelloAcceptOffers or 0
  uint32_t reserved;
};

// EXPORT's id: all zero, and the broker picks one (the reply has it); or one this peer
// reserved with RESERVE_IDS and has not used yet. Knowing the id before the reply lets the
// exporter hand it on (out of band) without waiting for the reply: the ids still come from
// the broker's getrandom, never from a peer.
struct ExportReq {  // + one fd: a memfd sealed F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL
  WireId id;        // all zero, or a reserved id
  uint64_t size;    // == the memfd's size; page multiple, <= kMaxBufferSize
  uint32_t flags;   // 0
  uint32_t right;   // 0: no grant yet; else a first grant (Right) to `peer`, as GRANT would
  char peer[kNameSize];  // all NUL when right is 0
};

struct GrantReq {
  WireId id;
  char peer[kNameSize];  // the importing peer's name (it need not be connected yet)
  uint32_t right;        // Right
  uint32_t reserved;
};

struct PeerReq {  // WITHDRAW
  WireId id;
  char peer[kNameSize];
};

struct IdReq {  // UNEXPORT, RELEASE_IMPORT
  WireId id;
};

inline constexpr uint32_t kImportWantDmabuf = 1u << 0;  // a udmabuf where the host has one

struct ImportReq {
  WireId id;
  uint32_t flags;  // kImportWantDmabuf or 0
  uint32_t reserved;
};

struct MoveReq {  // + one fd: the new storage, sealed like EXPORT's, same size
  WireId id;
  uint64_t size;
};

struct AckReq {
  WireId id;
  uint64_t generation;  // the generation INVALIDATE announced
};

struct ReserveReq {  // -> count WireIds (the reply's body, count * 16 bytes)
  uint32_t count;    // 1 .. kMaxReservedIds minus the ids this peer holds unused
  uint32_t reserved;
};

// --- replies ---------------------------------------------------------------------------------

struct ReplyHead {
  int32_t status;         // 0 or -errno; a body follows only on success
  uint16_t request_type;  // the MsgType answered (0 when the header was unreadable)
  uint16_t reserved;
};

struct HelloReply {
  uint64_t peer_id;       // the broker's number for this connection (logs, --status)
  uint32_t max_message;   // kMaxMessage
  uint32_t udmabuf;       // 1 when the broker can hand out udmabufs
};

struct ExportReply {
  WireId id;
  uint64_t generation;  // 1
};

inline constexpr uint32_t kImportWritable = 1u << 0;
inline constexpr uint32_t kImportDmabuf = 1u << 1;  // the fd is a udmabuf, not a memfd

struct ImportReply {  // + one fd (read-only unless kImportWritable)
  uint64_t size;
  uint64_t generation;
  uint32_t flags;  // kImportWritable | kImportDmabuf
  uint32_t reserved;
};

struct MoveReply {
  uint64_t generation;  // the new generation
  uint32_t notified;    // importers sent INVALIDATE (RELEASE_OK waits for their acks)
  uint32_t reserved;
};

// STATUS reply body: UTF-8 text, not NUL-terminated, the rest of the payload.

// --- events ----------------------------------------------------------------------------------

struct EventGen {  // INVALIDATE
  WireId id;
  uint64_t generation;  // the new generation; acknowledge with it
};

struct EventRevoked {
  WireId id;
  uint32_t reason;  // RevokeReason
  uint32_t reserved;
};

struct EventReleaseOk {
  WireId id;
  uint64_t generation;  // the generation moved to
  uint32_t revoked;     // importers revoked because they did not acknowledge in time
  uint32_t reserved;
};

struct EventDenied {
  WireId id;
  char peer[kNameSize];  // who asked
};

struct EventOffer {  // + one fd, exactly as an IMPORT reply's; the import exists (mapped)
  WireId id;
  uint64_t size;
  uint64_t generation;
  uint32_t flags;  // kImportWritable
  uint32_t reserved;
  char exporter[kNameSize];
};

static_assert(sizeof(MsgHeader) == 16 && sizeof(WireId) == 16 && sizeof(HelloReq) == 40 &&
              sizeof(ExportReq) == 64 && sizeof(GrantReq) == 56 && sizeof(PeerReq) == 48 &&
              sizeof(IdReq) == 16 && sizeof(ImportReq) == 24 && sizeof(MoveReq) == 24 &&
              sizeof(AckReq) == 24 && sizeof(ReserveReq) == 8 && sizeof(ReplyHead) == 8 && sizeof(HelloReply) == 16 &&
              sizeof(ExportReply) == 24 && sizeof(ImportReply) == 24 &&
              sizeof(MoveReply) == 16 && sizeof(EventGen) == 24 &&
              sizeof(EventRevoked) == 24 && sizeof(EventReleaseOk) == 32 &&
              sizeof(EventDenied) == 48 && sizeof(EventOffer) == 72,
              "wire structs have no implicit padding");

// The payload size a request type must have exactly, or -1 for an unknown type.
inline int RequestPayloadSize(uint16_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::kHello: return sizeof(HelloReq);
    case MsgType::kExport: return sizeof(ExportReq);
    case MsgType::kGrant: return sizeof(GrantReq);
    case MsgType::kWithdraw: return sizeof(PeerReq);
    case MsgType::kUnexport:
    case MsgType::kReleaseImport: return sizeof(IdReq);
    case MsgType::kImport: return sizeof(ImportReq);
    case MsgType::kMoveBegin: return sizeof(MoveReq);
    case MsgType::kAckInvalidate: return sizeof(AckReq);
    case MsgType::kStatus: return 0;
    case MsgType::kReserveIds: return sizeof(ReserveReq);
    default: return -1;
  }
}

// Whether a request type carries exactly one fd (all others carry none).
inline bool RequestTakesFd(uint16_t type) {
  return type == static_cast<uint16_t>(MsgType::kExport) ||
         type == static_cast<uint16_t>(MsgType::kMoveBegin);
}

// A NUL-padded name field: 1..31 bytes of [A-Za-z0-9._-], then only NULs.
inline bool ValidName(const char (&field)[kNameSize]) {
  size_t n = 0;
  while (n < kNameSize && field[n] != '\0') {
    char c = field[n];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
    ++n;
  }
  if (n == 0 || n == kNameSize) return false;
  for (size_t i = n; i < kNameSize; ++i) {
    if (field[i] != '\0') return false;
  }
  return true;
}

inline bool ValidName(const std::string& name) {
  if (name.empty() || name.size() >= kNameSize) return false;
  char field[kNameSize] = {};
  std::memcpy(field, name.data(), name.size());
  return ValidName(field);
}

inline std::string NameOf(const char (&field)[kNameSize]) {
  return std::string(field, strnlen(field, kNameSize));
}

inline void SetName(char (&field)[kNameSize], const std::string& name) {
  std::memset(field, 0, kNameSize);
  std::memcpy(field, name.data(), name.size() < kNameSize - 1 ? name.size() : kNameSize - 1);
}

// 32 lowercase hex digits.
std::string IdToString(const WireId& id);
bool IdFromString(const std::string& s, WireId* out);

}  // namespace sharegpu::broker
