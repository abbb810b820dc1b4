// A receive buffer: bytes arrive at the back, are consumed from the front.
//
// Unlike std::string::resize, making room never zero-fills (that cost about
// 1.3 us per round trip with 64 KiB reads), and consumed bytes are dropped by
// moving an offset, compacting only when room is needed.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace plasmon {

class ByteBuffer {
 public:
  // The unconsumed bytes.
  const char* data() const { return buf_.get() + begin_; }
  size_t size() const { return end_ - begin_; }
  std::string_view view() const { return {data(), size()}; }

  // Room for at least `n` more bytes; write them, then Commit.
  char* Prepare(size_t n) {
    if (cap_ - end_ < n) {
      size_t live = size();
      if (cap_ - live >= n && begin_ > 0) {
        std::memmove(buf_.get(), data(), live);
      } else {
        size_t cap = std::max(cap_ * 2, live + n);
        std::unique_ptr<char[]> bigger(new char[cap]);  // not zeroed
        if (live > 0) std::memcpy(bigger.get(), data(), live);
        buf_ = std::move(bigger);
        cap_ = cap;
      }
      begin_ = 0;
      end_ = live;
    }
    return buf_.get() + end_;
  }
  void Commit(size_t n) { end_ += n; }
  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }

 private:
  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0, begin_ = 0, end_ = 0;
};

}  // namespace plasmon
