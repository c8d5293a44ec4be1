// The computation graph (ONNX and any future graph format).
//
// Format-neutral: nodes name their inputs and outputs by value name; graph
// inputs, outputs and value infos carry element types and (possibly symbolic)
// shapes. The top-level graph's initializers are the owning Model's `tensors`
// (so passes see weights as ordinary tensors); a subgraph (an If/Loop/Scan
// body, held by a node attribute) keeps its own in `initializers`.
//
// Pieces no qforge pass rewrites are carried opaquely as serialized bytes of
// the source format (ONNX: FunctionProto, TrainingInfoProto, SparseTensorProto,
// TypeProto of sequences/maps/optionals, fields newer than the ONNX library
// we build against). A pass may copy or drop them but not look inside.
//
// Nodes are kept in topological order (import sorts them; insert_node keeps it).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "qforge/model.h"
#include "qforge/types.h"

namespace qforge {

struct Graph;

// One dimension of a shape: a known size, a symbolic name, or unknown.
struct Dim {
  int64_t value = -1;      // >= 0 when known
  std::string param;       // symbolic name ("batch") when value < 0; empty: unknown
  std::string denotation;  // ONNX dimension denotation ("DATA_BATCH"), rarely set
  bool known() const { return value >= 0; }
};

// The type of a value.
struct ValueType {
  enum class Kind : uint8_t { None, Tensor, Other };
  Kind kind = Kind::None;
  std::optional<ElemType> elem;           // Tensor: nullopt when not given
  std::optional<std::vector<Dim>> shape;  // Tensor: nullopt when the rank is unknown
  std::string denotation;
  std::string opaque;  // Other: the source format's serialized type (ONNX TypeProto)

  static ValueType tensor(ElemType t, std::vector<Dim> dims);
  static ValueType tensor(ElemType t, const std::vector<int64_t>& dims);
};

struct ValueInfo {
  std::string name;
  ValueType type;
  std::string doc_string;
  std::string opaque;  // fields of the source format this IR does not model
};

// An attribute of a node. `type` uses ONNX's AttributeType numbering.
struct Attribute {
  enum class Type : uint8_t {
    Undefined = 0,
    Float = 1,
    Int = 2,
    String = 3,
    Tensor = 4,
    Graph = 5,
    Floats = 6,
    Ints = 7,
    Strings = 8,
    Tensors = 9,
    Graphs = 10,
    SparseTensor = 11,
    SparseTensors = 12,
    TypeProto = 13,
    TypeProtos = 14,
  };
  std::string name;
  Type type = Type::Undefined;
  std::string ref_attr_name;  // inside functions: refers to the caller's attribute
  std::string doc_string;
  float f = 0;
  int64_t i = 0;
  std::string s;  // bytes
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::vector<Tensor> tensors;                 // Tensor (one) and Tensors
  std::vector<std::shared_ptr<Graph>> graphs;  // Graph (one) and Graphs
  std::vector<std::string> opaque;             // SparseTensor(s), TypeProto(s): serialized protos

  static Attribute of_int(std::string name, int64_t v);
  static Attribute of_float(std::string name, float v);
  static Attribute of_string(std::string name, std::string v);
  static Attribute of_ints(std::string name, std::vector<int64_t> v);
  static Attribute of_floats(std::string name, std::vector<float> v);
  static Attribute of_tensor(std::string name, Tensor t);
};

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;               // "" is the default ONNX domain
  std::vector<std::string> inputs;  // "" marks an omitted optional input
  std::vector<std::string> outputs;
  std::vector<Attribute> attributes;
  std::string doc_string;
  std::string opaque;  // fields of the source format this IR does not model

  const Attribute* attr(const std::string& attr_name) const;
  Attribute* attr(const std::string& attr_name);
  // Values read from inside this node's subgraphs that those subgraphs do not
  // define (implicit inputs from the enclosing scope).
  std::vector<std::string> implicit_inputs() const;
};

// A node of the default domain with no attributes (add them to .attributes).
Node make_node(std::string name, std::string op, std::vector<std::string> in, std::vector<std::string> out);

struct OpsetImport {
  std::string domain;  // "" (or "ai.onnx") is the default domain
  int64_t version = 0;
};

