#!/usr/bin/env python3
"""Where a TCG guest's CPUs spend their time: samples every vCPU's instruction pointer
through QEMU's monitor and prints a profile of the guest kernel by function.

  scripts/guest-profile.py --qmp SOCKET --system-map System.map [--kallsyms FILE]
                           [--kallsyms-log LOG] [--stacks DEPTH] [--offsets] [--hz 25]
                           [--duration SECS] [--top 30] [-o REPORT]
  scripts/guest-profile.py --self-test

TCG guests have no perf counters; QEMU's `info registers -a` (HMP, through QMP) shows
each vCPU's RIP and whether it is halted. Every 1/hz seconds the profiler asks for it,
counts a halted vCPU as idle and looks every other RIP up in the kernel's System.map
(module code: in --kallsyms, a copy of the guest's /proc/kallsyms, or --kallsyms-log, the
console log of a guest that printed its modules' functions, else "[module]"; user space:
"[user]"). It stops after --duration seconds, or when QEMU closes the socket, and prints:
samples, the idle share, then the functions by their share of the busy samples; with
--stacks, each function's callers along the kernel's frame-pointer chain.
scripts/run-guest.sh --profile REPORT runs it beside a guest (a QMP socket of its own).

Sampling holds QEMU's big lock for each answer: at 25 Hz the guest runs a few per cent
slower. The figures are shares, not times.
"""
import argparse
import bisect
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_client import QmpClient  # noqa: E402 (beside this script)

REG_CPU = re.compile(r"^CPU#(\d+)", re.M)
REG_RIP = re.compile(r"\bRIP=([0-9a-f]{16})\b")
REG_EIP = re.compile(r"\bEIP=([0-9a-f]{8})\b")  # a vCPU not in long mode (firmware, boot)
REG_HLT = re.compile(r"\bHLT=([01])\b")
REG_RBP = re.compile(r"\bRBP=([0-9a-f]{16})\b")
MEM_PAIR = re.compile(r"^[0-9a-f]+: 0x([0-9a-f]{16}) 0x([0-9a-f]{16})", re.M)  # x /2gx
# where modules live on x86_64 (Documentation/arch/x86/x86_64/mm.rst)
MODULES_START, MODULES_END = 0xffffffffa0000000, 0xfffffffffeffffff
USER_END = 0x0000800000000000  # the lower half: user space
KERNEL_HALF = 0xffff800000000000
KERNEL_TEXT = 0xffffffff80000000
STACK_SIZE = 1 << 16  # a frame pointer moves up by less than a (KASAN-sized) kernel stack


class Symbols:
    """Address -> function name, from System.map-style lines: ADDR TYPE NAME [[MODULE]]."""

    def __init__(self):
        self.addrs, self.names = [], []

    def load(self, path):
        with open(path, errors="replace") as f:
            return self.add_lines(f)

    def load_from_log(self, path):
        """The section a guest booted with sharegpu.kallsyms=1 printed on its console."""
        lines, inside = [], False
        with open(path, errors="replace") as f:
            for line in f:
                line = line.replace("\r", "").rstrip("\n")
                if line == "SHAREGPU-KALLSYMS-BEGIN":
                    inside, lines = True, []
                elif line == "SHAREGPU-KALLSYMS-END":
                    inside = False
                elif inside:
                    lines.append(line)
        return self.add_lines(lines)

    def add_lines(self, lines):
        entries = []
        for line in lines:
            parts = line.split()
            if len(parts) < 3 or parts[1] not in "tTwW":
                continue  # text symbols only
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            if addr == 0:
                continue  # kallsyms read without privilege
            name = parts[2] + (" " + parts[3] if len(parts) > 3 else "")
            entries.append((addr, name))
        entries.extend(zip(self.addrs, self.names))
        entries.sort()
        self.addrs = [a for a, _ in entries]
        self.names = [n for _, n in entries]
        return len(entries)

    def lookup(self, addr, offset=False):
        if addr < USER_END:
            return "[user]"
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return "[unknown]"
        name = self.names[i]
        # past the last symbol of the kernel image and not a known module function
        if MODULES_START <= addr <= MODULES_END and not name.endswith("]"):
            return "[module]"
        if name == "_etext":
            return "[unknown]"  # past the kernel's text, outside the modules: not code we know
        if offset:
            func, _, mod = name.partition(" ")
            return "%s+%#x%s" % (func, addr - self.addrs[i], " " + mod if mod else "")
        return name


