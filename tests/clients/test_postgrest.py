"""pg_rowversion.error_mapping behind PostgREST, without PostgREST.

PostgREST cannot be installed where this suite runs, so `PostgrestEmulator` below drives the
server exactly as PostgREST drives it for one PATCH request, and turns the outcome into the
HTTP status, JSON body and headers PostgREST would send. Every rule it emulates cites the
PostgREST (or hasql-transaction) source file and tag it comes from; the sources were read from
github:PostgREST/postgrest at the tags v12.2.12, v14.17 and v16.x and from
github:nikita-volkov/hasql-transaction at 1.0.1.4 and 1.1.0.1 (and github:nikita-volkov/hasql at
1.8.1.4 for its prepared-statement registry).

- Login as an `authenticator` (LOGIN NOINHERIT) that is granted an `anon` role holding the
  table privileges; the mapping is set the way users set it, `ALTER ROLE authenticator SET
  pg_rowversion.error_mapping = ...`, before the connection logs in.
- At "startup" the emulator reads the impersonated roles' settings with PostgREST's own query
  (that is how `ALTER ROLE anon SET pg_rowversion.fast_path = off` reaches each request) and
  the column types of the tables (its schema cache).
- Per request, the whole transaction of hasql-transaction: `BEGIN ISOLATION LEVEL READ
  COMMITTED READ WRITE`, PostgREST's one `select set_config(...)` statement (role settings,
  role, claims, method, path, lower-cased request headers as JSON, cookies), an optional
  db-pre-request function, the PATCH statement PostgREST builds (a data-modifying WITH that
  reads `response.headers` in the same statement), with the body as a `json` parameter and the
  filter value as an `unknown` one, then COMMIT, or ABORT on an error. Every statement is a
  named prepared statement, parsed once per connection and reused, as hasql does (so a PATCH
  sent often runs under a generic plan, as it does behind PostgREST).
- The retry loop of hasql-transaction before PostgREST v16: the whole transaction is run again
  while it fails with 40001 (and, from hasql-transaction 1.1, 40P01), without limit; here it
  stops after RETRY_CAP attempts and the response says `retried_out`, so that a test ends.

The tests then assert what an HTTP client of PostgREST would see, through the trigger and
through the planner fast path (`pg_rowversion.fast_path` set on the impersonated role).
"""

import http
import json
import os
import re
import secrets
import time
import threading
from dataclasses import dataclass, field

import psycopg
import pytest
from psycopg import pq

from conftest import is_waiting_for_lock, wait_until

RETRY_CAP = 20
RETRIED_CODES = {
    # hasql-transaction `Hasql/Transaction/Private/Sessions.hs` `handleTransactionError`:
    # 1.0.1.x retries "40001" only (PostgREST v12.x: cabal `hasql-transaction >= 1.0.1 && < 1.1`);
    # 1.1.0.1 retries "40001" and "40P01" (PostgREST v14.x: nix pins hasql-transaction_1_1_0_1);
    # PostgREST v16 runs the request with `SQL.transactionNoRetry` (src/library/PostgREST/MainTx.hs,
    # PR #4222): no retry at all.
    "v12.2.12": {"40001"},
    "v14.17": {"40001", "40P01"},
    "v16": set(),
}
VERSIONS = tuple(RETRIED_CODES)


# --- hasql's side of the wire ------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    oid: int
    text: str


def unknown(value):
    """A bind parameter declared `unknown` (OID 705), as PostgREST's `unknownEncoder`
    (`HE.unknown`) declares every set_config value and filter value
    (src/PostgREST/Query/SqlFragment.hs @v14.17, `unknownEncoder`, `setConfigLocal`, `pgFmtFilter`)."""
    return Param(705, value)


def json_body(text):
    """The request body as it came, as a `json` parameter (OID 114; `HE.jsonLazyBytes` in
    `fromJsonBodyF`, src/PostgREST/Query/SqlFragment.hs @v14.17)."""
    return Param(114, text)


class Session:
    """hasql's statement execution on one libpq connection (hasql `library/Hasql/IO.hs`
    `getPreparedStatementKey` @1.8.1.4): a prepared statement is parsed once per connection
    under a name kept in a registry keyed by (SQL text, parameter OIDs), and reused from then on,
    across failed executions and aborted transactions (the key is registered as soon as the Parse
    succeeds). psycopg's own statement cache is not used: it deallocates everything after a
    ROLLBACK, which hasql does not do. Rows come back as text."""

    def __init__(self, conn):
        self.pgconn = conn.pgconn
        self.registry = {}

    def statement(self, sql, params=(), prepared=True):
        oids = [p.oid for p in params]
        values = [p.text.encode() for p in params]
        if prepared:
            key = (sql, tuple(oids))
            name = self.registry.get(key)
            if name is None:
                name = f"pgrst_{len(self.registry) + 1}".encode()
                self._check(self.pgconn.prepare(name, sql.encode(), oids))
                self.registry[key] = name
            result = self._check(self.pgconn.exec_prepared(name, values))
        else:
            result = self._check(self.pgconn.exec_params(sql.encode(), values, oids))
        return [tuple(None if (v := result.get_value(r, c)) is None else v.decode()
                      for c in range(result.nfields)) for r in range(result.ntuples)]

    @staticmethod
    def _check(result):
        if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            raise psycopg.errors.error_from_result(result)
        return result


def ident(name):
    """`pgFmtIdent` / `escapeIdent` (src/PostgREST/Query/SqlFragment.hs @v14.17)."""
    return '"' + name.replace('"', '""') + '"'


