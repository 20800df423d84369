// Small dense linear algebra in double precision for load-time preparation (the 1x1 convs' W and
// W^-1) and for tests. Matrices are row-major n x n.
#pragma once

#include <cstdint>
#include <vector>

namespace flowrt {

struct LuFactors {
  std::vector<double> lu;      // L (unit, below the diagonal) and U (on and above it)
  std::vector<int64_t> pivot;  // row i of P*A is row pivot[i] of A
  bool singular = false;
};

LuFactors lu_factor(const std::vector<double> &a, int64_t n);
// log|det A| (and the sign through *sign when not null); -inf for a singular matrix.
double log_abs_det(const std::vector<double> &a, int64_t n, int *sign = nullptr);
// A^-1, or an empty vector when A is singular.
std::vector<double> inverse(const std::vector<double> &a, int64_t n);
std::vector<double> matmul(const std::vector<double> &a, const std::vector<double> &b, int64_t n);
// Infinity-norm condition number ||A|| * ||A^-1||.
double condition_number(const std::vector<double> &a, const std::vector<double> &a_inv, int64_t n);

}  // namespace flowrt
