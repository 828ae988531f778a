#!/usr/bin/env python3
"""What one durable operation costs this machine without sds: the floor under B2.

Each of N operations appends 19,000 bytes (a B2 message with its bloom filter) to a file and
then runs one SQLite transaction in WAL mode with synchronous=NORMAL and 4 KiB pages (the
store's settings) that writes three small rows and, after the first 1,000, deletes one (the
log's eviction). Prints operations per second. Run it alternately with `sds bench pipeline
--store sqlite:PATH` (docs/BENCHMARKS.md, B2): on a loaded machine only the ratio counts.

Usage: scripts/bench-b2-floor.py [N] [DIR]   (default 20000, a temporary directory)
"""
import os
import sqlite3
import sys
import tempfile
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
d = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
os.makedirs(d, exist_ok=True)
db = os.path.join(d, "floor.db")
for f in [db, db + "-wal", db + "-shm", os.path.join(d, "floor.seg")]:
    if os.path.exists(f):
        os.remove(f)
c = sqlite3.connect(db, isolation_level=None)
c.execute("pragma page_size = 4096")
c.execute("pragma journal_mode = wal")
c.execute("pragma synchronous = normal")
c.execute("create table message (ch blob, id blob, seg int, off int, len int, crc int,"
          " primary key (ch, id)) without rowid")
c.execute("create table log (ch blob, id blob, lamport int, sender blob, hint blob, arrival int,"
          " primary key (ch, id)) without rowid")
c.execute("create index log_by_arrival on log (ch, arrival)")
c.execute("create table channel (ch blob primary key, lamport int)")
seg = os.open(os.path.join(d, "floor.seg"), os.O_CREAT | os.O_WRONLY, 0o600)
payload = os.urandom(19000)
off = 0
start = time.perf_counter()
for i in range(n):
    os.pwrite(seg, payload, off)
    mid = b"msg-%d" % i
    c.execute("begin")
    c.execute("insert into message values (?, ?, 0, ?, ?, 0)", (b"c", mid, off, len(payload)))
    c.execute("insert into log values (?, ?, ?, ?, x'', ?)", (b"c", mid, i, b"alice", i))
    c.execute("insert into channel values (?, ?) on conflict (ch) do update set lamport = excluded.lamport",
              (b"c", i))
    if i >= 1000:
        c.execute("delete from log where ch = ? and id = ?", (b"c", b"msg-%d" % (i - 1000)))
    c.execute("commit")
    off += len(payload)
elapsed = time.perf_counter() - start
os.close(seg)
c.close()
print(f"{n / elapsed:.0f}")
