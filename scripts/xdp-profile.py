#!/usr/bin/env python3
"""Where an XDP program's time goes, by source line, on a machine without hardware counters.

`perf record -e cpu-clock` samples one CPU while something runs the program there steadily
(the bench: `BENCH_PARTS=1 BENCH_PROFILE_CASE="v4 IPIP ACK, established" taskset -c 1
target/release/bench`). The samples that fall in a program's JIT image are mapped to the BPF
instruction and source line they belong to through the kernel's `jited_line_info` (what
`bpftool prog dump jited linum` would print, had this bpftool been built with libbfd), and
summed per line.

A sample lands on the instruction after the one that stalled (a load that missed the cache
shows up on its successor), and the first instructions of the image carry the cost of
entering the program, which a pass-only program pays too.

Usage (root): scripts/xdp-profile.py [--program balancer] [--cpu 1] [--seconds 6] [--out DIR]
Needs perf, bpftool and objdump (binutils). Writes DIR/annot-<id>.txt, the disassembly with
each instruction's share of the samples, and prints the heaviest lines of each program.
"""

import argparse
import bisect
import collections
import ctypes
import json
import os
import re
import struct
import subprocess
import sys

SYS_BPF = 321  # x86-64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
# Offsets in struct bpf_prog_info (include/uapi/linux/bpf.h).
INFO_SIZE = 256
JITED_LEN, JITED_INSNS = 16, 24
NR_LINE_INFO, LINE_INFO, JITED_LINE_INFO, NR_JITED_LINE_INFO = 148, 152, 160, 168
LINE_INFO_REC_SIZE, JITED_LINE_INFO_REC_SIZE = 172, 176

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    rc = libc.syscall(SYS_BPF, cmd, buf, 128)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return rc


def jit_image(prog_id):
    """The program's JIT image and, per line-info record, (jited address, BPF insn offset)."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("I", prog_id))
    try:
        first = ctypes.create_string_buffer(INFO_SIZE)
        bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("IIQ", fd, INFO_SIZE, ctypes.addressof(first)))
        (jlen,) = struct.unpack_from("I", first, JITED_LEN)
        (nli,) = struct.unpack_from("I", first, NR_LINE_INFO)
        (lrs,) = struct.unpack_from("I", first, LINE_INFO_REC_SIZE)
        (jlrs,) = struct.unpack_from("I", first, JITED_LINE_INFO_REC_SIZE)
        image = ctypes.create_string_buffer(jlen)
        lines = ctypes.create_string_buffer(nli * lrs)
        jlines = ctypes.create_string_buffer(nli * jlrs)
        info = ctypes.create_string_buffer(INFO_SIZE)
        struct.pack_into("I", info, JITED_LEN, jlen)
        struct.pack_into("Q", info, JITED_INSNS, ctypes.addressof(image))
        struct.pack_into("I", info, NR_LINE_INFO, nli)
        struct.pack_into("Q", info, LINE_INFO, ctypes.addressof(lines))
        struct.pack_into("Q", info, JITED_LINE_INFO, ctypes.addressof(jlines))
        struct.pack_into("I", info, NR_JITED_LINE_INFO, nli)
        struct.pack_into("I", info, LINE_INFO_REC_SIZE, lrs)
        struct.pack_into("I", info, JITED_LINE_INFO_REC_SIZE, jlrs)
        bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("IIQ", fd, INFO_SIZE, ctypes.addressof(info)))
    finally:
        os.close(fd)
    records = sorted(
        (struct.unpack_from("Q", jlines, k * jlrs)[0], struct.unpack_from("I", lines, k * lrs)[0])
        for k in range(nli)
    )
    return image.raw, records


def source_lines(prog_id):
    """BPF instruction offset -> the source line bpftool's xlated dump gives it."""
    out = subprocess.run(
        ["bpftool", "prog", "dump", "xlated", "id", str(prog_id), "linum"],
        capture_output=True, text=True, check=True,
    ).stdout
    by_insn, current = {}, None
    for line in out.splitlines():
        if line.startswith(";"):
            current = re.sub(r"\[file:.*/([^/]+\.rs) line_num:(\d+).*\]", r"[\1:\2]", line[2:].strip())
        elif m := re.match(r"\s*(\d+):", line):
            by_insn[int(m.group(1))] = current
    return by_insn


def disassemble(image, start, path):
    with open(path + ".bin", "wb") as f:
        f.write(image)
    out = subprocess.run(
        ["objdump", "-D", "-b", "binary", "-mi386:x86-64", f"--adjust-vma={start:#x}", path + ".bin"],
        capture_output=True, text=True, check=True,
    ).stdout
    os.remove(path + ".bin")
    insns = []
    for line in out.splitlines():
        if m := re.match(r"\s*([0-9a-f]+):\s*(?:[0-9a-f]{2} )+\s*(.*)", line):
            insns.append((int(m.group(1), 16), m.group(2).strip()))
    return insns


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--program", default="balancer", help="program name (all loaded ones of that name)")
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--out", default="/tmp/xdp-profile")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, check=True).stdout)
    ids = [p["id"] for p in progs if p.get("name") == args.program]
    if not ids:
        sys.exit(f"no loaded program named {args.program!r}: start what runs it first")
    images = {i: jit_image(i) for i in ids}
    data = os.path.join(args.out, "perf.data")
    subprocess.run(
        ["perf", "record", "-e", "cpu-clock", "-F", "20000", "-C", str(args.cpu), "-o", data, "--", "sleep", str(args.seconds)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip"], capture_output=True, text=True, check=True).stdout
    samples = collections.Counter(int(x, 16) for x in script.split())
    total = sum(samples.values())
    print(f"{total} samples on CPU {args.cpu}")

    for prog_id, (image, records) in images.items():
        start = records[0][0]
        insns = disassemble(image, start, os.path.join(args.out, f"jit-{prog_id}"))
        mine = sum(samples.get(a, 0) for a, _ in insns)
        if not mine:
            print(f"\nprogram {prog_id}: no samples")
            continue
        src = source_lines(prog_id)
        addrs = [a for a, _ in records]
        per_line = collections.Counter()
        with open(os.path.join(args.out, f"annot-{prog_id}.txt"), "w") as f:
            last = None
            for a, text in insns:
                k = bisect.bisect_right(addrs, a) - 1
                insn = records[k][1] if k >= 0 else -1
                if insn != last:
                    f.write(f"--- bpf {insn}: {src.get(insn)}\n")
                    last = insn
                s = samples.get(a, 0)
                per_line[src.get(insn)] += s
                f.write(f"{100 * s / mine:6.2f}% {a & 0xffff:04x} {text}\n")
        print(f"\nprogram {prog_id}: {100 * mine / total:.1f}% of the CPU's samples; its heaviest lines:")
        for line, s in per_line.most_common(args.top):
            print(f"  {100 * s / mine:5.1f}%  {line}")


if __name__ == "__main__":
    main()
