#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host side of the guest tests' host requests (scripts/guest-tests.sh, also --demo).

Follows the guest's serial console log; for every line
    SHAREGPU-HOST-REQUEST: <token> <request...>
it runs the request against QEMU's QMP socket and writes
    SHAREGPU-HOST-REPLY: <token> ok [detail] | error <message>
to the reply chardev (the guest's second serial port, /dev/ttyS1).

Requests:
    move <pci-bdf|qdev-id> <hw-handle> device|system   QMP x-sharegpu-move-bo
    hold <pci-bdf|qdev-id> [hw-handle [ms]]            QMP x-sharegpu-hold
    release <pci-bdf|qdev-id>                          QMP x-sharegpu-release
    stall <pci-bdf|qdev-id> on|off                     QMP x-sharegpu-stall
    drop-irq <pci-bdf|qdev-id>                         QMP x-sharegpu-drop-irq
    coherency <pci-bdf|qdev-id>                        the coherency detector's violation
                                                       counters (QMP query-sharegpu): replies
                                                       "ok OUTSIDE JOB_READ CPU_ACCESS"
    counter <pci-bdf|qdev-id> <name>                   one of the device's counters (QMP
                                                       query-sharegpu), e.g. window-faults
    info                                               HMP `info sharegpu` (printed here)
    graph                                              the sharing graph (QMP
                                                       query-sharegpu-graph), printed here and
                                                       drawn to LOG.graph.dot/.svg
With --mailbox DIR (scripts/guest-multivm.sh: one agent per guest, one DIR for all):
    put <key> <value>                                  DIR/<key> = value, for the other guests
    get <key> <secs>                                   waits until DIR/<key> exists, replies
                                                       "ok VALUE"; an error when DIR/abort
                                                       exists (a guest failed) or after secs
    kill-vm <name>                                     kill -9 of the QEMU whose pid is in
                                                       DIR/<name>.pid (QEMU -pidfile), waits
                                                       for it to be gone, writes
                                                       DIR/<name>.killed
    fds broker|<name>                                  "TOTAL MEMFDS": the descriptors of the
                                                       broker daemon (pid in DIR/broker.pid)
                                                       or of a VM's QEMU (DIR/<name>.pid)
    restart-broker                                     kill -9 of the broker (DIR/broker.pid),
                                                       then the command line in
                                                       DIR/broker.argv (one word a line) again,
                                                       output appended to the file named in
                                                       DIR/broker.logpath; replies once it
                                                       printed "ready on"; DIR/broker.pid is
                                                       the new one
With --mailbox and --vm-name NAME the agent also puts "abort" when the guest's console shows
a failed step (SHAREGPU-TEST: FAIL, e.g. a test binary that crashed before it could say so
itself) and when QEMU exits without a kill-vm of NAME and without the guest's
SHAREGPU-SUMMARY: PASS: the other guests stop waiting for it.

usage: host-agent.py --log FILE --qmp SOCK --reply SOCK [--mailbox DIR [--vm-name NAME]]
                     [--quiet]
