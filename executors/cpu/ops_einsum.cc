// Einsum (executors/cpu/README.md): diagonals and lone indices reduced per
// operand, then operands contracted pairwise as batched matrix products
// through oneDNN (f32; other types by a plain loop), the result permuted into
// the output's order.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <set>
#include <type_traits>

#include "dnnl_util.h"
#include "kernel.h"

namespace qforge::cpu {

namespace {

// An operand: its data with one letter per dimension.
template <class T>
struct Term {
  std::string letters;
  std::vector<int64_t> shape;
  std::vector<T> data;
};

// out = x permuted to `letters` (a permutation of x.letters).
template <class T>
Term<T> permute(const Term<T>& x, const std::string& letters) {
  if (letters == x.letters) return x;
  Term<T> o;
  o.letters = letters;
  const size_t r = letters.size();
  std::vector<int64_t> xs = strides_of(x.shape), st(r);
  for (size_t i = 0; i < r; ++i) {
    const size_t j = x.letters.find(letters[i]);
    o.shape.push_back(x.shape[j]);
    st[i] = xs[j];
  }
  o.data.resize(x.data.size());
  std::vector<int64_t> pos(r + 1, 0);
  for (size_t i = 0; i < o.data.size(); ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < r; ++d) off += pos[d] * st[d];
    o.data[i] = x.data[off];
    for (size_t d = r; d-- > 0;) {
      if (++pos[d] < o.shape[d]) break;
      pos[d] = 0;
    }
  }
  return o;
}

// x with its size-1 dimension `letter` repeated `size` times (numpy's
// broadcasting of the dimensions under '...').
template <class T>
Term<T> broadcast(const Term<T>& x, char letter, int64_t size) {
  const size_t at = x.letters.find(letter);
  Term<T> o;
  o.letters = x.letters;
  o.shape = x.shape;
  o.shape[at] = size;
  std::vector<int64_t> st = strides_of(x.shape);
  st[at] = 0;
  o.data.resize(numel_of(o.shape));
  const size_t r = o.shape.size();
  std::vector<int64_t> pos(r + 1, 0);
  for (size_t i = 0; i < o.data.size(); ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < r; ++d) off += pos[d] * st[d];
    o.data[i] = x.data[off];
    for (size_t d = r; d-- > 0;) {
      if (++pos[d] < o.shape[d]) break;
      pos[d] = 0;
    }
  }
  return o;
}

// Takes diagonals of repeated letters and sums letters not in `keep`.
template <class T>
Term<T> simplify(const Term<T>& x, const std::set<char>& keep) {
  std::string letters;
  std::vector<int64_t> shape;
  for (size_t i = 0; i < x.letters.size(); ++i) {
    const char c = x.letters[i];
    const size_t first = x.letters.find(c);
    if (first != i) {
      if (x.shape[i] != x.shape[first]) throw Error(std::string("index '") + c + "' has two different sizes");
      continue;
    }
    if (!keep.count(c)) continue;
    letters += c;
    shape.push_back(x.shape[i]);
  }
  if (letters == x.letters) return x;
  Term<T> o;
  o.letters = letters;
  o.shape = shape;
  o.data.assign(numel_of(shape), T(0));
  const std::vector<int64_t> os = strides_of(shape);
  const size_t r = x.letters.size();
  std::vector<int64_t> pos(r + 1, 0);
  for (size_t i = 0; i < x.data.size(); ++i) {
    bool diag = true;
    int64_t off = 0;
    for (size_t d = 0; d < r && diag; ++d) {
      const size_t first = x.letters.find(x.letters[d]);
      if (pos[d] != pos[first]) diag = false;
      const size_t k = letters.find(x.letters[d]);
      if (first == d && k != std::string::npos) off += pos[d] * os[k];
    }
    if (diag) o.data[off] += x.data[i];
    for (size_t d = r; d-- > 0;) {
      if (++pos[d] < x.shape[d]) break;
      pos[d] = 0;
    }
  }
  return o;
}

