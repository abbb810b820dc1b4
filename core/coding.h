// Little-endian encoding of fixed-width integers, IDs and byte strings.
//
// Every plasmon wire format (client<->store, and later store<->store) is built
// with these two classes. Decoder never reads past its input: each getter
// returns false once the input is exhausted, and the caller turns that into a
// ProtocolError.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "plasmon/object_id.h"

namespace plasmon {

class Encoder {
 public:
  explicit Encoder(std::string* out) : out_(out) {}

  void PutU8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void PutU16(uint16_t v) { PutRaw(&v, sizeof(v)); }
  void PutU32(uint32_t v) { PutRaw(&v, sizeof(v)); }
  void PutU64(uint64_t v) { PutRaw(&v, sizeof(v)); }
  void PutI64(int64_t v) { PutRaw(&v, sizeof(v)); }
  void PutID(const ObjectID& id) { PutRaw(id.data(), ObjectID::kSize); }
  // A u32 length followed by the bytes.
  void PutBytes(std::string_view b) {
    PutU32(static_cast<uint32_t>(b.size()));
    PutRaw(b.data(), b.size());
  }
  void PutRaw(const void* p, size_t n) { out_->append(static_cast<const char*>(p), n); }

 private:
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "plasmon assumes a little-endian host");
  std::string* out_;
};

class Decoder {
 public:
  explicit Decoder(std::string_view in) : p_(in.data()), left_(in.size()) {}

  bool GetU8(uint8_t* v) { return GetRaw(v, sizeof(*v)); }
  bool GetU16(uint16_t* v) { return GetRaw(v, sizeof(*v)); }
  bool GetU32(uint32_t* v) { return GetRaw(v, sizeof(*v)); }
  bool GetU64(uint64_t* v) { return GetRaw(v, sizeof(*v)); }
  bool GetI64(int64_t* v) { return GetRaw(v, sizeof(*v)); }
  bool GetID(ObjectID* id) { return GetRaw(id->mutable_data(), ObjectID::kSize); }
  // A u32 length and that many bytes, refused if the length exceeds `max`.
  // The view points into the decoder's input.
  bool GetBytes(std::string_view* b, uint32_t max) {
    uint32_t n;
    if (!GetU32(&n) || n > max || n > left_) return false;
    *b = std::string_view(p_, n);
    Skip(n);
    return true;
  }
  bool GetRaw(void* dst, size_t n) {
    if (n > left_) return false;
    std::memcpy(dst, p_, n);
    Skip(n);
    return true;
  }
  size_t remaining() const { return left_; }
  bool done() const { return left_ == 0; }

 private:
  void Skip(size_t n) {
    p_ += n;
    left_ -= n;
  }
  const char* p_;
  size_t left_;
};

}  // namespace plasmon
