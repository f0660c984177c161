// The client's one I/O thread (internal): an asio::io_context run by a thread of its own.
//
// Every connection of a client, to whichever node, and the router that picks the node run on
// this one thread, so the router's state (the topology, the transports) needs no lock, and
// "callbacks run on the client's I/O thread" stays true with many nodes. One thread per node
// would cost a thread and a context switch per hop for nothing: the work per call is framing a
// few hundred bytes, and one thread drives thousands of pipelined calls per millisecond.
#pragma once

#include <functional>
#include <memory>
#include <thread>

namespace asio {
class io_context;
}

namespace sessiond::client_detail {

class IoThread {
 public:
  // Starts the thread.
  IoThread();
  // Joins the thread (join()) if that was not done yet.
  ~IoThread();
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  // The context the thread runs; sockets and timers of the client are created on it.
  asio::io_context& context();
  // Runs `fn` on the I/O thread; thread-safe.
  void post(std::function<void()> fn);
  // True on the I/O thread (where callbacks run).
  bool on_io_thread() const;
  // Lets the thread finish the work left (handlers of sockets closed by a shutdown) and joins
  // it. Call once everything running on it has been shut down; not from the I/O thread.
  void join();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace sessiond::client_detail
