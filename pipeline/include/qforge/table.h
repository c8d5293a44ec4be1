// Table artifacts: structured results of analysis passes (activation range
// tables, per-tensor sensitivities, precision plans, statistics).
//
// The build engine never looks inside a Table: it stores its bytes under the
// producing node's key, verifies them by hash when it reads them back, and
// hands the Table to the passes that consume it. Only the passes that make
// and read a schema know what its data means (docs/architecture.md, "The build graph").
//
// A Table is a schema name and a structured document (a Value: tables keep
// the order their keys were added in, so the bytes are deterministic).
// Serialized as JSON; doubles round-trip exactly, and the non-finite ones are
// written as the strings "nan", "inf" and "-inf".
#pragma once

#include <string>

#include "qforge/value.h"

namespace qforge {

struct Table {
  std::string schema;  // what it holds and its layout version, e.g. "ranges/1"
  Value data;          // the content (usually a Value of kind Table)

  // Deterministic bytes: {"schema": ..., "data": ...}.
  std::string to_bytes() const;
  // Parses what to_bytes wrote; throws qforge::Error naming `what` (a file or
  // cache object) and the byte offset on malformed input.
  static Table from_bytes(const std::string& bytes, const std::string& what);
};

}  // namespace qforge
