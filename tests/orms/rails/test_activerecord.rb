# ActiveRecord's optimistic locking (lock_version) on a table versioned by pg_rowversion,
# against a real server: PGHOST (socket directory), PGPORT, PGUSER, PGDATABASE.
# Run by run.sh; `AR_LOG=1 bash run.sh` prints every SQL statement ActiveRecord sends.
require "logger"
require "minitest/autorun"
require "active_record"
require "pg"

ActiveRecord::Base.establish_connection(
  adapter: "postgresql",
  host: ENV.fetch("PGHOST"),
  port: Integer(ENV.fetch("PGPORT")),
  username: ENV.fetch("PGUSER", "postgres"),
  database: ENV.fetch("PGDATABASE"),
  pool: 5,
)
ActiveRecord::Base.logger = Logger.new($stdout) if ENV["AR_LOG"]
ActiveRecord::Base.connection.execute("CREATE EXTENSION IF NOT EXISTS pg_rowversion")

# Rails' usual table: lock_version integer NOT NULL DEFAULT 0, timestamps, a counter cache.
class Book < ActiveRecord::Base
  self.table_name = "ar_books"
end

# A table whose version column enable() adds itself (bigint NOT NULL DEFAULT 1).
class Note < ActiveRecord::Base
  self.table_name = "ar_notes"
  self.locking_column = :version
end

