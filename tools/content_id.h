// IDs derived from an object's content, for `plasmon put FILE` without an ID.
#pragma once

#include <string_view>

#include "plasmon/object_id.h"

namespace plasmon {

// 20 bytes: xxh3-128 of the content, then the low 4 bytes of its length.
// The same content always gets the same ID.
ObjectID ContentId(std::string_view content);

}  // namespace plasmon
