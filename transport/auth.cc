#include "transport/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace plasmon::auth {

Status RandomNonce(Nonce* out) {
  size_t got = 0;
  while (got < out->size()) {
    ssize_t n = ::getrandom(out->data() + got, out->size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("getrandom", errno);
    }
    got += static_cast<size_t>(n);
  }
  return Status::OK();
}

Proof MakeProof(std::string_view secret, std::string_view label, const Nonce& client_nonce,
                const Nonce& server_nonce) {
  uint8_t msg[32 + 2 * kNonceSize];
  static_assert(kServerLabel.size() <= 32 && kClientLabel.size() <= 32);
  size_t n = std::min(label.size(), size_t{32});
  std::memcpy(msg, label.data(), n);
  std::memcpy(msg + n, client_nonce.data(), kNonceSize);
  std::memcpy(msg + n + kNonceSize, server_nonce.data(), kNonceSize);
  Proof out{};
  unsigned int len = 0;
  static const uint8_t kEmpty = 0;
  const void* key = secret.empty() ? static_cast<const void*>(&kEmpty) : secret.data();
  HMAC(EVP_sha256(), key, static_cast<int>(secret.size()), msg, n + 2 * kNonceSize, out.data(),
       &len);
  return out;
}

bool ProofsEqual(const Proof& a, const Proof& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace plasmon::auth