def aeson(value):
    """`JSON.encode` of aeson: compact, non-ASCII as UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- PostgREST's mapping of a Postgres error to an HTTP response ---------------------------

def pg_error_status(version, authed, code, message, detail):
    """`pgErrorStatus` (src/PostgREST/Error.hs @v12.2.12 and @v14.17; the same table at
    src/library/PostgREST/Error.hs @v16.2) for a `ServerError c m d`. Returns (status, reason)."""
    def std(n):
        return n, http.HTTPStatus(n).phrase

    if code.startswith("08"):
        return std(503)
    if code.startswith("09"):
        return std(500)
    if code[:2] in ("0L", "0P"):
        return std(403)
    if code in ("23503", "23505"):
        return std(409)
    if code == "25006":
        return std(405)
    if code == "21000":
        return std(400 if message.endswith("requires a WHERE clause") else 500)
    if code == "22023" and version != "v12.2.12":  # this row is new in v13 (PostgREST#3601)
        return std(401 if message.startswith("role") and message.endswith("does not exist") else 400)
    if code[:2] in ("25", "2D", "38", "39", "3B", "40"):  # '4':'0':_ -> 500: 40001 and 40P01 too
        return std(500)
    if code.startswith("28"):
        return std(403)
    if code == "53400":
        return std(500)
    if code.startswith("53"):
        return std(503)
    if code[:2] in ("54", "55"):
        return std(500)
    if code == "57P01":
        return std(503)
    if code[:2] in ("57", "58", "F0", "HV"):
        return std(500)
    if code == "P0001":
        return std(400)
    if code[:2] in ("P0", "XX"):
        return std(500)
    if code == "42883":
        return std(406 if message.startswith("function xmlagg(") else 404)
    if code == "42P01":
        return std(404)
    if code == "42P17":
        return std(500)
    if code == "42501":
        return std(403 if authed else 401)
    if code.startswith("PT"):
        # 'P':'T':n -> fromMaybe status500 (mkStatus <$> readMaybe n <*> pure m): the reason
        # phrase is the error's message.
        n = code[2:]
        return (int(n), message) if n.isdigit() else std(500)
    if code == "PGRST":
        parsed = parse_raise_pgrst(message, detail)
        if isinstance(parsed, PgrstParseError):
            return std(500)
        _, details = parsed
        status = details["status"]
        text = details.get("status_text")
        if text is None:  # toEnum: the standard phrase
            try:
                return std(status)
            except ValueError:
                return status, ""
        return status, text
    return std(400)


@dataclass
class PgrstParseError:
    """PGRST121 (`PGRSTParseError`, src/PostgREST/Error.hs @v14.17; the same texts since v12.2.0)."""
    details: str
    hint: str

    def body(self):
        return {"code": "PGRST121", "message": "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
                "details": self.details, "hint": self.hint}


MESSAGE_HINT = "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', 'hint'."
DETAIL_HINT = "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: 'status_text'."


def parse_raise_pgrst(message, detail):
    """`parseRaisePGRST` with the `FromJSON` instances of `PgRaiseErrMessage` (`code`, `message`
    required; `details`, `hint` optional strings) and `PgRaiseErrDetails` (`status` an Int,
    `headers` a required map of strings, `status_text` optional) (src/PostgREST/Error.hs @v14.17,
    identical in v12.2.12)."""
    def is_text(value):
        return isinstance(value, str)

    def optional_text(obj, key):
        return obj.get(key) is None or is_text(obj[key])

    try:
        m = json.loads(message)
    except ValueError:
        m = None
    if not (isinstance(m, dict) and is_text(m.get("code")) and is_text(m.get("message"))
            and optional_text(m, "details") and optional_text(m, "hint")):
        return PgrstParseError(f"Invalid JSON value for MESSAGE: '{message}'", MESSAGE_HINT)
    if detail is None:
        return PgrstParseError("DETAIL is missing in the RAISE statement", DETAIL_HINT)
    try:
        d = json.loads(detail)
    except ValueError:
        d = None
    if not (isinstance(d, dict) and isinstance(d.get("status"), int) and not isinstance(d.get("status"), bool)
            and optional_text(d, "status_text") and isinstance(d.get("headers"), dict)
            and all(is_text(v) for v in d["headers"].values())):
        return PgrstParseError(f"Invalid JSON value for DETAIL: '{detail}'", DETAIL_HINT)
    return m, d


class GucHeadersError(Exception):
    """PGRST111 (`GucHeadersError`, src/PostgREST/Error.hs @v14.17)."""


def decode_guc_headers(raw):
    """`decodeGucHeaders` (src/PostgREST/Response.hs @v14.17) with `GucHeader`'s `FromJSON`
    (src/PostgREST/Response/GucHeader.hs): NULL is no headers; otherwise a JSON array whose every
    element is an object with exactly one key and a string value; anything else is PGRST111."""
    if raw is None:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        raise GucHeadersError(raw)
    if not isinstance(value, list):
        raise GucHeadersError(raw)
    headers = []
    for element in value:
        if not (isinstance(element, dict) and len(element) == 1):
            raise GucHeadersError(raw)
        (name, text), = element.items()
        if not isinstance(text, str):
            raise GucHeadersError(raw)
        headers.append((name, text))
    return headers


class Headers(dict):
    """Response headers with case-insensitive names (`CI.mk` in PostgREST)."""

    def __setitem__(self, name, value):
        super().__setitem__(name.lower(), value)

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def __contains__(self, name):
        return super().__contains__(name.lower())

    def get(self, name, default=None):
        return super().get(name.lower(), default)


@dataclass
class Response:
    status: int | None  # None: retried out, PostgREST would never have answered
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: object = None
    attempts: int = 0
    retried_out: bool = False
    sqlstates: list = field(default_factory=list)  # the SQLSTATE of every failed attempt
    guc_headers: str | None = None  # response.headers as the statement returned it

    def __repr__(self):
        return (f"Response({self.status} {self.reason!r}, headers={dict(self.headers)}, body={self.body!r}, "
                f"attempts={self.attempts}, retried_out={self.retried_out}, sqlstates={self.sqlstates})")


class PostgrestEmulator:
    """One PostgREST pool connection, logged in as the authenticator, serving anonymous requests
    as `anon`."""

    def __init__(self, dsn, authenticator, anon, version="v14.17", pre_request=None):
        assert version in VERSIONS
        self.version = version
        self.anon = anon
        self.pre_request = pre_request
        self.conn = connect(dsn, user=authenticator, autocommit=True)
        self.session = Session(self.conn)
        self.role_settings = self._query_role_settings()
        self.columns = {}

    def close(self):
        self.conn.close()

    def _query_role_settings(self):
        """`queryRoleSettings` (src/PostgREST/Config/Database.hs @v14.17; @v12.2.12 the member
        test is `current_user::regrole::oid` and the values are lower-cased), run at startup and
        on config reload in a read-only transaction. Only roles the authenticator is a direct
        member of, only settings that pg_settings lists with context 'user' (or that it may SET,
        Postgres 15 and later)."""
        v12 = self.version == "v12.2.12"
        member = "current_user::regrole::oid" if v12 else "quote_ident(current_user)::regrole::oid"
        value = "substr(setting, strpos(setting, '=') + 1)"
        value = f"lower({value})" if v12 else value
        sql = f"""with
