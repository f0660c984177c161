// sessiond::Client: typed calls over the router. Each call validates and serializes its
// request on the caller's thread, hands the bytes to the router on the I/O thread (which picks
// the node and its transport), and parses the answer there; the synchronous calls wait on a
// future for the asynchronous ones.
#include "sessiond/client.h"

#include <google/protobuf/arena.h>

#include <cstddef>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include "detail/io_thread.h"
#include "detail/router.h"
#include "detail/routing.h"
#include "detail/wire_convert.h"
#include "protocol/sessiond.pb.h"

namespace sessiond {

using client_detail::RoutedCall;
using protocol::Opcode;
using Route = RoutedCall::Route;

namespace {

// The stack block an answer is parsed into: a 1 KiB session and its metadata fit; larger ones
// continue in heap blocks of the arena.
constexpr std::size_t kParseArenaBytes = 4096;

// The innermost Client::CallTimeout of this thread, if any.
std::optional<std::chrono::milliseconds>& scoped_timeout() {
  thread_local std::optional<std::chrono::milliseconds> timeout;
  return timeout;
}

// Where a call goes (router.h).
struct Routing {
  Route route = Route::kSeed;
  std::string_view raw_id;        // with Route::kOwner: into the request
  bool has_request_id = false;    // CREATE, REGENERATE
  bool may_read_replica = false;  // GET
};

// Requests are built on an arena whose first block is on the caller's stack: the nested
// messages and string objects of a request (a CREATE's fields) cost no allocation each.
class RequestArena {
 public:
  RequestArena() : arena_(options(first_block_, sizeof(first_block_))) {}
  RequestArena(const RequestArena&) = delete;
  RequestArena& operator=(const RequestArena&) = delete;
  template <typename Message>
  Message& make() {
    return *google::protobuf::Arena::CreateMessage<Message>(&arena_);
  }

 private:
  static google::protobuf::ArenaOptions options(char* block, std::size_t size) {
    google::protobuf::ArenaOptions o;
    o.initial_block = block;
    o.initial_block_size = size;
    return o;
  }
  alignas(std::max_align_t) char first_block_[2048];
  google::protobuf::Arena arena_;
};

Routing node_local() { return {}; }
Routing any_node(bool has_request_id = false) { return {Route::kAny, {}, has_request_id}; }
Routing owner_of(std::string_view raw_id, bool has_request_id = false) {
  return {Route::kOwner, raw_id, has_request_id};
}

}  // namespace

Client::CallTimeout::CallTimeout(std::chrono::milliseconds timeout) : previous_(scoped_timeout()) {
  scoped_timeout() = timeout;
}

Client::CallTimeout::~CallTimeout() { scoped_timeout() = previous_; }

class Client::Impl {
 public:
  explicit Impl(Options options) : options_(std::move(options)), router_(io_, options_) {}

  // Fails the outstanding calls (running their callbacks) before the thread stops.
  ~Impl() {
    io_.post([this] { router_.shutdown(); });
    io_.join();
  }

  const Options& options() const { return options_; }
  bool on_io_thread() const { return io_.on_io_thread(); }

  // Read-your-writes (Options::read_your_writes): the newest version seen of each recent id.
  void remember(const std::string& id, const Version& v) {
    if (options_.read_your_writes == 0) return;
    std::lock_guard lock(versions_mu_);
    auto [it, added] = versions_.try_emplace(id, v);
    if (!added) {
      const Version& old = it->second;
      if (std::tie(v.hlc, v.region, v.node) > std::tie(old.hlc, old.region, old.node))
        it->second = v;
      return;
    }
    order_.push_back(id);
    while (order_.size() > options_.read_your_writes) {
      versions_.erase(order_.front());
      order_.pop_front();
    }
  }
  std::optional<Version> remembered(const std::string& id) {
    if (options_.read_your_writes == 0) return std::nullopt;
    std::lock_guard lock(versions_mu_);
    const auto it = versions_.find(id);
    if (it == versions_.end()) return std::nullopt;
    return it->second;
  }
  // `done` that also remembers the version it returns.
  Callback<SessionMeta> remembering(Callback<SessionMeta> done) {
    if (options_.read_your_writes == 0) return done;
    return [this, done = std::move(done)](Result<SessionMeta> r) {
      if (r.ok()) remember(r->id, r->version);
      done(std::move(r));
    };
  }
  // The clients of Options::fallback_regions, in order.
  std::vector<std::unique_ptr<Client>> fallbacks;

