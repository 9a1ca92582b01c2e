// Finite-difference gradient checks in double precision.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "tests/support.h"

namespace ift::test {

// Central differences of `loss` with respect to each x[i] in `indices` (all when empty), compared
// with `analytic` by |fd - analytic| <= atol + rtol * |analytic|. x is restored afterwards.
inline void check_gradient(const std::string& what, std::span<double> x, const std::function<double()>& loss,
                           const std::vector<double>& analytic, std::vector<size_t> indices = {}, double h = 1e-6,
                           double atol = 1e-7, double rtol = 1e-5) {
  REQUIRE(analytic.size() == x.size());
  if (indices.empty())
    for (size_t i = 0; i < x.size(); ++i) indices.push_back(i);
  std::vector<double> fd, an;
  for (size_t i : indices) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = loss();
    x[i] = saved - h;
    const double down = loss();
    x[i] = saved;
    fd.push_back((up - down) / (2 * h));
    an.push_back(analytic[i]);
  }
  require_close(what + " (analytic vs finite differences)", an, fd, atol, rtol);
}

// sum_i r[i] * y[i]: the scalar whose gradient with respect to y is r.
inline double weighted_sum(const std::vector<double>& y, const std::vector<double>& r) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
  return s;
}

}  // namespace ift::test
