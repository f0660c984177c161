// A RESP2 command is either an array of bulk strings ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or an
// inline line ("GET k\r\n", split on blanks with Redis's quoting: "..." with backslash escapes
// and '...' verbatim). Lengths are parsed as Redis does: decimal, no sign except "-1" for nil
// (which a client must not send in a request), and checked against the limits before the
// parser waits for the bytes they announce.
#include "daemon/resp.h"

#include <cctype>
#include <charconv>

namespace sessiond::daemon::resp {
namespace {

Parsed error(std::string text) {
  Parsed p;
  p.kind = Parsed::Kind::kError;
  p.error = "ERR Protocol error: " + std::move(text);
  return p;
}

// Parses a non-negative decimal that spans all of `text`.
bool parse_length(std::string_view text, std::size_t* out) {
  if (text.empty() || text.size() > 18) return false;
  std::uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return false;
  *out = static_cast<std::size_t>(value);
  return true;
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Splits an inline line like Redis's sdssplitargs. Quoted arguments with escapes are decoded
// into `storage` (kept alive by the caller); others are views into `line`.
bool split_inline(std::string_view line, std::vector<std::string_view>* args,
                  std::vector<std::string>* storage) {
  std::size_t i = 0;
  while (true) {
    while (i < line.size() && is_blank(line[i])) ++i;
    if (i == line.size()) return true;
    if (line[i] != '"' && line[i] != '\'') {
      const std::size_t start = i;
      while (i < line.size() && !is_blank(line[i])) ++i;
      args->push_back(line.substr(start, i - start));
      continue;
    }
    const char quote = line[i++];
    std::string value;
    bool closed = false;
    while (i < line.size()) {
      const char c = line[i];
      if (quote == '"' && c == '\\' && i + 1 < line.size()) {
        const char e = line[i + 1];
        if (e == 'x' && i + 3 < line.size() && hex_value(line[i + 2]) >= 0 &&
            hex_value(line[i + 3]) >= 0) {
          value.push_back(static_cast<char>(hex_value(line[i + 2]) * 16 + hex_value(line[i + 3])));
          i += 4;
          continue;
        }
        value.push_back(e == 'n'   ? '\n'
                        : e == 'r' ? '\r'
                        : e == 't' ? '\t'
                        : e == 'b' ? '\b'
                        : e == 'a' ? '\a'
                                   : e);
        i += 2;
        continue;
      }
      if (quote == '\'' && c == '\\' && i + 1 < line.size() && line[i + 1] == '\'') {
        value.push_back('\'');
        i += 2;
        continue;
      }
      if (c == quote) {
        closed = true;
        ++i;
        break;
      }
      value.push_back(c);
      ++i;
    }
    // A closing quote must be followed by a blank or the end of the line.
    if (!closed || (i < line.size() && !is_blank(line[i]))) return false;
    storage->push_back(std::move(value));
    args->push_back(storage->back());
  }
}

}  // namespace

Parsed parse_command(std::string_view buffer, const Limits& limits,
                     std::vector<std::string_view>* args) {
  args->clear();
  Parsed out;
  if (buffer.empty()) return out;

  if (buffer[0] != '*') {
    // Inline command: one line, ended by \n (\r\n or \n, as Redis accepts).
    const std::size_t eol = buffer.find('\n');
    if (eol == std::string_view::npos) {
      if (buffer.size() > limits.max_inline_bytes) return error("too big inline request");
      return out;
    }
    if (eol > limits.max_inline_bytes) return error("too big inline request");
    std::string_view line = buffer.substr(0, eol);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // Quoted arguments need decoded storage; they live in a thread-local list that is reset
    // per command, which keeps the views valid until the next parse on this thread.
    thread_local std::vector<std::string> decoded;
    decoded.clear();
    decoded.reserve(line.size());  // no reallocation: views into it stay valid
    if (!split_inline(line, args, &decoded)) return error("unbalanced quotes in request");
    if (args->size() > limits.max_arguments) return error("invalid multibulk length");
    out.consumed = eol + 1;
    out.kind = args->empty() ? Parsed::Kind::kEmpty : Parsed::Kind::kCommand;
    return out;
  }

  // "*<count>\r\n" then count x "$<len>\r\n<bytes>\r\n".
  std::size_t pos = 1;
  auto read_line = [&](std::string_view* line) {
    const std::size_t cr = buffer.find("\r\n", pos);
    if (cr == std::string_view::npos) return false;
    *line = buffer.substr(pos, cr - pos);
    pos = cr + 2;
    return true;
  };
  auto need_more = [&] {
    args->clear();
    return Parsed{};
  };
  std::string_view line;
  if (!read_line(&line)) {
    if (buffer.size() > limits.max_inline_bytes) return error("too big count string");
    return out;
  }
  std::size_t count = 0;
  if (line != "-1" && (!parse_length(line, &count) || count > limits.max_arguments)) {
    return error("invalid multibulk length");
  }
  if (count == 0) {  // "*0" and "*-1": Redis skips them
    out.kind = Parsed::Kind::kEmpty;
    out.consumed = pos;
    return out;
  }
  for (std::size_t n = 0; n < count; ++n) {
    if (pos >= buffer.size()) return need_more();
    if (buffer[pos] != '$') {
      return error(std::string("expected '$', got '") + buffer[pos] + "'");
    }
    ++pos;
    if (!read_line(&line)) {
      if (buffer.size() - pos > 32) return error("invalid bulk length");
      return need_more();
    }
    std::size_t len = 0;
    if (!parse_length(line, &len) || len > limits.max_bulk_bytes) {
      return error("invalid bulk length");
    }
    if (buffer.size() - pos < len + 2) return need_more();
    if (buffer[pos + len] != '\r' || buffer[pos + len + 1] != '\n') {
      return error("bulk string not terminated by CRLF");
    }
    args->push_back(buffer.substr(pos, len));
    pos += len + 2;
  }
  out.kind = Parsed::Kind::kCommand;
  out.consumed = pos;
  return out;
}

void append_simple(std::string* out, std::string_view text) {
  out->push_back('+');
  out->append(text);
  out->append("\r\n");
}

void append_error(std::string* out, std::string_view text) {
  out->push_back('-');
  for (char c : text) out->push_back(c == '\r' || c == '\n' ? ' ' : c);
  out->append("\r\n");
}

void append_integer(std::string* out, std::int64_t value) {
  out->push_back(':');
  out->append(std::to_string(value));
  out->append("\r\n");
}

void append_bulk(std::string* out, std::string_view value) {
  out->push_back('$');
  out->append(std::to_string(value.size()));
  out->append("\r\n");
  out->append(value);
  out->append("\r\n");
}

void append_null(std::string* out) { out->append("$-1\r\n"); }

void append_array_header(std::string* out, std::size_t count) {
  out->push_back('*');
  out->append(std::to_string(count));
  out->append("\r\n");
}

void append_null_array(std::string* out) { out->append("*-1\r\n"); }

void append_command(std::string* out, std::span<const std::string_view> args) {
  append_array_header(out, args.size());
  for (std::string_view a : args) append_bulk(out, a);
}

namespace {

// The reply starting at `at`: its end, 0 when incomplete, npos when malformed.
std::size_t reply_end(std::string_view b, std::size_t at, int depth) {
  if (depth > 32) return std::string_view::npos;
  if (at >= b.size()) return 0;
  const std::size_t eol = b.find("\r\n", at);
  if (eol == std::string_view::npos) return 0;
  const char type = b[at];
  if (type == '+' || type == '-' || type == ':') return eol + 2;
  if (type != '$' && type != '*') return std::string_view::npos;
  long long n = 0;
  const std::string_view digits = b.substr(at + 1, eol - at - 1);
  if (digits == "-1") return eol + 2;
  for (char c : digits) {
    if (c < '0' || c > '9' || n > (1LL << 40)) return std::string_view::npos;
    n = n * 10 + (c - '0');
  }
  if (digits.empty()) return std::string_view::npos;
  if (type == '$') {
    const std::size_t end = eol + 2 + static_cast<std::size_t>(n) + 2;
    return end <= b.size() ? end : 0;
  }
  std::size_t next = eol + 2;
  for (long long i = 0; i < n; ++i) {
    next = reply_end(b, next, depth + 1);
    if (next == 0 || next == std::string_view::npos) return next;
  }
  return next;
}

}  // namespace

std::size_t reply_length(std::string_view buffer) { return reply_end(buffer, 0, 0); }

bool may_end_keys(std::string_view command) {
  std::string c(command);
  for (char& ch : c) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const char* const kEnding[] = {"del",     "unlink",   "getdel",    "rename", "expire",
                                        "pexpire", "expireat", "pexpireat", "getex",  "hdel",
                                        "srem",    "zrem",     "exec"};
  for (const char* name : kEnding) {
    if (c == name) return true;
  }
  return false;
}

KeySpan key_span(std::string_view command) {
  std::string c(command);
  for (char& ch : c) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (c == "mget" || c == "del" || c == "unlink" || c == "exists") return KeySpan::kAll;
  if (c == "rename") return KeySpan::kFirstTwo;
  if (c == "watch") return KeySpan::kWatch;
  if (c == "scan" || c == "keys" || c == "dbsize") return KeySpan::kNodeLocal;
  if (c == "flushdb" || c == "flushall") return KeySpan::kRegion;
  static const char* const kFirstKey[] = {
      "get",     "set",      "setex",     "psetex",  "getex",   "getdel",        "expire",
      "pexpire", "expireat", "pexpireat", "persist", "ttl",     "pttl",          "type",
      "hset",    "hmset",    "hget",      "hmget",   "hgetall", "hkeys",         "hvals",
      "hdel",    "hexists",  "hlen",      "sadd",    "srem",    "smembers",      "sismember",
      "scard",   "setnx",    "append",    "zadd",    "zrem",    "zrangebyscore", "zrevrangebyscore",
      "zcard",   "zscore"};
  for (const char* name : kFirstKey) {
    if (c == name) return KeySpan::kFirst;
  }
  return KeySpan::kNone;
}

}  // namespace sessiond::daemon::resp