  // A call whose answer is parsed as Response and converted by Convert (a function from the
  // parsed message to Result<T>) for the caller's callback: one allocation holds all of it.
  template <typename Response, typename T, typename Convert>
  struct TypedCall final : RoutedCall {
    TypedCall(Callback<T> d, Convert c) : callback(std::move(d)), convert(std::move(c)) {}
    void complete(Status status, std::span<const std::uint8_t> answer,
                  bool possibly_stale) override {
      // What the callback holds goes once it has run, as a std::function's would.
      const Callback<T> run = std::move(callback);
      if (!status.ok()) {
        run(Result<T>(std::move(status)));
        return;
      }
      // The parsed answer lives on an arena that starts on the stack: its strings and nested
      // messages (a session's fields) cost no malloc each, and all go at once.
      alignas(std::max_align_t) char first_block[kParseArenaBytes];
      google::protobuf::ArenaOptions arena_options;
      arena_options.initial_block = first_block;
      arena_options.initial_block_size = sizeof(first_block);
      google::protobuf::Arena arena(arena_options);
      auto* response = google::protobuf::Arena::CreateMessage<Response>(&arena);
      if (!response->ParseFromArray(answer.data(), static_cast<int>(answer.size()))) {
        run(Result<T>(Status::Internal(
            "the answer to " + std::string(protocol::opcode_name(opcode)) + " does not parse")));
        return;
      }
      Result<T> converted = convert(*response);
      if constexpr (std::is_same_v<T, Session>) {
        if (converted.ok()) converted->possibly_stale = possibly_stale;
      }
      run(std::move(converted));
    }
    Callback<T> callback;
    Convert convert;
  };

  // Sends `request` where `routing` says and hands `done` the response converted by `convert`.
  template <typename Response, typename T, typename Convert>
  void call(Opcode opcode, const google::protobuf::MessageLite& request, Routing routing,
            bool idempotent, Callback<T> done, Convert convert) {
    auto pending =
        std::make_shared<TypedCall<Response, T, Convert>>(std::move(done), std::move(convert));
    pending->opcode = opcode;
    pending->idempotent = idempotent;
    pending->route = routing.route;
    pending->route_key = routing.raw_id.substr(0, 8);
    pending->has_request_id = routing.has_request_id;
    pending->may_read_replica = routing.may_read_replica;
    pending->timeout = scoped_timeout().value_or(options_.timeout);
    pending->deadline = std::chrono::steady_clock::now() + pending->timeout;
    if (!request.SerializeToString(&pending->body)) {
      fail_later(std::move(pending->callback), Status::Internal("cannot serialize the request"));
      return;
    }
    if (pending->body.size() > options_.max_frame_body) {
      fail_later(std::move(pending->callback),
                 Status::TooLarge(std::string(protocol::opcode_name(opcode)) + " request of " +
                                  std::to_string(pending->body.size()) +
                                  " bytes exceeds the frame limit of " +
                                  std::to_string(options_.max_frame_body)));
      return;
    }
    io_.post([this, pending = std::move(pending)] { router_.dispatch(pending); });
  }

  // The router's topology (Router::topology).
  void topology(bool refresh, Callback<Topology> done) {
    io_.post([this, refresh, done = std::move(done)]() mutable {
      router_.topology(refresh, std::move(done));
    });
  }

  // Runs `done(status)` on the I/O thread, as every callback runs.
  template <typename T>
  void fail_later(Callback<T> done, Status status) {
    io_.post([done = std::move(done), status = std::move(status)]() mutable {
      done(Result<T>(std::move(status)));
    });
  }

