-- Security (issue 10, section 3): a superuser calling enable() on another role's table does
-- not run that role's code with superuser rights. enable() sets the NULL versions with an
-- UPDATE, which fires the owner's triggers and evaluates the owner's index expressions; that
-- UPDATE runs as the owner, in a security-restricted operation.
\set VERBOSITY terse
CREATE ROLE rowversion_owner;
GRANT CREATE ON SCHEMA public TO rowversion_owner;
SET ROLE rowversion_owner;
CREATE TABLE public.owner_log (what text, ran_as name, outcome text);
CREATE TABLE public.owned (id int PRIMARY KEY, version int, note text);
INSERT INTO public.owned VALUES (1, NULL, 'a'), (2, NULL, 'b');
-- A trigger that tries to make its owner a superuser, and records as whom it ran.
CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        ALTER ROLE rowversion_owner SUPERUSER;
        INSERT INTO public.owner_log VALUES ('trigger', current_user, 'became superuser');
    EXCEPTION WHEN OTHERS THEN
        INSERT INTO public.owner_log VALUES ('trigger', current_user, SQLSTATE);
    END;
    RETURN NEW;
END
$$;
CREATE TRIGGER escalate BEFORE UPDATE ON public.owned FOR EACH ROW EXECUTE FUNCTION public.escalate();
-- An index expression on the version: runs for every row the UPDATE writes.
CREATE FUNCTION public.log_index() RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO public.owner_log VALUES ('index expression', current_user, NULL);
END
$$;
CREATE FUNCTION public.indexed(version int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM public.log_index();
    RETURN version;
END
$$;
CREATE INDEX ON public.owned (public.indexed(version));
TRUNCATE public.owner_log;
RESET ROLE;

SELECT rowversion.enable('owned');
SELECT id, version, note FROM owned ORDER BY id;
-- Both ran as the owner; the escalation failed (42501 in a security-restricted operation).
SELECT what, ran_as, outcome, count(*) FROM owner_log GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT rolsuper FROM pg_roles WHERE rolname = 'rowversion_owner';
-- The superuser's session is itself again afterwards.
SELECT current_user = session_user AS restored, current_setting('search_path') AS search_path;

-- When the owner's trigger fails, enable() fails as a whole and leaves nothing behind.
SELECT rowversion.disable('owned');
ALTER TABLE owned DISABLE TRIGGER escalate;
UPDATE owned SET version = NULL WHERE id = 2;
ALTER TABLE owned ENABLE TRIGGER escalate;
CREATE OR REPLACE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'owner''s trigger refuses';
END
$$;
ALTER FUNCTION public.escalate() OWNER TO rowversion_owner;
SELECT rowversion.enable('owned', 'version', 'strict');
SELECT rel, mode FROM rowversion.tables WHERE rel = 'owned'::regclass;
SELECT id, version FROM owned ORDER BY id;
SELECT current_user = session_user AS restored;
-- ...also when the caller catches the error.
DO $$
BEGIN
    PERFORM rowversion.enable('owned');
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'caught: %; running as the caller again: %', SQLERRM, current_user = session_user;
END
$$;

DROP TABLE owned, owner_log;
DROP FUNCTION escalate(), indexed(int), log_index();
REVOKE CREATE ON SCHEMA public FROM rowversion_owner;
DROP ROLE rowversion_owner;
