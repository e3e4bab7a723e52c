# shellcheck shell=bash
# Sourced by the Node suites' run.sh (tests/orms/node, tests/orms/postgraphile): checks that
# PGHOST, PGPORT, PGUSER and PGDATABASE name the server to test against and that Node is
# recent enough, then installs the packages pinned in the suite's package-lock.json with
# `npm ci` when node_modules is missing or was installed from another lock file or Node major.
# Usage: npm_suite "WHAT package-lock.json PINS" (from the suite's directory).
npm_suite() {
    local name node_major stamp=node_modules/.pg-rowversion-installed want
    for name in PGHOST PGPORT PGUSER PGDATABASE; do
        [ -n "${!name:-}" ] || { echo "run.sh: $name must name the server to test against" >&2; exit 2; }
    done
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$node_major" -ge 20 ] || { echo "run.sh: Node >= 20.19 is needed, found $(node --version)" >&2; exit 2; }
    want="$(sha256sum package-lock.json | cut -d' ' -f1) node$node_major"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "==> npm ci ($1 as pinned in package-lock.json)"
        npm ci --no-audit --no-fund --loglevel=error
        echo "$want" > "$stamp"
    fi
}