// Fields of the model that owns the top-level graph (unused in subgraphs).
struct ModelInfo {
  int64_t ir_version = 0;
  std::vector<OpsetImport> opset_imports;
  std::string producer_name;
  std::string producer_version;
  std::string domain;
  int64_t model_version = 0;
  std::string doc_string;
  std::vector<std::string> functions;      // serialized FunctionProto, in order
  std::vector<std::string> training_info;  // serialized TrainingInfoProto
  std::string opaque;                      // unmodelled ModelProto fields
};

struct Graph {
  std::string name;
  std::string doc_string;
  std::vector<Node> nodes;  // topological order
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
  std::vector<ValueInfo> value_info;
  std::vector<Tensor> initializers;  // subgraphs only (top level: Model::tensors)
  std::vector<std::pair<std::string, std::string>> initializer_docs;  // name -> doc_string
  // name -> serialized SparseTensorProto (opaque; the name is its values' name)
  std::vector<std::pair<std::string, std::string>> sparse_initializers;
  std::vector<std::string> quantization_annotation;  // serialized TensorAnnotation
  std::string opaque;                                // unmodelled GraphProto fields
  ModelInfo model;                                   // top-level graph only

  // ------------------------------------------------------------ queries
  // Index of the node producing `value`, or -1 (graph input, initializer, outer scope).
  int producer(const std::string& value) const;
  // Indices of nodes reading `value`, directly or from inside their subgraphs.
  std::vector<size_t> consumers(const std::string& value) const;
  bool is_input(const std::string& value) const;
  bool is_output(const std::string& value) const;
  // Searches inputs, outputs and value_info.
  const ValueInfo* find_value_info(const std::string& value) const;
  ValueInfo* find_value_info(const std::string& value);
  // Version of the opset imported for `domain` ("" = ai.onnx), or -1.
  int64_t opset(const std::string& domain = "") const;
  // Every node and value name in this graph and its subgraphs.
  void collect_names(std::unordered_set<std::string>& out) const;

  // Copying a Graph shares its subgraphs; call this on the copy before
  // editing a subgraph in place (deep-copies every subgraph, recursively).
  void detach_subgraphs();

  // ------------------------------------------------------------ edits
  // Inserts `node` right after the last producer of its inputs and returns
  // its index. Throws qforge::Error when a node already reading one of its
  // outputs comes earlier (no topological position exists).
  size_t insert_node(Node node);
  // Removes the nodes at `indices` (any order, duplicates ignored).
  void remove_nodes(std::vector<size_t> indices);
  // Makes every node (and subgraphs not redefining it) read `to` instead of
  // `from`, skipping node `except` (the one producing `to`, typically).
  // Graph outputs are left alone.
  void replace_uses(const std::string& from, const std::string& to, int except = -1);

  // ------------------------------------------------------------ checks
  // Throws qforge::Error naming the node and value when: a node reads a value
  // nothing defines (dangling), two nodes produce one value, a graph output is
  // not defined, or the nodes contain a cycle. Reorders nodes into
  // topological order when they are acyclic but out of order (stable).
  // `outer` holds names visible from enclosing graphs; `initializer_names`
  // the names of this graph's initializers (Model::tensors at top level);
  // sparse initializers count as defined too.
  void validate(const std::unordered_set<std::string>& outer,
                const std::vector<std::string>& initializer_names);
};

// Producer and readers of every value of one graph, computed once (for passes
// that look up many values). Any edit of the graph makes it stale.
struct ValueUses {
  explicit ValueUses(const Graph& graph);
  int producer_of(const std::string& value) const;  // node index or -1
  // Nodes reading `value`, directly or from inside their subgraphs (ascending).
  const std::vector<size_t>& consumers_of(const std::string& value) const;

  std::unordered_map<std::string, size_t> producer;
  std::unordered_map<std::string, std::vector<size_t>> consumers;
};

// Fresh names unique across a model's tensors, node names and values
// (including subgraphs). Build one per pass run; each call reserves the name.
class NameAllocator {
 public:
  explicit NameAllocator(const Model& model);
  explicit NameAllocator(const Graph& graph);
  // `base` if free, otherwise `base_1`, `base_2`, ...
  std::string fresh(const std::string& base);
  void reserve(const std::string& name) { taken_.insert(name); }

 private:
  std::unordered_set<std::string> taken_;
};

}  // namespace qforge
