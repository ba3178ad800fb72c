#pragma once
// A minimal test registry for the native test program (no external test framework needed).
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fdperf_test {

struct Case {
  std::string name;
  std::function<void()> fn;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

struct Registrar {
  Registrar(const std::string& name, std::function<void()> fn) { registry().push_back({name, fn}); }
};

inline void fail(const std::string& what, const char* file, int line) {
  std::ostringstream os;
  os << file << ":" << line << ": " << what;
  throw std::runtime_error(os.str());
}

}  // namespace fdperf_test

#define FD_TEST(name)                                           \
  static void name();                                           \
  static fdperf_test::Registrar name##_registrar(#name, &name); \
  static void name()

#define FD_EXPECT(cond)                                                    \
  do {                                                                     \
    if (!(cond)) fdperf_test::fail("expected " #cond, __FILE__, __LINE__); \
  } while (0)

// Expects `stmt` to throw c10::Error whose message contains `needle`.
#define FD_EXPECT_ERROR(stmt, needle)                                                         \
  do {                                                                                        \
    bool thrown = false;                                                                      \
    try {                                                                                     \
      stmt;                                                                                   \
    } catch (const c10::Error& e) {                                                           \
      thrown = true;                                                                          \
      if (std::string(e.what()).find(needle) == std::string::npos)                            \
        fdperf_test::fail(std::string("error lacks '") + needle + "': " + e.what(), __FILE__, \
                          __LINE__);                                                          \
    }                                                                                         \
    if (!thrown) fdperf_test::fail("expected an error from " #stmt, __FILE__, __LINE__);      \
  } while (0)
