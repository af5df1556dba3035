"""The pieces of benchmarks/gpu/check.sh's report: a pytest JUnit summary, a ptxas resource summary, the whole.

    python benchmarks/gpu/report.py junit RESULTS.xml [--allow-all-skipped]   # markdown; exit 0 passed, 1 failed,
                                                                             # 3 nothing passed (all skipped)
    python benchmarks/gpu/report.py ptxas BUILD.log                          # markdown summary of `-Xptxas -v`
    python benchmarks/gpu/report.py assemble WORKDIR OUT.md                  # the report from check.sh's files

``assemble`` reads WORKDIR/parts.tsv (one line per part: name, status, seconds, limit, note), WORKDIR/env.txt,
and per part WORKDIR/NAME.md (its own report, if it wrote one) and WORKDIR/NAME.log (whose last lines go into
the report when the part did not pass).
"""

from __future__ import annotations

import collections
import datetime
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

#: the parts in the order check.sh runs them, with what each one is
PARTS = {
    "build": "build the extension from source for sm_90 (TORCH_CUDA_ARCH_LIST=9.0, all cores)",
    "test_cuda": "tests/test_cuda.py, tests/test_cuda_state_precision.py",
    "graphs": "tests/test_cuda_graphs.py: CUDA-graph replay of every optimizer vs eager (some on low-precision state)",
    "memcheck": "compute-sanitizer --tool memcheck over benchmarks/gpu/sanitize_steps.py",
    "big_tensor": "benchmarks/gpu/big_tensor.py: one bf16 param of 2^31 + 1024 elements",
    "bench": "benchmarks/gpu/step_bench.py: the CUDA step benchmark",
}
LOG_TAIL = 40


def junit(path: str, allow_all_skipped: bool) -> int:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        print(f"no pytest results ({type(exc).__name__}: {exc})")
        return 1
    cases = root.iter("testcase")
    failed, skipped, passed = [], collections.Counter(), 0
    for case in cases:
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        skip = case.find("skipped")
        if problem is not None:
            message = (problem.get("message") or problem.text or "").strip().splitlines()
            failed.append((name, message[0][:300] if message else ""))
        elif skip is not None:
            skipped[(skip.get("message") or "").strip()[:300]] += 1
        else:
            passed += 1
    lines = [f"{passed} passed, {len(failed)} failed, {sum(skipped.values())} skipped", ""]
    if failed:
        lines += ["| failed | message |", "|---|---|"]
        lines += [f"| `{n}` | {m.replace('|', '/')} |" for n, m in failed]
        lines.append("")
    for reason, count in skipped.items():
        lines.append(f"- skipped ({count}): {reason}")
    print("\n".join(lines))
    if failed:
        return 1
    return 0 if passed or allow_all_skipped else 3


PTXAS_FUNC = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
PTXAS_PROPS = re.compile(r"Function properties for (\S+)")
PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
PTXAS_REGS = re.compile(r"Used (\d+) registers")


def demangle(name: str) -> str:
    """The C++ name of a kernel symbol (c++filt where it is installed)."""
    try:
        return subprocess.run(["c++filt", name], capture_output=True, text=True, timeout=10).stdout.strip() or name
    except (OSError, subprocess.SubprocessError):
        return name


def ptxas(path: str) -> int:
    """Kernels, their register counts and any spills, from a build log with ``-Xptxas -v``."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError as exc:
        print(f"no build log ({exc})")
        return 1
    kernels, current, described = [], None, None
    for line in text.splitlines():
        m = PTXAS_FUNC.search(line)
        if m:
            current = {"name": m.group(1), "arch": m.group(2), "regs": None, "stack": 0, "spill": 0}
            kernels.append(current)
            continue
        m = PTXAS_PROPS.search(line)
        if m:
            described = m.group(1)  # a kernel, or a device function it calls
            continue
        if current is None:
            continue
        m = PTXAS_SPILL.search(line)
        if m and described == current["name"]:
            current["stack"], current["spill"] = int(m.group(1)), int(m.group(2)) + int(m.group(3))
        m = PTXAS_REGS.search(line)
        if m:
            current["regs"] = int(m.group(1))
    if not kernels:
        print("no ptxas resource lines in the build log")
        return 0
    archs = sorted({k["arch"] for k in kernels})
    regs = [k["regs"] for k in kernels if k["regs"] is not None] or [0]
    spilling = [k for k in kernels if k["spill"] or k["stack"]]
    lines = [f"ptxas: {len(kernels)} kernels for {', '.join(archs)}; registers {min(regs)}..{max(regs)}; "
             f"{len(spilling)} with a stack frame or spills"]
    for k in sorted(spilling, key=lambda k: -k["spill"])[:8]:
        lines.append(f"- stack {k['stack']} B, spills {k['spill']} B, {k['regs']} registers: "
                     f"`{demangle(k['name'])[:200]}`")
    print("\n".join(lines))
    return 0


def read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def assemble(work: str, out: str) -> int:
    rows = {}
    for line in read(os.path.join(work, "parts.tsv")).splitlines():
        name, status, secs, limit, note = (line.split("\t") + [""] * 5)[:5]
        rows[name] = (status, secs, limit, note)
    env = read(os.path.join(work, "env.txt")).strip()
    device = next((line.split(":", 1)[1].strip() for line in env.splitlines() if line.startswith("device:")), "?")
    failed = [n for n, (status, *_) in rows.items() if status not in ("pass", "skipped")]
    lines = [f"# GPU check: {device}", "",
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, `benchmarks/gpu/check.sh`: "
             + ("every part passed" if rows and not failed else f"{len(failed)} part(s) did not pass"), "",
             "```", env, "```", "",
             "| part | what | status | s | limit s | note |", "|---|---|---|---:|---:|---|"]
    for name in list(PARTS) + [n for n in rows if n not in PARTS]:
        status, secs, limit, note = rows.get(name, ("not run", "", "", "the script stopped before it"))
        note = note.replace("|", "/")
        lines.append(f"| {name} | {PARTS.get(name, '')} | {status} | {secs} | {limit} | {note} |")
    for name in PARTS:
        body = read(os.path.join(work, f"{name}.md")).strip()
        status = rows.get(name, ("not run",))[0]
        log = read(os.path.join(work, f"{name}.log")).rstrip().splitlines()
        if status == "skipped" or not body and not (status != "pass" and log):
            continue
        lines += ["", f"## {name}: {status}", ""]
        if body:
            lines.append(body)
        if status != "pass" and log:
            lines += ["", f"Last {min(LOG_TAIL, len(log))} lines of its log:", "", "```", *log[-LOG_TAIL:], "```"]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "junit":
        return junit(argv[1], "--allow-all-skipped" in argv[2:])
    if len(argv) == 2 and argv[0] == "ptxas":
        return ptxas(argv[1])
    if len(argv) == 3 and argv[0] == "assemble":
        return assemble(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
