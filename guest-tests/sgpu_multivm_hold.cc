// SPDX-License-Identifier: GPL-2.0
// The exporting guest's last step in the multi-VM test (scripts/guest-multivm.sh): with
// sgputest.role=a it keeps the VM running after sgpu_multivm_test, its exports alive, tells
// the importer so ("a-holding") and waits to be killed: the importer has the host kill -9
// this VM's QEMU and checks the revocation. Being answered instead (the importer aborted,
// or nobody killed it within the deadline) is a failure. Any other role: nothing to do.
#include <stdio.h>

#include <string>

#include "sgpu_common.h"

int main() {
  std::string role = sgt::CmdlineParam("sgputest.role");
  if (role != "a") {
    printf("sgpu_multivm_hold: role '%s', nothing to hold\n", role.c_str());
    return 0;
  }
  int ret = sgt::MailboxPut("a-holding", "1");
  if (ret) {
    printf("sgpu_multivm_hold: mailbox put failed (%d)\n", ret);
    return 1;
  }
  printf("SHAREGPU-MULTIVM: vm-a holds its exports until vm-b has it killed\n");
  fflush(stdout);
  std::string v;
  ret = sgt::MailboxGet("never", &v, 900);
  printf("sgpu_multivm_hold: still alive (%d %s): vm-a was not killed\n", ret, v.c_str());
  return 1;
}
