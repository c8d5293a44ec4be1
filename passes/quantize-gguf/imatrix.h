// Importance matrices as llama.cpp's llama-quantize reads them.
//
// Two file formats:
//   - GGUF (llama-imatrix's default since 2025): per weight W, tensors "W.in_sum2" (F32,
//     ne = [n_per_row, n_experts]) and "W.counts" (F32, ne = [1, n_experts]), metadata
//     imatrix.datasets (array of strings), imatrix.chunk_count and imatrix.chunk_size
//     (u32; all three required). Values are in_sum2 / round(count) per expert (1 when the
//     count is 0).
//   - legacy .dat: i32 n_entries, then n_entries × { i32 name_len, name bytes,
//     i32 ncall, i32 nval, nval × f32 }, then optionally i32 chunk_count, i32 len,
//     dataset bytes. Values are value / ncall (as stored when ncall is 0).
// The result is what llama-quantize hands to llama_model_quantize (after
// --include-weights / --exclude-weights), plus what it writes as quantize.imatrix.*.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace qforge::gguf_quant {

struct Imatrix {
  std::string path;
  std::map<std::string, std::vector<float>> entries;  // weight name -> values
  std::vector<std::string> datasets;
  int32_t chunk_count = 0;
  bool legacy = false;
};

// Reads either format (GGUF by its magic). Throws qforge::Error naming the file, the byte
// offset or tensor, what was expected and what was found.
Imatrix load_imatrix(const std::string& path);

// llama-quantize's filters: --exclude-weights drops entries whose name contains any of
// `exclude`; --include-weights keeps only entries whose name contains one of `include`.
// Both non-empty is an error (as in llama-quantize).
void filter_imatrix(Imatrix& im, const std::vector<std::string>& include,
                    const std::vector<std::string>& exclude);

}  // namespace qforge::gguf_quant
