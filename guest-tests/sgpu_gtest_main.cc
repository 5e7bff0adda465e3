// SPDX-License-Identifier: GPL-2.0
// main() of every guest test binary: GoogleTest plus machine-readable per-case lines for
// scripts/guest-tests.sh (the serial console is shared with kernel messages, so every line
// is self-contained and written with one write()):
//   SHAREGPU-GTEST: START <binary> <Suite.Test>
//   SHAREGPU-GTEST: PASS|FAIL|SKIP <binary> <Suite.Test> <ms>ms
//   SHAREGPU-GTEST-SUMMARY: <binary> passed=N failed=M skipped=K
// A START without a result line (crash, guest timeout) counts as a failure in the runner.
#include <stdio.h>
#include <ctype.h>
#include <string.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "sgpu_common.h"

namespace {

std::string g_binary;

void Emit(const std::string& s) {
  std::string line = s + "\n";
  fflush(stdout);
  ssize_t r = write(STDOUT_FILENO, line.data(), line.size());
  (void)r;
}

class ConsoleListener : public testing::EmptyTestEventListener {
 public:
  void OnTestStart(const testing::TestInfo& t) override {
    Emit("SHAREGPU-GTEST: START " + g_binary + " " + Name(t));
  }
  void OnTestEnd(const testing::TestInfo& t) override {
    const testing::TestResult* r = t.result();
    const char* v = r->Failed() ? "FAIL" : r->Skipped() ? "SKIP" : "PASS";
    Emit(std::string("SHAREGPU-GTEST: ") + v + " " + g_binary + " " + Name(t) + " " +
         std::to_string(r->elapsed_time()) + "ms");
  }
  void OnTestProgramEnd(const testing::UnitTest& u) override {
    Emit("SHAREGPU-GTEST-SUMMARY: " + g_binary + " passed=" +
         std::to_string(u.successful_test_count()) + " failed=" +
         std::to_string(u.failed_test_count()) + " skipped=" +
         std::to_string(u.skipped_test_count()));
  }

 private:
  static std::string Name(const testing::TestInfo& t) {
    return std::string(t.test_suite_name()) + "." + t.name();
  }
};

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  const char* slash = strrchr(argv[0], '/');
  g_binary = slash ? slash + 1 : argv[0];
  // /tests/NN-name: report the plain name
  if (g_binary.size() > 3 && isdigit(g_binary[0]) && isdigit(g_binary[1]) && g_binary[2] == '-')
    g_binary = g_binary.substr(3);
  testing::GTEST_FLAG(color) = "no";
  // kernel parameter sgputest.filter=<gtest filter> (scripts/guest-tests.sh --filter)
  std::string filter = sgt::CmdlineParam("sgputest.filter");
  if (!filter.empty()) testing::GTEST_FLAG(filter) = filter;
  testing::InitGoogleTest(&argc, argv);
  testing::UnitTest::GetInstance()->listeners().Append(new ConsoleListener);
  for (const sgt::Dev& d : sgt::Devices()) printf("[ device   ] %s\n", d.Describe().c_str());
  return RUN_ALL_TESTS();
}
