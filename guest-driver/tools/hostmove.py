#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host side of the smoke test's device-initiated move check.

Follows the guest console log; for every "SGPU-MOVEME <id> <handle> <placement>"
line sends "x_sharegpu_move_bo <id> <handle> <placement>" to the QEMU HMP monitor
socket. Exits when the log shows SHAREGPU-SUMMARY or after the timeout.
usage: hostmove.py LOG MONITOR_SOCKET [TIMEOUT]
"""
import os
import socket
import sys
import time


def hmp(sock_path, cmd):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.settimeout(5)
    try:
        s.recv(4096)  # banner + prompt
    except socket.timeout:
        pass
    s.sendall((cmd + "\n").encode())
    time.sleep(0.5)
    try:
        out = s.recv(4096).decode(errors="replace")
    except socket.timeout:
        out = ""
    s.close()
    return out


def main():
    log, mon = sys.argv[1], sys.argv[2]
    deadline = time.time() + (float(sys.argv[3]) if len(sys.argv) > 3 else 900)
    pos = 0
    buf = ""
    while time.time() < deadline:
        if os.path.exists(log):
            with open(log, "rb") as f:
                f.seek(pos)
                data = f.read()
                pos += len(data)
            buf += data.decode(errors="replace").replace("\r", "")
            while "\n" in buf:
                line, buf = buf.split("\n", 1)
                if line.startswith("SGPU-MOVEME "):
                    _, qid, handle, place = line.split()[:4]
                    cmd = "x_sharegpu_move_bo %s %s %s" % (qid, handle, place)
                    out = hmp(mon, cmd)
                    print("[hostmove] %s -> %s" % (cmd, out.strip().splitlines()[-1:]),
                          file=sys.stderr)
                if line.startswith("SHAREGPU-SUMMARY"):
                    return 0
        time.sleep(0.2)
    return 1


if __name__ == "__main__":
    sys.exit(main())