// a and b contracted over the letters they share that are not in `keep`.
template <class T>
Term<T> contract(const Term<T>& a, const Term<T>& b, const std::set<char>& keep) {
  std::string batch, m, n, k;
  for (char c : a.letters) {
    const bool in_b = b.letters.find(c) != std::string::npos;
    if (in_b && keep.count(c))
      batch += c;
    else if (in_b)
      k += c;
    else
      m += c;
  }
  for (char c : b.letters)
    if (a.letters.find(c) == std::string::npos) n += c;
  auto size_of = [](const Term<T>& t, const std::string& ls) {
    int64_t s = 1;
    for (char c : ls) s *= t.shape[t.letters.find(c)];
    return s;
  };
  for (char c : batch + k)
    if (a.shape[a.letters.find(c)] != b.shape[b.letters.find(c)])
      throw Error(std::string("index '") + c + "' has different sizes in two operands");
  const Term<T> ap = permute(a, batch + m + k), bp = permute(b, batch + k + n);
  const int64_t B = size_of(a, batch), M = size_of(a, m), K = size_of(a, k), N = size_of(b, n);
  Term<T> o;
  o.letters = batch + m + n;
  for (char c : batch + m) o.shape.push_back(a.shape[a.letters.find(c)]);
  for (char c : n) o.shape.push_back(b.shape[b.letters.find(c)]);
  o.data.assign(static_cast<size_t>(B * M * N), T(0));
  for (int64_t i = 0; i < B; ++i) {
    const T* x = ap.data.data() + i * M * K;
    const T* y = bp.data.data() + i * K * N;
    T* z = o.data.data() + i * M * N;
    if constexpr (std::is_same_v<T, float>) {
      f32_matmul(x, y, z, M, K, N, false);
    } else {
      for (int64_t r = 0; r < M; ++r)
        for (int64_t q = 0; q < K; ++q) {
          const T xv = x[r * K + q];
          for (int64_t c = 0; c < N; ++c) z[r * N + c] += xv * y[q * N + c];
        }
    }
  }
  return o;
}

