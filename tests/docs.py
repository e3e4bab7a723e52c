#!/usr/bin/env python3
"""Runs the SQL examples of the documentation and compares their output with the pages.

    tests/docs.py --host SOCKET_DIR --port PORT [--psql PATH] [--accept] [PAGE.md ...]

Without pages: README.md and docs/*.md. The convention (also in tests/README.md):

- A ```sql block runs. When the next block, with only blank lines between them, is a
  ```text block, that block is the psql output the statements must print. A ```sql block
  without one is setup (CREATE TABLE, INSERT, rowversion.enable(), ...): what it prints is
  not shown, but it must not print an error or a warning.
- ```sql session=NAME runs in another connection of the page, opened at its first block
  with `application_name` NAME (so examples can show sessions by name instead of pids) and
  kept open for the rest of the page; later blocks of the same NAME run in it. Its output
  is not compared (a ```text block right after it is an error): it must not print an error
  or a warning, and what it shows is asked from the page's main session.
- ```sql session=NAME waits: the block is expected to block on a lock. The runner sends it
  without waiting for its output and, before the next block, polls pg_stat_activity (a
  separate short connection) until that session waits on a lock (`wait_event_type =
  'Lock'`); it fails if the block finished instead, or if no wait shows within
  --wait-timeout seconds. The session's next block first waits (up to --timeout) for the
  blocked statement to finish, so release it in a block before (a COMMIT of the holder).
- ```sql preloaded runs only on a server that has pg_rowversion in shared_preload_libraries
  (conflict counters, which need shared memory); elsewhere it and its output block are
  skipped. Its output is compared like a plain block's.
- ```sql norun (any other word after `sql` in the info string, `norun` by convention) and
  blocks of any other language never run: shell commands, HTTP, client code, and examples
  whose output cannot be reproduced. A ```text block after a norun block is an illustration
  and is not checked.

Each page runs in a fresh database of its own (dropped and created again), all its blocks in
order in one psql session (application_name `psql`), as pg_regress runs a file: `psql -X
-q` reading the blocks from stdin, so errors print as `ERROR:  ...` with their DETAIL and
HINT, and command tags (`INSERT 0 1`) are not printed. Each block is followed by an `\\echo`
marker, and the runner reads a block's output up to its marker before it sends the next
block (anywhere); a block that has not finished within --timeout seconds fails the page.
Lines are compared without trailing whitespace. A mismatch prints a unified diff (the
page's lines against what the server printed) and fails. At the end of the page every
connection is closed (an open transaction rolls back, which releases its waiters); a
session still running --timeout seconds later is terminated and fails the page.

Every relative link of those pages (and of CONTRIBUTING.md, tests/README.md and
bench/README.md) must name a file that exists and, with a #fragment, a heading of that page
(GitHub's anchors: lower case, punctuation dropped, spaces as hyphens).

--accept writes what the server printed into the page's existing ```text output blocks (to
review with `git diff`, as one reviews a new pg_regress expected file).
"""

import argparse
import difflib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = "@@docs-block@@"
# Pages without SQL examples whose links are checked too.
LINKED_ONLY = ["CONTRIBUTING.md", "tests/README.md", "bench/README.md"]
FAILURE = re.compile(r"^(ERROR|WARNING|FATAL|PANIC):|^psql:")
FENCE = re.compile(r"^(```+)\s*(\S*)\s*(.*)$")
SESSION = re.compile(r"^session=([A-Za-z0-9_.-]{1,63})$")
MAIN = "psql"  # the application_name of a page's main session


class Block:
    # Whether the server preloads pg_rowversion (set by main()): `sql preloaded` blocks run.
    preloaded_server = False

    def __init__(self, lang, flags, start, end, lines):
        self.lang, self.flags = lang, flags
        self.start, self.end = start, end  # 1-based line numbers of the opening and closing fences
        self.lines = lines
        self.output = None  # the Block that holds this one's expected output
        # Runs: sql with no word after it, or only `session=NAME` and then maybe `waits`.
        words = flags.split()
        named = bool(words) and SESSION.match(words[0])
        self.session = named.group(1) if named else None
        self.waits = bool(named) and words[1:] == ["waits"]
        in_session = bool(named) and words[1:] in ([], ["waits"]) and self.session != MAIN
        self.preloaded = words == ["preloaded"]
        self.runs = lang == "sql" and (not words or in_session or (self.preloaded and Block.preloaded_server))


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


def psql_command(args, dbname, application):
    env = dict(os.environ, LC_ALL="C", PGCLIENTENCODING="UTF8", PGAPPNAME=application,
               PGOPTIONS="-c lc_messages=C -c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres")
    return [args.psql, "-X", "-q", "-h", args.host, "-p", str(args.port), "-U", args.user, "-d", dbname], env


