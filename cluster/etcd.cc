#include "cluster/etcd.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "protocol/base64url.h"
#include "protocol/host_port.h"

namespace sessiond::cluster {
namespace {

using nlohmann::json;

// etcd's JSON gateway speaks standard base64 with padding; ours is base64url without.
std::string b64(std::string_view bytes) {
  std::string s = base64url_encode(bytes);
  for (char& c : s) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (s.size() % 4 != 0) s += '=';
  return s;
}

Result<std::string> unb64(std::string_view text) {
  std::string s(text);
  while (!s.empty() && s.back() == '=') s.pop_back();
  for (char& c : s) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return base64url_decode(s);
}

// The gateway writes 64-bit numbers as strings; accept numbers too.
std::int64_t number(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return 0;
  if (it->is_string()) return std::stoll(it->get<std::string>());
  if (it->is_number()) return it->get<std::int64_t>();
  return 0;
}

KeyValue kv_from_json(const json& j) {
  KeyValue kv;
  if (auto k = unb64(j.value("key", std::string())); k.ok()) kv.key = std::move(k).value();
  if (auto v = unb64(j.value("value", std::string())); v.ok()) kv.value = std::move(v).value();
  kv.create_revision = number(j, "create_revision");
  kv.mod_revision = number(j, "mod_revision");
  kv.version = number(j, "version");
  kv.lease = number(j, "lease");
  return kv;
}

json op_to_json(const TxnOp& op) {
  switch (op.kind) {
    case TxnOp::Kind::kPut: {
      json put = {{"key", b64(op.key)}, {"value", b64(op.value)}};
      if (op.lease != 0) put["lease"] = std::to_string(op.lease);
      return {{"request_put", put}};
    }
    case TxnOp::Kind::kDelete:
      return {{"request_delete_range", {{"key", b64(op.key)}}}};
    case TxnOp::Kind::kDeletePrefix:
      return {
          {"request_delete_range", {{"key", b64(op.key)}, {"range_end", b64(prefix_end(op.key))}}}};
  }
  return {};
}

json compare_to_json(const Compare& c) {
  json j = {{"key", b64(c.key)}, {"result", "EQUAL"}};
  switch (c.target) {
    case Compare::Target::kModRevision:
      j["target"] = "MOD";
      j["mod_revision"] = std::to_string(c.number);
      break;
    case Compare::Target::kCreateRevision:
      j["target"] = "CREATE";
      j["create_revision"] = std::to_string(c.number);
      break;
    case Compare::Target::kVersion:
      j["target"] = "VERSION";
      j["version"] = std::to_string(c.number);
      break;
    case Compare::Target::kValue:
      j["target"] = "VALUE";
      j["value"] = b64(c.value);
      break;
  }
  return j;
}

Result<json> parse_answer(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Unavailable("etcd: an answer that is not JSON: " + body.substr(0, 200));
  }
  if (j.contains("error")) {
    const std::string message = j.value("message", j["error"].dump());
    // gRPC code 5 (NOT_FOUND): an expired lease, for instance.
    if (j.value("code", 0) == 5) return Status::NotFound("etcd: " + message);
    return Status::Unavailable("etcd: " + message);
  }
  return j;
}

httplib::Client make_client(const HostPort& hp, std::chrono::milliseconds connect,
                            std::chrono::milliseconds read) {
  httplib::Client client(hp.host, hp.port);
  client.set_connection_timeout(connect);
  client.set_read_timeout(read);
  client.set_write_timeout(connect);
  client.set_keep_alive(false);
  return client;
}

}  // namespace

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

Result<std::vector<std::string>> EtcdClient::parse_endpoints(std::string_view list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = list.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) continue;
    if (item.starts_with("https://")) {
      return Status::InvalidArgument("etcd endpoint \"" + std::string(item) +
                                     "\": only http:// is supported (etcd on a private network)");
    }
    if (item.starts_with("http://")) item.remove_prefix(7);
    while (!item.empty() && item.back() == '/') item.remove_suffix(1);
    auto hp = parse_host_port(item);
    if (!hp.ok()) return Status::InvalidArgument("etcd endpoint: " + hp.status().message());
    if (hp->port == 0) {
      return Status::InvalidArgument("etcd endpoint \"" + std::string(item) + "\" has no port");
    }
    out.emplace_back(item);
  }
  if (out.empty()) return Status::InvalidArgument("no etcd endpoint given");
  return out;
}

