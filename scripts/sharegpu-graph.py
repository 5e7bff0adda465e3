#!/usr/bin/env python3
"""Draws the sharegpu sharing graph (QMP query-sharegpu-graph) with Graphviz.

usage: scripts/sharegpu-graph.py (--qmp SOCKET | --json FILE) [-o OUT]
  --qmp SOCKET  a running QEMU's QMP unix socket (-qmp unix:SOCKET,server,wait=off)
  --json FILE   a saved query-sharegpu-graph reply ("-" for stdin), its "return" or the whole
  -o OUT        OUT.dot, OUT.svg or OUT.png (the last two run Graphviz's `dot`);
                default: DOT on stdout

Devices are boxes, buffers ellipses (VRAM filled, pinned ones with a double border);
solid edges own, dashed edges import (bold when the import is mapped into the window).
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_client import QmpClient, QmpError  # noqa: E402 (beside this script)


def qmp_query(path):
    try:
        with QmpClient(path, timeout=30, connect_wait=10) as client:  # QEMU may be starting
            return client.command("query-sharegpu-graph")
    except QmpError as e:
        sys.exit(f"sharegpu-graph: {e}")
    except (OSError, EOFError) as e:
        sys.exit(f"sharegpu-graph: no QEMU answers on {path}: {e}")


def quote(s):
    """A DOT string: backslashes and quotes escaped, line breaks as DOT's \\n."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph):
    out = ["digraph sharegpu {", "  rankdir=LR;", '  node [fontname="Helvetica"];',
           '  edge [fontname="Helvetica", fontsize=10];']
    for n in graph["nodes"]:
        if n["kind"] == "device":
            label = "%s\n%s, %d KiB VRAM used" % (
                n["label"], "coherent" if n["coherent"] else "non-coherent",
                n["vram-used"] // 1024)
            out.append("  %s [shape=box, style=bold, label=%s];" % (quote(n["id"]), quote(label)))
            continue
        label = "%s\n%d KiB, %s\ngen %d, %d moves" % (
            n["label"], n["size"] // 1024, n["placement"], n["generation"], n["moves"])
        if n["pin-count"]:
            label += "\npinned x%d" % n["pin-count"]
        if n["fences-pending"]:
            label += "\n%d fences pending" % n["fences-pending"]
        attrs = ["shape=ellipse", "label=" + quote(label)]
        if n["placement"] == "device":
            attrs += ["style=filled", 'fillcolor="#dde8f7"']
        if n["pin-count"]:
            attrs.append("peripheries=2")
        out.append("  %s [%s];" % (quote(n["id"]), ", ".join(attrs)))
    for e in graph["edges"]:
        label = "%s #%d" % (e["kind"], e["handle"])
        attrs = []
        if e["kind"] == "imports":
            attrs.append("style=%s" % ("bold" if e["mapped"] else "dashed"))
            if e["mapped"]:
                label += "\nmapped @0x%x" % e["window-offset"]
            if e["invalidations"]:
                label += "\n%d invalidations" % e["invalidations"]
        if e["cache-dirty-lines"]:
            label += "\n%d dirty lines" % e["cache-dirty-lines"]
        attrs.append("label=" + quote(label))
        out.append("  %s -> %s [%s];" % (quote(e["source"]), quote(e["target"]), ", ".join(attrs)))
    out.append("}")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--qmp")
    src.add_argument("--json")
    ap.add_argument("-o", dest="out")
    args = ap.parse_args()

    if args.qmp:
        graph = qmp_query(args.qmp)
    else:
        with (sys.stdin if args.json == "-" else open(args.json)) as f:
            graph = json.load(f)
        graph = graph.get("return", graph)
    dot = to_dot(graph)
    if not args.out or args.out.endswith(".dot"):
        (open(args.out, "w") if args.out else sys.stdout).write(dot)
        return
    fmt = args.out.rsplit(".", 1)[-1]
    if fmt not in ("svg", "png"):
        sys.exit("sharegpu-graph: -o must end in .dot, .svg or .png")
    try:
        subprocess.run(["dot", "-T" + fmt, "-o", args.out], input=dot, text=True, check=True)
    except FileNotFoundError:
        sys.exit("sharegpu-graph: Graphviz's `dot` is not installed (Debian: graphviz)")


if __name__ == "__main__":
    main()
