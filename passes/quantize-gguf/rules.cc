#include "rules.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "qforge/status.h"

namespace qforge::gguf_quant {
namespace {

using E = ElemType;
using F = FileType;

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// ------------------------------------------------------------------ file types
// llama-quantize's QUANT_OPTIONS rows qforge supports (aliases included) and
// llama_ftype_get_default_type.
const std::vector<FileTypeInfo> kFileTypes = {
    {"Q4_0", F::Q4_0, E::Q4_0},     {"Q4_1", F::Q4_1, E::Q4_1},       {"Q5_0", F::Q5_0, E::Q5_0},
    {"Q5_1", F::Q5_1, E::Q5_1},     {"Q2_K", F::Q2_K, E::Q2_K},       {"Q2_K_S", F::Q2_K_S, E::Q2_K},
    {"Q3_K", F::Q3_K_M, E::Q3_K},   {"Q3_K_S", F::Q3_K_S, E::Q3_K},   {"Q3_K_M", F::Q3_K_M, E::Q3_K},
    {"Q3_K_L", F::Q3_K_L, E::Q3_K}, {"IQ4_NL", F::IQ4_NL, E::IQ4_NL}, {"IQ4_XS", F::IQ4_XS, E::IQ4_XS},
    {"Q4_K", F::Q4_K_M, E::Q4_K},   {"Q4_K_S", F::Q4_K_S, E::Q4_K},   {"Q4_K_M", F::Q4_K_M, E::Q4_K},
    {"Q5_K", F::Q5_K_M, E::Q5_K},   {"Q5_K_S", F::Q5_K_S, E::Q5_K},   {"Q5_K_M", F::Q5_K_M, E::Q5_K},
    {"Q6_K", F::Q6_K, E::Q6_K},     {"Q8_0", F::Q8_0, E::Q8_0},       {"F16", F::F16, E::F16},
    {"BF16", F::BF16, E::BF16},     {"F32", F::ALL_F32, E::F32},
};

// llama.cpp file types qforge refuses, and why.
const std::map<std::string, const char*> kUnsupportedFileTypes = {
    {"Q1_0", "qforge has no Q1_0 tensor type"},
    {"Q2_0", "qforge has no Q2_0 tensor type"},
    {"MXFP4_MOE", "qforge has no MXFP4 quantizer"},
    {"IQ2_XXS", "qforge has no IQ2_XXS quantizer"},
    {"IQ2_XS", "qforge has no IQ2_XS quantizer"},
    {"IQ2_S", "qforge has no IQ2_XS/IQ2_S quantizer"},
    {"IQ2_M", "qforge has no IQ2_S quantizer"},
    {"IQ1_S", "qforge has no IQ1_S quantizer"},
    {"IQ1_M", "qforge has no IQ1_M quantizer"},
    {"TQ1_0", "qforge has no TQ1_0 quantizer"},
    {"TQ2_0", "qforge has no TQ2_0 quantizer"},
    {"IQ3_XXS", "qforge has no IQ3_XXS quantizer"},
    {"IQ3_S", "qforge has no IQ3_S quantizer"},
    {"IQ3_M", "qforge has no IQ3_S quantizer"},
    {"IQ3_XS", "qforge has no IQ3_S quantizer"},
    {"COPY", "copying without quantizing is not a quantize-gguf job"},
};

// ------------------------------------------------------------------ roles
enum class Match { Exact, Contains };
struct RoleRow {
  Match match;
  const char* text;
  Role role;
};
// llama.cpp's tensor_get_category, in its order (the first match wins).
const RoleRow kRoles[] = {
    {Match::Exact, "output.weight", Role::Output},
    {Match::Exact, "token_embd.weight", Role::TokenEmbd},
    {Match::Exact, "per_layer_token_embd.weight", Role::TokenEmbd},
    {Match::Contains, "attn_qkv.weight", Role::AttnQkv},
    {Match::Contains, "attn_kv_b.weight", Role::AttnKvB},
    {Match::Contains, "attn_v.weight", Role::AttnV},
    {Match::Contains, "attn_k.weight", Role::AttnK},
    {Match::Contains, "attn_q.weight", Role::AttnQ},
    {Match::Contains, "attn_output.weight", Role::AttnOutput},
    {Match::Contains, "ffn_up", Role::FfnUp},
    {Match::Contains, "ffn_gate", Role::FfnGate},
    {Match::Contains, "ffn_down", Role::FfnDown},
};

// Weights llama.cpp never quantizes (tensor_allows_quantization), besides 1-D tensors,
// names not ending in "weight", and output.weight under --leave-output-tensor.
const RoleRow kKeep[] = {
    {Match::Contains, "_norm.weight", Role::Other},
    {Match::Contains, "ffn_gate_inp.weight", Role::Other},  // expert routers
    {Match::Contains, "ffn_gate_tid2eid.weight", Role::Other},
    {Match::Contains, "altup", Role::Other},
    {Match::Contains, "laurel", Role::Other},
    {Match::Contains, "per_layer_model_proj", Role::Other},
    // LLM_TN(arch)(POS_EMBD / TOKEN_TYPES): the same names for every architecture that has them.
    {Match::Exact, "position_embd.weight", Role::Other},
    {Match::Exact, "token_types.weight", Role::Other},
    {Match::Contains, "ssm_conv1d", Role::Other},
    {Match::Contains, "shortconv.conv.weight", Role::Other},
    {Match::Contains, "indexer.k_proj.weight", Role::Other},
    {Match::Contains, "indexer.q_proj.weight", Role::Other},
    {Match::Contains, "time_mix_first.weight", Role::Other},
    {Match::Contains, "time_mix_w0.weight", Role::Other},
    {Match::Contains, "time_mix_w1.weight", Role::Other},
    {Match::Contains, "time_mix_w2.weight", Role::Other},
    {Match::Contains, "time_mix_v0.weight", Role::Other},
    {Match::Contains, "time_mix_v1.weight", Role::Other},
    {Match::Contains, "time_mix_v2.weight", Role::Other},
    {Match::Contains, "time_mix_a0.weight", Role::Other},
    {Match::Contains, "time_mix_a1.weight", Role::Other},
    {Match::Contains, "time_mix_a2.weight", Role::Other},
    {Match::Contains, "time_mix_g1.weight", Role::Other},
    {Match::Contains, "time_mix_g2.weight", Role::Other},
    {Match::Contains, "time_mix_decay_w1.weight", Role::Other},
    {Match::Contains, "time_mix_decay_w2.weight", Role::Other},
    {Match::Contains, "time_mix_lerp_fused.weight", Role::Other},
    {Match::Contains, "attn_rel_b.weight", Role::Other},
    {Match::Contains, ".position_embd", Role::Other},
    {Match::Contains, "sam.pos_embd", Role::Other},
    {Match::Contains, "sam.neck.", Role::Other},
    {Match::Contains, "sam.net_", Role::Other},
    {Match::Contains, ".rel_pos", Role::Other},
    {Match::Contains, ".patch_embd", Role::Other},
    {Match::Contains, ".patch_merger", Role::Other},
    {Match::Contains, "a.rvq.codebook", Role::Other},
    {Match::Contains, "mm.a.code_embd", Role::Other},
};

bool matches(const RoleRow& r, const std::string& name) {
  return r.match == Match::Exact ? name == r.text : name.find(r.text) != std::string::npos;
}

// Architectures whose 80-layer (jais2: 68-layer) model llama.cpp calls LLM_TYPE_70B.
struct SeventyB {
  const char* arch;
  int n_layer;
  bool needs_gqa;     // llama: 65B when n_head == n_head_kv
  bool not_experts8;  // llama: 8 experts make it 8x7B / 8x22B / unknown instead
};
const SeventyB k70B[] = {
    {"llama", 80, true, true},  {"qwen2", 80, false, false}, {"deci", 80, false, false},
    {"olmo", 80, false, false}, {"jais2", 68, false, false},
};

// ------------------------------------------------------------------ mixture rules
// Conditions a rule row requires (all of them). `i`/`n` are the role's counter pair:
// (i_attention_wv, n_attention_wv) for attn_v-like tensors, (layer, n_layer) for FFN.
enum Cond : uint32_t {
  kAlways = 0,
  kGqa4 = 1u << 0,         // n_gqa() >= 4
  kLayerLt8th = 1u << 1,   // i < n/8
  kLayerLt16th = 1u << 2,  // i < n/16
  kMoreBits = 1u << 3,     // use_more_bits(i, n)
  kFalcon = 1u << 4,
  kNotFalcon = 1u << 5,
  kImatrix = 1u << 6,
  kNoImatrix = 1u << 7,
  kIdxLt2 = 1u << 8,     // i < 2
  kIdxLt4 = 1u << 9,     // i < 4
  kExperts8 = 1u << 10,  // n_expert == 8
  kNotExperts8 = 1u << 11,
  kNotFalconOrMoreBits = 1u << 12,
};

struct Rule {
  Role role;  // AttnV stands for every attn_v-like role (attn_v, attn_qkv, attn_kv_b)
  std::vector<F> ftypes;
  uint32_t cond;
  E type;
};

// llama_tensor_get_type_impl for the file types above, one row per outcome, in the order
// of llama.cpp's else-if chains (within a role the first matching row wins; a role's
// chain never has two rows for the same file type whose order could matter otherwise).
const std::vector<Rule> kRules = {
    // attn_v (and attn_qkv, attn_kv_b)
    {Role::AttnV, {F::Q2_K}, kGqa4, E::Q4_K},
    {Role::AttnV, {F::Q2_K}, kAlways, E::Q3_K},
    {Role::AttnV, {F::Q2_K_S}, kGqa4, E::Q4_K},
    {Role::AttnV, {F::Q3_K_M}, kIdxLt2, E::Q5_K},
    {Role::AttnV, {F::Q3_K_M}, kAlways, E::Q4_K},
    {Role::AttnV, {F::Q3_K_L}, kAlways, E::Q5_K},
    {Role::AttnV, {F::IQ4_NL, F::IQ4_XS}, kGqa4, E::Q5_K},
    {Role::AttnV, {F::Q4_K_M, F::Q5_K_M}, kMoreBits, E::Q6_K},
    {Role::AttnV, {F::Q4_K_S}, kIdxLt4, E::Q5_K},
    // attn_k
    {Role::AttnK, {}, kExperts8, E::Q8_0},
    // ffn_down
    {Role::FfnDown, {F::Q2_K}, kAlways, E::Q3_K},
    {Role::FfnDown, {F::Q2_K_S}, kLayerLt8th, E::Q4_K},
    {Role::FfnDown, {F::Q3_K_M}, kLayerLt16th, E::Q5_K},
    {Role::FfnDown, {F::Q3_K_M}, kNotFalconOrMoreBits, E::Q4_K},
    {Role::FfnDown, {F::Q3_K_M}, kAlways, E::Q3_K},
    {Role::FfnDown, {F::Q3_K_L}, kFalcon, E::Q4_K},
    {Role::FfnDown, {F::Q3_K_L}, kAlways, E::Q5_K},
    {Role::FfnDown, {F::Q4_K_M}, kFalcon | kLayerLt16th, E::Q6_K},
    {Role::FfnDown, {F::Q4_K_M}, kFalcon | kMoreBits, E::Q5_K},
    {Role::FfnDown, {F::Q4_K_M}, kFalcon, E::Q4_K},
    {Role::FfnDown, {F::Q4_K_M}, kMoreBits, E::Q6_K},
    {Role::FfnDown, {F::IQ4_NL, F::IQ4_XS}, kLayerLt8th | kNoImatrix, E::Q5_K},
    {Role::FfnDown, {F::Q5_K_M}, kMoreBits, E::Q6_K},
    {Role::FfnDown, {F::Q4_K_S}, kNotFalcon | kLayerLt8th, E::Q5_K},
    {Role::FfnDown, {F::Q4_0}, kImatrix | kLayerLt8th, E::Q4_1},
    {Role::FfnDown, {F::Q5_0}, kImatrix | kLayerLt8th, E::Q5_1},
    // attn_output
    {Role::AttnOutput,
     {F::Q2_K, F::Q3_K_S, F::Q3_K_M, F::IQ4_NL, F::Q4_K_S, F::Q4_K_M, F::IQ4_XS},
     kNotFalcon | kExperts8,
     E::Q5_K},
    {Role::AttnOutput, {F::Q2_K}, kNotFalcon | kNotExperts8, E::Q3_K},
    {Role::AttnOutput, {F::Q3_K_M}, kNotFalcon | kNotExperts8, E::Q4_K},
    {Role::AttnOutput, {F::Q3_K_L}, kNotFalcon | kNotExperts8, E::Q5_K},
    {Role::AttnOutput, {F::Q3_K_L}, kFalcon, E::Q4_K},
};

// Fallbacks for row lengths not a multiple of the block size (tensor_type_fallback);
// a 32-block type keeps its type here and becomes F16 below.
const std::map<E, E> kFallback = {
    {E::IQ1_S, E::IQ4_NL}, {E::IQ1_M, E::IQ4_NL},   {E::IQ2_XXS, E::IQ4_NL}, {E::IQ2_XS, E::IQ4_NL},
    {E::IQ2_S, E::IQ4_NL}, {E::IQ3_XXS, E::IQ4_NL}, {E::IQ3_S, E::IQ4_NL},   {E::IQ4_XS, E::IQ4_NL},
    {E::Q2_K, E::Q4_0},    {E::Q3_K, E::Q4_0},      {E::TQ1_0, E::Q4_0},     {E::TQ2_0, E::Q4_0},
    {E::Q4_K, E::Q5_0},    {E::Q5_K, E::Q5_1},      {E::Q6_K, E::Q8_0},
};

bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

bool holds(uint32_t cond, int i, int n, const ModelFacts& f, bool has_imatrix) {
  if ((cond & kGqa4) && !(f.n_gqa() >= 4)) return false;
  if ((cond & kLayerLt8th) && !(i < n / 8)) return false;
  if ((cond & kLayerLt16th) && !(i < n / 16)) return false;
  if ((cond & kMoreBits) && !use_more_bits(i, n)) return false;
  if ((cond & kFalcon) && !f.falcon()) return false;
  if ((cond & kNotFalcon) && f.falcon()) return false;
  if ((cond & kImatrix) && !has_imatrix) return false;
  if ((cond & kNoImatrix) && has_imatrix) return false;
  if ((cond & kIdxLt2) && !(i < 2)) return false;
  if ((cond & kIdxLt4) && !(i < 4)) return false;
  if ((cond & kExperts8) && f.n_expert != 8) return false;
  if ((cond & kNotExperts8) && f.n_expert == 8) return false;
  if ((cond & kNotFalconOrMoreBits) && !(!f.falcon() || use_more_bits(i, n))) return false;
  return true;
}

bool is_attn_v_like(Role r) { return r == Role::AttnV || r == Role::AttnQkv || r == Role::AttnKvB; }

int64_t ncols(const Tensor& t) { return t.shape.empty() ? 1 : t.shape.back(); }

// The planner's running state (llama.cpp's quantize_state_impl counters).
struct State {
  int n_attention_wv = 0, i_attention_wv = 0;
  int n_ffn = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;
  bool tied_embeddings = true;
};

bool allows_quantization(const Tensor& t, const SelectOptions& o) {
  if (ggml_n_dims(t.shape) < 2) return false;
  const std::string& name = t.name;
  // llama.cpp's "ends with weight" test is name.rfind("weight") == name.size() - 6, which
  // is also true for any 5-character name (npos == size_t(-1)); kept for identical output.
  if (name.rfind("weight") != name.size() - 6) return false;
  if (!o.quantize_output_tensor && name == "output.weight") return false;
  for (const auto& k : kKeep)
    if (matches(k, name)) return false;
  return true;
}

// llama_tensor_get_type_impl.
E mixture_type(State& s, E new_type, const Tensor& t, Role role, const ModelFacts& f,
               const SelectOptions& o) {
  if (role == Role::Output || (s.tied_embeddings && role == Role::TokenEmbd)) {
    if (o.output_tensor_type) return *o.output_tensor_type;
    if (f.falcon() || ncols(t) % traits(new_type).block_size != 0) return E::Q8_0;
    return new_type != E::Q8_0 ? E::Q6_K : new_type;
  }
  if (role == Role::TokenEmbd) return new_type;  // no rule for qforge's file types

  // Layer of an FFN tensor: a counter, or parsed from the name when there are experts
  // (Mixtral's expert tensors are not stored in layer order).
  auto layer_of = [&](int counter) {
    int layer = counter;
    if (std::max<uint32_t>(1, f.n_expert) > 1) {
      if (std::sscanf(t.name.c_str(), "blk.%d.", &layer) != 1)
        throw Error("quantize-gguf: tensor " + t.name +
                    ": cannot find its layer (expected a name starting with blk.N.) in a "
                    "model with experts");
      if (layer < 0 || layer >= f.n_layer)
        throw Error("quantize-gguf: tensor " + t.name + ": layer " + std::to_string(layer) +
                    " is outside [0, " + std::to_string(f.n_layer) + ") (block_count)");
    }
    return layer;
  };

  Role table_role = is_attn_v_like(role) ? Role::AttnV : role;
  int i = 0, n = 0;
  int* counter = nullptr;
  switch (table_role) {
    case Role::AttnV: i = s.i_attention_wv, n = s.n_attention_wv, counter = &s.i_attention_wv; break;
    case Role::FfnDown: i = layer_of(s.i_ffn_down), n = s.n_ffn, counter = &s.i_ffn_down; break;
    case Role::FfnGate: i = layer_of(s.i_ffn_gate), n = s.n_ffn, counter = &s.i_ffn_gate; break;
    case Role::FfnUp: i = layer_of(s.i_ffn_up), n = s.n_ffn, counter = &s.i_ffn_up; break;
    default: break;
  }
  for (const Rule& r : kRules) {
    if (r.role != table_role) continue;
    if (!r.ftypes.empty() && std::find(r.ftypes.begin(), r.ftypes.end(), o.ftype) == r.ftypes.end()) continue;
    if (!holds(r.cond, i, n, f, o.has_imatrix)) continue;
    new_type = r.type;
    break;
  }
  if (table_role == Role::AttnV) {
    // 70B: 8 heads share attn_v, so more bits there cost little.
    if (f.is_70b && (new_type == E::Q3_K || new_type == E::Q4_K)) new_type = E::Q5_K;
    if (f.n_expert == 8) new_type = E::Q8_0;
  }
  if (counter) ++*counter;
  return new_type;
}

}  // namespace

const std::vector<FileTypeInfo>& file_types() { return kFileTypes; }

const char* name_of(FileType t) {
  for (const auto& r : kFileTypes) {
    const std::string n = r.name;
    const bool alias = n == "Q3_K" || n == "Q4_K" || n == "Q5_K";
    if (r.ftype == t && !alias) return r.name;
  }
  return "?";
}

const FileTypeInfo& parse_file_type(const std::string& name) {
  const std::string u = upper(name);
  for (const auto& r : kFileTypes)
    if (u == r.name) return r;
  if (auto it = kUnsupportedFileTypes.find(u); it != kUnsupportedFileTypes.end())
    throw Error("quantize-gguf: type '" + name + "' (a llama.cpp file type) is not supported: " + it->second);
  std::string known;
  for (const auto& r : kFileTypes) known += (known.empty() ? "" : ", ") + std::string(r.name);
  throw Error("quantize-gguf: unknown type '" + name + "'; expected one of " + known);
}

const char* name_of(Role r) {
  switch (r) {
    case Role::TokenEmbd: return "token_embd";
    case Role::AttnQ: return "attn_q";
    case Role::AttnV: return "attn_v";
    case Role::AttnK: return "attn_k";
    case Role::AttnQkv: return "attn_qkv";
    case Role::AttnKvB: return "attn_kv_b";
    case Role::AttnOutput: return "attn_output";
    case Role::FfnUp: return "ffn_up";
    case Role::FfnGate: return "ffn_gate";
    case Role::FfnDown: return "ffn_down";
    case Role::Output: return "output";
    case Role::Other: return "other";
  }
  return "?";
}

Role classify(const std::string& name) {
  for (const auto& r : kRoles)
    if (matches(r, name)) return r.role;
  return Role::Other;
}

int ggml_n_dims(const std::vector<int64_t>& shape) {
  // shape is outermost first: ne[i] == shape[size-1-i].
  for (int i = static_cast<int>(shape.size()) - 1; i >= 1; --i)
    if (shape[shape.size() - 1 - i] > 1) return i + 1;
  return 1;
}

ModelFacts read_model_facts(const Model& m) {
  ModelFacts f;
  const MetaValue* arch = m.meta("general.architecture");
  if (!arch || arch->type != MetaType::String)
    throw Error(
        "quantize-gguf: the model has no general.architecture string (llama.cpp needs it "
        "to pick tensor types)");
  f.arch = arch->s;
  auto get_u32 = [&](const std::string& key, bool required, uint32_t def) -> uint32_t {
    const MetaValue* v = m.meta(key);
    if (!v) {
      if (required) throw Error("quantize-gguf: the model has no " + key + " (required)");
      return def;
    }
    const MetaValue* s = v;
    if (v->type == MetaType::Array) {  // per-layer values: llama.cpp's rules read layer 0
      if (v->array.empty()) throw Error("quantize-gguf: " + key + " is an empty array");
      s = &v->array[0];
    }
    auto x = s->as_int();
    if (!x || *x < 0 || *x > 0xFFFFFFFFll)
      throw Error("quantize-gguf: " + key + ": expected an unsigned integer, found " + s->summary());
    return static_cast<uint32_t>(*x);
  };
  f.n_layer = static_cast<int>(get_u32(f.arch + ".block_count", true, 0));
  f.n_head = get_u32(f.arch + ".attention.head_count", false, 0);
  f.n_head_kv = get_u32(f.arch + ".attention.head_count_kv", false, f.n_head);
  f.n_expert = get_u32(f.arch + ".expert_count", false, 0);
  for (const auto& r : k70B)
    if (f.arch == r.arch && f.n_layer == r.n_layer && (!r.needs_gqa || f.n_head != f.n_head_kv) &&
        (!r.not_experts8 || f.n_expert != 8))
      f.is_70b = true;
  return f;
}

std::vector<size_t> llama_order(const std::vector<std::string>& names) {
  std::vector<int> layer(names.size(), -1);
  for (size_t k = 0; k < names.size(); ++k) std::sscanf(names[k].c_str(), "blk.%d.", &layer[k]);
  std::vector<size_t> idx(names.size());
  for (size_t k = 0; k < idx.size(); ++k) idx[k] = k;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (layer[a] != layer[b]) return layer[a] < layer[b];
    return names[a] < names[b];
  });
  return idx;
}

