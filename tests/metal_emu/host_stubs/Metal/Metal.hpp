// Stub of the metal-cpp names csrc/metal uses, for a syntax-only check on
// Linux (tests/metal_emu/test_host_syntax.py). Not an implementation.
#pragma once

namespace NS {
using UInteger = unsigned long;
}

namespace MTL {
struct Size {
  Size(NS::UInteger w, NS::UInteger h, NS::UInteger d) : width(w), height(h), depth(d) {}
  NS::UInteger width, height, depth;
};
class ComputePipelineState;
class Library;
}  // namespace MTL
