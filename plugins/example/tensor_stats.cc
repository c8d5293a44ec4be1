// tensor-stats: an example qforge plugin with one pass that measures the
// model's tensors (counts, parameters, bytes by encoding, and the largest
// absolute value of float tensors) and reports them as metrics. It leaves the
// model unchanged.
#include <cmath>
#include <cstring>
#include <map>

#include "qforge/plugin.h"

namespace {

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

class TensorStats : public qforge::Pass {
 public:
  qforge::PassResult run(qforge::Model& model, qforge::PassContext& ctx) override {
    qforge::PassResult r;
    r.status = qforge::guard([&] {
      const int64_t top = ctx.options.at("top").i;
      double max_abs = 0;
      uint64_t params = 0, bytes = 0, float_tensors = 0;
      std::map<std::string, uint64_t> by_type;
      std::vector<std::pair<uint64_t, std::string>> largest;
      for (const auto& t : model.tensors) {
        params += t.numel();
        bytes += t.nbytes();
        by_type[qforge::name_of(t.type)] += t.nbytes();
        largest.emplace_back(t.nbytes(), t.name);
        if (t.type != qforge::ElemType::F32 && t.type != qforge::ElemType::F16) continue;
        ++float_tensors;
        auto blob = t.bytes();
        const uint8_t* p = blob->data();
        for (uint64_t i = 0; i < t.numel(); ++i) {
          float v;
          if (t.type == qforge::ElemType::F32) {
            std::memcpy(&v, p + 4 * i, 4);
          } else {
            uint16_t h;
            std::memcpy(&h, p + 2 * i, 2);
            v = f16_to_f32(h);
          }
          if (std::isfinite(v)) max_abs = std::max(max_abs, static_cast<double>(std::fabs(v)));
        }
        blob->release_pages();
      }
      r.metrics["tensors"] = static_cast<double>(model.tensors.size());
      r.metrics["parameters"] = static_cast<double>(params);
      r.metrics["float_max_abs"] = max_abs;
      r.metrics["float_tensors"] = static_cast<double>(float_tensors);
      std::sort(largest.rbegin(), largest.rend());
      for (int64_t i = 0; i < top && i < static_cast<int64_t>(largest.size()); ++i)
        r.notes.push_back("largest tensor #" + std::to_string(i + 1) + ": " + largest[i].second + " (" +
                          std::to_string(largest[i].first) + " bytes)");
      for (const auto& [type, b] : by_type) r.notes.push_back(type + ": " + std::to_string(b) + " bytes");
    });
    return r;
  }
};

void register_tensor_stats(qforge::Registry& registry) {
  qforge::PassInfo info;
  info.name = "tensor-stats";
  info.description = "Measure tensors (counts, bytes by encoding, largest |value|); changes nothing";
  info.version = 1;
  qforge::OptionSpec top;
  top.name = "top";
  top.type = qforge::OptType::Int;
  top.help = "how many of the largest tensors to list in the report";
  top.default_value = qforge::Value::of_int(3);
  info.options.push_back(top);
  info.factory = [] { return std::make_unique<TensorStats>(); };
  registry.add_pass(std::move(info));
}

}  // namespace

QFORGE_PLUGIN("tensor-stats", "1.0.0", register_tensor_stats)
