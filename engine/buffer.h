// Buffer<B, T>: a typed array of backend memory, counted under a MemoryPart and released through
// the backend that allocated it (engine/backend.h).
#pragma once

#include <cstddef>
#include <utility>

#include "engine/backend.h"

namespace ift {

// A typed array of backend memory, released through the backend that allocated it. Host code may
// read it through data()/begin()/end() only when the backend's memory is host memory.
template <class B, class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(B& backend, size_t n, MemoryPart part)
      : backend_(&backend), data_(static_cast<T*>(backend.allocate(n * sizeof(T), part))), n_(n), part_(part) {}
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = o.backend_, data_ = o.data_, n_ = o.n_, part_ = o.part_;
      o.data_ = nullptr, o.n_ = 0;
    }
    return *this;
  }
  ~Buffer() { reset(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return n_; }
  T* begin() { return data_; }
  T* end() { return data_ + n_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + n_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  void reset() {
    if (data_) backend_->release(data_, n_ * sizeof(T), part_);
    data_ = nullptr, n_ = 0;
  }
  B* backend_ = nullptr;
  T* data_ = nullptr;
  size_t n_ = 0;
  MemoryPart part_ = MemoryPart::params;
};

}  // namespace ift
