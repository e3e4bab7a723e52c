#!/usr/bin/env bash
# Sequelize and TypeORM against the server in PGHOST (socket directory), PGPORT, PGUSER and
# PGDATABASE (an existing database; the tests create the extension and their own tables).
# Installs the pinned packages of package-lock.json with `npm ci` when node_modules is missing
# or was installed from another lock file or Node major; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

# shellcheck source=tests/orms/npm_suite.sh
source "$here/../npm_suite.sh"
npm_suite "Sequelize, TypeORM, pg"

exec timeout 600 node --test --test-concurrency=1 --test-force-exit --test-timeout=60000 \
    --test-reporter=spec test/sequelize.test.js test/typeorm.test.js