def cpu_blocks(text):
    """`info registers -a` -> [(cpu, that vCPU's part of the text)]."""
    starts = [(m.start(), int(m.group(1))) for m in REG_CPU.finditer(text)]
    if not starts:
        starts = [(0, 0)]  # one vCPU: no CPU# headers
    ends = [pos for pos, _ in starts[1:]] + [len(text)]
    return [(cpu, text[pos:end]) for (pos, cpu), end in zip(starts, ends)]


def parse_registers(text):
    """`info registers -a` -> [(cpu, rip, halted)]; rip is None for a vCPU not in long mode."""
    out = []
    for cpu, block in cpu_blocks(text):
        rip = REG_RIP.search(block)
        if not rip and not REG_EIP.search(block):
            continue
        hlt = REG_HLT.search(block)
        out.append((cpu, int(rip.group(1), 16) if rip else None,
                    bool(hlt and hlt.group(1) == "1")))
    return out


def frame_pointers(text):
    """`info registers -a` -> {cpu: RBP} for the vCPUs in long mode."""
    out = {}
    for cpu, block in cpu_blocks(text):
        rbp = REG_RBP.search(block)
        if rbp:
            out[cpu] = int(rbp.group(1), 16)
    return out


def walk_stack(read_pair, rbp, depth):
    """The return addresses along the kernel's frame-pointer chain from rbp, innermost first.
    read_pair(addr) -> (saved RBP, return address) or None. The vCPU keeps running while the
    chain is read, so every step is checked: a kernel-half, aligned frame; a return address in
    kernel text; the next frame above this one, on the same stack."""
    out = []
    while len(out) < depth and rbp is not None and rbp >= KERNEL_HALF and not rbp & 7:
        pair = read_pair(rbp)
        if pair is None or pair[1] < KERNEL_TEXT:
            break
        out.append(pair[1])
        if not rbp < pair[0] <= rbp + STACK_SIZE:
            break
        rbp = pair[0]
    return out


def monitor_read_pair(mon, addr):
    m = MEM_PAIR.search(mon.hmp("x /2gx %#x" % addr))
    return (int(m.group(1), 16), int(m.group(2), 16)) if m else None


class Profile:
    """Counts by address; named at report time (module symbols may arrive last)."""

    def __init__(self, symbols):
        self.symbols = symbols
        self.samples = self.idle = self.rounds = 0
        self.by_address = {}
        self.chains = {}  # (rip, return addresses) -> samples, with --stacks

    def add(self, regs, stacks=None):
        self.rounds += 1
        for cpu, rip, halted in regs:
            self.samples += 1
            if halted:
                self.idle += 1
                continue
            self.by_address[rip] = self.by_address.get(rip, 0) + 1
            if stacks and stacks.get(cpu):
                key = (rip, tuple(stacks[cpu]))
                self.chains[key] = self.chains.get(key, 0) + 1

    def report(self, top, offsets=False):
        by_function = {}
        for rip, n in self.by_address.items():
            name = (self.symbols.lookup(rip, offsets) if rip is not None
                    else "[not in long mode]")
            by_function[name] = by_function.get(name, 0) + n
        busy = self.samples - self.idle
        lines = ["guest profile: %d rounds, %d vCPU samples, %d idle (%.1f %%), %d busy"
                 % (self.rounds, self.samples, self.idle,
                    100.0 * self.idle / max(self.samples, 1), busy)]
        ranked = sorted(by_function.items(), key=lambda kv: (-kv[1], kv[0]))
        for name, n in ranked[:top]:
            lines.append("%6.1f %%  %6d  %s" % (100.0 * n / max(busy, 1), n, name))
        if self.chains:
            lines += self.report_callers([name for name, _ in ranked[:top]], offsets)
        return "\n".join(lines) + "\n"

    def report_callers(self, names, offsets, per_function=3, frames=4):
        """For each function of the profile, its most frequent caller chains (innermost
        first). A function that sets up no frame of its own (assembly, some leaves) shows
        its caller's caller first."""
        callers = {}
        for (rip, stack), n in self.chains.items():
            name = self.symbols.lookup(rip, offsets)
            chain = " < ".join(self.symbols.lookup(a) for a in stack[:frames])
            per = callers.setdefault(name, {})
            per[chain] = per.get(chain, 0) + n
        lines = ["", "callers (frame-pointer chains of the samples that had one):"]
        for name in names:
            if name not in callers:
                continue
            lines.append("  %s" % name)
            ranked = sorted(callers[name].items(), key=lambda kv: (-kv[1], kv[0]))
            for chain, n in ranked[:per_function]:
                lines.append("    %6d  < %s" % (n, chain))
        return lines