role_setting as (
  select r.rolname, unnest(r.rolconfig) as setting
  from pg_auth_members m
  join pg_roles r on r.oid = m.roleid
  where member = {member}
),
kv_settings AS (
  SELECT
    rolname,
    substr(setting, 1, strpos(setting, '=') - 1) as key,
    {value} as value
  FROM role_setting
),
iso_setting AS (
  SELECT rolname, value
  FROM kv_settings
  WHERE key = 'default_transaction_isolation'
)
select
  kv.rolname,
  i.value as iso_lvl,
  coalesce(array_agg(row(kv.key, kv.value)) filter (where key <> 'default_transaction_isolation'), '{{}}') as role_settings
from kv_settings kv
join pg_settings ps on ps.name = kv.key and (ps.context = 'user' or has_parameter_privilege({member}, ps.name, 'set'))
left join iso_setting i on i.rolname = kv.rolname
group by kv.rolname, i.value;"""
        with self.conn.transaction():  # psycopg decodes the array of (key, value) records
            rows = self.conn.execute(sql).fetchall()
        settings = {}
        for rolname, iso_lvl, pairs in rows:
            assert iso_lvl is None, "these tests run under READ COMMITTED"
            settings[rolname] = [tuple(pair) for pair in pairs]
        return settings

    def _column_types(self, table):
        """The schema cache's `nominal_data_type`, format_type(a.atttypid, a.atttypmod)
        (src/PostgREST/SchemaCache.hs @v14.17), used as the column types of json_to_record."""
        if table not in self.columns:
            rows = self.session.statement(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                [unknown(f"public.{ident(table)}")], prepared=False)
            self.columns[table] = dict(rows)
        return self.columns[table]

    # -- the statements of one request --

    def settings_statement(self, path, headers):
        """`txVarQuery` (src/PostgREST/Query/PreQuery.hs @v14.17; `setPgLocals` in
        src/PostgREST/Query.hs @v12.2.12): one `select set_config(...)` per setting, every value
        an `unknown` parameter, role settings (with parameterized names) before the role, then
        the claims, method, path, headers (a JSON object with lower-cased names, one value per
        name, cookies left out) and cookies."""
        items, params = [], []

        def constant(name, value):
            params.append(unknown(value))
            items.append(f"set_config('{name}', ${len(params)}, true)")

        def dynamic(name, value):
            params.append(unknown(name))
            params.append(unknown(value))
            items.append(f"set_config(${len(params) - 1}, ${len(params)}, true)")

        constant("search_path", '"public", "public"')  # escapeIdentList (db-schemas : db-extra-search-path)
        for name, value in self.role_settings.get(self.anon, []):
            dynamic(name, value)
        constant("role", self.anon)
        constant("request.jwt.claims", aeson({"role": self.anon}))
        constant("request.method", "PATCH")
        constant("request.path", path)
        lowered = {name.lower(): value for name, value in headers.items() if name.lower() != "cookie"}
        constant("request.headers", aeson(lowered))
        constant("request.cookies", aeson({}))
        return "select " + ", ".join(items), params

    def patch_statement(self, table, filters, body_columns, representation):
        """`mainWrite` (src/PostgREST/Query/Statements.hs @v14.17; `prepareWrite` @v12.2.12) around
        `mutatePlanToQuery (Update ...)` (src/PostgREST/Query/QueryBuilder.hs) and `fromJsonBodyF`
        (src/PostgREST/Query/SqlFragment.hs): $1 the body, then one `unknown` parameter per filter.
        The SET columns are the body's keys in `S.toList` (sorted) order (src/PostgREST/Plan.hs)."""
        qi = f'"public".{ident(table)}'
        types = self._column_types(table)
        columns = sorted(body_columns)
        set_list = ", ".join(f'{ident(c)} = "pgrst_body".{ident(c)}' for c in columns)
        parsed = ", ".join(ident(c) for c in columns)
        typed = ", ".join(f"{ident(c)} {types[c]}" for c in columns)
        params_after_body = []
        where = ""
        if filters:
            terms = []
            for column, operation in filters.items():
                operator, _, value = operation.partition(".")
                assert operator == "eq", "only eq. filters are emulated"
                params_after_body.append(unknown(value))
                terms.append(f" {qi}.{ident(column)} = ${1 + len(params_after_body)}")
            where = " WHERE " + " AND ".join(terms)
        returning = f"RETURNING {qi}.*" if representation else "RETURNING 1"
        mutate = (f"UPDATE {qi} SET {set_list} FROM (SELECT $1 AS json_data) pgrst_payload, "
                  f"LATERAL (SELECT {parsed} FROM json_to_record(pgrst_payload.json_data) AS _({typed}) ) pgrst_body "
                  f"{where} {returning}")
        body = "coalesce(json_agg(_postgrest_t), '[]')" if representation else "''::text"
        select = f'SELECT {ident(table)}.* FROM "pgrst_source" AS {ident(table)}   ' if representation \
            else "SELECT * FROM pgrst_source"
        statement = (f"WITH pgrst_source AS ({mutate}) SELECT '' AS total_result_set, "
                     f"pg_catalog.count(_postgrest_t) AS page_total, array[]::text[] AS header, {body} AS body, "
                     f"nullif(current_setting('response.headers', true), '') AS response_headers, "
                     f"nullif(current_setting('response.status', true), '') AS response_status, "
                     f"'' AS response_inserted FROM ({select}) _postgrest_t")
        return statement, params_after_body

    # -- one request --

    def patch(self, table, filters, body, headers=None):
        """PATCH /<table>?<filters> with a JSON body (a dict, or the raw text)."""
        raw_body = body if isinstance(body, str) else aeson(body)
        body_columns = json.loads(raw_body).keys()
        request_headers = {"Host": "localhost:3000", "User-Agent": "curl/8.5.0", "Accept": "*/*",
                           "Content-Type": "application/json", "Content-Length": str(len(raw_body.encode()))}
        request_headers.update(headers or {})
        prefer = {p.strip() for v in [request_headers.get("Prefer", "")] for p in v.split(",") if p.strip()}
        representation = "return=representation" in prefer
        path = f"/{table}"
        settings_sql, settings_params = self.settings_statement(path, request_headers)
        main_sql, filter_params = self.patch_statement(table, filters, body_columns, representation)
        main_params = [json_body(raw_body)] + filter_params

        response = Response(status=None)
        retried = RETRIED_CODES[self.version]
        while True:
            response.attempts += 1
            outcome = self._attempt(settings_sql, settings_params, main_sql, main_params)
            if isinstance(outcome, psycopg.Error):
                code = outcome.diag.sqlstate
                response.sqlstates.append(code)
                if code in retried:
                    # `inRetryingTransaction`: `fix $ \retry -> ... Nothing -> retry`, no limit.
                    if response.attempts >= RETRY_CAP:
                        response.retried_out = True
                        return response
                    continue
                return self._error_response(response, outcome)
            return self._success_response(response, outcome, representation)

    def _attempt(self, settings_sql, settings_params, main_sql, main_params):
        """`tryTransaction` (hasql-transaction `Hasql/Transaction/Private/Sessions.hs` @1.1.0.1,
        the same shape @1.0.1.4) around PostgREST's `mainTx` body (src/PostgREST/MainTx.hs
        @v14.17): BEGIN (`Private/SQL.hs` `beginTransaction`), the settings, db-pre-request, the
        main statement, all prepared (db-prepared-statements defaults to true); COMMIT, or ABORT
        when the body fails."""
        session = self.session
        session.statement("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE")
        try:
            session.statement(settings_sql, settings_params)
            if self.pre_request:
                session.statement(f'select "public".{ident(self.pre_request)}()')
            row, = session.statement(main_sql, main_params)
        except psycopg.Error as error:
            if error.diag.sqlstate is None:
                raise
            session.statement("ABORT")
            return error
        try:
            session.statement("COMMIT")
        except psycopg.Error as error:
            if error.diag.sqlstate is None:
                raise
            return error
        return row

    def _error_response(self, response, error):
        """`errorResponseFor` with `PgError`'s status, headers and body (src/PostgREST/Error.hs
        @v14.17 and @v12.2.12): Content-Type and Content-Length, `Proxy-Status` from v13 on, the
        DETAIL's headers for a PGRST error; the body {code, message, details, hint}, from the
        MESSAGE JSON for PGRST (the Postgres hint is then ignored), else from the error's fields.
        The request is anonymous (not `authed`)."""
        diag = error.diag
        code, message, detail, hint = diag.sqlstate, diag.message_primary, diag.message_detail, diag.message_hint
        response.status, response.reason = pg_error_status(self.version, False, code, message, detail)
        extra_headers = []
        if code == "PGRST":
            parsed = parse_raise_pgrst(message, detail)
            if isinstance(parsed, PgrstParseError):
                body = parsed.body()
            else:
                m, d = parsed
                body = {"code": m["code"], "message": m["message"], "details": m.get("details"),
                        "hint": m.get("hint")}
                extra_headers = list(d["headers"].items())
        else:
            body = {"code": code, "message": message, "details": detail, "hint": hint}
        return self._error_body(response, response.status, response.reason, body, extra_headers)

    def _error_body(self, response, status, reason, body, extra_headers):
        response.status, response.reason, response.body = status, reason, body
        response.headers = Headers()
        payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        response.headers["Content-Type"] = "application/json; charset=utf-8"
        response.headers["Content-Length"] = str(len(payload.encode()))
        if self.version != "v12.2.12":
            response.headers["Proxy-Status"] = f"PostgREST; error={body['code']}"
        if response.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        for name, value in extra_headers:
            response.headers[name] = value
        return response

    def _api_error(self, response, code, message):
        """An `ApiRequestError` response (src/PostgREST/Error.hs @v14.17): 500 for PGRST111 and
        PGRST112, details and hint null."""
        return self._error_body(response, 500, "Internal Server Error",
                                {"code": code, "message": message, "details": None, "hint": None}, [])

    def _success_response(self, response, row, representation):
        """`actionResponse` for `MutationUpdate` (src/PostgREST/Response.hs @v14.17): 204, or
        200 with the body for return=representation; Content-Range `0-<n-1>/*` (`*/*` for no
        row); then `overrideStatusHeaders`: response.status replaces the status, response.headers
        (decoded by `decodeGucHeaders`, else 500 PGRST111) replaces same-named headers."""
        _total, page_total, _header, body, guc_headers, guc_status, _inserted = row
        page_total = int(page_total)
        response.guc_headers = guc_headers
        headers = Headers()
        headers["Content-Range"] = f"0-{page_total - 1}/*" if page_total > 0 else "*/*"
        if representation:
            headers["Content-Length"] = str(len(body.encode()))
            headers["Content-Type"] = "application/json; charset=utf-8"
            status, reason, response.body = 200, "OK", json.loads(body)
        else:
            status, reason = 204, "No Content"
        # overrideStatusHeaders: decodeGucStatus first (`decimal`, else PGRST112), then
        # decodeGucHeaders (else PGRST111).
        if guc_status is not None:
            match = re.match(r"\d+", guc_status)
            if match is None:
                return self._api_error(response, "PGRST112", "response.status guc must be a valid status code")
            status = int(match.group())
            reason = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
        try:
            decoded = decode_guc_headers(guc_headers)
        except GucHeadersError:
            return self._api_error(response, "PGRST111", "response.headers guc must be a JSON array composed "
                                   "of objects with a single key and a string value")
        for name, value in decoded:
            headers[name] = value
        response.status, response.reason, response.headers = status, reason, headers
        return response

    def explain_patch(self, table, filters, body, headers=None):
        """EXPLAIN VERBOSE of the PATCH's statement, planned under the request's settings (in a
        transaction that is rolled back): shows which path the planner took."""
        raw_body = aeson(body)
        main_sql, filter_params = self.patch_statement(table, filters, json.loads(raw_body).keys(), False)
        return self.explain(f"/{table}", main_sql, [json_body(raw_body)] + filter_params)

    def explain(self, path, sql, params=()):
        """EXPLAIN VERBOSE of `sql` in a request's transaction (role and settings applied),
        rolled back."""
        settings_sql, settings_params = self.settings_statement(path, {})
        self.session.statement("BEGIN", prepared=False)
        try:
            self.session.statement(settings_sql, settings_params, prepared=False)
            plan = self.session.statement("EXPLAIN (VERBOSE, COSTS OFF) " + sql, params, prepared=False)
        finally:
            self.session.statement("ROLLBACK", prepared=False)
        return "\n".join(line for line, in plan)


