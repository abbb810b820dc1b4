// Store-to-store authentication on the shared cluster secret, used by every
// transport: each side sends a fresh nonce and proves it knows the secret
// with an HMAC over both nonces. The secret never crosses the wire, and a
// proof cannot be replayed on another connection.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "plasmon/status.h"

namespace plasmon::auth {

constexpr size_t kNonceSize = 32;
constexpr size_t kProofSize = 32;  // HMAC-SHA256

using Nonce = std::array<uint8_t, kNonceSize>;
using Proof = std::array<uint8_t, kProofSize>;

// Labels that make the server's and the client's proofs differ.
constexpr std::string_view kServerLabel = "plasmon-server";
constexpr std::string_view kClientLabel = "plasmon-client";

// A fresh random nonce from getrandom().
Status RandomNonce(Nonce* out);

// HMAC-SHA256(secret, label || client_nonce || server_nonce). An empty secret
// is a valid (zero-length) key: peers without one still run the handshake,
// and authenticate nothing.
Proof MakeProof(std::string_view secret, std::string_view label, const Nonce& client_nonce,
                const Nonce& server_nonce);

// Constant-time comparison.
bool ProofsEqual(const Proof& a, const Proof& b);

}  // namespace plasmon::auth