EtcdClient::EtcdClient(std::vector<std::string> endpoints, std::chrono::milliseconds timeout)
    : endpoints_(std::move(endpoints)), timeout_(timeout) {}

Result<std::string> EtcdClient::post(std::string_view path, const std::string& body) const {
  std::string failures;
  const std::size_t first = preferred_.load(std::memory_order_relaxed);
  for (std::size_t k = 0; k < endpoints_.size(); ++k) {
    const std::size_t i = (first + k) % endpoints_.size();
    auto hp = parse_host_port(endpoints_[i]);
    if (!hp.ok()) continue;
    httplib::Client client = make_client(*hp, timeout_, timeout_);
    auto res = client.Post(std::string(path), body, "application/json");
    if (!res) {
      failures +=
          (failures.empty() ? "" : "; ") + endpoints_[i] + ": " + httplib::to_string(res.error());
      continue;
    }
    if (res->status >= 500 && res->body.find("\"error\"") == std::string::npos) {
      failures +=
          (failures.empty() ? "" : "; ") + endpoints_[i] + ": HTTP " + std::to_string(res->status);
      continue;
    }
    preferred_.store(i, std::memory_order_relaxed);
    return std::move(res->body);
  }
  return Status::Unavailable("etcd unreachable (" + failures + ")");
}

Result<std::optional<KeyValue>> EtcdClient::get(std::string_view key) const {
  auto body = post("/v3/kv/range", json{{"key", b64(key)}}.dump());
  if (!body.ok()) return body.status();
  auto j = parse_answer(*body);
  if (!j.ok()) return j.status();
  if (!j->contains("kvs") || (*j)["kvs"].empty()) return std::optional<KeyValue>();
  return std::optional<KeyValue>(kv_from_json((*j)["kvs"][0]));
}

Result<EtcdClient::Range> EtcdClient::get_prefix(std::string_view prefix) const {
  auto body = post("/v3/kv/range",
                   json{{"key", b64(prefix)}, {"range_end", b64(prefix_end(prefix))}}.dump());
  if (!body.ok()) return body.status();
  auto j = parse_answer(*body);
  if (!j.ok()) return j.status();
  Range out;
  out.revision = number((*j)["header"], "revision");
  if (j->contains("kvs")) {
    for (const json& kv : (*j)["kvs"]) out.kvs.push_back(kv_from_json(kv));
  }
  return out;
}

Result<std::int64_t> EtcdClient::put(std::string_view key, std::string_view value,
                                     std::int64_t lease) const {
  json request = {{"key", b64(key)}, {"value", b64(value)}};
  if (lease != 0) request["lease"] = std::to_string(lease);
  auto body = post("/v3/kv/put", request.dump());
  if (!body.ok()) return body.status();
  auto j = parse_answer(*body);
  if (!j.ok()) return j.status();
  return number((*j)["header"], "revision");
}

Result<std::int64_t> EtcdClient::erase(std::string_view key) const {
  auto body = post("/v3/kv/deleterange", json{{"key", b64(key)}}.dump());
  if (!body.ok()) return body.status();
  auto j = parse_answer(*body);
  if (!j.ok()) return j.status();
  return number(*j, "deleted");
}

