#include "detail/io_thread.h"

#include <asio.hpp>
#include <optional>
#include <utility>

namespace sessiond::client_detail {

struct IoThread::State {
  asio::io_context io;
  // Keeps run() going while the client lives, even with nothing to do.
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{
      asio::make_work_guard(io)};
  std::thread thread;
  std::thread::id thread_id;
};

IoThread::IoThread() : state_(std::make_unique<State>()) {
  state_->thread = std::thread([state = state_.get()] { state->io.run(); });
  state_->thread_id = state_->thread.get_id();
}

IoThread::~IoThread() { join(); }

asio::io_context& IoThread::context() { return state_->io; }

void IoThread::post(std::function<void()> fn) { asio::post(state_->io, std::move(fn)); }

bool IoThread::on_io_thread() const { return std::this_thread::get_id() == state_->thread_id; }

void IoThread::join() {
  if (!state_->thread.joinable()) return;
  asio::post(state_->io, [state = state_.get()] { state->work.reset(); });
  state_->thread.join();
}

}  // namespace sessiond::client_detail
