// The C API of the broker client (sharegpu/broker-client.h) over BrokerClient.
#include <cstring>
#include <new>

#include "broker/broker_client.h"
#include "common/log.h"
#include "sharegpu/broker-client.h"

using sharegpu::Status;
using sharegpu::broker::BrokerClient;
using sharegpu::broker::WireId;

struct sgbk_client {
  std::unique_ptr<BrokerClient> impl;
};

namespace {

static_assert(sizeof(sgbk_id) == sizeof(WireId));

WireId ToWire(const sgbk_id* id) {
  WireId w;
  std::memcpy(w.bytes, id->bytes, sizeof(w.bytes));
  return w;
}

sgbk_id FromWire(const WireId& w) {
  sgbk_id id;
  std::memcpy(id.bytes, w.bytes, sizeof(id.bytes));
  return id;
}

struct LogAdapter {
  sgbk_log_fn fn = nullptr;
  void* opaque = nullptr;
} g_log;

void LogThunk(void*, sharegpu::LogLevel level, const char* msg) {
  if (g_log.fn) g_log.fn(g_log.opaque, static_cast<int>(level), msg);
}

}  // namespace

extern "C" {

int sgbk_client_connect(const char* socket_path, const char* vm_name, uint32_t flags,
                        sgbk_client** out) {
  if (!socket_path || !vm_name || !out) return -EINVAL;
  static_assert(SGBK_CONNECT_ACCEPT_OFFERS == sharegpu::broker::kHelloAcceptOffers);
  auto c = BrokerClient::Connect(socket_path, vm_name, BrokerClient::kDefaultTimeoutMs, flags);
  if (!c.ok()) return c.status();
  auto* client = new (std::nothrow) sgbk_client;
  if (!client) return -ENOMEM;
  client->impl = std::move(c.value());
  *out = client;
  return 0;
}

void sgbk_client_free(sgbk_client* client) { delete client; }

void sgbk_client_set_callbacks(sgbk_client* client, const sgbk_callbacks* cb) {
  if (!client) return;
  BrokerClient::Callbacks cbs;
  if (cb) {
    sgbk_callbacks c = *cb;
    if (c.invalidate) {
      cbs.invalidate = [c](const WireId& id, uint64_t gen) {
        sgbk_id i = FromWire(id);
        c.invalidate(c.opaque, &i, gen);
      };
    }
    if (c.revoked) {
      cbs.revoked = [c](const WireId& id, uint32_t reason) {
        sgbk_id i = FromWire(id);
        c.revoked(c.opaque, &i, reason);
      };
    }
    if (c.release_ok) {
      cbs.release_ok = [c](const WireId& id, uint64_t gen, uint32_t revoked) {
        sgbk_id i = FromWire(id);
        c.release_ok(c.opaque, &i, gen, revoked);
      };
    }
    if (c.denied) {
      cbs.denied = [c](const WireId& id, const std::string& peer) {
        sgbk_id i = FromWire(id);
        c.denied(c.opaque, &i, peer.c_str());
      };
    }
    if (c.offered) {
      cbs.offered = [c](const WireId& id, const std::string& exporter, uint64_t size,
                        bool writable) {
        sgbk_id i = FromWire(id);
        c.offered(c.opaque, &i, exporter.c_str(), size, writable ? 1 : 0);
      };
    }
    if (c.disconnected) cbs.disconnected = [c] { c.disconnected(c.opaque); };
    if (c.export_failed) {
      cbs.export_failed = [c](const WireId& id, Status status) {
        sgbk_id i = FromWire(id);
        c.export_failed(c.opaque, &i, status);
      };
    }
  }
  client->impl->SetCallbacks(std::move(cbs));
}

void sgbk_client_set_timeout(sgbk_client* client, int timeout_ms) {
  if (client && timeout_ms > 0) client->impl->set_timeout_ms(timeout_ms);
}

int sgbk_client_fd(sgbk_client* client) { return client ? client->impl->fd() : -EINVAL; }

int sgbk_client_dispatch(sgbk_client* client) {
  return client ? client->impl->Dispatch() : -EINVAL;
}

int sgbk_client_connected(sgbk_client* client) {
  return client && client->impl->connected() ? 1 : 0;
}

int sgbk_client_reconnect(sgbk_client* client) {
  return client ? client->impl->Reconnect() : -EINVAL;
}

int sgbk_export(sgbk_client* client, int memfd, uint64_t size, const char* peer,
                uint32_t right, sgbk_id* out) {
  if (!client || !out || (peer == nullptr) != (right == 0)) return -EINVAL;
  auto id = client->impl->Export(memfd, size, peer ? peer : "", right);
  if (!id.ok()) return id.status();
  *out = FromWire(id.value());
  return 0;
}

int sgbk_export_queued(sgbk_client* client, int memfd, uint64_t size, const char* peer,
                       uint32_t right, sgbk_id* out) {
  if (!client || !out || (peer == nullptr) != (right == 0)) return -EINVAL;
  auto id = client->impl->ExportQueued(memfd, size, peer ? peer : "", right);
  if (!id.ok()) return id.status();
  *out = FromWire(id.value());
  return 0;
}

int sgbk_grant(sgbk_client* client, const sgbk_id* id, const char* peer, uint32_t right) {
  if (!client || !id || !peer) return -EINVAL;
  return client->impl->Grant(ToWire(id), peer, right);
}

int sgbk_withdraw(sgbk_client* client, const sgbk_id* id, const char* peer) {
  if (!client || !id || !peer) return -EINVAL;
  return client->impl->Withdraw(ToWire(id), peer);
}

int sgbk_unexport(sgbk_client* client, const sgbk_id* id) {
  if (!client || !id) return -EINVAL;
  return client->impl->Unexport(ToWire(id));
}

int sgbk_move_begin(sgbk_client* client, const sgbk_id* id, int new_memfd, uint64_t size,
                    uint64_t* generation) {
  if (!client || !id) return -EINVAL;
  auto r = client->impl->MoveBegin(ToWire(id), new_memfd, size);
  if (!r.ok()) return r.status();
  if (generation) *generation = r->generation;
  return 0;
}

int sgbk_import(sgbk_client* client, const sgbk_id* id, uint32_t flags, sgbk_import_info* out) {
  if (!client || !id || !out) return -EINVAL;
  auto r = client->impl->Import(ToWire(id), flags);
  if (!r.ok()) return r.status();
  std::memset(out, 0, sizeof(*out));
  out->fd = r->fd.Release();
  out->writable = r->writable ? 1 : 0;
  out->dmabuf = r->dmabuf ? 1 : 0;
  out->size = r->size;
  out->generation = r->generation;
  return 0;
}

int sgbk_ack_invalidate(sgbk_client* client, const sgbk_id* id, uint64_t generation) {
  if (!client || !id) return -EINVAL;
  return client->impl->AckInvalidate(ToWire(id), generation);
}

int sgbk_release_import(sgbk_client* client, const sgbk_id* id) {
  if (!client || !id) return -EINVAL;
  return client->impl->ReleaseImport(ToWire(id));
}

int sgbk_status(const char* socket_path, char* buf, size_t cap, size_t* len) {
  if (!socket_path || (!buf && cap)) return -EINVAL;
  auto text = BrokerClient::QueryStatus(socket_path);
  if (!text.ok()) return text.status();
  if (len) *len = text->size();
  if (cap) {
    size_t n = text->size() < cap - 1 ? text->size() : cap - 1;
    std::memcpy(buf, text->data(), n);
    buf[n] = '\0';
  }
  return 0;
}

void sgbk_id_format(const sgbk_id* id, char out[33]) {
  if (!id || !out) return;
  std::string s = sharegpu::broker::IdToString(ToWire(id));
  std::memcpy(out, s.c_str(), 33);
}

int sgbk_id_parse(const char* text, sgbk_id* out) {
  if (!text || !out) return -EINVAL;
  WireId w;
  if (!sharegpu::broker::IdFromString(text, &w)) return -EINVAL;
  *out = FromWire(w);
  return 0;
}

const char* sgbk_strerror(int err) {
  switch (err) {
    case 0: return "success";
    case -ENOENT: return "no such export (or not ours)";
    case -EACCES: return "not granted (or credentials refused)";
    case -ENODEV: return "import revoked";
    case -EBUSY: return "a move or invalidation is pending";
    case -EADDRINUSE: return "peer name already connected";
    case -ENOTCONN: return "not connected to the broker";
    case -ETIMEDOUT: return "the broker did not answer in time";
    case -EPROTO: return "protocol error (HELLO first?)";
    case -EPROTONOSUPPORT: return "protocol version not supported";
    case -EBADMSG: return "malformed message";
    case -EMSGSIZE: return "message too large";
    case -ETOOMANYREFS: return "descriptor where none belongs";
    case -EBADF: return "bad or missing descriptor";
    case -EPERM: return "memfd not sealed as required";
    case -ESTALE: return "acknowledged a generation that is not current";
    case -EUSERS: return "too many peers";
    default: return strerror(-err);
  }
}

void sgbk_set_log_handler(sgbk_log_fn fn, void* opaque) {
  g_log.fn = fn;
  g_log.opaque = opaque;
  sharegpu::SetLogSink(fn ? LogThunk : nullptr, nullptr);
}

}  // extern "C"