Result<bool> EtcdClient::txn(const Txn& txn) const {
  json request = {
      {"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const Compare& c : txn.compare) request["compare"].push_back(compare_to_json(c));
  for (const TxnOp& op : txn.success) request["success"].push_back(op_to_json(op));
  for (const TxnOp& op : txn.failure) request["failure"].push_back(op_to_json(op));
  auto body = post("/v3/kv/txn", request.dump());
  if (!body.ok()) return body.status();
  auto j = parse_answer(*body);
  if (!j.ok()) return j.status();
  return j->value("succeeded", false);
}

Result<std::int64_t> EtcdClient::grant_lease(std::chrono::milliseconds ttl) const {
  const std::int64_t seconds = std::max<std::int64_t>(1, (ttl.count() + 999) / 1000);
  auto body = post("/v3/lease/grant", json{{"TTL", std::to_string(seconds)}}.dump());
  if (!body.ok()) return body.status();
  auto j = parse_answer(*body);
  if (!j.ok()) return j.status();
  const std::int64_t id = number(*j, "ID");
  if (id == 0) return Status::Unavailable("etcd granted no lease: " + body->substr(0, 200));
  return id;
}

Result<std::int64_t> EtcdClient::keep_alive(std::int64_t lease) const {
  auto body = post("/v3/lease/keepalive", json{{"ID", std::to_string(lease)}}.dump());
  if (!body.ok()) return body.status();
  auto j = parse_answer(*body);
  if (!j.ok()) return j.status();
  const json& result = j->contains("result") ? (*j)["result"] : *j;
  const std::int64_t ttl = number(result, "TTL");
  if (ttl <= 0) return Status::NotFound("etcd: lease " + std::to_string(lease) + " has expired");
  return ttl;
}

Status EtcdClient::revoke_lease(std::int64_t lease) const {
  auto body = post("/v3/lease/revoke", json{{"ID", std::to_string(lease)}}.dump());
  if (!body.ok()) return body.status();
  auto j = parse_answer(*body);
  return j.ok() || j.status().code() == StatusCode::kNotFound ? Status() : j.status();
}

Status EtcdClient::watch(
    std::string_view prefix, std::int64_t start_revision,
    const std::function<void(const std::vector<WatchEvent>&, std::int64_t)>& on_events,
    const std::atomic<bool>& stop, std::chrono::milliseconds poll) const {
  std::int64_t next = start_revision;
  while (!stop.load()) {
    const std::size_t i = preferred_.load(std::memory_order_relaxed) % endpoints_.size();
    auto hp = parse_host_port(endpoints_[i]);
    if (!hp.ok()) return hp.status();
    httplib::Client client = make_client(*hp, timeout_, poll);
    json create = {{"key", b64(prefix)}, {"range_end", b64(prefix_end(prefix))}};
    if (next > 0) create["start_revision"] = std::to_string(next);
    httplib::Request request;
    request.method = "POST";
    request.path = "/v3/watch";
    request.body = json{{"create_request", create}}.dump();
    request.set_header("Content-Type", "application/json");
    std::string buffer;
    Status failure;
    request.content_receiver = [&](const char* data, std::size_t length, std::uint64_t,
                                   std::uint64_t) {
      buffer.append(data, length);
      for (std::size_t end; (end = buffer.find('\n')) != std::string::npos;) {
        const std::string line = buffer.substr(0, end);
        buffer.erase(0, end + 1);
        auto j = parse_answer(line);
        if (!j.ok()) {
          failure = j.status();
          return false;
        }
        const json& result = j->contains("result") ? (*j)["result"] : *j;
        if (result.value("canceled", false)) {
          const std::int64_t compacted = number(result, "compact_revision");
          failure = compacted > 0
                        ? Status::NotFound("etcd: revision " + std::to_string(next) +
                                           " was compacted (now " + std::to_string(compacted) + ")")
                        : Status::Unavailable("etcd cancelled the watch: " +
                                              result.value("cancel_reason", std::string()));
          return false;
        }
        const std::int64_t revision = number(result.value("header", json::object()), "revision");
        std::vector<WatchEvent> events;
        if (result.contains("events")) {
          for (const json& e : result["events"]) {
            WatchEvent event;
            event.deleted = e.value("type", std::string()) == "DELETE";
            event.kv = kv_from_json(e.value("kv", json::object()));
            next = std::max(next, event.kv.mod_revision + 1);
            events.push_back(std::move(event));
          }
        }
        if (!events.empty()) on_events(events, revision);
      }
      return !stop.load();
    };
    httplib::Response response;
    httplib::Error error = httplib::Error::Success;
    const bool sent = client.send(request, response, error);
    if (!failure.ok()) return failure;
    if (stop.load()) break;
    // A read timeout is the poll: no event within `poll`, so look at `stop` and watch again from
    // the next revision. Anything else is a failure the caller handles.
    if (!sent && error != httplib::Error::Read) {
      return Status::Unavailable("etcd watch on " + endpoints_[i] + ": " +
                                 httplib::to_string(error));
    }
    if (sent && response.status != 200) {
      return Status::Unavailable("etcd watch on " + endpoints_[i] + ": HTTP " +
                                 std::to_string(response.status));
    }
  }
  return {};
}

}  // namespace sessiond::cluster