def sample(args, symbols):
    prof = Profile(symbols)
    deadline = time.monotonic() + args.duration if args.duration else None
    period = 1.0 / args.hz
    try:
        try:  # QEMU may still be starting
            mon = QmpClient(args.qmp, timeout=30, connect_wait=args.connect_wait)
        except (FileNotFoundError, ConnectionRefusedError):
            sys.exit("guest-profile: no QMP socket at %s" % args.qmp)
        next_at = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            text = mon.hmp("info registers -a")
            regs, stacks = parse_registers(text), None
            if args.stacks:
                fps = frame_pointers(text)
                stacks = {cpu: walk_stack(lambda a: monitor_read_pair(mon, a), fps.get(cpu),
                                          args.stacks)
                          for cpu, rip, halted in regs
                          if not halted and rip is not None and rip >= KERNEL_HALF}
            prof.add(regs, stacks)
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
    except (EOFError, OSError, ValueError):
        pass  # QEMU exited: the profile ends with it
    return prof


SELF_TEST_REGS = """CPU#0
RAX=0000000000000000 RBX=ffffffff82a0c940 RCX=0000000000000000 RDX=0000000000000001
RSI=0000000000000000 RDI=0000000000000000 RBP=ffffc90000013e40 RSP=ffffc90000013e28
RIP=ffffffff81e6b4c6 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
CPU#1
RAX=0000000000000001 RBX=ffff888003c0a000 RCX=0000000000000000 RDX=0000000000000001
RSI=0000000000000000 RDI=0000000000000000 RBP=ffffc90000023e00 RSP=ffffc90000023de0
RIP=ffffffff81128a10 RFL=00000202 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0
"""
SELF_TEST_REGS_32 = """CPU#0
EAX=00000000 EBX=00000000 ECX=00000000 EDX=00060fb1
EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0
"""
SELF_TEST_MAP = """ffffffff81000000 T _stext
ffffffff81128a00 T __lock_acquire
ffffffff81128f00 t mark_lock
ffffffff81e6b4a0 T pv_native_safe_halt
ffffffff82000000 D some_data
ffffffff82a00000 T _etext
"""