def connect(dsn, **kwargs):
    """psycopg.connect, waiting out a restart of the test server by someone else."""
    for attempt in range(4):
        try:
            return psycopg.connect(dsn, **kwargs)
        except psycopg.OperationalError:
            if attempt == 3:
                raise
            time.sleep(20)


# --- Fixtures -------------------------------------------------------------------------------

PATHS = {"trigger": "off", "fast path": "on"}
RUN = f"{os.getpid()}_{secrets.token_hex(3)}"


@pytest.fixture
def roles(admin):
    """`authenticator` (LOGIN NOINHERIT) granted `anon`, as Supabase creates them
    (00-initial-schema.sql), with names unique to this run: roles are cluster-wide."""
    authenticator, anon = f"pgrst_authenticator_{RUN}", f"pgrst_anon_{RUN}"
    admin.execute(f"CREATE ROLE {anon} NOLOGIN")
    admin.execute(f"CREATE ROLE {authenticator} LOGIN NOINHERIT")
    # The library loaded at login, as the README tells users without shared_preload_libraries
    # who want the fast path (and settings of the impersonated roles, which PostgREST reads
    # through pg_settings): the same on the plain and the preloaded test servers.
    admin.execute(f"ALTER ROLE {authenticator} SET session_preload_libraries = 'pg_rowversion'")
    admin.execute(f"GRANT {anon} TO {authenticator}")
    try:
        yield authenticator, anon
    finally:
        admin.execute(f"DROP OWNED BY {anon}")
        admin.execute(f"DROP ROLE {authenticator}")
        admin.execute(f"DROP ROLE {anon}")


