"""Run the hostile cases: ``python -m hostile --family NAME`` (from tests/) runs one family in this process and
prints a JSON line before and after each case; ``python -m hostile --table`` runs every family in its own
process and prints the acceptance table (a process that dies mid-case counts that case as a crash)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback
from collections import Counter

from hostile import op_cases, optimizer_cases, state_precision_cases


def cases():
    return op_cases.all_cases() + optimizer_cases.all_cases() + state_precision_cases.all_cases()


def families() -> list[str]:
    return list(dict.fromkeys(c.family for c in cases()))


def run_family(family: str) -> None:
    for case in cases():
        if case.family != family:
            continue
        print(json.dumps({"start": case.name}), flush=True)
        try:
            outcome, detail = case.run()
        except Exception:  # a case that blows up in an unexpected way is a wrong result, not a pass
            outcome, detail = "wrong", traceback.format_exc(limit=3)
        print(json.dumps({"case": case.name, "outcome": outcome, "detail": detail}), flush=True)


def run_in_subprocess(family: str, timeout: float = 600) -> tuple[list[dict], int, str]:
    """Results of one family run in a child process, its exit code, and its stderr."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "hostile", "--family", family], cwd=here, capture_output=True,
                          text=True, timeout=timeout)
    results, started = [], None
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if "start" in record:
            started = record["start"]
        else:
            results.append(record)
            started = None
    if started is not None:  # the process died inside this case
        results.append({"case": started, "outcome": "crash", "detail": f"exit code {proc.returncode}"})
    return results, proc.returncode, proc.stderr


def table() -> None:
    print("| case family | cases tried | clear error | valid, same result | crash | wrong result |")
    print("|---|---|---|---|---|---|")
    totals = Counter()
    for family in families():
        results, code, _ = run_in_subprocess(family)
        counts = Counter(r["outcome"] for r in results)
        counts["tried"] = len(results)
        totals.update(counts)
        print(f"| {family} | {counts['tried']} | {counts['refused']} | {counts['ok']} | {counts['crash']} | "
              f"{counts['wrong']} |")
        for r in results:
            if r["outcome"] in ("wrong", "crash"):
                print(f"|  ↳ {r['case']}: {r['detail'][:120]} | | | | | |")
    print(f"| **all** | {totals['tried']} | {totals['refused']} | {totals['ok']} | {totals['crash']} | "
          f"{totals['wrong']} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hostile")
    parser.add_argument("--family")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        table()
    elif args.family:
        run_family(args.family)
    else:
        print("\n".join(families()))


if __name__ == "__main__":
    main()
