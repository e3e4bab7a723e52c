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

for name in PGHOST PGPORT PGUSER PGDATABASE; do
    [ -n "${!name:-}" ] || { echo "run.sh: $name must name the server to test against" >&2; exit 2; }
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "run.sh: Node >= 20.19 is needed, found $(node --version)" >&2; exit 2; }

stamp=node_modules/.pg-rowversion-installed
want="$(sha256sum package-lock.json | cut -d' ' -f1) node$node_major"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> npm ci (PostGraphile 4, pg as pinned in package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
fi

# timeout signals its whole process group, so the PostGraphile process the tests started goes too.
exec timeout 300 node --test --test-concurrency=1 --test-force-exit --test-timeout=60000 \
    --test-reporter=spec test/postgraphile.test.js