@pytest.fixture(params=list(PATHS))
def path(request, admin, roles):
    """Each case through the trigger and through the fast path: `ALTER ROLE anon SET
    pg_rowversion.fast_path`, which PostgREST re-applies per request as an impersonated role's
    setting (it is a user setting listed in pg_settings, the library being loaded at login)."""
    admin.execute(f"ALTER ROLE {roles[1]} SET pg_rowversion.fast_path = {PATHS[request.param]}")
    return request.param


@pytest.fixture
def postgrest(admin, dsn, roles, path):
    """PostgrestEmulator(mapping, version): sets the mapping on the authenticator as users do,
    `ALTER ROLE authenticator SET pg_rowversion.error_mapping = ...` (RESET for the default),
    then opens the connection (the setting applies at login)."""
    opened = []

    def start(mapping="postgrest", version="v14.17", pre_request=None):
        if mapping == "sqlstate":
            admin.execute(f"ALTER ROLE {roles[0]} RESET pg_rowversion.error_mapping")
        else:
            admin.execute(f"ALTER ROLE {roles[0]} SET pg_rowversion.error_mapping = '{mapping}'")
        emulator = PostgrestEmulator(dsn, roles[0], roles[1], version, pre_request)
        opened.append(emulator)
        assert ("pg_rowversion.fast_path", PATHS[path]) in emulator.role_settings.get(roles[1], [])
        return emulator

    yield start
    for emulator in opened:
        emulator.close()


class Table:
    """A versioned table `public.<name>` (id, category, price, version), privileges for anon,
    and a statement-level BEFORE UPDATE trigger that counts the UPDATE statements the server ran
    (nextval of a sequence: not rolled back with the aborted attempts, and a statement-level
    trigger keeps the table on the planner fast path)."""

    def __init__(self, admin, name, anon):
        self.admin, self.name = admin, name
        admin.execute(f"CREATE TABLE public.{name} (id int PRIMARY KEY, category text NOT NULL, price int NOT NULL)")
        admin.execute(f"SELECT rowversion.enable('public.{name}')")
        admin.execute(f"CREATE SEQUENCE public.{name}_updates")
        admin.execute(f"CREATE TRIGGER count_updates BEFORE UPDATE ON public.{name} FOR EACH STATEMENT "
                      f"EXECUTE FUNCTION public.pgrst_count_update('public.{name}_updates')")
        admin.execute(f"GRANT SELECT, UPDATE ON public.{name} TO {anon}")
        admin.execute(f"GRANT USAGE ON SEQUENCE public.{name}_updates TO {anon}")

    def insert(self, *rows):
        for row in rows:
            self.admin.execute(f"INSERT INTO public.{self.name} (id, category, price) VALUES (%s, %s, %s)", row)

    def strict(self):
        self.admin.execute(f"SELECT rowversion.enable('public.{self.name}', mode => 'strict')")

    def rows(self):
        return self.admin.execute(f"SELECT id, price, version FROM public.{self.name} ORDER BY id").fetchall()

    def update_statements(self):
        last_value, is_called = self.admin.execute(
            f"SELECT last_value, is_called FROM public.{self.name}_updates").fetchone()
        return last_value if is_called else 0


