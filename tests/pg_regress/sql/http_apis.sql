-- Behind an HTTP layer (pg_rowversion.error_mapping, src/http.rs): errors PostgREST answers
-- with the right status and never retries, If-Match as the stated version, ETag back.
-- Statements have the shape PostgREST v12-v14 gives a PATCH (a data-modifying WITH), with
-- request.headers set as it sets them; each runs through the trigger and the fast path.
LOAD 'pg_rowversion';
CREATE FUNCTION http_outcome(statement text, if_match text DEFAULT NULL)
RETURNS TABLE (path text, state text, message text, detail text, etag text) LANGUAGE plpgsql AS $$
DECLARE
    fast boolean;
BEGIN
    FOREACH fast IN ARRAY ARRAY[false, true] LOOP
        path := CASE WHEN fast THEN 'fast path' ELSE 'trigger' END;
        state := 'ok'; message := NULL; detail := NULL; etag := NULL;
        BEGIN
            PERFORM set_config('pg_rowversion.fast_path', fast::text, true);
            PERFORM set_config('response.headers', '', true);
            PERFORM set_config('request.headers',
                CASE WHEN if_match IS NULL THEN '{"accept": "*/*"}'
                     ELSE json_build_object('accept', '*/*', 'if-match', if_match)::text END, true);
            EXECUTE statement;
            etag := nullif(current_setting('response.headers', true), '');
            RAISE EXCEPTION USING ERRCODE = 'RB001';  -- undo, for the other path
        EXCEPTION WHEN SQLSTATE 'RB001' THEN NULL;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
        END;
        RETURN NEXT;
    END LOOP;
END $$;
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
SELECT * FROM http_outcome(:'patch_stating');
SET pg_rowversion.error_mapping = postgrest;
-- A stale stated version: PGRST, status 409 in the detail, the conflict in the message.
SELECT * FROM http_outcome(:'patch_stating');
-- If-Match names the stored version: checked, the new version goes out as ETag.
SELECT * FROM http_outcome(:'patch', '"2"');
-- A stale, weak, malformed or unknown tag: 412. A list with the stored version: ok.
SELECT * FROM http_outcome(:'patch', '"1"');
SELECT * FROM http_outcome(:'patch', 'W/"2"');
SELECT * FROM http_outcome(:'patch', '2');
SELECT * FROM http_outcome(:'patch', '"5", "2"');
-- Strong comparison is byte for byte; and If-Match holds for an UPDATE that states the
-- version too.
SELECT * FROM http_outcome(:'patch', '"02"');
SELECT * FROM http_outcome($$UPDATE products SET price = 1, version = 2 WHERE id = 1$$, '"1"');
-- If-Match: * and no If-Match state no version: lenient mode increments, as ever.
SELECT * FROM http_outcome(:'patch', '*');
SELECT * FROM http_outcome(:'patch');
-- Strict mode: neither a stated version nor If-Match is 428; If-Match: * too; a tag is enough.
SELECT rowversion.enable('products', mode => 'strict');
SELECT * FROM http_outcome(:'patch');
SELECT * FROM http_outcome(:'patch', '*');
SELECT * FROM http_outcome(:'patch', '"2"');
-- A NULL version is 400.
SELECT * FROM http_outcome($$UPDATE products SET version = NULL WHERE id = 1$$);
-- Several rows with one If-Match: each row is checked against it, and no ETag goes out.
SELECT * FROM http_outcome($$UPDATE products SET price = price + 1$$, '"2"');
SELECT * FROM http_outcome($$UPDATE products SET price = price + 1 WHERE id IN (1, 2)$$, '"1", "2"');
SELECT rowversion.enable('products');
-- Other headers set by the application's own function are kept, the ETag appended.
SELECT * FROM http_outcome($$SELECT set_config('response.headers', '[{"Cache-Control": "no-store"}]', true);
                             UPDATE products SET price = 1, version = 2 WHERE id = 1$$);
-- Checked functions: a stale version 409, a missing row 404.
SELECT * FROM http_outcome($$SELECT rowversion.update('products', '{"id": 1}', 1, '{"price": 5}')$$);
SELECT * FROM http_outcome($$SELECT rowversion.update('products', '{"id": 7}', 1, '{"price": 5}')$$);
-- postgrest_pt: PTnnn for PostgREST before v12, the message, detail and hint as they are.
SET pg_rowversion.error_mapping = postgrest_pt;
SELECT * FROM http_outcome(:'patch_stating');
SELECT * FROM http_outcome(:'patch', '"1"');
-- Errors without an HTTP status keep their SQLSTATE under any mapping.
SELECT * FROM http_outcome($$SELECT rowversion.enable('products', mode => 'sometimes')$$);
RESET pg_rowversion.error_mapping;
SELECT id, price, version FROM products ORDER BY id;
DROP TABLE products;
DROP FUNCTION http_outcome(text, text), computes_version(text);
