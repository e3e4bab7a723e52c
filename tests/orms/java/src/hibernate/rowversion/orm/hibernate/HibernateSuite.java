package rowversion.orm.hibernate;

import static rowversion.orm.Check.*;

import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import org.hibernate.Session;
import org.hibernate.SessionFactory;
import org.hibernate.StaleObjectStateException;
import org.hibernate.Transaction;
import org.hibernate.cfg.Configuration;
import rowversion.orm.Check;
import rowversion.orm.hibernate.Entities.HGen;
import rowversion.orm.hibernate.Entities.HGenStrict;
import rowversion.orm.hibernate.Entities.HItem;
import rowversion.orm.hibernate.Entities.HStrict;

/** Hibernate 3.6 @Version on tables with pg_rowversion's trigger. */
public final class HibernateSuite {
    interface Work<T> { T run(Session s) throws Exception; }

    static SessionFactory factory;

    public static void main(String[] args) throws Exception {
        Check check = new Check("hibernate " + org.hibernate.Version.class.getPackage().getImplementationVersion());
        setUpSchema();
        Configuration cfg = new Configuration()
            .setProperty("hibernate.connection.driver_class", "org.postgresql.Driver")
            .setProperty("hibernate.connection.url", jdbcUrl())
            .setProperty("hibernate.connection.username", user())
            .setProperty("hibernate.connection.password", password())
            .setProperty("hibernate.connection.pool_size", "4")
            .setProperty("hibernate.dialect", "org.hibernate.dialect.PostgreSQLDialect")
            .setProperty("hibernate.show_sql", System.getenv("SHOW_SQL") != null ? "true" : "false")
            .addAnnotatedClass(HItem.class)
            .addAnnotatedClass(HStrict.class)
            .addAnnotatedClass(HGen.class)
            .addAnnotatedClass(HGenStrict.class);
        factory = cfg.buildSessionFactory();
        try {
            run(check);
        } finally {
            factory.close();
        }
        System.exit(check.finish());
    }

    static void setUpSchema() throws SQLException {
        sql("CREATE EXTENSION IF NOT EXISTS pg_rowversion",
            "DROP TABLE IF EXISTS h_item, h_strict, h_gen, h_gen_strict");
        for (String t : new String[] {"h_item", "h_strict"}) {
            sql("CREATE TABLE " + t + " (id bigint PRIMARY KEY, name text, price integer NOT NULL,"
                + " seen integer NOT NULL DEFAULT 0, version bigint NOT NULL)");
        }
        for (String t : new String[] {"h_gen", "h_gen_strict"}) {
            // No version column: enable() adds it as bigint NOT NULL DEFAULT 1.
            sql("CREATE TABLE " + t + " (id bigint PRIMARY KEY, name text, price integer NOT NULL,"
                + " seen integer NOT NULL DEFAULT 0)");
        }
        sql("SELECT rowversion.enable('h_item', 'version', 'lenient', ignore_columns => '{seen}')",
            "SELECT rowversion.enable('h_strict', 'version', 'strict', ignore_columns => '{seen}')",
            "SELECT rowversion.enable('h_gen', 'version', 'lenient', ignore_columns => '{seen}')",
            "SELECT rowversion.enable('h_gen_strict', 'version', 'strict', ignore_columns => '{seen}')");
    }

    static void reset() throws SQLException {
        sql("TRUNCATE h_item, h_strict, h_gen, h_gen_strict");
    }

    /** One session, one transaction, committed; rolled back if the work or the commit fails. */
    static <T> T tx(Work<T> work) throws Exception {
        Session s = factory.openSession();
        Transaction t = s.beginTransaction();
        try {
            T result = work.run(s);
            t.commit();
            return result;
        } catch (Throwable e) {
            if (t.isActive()) t.rollback();
            throw e;
        } finally {
            s.close();
        }
    }

    static long stored(String table, long id) throws SQLException {
        return queryLong("SELECT version FROM " + table + " WHERE id = " + id);
    }

    static long storedPrice(String table, long id) throws SQLException {
        return queryLong("SELECT price FROM " + table + " WHERE id = " + id);
    }

