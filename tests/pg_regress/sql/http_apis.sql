-- Behind an HTTP layer (pg_rowversion.error_mapping, src/http.rs): errors PostgREST answers
-- with the right status and never retries, If-Match as the stated version, ETag back.
-- Statements have the shape PostgREST v12-v14 gives a PATCH (a data-modifying WITH), with
-- request.headers set as it sets them; each runs through the trigger and the fast path.
LOAD 'pg_rowversion';
\set VERBOSITY default
-- The statements of one request through each path, for \gexec: each runs at the top level,
-- as PostgREST runs it (If-Match and ETag are about the request's own statement, not one a
-- function runs), and is rolled back for the other path.
CREATE FUNCTION http_case(statement text, if_match text DEFAULT NULL) RETURNS SETOF text
LANGUAGE sql AS $$
    SELECT step FROM unnest(ARRAY['off', 'on']) WITH ORDINALITY AS paths(fast, n),
        LATERAL unnest(ARRAY[
            'BEGIN',
            format('SELECT set_config(%L, %L, true) IS NULL AS %I, set_config(%L, %L, true) IS NULL AS request',
                   'pg_rowversion.fast_path', fast, CASE fast WHEN 'on' THEN 'fast path' ELSE 'trigger' END,
                   'request.headers', CASE WHEN if_match IS NULL THEN '{"accept": "*/*"}'
                       ELSE json_build_object('accept', '*/*', 'if-match', if_match)::text END),
            statement,
            'SELECT current_setting(''response.headers'', true) AS response_headers',
            'ROLLBACK']) WITH ORDINALITY AS steps(step, m)
    ORDER BY n, m
