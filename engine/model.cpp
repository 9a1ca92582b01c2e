// The model on the cpu backend; the kernel backends instantiate it in their own translation units.
#include "engine/model.inl"

namespace ift {

int64_t BatchView::trained_tokens() const {
  int64_t n = 0;
  for (int32_t t : targets) n += t >= 0;
  return n;
}

template class Transformer<CpuBackend<float>>;
template class Optimizer<CpuBackend<float>>;
template class Model<CpuBackend<float>>;
template class Transformer<CpuBackend<double>>;
template class Optimizer<CpuBackend<double>>;
template class Model<CpuBackend<double>>;

}  // namespace ift
