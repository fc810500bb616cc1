"""Import a large subscriber CSV and show that memory stays flat.

Writes CSV files of 10k, 100k and (with --full) 1M rows, a few of them bad (an invalid
address, a duplicate), imports each with `digest subscribers import` in its own
process, and prints rows per second, the problems reported, and the peak RSS of the
import process.

    .venv/bin/python bench/import_csv.py [--full]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_csv(path: Path, rows: int) -> None:
    with path.open("w") as out:
        out.write("email,name,city\n")
        for i in range(rows):
            if i % 100_000 == 50:
                out.write("not-an-address,Broken,Nowhere\n")
            elif i % 100_000 == 51:
                out.write("reader0@example.org,Twice,Again\n")
            else:
                out.write(f"reader{i}@example.org,Reader {i},City {i % 97}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also 1,000,000 rows")
    args = parser.parse_args()
    sizes = [10_000, 100_000] + ([1_000_000] if args.full else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            folder = Path(tmp) / f"n{rows}"
            folder.mkdir()
            (folder / "config.toml").write_text(
                '[publication]\nname = "Bench"\nurl = "https://bench.example/"\n'
                'from_address = "d@bench.example"\npostal_address = "1 Street"\n')
            write_csv(folder / "list.csv", rows)
            started = time.monotonic()
            with (folder / "out").open("w") as out, (folder / "err").open("w") as err:
                process = subprocess.Popen(
                    [sys.executable, "-m", "digest", "subscribers", "import", "list.csv"],
                    cwd=folder, env=env, stdout=out, stderr=err)
                _, status, usage = os.wait4(process.pid, 0)
            elapsed = time.monotonic() - started
            summary = (folder / "out").read_text().strip()
            problems = len((folder / "err").read_text().splitlines())
            print(f"{rows:>9,} rows: {summary} in {elapsed:.1f} s "
                  f"({rows / elapsed:,.0f} rows/s); {problems} problems reported, each with "
                  f"its line; peak RSS {usage.ru_maxrss / 1024:.0f} MB; exit {status >> 8}")


if __name__ == "__main__":
    main()