$$;
CREATE TABLE products (id int PRIMARY KEY, name text, price int);
SELECT rowversion.enable('products');
INSERT INTO products VALUES (1, 'Espresso machine', 100000), (2, 'Grinder', 20000);
UPDATE products SET price = 120000 WHERE id = 1;  -- version 2
-- PostgREST's PATCH /products?id=eq.1 with Prefer: return=representation.
\set patch 'WITH pgrst_source AS (UPDATE "public"."products" SET "price" = "pgrst_body"."price" FROM (SELECT ''{"price": 110000}''::json AS json_data) pgrst_payload, LATERAL (SELECT "price" FROM json_to_record(pgrst_payload.json_data) AS _("price" integer) ) pgrst_body  WHERE  "public"."products"."id" = 1 RETURNING "public"."products".*) SELECT '''' AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, array[]::text[] AS header, coalesce(json_agg(_postgrest_t), ''[]'') AS body, nullif(current_setting(''response.headers'', true), '''') AS response_headers FROM (SELECT "products".* FROM "pgrst_source" AS "products") _postgrest_t'
\set patch_stating 'WITH pgrst_source AS (UPDATE "public"."products" SET "price" = "pgrst_body"."price", "version" = "pgrst_body"."version" FROM (SELECT ''{"price": 110000, "version": 1}''::json AS json_data) pgrst_payload, LATERAL (SELECT "price", "version" FROM json_to_record(pgrst_payload.json_data) AS _("price" integer, "version" bigint) ) pgrst_body  WHERE  "public"."products"."id" = 1 RETURNING 1) SELECT pg_catalog.count(_postgrest_t) AS page_total, nullif(current_setting(''response.headers'', true), '''') AS response_headers FROM (SELECT * FROM pgrst_source) _postgrest_t'
-- The fast path takes the PATCH's UPDATE too (and turns the trigger off for it alone).
CREATE FUNCTION computes_version(statement text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || statement LOOP
        IF line ~ 'rowversion\.next_version\(' THEN RETURN true; END IF;
    END LOOP;
    RETURN false;
END $$;
SELECT computes_version(:'patch'), computes_version(:'patch_stating');

-- Without a mapping: today's SQLSTATEs.
SELECT http_case(:'patch_stating') \gexec
SET pg_rowversion.error_mapping = postgrest;
-- A stale stated version: SQLSTATE PGRST, status 409 in the detail, the body in the message.
\set VERBOSITY sqlstate
SELECT http_case(:'patch_stating') \gexec
\set VERBOSITY default
SELECT http_case(:'patch_stating') \gexec
-- If-Match names the stored version: checked, the new version goes out as ETag.
SELECT http_case(:'patch', '"2"') \gexec
-- A stale, weak, malformed or unknown tag: 412. A list with the stored version: ok.
SELECT http_case(:'patch', '"1"') \gexec
SELECT http_case(:'patch', 'W/"2"') \gexec
SELECT http_case(:'patch', '2') \gexec
SELECT http_case(:'patch', '"5", "2"') \gexec
-- Strong comparison is byte for byte; and If-Match holds for an UPDATE that states the
-- version too.
SELECT http_case(:'patch', '"02"') \gexec
SELECT http_case($$UPDATE products SET price = 1, version = 2 WHERE id = 1$$, '"1"') \gexec
-- If-Match: * and no If-Match state no version: lenient mode increments, as ever.
SELECT http_case(:'patch', '*') \gexec
SELECT http_case(:'patch') \gexec
-- Strict mode: neither a stated version nor If-Match is 428; If-Match: * too; a tag is enough.
SELECT rowversion.enable('products', mode => 'strict');
SELECT http_case(:'patch') \gexec
SELECT http_case(:'patch', '*') \gexec
SELECT http_case(:'patch', '"2"') \gexec
-- A NULL version is 400.
SELECT http_case($$UPDATE products SET version = NULL WHERE id = 1$$) \gexec
-- Several rows with one If-Match: each row is checked against it, and no ETag goes out.
SELECT http_case($$UPDATE products SET price = price + 1$$, '"2"') \gexec
SELECT http_case($$UPDATE products SET price = price + 1 WHERE id IN (1, 2)$$, '"1", "2"') \gexec
SELECT rowversion.enable('products');
-- Other headers set by the application's own function are kept, the ETag appended.
SELECT http_case($$SELECT set_config('response.headers', '[{"Cache-Control": "no-store"}]', true);
                   UPDATE products SET price = 1, version = 2 WHERE id = 1$$) \gexec
-- If-Match and ETag are about the request's own rows: a trigger's UPDATE of another
-- versioned table (a counter cache, an ignored column) is neither checked nor counted.
CREATE TABLE posts (id int PRIMARY KEY, comments int NOT NULL DEFAULT 0);
SELECT rowversion.enable('posts', ignore_columns => '{comments}');
INSERT INTO posts VALUES (1, 0, 7);
CREATE FUNCTION count_comment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE posts SET comments = comments + 1 WHERE id = 1; RETURN NULL; END $$;
CREATE TRIGGER count_comment AFTER UPDATE ON products FOR EACH ROW EXECUTE FUNCTION count_comment();
SELECT http_case(:'patch', '"2"') \gexec
DROP TRIGGER count_comment ON products;
DROP TABLE posts;
DROP FUNCTION count_comment();
-- Checked functions: a stale version 409, a missing row 404.
SELECT http_case($$SELECT rowversion.update('products', '{"id": 1}', 1, '{"price": 5}')$$) \gexec
SELECT http_case($$SELECT rowversion.update('products', '{"id": 7}', 1, '{"price": 5}')$$) \gexec
-- postgrest_pt: PTnnn for PostgREST before v12, the message, detail and hint as they are.
SET pg_rowversion.error_mapping = postgrest_pt;
\set VERBOSITY sqlstate
SELECT http_case(:'patch_stating') \gexec
SELECT http_case(:'patch', '"1"') \gexec
-- Errors without an HTTP status keep their SQLSTATE under any mapping.
\set VERBOSITY sqlstate
SELECT http_case($$SELECT rowversion.enable('products', mode => 'sometimes')$$) \gexec
RESET pg_rowversion.error_mapping;
SELECT id, price, version FROM products ORDER BY id;
DROP TABLE products;
DROP FUNCTION http_case(text, text), computes_version(text);