@pytest.fixture
def counter(admin):
    """The trigger function of Table's statement counter."""
    admin.execute("""CREATE OR REPLACE FUNCTION public.pgrst_count_update() RETURNS trigger LANGUAGE plpgsql
                     AS $$ BEGIN PERFORM nextval(TG_ARGV[0]::regclass); RETURN NULL; END $$""")
    yield
    admin.execute("DROP FUNCTION public.pgrst_count_update()")


@pytest.fixture
def table(admin, roles, counter):
    name = f"pgrst_items_{secrets.token_hex(3)}"
    created = Table(admin, name, roles[1])
    created.insert((1, "tools", 100))
    yield created
    admin.execute(f"DROP TABLE public.{name}")
    admin.execute(f"DROP SEQUENCE public.{name}_updates")


# --- Assertions -------------------------------------------------------------------------------

def assert_success(response, status, etag):
    """A successful PATCH as the HTTP client sees it; response.headers decoded by PostgREST's
    rules (no PGRST111), and the ETag header exactly `"<etag>"`, or absent for None."""
    assert response.status == status, response
    assert response.attempts == 1 and not response.sqlstates, response
    decode_guc_headers(response.guc_headers)  # raises for what would be PGRST111
    if etag is None:
        assert "ETag" not in response.headers, response
    else:
        assert response.headers.get("ETag") == f'"{etag}"', response


def conflict_body(table, expected, found):
    return {"code": "40001", "message": f'row version conflict on table "public.{table}"',
            "details": f"Key (id)=(1): expected version {expected}, found version {found}.",
            "hint": "Re-read the row and retry with its current version."}


def if_match_body(table, found, id_=1):
    return {"code": "40001", "message": f'If-Match precondition failed on table "public.{table}"',
            "details": f"Key (id)={'(%d)' % id_}: If-Match does not name version {found}.",
            "hint": "Re-read the row and send its ETag in If-Match."}


# --- Tests ----------------------------------------------------------------------------------

def test_the_path_parametrization_takes_the_trigger_or_the_fast_path(postgrest, table, path):
    plan = postgrest().explain_patch(table.name, {"id": "eq.1"}, {"price": 5})
    assert ("rowversion.next_version(" in plan) == (path == "fast path"), plan


def test_patch_with_if_match_of_the_current_version_sends_the_new_version_as_etag(postgrest, table):
    api = postgrest()
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 110}, {"If-Match": '"1"'})
    assert_success(response, 204, etag=2)
    assert response.body is None and response.headers["Content-Range"] == "0-0/*"
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 120},
                         {"If-Match": '"2"', "Prefer": "return=representation"})
    assert_success(response, 200, etag=3)
    assert response.body == [{"id": 1, "category": "tools", "price": 120, "version": 3}]
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert table.rows() == [(1, 120, 3)]


def test_patch_stating_the_stored_version_succeeds_and_a_stale_one_is_409_run_once(postgrest, table):
    api = postgrest()
    before = table.update_statements()
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 110, "version": 1}, {"Prefer": "return=representation"})
    assert_success(response, 200, etag=2)
    assert response.body == [{"id": 1, "category": "tools", "price": 110, "version": 2}]
    assert table.update_statements() - before == 1

    before = table.update_statements()
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90, "version": 1})
    assert (response.status, response.reason) == (409, "Conflict"), response
    assert response.body == conflict_body(table.name, expected=1, found=2)
    assert "ETag" not in response.headers
    assert response.headers["Proxy-Status"] == "PostgREST; error=40001"
    # Executed exactly once: one attempt of the emulated v14 retry loop, one UPDATE on the server.
    assert response.attempts == 1 and response.sqlstates == ["PGRST"] and not response.retried_out
    assert table.update_statements() - before == 1
    assert table.rows() == [(1, 110, 2)]


def test_stale_or_weak_if_match_is_412_and_if_match_star_succeeds_in_lenient_mode(postgrest, table):
    api = postgrest()
    table.admin.execute(f"UPDATE public.{table.name} SET price = 105 WHERE id = 1")  # version 2
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90}, {"If-Match": '"1"'})
    assert (response.status, response.reason) == (412, "Precondition Failed"), response
    assert response.body == if_match_body(table.name, found=2)
    assert response.attempts == 1
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90}, {"If-Match": 'W/"2"'})
    assert (response.status, response.reason) == (412, "Precondition Failed"), response
    assert response.body == if_match_body(table.name, found=2)
    assert table.rows() == [(1, 105, 2)]
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90}, {"If-Match": "*"})
    assert_success(response, 204, etag=3)
    assert table.rows() == [(1, 90, 3)]


def test_strict_mode_without_version_or_if_match_is_428_and_if_match_is_enough(postgrest, table):
    table.strict()
    api = postgrest()
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90})
    assert (response.status, response.reason) == (428, "Precondition Required"), response
    assert response.body == {
        "code": "42P10", "message": f'UPDATE of table "public.{table.name}" must set version column "version"',
        "details": f'Table "public.{table.name}" is versioned in strict mode: every UPDATE states the version it read.',
        "hint": "Add version = <the version you read> to the SET list, or switch the table to lenient mode "
                "with rowversion.enable()."}
    assert response.attempts == 1
    assert table.rows() == [(1, 100, 1)]
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90}, {"If-Match": '"1"'})
    assert_success(response, 204, etag=2)
    assert table.rows() == [(1, 90, 2)]


