// sessctl: the command-line tool of sessiond, on the client library.
//
//   sessctl [--addr HOST:PORT[,HOST:PORT...]] [--json] [--timeout-ms N] [--tls ...] COMMAND [ARGS]
//
// `top` and `backup` talk to the node's admin HTTP listener (--admin), `cluster` to etcd.
//
// Human-readable output by default, one JSON object per command with --json (errors too, as
// {"error":{...}} on stdout; the message also goes to stderr). Exit codes: 0 ok, 1 not found
// or expired, 2 usage (or an argument the node refused), 3 unreachable, 4 any other refusal.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/frame.h"
#include "protocol/version.h"
#include "sessctl_admin.h"
#include "sessctl_cluster.h"
#include "sessctl_support.h"
#include "sessiond/client.h"

namespace {

using namespace sessiond;           // NOLINT(google-build-using-namespace)
using namespace sessiond::sessctl;  // NOLINT(google-build-using-namespace)
// Strings go in through readable_utf8 (sessctl_support.h), so dump() never throws.
using Json = nlohmann::ordered_json;

struct Output {
  bool json = false;

  int error(const Status& status) const {
    if (json) std::cout << json_error(status) << "\n";
    std::cerr << "sessctl: " << status.ToString() << "\n";
    return exit_code_for(status.code());
  }

  template <typename T>
  int print(const Result<T>& result) const {
    if (!result.ok()) return error(result.status());
    std::cout << (json ? to_json(*result) + "\n" : to_text(*result));
    return kExitOk;
  }
};

// Parses repeated NAME=VALUE arguments; a usage error names the bad one.
Result<std::vector<FieldValue>> parse_fields(const std::vector<std::string>& args) {
  std::vector<FieldValue> fields;
  for (const auto& arg : args) {
    auto field = parse_key_value(arg);
    if (!field.ok()) return field.status();
    fields.push_back(std::move(*field));
  }
  return fields;
}

// Timeouts from --idle-ms / --absolute-ms when either was given (the other one is then 0,
// none).
std::optional<Timeouts> timeouts_from(const std::optional<std::int64_t>& idle_ms,
                                      const std::optional<std::int64_t>& absolute_ms) {
  if (!idle_ms && !absolute_ms) return std::nullopt;
  return Timeouts{idle_ms.value_or(0), absolute_ms.value_or(0)};
}

// A repeatable option that takes one value per occurrence (so it never eats a positional).
template <typename T>
CLI::Option* add_repeated(CLI::App* app, const std::string& name, T& target,
                          const std::string& help) {
  return app->add_option(name, target, help)->allow_extra_args(false);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sessctl: command-line client of sessiond, the session store"};
  app.set_version_flag("--version", "sessctl " + std::string(kVersion) + " (protocol " +
                                        std::to_string(protocol::kProtocolVersion) + ")");
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 not found or expired, 2 usage, 3 unreachable or unavailable, "
      "4 refused by the node (e.g. VERSION_CONFLICT, TOO_LARGE).");

