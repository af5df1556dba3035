// Reading and writing one option field of an archive, and the options classes' boilerplate built on them.
// Private to the library's sources.
#pragma once

#include <torch/serialize/archive.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace torch_layerlr::optim::detail {

inline c10::IValue to_ivalue(double v) { return v; }
inline c10::IValue to_ivalue(bool v) { return v; }
inline c10::IValue to_ivalue(int64_t v) { return v; }
inline c10::IValue to_ivalue(const std::string& v) { return v; }
inline c10::IValue to_ivalue(const std::vector<double>& v) { return v; }
inline c10::IValue to_ivalue(const std::optional<double>& v) { return v ? c10::IValue(*v) : c10::IValue(); }
inline c10::IValue to_ivalue(const std::tuple<double, double>& v) {
  return std::vector<double>{std::get<0>(v), std::get<1>(v)};
}

// A loaded archive is untrusted input: a field of the wrong type raises c10::Error naming it.
template <typename T>
T from_ivalue(const std::string& name, const c10::IValue& v);

template <>
inline double from_ivalue<double>(const std::string& name, const c10::IValue& v) {
  TORCH_CHECK_TYPE(v.isDouble(), "option ", name, " must be a float in the archive, got ", v.tagKind());
  return v.toDouble();
}
template <>
inline bool from_ivalue<bool>(const std::string& name, const c10::IValue& v) {
  TORCH_CHECK_TYPE(v.isBool(), "option ", name, " must be a bool in the archive, got ", v.tagKind());
  return v.toBool();
}
template <>
inline int64_t from_ivalue<int64_t>(const std::string& name, const c10::IValue& v) {
  TORCH_CHECK_TYPE(v.isInt(), "option ", name, " must be an int in the archive, got ", v.tagKind());
  return v.toInt();
}
template <>
inline std::string from_ivalue<std::string>(const std::string& name, const c10::IValue& v) {
  TORCH_CHECK_TYPE(v.isString(), "option ", name, " must be a string in the archive, got ", v.tagKind());
  return v.toStringRef();
}
template <>
inline std::vector<double> from_ivalue<std::vector<double>>(const std::string& name, const c10::IValue& v) {
  TORCH_CHECK_TYPE(v.isDoubleList(), "option ", name, " must be a list of floats in the archive, got ", v.tagKind());
  return v.toDoubleVector();
}
template <>
inline std::optional<double> from_ivalue<std::optional<double>>(const std::string& name, const c10::IValue& v) {
  if (v.isNone()) return std::nullopt;
  return from_ivalue<double>(name, v);
}
template <>
inline std::tuple<double, double> from_ivalue<std::tuple<double, double>>(const std::string& name,
                                                                          const c10::IValue& v) {
  std::vector<double> pair = from_ivalue<std::vector<double>>(name, v);
  TORCH_CHECK_VALUE(pair.size() == 2, "option ", name, " must hold two floats in the archive, got ", pair.size());
  return {pair[0], pair[1]};
}

template <typename T>
void write_field(torch::serialize::OutputArchive& archive, const std::string& name, const T& value) {
  archive.write(name, to_ivalue(value));
}

template <typename T>
T read_field(torch::serialize::InputArchive& archive, const std::string& name) {
  c10::IValue v;
  TORCH_CHECK_VALUE(archive.try_read(name, v), "the archive has no option ", name);
  return from_ivalue<T>(name, v);
}

// Every options class's state_precision. An archive written before the option existed has none: its state is
// "fp32", the only form there was.
inline void write_state_precision(torch::serialize::OutputArchive& archive, const std::string& precision) {
  write_field(archive, "state_precision", precision);
}

inline std::string read_state_precision(torch::serialize::InputArchive& archive) {
  c10::IValue v;
  if (!archive.try_read("state_precision", v)) return "fp32";
  return from_ivalue<std::string>("state_precision", v);
}

}  // namespace torch_layerlr::optim::detail

// The options class's serialize (both ways), operator== and lr accessors from its field list and state_precision
// FIELDS(X) = X(type, name) ... ; every options class keeps its learning rate in `lr`.
#define TORCH_LAYERLR_DEFINE_OPTIONS(Options, FIELDS)                                          \
  void Options::serialize(torch::serialize::OutputArchive& archive) const {                   \
    FIELDS(TORCH_LAYERLR_WRITE_FIELD)                                                         \
    ::torch_layerlr::optim::detail::write_state_precision(archive, state_precision());        \
  }                                                                                           \
  void Options::serialize(torch::serialize::InputArchive& archive) {                          \
    FIELDS(TORCH_LAYERLR_READ_FIELD)                                                          \
    state_precision(::torch_layerlr::optim::detail::read_state_precision(archive));           \
  }                                                                                           \
  bool operator==(const Options& lhs, const Options& rhs) {                                   \
    return lhs.state_precision() == rhs.state_precision() FIELDS(TORCH_LAYERLR_EQUAL_FIELD);  \
  }                                                                                           \
  double Options::get_lr() const { return lr(); }                                             \
  void Options::set_lr(const double lr) { this->lr(lr); }

#define TORCH_LAYERLR_WRITE_FIELD(T, name) ::torch_layerlr::optim::detail::write_field<T>(archive, #name, name());
#define TORCH_LAYERLR_READ_FIELD(T, name) name(::torch_layerlr::optim::detail::read_field<T>(archive, #name));
#define TORCH_LAYERLR_EQUAL_FIELD(T, name) &&lhs.name() == rhs.name()