@pytest.mark.parametrize("version", ["v12.2.12", "v14.17"])
def test_control_without_a_mapping_the_stale_patch_is_retried_until_the_cap(postgrest, table, version):
    """The retry storm the setting prevents: with the default mapping a stale PATCH fails with
    40001 on every run, and PostgREST v12-v14 runs it again without end."""
    api = postgrest("sqlstate", version)
    table.admin.execute(f"UPDATE public.{table.name} SET price = 105 WHERE id = 1")  # version 2
    before = table.update_statements()
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90, "version": 1})
    assert response.retried_out and response.attempts == RETRY_CAP, response
    assert response.sqlstates == ["40001"] * RETRY_CAP
    assert table.update_statements() - before == RETRY_CAP
    assert table.rows() == [(1, 105, 2)]
    # No mapping, no HTTP features: If-Match is not read and no ETag goes out.
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 91}, {"If-Match": '"1"'})
    assert_success(response, 204, etag=None)
    assert response.guc_headers is None


def test_control_without_a_mapping_postgrest_v16_answers_the_stale_patch_with_500(postgrest, table):
    api = postgrest("sqlstate", "v16")
    table.admin.execute(f"UPDATE public.{table.name} SET price = 105 WHERE id = 1")
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90, "version": 1})
    assert (response.status, response.attempts) == (500, 1), response
    assert response.body == conflict_body(table.name, expected=1, found=2)


def test_postgrest_pt_mapping_makes_a_stale_patch_409_with_code_pt409(postgrest, table):
    api = postgrest("postgrest_pt")
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 110, "version": 1})
    assert_success(response, 204, etag=2)
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90, "version": 1})
    message = f'row version conflict on table "public.{table.name}"'
    # PostgREST's PT rule: the status from the code, the reason phrase the message, the body's
    # code the SQLSTATE; details and hint are the error's own.
    assert (response.status, response.reason) == (409, message), response
    assert response.body == {**conflict_body(table.name, expected=1, found=2), "code": "PT409"}
    assert response.attempts == 1
    response = api.patch(table.name, {"id": "eq.1"}, {"price": 90}, {"If-Match": '"1"'})
    assert response.status == 412 and response.body["code"] == "PT412", response
    assert table.rows() == [(1, 110, 2)]


def client_errors():
    """Every error case above, as (setup, request, expected status)."""
    def stale(t):
        t.admin.execute(f"UPDATE public.{t.name} SET price = price + 1 WHERE id = 1")

    def two_rows_one_stale(t):
        t.insert((2, "tools", 200))
        t.admin.execute(f"UPDATE public.{t.name} SET price = price + 1 WHERE id = 2")

    return [
        ("stale version in the body", stale, ({"id": "eq.1"}, {"price": 9, "version": 1}, {}), 409),
        ("stale If-Match", stale, ({"id": "eq.1"}, {"price": 9}, {"If-Match": '"1"'}), 412),
        ("weak If-Match", stale, ({"id": "eq.1"}, {"price": 9}, {"If-Match": 'W/"2"'}), 412),
        ("strict mode, no version", lambda t: t.strict(), ({"id": "eq.1"}, {"price": 9}, {}), 428),
        ("NULL version", None, ({"id": "eq.1"}, {"price": 9, "version": None}, {}), 400),
        ("two rows, one stale", two_rows_one_stale, ({"category": "eq.tools"}, {"price": 9}, {"If-Match": '"1"'}), 412),
    ]


@pytest.mark.parametrize("mapping", ["postgrest", "postgrest_pt"])
@pytest.mark.parametrize("version", ["v12.2.12", "v14.17"])
def test_no_40001_or_40p01_reaches_postgrest_under_a_mapping(admin, postgrest, roles, counter, mapping, version):
    """The invariant that keeps PostgREST v12-v14 from retrying: none of the errors a client
    causes reaches it as 40001 or 40P01, so each request runs once."""
    api = postgrest(mapping, version)
    seen = []
    for case, setup, (filters, body, headers), status in client_errors():
        fresh = Table(admin, f"pgrst_items_{secrets.token_hex(3)}", roles[1])
        try:
            fresh.insert((1, "tools", 100))
            if setup:
                setup(fresh)
            before, statements = fresh.rows(), fresh.update_statements()
            response = api.patch(fresh.name, filters, body, headers)
            seen.append((case, response.sqlstates))
            assert response.status == status, (case, response)
            assert response.attempts == 1 and fresh.update_statements() - statements == 1, (case, response)
            assert not set(response.sqlstates) & {"40001", "40P01"}, (case, response)
            assert response.sqlstates == (["PGRST"] if mapping == "postgrest" else [f"PT{status}"]), (case, response)
            assert fresh.rows() == before, case
        finally:
            admin.execute(f"DROP TABLE public.{fresh.name}")
            admin.execute(f"DROP SEQUENCE public.{fresh.name}_updates")
    assert len(seen) == 6


def test_patch_of_two_rows_with_one_if_match_succeeds_without_etag_and_one_stale_is_412(postgrest, table):
    table.insert((2, "tools", 200))
    api = postgrest()
    response = api.patch(table.name, {"category": "eq.tools"}, {"price": 50}, {"If-Match": '"1"'})
    assert_success(response, 204, etag=None)
    assert response.headers["Content-Range"] == "0-1/*"
    assert table.rows() == [(1, 50, 2), (2, 50, 2)]
    table.admin.execute(f"UPDATE public.{table.name} SET price = 60 WHERE id = 2")  # row 2: version 3
    response = api.patch(table.name, {"category": "eq.tools"}, {"price": 70}, {"If-Match": '"2"'})
    assert (response.status, response.reason) == (412, "Precondition Failed"), response
    assert response.body == if_match_body(table.name, found=3, id_=2)
    assert table.rows() == [(1, 50, 2), (2, 60, 3)]
    # No row matched: 204, Content-Range */*, no ETag (nor an error: PostgREST's rule).
    response = api.patch(table.name, {"category": "eq.none"}, {"price": 70}, {"If-Match": '"2"'})
    assert_success(response, 204, etag=None)
    assert response.headers["Content-Range"] == "*/*" and response.guc_headers is None


