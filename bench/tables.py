#!/usr/bin/env python3
"""Refresh the result tables in a Markdown file from the benches' summaries.

Usage: bench/tables.py docs/PERFORMANCE.md

Between a line `<!-- begin PATH -->` and the next `<!-- end PATH -->` the
file gets PATH's content (relative to the repository's root), as the last
`make bench` wrote it. A PATH that does not exist is an error: a bench that
no longer writes its summary must not leave stale tables behind silently.
"""
import os
import re
import sys


def main():
    doc = sys.argv[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(doc).read()
    pat = re.compile(r"(<!-- begin (\S+) -->\n)(.*?)(<!-- end \2 -->)", re.S)
    missing = []

    def fill(m):
        path = os.path.join(root, m.group(2))
        if not os.path.exists(path):
            missing.append(m.group(2))
            return m.group(0)
        body = open(path).read().rstrip("\n") + "\n"
        return m.group(1) + body + m.group(4)

    new, n = pat.subn(fill, text)
    if missing:
        sys.exit(f"{doc}: no summary at {', '.join(missing)} (run the bench first)")
    if n == 0:
        sys.exit(f"{doc}: no <!-- begin PATH --> ... <!-- end PATH --> section to refresh")
    open(doc, "w").write(new)
    print(f"{doc}: refreshed {n} section(s)")


if __name__ == "__main__":
    main()
