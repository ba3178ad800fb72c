// Entry point of the native test program: runs every registered case, prints a summary line.
#include <iostream>

#include "harness.h"

int main() {
  int passed = 0, failed = 0;
  for (const auto& c : fdperf_test::registry()) {
    try {
      c.fn();
      ++passed;
      std::cout << "PASS " << c.name << "\n";
    } catch (const std::exception& e) {
      ++failed;
      std::cout << "FAIL " << c.name << ": " << e.what() << "\n";
    }
  }
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 && passed > 0 ? 0 : 1;
}
