// Status and Result<T>: how every plasmon call reports success or failure.
//
// Errors are values, never exceptions. A Status is OK or carries a code and a
// human-readable message; Result<T> holds either a T or a non-OK Status.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace plasmon {

// Codes are part of the wire protocol: never renumber, only append.
enum class StatusCode : uint8_t {
  kOk = 0,
  kObjectExists = 1,     // an object with that ID is already in the store
  kObjectNotFound = 2,   // no object with that ID
  kObjectNotSealed = 3,  // the object exists but is still being created
  kOutOfMemory = 4,      // no room, even after evicting everything evictable
  kTimeout = 5,          // the deadline passed first
  kInvalidArgument = 6,  // the caller asked for something malformed
  kDisconnected = 7,     // the store (or peer) is gone
  kIOError = 8,          // a system call failed
  kProtocolError = 9,    // a peer sent bytes that are not valid protocol
  kObjectInUse = 10,     // the object is referenced; the request was deferred or refused
  kAlreadySealed = 11,   // the object was sealed already
  kPermissionDenied = 12,  // a peer failed authentication (cluster secret)
  kCorruption = 13,        // bytes arrived but do not match their digest
};

// The stable name of a code, e.g. "ObjectNotFound".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }
  static Status ObjectExists(std::string m) { return {StatusCode::kObjectExists, std::move(m)}; }
  static Status ObjectNotFound(std::string m) {
    return {StatusCode::kObjectNotFound, std::move(m)};
  }
  static Status ObjectNotSealed(std::string m) {
    return {StatusCode::kObjectNotSealed, std::move(m)};
  }
  static Status OutOfMemory(std::string m) { return {StatusCode::kOutOfMemory, std::move(m)}; }
  static Status Timeout(std::string m) { return {StatusCode::kTimeout, std::move(m)}; }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status Disconnected(std::string m) { return {StatusCode::kDisconnected, std::move(m)}; }
  static Status IOError(std::string m) { return {StatusCode::kIOError, std::move(m)}; }
  // An IOError naming the failed call and errno's text.
  static Status FromErrno(std::string_view what, int err);
  static Status ProtocolError(std::string m) {
    return {StatusCode::kProtocolError, std::move(m)};
  }
  static Status ObjectInUse(std::string m) { return {StatusCode::kObjectInUse, std::move(m)}; }
  static Status AlreadySealed(std::string m) { return {StatusCode::kAlreadySealed, std::move(m)}; }
  static Status PermissionDenied(std::string m) {
    return {StatusCode::kPermissionDenied, std::move(m)};
  }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  bool IsObjectExists() const { return code_ == StatusCode::kObjectExists; }
  bool IsObjectNotFound() const { return code_ == StatusCode::kObjectNotFound; }
  bool IsObjectNotSealed() const { return code_ == StatusCode::kObjectNotSealed; }
  bool IsOutOfMemory() const { return code_ == StatusCode::kOutOfMemory; }
  bool IsTimeout() const { return code_ == StatusCode::kTimeout; }
  bool IsInvalidArgument() const { return code_ == StatusCode::kInvalidArgument; }
  bool IsDisconnected() const { return code_ == StatusCode::kDisconnected; }
  bool IsIOError() const { return code_ == StatusCode::kIOError; }
  bool IsProtocolError() const { return code_ == StatusCode::kProtocolError; }
  bool IsPermissionDenied() const { return code_ == StatusCode::kPermissionDenied; }
  bool IsCorruption() const { return code_ == StatusCode::kCorruption; }

  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Either a value or an error. REQUIRES: a Result built from a Status is not OK.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<1>(v_);
  }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  // On a temporary Result, the value is moved out (so `for (x : *f())` is safe).
  T value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

namespace internal {
// What PLASMON_RETURN_IF_ERROR looks at: a Status itself, or a Result's.
inline Status StatusOf(Status s) { return s; }
template <typename T>
Status StatusOf(const Result<T>& r) {
  return r.status();
}
}  // namespace internal

}  // namespace plasmon

// Propagates a non-OK Status, or the Status of a failed Result, to the
// caller (a Result's value, if any, is dropped: for calls made for their
// effect). The caller may return a Status or any Result.
#define PLASMON_RETURN_IF_ERROR(expr)                                \
  do {                                                               \
    ::plasmon::Status _st = ::plasmon::internal::StatusOf((expr));   \
    if (!_st.ok()) return _st;                                       \
  } while (0)