  std::string address = "127.0.0.1:7400";
  std::int64_t timeout_ms = 2000;
  Output out;
  app.add_option("--addr", address,
                 "HOST:PORT of the node; in a cluster, seeds separated by commas (a:1,b:2)")
      ->envname("SESSIOND_ADDR")
      ->capture_default_str();
  std::string secret;
  app.add_option("--secret", secret,
                 "shared secret to AUTH with (prefer $SESSIOND_SECRET: the command line shows "
                 "in ps)")
      ->envname("SESSIOND_SECRET");
  ClientTlsOptions tls;
  app.add_flag("--tls", tls.enabled, "connect with TLS (docs/tls.md); implied by --tls-ca/-cert")
      ->envname("SESSIOND_TLS");
  app.add_option("--tls-ca", tls.ca_file,
                 "PEM CA bundle to verify the node with (default: the system's trust store)")
      ->envname("SESSIOND_TLS_CA");
  app.add_option("--tls-cert", tls.cert_file,
                 "PEM client certificate for mutual TLS (its OU may grant a role); needs --tls-key")
      ->envname("SESSIOND_TLS_CERT");
  app.add_option("--tls-key", tls.key_file, "PEM private key of --tls-cert")
      ->envname("SESSIOND_TLS_KEY");
  app.add_option("--tls-server-name", tls.server_name,
                 "name or IP the node's certificate must carry (default: the host of --addr)")
      ->envname("SESSIOND_TLS_SERVER_NAME");
  app.add_flag("--json", out.json, "print one JSON object (errors as {\"error\":...})");
  app.add_option("--timeout-ms", timeout_ms, "deadline of the call")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3'600'000}));

  // The command to run once the line has parsed, and its arguments.
  std::function<int(Client&)> command;
  std::string id;
  std::string user;
  std::vector<std::string> field_args;
  std::vector<std::string> set_args;
  std::vector<std::string> remove_args;
  std::string preset_text;
  std::optional<std::int64_t> idle_ms;
  std::optional<std::int64_t> absolute_ms;
  bool touch = false;
  std::string keep_id;
  std::string payload;
  std::optional<std::string> regenerate_user;
  bool regenerate_authenticated = false;
  const auto non_negative = CLI::Range(std::int64_t{0}, INT64_MAX);

  auto* create = app.add_subcommand("create", "create a session; prints its id and deadline");
  create->add_option("--user", user, "user id (principal) to index it under");
  add_repeated(create, "--field", field_args, "NAME=VALUE, repeatable");
  auto* preset_option =
      create
          ->add_option("--preset", preset_text, "finance | healthcare | ecommerce | media | gaming")
          ->check(CLI::IsMember({"finance", "healthcare", "ecommerce", "media", "gaming"}));
  auto* idle_option =
      create->add_option("--idle-ms", idle_ms, "idle timeout (0: none)")->check(non_negative);
  auto* absolute_option =
      create->add_option("--absolute-ms", absolute_ms, "absolute timeout (0: none)")
          ->check(non_negative);
  preset_option->excludes(idle_option)->excludes(absolute_option);
  std::optional<std::string> context_ip;
  std::optional<std::uint64_t> context_ua;
  create->add_option("--bind-ip", context_ip,
                     "bind the session to this client address or CIDR prefix (203.0.113.0/24)");
  create->add_option("--bind-ua-hash", context_ua, "bind the session to this user-agent hash");
  create->callback([&] {
    command = [&](Client& client) {
      auto fields = parse_fields(field_args);
      if (!fields.ok()) return out.error(fields.status());
      CreateOptions options;
      options.user_id = user;
      options.fields = std::move(*fields);
      if (!preset_text.empty()) options.preset = *preset_from_name(preset_text);
      options.timeouts = timeouts_from(idle_ms, absolute_ms);
      if (context_ip || context_ua) {
        options.context = ClientContext{context_ip.value_or(""), context_ua.value_or(0)};
      }
      return out.print(client.create(options));
    };
  });

  auto* get = app.add_subcommand("get", "print a session");
  get->add_option("id", id, "session id")->required();
  get->add_flag("--touch", touch, "slide the idle deadline");
  std::string access_ip;
  std::uint64_t access_ua = 0;
  std::vector<double> access_at;
  std::optional<std::string> expect_ip;
  std::optional<std::uint64_t> expect_ua;
  get->add_option("--expect-ip", expect_ip,
                  "the reader's address: CONTEXT_MISMATCH if the session is bound elsewhere");
  get->add_option("--expect-ua-hash", expect_ua, "the reader's user-agent hash");
  get->add_option("--record-ip", access_ip,
                  "record an access from this client IP (hijack detection runs on it)");
  get->add_option("--record-ua-hash", access_ua, "the recorded access's user-agent hash");
  get->add_option("--record-at", access_at, "the recorded access's location: LAT LON")
      ->expected(2)
      ->check(CLI::Range(-180.0, 180.0));
  get->callback([&] {
    command = [&](Client& client) {
      GetOptions options;
      options.touch = touch;
      if (expect_ip || expect_ua) {
        options.expect_context = ClientContext{expect_ip.value_or(""), expect_ua.value_or(0)};
      }
      if (!access_ip.empty() || access_ua != 0 || !access_at.empty()) {
        AccessEntry& entry = options.record_access.emplace();
        entry.ip = access_ip;
        entry.user_agent_hash = access_ua;
        if (access_at.size() == 2) {
          if (access_at[0] < -90 || access_at[0] > 90) {
            return out.error(Status::InvalidArgument("--record-at: latitude outside -90..90"));
          }
          entry.has_location = true;
          entry.latitude = access_at[0];
          entry.longitude = access_at[1];
        }
      }
      return out.print(client.get(id, options));
    };
  });

  auto* update = app.add_subcommand("update", "set and remove fields");
  update->add_option("id", id, "session id")->required();
  add_repeated(update, "--set", set_args, "NAME=VALUE, repeatable");
  add_repeated(update, "--remove", remove_args, "field NAME, repeatable");
  update->add_option("--idle-ms", idle_ms, "new idle timeout (0: none)")->check(non_negative);
  update->add_option("--absolute-ms", absolute_ms, "new absolute timeout (0: none)")
      ->check(non_negative);
  update->callback([&] {
    command = [&](Client& client) {
      auto fields = parse_fields(set_args);
      if (!fields.ok()) return out.error(fields.status());
      UpdateOptions options;
      options.set = std::move(*fields);
      options.remove = remove_args;
      options.timeouts = timeouts_from(idle_ms, absolute_ms);
      return out.print(client.update(id, options));
    };
  });

  auto* touch_command = app.add_subcommand("touch", "slide a session's idle deadline");
  touch_command->add_option("id", id, "session id")->required();
  touch_command->callback(
      [&] { command = [&](Client& client) { return out.print(client.touch(id)); }; });

  auto* destroy = app.add_subcommand("destroy", "remove a session");
  destroy->add_option("id", id, "session id")->required();
  destroy->callback([&] {
    command = [&](Client& client) {
      const Status status = client.destroy(id);
      if (!status.ok()) return out.error(status);
      std::cout << (out.json ? Json{{"destroyed", readable_utf8(id)}}.dump() + "\n"
                             : "destroyed " + id + "\n");
      return kExitOk;
    };
  });

  auto* regenerate = app.add_subcommand(
      "regenerate", "give a session a new id (the old one is destroyed); prints the new id");
  regenerate->add_option("id", id, "session id")->required();
  regenerate->add_option("--user", regenerate_user, "bind this user id (e.g. at login)");
  regenerate->add_flag("--authenticated", regenerate_authenticated,
                       "mark the login: set field sessiond.authenticated_at to now");
  regenerate->callback([&] {
    command = [&](Client& client) {
      RegenerateOptions options;
      options.user_id = regenerate_user;
      options.mark_authenticated = regenerate_authenticated;
      return out.print(client.regenerate(id, options));
    };
  });

  auto* list_user = app.add_subcommand("list-user", "list a user's sessions, oldest first");
  list_user->add_option("user", user, "user id")->required();
  list_user->callback(
      [&] { command = [&](Client& client) { return out.print(client.list_user(user)); }; });

  auto* revoke_user = app.add_subcommand("revoke-user", "destroy every session of a user");
  revoke_user->add_option("user", user, "user id")->required();
  revoke_user->add_option("--keep", keep_id, "session id to keep");
  revoke_user->callback([&] {
    command = [&](Client& client) {
      auto revoked = client.revoke_user(user, keep_id);
      if (!revoked.ok()) return out.error(revoked.status());
      std::cout << (out.json ? Json{{"revoked", *revoked}}.dump() + "\n"
                             : "revoked " + std::to_string(*revoked) +
                                   (*revoked == 1 ? " session\n" : " sessions\n"));
      return kExitOk;
    };
  });

  auto* access_log = app.add_subcommand("access-log", "print a session's access history");
  access_log->add_option("id", id, "session id")->required();
  access_log->callback(
      [&] { command = [&](Client& client) { return out.print(client.access_log(id)); }; });

  auto* stats = app.add_subcommand("stats", "print the node's counters");
  stats->callback([&] { command = [&](Client& client) { return out.print(client.stats()); }; });

  // `repair` runs on every node of the region: each repairs the ranges it owns.
  std::string repair_region;
  std::int64_t repair_wait_ms = 600'000;
  auto* repair = app.add_subcommand(
      "repair", "anti-entropy with the peer regions now, on every node of the region");
  repair->add_option("--region", repair_region, "only with this peer region");
  bool repair_check = false;
  repair->add_flag("--check", repair_check,
                   "compare digests only: report the buckets that differ, move nothing");
  repair->add_option("--wait-ms", repair_wait_ms, "how long each node's rounds may take")
      ->capture_default_str();
  std::function<int(Client&, const Client::Options&)> repair_command;
  repair->callback([&] {
    repair_command = [&](Client& client, const Client::Options& base) {
      auto topology = client.topology();
      if (!topology.ok()) return out.error(topology.status());
      std::vector<std::pair<std::string, std::string>> nodes;  // id, address
      if (topology->epoch == 0) {
        nodes.emplace_back(topology->region, base.address);
      } else {
        for (const auto& n : topology->nodes) nodes.emplace_back(n.id, n.address);
      }
      int code = kExitOk;
      Json json = Json::array();
      for (const auto& [node, node_address] : nodes) {
        Client::Options o = base;
        o.address = node_address;
        o.timeout = std::chrono::milliseconds(repair_wait_ms);
        Client one(o);
        auto rounds = one.repair(repair_region, repair_check);
        if (!rounds.ok()) {
          if (!out.json) std::cout << node << ": " << rounds.status().ToString() << "\n";
          json.push_back({{"node", readable_utf8(node)},
                          {"error", readable_utf8(rounds.status().ToString())}});
          code = kExitUnreachable;
          continue;
        }
        for (const RegionRepair& r : *rounds) {
          Json round = {{"node", readable_utf8(node)}, {"region", readable_utf8(r.region)}};
          if (!r.error.empty()) {
            code = kExitUnreachable;
            round["error"] = readable_utf8(r.error);
            json.push_back(std::move(round));
            if (!out.json) std::cout << node << " with " << r.region << ": " << r.error << "\n";
            continue;
          }
          round["buckets_differing"] = r.buckets_differing;
          round["pulled"] = r.pulled;
          round["pushed"] = r.pushed;
          round["bytes"] = r.bytes;
          round["duration_ms"] = r.duration_ms;
          json.push_back(std::move(round));
          if (!out.json) {
            std::cout << node << " with " << r.region << ": " << r.buckets_differing
                      << " buckets differed, " << r.pulled << " states merged here, " << r.pushed
                      << " sent, " << r.bytes << " bytes, " << r.duration_ms << " ms\n";
          }
        }
      }
      if (out.json) std::cout << json.dump() << "\n";
      return code;
    };
  });

  auto* topology = app.add_subcommand(
      "topology", "print the cluster's epoch and nodes, as the first seed that answers knows them");
  topology->callback(
      [&] { command = [&](Client& client) { return out.print(client.topology()); }; });

  auto* ping = app.add_subcommand("ping", "check that the node answers");
  ping->add_option("payload", payload, "bytes to echo");
  ping->callback(
      [&] { command = [&](Client& client) { return out.print(client.ping(payload)); }; });

  // Session ids are base64url, so one in 64 begins with '-', which CLI11 would take for an
  // option. Such an argument (43 or 64 id characters) is marked before parsing and unmarked after.
  constexpr char kIdMark = '\x01';
  auto looks_like_dash_id = [](std::string_view a) {
    return (a.size() == 43 || a.size() == 64) && a[0] == '-' &&
           std::all_of(a.begin(), a.end(), [](char c) {
             return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
           });
  };
  std::vector<std::string> args(argv, argv + argc);
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (looks_like_dash_id(args[i])) args[i].insert(0, 1, kIdMark);
  }
  std::function<int()> cluster_command;  // `cluster ...` talks to etcd, not to a node
  add_cluster_commands(app, cluster_command, out.json);
  std::function<int()> admin_command;  // `top`, `backup`: the node's admin HTTP listener
  add_admin_commands(app, admin_command, out.json, secret);
  std::vector<char*> arg_pointers;
  for (std::string& a : args) arg_pointers.push_back(a.data());
  try {
    app.parse(static_cast<int>(arg_pointers.size()), arg_pointers.data());
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help or the error
    return code == 0 ? kExitOk : kExitUsage;
  }
  for (std::string* text : {&id, &keep_id, &payload}) {
    if (!text->empty() && (*text)[0] == kIdMark) text->erase(0, 1);
  }

  if (cluster_command) return cluster_command();
  if (admin_command) return admin_command();
  Client::Options options;
  options.address = address;
  options.timeout = std::chrono::milliseconds(timeout_ms);
  options.pool_size = 1;
  options.secret = secret;
  if (!tls.ca_file.empty() || !tls.cert_file.empty() || !tls.key_file.empty() ||
      !tls.server_name.empty()) {
    tls.enabled = true;
  }
  options.tls = tls;
  Client client(options);
  if (repair_command) return repair_command(client, options);
  return command(client);
}