Runs until killed, or until the log shows SHAREGPU-SUMMARY and QEMU closed the sockets.
"""
import argparse
import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import time

REQ = re.compile(r"SHAREGPU-HOST-REQUEST: (\S+) (.*?)\s*$")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from qmp_client import QmpClient  # noqa: E402 (scripts/qmp_client.py)
GRAPH_BASE = None  # LOG.graph, set in main()
MAILBOX = None  # --mailbox DIR
VM_NAME = None  # --vm-name NAME
FAILED_STEP = re.compile(r"SHAREGPU-TEST: FAIL (\S+)")
PASSED_RUN = "SHAREGPU-SUMMARY: PASS"
KEY = re.compile(r"^[A-Za-z0-9._-]+$")


def log(msg):
    sys.stderr.write("[host-agent] %s\n" % msg)
    sys.stderr.flush()


def connect_unix(path, deadline):
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def pci_map(qmp):
    """guest BDF ("0000:00:02.0") -> qdev id, from query-pci."""
    out = {}

    def walk(bus_nr, devices):
        for d in devices:
            bdf = "0000:%02x:%02x.%x" % (d["bus"], d["slot"], d["function"])
            if d.get("qdev_id"):
                out[bdf] = d["qdev_id"]
            br = d.get("pci_bridge")
            if br and br.get("devices"):
                walk(br["bus"]["secondary"], br["devices"])

    for bus in qmp.command("query-pci"):
        walk(bus["bus"], bus["devices"])
    return out


def device_id(qmp, target):
    """A guest PCI address or a qdev id -> the qdev id."""
    if re.match(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$", target):
        dev = pci_map(qmp).get(target)
        if not dev:
            raise RuntimeError("no qdev id for PCI %s" % target)
        return dev
    return target


def mailbox_path(key):
    if MAILBOX is None:
        raise RuntimeError("no --mailbox")
    if not KEY.match(key):
        raise RuntimeError("bad mailbox key %r" % key)
    return os.path.join(MAILBOX, key)


def read_pid(name):
    with open(mailbox_path(name + ".pid")) as f:
        return int(f.read().split()[0])


def kill_and_wait(pid, what):
    """SIGKILL, then wait until the process is gone or a zombie (its parent not told yet)."""
    os.kill(pid, 9)
    deadline = time.time() + 30
    while os.path.exists("/proc/%d" % pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return  # reaped meanwhile
        if time.time() > deadline:
            raise RuntimeError("%s %d still alive 30 s after SIGKILL" % (what, pid))
        time.sleep(0.05)


def restart_broker():
    pid = read_pid("broker")
    with open(mailbox_path("broker.argv")) as f:
        argv = [w for w in f.read().split("\n") if w]
    with open(mailbox_path("broker.logpath")) as f:
        logpath = f.read().strip()
    kill_and_wait(pid, "broker")
    out = open(logpath, "ab")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    while True:  # its explicit message; EOF when it exits instead
        line = proc.stdout.readline()
        out.write(line)
        out.flush()
        if not line:
            raise RuntimeError("the new broker exited before it was ready")
        if b"ready on" in line:
            break

    def copy_rest():  # the pipe must not fill
        for rest in proc.stdout:
            out.write(rest)
            out.flush()

    threading.Thread(target=copy_rest, daemon=True).start()
    with open(mailbox_path("broker.pid.tmp"), "w") as f:
        f.write("%d\n" % proc.pid)
    os.rename(mailbox_path("broker.pid.tmp"), mailbox_path("broker.pid"))
    return "restarted (pid %d, was %d)" % (proc.pid, pid)


def mailbox(words):
    """The mailbox requests; None when words are none of them."""
    if words[0] == "put" and len(words) >= 3:
        path = mailbox_path(words[1])
        with open(path + ".tmp", "w") as f:
            f.write(" ".join(words[2:]))
        os.rename(path + ".tmp", path)  # readers see all of it or nothing
        return "stored"
    if words[0] == "get" and len(words) == 3:
        path, abort = mailbox_path(words[1]), mailbox_path("abort")
        deadline = time.time() + int(words[2])
        # waits for the other guest's message; the deadline is a failure detector
        while not os.path.exists(path):
            if os.path.exists(abort):
                with open(abort) as f:
                    raise RuntimeError("a guest aborted (%s)" % f.read().strip())
            if time.time() > deadline:
                raise RuntimeError("no %s within %s s" % (words[1], words[2]))
            time.sleep(0.05)
        with open(path) as f:
            return f.read()
    if words[0] == "kill-vm" and len(words) == 2:
        pid = read_pid(words[1])
        with open(mailbox_path(words[1] + ".killed"), "w") as f:
            f.write("%d\n" % pid)
        kill_and_wait(pid, "QEMU")
        return "killed %s (pid %d)" % (words[1], pid)
    if words[0] == "restart-broker" and len(words) == 1:
        return restart_broker()
    if words[0] == "fds" and len(words) == 2:
        pid = read_pid(words[1])
        fds = os.listdir("/proc/%d/fd" % pid)
        memfds = 0
        for fd in fds:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("/memfd:"):
                    memfds += 1
            except OSError:
                pass  # closed meanwhile
        return "%d %d" % (len(fds), memfds)
    return None


def put_abort(why):
    """Tells the other guests to stop waiting (the first reason stays)."""
    if MAILBOX is None or VM_NAME is None:
        return
    path = os.path.join(MAILBOX, "abort")
    if not os.path.exists(path):
        with open(path + ".tmp." + VM_NAME, "w") as f:
            f.write("%s: %s" % (VM_NAME, why))
        os.rename(path + ".tmp." + VM_NAME, path)
    log("abort: %s" % why)


def handle(qmp, req):
    words = req.split()
    if not words:
        raise RuntimeError("empty request")
    answer = mailbox(words)
    if answer is not None:
        return answer
    if words[0] == "hold" and 2 <= len(words) <= 4:
        dev = device_id(qmp, words[1])
        args = {"id": dev}
        if len(words) > 2:
            args["handle"] = int(words[2])
        if len(words) > 3:
            args["ms"] = int(words[3])
        qmp.command("x-sharegpu-hold", args)
        return "holding %s" % " ".join(words[1:])
    if words[0] == "release" and len(words) == 2:
        qmp.command("x-sharegpu-release", {"id": device_id(qmp, words[1])})
        return "released %s" % words[1]
    if words[0] == "stall" and len(words) == 3 and words[2] in ("on", "off"):
        qmp.command("x-sharegpu-stall",
                    {"id": device_id(qmp, words[1]), "stall": words[2] == "on"})
        return "stall %s %s" % (words[1], words[2])
    if words[0] == "drop-irq" and len(words) == 2:
        qmp.command("x-sharegpu-drop-irq", {"id": device_id(qmp, words[1])})
        return "the next interrupt of %s is lost" % words[1]
    if words[0] == "coherency" and len(words) == 2:
        dev = device_id(qmp, words[1])
        info = qmp.command("query-sharegpu", {"id": dev})
        coh = info[0].get("coherency") if info else None
        if coh is None:
            raise RuntimeError("%s runs without check-coherency=on" % dev)
        return "%d %d %d" % (coh["cpu-write-outside-access"],
                             coh["job-read-unflushed-cpu-write"],
                             coh["cpu-access-unflushed-job-write"])
    if words[0] == "counter" and len(words) == 3:
        dev = device_id(qmp, words[1])
        info = qmp.command("query-sharegpu", {"id": dev})
        return "%d" % info[0]["counters"][words[2]]
    if words[0] == "move" and len(words) == 4:
        target, handle_s, placement = words[1:]
        dev = device_id(qmp, target)
        qmp.command("x-sharegpu-move-bo",
                    {"id": dev, "handle": int(handle_s), "placement": placement})
        return "moved %s handle %s to %s" % (dev, handle_s, placement)
    if words[0] == "info":
        text = qmp.hmp("info sharegpu")
        for line in text.splitlines():
            log("  " + line)
        return "printed on the host"
    if words[0] == "graph" and len(words) == 1:
        # the sharing graph, drawn next to the console log (LOG.graph.dot / .svg)
        graph = qmp.command("query-sharegpu-graph")
        text = qmp.hmp("info sharegpu-graph")
        for line in text.splitlines():
            log("  " + line)
        spec = importlib.util.spec_from_file_location(
            "sharegpu_graph", os.path.join(ROOT, "scripts", "sharegpu-graph.py"))
        drawing = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(drawing)
        base = GRAPH_BASE
        with open(base + ".dot", "w") as f:
            f.write(drawing.to_dot(graph))
        try:
            subprocess.run(["dot", "-Tsvg", "-o", base + ".svg", base + ".dot"], check=True)
            return "drawn: %s.svg" % base
        except (OSError, subprocess.CalledProcessError) as e:
            return "written: %s.dot (no svg: %s)" % (base, e)
    if words[0] == "hmp" and len(words) > 1:
        text = qmp.hmp(" ".join(words[1:]))
        for line in text.splitlines():
            log("  " + line)
        return "done"
    raise RuntimeError("unknown request %r" % req)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--qmp", required=True)
    ap.add_argument("--reply", required=True)
    ap.add_argument("--connect-timeout", type=float, default=600)
    ap.add_argument("--mailbox")
    ap.add_argument("--vm-name")
    args = ap.parse_args()
    global GRAPH_BASE, MAILBOX, VM_NAME
    GRAPH_BASE = args.log + ".graph"
    MAILBOX = args.mailbox
    VM_NAME = args.vm_name

    deadline = time.time() + args.connect_timeout
    # the log appears when run-guest.sh starts QEMU; the sockets right after
    while not os.path.exists(args.log):
        if time.time() > deadline:
            log("no log %s" % args.log)
            return 1
        time.sleep(0.1)
    try:
        reply = connect_unix(args.reply, deadline)
        qmp = QmpClient(args.qmp, connect_wait=max(0.0, deadline - time.time()))
    except Exception as e:  # QEMU failed to start: nothing to serve
        log("cannot connect to QEMU: %s" % e)
        return 1
    log("connected (QMP %s, reply port %s)" % (args.qmp, args.reply))

    pending = b""
    seen = set()
    passed = False
    with open(args.log, "rb") as f:
        while True:
            chunk = f.read(65536)
            if not chunk:
                # QEMU gone? (QMP socket closed)
                if not qmp.drain_events():
                    log("QEMU exited")
                    if MAILBOX and VM_NAME and not passed and \
                            not os.path.exists(os.path.join(MAILBOX, VM_NAME + ".killed")):
                        put_abort("QEMU exited")
                    return 0
                time.sleep(0.05)
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                text = raw.decode("utf-8", "replace").replace("\r", "")
                passed = passed or PASSED_RUN in text
                failed = FAILED_STEP.search(text)
                if failed:
                    put_abort("step %s failed" % failed.group(1))
                m = REQ.search(text)
                if not m or m.group(1) in seen:
                    continue
                token, req = m.group(1), m.group(2)
                seen.add(token)
                try:
                    detail = handle(qmp, req)
                    answer = "ok %s" % detail
                except Exception as e:
                    answer = "error %s" % str(e).replace("\n", " ")
                log("%s: %s -> %s" % (token, req, answer))
                try:
                    reply.sendall(("\nSHAREGPU-HOST-REPLY: %s %s\n" % (token, answer)).encode())
                except OSError as e:
                    log("reply port: %s" % e)
                    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        sys.exit(0)
