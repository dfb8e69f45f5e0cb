"""``python -m tests.faults [--long] [--case NAME ...]``: run the matrix, update the doc."""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import trio

from tests.faults.harness import scrub_real_aws_environment
from tests.faults.runner import CASES, run_matrix, table

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN = "<!-- fault-matrix:begin -->"
END = "<!-- fault-matrix:end -->"


def write_doc(doc: Path, matrix: str, command: str) -> None:
    block = f"{BEGIN}\nProduced by `{command}`:\n\n{matrix}\n{END}"
    text = doc.read_text() if doc.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    doc.write_text(pattern.sub(lambda _: block, text, count=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--long", action="store_true", help="20 kills, 30-60 s outages")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="only these")
    parser.add_argument("--no-doc", action="store_true", help="do not update the doc")
    args = parser.parse_args()
    scrub_real_aws_environment()
    with tempfile.TemporaryDirectory(prefix="afpipe-faults-") as tmp:
        results = trio.run(run_matrix, Path(tmp), tuple(args.case or ()), args.long)
    matrix = table(results)
    print(matrix)
    if not args.no_doc:
        command = "python -m tests.faults" + (" --long" if args.long else "")
        if args.case:
            command += "".join(f" --case {c}" for c in args.case)
        write_doc(DOC, matrix, command)
    raise SystemExit(0 if all(r.passed or r.skipped for r in results) else 1)


if __name__ == "__main__":
    main()