class ActiveRecordLockVersionTest < Minitest::Test
  def conn
    ActiveRecord::Base.connection
  end

  def setup
    conn.execute(<<~SQL)
      DROP TABLE IF EXISTS ar_books, ar_notes;
      CREATE TABLE ar_books (
          id bigserial PRIMARY KEY,
          title text NOT NULL,
          price numeric(10, 2) NOT NULL DEFAULT 0,
          views_count integer NOT NULL DEFAULT 0,
          lock_version integer NOT NULL DEFAULT 0,
          created_at timestamp(6) NOT NULL,
          updated_at timestamp(6) NOT NULL
      );
      CREATE TABLE ar_notes (id bigserial PRIMARY KEY, body text NOT NULL);
    SQL
    Book.reset_column_information
    Note.reset_column_information
  end

  def teardown
    conn.execute("DROP TABLE IF EXISTS ar_books, ar_notes")
  end

  # rowversion.enable() on ar_books' lock_version.
  def enable(mode = "lenient", ignore: [])
    conn.select_value(ActiveRecord::Base.sanitize_sql_array(
      ["SELECT rowversion.enable('ar_books', 'lock_version', ?, ignore_columns => ?::name[])",
       mode, "{#{ignore.join(",")}}"]))
  end

  def stored_version(id, table = "ar_books", column = "lock_version")
    conn.select_value("SELECT #{column} FROM #{table} WHERE id = #{Integer(id)}")
  end

  def stored_views(id)
    conn.select_value("SELECT views_count FROM ar_books WHERE id = #{Integer(id)}")
  end

  def stored_title(id)
    conn.select_value("SELECT title FROM ar_books WHERE id = #{Integer(id)}")
  end

  # The PG::Error under an ActiveRecord::StatementInvalid.
  def sqlstate(error)
    error.cause.result.error_field(PG::Result::PG_DIAG_SQLSTATE)
  end

  def detail(error)
    error.cause.result.error_field(PG::Result::PG_DIAG_MESSAGE_DETAIL)
  end

  # --- saves through the ORM -------------------------------------------------------------

  def test_two_saves_of_one_object_move_the_version_by_one_each
    enable
    book = Book.create!(title: "Dune", price: 10)
    assert_equal 0, book.lock_version
    assert_equal 0, stored_version(book.id), "a supplied version is kept on INSERT"

    book.update!(title: "Dune (2nd ed.)")
    assert_equal 1, book.lock_version
    assert_equal 1, stored_version(book.id), "read + 1 is kept: no double increment"

    book.price = 12
    book.save!
    assert_equal 2, book.lock_version
    assert_equal 2, stored_version(book.id)
    assert_equal 2, Book.find(book.id).lock_version
  end

  def test_second_editors_stale_save_raises_stale_object_error_and_the_winner_is_kept
    enable
    id = Book.create!(title: "Original").id
    alice = Book.find(id)
    bob = Book.find(id)

    alice.update!(title: "Alice's")
    bob.title = "Bob's"
    error = assert_raises(ActiveRecord::StaleObjectError) { bob.save! }
    assert_match(/update/, error.message)
    assert_equal 0, bob.lock_version, "ActiveRecord restores the version it read"
    assert_equal "Alice's", stored_title(id)
    assert_equal 1, stored_version(id)

    # Bob reloads and saves again: accepted.
    bob.reload
    bob.update!(title: "Bob's, after reload")
    assert_equal "Bob's, after reload", stored_title(id)
    assert_equal 2, stored_version(id)

    # A stale destroy is refused as well (DELETE is the ORM's check alone).
    assert_raises(ActiveRecord::StaleObjectError) { alice.destroy }
    assert Book.exists?(id)
  end

  def test_concurrent_editors_on_two_connections_first_commit_wins
    enable
    id = Book.create!(title: "Original").id
    alice = Book.find(id)
    bob = Book.find(id)
    bob.title = "Bob's"

    bob_result = nil
    bob_thread = nil
    Book.transaction do
      alice.update!(title: "Alice's") # holds the row lock until commit
      bob_thread = Thread.new do
        Book.connection_pool.with_connection do
          bob.save!
          bob_result = :saved
        rescue ActiveRecord::StaleObjectError
          bob_result = :stale
        end
      end
      # Wait until Bob's UPDATE is blocked behind Alice's row lock. (pg_stat_activity is
      # read once per transaction unless the snapshot is cleared.)
      blocked = false
      200.times do
        conn.select_value("SELECT pg_stat_clear_snapshot()")
        blocked = conn.select_value(
          "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() " \
          "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE \"ar_books\"%'"
        ).to_i == 1
        break if blocked
        sleep 0.05
      end
      assert blocked, "Bob's UPDATE waits for Alice's row lock"
    end
    bob_thread.join
    assert_equal :stale, bob_result
    assert_equal "Alice's", stored_title(id)
    assert_equal 1, stored_version(id)
  end

  # --- bulk updates ----------------------------------------------------------------------

  def test_update_all_without_the_version_moves_it_in_lenient_mode
    enable
    ids = 3.times.map { |i| Book.create!(title: "b#{i}", price: 10).id }
    open_copy = Book.find(ids.first)

    # update_all with SQL text does not name lock_version: the trigger moves it.
    assert_equal 3, Book.where(id: ids).update_all(["price = price * ?", 2])
    assert_equal [1, 1, 1], ids.map { |id| stored_version(id) }
    open_copy.title = "edited from a stale form"
    assert_raises(ActiveRecord::StaleObjectError) { open_copy.save! }

    # update_all with a hash: ActiveRecord 6.1 adds lock_version = lock_version + 1 itself,
    # which pg_rowversion keeps (no double increment).
    assert_equal 3, Book.where(id: ids).update_all(price: 1)
    assert_equal [2, 2, 2], ids.map { |id| stored_version(id) }
  end

  def test_update_all_with_the_version
    enable
    id = Book.create!(title: "b", price: 10).id

    # The ORM pattern by hand: WHERE checks the read version, SET writes read + 1 (kept).
    assert_equal 1, Book.where(id: id, lock_version: 0).update_all(["price = ?, lock_version = lock_version + 1", 11])
    assert_equal 1, stored_version(id)
    assert_equal 1, Book.where(id: id, lock_version: 1).update_all(price: 12, lock_version: 2)
    assert_equal 2, stored_version(id)
    # A stale WHERE matches nothing: 0 rows, as ActiveRecord expects.
    assert_equal 0, Book.where(id: id, lock_version: 1).update_all(price: 13, lock_version: 2)
    assert_equal 2, stored_version(id)

    # Supplying the stored version: accepted, stored + 1 is written.
    assert_equal 1, Book.where(id: id).update_all(price: 14, lock_version: 2)
    assert_equal 3, stored_version(id)

    # Supplying an older version without a WHERE check: the trigger refuses it (40001).
    error = assert_raises(ActiveRecord::SerializationFailure) do
      Book.where(id: id).update_all(price: 15, lock_version: 1)
    end
    assert_equal "40001", sqlstate(error)
    assert_match(/row version conflict on table/, error.message)
    assert_equal "Key (id)=(#{id}): expected version 1, found version 3.", detail(error)
    assert_equal 3, stored_version(id)
    assert_equal "14.0", Book.find(id).price.to_s
  end

  # --- raw SQL through ActiveRecord's connection -----------------------------------------

  def test_raw_sql_through_the_orm_connection
    enable
    id = Book.create!(title: "b").id
    open_copy = Book.find(id)

    # Without the version: lenient mode moves it, so open objects go stale.
    assert_equal 1, conn.update("UPDATE ar_books SET title = 'raw' WHERE id = #{id}")
    assert_equal 1, stored_version(id)
    open_copy.title = "x"
    assert_raises(ActiveRecord::StaleObjectError) { open_copy.save! }

    # With the version it read: accepted, read + 1.
    assert_equal 1, conn.update("UPDATE ar_books SET title = 'raw 2', lock_version = 1 WHERE id = #{id}")
    assert_equal 2, stored_version(id)

    # With an older version: ActiveRecord::SerializationFailure (40001).
    error = assert_raises(ActiveRecord::SerializationFailure) do
      conn.update("UPDATE ar_books SET title = 'raw 3', lock_version = 1 WHERE id = #{id}")
    end
    assert_equal "Key (id)=(#{id}): expected version 1, found version 2.", detail(error)

    # NULL: 22004, a plain StatementInvalid around PG::NullValueNotAllowed.
    error = assert_raises(ActiveRecord::StatementInvalid) do
      conn.update("UPDATE ar_books SET title = 'raw 4', lock_version = NULL WHERE id = #{id}")
    end
    assert_equal "22004", sqlstate(error)
    assert_kind_of PG::NullValueNotAllowed, error.cause

    # The PG::Connection underneath, with bind parameters: PG's own exception class.
    raw = conn.raw_connection
    assert_raises(PG::TRSerializationFailure) do
      raw.exec_params("UPDATE ar_books SET title = $1, lock_version = $2 WHERE id = $3", ["raw 5", 0, id])
    end
    raw.exec_params("UPDATE ar_books SET title = $1, lock_version = $2 WHERE id = $3", ["raw 6", 2, id])
    assert_equal 3, stored_version(id)
    assert_equal "raw 6", stored_title(id)

    # A stale statement inside a transaction aborts it; ActiveRecord rolls it back.
    assert_raises(ActiveRecord::SerializationFailure) do
      Book.transaction do
        Book.find(id).update!(title: "in transaction")
        conn.update("UPDATE ar_books SET lock_version = 0 WHERE id = #{id}")
      end
    end
    assert_equal "raw 6", stored_title(id)
    assert_equal 3, stored_version(id)
  end

  # --- strict mode -----------------------------------------------------------------------

  def test_strict_mode
    enable("strict")
    book = Book.create!(title: "b", price: 1)
    other = Book.find(book.id)

    # Everything that names lock_version works unchanged: save, touch, update_all with a
    # hash, touch_all and the counters (ActiveRecord adds lock_version + 1 to those).
    book.update!(price: 2)
    assert_equal 1, stored_version(book.id)
    other.price = 3
    assert_raises(ActiveRecord::StaleObjectError) { other.save! }
    book.touch
    assert_equal 2, stored_version(book.id)
    assert_equal 1, Book.where(id: book.id).update_all(price: 4, lock_version: 2)
    assert_equal 3, stored_version(book.id)
    assert_equal 1, Book.where(id: book.id).update_all(price: 5)
    assert_equal 4, stored_version(book.id)
    Book.where(id: book.id).touch_all
    Book.increment_counter(:views_count, book.id)
    assert_equal 6, stored_version(book.id)
    assert_equal 1, conn.update("UPDATE ar_books SET price = 6, lock_version = 6 WHERE id = #{book.id}")
    assert_equal 7, stored_version(book.id)

    # What does not name it is refused with 42P10.
    [
      -> { Book.where(id: book.id).update_all(["price = ?", 5]) },
      -> { Book.where(id: book.id).update_all("views_count = views_count + 1") },
      -> { Book.find(book.id).update_columns(title: "quiet") },
      -> { Book.find(book.id).update_column(:views_count, 7) },
      -> { conn.update("UPDATE ar_books SET price = 6 WHERE id = #{book.id}") },
      -> { Book.upsert_all([{ id: book.id, title: "up", created_at: Time.now, updated_at: Time.now }]) },
    ].each do |statement|
      error = assert_raises(ActiveRecord::StatementInvalid) { statement.call }
      assert_equal "42P10", sqlstate(error)
      assert_kind_of PG::InvalidColumnReference, error.cause
      assert_match(/must set version column "lock_version"/, error.message)
    end
    assert_equal 7, stored_version(book.id)
    assert_equal "b", stored_title(book.id)
  end

  def test_strict_mode_lets_ignored_bookkeeping_columns_through
    enable("strict", ignore: %w[views_count updated_at])
    book = Book.create!(title: "b")

    book.update_columns(views_count: 5)
    book.update_column(:updated_at, Time.now)
    Book.where(id: book.id).update_all("views_count = views_count + 1")
    assert_equal 0, stored_version(book.id)
    assert_equal 6, stored_views(book.id)
    # Only ignored columns: a column outside the list still needs the version.
    error = assert_raises(ActiveRecord::StatementInvalid) { book.update_columns(views_count: 7, title: "t") }
    assert_equal "42P10", sqlstate(error)
  end

  # --- update_columns, counters and touch ------------------------------------------------

  def test_update_columns_moves_the_version_in_lenient_mode_even_under_its_own_object
    enable
    id = Book.create!(title: "b").id
    book = Book.find(id)
    other = Book.find(id)

    # update_columns skips lock_version; the trigger moves it (intended: the row changed).
    book.update_columns(title: "quiet edit")
    assert_equal 1, stored_version(id)
    assert_equal 0, book.lock_version, "ActiveRecord does not know the version moved"

    other.title = "stale form"
    assert_raises(ActiveRecord::StaleObjectError) { other.save! }
    # The object that called update_columns is stale too until it reloads.
    book.price = 9
    assert_raises(ActiveRecord::StaleObjectError) { book.save! }
    book.reload
    book.update!(price: 9)
    assert_equal 2, stored_version(id)
    assert_equal "9.0", Book.find(id).price.to_s
  end

  def test_ignore_columns_keeps_bookkeeping_updates_from_moving_the_version
    enable("lenient", ignore: %w[views_count updated_at])
    id = Book.create!(title: "b").id
    form = Book.find(id) # an open edit form
    book = Book.find(id)

    book.update_columns(views_count: 1)
    book.update_column(:updated_at, Time.now)
    Book.where(id: id).update_all("views_count = views_count + 1")
    Book.where(id: id).update_all(["views_count = views_count + 1, updated_at = ?", Time.now])
    conn.update("UPDATE ar_books SET views_count = views_count + 1 WHERE id = #{id}")
    assert_equal 0, stored_version(id)
    assert_equal 4, stored_views(id)

    form.title = "saved after all that bookkeeping"
    form.save!
    assert_equal 1, stored_version(id)
    assert_equal 4, stored_views(id), "the form did not write views_count back"

    # A column outside ignore_columns still moves it.
    book.reload.update_columns(views_count: 10, title: "t")
    assert_equal 2, stored_version(id)
  end

  def test_increment_counter_and_touch_move_lock_version_themselves
    # ActiveRecord 6.1 names lock_version in their SQL itself (lock_version =
    # COALESCE(lock_version, 0) + 1), so ignore_columns cannot keep them from moving it;
    # pg_rowversion keeps Rails' stored + 1 (no double increment).
    enable("lenient", ignore: %w[views_count updated_at])
    id = Book.create!(title: "b").id
    form = Book.find(id)
    book = Book.find(id)

    Book.increment_counter(:views_count, id) # SET views_count = .. + 1, lock_version = .. + 1
    assert_equal 1, stored_version(id)
    Book.update_counters(id, views_count: 2, touch: true)
    assert_equal 2, stored_version(id)
    Book.decrement_counter(:views_count, id)
    assert_equal 3, stored_version(id)
    assert_equal 2, stored_views(id)
    # The relation's forms add lock_version + 1 too.
    Book.where(id: id).update_counters(views_count: 1)
    Book.where(id: id).touch_all
    Book.where(id: id).update_all(views_count: 0)
    assert_equal 6, stored_version(id)
    assert_equal 0, stored_views(id)

    book.reload
    book.increment!(:views_count) # through update_counters, and it updates its own copy
    assert_equal 7, stored_version(id)
    assert_equal 7, book.lock_version
    book.touch # UPDATE .. SET updated_at, lock_version = read + 1 WHERE lock_version = read
    assert_equal 8, stored_version(id)
    assert_equal 8, book.lock_version

    form.title = "stale form"
    assert_raises(ActiveRecord::StaleObjectError) { form.save! }
    form.reload
    book.touch
    assert_raises(ActiveRecord::StaleObjectError) { form.touch } # a stale touch is refused too
    assert_equal 9, stored_version(id)
  end

  # --- versions the server writes --------------------------------------------------------

  def test_column_added_by_enable_as_the_locking_column
    conn.select_value("SELECT rowversion.enable('ar_notes', 'version')")
    Note.reset_column_information
    assert_equal 1, Note.new.version, "ActiveRecord reads the new column's DEFAULT 1"

    note = Note.create!(body: "a")
    assert_equal 1, stored_version(note.id, "ar_notes", "version")
    note.update!(body: "b")
    assert_equal 2, note.version
    assert_equal 2, stored_version(note.id, "ar_notes", "version")

    stale = Note.find(note.id)
    note.update!(body: "c")
    stale.body = "d"
    assert_raises(ActiveRecord::StaleObjectError) { stale.save! }
    assert_equal "c", Note.find(note.id).body
  end

  def test_insert_all_and_upsert_all_read_server_versions_back_with_returning
    enable
    now = Time.now
    # RETURNING reads the stored versions back. ActiveRecord sends nil as 0 (its LockingType),
    # so the server's NULL -> 1 is not reached through it; a supplied version is kept.
    rows = Book.insert_all(
      [{ title: "n1", lock_version: nil, created_at: now, updated_at: now },
       { title: "n2", lock_version: 7, created_at: now, updated_at: now }],
      returning: %w[id lock_version]
    ).to_a
    assert_equal [0, 7], rows.map { |r| r["lock_version"] }
    id = rows.first["id"]

    # upsert_all (INSERT .. ON CONFLICT DO UPDATE) without lock_version: the server writes
    # stored + 1 and RETURNING hands it back.
    rows = Book.upsert_all([{ id: id, title: "n1 upserted", created_at: now, updated_at: now }],
                           returning: %w[id lock_version]).to_a
    assert_equal [1], rows.map { |r| r["lock_version"] }
    # With the version it read: read + 1.
    rows = Book.upsert_all([{ id: id, title: "again", lock_version: 1, created_at: now, updated_at: now }],
                           returning: %w[lock_version]).to_a
    assert_equal [2], rows.map { |r| r["lock_version"] }
    # With an older one: refused.
    assert_raises(ActiveRecord::SerializationFailure) do
      Book.upsert_all([{ id: id, title: "old", lock_version: 0, created_at: now, updated_at: now }])
    end
    assert_equal 2, stored_version(id)
    # save has no RETURNING for lock_version in ActiveRecord 6.1: reload picks the server's up.
    assert_equal 2, Book.find(id).lock_version
  end
end
