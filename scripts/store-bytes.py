#!/usr/bin/env python3
"""Bytes a coffer SQLite store holds per payment, by table and index.

Usage: python3 scripts/store-bytes.py DATA_DIR_OR_DB_FILE

Reads SQLite's dbstat (pages in use, not free pages) from a stopped or
running gateway's database, read-only, and divides by the number of
succeeded payments. BENCHMARKS.md quotes it after `coffer bench --data DIR`.
"""
import os
import sqlite3
import sys


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = sys.argv[1]
    if os.path.isdir(path):
        path = os.path.join(path, "coffer.sqlite3")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    payments = db.execute("SELECT COUNT(*) FROM payments WHERE status = 'succeeded'").fetchone()[0]
    if payments == 0:
        print("no succeeded payments in the store", file=sys.stderr)
        return 1
    rows = db.execute(
        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY SUM(pgsize) DESC"
    ).fetchall()
    total = sum(size for _, size in rows)
    print(f"{payments} payments, {total} bytes in use: {total / payments:.0f} bytes per payment")
    for name, size in rows:
        if size / payments >= 1:
            print(f"  {name:<40} {size / payments:8.0f} B/payment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
