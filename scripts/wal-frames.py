#!/usr/bin/env python3
"""WAL frames and bytes a coffer SQLite store wrote per payment, by B-tree.

Usage: python3 scripts/wal-frames.py DATA_DIR

Run it on the data folder of `coffer bench --data DIR --payments N` right
after the bench (the gateway stopped, its WAL not checkpointed yet): the
frames of the WAL's current generation (those carrying the header's salts)
are counted, each frame's page mapped to its table or index through
SQLite's dbstat, and divided by the store's succeeded payments. The WAL
starts over at 128 MiB (see BENCHMARKS.md), so keep N small enough that a
run fits one generation (2,000 payments write about 40 MiB); the script
says when frames of an earlier generation are left over.

The database is copied with its WAL into a temporary folder first, so the
bench's folder is never checkpointed or changed.
"""
import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile

WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24


def frames(wal_path):
    """(page number, is_commit) of every frame of the current generation,
    and the count of frames left from earlier ones."""
    with open(wal_path, "rb") as f:
        header = f.read(WAL_HEADER_BYTES)
        if len(header) < WAL_HEADER_BYTES:
            return [], 0
        page_size = struct.unpack(">I", header[8:12])[0]
        salts = header[16:24]
        found, stale = [], 0
        while True:
            frame = f.read(FRAME_HEADER_BYTES)
            if len(frame) < FRAME_HEADER_BYTES:
                break
            f.seek(page_size, os.SEEK_CUR)
            page, commit_size = struct.unpack(">II", frame[:8])
            if frame[8:16] == salts:
                found.append((page, commit_size != 0))
            else:
                stale += 1
        return found, stale


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    data = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("coffer.sqlite3", "coffer.sqlite3-wal"):
            shutil.copy(os.path.join(data, name), os.path.join(tmp, name))
        found, stale = frames(os.path.join(tmp, "coffer.sqlite3-wal"))
        db = sqlite3.connect(os.path.join(tmp, "coffer.sqlite3"))
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        owner = dict(db.execute("SELECT pageno, name FROM dbstat"))
        payments = db.execute("SELECT COUNT(*) FROM payments WHERE status = 'succeeded'").fetchone()[0]
        db.close()
    if payments == 0 or not found:
        print("no succeeded payments or no WAL frames", file=sys.stderr)
        return 1
    commits = sum(1 for _, is_commit in found if is_commit)
    by_tree = collections.Counter(owner.get(page, "(free or new)") for page, _ in found)
    print(
        f"{payments} payments, {len(found)} frames in {commits} commits: "
        f"{len(found) / payments:.2f} frames and {len(found) * page_size / payments / 1024:.1f} KiB per payment, "
        f"{len(found) / commits:.1f} frames and {payments / commits:.2f} payments per commit"
    )
    if stale:
        print(f"  ({stale} frames of an earlier WAL generation not counted)")
    for name, count in by_tree.most_common():
        if count / payments >= 0.05:
            print(f"  {name:<40} {count / payments:6.2f} frames/payment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
