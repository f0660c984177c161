#include "sessctl_admin.h"

#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "protocol/host_port.h"
#include "sessctl_support.h"

namespace sessiond::sessctl {

namespace {

using json = nlohmann::json;

struct AdminArgs {
  std::string admin = "127.0.0.1:7480";
  std::string dir;
  int iterations = 0;  // 0: until q
};

struct Answer {
  int status = 0;  // HTTP status; 0: no answer
  json body;
  std::string error;  // why there was no usable answer
};

Answer call(const std::string& admin, const std::string& secret, const std::string& method,
            const std::string& path, std::chrono::seconds timeout) {
  Answer out;
  auto hp = parse_host_port(admin);
  if (!hp.ok()) {
    out.error = "--admin: " + hp.status().message();
    return out;
  }
  httplib::Client client(hp->host, hp->port);
  client.set_connection_timeout(std::chrono::seconds(2));
  client.set_read_timeout(timeout);
  httplib::Headers headers;
  if (!secret.empty()) headers.emplace("Authorization", "Bearer " + secret);
  auto res = method == "POST" ? client.Post(path.c_str(), headers, "", "text/plain")
                              : client.Get(path.c_str(), headers);
  if (!res) {
    out.error =
        "no answer from the admin listener at " + admin + ": " + httplib::to_string(res.error());
    return out;
  }
  out.status = res->status;
  out.body = json::parse(res->body, nullptr, false);
  if (out.body.is_discarded()) {
    out.error = "HTTP " + std::to_string(res->status) + " from " + admin + " without JSON";
  } else if (res->status != 200) {
    out.error = out.body.value("error", "HTTP " + std::to_string(res->status));
  }
  return out;
}

int exit_for(const Answer& a) {
  if (a.status == 0 || a.status == 503 || a.status == 502) return kExitUnreachable;
  if (a.status == 400) return kExitUsage;
  if (a.status == 404) return kExitNotFound;
  return kExitRefused;
}

std::string pct_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// ---- top ---------------------------------------------------------------------------------

std::string human(double v) {
  char buf[32];
  if (v >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.1fG", v / 1e9);
  } else if (v >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  } else if (v >= 1e4) {
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  }
  return buf;
}

std::string fit(std::string text, std::size_t width) {
  if (text.size() > width) text.resize(width);
  return text;
}

std::string cell(const std::string& text, int width, bool left = false) {
  char buf[128];
  std::snprintf(buf, sizeof buf, left ? "%-*s" : "%*s", width,
                fit(text, static_cast<std::size_t>(width)).c_str());
  return buf;
}

double number(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

// One screen of `sessctl top` from /cluster's answer, at most `height` lines of `width`.
std::vector<std::string> render(const Answer& a, const std::string& admin, std::size_t width,
                                std::size_t height) {
  std::vector<std::string> lines;
  char clock[16];
  const std::time_t now = std::time(nullptr);
  std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&now));
  if (!a.error.empty()) {
    lines.push_back(std::string("sessiond top  ") + clock + "  (q quits)");
    lines.push_back("");
    lines.push_back("no view of " + admin + ": " + a.error);
    lines.push_back("retrying every second");
  } else {
    const json& c = a.body;
    const json nodes = c.value("nodes", json::array());
    std::size_t up = 0;
    for (const json& n : nodes) up += n.value("up", false) ? 1 : 0;
    lines.push_back("sessiond top  region " + c.value("region", std::string("?")) + ", epoch " +
                    std::to_string(c.value("epoch", 0)) + ", " + std::to_string(up) + "/" +
                    std::to_string(nodes.size()) + " nodes up  " + clock + "  (q quits)");
    lines.push_back("");
    lines.push_back(cell("NODE", 10, true) + " " + cell("STATE", 5, true) + " " + cell("SHARE", 5) +
                    " " + cell("SESSIONS", 9) + " " + cell("OPS/S", 8) + " " + cell("P99 MS", 7) +
                    " " + cell("HIT", 4) + " " + cell("MEM", 7) + " " + cell("CONNS", 5) + " " +
                    cell("ALERTS", 6));
    double sessions = 0, ops = 0;
    std::vector<std::string> alerts;
    std::vector<std::string> regions;
    for (const json& n : nodes) {
      const std::string id = n.value("id", std::string("?"));
      const json& o = n.contains("overview") ? n["overview"] : json();
      std::string state = n.value("down", false) ? "down" : n.value("up", false) ? "up" : "gone";
      if (o.is_object()) {
        sessions += number(o, "sessions");
        ops += number(o, "ops_per_s");
        const json na = o.value("alerts", json::array());
        for (const json& al : na) {
          alerts.push_back(id + " " + al.value("rule", std::string()) + ": " +
                           al.value("detail", std::string()));
        }
        for (const json& r : o.value("regions", json::array())) {
          regions.push_back(id + "->" + r.value("region", std::string()) + " " +
                            std::to_string(r.value("lag_ms", 0)) + " ms/" +
                            std::to_string(r.value("lag_entries", 0)) + " entries");
        }
        char p99[16], hit[16];
        std::snprintf(p99, sizeof p99, "%.2f", number(o, "p99_ms"));
        std::snprintf(hit, sizeof hit, "%.0f%%", 100 * number(o, "hit_ratio"));
        lines.push_back(cell(id, 10, true) + " " + cell(state, 5, true) + " " +
                        cell(std::to_string(std::lround(100 * number(n, "share"))) + "%", 5) + " " +
                        cell(human(number(o, "sessions")), 9) + " " +
                        cell(human(number(o, "ops_per_s")), 8) + " " + cell(p99, 7) + " " +
                        cell(hit, 4) + " " + cell(human(number(o, "memory_bytes")) + "B", 7) + " " +
                        cell(human(number(o, "connections")), 5) + " " +
                        cell(std::to_string(na.size()), 6));
      } else {
        lines.push_back(cell(id, 10, true) + " " + cell(state, 5, true) + " " +
                        cell(std::to_string(std::lround(100 * number(n, "share"))) + "%", 5) +
                        "  " + n.value("error", std::string("no figures")));
      }
    }
    lines.push_back(cell("total", 10, true) + " " + cell("", 5) + " " + cell("", 5) + " " +
                    cell(human(sessions), 9) + " " + cell(human(ops), 8));
    if (c.contains("migration") && c["migration"].is_object()) {
      lines.push_back("");
      lines.push_back("migration " + std::to_string(c["migration"].value("id", 0)) + ": " +
                      c["migration"].value("reason", std::string()));
    }
    lines.push_back("");
    if (regions.empty()) {
      lines.push_back("peer regions: none");
    } else {
      lines.push_back("peer regions (lag):");
      for (const std::string& r : regions) lines.push_back("  " + r);
    }
    lines.push_back("");
    if (alerts.empty()) {
      lines.push_back("alerts: none");
    } else {
      lines.push_back("alerts:");
      for (const std::string& al : alerts) lines.push_back("  " + al);
    }
  }
  if (lines.size() > height) {
    lines.resize(height);
    lines.back() = "...";
  }
  for (std::string& l : lines) l = fit(l, width);
  return lines;
}

std::atomic<bool> interrupted{false};
void on_signal(int) { interrupted.store(true); }

// The terminal in raw mode (no echo, keys at once) for the life of the object.
class RawTerminal {
 public:
  RawTerminal() {
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    std::cout << "\x1b[?1049h\x1b[?25l" << std::flush;  // alternate screen, no cursor
  }
  ~RawTerminal() {
    std::cout << "\x1b[?25h\x1b[?1049l" << std::flush;
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  termios saved_{};
  bool active_ = false;
};

int top(const AdminArgs& a, const std::string& secret) {
  const bool tty = ::isatty(STDOUT_FILENO) && ::isatty(STDIN_FILENO);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  std::optional<RawTerminal> raw;
  if (tty) raw.emplace();
  int frames = 0;
  int last_exit = kExitOk;
  while (!interrupted.load()) {
    const auto started = std::chrono::steady_clock::now();
    const Answer answer = call(a.admin, secret, "GET", "/cluster", std::chrono::seconds(3));
    last_exit = answer.error.empty() ? kExitOk : exit_for(answer);
    std::size_t width = 80, height = 24;
    winsize ws{};
    if (tty && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
      width = ws.ws_col;
      height = ws.ws_row;
    }
    const auto lines = render(answer, a.admin, width, height);
    std::string screen = tty ? "\x1b[H\x1b[2J" : "";
    for (std::size_t i = 0; i < lines.size(); ++i) {
      screen += lines[i];
      if (i + 1 < lines.size() || !tty) screen += "\n";
    }
    std::cout << screen << std::flush;
    if (a.iterations > 0 && ++frames >= a.iterations) break;
    // Until the next second: a q (or Q) quits at once.
    bool quit = false;
    for (;;) {
      const auto left = std::chrono::seconds(1) - (std::chrono::steady_clock::now() - started);
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(left).count();
      if (ms <= 0 || interrupted.load()) break;
      if (!tty) {
        pollfd none{};
        ::poll(&none, 0, static_cast<int>(ms));
        continue;
      }
      pollfd in{STDIN_FILENO, POLLIN, 0};
      if (::poll(&in, 1, static_cast<int>(ms)) > 0) {
        char key = 0;
        if (::read(STDIN_FILENO, &key, 1) == 1 && (key == 'q' || key == 'Q')) {
          quit = true;
          break;
        }
      }
    }
    if (quit) break;
    if (!tty) std::cout << "\n";
  }
  return last_exit;
}

// ---- backup --------------------------------------------------------------------------------

int backup(const AdminArgs& a, const std::string& secret, bool as_json) {
  std::error_code ec;
  const std::string dir = std::filesystem::absolute(a.dir, ec).lexically_normal().string();
  const Answer answer = call(a.admin, secret, "POST", "/api/backup?dir=" + pct_encode(dir),
                             std::chrono::seconds(3600));
  if (!answer.error.empty()) {
    if (as_json) std::cout << json{{"error", {{"message", answer.error}}}}.dump() << "\n";
    std::cerr << "sessctl: backup: " << answer.error << "\n";
    return exit_for(answer);
  }
  if (as_json) {
    std::cout << answer.body.dump() << "\n";
  } else {
    std::cout << "backup of node " << answer.body.value("node", std::string("?")) << " in "
              << answer.body.value("dir", dir) << ": "
              << answer.body.value("sessions", std::uint64_t{0}) << " sessions, "
              << answer.body.value("duration_ms", std::int64_t{0}) << " ms\n"
              << "restore with: sessiond --restore-from " << answer.body.value("dir", dir)
              << " --data-dir EMPTY_DIR ...\n";
  }
  return kExitOk;
}

}  // namespace

void add_admin_commands(CLI::App& app, std::function<int()>& run, const bool& json,
                        const std::string& secret) {
  auto args = std::make_shared<AdminArgs>();
  auto admin_option = [&](CLI::App* sub) {
    sub->add_option("--admin", args->admin, "HOST:PORT of the node's admin HTTP listener")
        ->envname("SESSIOND_ADMIN")
        ->capture_default_str();
  };
  auto* top_command = app.add_subcommand(
      "top", "a live view of the node's region (ops/s, p99, sessions, lag, alerts); q quits");
  admin_option(top_command);
  top_command
      ->add_option("--iterations", args->iterations, "stop after this many refreshes (0: on q)")
      ->check(CLI::Range(0, 1'000'000));
  top_command->callback(
      [&run, args, &secret] { run = [args, &secret] { return top(*args, secret); }; });

  auto* backup_command = app.add_subcommand(
      "backup", "an online backup of the node into DIR, a new directory on the node's machine");
  admin_option(backup_command);
  backup_command->add_option("dir", args->dir, "where the backup goes (must not exist)")
      ->required();
  backup_command->callback([&run, args, &secret, &json] {
    run = [args, &secret, &json] { return backup(*args, secret, json); };
  });
}

}  // namespace sessiond::sessctl
