#!/usr/bin/env bash
# ActiveRecord (Rails' lock_version) against a running server with pg_rowversion installed.
# Installs Debian 12's ruby, ActiveRecord, ruby-pg and minitest the first time, then runs
# test_activerecord.rb against PGHOST (socket directory) / PGPORT / PGUSER / PGDATABASE.
# Idempotent; exits non-zero when a package cannot be installed or a test fails.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Debian 12 (bookworm): ruby 3.1, ruby-activerecord 6.1.7.10, ruby-pg 1.4.5, ruby-minitest 5.17.0.
PACKAGES=(ruby ruby-activerecord ruby-pg ruby-minitest)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]} (Debian packages)"
    # Another job on this machine may hold the dpkg lock: wait for it rather than fail.
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
        install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

: "${PGHOST:?PGHOST, the socket directory of the server, must be set}"
: "${PGPORT:?PGPORT must be set}"
: "${PGDATABASE:?PGDATABASE (an existing database) must be set}"
export PGUSER=${PGUSER:-postgres}

echo "==> ActiveRecord $(ruby -e 'require "active_record"; print ActiveRecord.version') on $(ruby -e 'print RUBY_VERSION'), pg $(ruby -e 'require "pg"; print PG::VERSION')"
cd "$HERE"
exec ruby -W0 test_activerecord.rb "$@"
