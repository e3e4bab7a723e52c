-- Scenario 5: an ORM that keeps its own version column (Hibernate @Version, Rails
-- lock_version, SQLAlchemy version_id_col) keeps working, without double increments.
CREATE TABLE books (id int PRIMARY KEY, title text, lock_version integer NOT NULL DEFAULT 0);
INSERT INTO books VALUES (1, 'Draft', 0);
SELECT rowversion.enable('books', 'lock_version');
-- The ORM sends read + 1 and checks the version in its WHERE clause.
UPDATE books SET title = 'First', lock_version = 1 WHERE id = 1 AND lock_version = 0;
SELECT * FROM books;
-- A stale ORM session updates no row; the ORM raises its own stale-object error.
UPDATE books SET title = 'Stale', lock_version = 1 WHERE id = 1 AND lock_version = 0;
SELECT * FROM books;
DROP TABLE books;