template <class T>
void einsum_typed(KernelContext& ctx) {
  std::string eq = attr_string(ctx.node, "equation", "");
  eq.erase(std::remove(eq.begin(), eq.end(), ' '), eq.end());
  const size_t arrow = eq.find("->");
  const std::string lhs = eq.substr(0, arrow);
  std::vector<std::string> specs;
  for (size_t s = 0, e; s <= lhs.size(); s = e + 1) {
    e = lhs.find(',', s);
    if (e == std::string::npos) e = lhs.size();
    specs.push_back(lhs.substr(s, e - s));
  }
  if (specs.size() != ctx.num_inputs())
    throw Error("equation '" + eq + "' names " + std::to_string(specs.size()) + " operands, the node has " +
                std::to_string(ctx.num_inputs()));
  // The dimensions under '...' become the characters 1, 2, ... (right-aligned
  // across operands), apart from every letter of the equation.
  auto ell_char = [](size_t j, size_t er) { return static_cast<char>(1 + 32 - er + j); };
  size_t ell_rank = 0;
  std::vector<Term<T>> terms;
  for (size_t i = 0; i < specs.size(); ++i) {
    const RunValue& v = ctx.input(i);
    if (v.type != ctx.input(0).type)
      throw Error("operands of different types: " + describe(ctx.input(0)) + " and " + describe(v));
    const size_t dots = specs[i].find("...");
    const size_t named = specs[i].size() - (dots == std::string::npos ? 0 : 3);
    if (dots == std::string::npos ? named != v.shape.size() : named > v.shape.size())
      throw Error("operand " + std::to_string(i) + " '" + specs[i] + "' does not match " + describe(v));
    const size_t er = v.shape.size() - named;
    ell_rank = std::max(ell_rank, er);
    std::string ls = specs[i];
    if (dots != std::string::npos) {
      std::string e;
      if (er > 32) unsupported("Einsum with more than 32 dimensions under '...'");
      for (size_t j = 0; j < er; ++j) e += ell_char(j, er);
      ls = ls.substr(0, dots) + e + ls.substr(dots + 3);
    }
    Term<T> t;
    t.letters = ls;
    t.shape = v.shape;
    t.data.assign(v.as<T>(), v.as<T>() + v.numel());
    terms.push_back(std::move(t));
  }
  std::string ell;
  for (size_t j = 0; j < ell_rank; ++j) ell += ell_char(j, ell_rank);
  // A size-1 dimension under '...' broadcasts against the other operands'.
  for (char c : ell) {
    int64_t size = 1;
    for (const Term<T>& t : terms) {
      const size_t at = t.letters.find(c);
      if (at == std::string::npos || t.shape[at] == 1) continue;
      if (size != 1 && t.shape[at] != size)
        throw Error("the dimensions under '...' do not broadcast: " + std::to_string(size) + " and " +
                    std::to_string(t.shape[at]));
      size = t.shape[at];
    }
    for (Term<T>& t : terms) {
      const size_t at = t.letters.find(c);
      if (at != std::string::npos && t.shape[at] == 1 && size != 1) t = broadcast(t, c, size);
    }
  }
  std::string out;
  if (arrow != std::string::npos) {
    out = eq.substr(arrow + 2);
    const size_t dots = out.find("...");
    if (dots != std::string::npos) out = out.substr(0, dots) + ell + out.substr(dots + 3);
  } else {
    // Implicit output: the ellipsis, then letters appearing once, in order
    // (upper case before lower case, as numpy).
    std::map<char, int> count;
    for (const Term<T>& t : terms)
      for (char c : t.letters) ++count[c];
    out = ell;
    for (const auto& [c, n] : count)
      if (n == 1 && std::isalpha(static_cast<unsigned char>(c))) out += c;
  }
  // Reduce each operand to what later operands or the output need, then fold.
  auto needed_after = [&](size_t i, const std::string& extra) {
    std::set<char> keep(out.begin(), out.end());
    keep.insert(extra.begin(), extra.end());
    for (size_t j = i + 1; j < terms.size(); ++j)
      keep.insert(terms[j].letters.begin(), terms[j].letters.end());
    return keep;
  };
  Term<T> acc = simplify(terms[0], needed_after(0, ""));
  for (size_t i = 1; i < terms.size(); ++i) {
    Term<T> next = simplify(terms[i], needed_after(i, acc.letters));
    acc = contract(acc, next, needed_after(i, ""));
  }
  acc = simplify(acc, std::set<char>(out.begin(), out.end()));
  for (char c : out)
    if (acc.letters.find(c) == std::string::npos)
      throw Error(std::string("output index '") + c + "' is not in any operand");
  acc = permute(acc, out);
  T* o = ctx.alloc<T>(0, ctx.input(0).type, acc.shape);
  std::memcpy(o, acc.data.data(), acc.data.size() * sizeof(T));
}

void einsum(KernelContext& ctx) {
  if (ctx.num_inputs() == 0) throw Error("Einsum needs at least one operand");
  const RunValue& x = ctx.input(0);
  switch (x.type) {
    case ElemType::F32: return einsum_typed<float>(ctx);
    case ElemType::F64: return einsum_typed<double>(ctx);
    case ElemType::I32: return einsum_typed<int32_t>(ctx);
    case ElemType::I64: return einsum_typed<int64_t>(ctx);
    default: unsupported("Einsum of " + describe(x));
  }
}

}  // namespace

void register_ops_einsum(KernelTable& t) { t.add_fn("", "Einsum", 12, kMaxOpset, einsum); }

}  // namespace qforge::cpu
