#include "plasmon/status.h"

#include <cstring>

namespace plasmon {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kObjectExists: return "ObjectExists";
    case StatusCode::kObjectNotFound: return "ObjectNotFound";
    case StatusCode::kObjectNotSealed: return "ObjectNotSealed";
    case StatusCode::kOutOfMemory: return "OutOfMemory";
    case StatusCode::kTimeout: return "Timeout";
    case StatusCode::kInvalidArgument: return "InvalidArgument";
    case StatusCode::kDisconnected: return "Disconnected";
    case StatusCode::kIOError: return "IOError";
    case StatusCode::kProtocolError: return "ProtocolError";
    case StatusCode::kObjectInUse: return "ObjectInUse";
    case StatusCode::kAlreadySealed: return "AlreadySealed";
    case StatusCode::kPermissionDenied: return "PermissionDenied";
    case StatusCode::kCorruption: return "Corruption";
  }
  return "Unknown";
}

Status Status::FromErrno(std::string_view what, int err) {
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  return Status(StatusCode::kIOError, std::move(m));
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(StatusCodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

}  // namespace plasmon
