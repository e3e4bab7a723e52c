#!/usr/bin/env bash
# Django and django-concurrency against the server in PGHOST/PGPORT/PGUSER/PGDATABASE, in a
# venv of pinned packages from PyPI (created the first time, under target/).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=$here/../../../target/orms-django-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
cd "$here" && exec "$venv/bin/python" -m pytest -q -p no:cacheprovider .
