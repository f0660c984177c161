// A blocking connection from this node to a peer's native listener, for node-to-node operations
// (MIGRATE, REPLICATE): connect with a deadline, AUTH as peer when the region has secrets, then
// requests and their answers, each with a deadline. Plain TCP (a TLS listener between
// nodes is not supported yet; docs/cluster.md, "Limits").
#pragma once

#include <chrono>
#include <string>

#include "protocol/frame.h"
#include "protocol/status.h"

namespace google::protobuf {
class MessageLite;
}

namespace sessiond::replication {

class PeerLink {
 public:
  PeerLink(std::string address, std::string peer_secret,
           std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  ~PeerLink();
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;

  const std::string& address() const { return address_; }
  // Sends `request` and parses the OK answer into `response`; the peer's error status (its
  // message prefixed with the peer's address), or UNAVAILABLE when the connection failed (it
  // reconnects on the next call).
  Status call(protocol::Opcode opcode, const google::protobuf::MessageLite& request,
              google::protobuf::MessageLite* response);

  // The same in two halves, for several requests in flight (the peer answers in order):
  // send() returns the request's id, receive() the answer to the oldest request not yet
  // answered, which must be `request_id`. A failure of either closes the connection, and with
  // it every request in flight: the next send() reconnects.
  Result<std::uint32_t> send(protocol::Opcode opcode, const google::protobuf::MessageLite& request);
  Status receive(std::uint32_t request_id, google::protobuf::MessageLite* response);

 private:
  Status connect();
  Status write_frame(protocol::Opcode opcode, const google::protobuf::MessageLite& request,
                     std::uint32_t* request_id);
  void close();

  std::string address_;
  std::string secret_;
  std::chrono::milliseconds timeout_;
  int fd_ = -1;
  std::uint32_t next_request_ = 1;
  std::string buffer_;
};

}  // namespace sessiond::replication