std::vector<Decision> select_types(const std::vector<const Tensor*>& tensors, const ModelFacts& f,
                                   const SelectOptions& o) {
  State s;
  std::vector<Decision> out(tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    out[k].name = tensors[k]->name;
    out[k].role = classify(tensors[k]->name);
    if (is_attn_v_like(out[k].role)) ++s.n_attention_wv;
    if (out[k].role == Role::Output) s.tied_embeddings = false;
  }
  s.n_ffn = f.n_layer;
  const bool default_quantized = traits(o.default_type).quantized;

  for (size_t k = 0; k < tensors.size(); ++k) {
    const Tensor& t = *tensors[k];
    Decision& d = out[k];
    d.from = d.to = t.type;
    d.allows_quantization = allows_quantization(t, o);
    if (!d.allows_quantization) continue;
    // llama_tensor_get_type
    if (o.token_embedding_type && d.role == Role::TokenEmbd) {
      bool named = false;  // per_layer_token_embd may be named by an override instead
      if (t.name == "per_layer_token_embd.weight")
        for (const auto& [re, type] : o.overrides)
          if (std::regex_search(t.name, re)) named = true;
      if (!named) {
        d.to = *o.token_embedding_type;
        continue;
      }
    }
    if (o.output_tensor_type && d.role == Role::Output) {
      d.to = *o.output_tensor_type;
      continue;
    }
    E type = o.default_type;
    if (default_quantized) {
      for (const auto& [re, otype] : o.overrides) {
        if (std::regex_search(t.name, re)) {
          type = otype;
          d.manual = true;
          break;
        }
      }
      if (!d.manual && !o.pure) type = mixture_type(s, type, t, d.role, f, o);
      if (!d.manual)
        if (auto it = o.planned.find(t.name); it != o.planned.end()) {
          type = it->second;  // after mixture_type, whose counters later tensors read
          d.planned = true;
        }
      // tensor_type_fallback
      const int64_t nx = ncols(t);
      const uint32_t bs = traits(type).block_size;
      if (nx % bs != 0) {
        E fb = type;
        if (auto it = kFallback.find(type); it != kFallback.end()) {
          fb = it->second;
        } else if (bs > 32) {
          throw Error(std::string("quantize-gguf: tensor ") + t.name + ": no fallback is defined for type " +
                      name_of(type) + " (row length " + std::to_string(nx) + ")");
        }
        std::string why = "row length " + std::to_string(nx) + " is not a multiple of " + std::to_string(bs) +
                          " (required by " + name_of(type) + ")";
        if (nx % traits(fb).block_size != 0) {
          fb = E::F16;
          why += "; not a multiple of 32 either, so F16";
        }
        d.fallback = why + " -> " + name_of(fb);
        type = fb;
      }
    }
    d.to = type;
  }
  for (auto& d : out) {
    // tensor_requires_imatrix
    if (d.role == Role::Output || d.name == "token_embd.weight" || d.name == "per_layer_token_embd.weight")
      continue;
    switch (d.to) {
      case E::IQ3_XXS:
      case E::IQ2_XXS:
      case E::IQ2_XS:
      case E::IQ2_S:
      case E::IQ1_M:
      case E::IQ1_S: d.requires_imatrix = true; break;
      case E::Q2_K: d.requires_imatrix = o.ftype == F::Q2_K_S; break;
      default: break;
    }
  }
  return out;
}

}  // namespace qforge::gguf_quant
