// plasmon-hello: the smallest application. It puts an object, gets it back
// without a copy, checks its digest and deletes it.
//
//   plasmon-hello [SOCKET]     (default: $PLASMON_SOCKET, else /tmp/plasmon.sock)
#include <cstdio>
#include <cstdlib>
#include <string>

#include "plasmon/client.h"

// The boundary between plasmon's API and its internals: an application that
// links plasmon_client cannot reach the internal headers.
#if __has_include("core/protocol.h") || __has_include("store/store.h")
#error "plasmon's internal headers leak to applications"
#endif

int main(int argc, char** argv) {
  std::string socket = argc > 1 ? argv[1] : "";
  if (socket.empty()) {
    const char* env = std::getenv("PLASMON_SOCKET");
    socket = env != nullptr && *env != '\0' ? env : "/tmp/plasmon.sock";
  }
  plasmon::Client client;
  if (plasmon::Status st = client.Connect(socket); !st.ok()) {
    std::fprintf(stderr, "plasmon-hello: %s\n", st.ToString().c_str());
    return 1;
  }
  const plasmon::ObjectID id = plasmon::ObjectID::Random();
  if (plasmon::Status st = client.CreateAndSeal(id, "hello, plasmon"); !st.ok()) {
    std::fprintf(stderr, "plasmon-hello: %s\n", st.ToString().c_str());
    return 1;
  }
  auto got = client.Get({id}, /*timeout_ms=*/1000);
  if (!got.ok() || !(*got)[0].valid()) {
    std::fprintf(stderr, "plasmon-hello: get failed\n");
    return 1;
  }
  auto digest = client.Digest(id);
  std::printf("%s: \"%.*s\" (digest %016llx)\n", id.Hex().c_str(),
              static_cast<int>((*got)[0].size()), (*got)[0].view().data(),
              digest.ok() ? static_cast<unsigned long long>(*digest) : 0ull);
  got->clear();  // releases the reference
  auto deleted = client.Delete({id});
  return deleted.ok() && (*deleted)[0].ok() ? 0 : 1;
}