  // Runs an asynchronous call and waits for its result.
  template <typename T, typename Start>
  Result<T> wait(Start start) {
    if (io_.on_io_thread()) {
      return Status::Internal(
          "a synchronous sessiond::Client call from a callback would deadlock; use the async_ "
          "calls there");
    }
    std::promise<Result<T>> promise;
    auto future = promise.get_future();
    start([&promise](Result<T> result) { promise.set_value(std::move(result)); });
    return future.get();
  }

 private:
  const Options options_;
  std::mutex versions_mu_;  // guards versions_, order_
  std::unordered_map<std::string, Version> versions_;
  std::deque<std::string> order_;  // ids in versions_, oldest first
  // Declared before the router: the transports' sockets and timers live on its context.
  client_detail::IoThread io_;
  client_detail::Router router_;
};

namespace {

struct Empty {};

// The status of a Result<Empty> (destroy answers nothing but its status).
Client::Callback<Empty> to_status_callback(Client::StatusCallback done) {
  return [done = std::move(done)](Result<Empty> result) { done(result.status()); };
}

// A get() going from region to region (Options::fallback_regions).
struct RegionChain {
  std::string id;
  GetOptions options;
  std::function<void(Result<Session>)> finish;
  std::vector<Client*> regions;  // the other regions' clients, in order
  std::size_t next = 0;
};

void next_region(const std::shared_ptr<RegionChain>& chain, Result<Session> r) {
  const bool elsewhere = !r.ok() && (r.status().code() == StatusCode::kUnavailable ||
                                     r.status().code() == StatusCode::kBehind);
  if (!elsewhere || chain->next == chain->regions.size()) return chain->finish(std::move(r));
  Client* region = chain->regions[chain->next++];
  region->async_get(chain->id, chain->options,
                    [chain](Result<Session> answer) { next_region(chain, std::move(answer)); });
}

}  // namespace

Client::Client(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {
  for (const std::string& region : impl_->options().fallback_regions) {
    Options o = impl_->options();
    o.address = region;
    o.seeds.clear();
    o.fallback_regions.clear();
    o.read_your_writes = 0;
    impl_->fallbacks.push_back(std::make_unique<Client>(std::move(o)));
  }
}
Client::~Client() = default;

const Client::Options& Client::options() const { return impl_->options(); }

// ---- asynchronous -----------------------------------------------------------------------------

void Client::async_ping(std::string payload, Callback<PingResult> done) {
  wire::PingRequest request;
  request.set_payload(std::move(payload));
  impl_->call<wire::PingResponse, PingResult>(
      Opcode::kPing, request, node_local(), true, std::move(done),
      [](const wire::PingResponse& r) { return Result<PingResult>(client_detail::from_wire(r)); });
}

void Client::async_create(const CreateOptions& options, Callback<SessionMeta> done) {
  RequestArena arena;
  auto& request = arena.make<wire::CreateRequest>();
  if (auto status = client_detail::to_wire(options, &request); !status.ok()) {
    impl_->fail_later(std::move(done), std::move(status));
    return;
  }
  // The owner of a user's sessions follows from a keyed hash only nodes can compute: any node
  // takes the call, and one that does not own the user answers WRONG_NODE.
  auto request_id = client_detail::new_request_id();
  if (!request_id.ok()) {
    impl_->fail_later(std::move(done), request_id.status());
    return;
  }
  request.set_request_id(std::move(request_id).value());
  impl_->call<wire::CreateResponse, SessionMeta>(
      Opcode::kCreate, request, any_node(true), false, impl_->remembering(std::move(done)),
      [](const wire::CreateResponse& r) {
        return Result<SessionMeta>(client_detail::from_wire(r.session()));
      });
}

void Client::async_get(std::string_view id, const GetOptions& options, Callback<Session> done) {
  if (impl_->options().read_your_writes == 0 && impl_->fallbacks.empty()) {
    return get_here(id, options, std::move(done));  // nothing to remember, nowhere else to ask
  }
  GetOptions with_min = options;
  const std::string key(id);
  if (!with_min.min_version) with_min.min_version = impl_->remembered(key);
  auto finish = [impl = impl_.get(), key, done = std::move(done)](Result<Session> r) {
    if (r.ok()) impl->remember(key, r->version);
    done(std::move(r));
  };
  if (impl_->fallbacks.empty()) return get_here(key, with_min, std::move(finish));
  // This region first, then each other one in turn while the answer is UNAVAILABLE or BEHIND.
  auto chain = std::make_shared<RegionChain>();
  chain->id = key;
  chain->options = std::move(with_min);
  chain->finish = std::move(finish);
  for (auto& f : impl_->fallbacks) chain->regions.push_back(f.get());
  get_here(key, chain->options, [chain](Result<Session> r) { next_region(chain, std::move(r)); });
}

void Client::get_here(std::string_view id, const GetOptions& options, Callback<Session> done) {
  RequestArena arena;
  auto& request = arena.make<wire::GetRequest>();
  if (auto status = client_detail::to_wire(id, options, &request); !status.ok()) {
    impl_->fail_later(std::move(done), std::move(status));
    return;
  }
  // A plain read may be repeated; one that touches or records an access changes the session.
  const bool idempotent = !options.touch && !options.record_access;
  Routing routing = owner_of(request.id());
  routing.may_read_replica = true;
  impl_->call<wire::GetResponse, Session>(
      Opcode::kGet, request, std::move(routing), idempotent, std::move(done),
      [](wire::GetResponse& r) { return Result<Session>(client_detail::from_wire(std::move(r))); });
}

void Client::async_update(std::string_view id, const UpdateOptions& options,
                          Callback<SessionMeta> done) {
  RequestArena arena;
  auto& request = arena.make<wire::UpdateRequest>();
  if (auto status = client_detail::to_wire(id, options, &request); !status.ok()) {
    impl_->fail_later(std::move(done), std::move(status));
    return;
  }
  impl_->call<wire::UpdateResponse, SessionMeta>(
      Opcode::kUpdate, request, owner_of(request.id()), false, impl_->remembering(std::move(done)),
      [](const wire::UpdateResponse& r) {
        return Result<SessionMeta>(client_detail::from_wire(r.session()));
      });
}

void Client::async_touch(std::string_view id, Callback<SessionMeta> done) {
  RequestArena arena;
  auto& request = arena.make<wire::TouchRequest>();
  if (auto status = client_detail::id_to_wire(id, "id", request.mutable_id()); !status.ok()) {
    impl_->fail_later(std::move(done), std::move(status));
    return;
  }
  impl_->call<wire::TouchResponse, SessionMeta>(
      Opcode::kTouch, request, owner_of(request.id()), false, impl_->remembering(std::move(done)),
      [](const wire::TouchResponse& r) {
        return Result<SessionMeta>(client_detail::from_wire(r.session()));
      });
}

void Client::async_destroy(std::string_view id, StatusCallback done) {
  RequestArena arena;
  auto& request = arena.make<wire::DestroyRequest>();
  auto callback = to_status_callback(std::move(done));
  if (auto status = client_detail::id_to_wire(id, "id", request.mutable_id()); !status.ok()) {
    impl_->fail_later(std::move(callback), std::move(status));
    return;
  }
  impl_->call<wire::DestroyResponse, Empty>(
      Opcode::kDestroy, request, owner_of(request.id()), false, std::move(callback),
      [](const wire::DestroyResponse&) { return Result<Empty>(Empty{}); });
}

void Client::async_regenerate(std::string_view id, const RegenerateOptions& options,
                              Callback<SessionMeta> done) {
  RequestArena arena;
  auto& request = arena.make<wire::RegenerateRequest>();
  if (auto status = client_detail::to_wire(id, options, &request); !status.ok()) {
    impl_->fail_later(std::move(done), std::move(status));
    return;
  }
  auto request_id = client_detail::new_request_id();
  if (!request_id.ok()) {
    impl_->fail_later(std::move(done), request_id.status());
    return;
  }
  request.set_request_id(std::move(request_id).value());
  impl_->call<wire::RegenerateResponse, SessionMeta>(
      Opcode::kRegenerate, request, owner_of(request.id(), true), false,
      impl_->remembering(std::move(done)), [](const wire::RegenerateResponse& r) {
        return Result<SessionMeta>(client_detail::from_wire(r.session()));
      });
}

void Client::async_list_user(std::string_view user_id, Callback<std::vector<SessionMeta>> done) {
  wire::ListUserRequest request;
  request.set_user_id(std::string(user_id));
  impl_->call<wire::ListUserResponse, std::vector<SessionMeta>>(
      Opcode::kListUser, request, any_node(), true, std::move(done),
      [](const wire::ListUserResponse& r) {
        std::vector<SessionMeta> sessions;
        sessions.reserve(static_cast<std::size_t>(r.sessions_size()));
        for (const auto& meta : r.sessions()) sessions.push_back(client_detail::from_wire(meta));
        return Result<std::vector<SessionMeta>>(std::move(sessions));
      });
}

void Client::async_revoke_user(std::string_view user_id, std::string_view keep_id,
                               Callback<std::uint64_t> done) {
  wire::RevokeUserRequest request;
  request.set_user_id(std::string(user_id));
  if (!keep_id.empty()) {
    if (auto status = client_detail::id_to_wire(keep_id, "keep id", request.mutable_keep_id());
        !status.ok()) {
      impl_->fail_later(std::move(done), std::move(status));
      return;
    }
  }
  impl_->call<wire::RevokeUserResponse, std::uint64_t>(
      Opcode::kRevokeUser, request, any_node(), false, std::move(done),
      [](const wire::RevokeUserResponse& r) { return Result<std::uint64_t>(r.revoked()); });
}

void Client::async_access_log(std::string_view id, Callback<std::vector<AccessEntry>> done) {
  wire::AccessLogRequest request;
  if (auto status = client_detail::id_to_wire(id, "id", request.mutable_id()); !status.ok()) {
    impl_->fail_later(std::move(done), std::move(status));
    return;
  }
  impl_->call<wire::AccessLogResponse, std::vector<AccessEntry>>(
      Opcode::kAccessLog, request, owner_of(request.id()), true, std::move(done),
      [](const wire::AccessLogResponse& r) {
        std::vector<AccessEntry> entries;
        entries.reserve(static_cast<std::size_t>(r.entries_size()));
        for (const auto& entry : r.entries()) entries.push_back(client_detail::from_wire(entry));
        return Result<std::vector<AccessEntry>>(std::move(entries));
      });
}

void Client::async_stats(Callback<Stats> done) {
  wire::StatsRequest request;
  impl_->call<wire::StatsResponse, Stats>(
      Opcode::kStats, request, node_local(), true, std::move(done),
      [](const wire::StatsResponse& r) { return Result<Stats>(client_detail::from_wire(r)); });
}

void Client::async_repair(std::string_view region, bool check_only,
                          Callback<std::vector<RegionRepair>> done) {
  wire::RepairRequest request;
  request.set_region(std::string(region));
  request.set_check(check_only);
  // Not retried once sent: a round is harmless twice, but may be long.
  impl_->call<wire::RepairResponse, std::vector<RegionRepair>>(
      Opcode::kRepair, request, node_local(), false, std::move(done),
      [](const wire::RepairResponse& r) {
        std::vector<RegionRepair> out;
        for (const auto& in : r.regions()) {
          RegionRepair one;
          one.region = in.region();
          one.buckets_differing = in.buckets_differing();
          one.pulled = in.pulled();
          one.pushed = in.pushed();
          one.bytes = in.bytes();
          one.duration_ms = static_cast<std::int64_t>(in.duration_ms());
          one.error = in.error();
          out.push_back(std::move(one));
        }
        return Result<std::vector<RegionRepair>>(std::move(out));
      });
}

void Client::async_topology(Callback<Topology> done) { impl_->topology(false, std::move(done)); }

void Client::async_refresh_topology(Callback<Topology> done) {
  impl_->topology(true, std::move(done));
}

// ---- synchronous ------------------------------------------------------------------------------

Result<PingResult> Client::ping(std::string payload) {
  return impl_->wait<PingResult>(
      [&](Callback<PingResult> done) { async_ping(std::move(payload), std::move(done)); });
}

Result<SessionMeta> Client::create(const CreateOptions& options) {
  return impl_->wait<SessionMeta>(
      [&](Callback<SessionMeta> done) { async_create(options, std::move(done)); });
}

Result<Session> Client::get(std::string_view id, const GetOptions& options) {
  return impl_->wait<Session>(
      [&](Callback<Session> done) { async_get(id, options, std::move(done)); });
}

Result<SessionMeta> Client::update(std::string_view id, const UpdateOptions& options) {
  return impl_->wait<SessionMeta>(
      [&](Callback<SessionMeta> done) { async_update(id, options, std::move(done)); });
}

Result<SessionMeta> Client::touch(std::string_view id) {
  return impl_->wait<SessionMeta>(
      [&](Callback<SessionMeta> done) { async_touch(id, std::move(done)); });
}

Status Client::destroy(std::string_view id) {
  return impl_
      ->wait<Empty>([&](Callback<Empty> done) {
        async_destroy(id, [done = std::move(done)](Status status) {
          done(status.ok() ? Result<Empty>(Empty{}) : Result<Empty>(std::move(status)));
        });
      })
      .status();
}

Result<SessionMeta> Client::regenerate(std::string_view id, const RegenerateOptions& options) {
  return impl_->wait<SessionMeta>(
      [&](Callback<SessionMeta> done) { async_regenerate(id, options, std::move(done)); });
}

Result<std::vector<SessionMeta>> Client::list_user(std::string_view user_id) {
  return impl_->wait<std::vector<SessionMeta>>(
      [&](Callback<std::vector<SessionMeta>> done) { async_list_user(user_id, std::move(done)); });
}

Result<std::uint64_t> Client::revoke_user(std::string_view user_id, std::string_view keep_id) {
  return impl_->wait<std::uint64_t>(
      [&](Callback<std::uint64_t> done) { async_revoke_user(user_id, keep_id, std::move(done)); });
}

Result<std::vector<AccessEntry>> Client::access_log(std::string_view id) {
  return impl_->wait<std::vector<AccessEntry>>(
      [&](Callback<std::vector<AccessEntry>> done) { async_access_log(id, std::move(done)); });
}

Result<Stats> Client::stats() {
  return impl_->wait<Stats>([&](Callback<Stats> done) { async_stats(std::move(done)); });
}

Result<std::vector<RegionRepair>> Client::repair(std::string_view region, bool check_only) {
  return impl_->wait<std::vector<RegionRepair>>([&](Callback<std::vector<RegionRepair>> done) {
    async_repair(region, check_only, std::move(done));
  });
}

Result<Topology> Client::topology() {
  return impl_->wait<Topology>([&](Callback<Topology> done) { async_topology(std::move(done)); });
}

Result<Topology> Client::refresh_topology() {
  return impl_->wait<Topology>(
      [&](Callback<Topology> done) { async_refresh_topology(std::move(done)); });
}

std::vector<Result<Session>> Client::get_many(std::span<const std::string> ids,
                                              const GetOptions& options) {
  if (ids.empty()) return {};
  std::vector<std::optional<Result<Session>>> slots(ids.size());
  std::mutex mutex;  // guards `slots` and `remaining` (callbacks run on the I/O thread)
  std::size_t remaining = ids.size();
  std::promise<void> all_done;
  auto finished = all_done.get_future();
  if (impl_->on_io_thread()) {
    return std::vector<Result<Session>>(
        ids.size(), Result<Session>(Status::Internal(
                        "a synchronous sessiond::Client call from a callback would deadlock")));
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    async_get(ids[i], options, [&, i](Result<Session> result) {
      bool last;
      {
        std::lock_guard lock(mutex);
        slots[i].emplace(std::move(result));
        last = --remaining == 0;
      }
      // After the lock is released: the waiting thread returns (and `mutex`, on its stack,
      // goes) as soon as this is set.
      if (last) all_done.set_value();
    });
  }
  finished.wait();
  std::vector<Result<Session>> results;
  results.reserve(ids.size());
  for (auto& slot : slots) results.push_back(std::move(*slot));
  return results;
}

}  // namespace sessiond
