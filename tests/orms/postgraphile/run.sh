#!/usr/bin/env bash
# PostGraphile v4 (its CLI, a GraphQL HTTP server on 127.0.0.1) in front of tables versioned by
# pg_rowversion, against the server in PGHOST (socket directory), PGPORT, PGUSER and PGDATABASE
# (an existing database; the tests create the extension and their own tables, then start
# PostGraphile on a free port and stop it at the end). Installs the pinned packages of
# package-lock.json with `npm ci` when node_modules is missing or was installed from another
# lock file or Node major; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

# shellcheck source=tests/orms/npm_suite.sh
source "$here/../npm_suite.sh"
npm_suite "PostGraphile 4, pg"

# timeout signals its whole process group, so the PostGraphile process the tests started goes too.
exec timeout 300 node --test --test-concurrency=1 --test-force-exit --test-timeout=60000 \
    --test-reporter=spec test/postgraphile.test.js
