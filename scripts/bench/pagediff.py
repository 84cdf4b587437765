#!/usr/bin/env python3
"""Ground truth for the size of an incremental backup.

Compares two copies of a PostgreSQL data directory page by page (8 KiB) and
prints how many bytes of pages differ, and how many bytes those changed pages
take once compressed with zstd level 3 (one stream, as a block-incremental
backup that packs changed pages together would store them).

A file present only in NEW counts entirely as changed; bytes past the end of
the OLD copy of a file count as changed; a file only in OLD counts for nothing
(deleting costs no storage). The directories and files PostgreSQL's own base
backup skips are skipped here too.

usage: pagediff.py [--page-size N] [--level L] [--top N] OLD_DIR NEW_DIR
  --top N   also list, on stderr, the N files with the most changed bytes

Output: one line of key=value pairs, e.g.
  total_bytes=... changed_bytes=... changed_pct=... changed_pages=... changed_zstd3_bytes=...
Streams: memory use does not grow with the size of the data directory.
"""
import argparse
import os
import re
import subprocess
import sys
import threading

# Directories whose contents a base backup does not copy (official exclusion list).
SKIP_DIRS = {
    'pg_wal', 'pg_xlog', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots',
    'pg_stat_tmp', 'pg_subtrans', 'pg_replslot',
}
# Files a base backup does not copy.
SKIP_FILES = {
    'postmaster.pid', 'postmaster.opts', 'backup_label', 'tablespace_map',
    'backup_manifest', 'backup_label.old', 'recovery.signal', 'standby.signal',
}
TEMP_REL = re.compile(r'^t\d+_\d+(_(fsm|vm|init))?(\.\d+)?$')
READ = 1 << 20  # read files 1 MiB at a time


def skip_file(name):
    return (name in SKIP_FILES or name.startswith('pg_internal.init')
            or name.startswith('pgsql_tmp') or TEMP_REL.match(name) is not None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--page-size', type=int, default=8192)
    ap.add_argument('--level', type=int, default=3)
    ap.add_argument('--top', type=int, default=0)
    ap.add_argument('old')
    ap.add_argument('new')
    args = ap.parse_args()
    page = args.page_size
    if READ % page:
        sys.exit('page size must divide 1 MiB')

    zstd = subprocess.Popen(['zstd', f'-{args.level}', '-q', '-c'],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    compressed = [0]

    def drain():
        while True:
            b = zstd.stdout.read(READ)
            if not b:
                break
            compressed[0] += len(b)

    reader = threading.Thread(target=drain)
    reader.start()

    total = changed = pages = files = changed_files = 0
    per_file = []
    for root, dirs, names in os.walk(args.new):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith('pgsql_tmp'))
        rel = os.path.relpath(root, args.new)
        for name in sorted(names):
            if skip_file(name):
                continue
            p = os.path.join(root, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            q = os.path.join(args.old, rel, name)
            files += 1
            file_changed = 0
            with open(p, 'rb') as fn:
                try:
                    fo = open(q, 'rb')
                except FileNotFoundError:
                    fo = None
                try:
                    while True:
                        nb = fn.read(READ)
                        if not nb:
                            break
                        ob = fo.read(READ) if fo else b''
                        total += len(nb)
                        if nb == ob:
                            continue
                        for off in range(0, len(nb), page):
                            pn = nb[off:off + page]
                            if pn != ob[off:off + page]:
                                file_changed += len(pn)
                                pages += 1
                                zstd.stdin.write(pn)
                finally:
                    if fo:
                        fo.close()
            if file_changed:
                changed += file_changed
                changed_files += 1
                if args.top:
                    per_file.append((file_changed, os.path.getsize(p), os.path.join(rel, name)))
    zstd.stdin.close()
    reader.join()
    if zstd.wait() != 0:
        sys.exit('zstd failed')
    if args.top:
        per_file.sort(reverse=True)
        for c, size, path in per_file[:args.top]:
            print(f'{c:>12} of {size:>12} bytes changed ({100 * c / max(size, 1):5.1f}%)  {path}',
                  file=sys.stderr)
    print(f"total_bytes={total} changed_bytes={changed} "
          f"changed_pct={100 * changed / max(total, 1):.2f} "
          f"changed_pages={pages} "
          f"files={files} changed_files={changed_files} "
          f"changed_zstd{args.level}_bytes={compressed[0]}")


if __name__ == '__main__':
    main()
