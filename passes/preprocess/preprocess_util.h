// Helpers shared by the pre-processing passes (preprocess.h): what is known
// about a value's type and shape, and removing a node that forwards its input.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qforge/graph.h"
#include "qforge/model.h"

namespace qforge::preprocess {

// The element type of `value`: an initializer's, or a graph input's, output's
// or value_info's; nullopt when unknown.
std::optional<ElemType> value_elem(const Model& m, const std::string& value);
// Its dimensions (known, symbolic or unknown); nullopt when the rank is unknown.
std::optional<std::vector<Dim>> value_dims(const Model& m, const std::string& value);
// Its shape when every dimension is known.
std::optional<std::vector<int64_t>> static_shape(const Model& m, const std::string& value);

// Makes the readers of node `index`'s output `out` read `in` instead and
// removes the node. When `out` is a graph output, the node producing `in`
// is made to produce `out` instead (graph outputs keep their names); when
// that cannot be done (`in` is a graph input, an initializer, a graph output
// or read inside a subgraph) returns false with `reason` set and changes
// nothing.
bool bypass_node(Model& m, size_t index, const std::string& in, const std::string& out, std::string& reason);

// The integer values of a constant initializer (int64 or int32), or nullopt.
std::optional<std::vector<int64_t>> const_ints(const Model& m, const std::string& name);

}  // namespace qforge::preprocess