    static void run(Check check) {
        check.test("two saves of one object: Hibernate's version and the stored one agree", () -> {
            reset();
            tx(s -> s.save(new HItem(1, "a", 100)));
            eq(0L, stored("h_item", 1), "Hibernate inserts version 0; the trigger keeps it");
            // Two saves of one loaded object, in one session.
            Session s = factory.openSession();
            try {
                HItem item = (HItem) s.get(HItem.class, 1L);
                Transaction t = s.beginTransaction();
                item.price = 110;
                t.commit();
                eq(1L, item.version, "entity version after the first save");
                eq(1L, stored("h_item", 1), "stored version after the first save (no double increment)");
                t = s.beginTransaction();
                item.price = 120;
                t.commit();
                eq(2L, item.version, "entity version after the second save");
                eq(2L, stored("h_item", 1), "stored version after the second save");
            } finally {
                s.close();
            }
            // And two more saves, each in its own session.
            for (int price : new int[] {130, 140}) {
                tx(x -> { ((HItem) x.get(HItem.class, 1L)).price = price; return null; });
            }
            eq(4L, stored("h_item", 1), "stored version after four saves");
            eq(140L, storedPrice("h_item", 1), "price");
        });

        check.test("two editors: the stale save gets StaleObjectStateException, the winner's value is kept", () -> {
            reset();
            tx(s -> s.save(new HItem(1, "a", 100)));
            Session first = factory.openSession();
            Session second = factory.openSession();
            try {
                HItem stale = (HItem) first.get(HItem.class, 1L);
                HItem fresh = (HItem) second.get(HItem.class, 1L);
                Transaction t2 = second.beginTransaction();
                fresh.price = 120;
                t2.commit();
                Transaction t1 = first.beginTransaction();
                stale.price = 110;
                Throwable e = fails(t1::commit);
                causeOf(e, StaleObjectStateException.class);
                if (t1.isActive()) t1.rollback();
            } finally {
                first.close();
                second.close();
            }
            eq(120L, storedPrice("h_item", 1), "the winner's price");
            eq(1L, stored("h_item", 1), "the winner's version");
        });

        check.test("a detached, stale object given to update() is refused with StaleObjectStateException", () -> {
            reset();
            tx(s -> s.save(new HItem(1, "a", 100)));
            HItem detached = tx(s -> (HItem) s.get(HItem.class, 1L));
            tx(s -> { ((HItem) s.get(HItem.class, 1L)).price = 120; return null; });
            detached.price = 110;
            Throwable e = fails(() -> tx(s -> { s.update(detached); return null; }));
            causeOf(e, StaleObjectStateException.class);
            eq(120L, storedPrice("h_item", 1), "the winner's price");
        });

        check.test("HQL bulk update without the version (lenient): the trigger moves it, a stale entity is then refused", () -> {
            reset();
            tx(s -> s.save(new HItem(1, "a", 100)));
            Session editor = factory.openSession();
            try {
                HItem loaded = (HItem) editor.get(HItem.class, 1L);
                int n = tx(s -> s.createQuery("update HItem set price = :p where id = :id")
                    .setParameter("p", 150).setParameter("id", 1L).executeUpdate());
                eq(1, n, "rows updated");
                eq(1L, stored("h_item", 1), "plain HQL bulk update: the trigger wrote stored+1");
                Transaction t = editor.beginTransaction();
                loaded.price = 110;
                Throwable e = fails(t::commit);
                causeOf(e, StaleObjectStateException.class);
                if (t.isActive()) t.rollback();
            } finally {
                editor.close();
            }
            eq(150L, storedPrice("h_item", 1), "the bulk update's price is kept");
        });

        check.test("HQL 'update versioned': version+1 exactly, no double increment", () -> {
            reset();
            tx(s -> s.save(new HItem(1, "a", 100)));
            tx(s -> s.createQuery("update versioned HItem set price = :p where id = :id")
                .setParameter("p", 150).setParameter("id", 1L).executeUpdate());
            eq(1L, stored("h_item", 1), "after one versioned bulk update");
            tx(s -> s.createQuery("update versioned HItem set price = :p where id = :id")
                .setParameter("p", 160).setParameter("id", 1L).executeUpdate());
            eq(2L, stored("h_item", 1), "after two versioned bulk updates");
            HItem item = tx(s -> (HItem) s.get(HItem.class, 1L));
            eq(2L, item.version, "what Hibernate reads back");
        });

        check.test("HQL bulk update of an ignored column only: the version does not move", () -> {
            reset();
            tx(s -> s.save(new HItem(1, "a", 100)));
            tx(s -> s.createQuery("update HItem set seen = seen + 1 where id = :id")
                .setParameter("id", 1L).executeUpdate());
            eq(0L, stored("h_item", 1), "version after touching only 'seen'");
        });

        check.test("raw SQL through Hibernate's connection: no version -> +1; read+1 kept; stale -> 40001", () -> {
            reset();
            tx(s -> s.save(new HItem(1, "a", 100)));
            tx(s -> s.createSQLQuery("UPDATE h_item SET price = 101 WHERE id = 1").executeUpdate());
            eq(1L, stored("h_item", 1), "native query without the version");
            tx(s -> { s.doWork(c -> exec(c, "UPDATE h_item SET price = 102 WHERE id = 1")); return null; });
            eq(2L, stored("h_item", 1), "doWork() JDBC update without the version");
            int n = tx(s -> s.createSQLQuery(
                "UPDATE h_item SET price = 103, version = 3 WHERE id = 1 AND version = 2").executeUpdate());
            eq(1, n, "rows");
            eq(3L, stored("h_item", 1), "SET version = read+1 is kept as is");
            Throwable e = fails(() -> tx(s -> s.createSQLQuery(
                "UPDATE h_item SET price = 104, version = 2 WHERE id = 1").executeUpdate()));
            expectSqlState(e, "40001", "row version conflict");
            expectSqlState(e, "40001", "expected version 2, found version 3");
            // Hibernate's SQLStateConverter maps SQLSTATE 40001 to LockAcquisitionException.
            causeOf(e, org.hibernate.exception.LockAcquisitionException.class);
            Throwable j = fails(() -> tx(s -> { s.doWork(c -> exec(c,
                "UPDATE h_item SET price = 104, version = 1 WHERE id = 1")); return null; }));
            expectSqlState(j, "40001", "row version conflict");
            Throwable nul = fails(() -> tx(s -> s.createSQLQuery(
                "UPDATE h_item SET version = NULL WHERE id = 1").executeUpdate()));
            expectSqlState(nul, "22004", null);
            eq(103L, storedPrice("h_item", 1), "price after the refused updates");
            HItem item = tx(s -> (HItem) s.get(HItem.class, 1L));
            eq(3L, item.version, "Hibernate reads the version the trigger kept");
        });

        check.test("strict mode: entity saves and 'update versioned' pass; plain HQL and raw SQL without the version get 42P10", () -> {
            reset();
            tx(s -> s.save(new HStrict(1, "a", 100)));
            eq(0L, stored("h_strict", 1), "inserted version");
            tx(s -> { ((HStrict) s.get(HStrict.class, 1L)).price = 110; return null; });
            tx(s -> { ((HStrict) s.get(HStrict.class, 1L)).price = 120; return null; });
            eq(2L, stored("h_strict", 1), "two entity saves");
            tx(s -> s.createQuery("update versioned HStrict set price = 130 where id = 1").executeUpdate());
            eq(3L, stored("h_strict", 1), "versioned bulk update");
            Throwable hql = fails(() -> tx(s -> s.createQuery(
                "update HStrict set price = 140 where id = 1").executeUpdate()));
            expectSqlState(hql, "42P10", null);
            Throwable raw = fails(() -> tx(s -> s.createSQLQuery(
                "UPDATE h_strict SET price = 140 WHERE id = 1").executeUpdate()));
            expectSqlState(raw, "42P10", null);
            tx(s -> s.createQuery("update HStrict set seen = seen + 1 where id = 1").executeUpdate());
            eq(3L, stored("h_strict", 1), "an update of ignored columns only is let through, version kept");
            eq(130L, storedPrice("h_strict", 1), "price");
            // Two editors in strict mode: still Hibernate's own exception.
            Session first = factory.openSession();
            try {
                HStrict stale = (HStrict) first.get(HStrict.class, 1L);
                tx(s -> { ((HStrict) s.get(HStrict.class, 1L)).price = 150; return null; });
                Transaction t = first.beginTransaction();
                stale.price = 160;
                causeOf(fails(t::commit), StaleObjectStateException.class);
                if (t.isActive()) t.rollback();
            } finally {
                first.close();
            }
            eq(150L, storedPrice("h_strict", 1), "the winner's price");
        });

        check.test("server-generated version (@Generated(ALWAYS), lenient): inserted 1, read back after every save", () -> {
            reset();
            HGen created = tx(s -> { HGen g = new HGen(1, "a", 100); s.save(g); return g; });
            eq(1L, created.version, "version read back after insert (column DEFAULT 1)");
            Session s = factory.openSession();
            try {
                HGen item = (HGen) s.get(HGen.class, 1L);
                Transaction t = s.beginTransaction();
                item.price = 110;
                t.commit();
                eq(2L, item.version, "read back after the first save");
                t = s.beginTransaction();
                item.price = 120;
                t.commit();
                eq(3L, item.version, "read back after the second save");
            } finally {
                s.close();
            }
            eq(3L, stored("h_gen", 1), "stored version");
        });

        check.test("server-generated version: two editors, the stale save gets StaleObjectStateException", () -> {
            reset();
            tx(s -> s.save(new HGen(1, "a", 100)));
            Session first = factory.openSession();
            try {
                HGen stale = (HGen) first.get(HGen.class, 1L);
                tx(s -> { ((HGen) s.get(HGen.class, 1L)).price = 120; return null; });
                Transaction t = first.beginTransaction();
                stale.price = 110;
                causeOf(fails(t::commit), StaleObjectStateException.class);
                if (t.isActive()) t.rollback();
            } finally {
                first.close();
            }
            eq(120L, storedPrice("h_gen", 1), "the winner's price");
            eq(2L, stored("h_gen", 1), "the winner's version");
            // Plain bulk HQL: the trigger moves the version here too.
            tx(s -> s.createQuery("update HGen set price = 130 where id = 1").executeUpdate());
            eq(3L, stored("h_gen", 1), "after a plain bulk update");
        });

        check.test("server-generated version in strict mode: Hibernate leaves the version out of SET, so saves get 42P10", () -> {
            reset();
            HGenStrict created = tx(s -> { HGenStrict g = new HGenStrict(1, "a", 100); s.save(g); return g; });
            eq(1L, created.version, "insert works and reads back 1");
            Throwable e = fails(() -> tx(s -> {
                ((HGenStrict) s.get(HGenStrict.class, 1L)).price = 110; return null; }));
            expectSqlState(e, "42P10", null);
            System.out.println("     (surfaces as " + chain(e) + ")");
            eq(100L, storedPrice("h_gen_strict", 1), "price unchanged");
        });
    }

    static void exec(Connection c, String statement) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.executeUpdate(statement);
        }
    }
}
