// Packing, unpacking and validation of the canonical block-sparse layout.
#include "sparse_core.h"

#include <sstream>

namespace tsb {

std::string check_shape(int64_t N, int64_t K, int64_t rb, int64_t cb) {
  std::ostringstream err;
  if (N <= 0 || K <= 0) {
    err << "weight must have positive sizes, got out_features=" << N
        << ", in_features=" << K;
  } else if (!is_supported_block_size(rb) || !is_supported_block_size(cb)) {
    err << "unsupported block shape (" << rb << ", " << cb
        << "): out_features_block_size and in_features_block_size must each be"
           " one of 1, 2, 4, 8, 16";
  } else if (K > kMaxInFeatures) {
    err << "in_features=" << K << " exceeds " << kMaxInFeatures
        << ", the largest size for which int32 accumulation is exact";
  } else if (N > kMaxOutFeatures) {
    err << "out_features=" << N << " exceeds " << kMaxOutFeatures;
  }
  return err.str();
}

BcsrMatrix pack_bcsr(const int8_t* w, int64_t N, int64_t K, int64_t rb, int64_t cb) {
  BcsrMatrix m;
  m.N = N;
  m.K = K;
  m.rb = rb;
  m.cb = cb;
  const int64_t nbr = m.block_rows(), nbc = m.block_cols();
  m.row_ptr.assign(nbr + 1, 0);
  for (int64_t br = 0; br < nbr; ++br) {
    for (int64_t bc = 0; bc < nbc; ++bc) {
      bool nonzero = false;
      for (int64_t r = 0; r < rb && !nonzero; ++r) {
        const int64_t n = br * rb + r;
        if (n >= N) break;
        for (int64_t c = 0; c < cb; ++c) {
          const int64_t k = bc * cb + c;
          if (k < K && w[n * K + k] != 0) {
            nonzero = true;
            break;
          }
        }
      }
      if (!nonzero) continue;
      m.col_idx.push_back(static_cast<int32_t>(bc));
      for (int64_t r = 0; r < rb; ++r) {
        for (int64_t c = 0; c < cb; ++c) {
          const int64_t n = br * rb + r, k = bc * cb + c;
          m.values.push_back(n < N && k < K ? w[n * K + k] : int8_t{0});
        }
      }
    }
    m.row_ptr[br + 1] = static_cast<int32_t>(m.col_idx.size());
  }
  return m;
}

void unpack_bcsr(const BcsrMatrix& m, int8_t* w) {
  for (int64_t i = 0; i < m.N * m.K; ++i) w[i] = 0;
  const int64_t bs = m.rb * m.cb;
  for (int64_t br = 0; br < m.block_rows(); ++br) {
    for (int64_t j = m.row_ptr[br]; j < m.row_ptr[br + 1]; ++j) {
      for (int64_t r = 0; r < m.rb; ++r) {
        for (int64_t c = 0; c < m.cb; ++c) {
          const int64_t n = br * m.rb + r, k = int64_t{m.col_idx[j]} * m.cb + c;
          if (n < m.N && k < m.K) w[n * m.K + k] = m.values[j * bs + r * m.cb + c];
        }
      }
    }
  }
}

std::string validate_bcsr(const BcsrMatrix& m) {
  std::string err = check_shape(m.N, m.K, m.rb, m.cb);
  if (!err.empty()) return err;
  std::ostringstream e;
  const int64_t nbr = m.block_rows(), nbc = m.block_cols(), bs = m.rb * m.cb;
  if (static_cast<int64_t>(m.row_ptr.size()) != nbr + 1) {
    e << "row_ptr has " << m.row_ptr.size() << " entries, expected " << nbr + 1;
    return e.str();
  }
  if (m.row_ptr[0] != 0) return "row_ptr[0] must be 0";
  for (int64_t br = 0; br < nbr; ++br) {
    if (m.row_ptr[br + 1] < m.row_ptr[br]) {
      e << "row_ptr is not non-decreasing at block row " << br;
      return e.str();
    }
    if (m.row_ptr[br + 1] - m.row_ptr[br] > nbc) {
      e << "block row " << br << " holds more blocks than there are block columns";
      return e.str();
    }
  }
  if (int64_t{m.row_ptr[nbr]} != m.num_blocks()) {
    e << "row_ptr ends at " << m.row_ptr[nbr] << " but there are " << m.num_blocks()
      << " column indices";
    return e.str();
  }
  if (static_cast<int64_t>(m.values.size()) != m.num_blocks() * bs) {
    e << "values has " << m.values.size() << " entries, expected "
      << m.num_blocks() * bs;
    return e.str();
  }
  for (int64_t br = 0; br < nbr; ++br) {
    for (int64_t j = m.row_ptr[br]; j < m.row_ptr[br + 1]; ++j) {
      const int64_t bc = m.col_idx[j];
      if (bc < 0 || bc >= nbc) {
        e << "block column index " << bc << " out of range [0, " << nbc << ")";
        return e.str();
      }
      if (j > m.row_ptr[br] && bc <= m.col_idx[j - 1]) {
        e << "block column indices of block row " << br << " are not strictly increasing";
        return e.str();
      }
      for (int64_t r = 0; r < m.rb; ++r) {
        for (int64_t c = 0; c < m.cb; ++c) {
          const int64_t n = br * m.rb + r, k = bc * m.cb + c;
          if ((n >= m.N || k >= m.K) && m.values[j * bs + r * m.cb + c] != 0) {
            return "nonzero value in the padding beyond the weight's edge";
          }
        }
      }
    }
  }
  return "";
}

std::vector<int32_t> row_sums(const BcsrMatrix& m) {
  std::vector<int32_t> s(m.padded_n(), 0);
  const int64_t bs = m.rb * m.cb;
  for (int64_t br = 0; br < m.block_rows(); ++br) {
    for (int64_t j = m.row_ptr[br]; j < m.row_ptr[br + 1]; ++j) {
      for (int64_t r = 0; r < m.rb; ++r) {
        for (int64_t c = 0; c < m.cb; ++c) {
          s[br * m.rb + r] += m.values[j * bs + r * m.cb + c];
        }
      }
    }
  }
  return s;
}

}  // namespace tsb