def self_test():
    import os
    import tempfile
    regs = parse_registers(SELF_TEST_REGS)
    assert regs == [(0, 0xffffffff81e6b4c6, True), (1, 0xffffffff81128a10, False)], regs
    with tempfile.NamedTemporaryFile("w", suffix=".map", delete=False) as f:
        f.write(SELF_TEST_MAP)
    try:
        syms = Symbols()
        assert syms.load(f.name) == 5  # the D symbol is not code
    finally:
        os.unlink(f.name)
    assert syms.lookup(0xffffffff81128a10) == "__lock_acquire"
    assert syms.lookup(0xffffffff81128f01) == "mark_lock"
    assert syms.lookup(0xffffffffa0001234) == "[module]"
    assert syms.lookup(0x1000) == "[user]"
    assert syms.lookup(0xffffffff81128a10, offset=True) == "__lock_acquire+0x10"
    assert syms.lookup(0xffff888000001000) == "[unknown]"  # below the first symbol
    assert syms.lookup(0xffffffff82a00010) == "[unknown]"  # past _etext
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("ffffffffa0001000 t sgpu_emit\t[sharegpu]\n0000000000000000 T hidden\n")
    try:
        assert syms.load(f.name) == 6
    finally:
        os.unlink(f.name)
    assert syms.lookup(0xffffffffa0001234) == "sgpu_emit [sharegpu]"
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("[    4.1] sharegpu: loaded\r\nSHAREGPU-KALLSYMS-BEGIN\r\n"
                "ffffffffa0002000 t sgpu_ring_write\t[sharegpu]\r\n"
                "SHAREGPU-KALLSYMS-END\r\nffffffffa0003000 t outside [x]\r\n")
    try:
        assert syms.load_from_log(f.name) == 7
    finally:
        os.unlink(f.name)
    assert syms.lookup(0xffffffffa0002010) == "sgpu_ring_write [sharegpu]"
    assert syms.lookup(0xffffffffa0002010, offset=True) == "sgpu_ring_write+0x10 [sharegpu]"
    assert syms.lookup(0xffffffffa0003010) == "sgpu_ring_write [sharegpu]"  # not read
    assert parse_registers(SELF_TEST_REGS_32) == [(0, None, False)]
    prof = Profile(syms)
    prof.add(regs)
    prof.add(parse_registers(SELF_TEST_REGS.replace("HLT=1", "HLT=0")))
    rep = prof.report(10)
    assert rep.splitlines()[0] == ("guest profile: 2 rounds, 4 vCPU samples, 1 idle (25.0 %),"
                                   " 3 busy"), rep
    assert rep.splitlines()[1].split() == ["66.7", "%", "2", "__lock_acquire"], rep
    assert rep.splitlines()[2].split() == ["33.3", "%", "1", "pv_native_safe_halt"], rep
    prof.add(parse_registers(SELF_TEST_REGS_32))
    rep = prof.report(10)  # a tie: by name
    assert rep.splitlines()[2].split() == ["25.0", "%", "1", "[not", "in", "long", "mode]"], rep
    # frame-pointer walks: a chain of three frames, then one that points below itself
    assert frame_pointers(SELF_TEST_REGS) == {0: 0xffffc90000013e40, 1: 0xffffc90000023e00}
    memory = {0xffffc90000023e00: (0xffffc90000023e40, 0xffffffff81128f10),
              0xffffc90000023e40: (0xffffc90000023e80, 0xffffffff81128a20),
              0xffffc90000023e80: (0xffffc90000023e00, 0xffffffff81128f20)}
    assert walk_stack(memory.get, 0xffffc90000023e00, 8) == [
        0xffffffff81128f10, 0xffffffff81128a20, 0xffffffff81128f20]
    assert walk_stack(memory.get, 0xffffc90000023e00, 2) == [
        0xffffffff81128f10, 0xffffffff81128a20]
    assert walk_stack(memory.get, 0x7ffc12345678, 8) == []  # a user-space frame
    assert walk_stack({0xffffc90000023e00: (0, 0x401000)}.get, 0xffffc90000023e00, 8) == []

    class FakeMonitor:
        def hmp(self, line):
            assert line == "x /2gx 0xffffc90000023e00", line
            return "ffffc90000023e00: 0xffffc90000023e40 0xffffffff81128f10\r\n"
    assert monitor_read_pair(FakeMonitor(), 0xffffc90000023e00) == (
        0xffffc90000023e40, 0xffffffff81128f10)
    prof = Profile(syms)
    stack = walk_stack(memory.get, 0xffffc90000023e00, 8)
    prof.add(regs, {1: stack})
    prof.add(regs, {1: stack})
    rep = prof.report(10)
    assert "callers (frame-pointer chains" in rep, rep
    assert rep.splitlines()[-2:] == ["  __lock_acquire",
                                     "         2  < mark_lock < __lock_acquire < mark_lock"], rep
    print("guest-profile self-test: OK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qmp", help="QEMU's QMP UNIX socket")
    ap.add_argument("--system-map", help="the guest kernel's System.map")
    ap.add_argument("--kallsyms", help="the guest's /proc/kallsyms (module functions)")
    ap.add_argument("--kallsyms-log", help="a console log with the module functions a guest "
                    "booted with sharegpu.kallsyms=1 printed (read when sampling ends)")
    ap.add_argument("--hz", type=float, default=25.0)
    ap.add_argument("--duration", type=float, default=0, help="seconds (0: until QEMU exits)")
    ap.add_argument("--connect-wait", type=float, default=30.0)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--stacks", type=int, default=0, metavar="DEPTH",
                    help="also walk each busy vCPU's frame-pointer chain this deep (x /2gx "
                    "through the monitor, one call a frame) and list each function's callers")
    ap.add_argument("--offsets", action="store_true",
                    help="count by function+offset (which instruction), not by function")
    ap.add_argument("-o", "--output", help="report file (default: stdout)")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    if not args.qmp or not args.system_map:
        ap.error("--qmp and --system-map are required")
    symbols = Symbols()
    symbols.load(args.system_map)
    if args.kallsyms:
        symbols.load(args.kallsyms)
    prof = sample(args, symbols)
    if args.kallsyms_log:
        try:
            symbols.load_from_log(args.kallsyms_log)
        except OSError as e:
            print("guest-profile: %s: %s" % (args.kallsyms_log, e), file=sys.stderr)
    report = prof.report(args.top, args.offsets)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report)
    else:
        sys.stdout.write(report)


if __name__ == "__main__":
    main()