def test_headers_a_pre_request_function_sets_are_kept_next_to_the_etag(admin, postgrest, table, roles):
    admin.execute("""CREATE OR REPLACE FUNCTION public.pgrst_pre_request() RETURNS void LANGUAGE sql AS
                     $$ SELECT set_config('response.headers', '[{"Cache-Control": "no-store"}]', true) $$""")
    admin.execute(f"GRANT EXECUTE ON FUNCTION public.pgrst_pre_request() TO {roles[1]}")
    try:
        api = postgrest(pre_request="pgrst_pre_request")
        response = api.patch(table.name, {"id": "eq.1"}, {"price": 110}, {"If-Match": '"1"'})
        assert_success(response, 204, etag=2)
        assert response.headers["Cache-Control"] == "no-store"
    finally:
        admin.execute("DROP FUNCTION public.pgrst_pre_request()")


def test_a_prepared_patch_reused_under_a_generic_plan_keeps_if_match_and_etag(admin, postgrest, table, roles, path):
    """PostgREST prepares each statement once per connection and runs it again and again:
    `plan_cache_mode = force_generic_plan`, set on anon (a role setting PostgREST re-applies per
    request), makes every run of the PATCH use the generic plan."""
    admin.execute(f"ALTER ROLE {roles[1]} SET plan_cache_mode = force_generic_plan")
    api = postgrest()
    for version in range(1, 4):
        response = api.patch(table.name, {"id": "eq.1"}, {"price": 100 + version}, {"If-Match": f'"{version}"'})
        assert_success(response, 204, etag=version + 1)
        response = api.patch(table.name, {"id": "eq.1"}, {"price": 1}, {"If-Match": f'"{version}"'})
        assert response.status == 412 and response.body == if_match_body(table.name, found=version + 1), response
        response = api.patch(table.name, {"id": "eq.1"}, {"price": 1, "version": version})
        assert response.status == 409 and response.body == conflict_body(table.name, version, version + 1), response
    assert table.rows() == [(1, 103, 4)]
    plans = api.session.statement("SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                                  "WHERE statement LIKE 'WITH pgrst_source AS (UPDATE%'", prepared=False)
    assert sorted(plans) == [("3", "0"), ("6", "0")], plans
    # The cached generic plan took the expected path.
    name, = [name for (sql, _), name in api.session.registry.items() if sql.startswith('WITH pgrst_source AS (UPDATE')
             and '"version" = "pgrst_body"."version"' not in sql]
    plan = api.explain(f"/{table.name}", f"""EXECUTE {name.decode()}('{{"price": 1}}', '1')""")
    assert "Index Scan" in plan and "$2" in plan, plan  # the generic plan, with the filter's parameter
    assert ("rowversion.next_version(" in plan) == (path == "fast path"), plan


@pytest.mark.parametrize("if_match, status, etag", [(None, 204, 3), ('"1"', 412, None)])
def test_a_patch_that_waited_for_a_concurrent_writer_is_checked_against_the_winner(
        admin, dsn, postgrest, table, path, if_match, status, etag):
    """Under READ COMMITTED the PATCH waits for the other writer of its row, then is checked
    against (and increments) the winner's version. The README's exception: no ETag when the
    fast path re-evaluated the row after waiting (it counts the row twice)."""
    api = postgrest()
    outcome = {}
    with psycopg.connect(dsn) as writer:
        writer.execute(f"UPDATE public.{table.name} SET price = 105 WHERE id = 1")  # version 2, not committed
        request = threading.Thread(target=lambda: outcome.update(response=api.patch(
            table.name, {"id": "eq.1"}, {"price": 90}, {"If-Match": if_match} if if_match else {})))
        request.start()
        try:
            wait_until(lambda: is_waiting_for_lock(admin, api.conn.info.backend_pid), what="the PATCH to wait")
        finally:
            writer.commit()
            request.join(30)
    response = outcome["response"]
    if status == 412:
        assert response.status == 412 and response.body == if_match_body(table.name, found=2), response
        assert table.rows() == [(1, 105, 2)]
        return
    expected_etag = None if path == "fast path" else etag  # README: "nor when the fast path re-evaluated the row"
    assert_success(response, status, etag=expected_etag)
    assert table.rows() == [(1, 90, 3)]


def test_response_headers_postgrest_cannot_decode_are_500_pgrst111(admin, postgrest, table, roles):
    """The decoding rule the successful cases rely on is live: a db-pre-request function that
    leaves response.headers a JSON object (not an array) makes the same PATCH a 500 PGRST111,
    and the extension leaves such a value alone (it appends its ETag to arrays only)."""
    admin.execute("""CREATE OR REPLACE FUNCTION public.pgrst_pre_request() RETURNS void LANGUAGE sql AS
                     $$ SELECT set_config('response.headers', '{"Cache-Control": "no-store"}', true) $$""")
    admin.execute(f"GRANT EXECUTE ON FUNCTION public.pgrst_pre_request() TO {roles[1]}")
    try:
        api = postgrest(pre_request="pgrst_pre_request")
        response = api.patch(table.name, {"id": "eq.1"}, {"price": 110}, {"If-Match": '"1"'})
        assert response.status == 500 and response.body["code"] == "PGRST111", response
        assert response.guc_headers == '{"Cache-Control": "no-store"}'
        # Committed: PostgREST builds the response after the transaction (src/PostgREST/App.hs @v14.17).
        assert table.rows() == [(1, 110, 2)]
    finally:
        admin.execute("DROP FUNCTION public.pgrst_pre_request()")
