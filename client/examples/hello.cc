// hello: the smallest application on the sessiond client library. Creates a session, reads it
// back, destroys it, and shows that it is gone.
//
//   hello [HOST:PORT]      (default 127.0.0.1:7400)
#include <sessiond/client.h>

#include <iostream>

int main(int argc, char** argv) {
  sessiond::Client::Options options;
  if (argc > 1) options.address = argv[1];
  sessiond::Client client(options);

  sessiond::CreateOptions create;
  create.user_id = "alice";
  create.fields = {{"greeting", "hello, world"}};
  create.preset = sessiond::Preset::kEcommerce;
  auto created = client.create(create);
  if (!created.ok()) {
    std::cerr << "create failed: " << created.status().ToString() << "\n";
    return 1;
  }
  std::cout << "created " << created->id << "\n";

  sessiond::GetOptions touch;
  touch.touch = true;
  auto session = client.get(created->id, touch);
  if (!session.ok()) {
    std::cerr << "get failed: " << session.status().ToString() << "\n";
    return 1;
  }
  const sessiond::Field* greeting = session->field("greeting");
  std::cout << "read " << session->user_id << ": "
            << (greeting != nullptr ? greeting->value : "(no greeting)") << "\n";

  if (auto status = client.destroy(created->id); !status.ok()) {
    std::cerr << "destroy failed: " << status.ToString() << "\n";
    return 1;
  }
  auto gone = client.get(created->id);
  std::cout << "after destroy: " << sessiond::status_code_name(gone.code()) << "\n";
  return gone.code() == sessiond::StatusCode::kNotFound ? 0 : 1;
}