def psql(args, command, dbname, application="docs.py"):
    """A short connection: runs COMMAND (psql arguments) and returns the finished process."""
    cmd, env = psql_command(args, dbname, application)
    return subprocess.run(cmd + command, env=env, text=True, check=False, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Failed(Exception):
    """A page cannot go on: a block hung, a session ended, a wait did not show."""


class Session:
    """One psql connection of a page, fed block by block."""

    def __init__(self, args, dbname, name):
        self.name = name
        cmd, env = psql_command(args, dbname, name)
        self.process = subprocess.Popen(cmd, env=env, text=True, bufsize=1, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = queue.Queue()
        self.buffer = []  # lines read and not yet taken
        self.pending = None  # the `waits` block whose output is not read yet
        self.ended = False  # the process closed its output
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, block):
        self.process.stdin.write("\n".join(block.lines) + f"\n\\echo {MARKER}\n")
        self.process.stdin.flush()

    def _pull(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is None:
            self.ended = True
        else:
            self.buffer.append(line)
        return True

    def finished(self):
        """Whether the block sent last has printed its marker (without waiting)."""
        while not self.ended and self._pull(0):
            pass
        return MARKER in self.buffer

    def output(self, timeout):
        """The output of the block sent last, up to its marker; None if it did not finish."""
        deadline = time.monotonic() + timeout
        while MARKER not in self.buffer:
            remaining = deadline - time.monotonic()
            if self.ended or remaining <= 0 or not self._pull(remaining):
                return None
        at = self.buffer.index(MARKER)
        taken, self.buffer = self.buffer[:at], self.buffer[at + 1:]
        return taken

    def rest(self, timeout):
        """After the input was closed: everything it prints until it exits; None if it does not."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._pull(remaining):
                return None
        taken, self.buffer = self.buffer, []
        return taken


def await_lock_wait(args, db, session, block, name):
    """Polls pg_stat_activity until SESSION waits on a lock; fails if the block finishes first."""
    query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
             f" AND application_name = '{session.name}' AND wait_event_type = 'Lock'")
    deadline = time.monotonic() + args.wait_timeout
    while True:
        if session.finished():
            raise Failed(f"{name}:{block.start}: the block of session {session.name} is tagged `waits` but finished"
                         " without waiting for a lock:\n" + "\n".join(session.buffer))
        seen = psql(args, ["-At", "-c", query], db)
        if seen.returncode != 0:
            raise Failed(f"{name}:{block.start}: could not ask pg_stat_activity:\n{seen.stdout}")
        if seen.stdout.strip() not in ("", "0"):
            return
        if time.monotonic() > deadline:
            state = psql(args, ["-c", "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity"
                                f" WHERE application_name = '{session.name}'"], db)
            raise Failed(f"{name}:{block.start}: session {session.name} did not wait for a lock within"
                         f" {args.wait_timeout} s (pg_stat_activity):\n{state.stdout}")
        time.sleep(0.05)


def run_page(args, page):
    text = page.read_text()
    name = os.path.relpath(page, REPO)
    parsed = parse(text)
    blocks = [block for block in parsed if block.runs]
    misplaced = [block for block in parsed if block.lang == "sql" and not block.runs and not block.preloaded
                 and re.search(r"(^|\s)(session=|waits\b)", block.flags)]
    misplaced += [block for block in blocks if block.session and block.output]
    if misplaced:
        for block in misplaced:
            print(f"{name}:{block.start}: a text block after a session block, or `waits` without"
                  f" `session=NAME`, or another word, or the name {MAIN}: see the convention in tests/docs.py")
        return False
    if not blocks:
        print(f"{name}: no SQL examples")
        return True
    db = "docs_" + re.sub(r"[^a-z0-9]+", "_", page.stem.lower())
    setup = psql(args, ["-v", "ON_ERROR_STOP=1", "-c", f"DROP DATABASE IF EXISTS {db}",
                        "-c", f"CREATE DATABASE {db}"], "postgres")
    if setup.returncode != 0:
        print(f"{name}: could not create database {db}:\n{setup.stdout}")
        return False
    sessions = {MAIN: Session(args, db, MAIN)}
    ok, compared, replacements = True, 0, []

    def fail_on_errors(block, actual, what):
        nonlocal ok
        failures = [line for line in actual if FAILURE.match(line)]
        if failures:
            print(f"{name}:{block.start + 1}: {what} failed:")
            print("\n".join(actual))
            ok = False

    def collect(session):
        """Waits for the blocked statement of SESSION to finish and checks what it printed."""
        block, session.pending = session.pending, None
        actual = session.output(args.timeout)
        if actual is None:
            raise Failed(f"{name}:{block.start}: the waiting block of session {session.name} did not finish within"
                         f" {args.timeout} s (release its lock in an earlier block):\n" + "\n".join(session.buffer))
        fail_on_errors(block, actual, f"the block of session {session.name}")

    try:
        for block in blocks:
            session_name = block.session or MAIN
            if session_name not in sessions:
                sessions[session_name] = Session(args, db, session_name)
            session = sessions[session_name]
            if session.pending:
                collect(session)
            session.send(block)
            if block.waits:
                session.pending = block
                await_lock_wait(args, db, session, block, name)
                continue
            actual = session.output(args.timeout)
            if actual is None:
                session.pending = block  # its output comes at the end, if at all
                raise Failed(f"{name}:{block.start}: the block did not finish within {args.timeout} s (if it waits for"
                             " a lock on purpose, run it as ```sql session=NAME waits):\n" + "\n".join(session.buffer))
            actual = normalized(actual)
            if block.session or not block.output:
                fail_on_errors(block, actual, f"the block of session {block.session}" if block.session
                               else "the setup block (no output block follows it)")
                continue
            compared += 1
            replacements.append((block.output, actual))
            expected = normalized(block.output.lines)
            if actual != expected:
                where = block.output.start + 1
                print(f"{name}:{where}: the SQL block at line {block.start + 1} printed something else than its output block:")
                sys.stdout.writelines(difflib.unified_diff(
                    [line + "\n" for line in expected], [line + "\n" for line in actual],
                    f"{name} (line {where})", "psql"))
                ok = False
    except Failed as failure:
        print(failure)
        ok = False
    ok = close_sessions(args, db, name, sessions) and ok
    if args.accept and replacements:
        lines = text.split("\n")
        for output, actual in sorted(replacements, key=lambda r: -r[0].start):
            lines[output.start:output.end - 1] = actual
        page.write_text("\n".join(lines))
    print(f"{name}: {len(blocks)} SQL blocks run, {compared} outputs compared: {'ok' if ok else 'FAILED'}")
    return ok


def close_sessions(args, db, name, sessions):
    """Closes every connection of the page; terminates those still running after --timeout."""
    ok = True
    for session in sessions.values():
        try:
            session.process.stdin.close()
        except OSError:
            pass
    for session in sessions.values():
        rest = session.rest(args.timeout)
        if rest is None:
            psql(args, ["-c", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
                        f" current_database() AND application_name = '{session.name}'"], db)
            print(f"{name}: session {session.name} still ran {args.timeout} s after its input was closed;"
                  " terminated:\n" + "\n".join(session.buffer))
            session.rest(args.timeout)
            ok = False
        elif session.pending:
            # A waiting block released at the end (its holder's transaction rolled back).
            printed = [line for line in rest if line != MARKER]
            if any(FAILURE.match(line) for line in printed):
                print(f"{name}:{session.pending.start + 1}: the block of session {session.name} failed:")
                print("\n".join(printed))
                ok = False
        elif [line for line in rest if line.strip()]:
            print(f"{name}: session {session.name} printed after its last block:\n" + "\n".join(rest))
            ok = False
        code = session.process.wait()
        if code != 0 and rest is not None:
            print(f"{name}: psql of session {session.name} exited with {code}")
            ok = False
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("PGHOST", "/tmp"))
    parser.add_argument("--port", default=os.environ.get("PGPORT", "5432"))
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--psql", default="psql")
    parser.add_argument("--accept", action="store_true", help="write the server's output into the pages")
    parser.add_argument("--timeout", type=float, default=60,
                        help="seconds a block may take (and a session to end at the end of its page)")
    parser.add_argument("--wait-timeout", type=float, default=30,
                        help="seconds for a `waits` block's session to show a lock wait in pg_stat_activity")
    parser.add_argument("pages", nargs="*", type=Path)
    args = parser.parse_args()
    pages = args.pages or [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    preload = psql(args, ["-At", "-c", "SHOW shared_preload_libraries"], "postgres")
    Block.preloaded_server = "pg_rowversion" in preload.stdout
    results = [run_page(args, page.resolve()) for page in pages]
    linked = pages if args.pages else pages + [REPO / name for name in LINKED_ONLY]
    for page in linked:
        for message in check_links(page.resolve()):
            print(f"{os.path.relpath(page.resolve(), REPO)}: broken link {message}")
            results.append(False)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
