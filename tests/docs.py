#!/usr/bin/env python3
"""Runs the SQL examples of the documentation and compares their output with the pages.

    tests/docs.py --host SOCKET_DIR --port PORT [--psql PATH] [--accept] [PAGE.md ...]

Without pages: README.md and docs/*.md. The convention (also in tests/README.md):

- A ```sql block runs. When the next block, with only blank lines between them, is a
  ```text block, that block is the psql output the statements must print. A ```sql block
  without one is setup (CREATE TABLE, INSERT, rowversion.enable(), ...): what it prints is
  not shown, but it must not print an error or a warning.
- ```sql norun (any word after `sql` in the info string, `norun` by convention) and blocks
  of any other language never run: shell commands, HTTP, client code, and examples whose
  output cannot be reproduced (pids, times, several sessions). A ```text block after a norun
  block is an illustration and is not checked.

Each page runs in a fresh database of its own (dropped and created again), all its blocks in
order in one psql session, as pg_regress runs a file: `psql -X -q` reading the script from
stdin, so errors print as `ERROR:  ...` with their DETAIL and HINT, and command tags
(`INSERT 0 1`) are not printed. Blocks are separated with `\\echo` markers and the output is
split at them. Lines are compared without trailing whitespace. A mismatch prints a unified
diff (the page's lines against what the server printed) and fails.

Every relative link of those pages (and of CONTRIBUTING.md, tests/README.md and
bench/README.md) must name a file that exists and, with a #fragment, a heading of that page
(GitHub's anchors: lower case, punctuation dropped, spaces as hyphens).

--accept writes what the server printed into the page's existing ```text output blocks (to
review with `git diff`, as one reviews a new pg_regress expected file).
"""

import argparse
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = "@@docs-block@@"
# Pages without SQL examples whose links are checked too.
LINKED_ONLY = ["CONTRIBUTING.md", "tests/README.md", "bench/README.md"]
FAILURE = re.compile(r"^(ERROR|WARNING|FATAL|PANIC):|^psql:")
FENCE = re.compile(r"^(```+)\s*(\S*)\s*(.*)$")


class Block:
    def __init__(self, lang, flags, start, end, lines):
        self.lang, self.flags = lang, flags
        self.start, self.end = start, end  # 1-based line numbers of the opening and closing fences
        self.lines = lines
        self.output = None  # the Block that holds this one's expected output

    @property
    def runs(self):
        return self.lang == "sql" and not self.flags


def parse(text):
    """The fenced code blocks of a markdown page, and each runnable block's output block."""
    lines = text.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, start, body = match.group(1), i, []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise SystemExit(f"unclosed code block at line {start + 1}")
        blocks.append(Block(match.group(2), match.group(3).strip(), start + 1, i + 1, body))
        i += 1
    for block, following in zip(blocks, blocks[1:]):
        between = lines[block.end:following.start - 1]
        if block.runs and following.lang == "text" and all(not line.strip() for line in between):
            block.output = following
    return blocks


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(text):
    """The anchors GitHub gives a page's headings."""
    seen, result = {}, set()
    for line in strip_code(text).split("\n"):
        if not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def strip_code(text):
    """The page without its fenced code blocks."""
    return re.sub(r"^(```+).*?^\1\s*$", "", text, flags=re.M | re.S)


def check_links(page):
    """The page's broken relative links, as messages."""
    broken = []
    for target in LINK.findall(strip_code(page.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text()):
            broken.append(f"{target}: no such heading in {os.path.relpath(file, REPO)}")
    return broken


def normalized(lines):
    lines = [line.rstrip() for line in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def psql(args, command, dbname, script=None):
    env = dict(os.environ, LC_ALL="C", PGCLIENTENCODING="UTF8",
               PGOPTIONS="-c lc_messages=C -c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres")
    cmd = [args.psql, "-X", "-q", "-h", args.host, "-p", str(args.port), "-U", args.user, "-d", dbname]
    return subprocess.run(cmd + command, input=script, env=env, text=True, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run_page(args, page):
    text = page.read_text()
    blocks = [block for block in parse(text) if block.runs]
    name = os.path.relpath(page, REPO)
    if not blocks:
        print(f"{name}: no SQL examples")
        return True
    db = "docs_" + re.sub(r"[^a-z0-9]+", "_", page.stem.lower())
    setup = psql(args, ["-v", "ON_ERROR_STOP=1", "-c", f"DROP DATABASE IF EXISTS {db}",
                        "-c", f"CREATE DATABASE {db}"], "postgres")
    if setup.returncode != 0:
        print(f"{name}: could not create database {db}:\n{setup.stdout}")
        return False
    script = "".join(f"\\echo {MARKER}\n" + "\n".join(block.lines) + "\n" for block in blocks)
    result = psql(args, [], db, script + f"\\echo {MARKER}\n")
    parts = result.stdout.split(MARKER + "\n")
    # Before the first marker: nothing; then one part per block; after the last: nothing.
    if len(parts) != len(blocks) + 2 or parts[0].strip() or parts[-1].strip() or result.returncode != 0:
        print(f"{name}: psql failed (exit {result.returncode}) or printed outside the blocks:\n{result.stdout}")
        return False
    ok, compared, replacements = True, 0, []
    for block, actual in zip(blocks, parts[1:-1]):
        actual = normalized(actual.split("\n"))
        expected = normalized(block.output.lines) if block.output else []
        if block.output:
            compared += 1
            replacements.append((block.output, actual))
        if not block.output:
            failures = [line for line in actual if FAILURE.match(line)]
            if failures:
                print(f"{name}:{block.start + 1}: the setup block (no output block follows it) failed:")
                print("\n".join(actual))
                ok = False
        elif actual != expected:
            where = block.output.start + 1
            print(f"{name}:{where}: the SQL block at line {block.start + 1} printed something else than its output block:")
            sys.stdout.writelines(difflib.unified_diff(
                [line + "\n" for line in expected], [line + "\n" for line in actual],
                f"{name} (line {where})", "psql"))
            ok = False
    if args.accept and replacements:
        lines = text.split("\n")
        for output, actual in sorted(replacements, key=lambda r: -r[0].start):
            lines[output.start:output.end - 1] = actual
        page.write_text("\n".join(lines))
    print(f"{name}: {len(blocks)} SQL blocks run, {compared} outputs compared: {'ok' if ok else 'FAILED'}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("PGHOST", "/tmp"))
    parser.add_argument("--port", default=os.environ.get("PGPORT", "5432"))
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--psql", default="psql")
    parser.add_argument("--accept", action="store_true", help="write the server's output into the pages")
    parser.add_argument("pages", nargs="*", type=Path)
    args = parser.parse_args()
    pages = args.pages or [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    results = [run_page(args, page.resolve()) for page in pages]
    linked = pages if args.pages else pages + [REPO / name for name in LINKED_ONLY]
    for page in linked:
        for message in check_links(page.resolve()):
            print(f"{os.path.relpath(page.resolve(), REPO)}: broken link {message}")
            results.append(False)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
