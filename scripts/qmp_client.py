#!/usr/bin/env python3
"""The project's one QMP client: QEMU's machine protocol over a UNIX socket.

Used by scripts/guest-profile.py, scripts/sharegpu-graph.py, guest-tests/host-agent.py and
scripts/run-guest.sh (its diagnostics, through the command line below). Only the standard
library: the QEMU python package is not installed on the hosts.

  client = QmpClient(path, timeout=30)         # greeting + qmp_capabilities
  client.command("query-sharegpu-graph")       # the "return" value; QmpError on an error
  client.hmp("info sharegpu")                  # an HMP line's text

Events are never waited for: commands skip them, drain_events() reads them away.

Command line (run-guest.sh's diagnostics):
  scripts/qmp_client.py --hmp SOCKET WAIT 'info status' 'info sharegpu' ...
prints "(qemu) LINE" and the answer for each line, or "NO MONITOR ANSWER ..." when QEMU does
not answer within WAIT seconds (its main loop is stuck) or the socket is gone.
  scripts/qmp_client.py --self-test
"""
import json
import socket
import sys
import time


class QmpError(RuntimeError):
    """QEMU answered a command with an error."""


class QmpClient:
    def __init__(self, path, timeout=None, connect_wait=0.0):
        """Connects to the QMP socket at path; while QEMU is starting (no socket yet, or
        nobody accepting), retries for up to connect_wait seconds. timeout bounds every
        later wait for QEMU (socket.timeout); None waits as long as it takes."""
        deadline = time.monotonic() + connect_wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        self.sock = sock
        self.buf = b""
        self._message()  # the greeting
        self.command("qmp_capabilities")

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _message(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QEMU closed the monitor")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def command(self, name, args=None):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._message()
            if "event" in r:
                continue
            if "error" in r:
                raise QmpError("%s: %s" % (name, r["error"].get("desc", r["error"])))
            return r.get("return")

    def hmp(self, line):
        return self.command("human-monitor-command", {"command-line": line})

    def drain_events(self):
        """Reads what QEMU sent meanwhile (events nobody waits for), so that its monitor does
        not buffer them; False once QEMU closed the socket."""
        timeout = self.sock.gettimeout()
        alive = True
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    alive = False
                    break
                self.buf += data
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(timeout)
        while b"\n" in self.buf:
            line, rest = self.buf.split(b"\n", 1)
            if "event" not in json.loads(line):
                break  # not ours to drop (cannot happen between commands)
            self.buf = rest
        return alive


def print_hmp(path, wait, lines):
    """run-guest.sh's diagnostics: each HMP line's answer, or why there is none."""
    try:
        with QmpClient(path, timeout=wait) as client:
            for line in lines:
                print("(qemu) " + line, flush=True)
                try:
                    text = client.hmp(line)
                except QmpError as e:
                    text = "error: %s\n" % e
                text = text.replace("\r", "")
                print(text, end="" if text.endswith("\n") else "\n", flush=True)
    except socket.timeout:
        print("NO MONITOR ANSWER within %g s: QEMU's main loop is not running (BQL held or main"
              " thread stuck; see the backtraces)" % wait)
    except (OSError, EOFError, ValueError) as e:
        print("NO MONITOR ANSWER: %s" % e)


def self_test():
    """A fake QEMU on a socket of its own: greeting, events in between, errors, EOF."""
    import os
    import tempfile
    import threading

    failures = []

    def check(what, ok):
        print("%s %s" % ("ok  " if ok else "FAIL", what))
        if not ok:
            failures.append(what)

    def serve(server, script):
        conn, _ = server.accept()
        f = conn.makefile("rwb")
        f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        f.flush()
        for expect, answers in script:
            line = f.readline()
            if not line:
                break
            got = json.loads(line)
            if got != expect:
                f.write(json.dumps({"error": {"desc": "unexpected %r" % got}}).encode() + b"\n")
            for a in answers:
                f.write(json.dumps(a).encode() + b"\n")
            f.flush()
        conn.close()

    event = {"event": "SHAREGPU_BROKER_REVOKED", "data": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "qmp.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        script = [
            ({"execute": "qmp_capabilities"}, [{"return": {}}]),
            ({"execute": "query-sharegpu-graph"}, [event, event, {"return": {"nodes": [1]}}]),
            ({"execute": "human-monitor-command", "arguments": {"command-line": "info x"}},
             [{"return": "x\r\n"}]),
            ({"execute": "nope"}, [{"error": {"class": "CommandNotFound", "desc": "no nope"}}]),
            ({"execute": "query-status"}, [{"return": {"running": True}}, event]),
        ]
        t = threading.Thread(target=serve, args=(server, script))
        t.start()
        c = QmpClient(path, timeout=10)
        check("a command's return value, events before it skipped",
              c.command("query-sharegpu-graph") == {"nodes": [1]})
        check("an HMP line's text", c.hmp("info x") == "x\r\n")
        try:
            c.command("nope")
            check("an error answer raises QmpError", False)
        except QmpError as e:
            check("an error answer raises QmpError naming the command and QEMU's words",
                  "nope" in str(e) and "no nope" in str(e))
        check("a command after an error", c.command("query-status") == {"running": True})
        t.join()
        check("drain_events reads a trailing event, then sees QEMU gone",
              c.drain_events() is False and c.buf == b"")
        try:
            c.command("query-status")
            check("a command after QEMU closed the socket raises", False)
        except (EOFError, OSError):
            check("a command after QEMU closed the socket raises", True)
        c.close()
        server.close()

        # nobody answering at all: connect_wait bounds the retries
        start = time.monotonic()
        try:
            QmpClient(os.path.join(tmp, "absent.sock"), timeout=1, connect_wait=0.3)
            check("no socket: FileNotFoundError after connect_wait", False)
        except FileNotFoundError:
            check("no socket: FileNotFoundError after connect_wait",
                  0.25 <= time.monotonic() - start < 5)

        # a QEMU whose main loop does not answer: print_hmp says so instead of hanging
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck_path = os.path.join(tmp, "stuck.sock")
        stuck.bind(stuck_path)
        stuck.listen(1)  # accepted by the kernel, never greeted
        import io
        import contextlib
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            print_hmp(stuck_path, 0.2, ["info status"])
        check("print_hmp: a silent monitor is 'NO MONITOR ANSWER within'",
              out.getvalue().startswith("NO MONITOR ANSWER within 0.2 s"))
        stuck.close()
    print("qmp_client self-test: %d failed" % len(failures))
    return 1 if failures else 0


def main():
    if sys.argv[1:2] == ["--self-test"]:
        sys.exit(self_test())
    if len(sys.argv) >= 4 and sys.argv[1] == "--hmp":
        print_hmp(sys.argv[2], float(sys.argv[3]), sys.argv[4:])
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
