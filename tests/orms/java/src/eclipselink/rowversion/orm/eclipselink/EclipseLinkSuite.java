package rowversion.orm.eclipselink;

import static rowversion.orm.Check.*;

import java.sql.SQLException;
import java.util.HashMap;
import java.util.Map;
import javax.persistence.EntityManager;
import javax.persistence.EntityManagerFactory;
import javax.persistence.EntityTransaction;
import javax.persistence.OptimisticLockException;
import javax.persistence.Persistence;
import javax.persistence.RollbackException;
import rowversion.orm.Check;
import rowversion.orm.eclipselink.Entities.EGenSelected;
import rowversion.orm.eclipselink.Entities.EGenSelectedStrict;
import rowversion.orm.eclipselink.Entities.EGenVersion;
import rowversion.orm.eclipselink.Entities.EItem;
import rowversion.orm.eclipselink.Entities.EStrict;

/** EclipseLink 2.7 @Version on tables with pg_rowversion's trigger. */
public final class EclipseLinkSuite {
    interface Work<T> { T run(EntityManager em) throws Exception; }

    static EntityManagerFactory emf;

    public static void main(String[] args) throws Exception {
        Check check = new Check("eclipselink " + org.eclipse.persistence.Version.getVersion());
        setUpSchema();
        emf = factory("rowversion");
        try {
            run(check);
        } finally {
            emf.close();
        }
        System.exit(check.finish());
    }

    static EntityManagerFactory factory(String unit) {
        Map<String, String> props = new HashMap<>();
        props.put("javax.persistence.jdbc.url", jdbcUrl());
        props.put("javax.persistence.jdbc.user", user());
        props.put("javax.persistence.jdbc.password", password());
        if (System.getenv("SHOW_SQL") != null) {
            props.put("eclipselink.logging.level.sql", "FINE");
            props.put("eclipselink.logging.level", "FINE");
            props.put("eclipselink.logging.parameters", "true");
        }
        return Persistence.createEntityManagerFactory(unit, props);
    }

    static final String[] LENIENT = {"e_item", "e_gen_version", "e_gen_selected"};
    static final String[] STRICT = {"e_strict", "e_gen_selected_strict"};

    static void setUpSchema() throws SQLException {
        sql("CREATE EXTENSION IF NOT EXISTS pg_rowversion",
            "DROP TABLE IF EXISTS e_item, e_strict, e_gen_version, e_gen_selected, e_gen_selected_strict");
        for (String t : new String[] {"e_item", "e_strict"}) {
            sql("CREATE TABLE " + t + " (id bigint PRIMARY KEY, name text, price integer NOT NULL,"
                + " seen integer NOT NULL DEFAULT 0, version bigint NOT NULL)");
        }
        for (String t : new String[] {"e_gen_version", "e_gen_selected", "e_gen_selected_strict"}) {
            // No version column: enable() adds it as bigint NOT NULL DEFAULT 1.
            sql("CREATE TABLE " + t + " (id bigint PRIMARY KEY, name text, price integer NOT NULL,"
                + " seen integer NOT NULL DEFAULT 0)");
        }
        for (String t : LENIENT) {
            sql("SELECT rowversion.enable('" + t + "', 'version', 'lenient', ignore_columns => '{seen}')");
        }
        for (String t : STRICT) {
            sql("SELECT rowversion.enable('" + t + "', 'version', 'strict', ignore_columns => '{seen}')");
        }
    }

    static void reset() throws SQLException {
        sql("TRUNCATE e_item, e_strict, e_gen_version, e_gen_selected, e_gen_selected_strict");
    }

    static <T> T tx(Work<T> work) throws Exception {
        return tx(emf, work);
    }

    /** One entity manager, one transaction, committed; rolled back if anything fails. */
    static <T> T tx(EntityManagerFactory f, Work<T> work) throws Exception {
        EntityManager em = f.createEntityManager();
        EntityTransaction t = em.getTransaction();
        t.begin();
        try {
            T result = work.run(em);
            t.commit();
            return result;
        } catch (Throwable e) {
            if (t.isActive()) t.rollback();
            throw e;
        } finally {
            em.close();
        }
    }

    static long stored(String table, long id) throws SQLException {
        return queryLong("SELECT version FROM " + table + " WHERE id = " + id);
    }

    static long storedPrice(String table, long id) throws SQLException {
        return queryLong("SELECT price FROM " + table + " WHERE id = " + id);
    }

    /** A commit that must fail the JPA way: RollbackException caused by OptimisticLockException. */
    static void expectOptimisticLock(EntityTransaction t) {
        Throwable e = fails(t::commit);
        isTrue(e instanceof RollbackException, "commit should throw RollbackException: " + chain(e));
        causeOf(e, OptimisticLockException.class);
        if (t.isActive()) t.rollback();
    }

    static int update(EntityManager em, String jpql) {
        return em.createQuery(jpql).executeUpdate();
    }

    static int nativeUpdate(EntityManager em, String sql) {
        return em.createNativeQuery(sql).executeUpdate();
    }

    static void run(Check check) {
        check.test("two saves of one object: EclipseLink's version and the stored one agree", () -> {
            reset();
            tx(em -> { em.persist(new EItem(1, "a", 100)); return null; });
            eq(1L, stored("e_item", 1), "EclipseLink inserts version 1; the trigger keeps it");
            EntityManager em = emf.createEntityManager();
            try {
                EItem item = em.find(EItem.class, 1L);
                em.getTransaction().begin();
                item.price = 110;
                em.getTransaction().commit();
                eq(2L, item.version, "entity version after the first save");
                eq(2L, stored("e_item", 1), "stored version after the first save (no double increment)");
                em.getTransaction().begin();
                item.price = 120;
                em.getTransaction().commit();
                eq(3L, item.version, "entity version after the second save");
                eq(3L, stored("e_item", 1), "stored version after the second save");
            } finally {
                em.close();
            }
            for (int price : new int[] {130, 140}) {
                tx(x -> { x.find(EItem.class, 1L).price = price; return null; });
            }
            eq(5L, stored("e_item", 1), "stored version after four saves");
            eq(140L, storedPrice("e_item", 1), "price");
        });

        check.test("two editors: the stale commit gets RollbackException(OptimisticLockException), the winner's value is kept", () -> {
            reset();
            tx(em -> { em.persist(new EItem(1, "a", 100)); return null; });
            EntityManager first = emf.createEntityManager();
            EntityManager second = emf.createEntityManager();
            try {
                EItem stale = first.find(EItem.class, 1L);
                EItem fresh = second.find(EItem.class, 1L);
                second.getTransaction().begin();
                fresh.price = 120;
                second.getTransaction().commit();
                first.getTransaction().begin();
                stale.price = 110;
                expectOptimisticLock(first.getTransaction());
            } finally {
                first.close();
                second.close();
            }
            eq(120L, storedPrice("e_item", 1), "the winner's price");
            eq(2L, stored("e_item", 1), "the winner's version");
        });

        check.test("a detached, stale object given to merge() is refused with OptimisticLockException", () -> {
            reset();
            tx(em -> { em.persist(new EItem(1, "a", 100)); return null; });
            EItem detached = tx(em -> em.find(EItem.class, 1L));
            tx(em -> { em.find(EItem.class, 1L).price = 120; return null; });
            detached.price = 110;
            Throwable e = fails(() -> tx(em -> { em.merge(detached); em.flush(); return null; }));
            causeOf(e, OptimisticLockException.class);
            eq(120L, storedPrice("e_item", 1), "the winner's price");
        });

        check.test("JPQL bulk update not naming the version: EclipseLink adds VERSION = VERSION + 1, kept as is (+1 once); a stale entity is then refused", () -> {
            reset();
            tx(em -> { em.persist(new EItem(1, "a", 100)); return null; });
            EntityManager editor = emf.createEntityManager();
            try {
                EItem loaded = editor.find(EItem.class, 1L);
                eq(1, tx(em -> update(em, "UPDATE EItem e SET e.price = 150 WHERE e.id = 1")), "rows");
                eq(2L, stored("e_item", 1), "one bulk update: +1, not +2");
                editor.getTransaction().begin();
                loaded.price = 110;
                expectOptimisticLock(editor.getTransaction());
            } finally {
                editor.close();
            }
            eq(150L, storedPrice("e_item", 1), "the bulk update's price is kept");
        });

        check.test("JPQL bulk update with 'e.version = e.version + 1': +1 exactly, no double increment", () -> {
            reset();
            tx(em -> { em.persist(new EItem(1, "a", 100)); return null; });
            tx(em -> update(em, "UPDATE EItem e SET e.price = 150, e.version = e.version + 1 WHERE e.id = 1"));
            eq(2L, stored("e_item", 1), "after one bulk update naming the version");
            tx(em -> update(em, "UPDATE EItem e SET e.price = 160, e.version = e.version + 1 WHERE e.id = 1"));
            eq(3L, stored("e_item", 1), "after two");
            eq(3L, tx(em -> em.find(EItem.class, 1L)).version, "what EclipseLink reads back");
        });

        check.test("ignored column: a JPQL bulk update moves the version (EclipseLink names it), a native one does not", () -> {
            reset();
            tx(em -> { em.persist(new EItem(1, "a", 100)); return null; });
            tx(em -> update(em, "UPDATE EItem e SET e.seen = e.seen + 1 WHERE e.id = 1"));
            eq(2L, stored("e_item", 1), "JPQL touching only 'seen': EclipseLink's own VERSION + 1");
            tx(em -> nativeUpdate(em, "UPDATE e_item SET seen = seen + 1 WHERE id = 1"));
            eq(2L, stored("e_item", 1), "native SQL touching only 'seen': version kept");
            eq(2L, queryLong("SELECT seen FROM e_item WHERE id = 1"), "seen");
        });

        check.test("raw SQL through EclipseLink's connection: no version -> +1; read+1 kept; stale -> 40001", () -> {
            reset();
            tx(em -> { em.persist(new EItem(1, "a", 100)); return null; });
            tx(em -> nativeUpdate(em, "UPDATE e_item SET price = 101 WHERE id = 1"));
            eq(2L, stored("e_item", 1), "native query without the version");
            tx(em -> {
                java.sql.Connection c = em.unwrap(java.sql.Connection.class);
                try (java.sql.Statement st = c.createStatement()) {
                    st.executeUpdate("UPDATE e_item SET price = 102 WHERE id = 1");
                }
                return null;
            });
            eq(3L, stored("e_item", 1), "JDBC update on em.unwrap(Connection) without the version");
            eq(1, tx(em -> nativeUpdate(em,
                "UPDATE e_item SET price = 103, version = 4 WHERE id = 1 AND version = 3")), "rows");
            eq(4L, stored("e_item", 1), "SET version = read+1 is kept as is");
            Throwable e = fails(() -> tx(em -> nativeUpdate(em,
                "UPDATE e_item SET price = 104, version = 3 WHERE id = 1")));
            expectSqlState(e, "40001", "row version conflict");
            expectSqlState(e, "40001", "expected version 3, found version 4");
            System.out.println("     (a stale native update surfaces as " + chain(e) + ")");
            Throwable nul = fails(() -> tx(em -> nativeUpdate(em,
                "UPDATE e_item SET version = NULL WHERE id = 1")));
            expectSqlState(nul, "22004", null);
            eq(103L, storedPrice("e_item", 1), "price after the refused updates");
            eq(4L, tx(em -> em.find(EItem.class, 1L)).version, "EclipseLink reads the version the trigger kept");
        });

        check.test("shared cache: a native update leaves a stale cached version, the next save is refused until evicted", () -> {
            reset();
            EntityManagerFactory cached = factory("rowversion-cached");
            try {
                tx(cached, em -> { em.persist(new EItem(1, "a", 100)); return null; });
                tx(cached, em -> em.find(EItem.class, 1L));   // now in the shared cache, version 1
                tx(cached, em -> nativeUpdate(em, "UPDATE e_item SET price = 101 WHERE id = 1"));
                eq(2L, stored("e_item", 1), "the trigger moved the version");
                EntityManager em = cached.createEntityManager();
                try {
                    EItem item = em.find(EItem.class, 1L);
                    eq(1L, item.version, "find() answers from the cache: the old version");
                    em.getTransaction().begin();
                    item.price = 110;
                    expectOptimisticLock(em.getTransaction());
                } finally {
                    em.close();
                }
                cached.getCache().evict(EItem.class);
                tx(cached, x -> { x.find(EItem.class, 1L).price = 110; return null; });
                eq(3L, stored("e_item", 1), "after evicting, the save passes");
                eq(110L, storedPrice("e_item", 1), "price");
            } finally {
                cached.close();
            }
        });

        check.test("strict mode: entity saves and JPQL bulk updates pass; native SQL without the version gets 42P10", () -> {
            reset();
            tx(em -> { em.persist(new EStrict(1, "a", 100)); return null; });
            tx(em -> { em.find(EStrict.class, 1L).price = 110; return null; });
            tx(em -> { em.find(EStrict.class, 1L).price = 120; return null; });
            eq(3L, stored("e_strict", 1), "insert and two entity saves");
            tx(em -> update(em, "UPDATE EStrict e SET e.price = 130, e.version = e.version + 1 WHERE e.id = 1"));
            eq(4L, stored("e_strict", 1), "bulk update naming the version");
            tx(em -> update(em, "UPDATE EStrict e SET e.price = 140 WHERE e.id = 1"));
            eq(5L, stored("e_strict", 1), "bulk update not naming it: EclipseLink adds it, so strict mode accepts");
            Throwable raw = fails(() -> tx(em -> nativeUpdate(em, "UPDATE e_strict SET price = 150 WHERE id = 1")));
            expectSqlState(raw, "42P10", null);
            System.out.println("     (surfaces as " + chain(raw) + ")");
            tx(em -> nativeUpdate(em, "UPDATE e_strict SET seen = seen + 1 WHERE id = 1"));
            eq(5L, stored("e_strict", 1), "a native update of ignored columns only is let through, version kept");
            eq(140L, storedPrice("e_strict", 1), "price");
            EntityManager first = emf.createEntityManager();
            try {
                EStrict stale = first.find(EStrict.class, 1L);
                tx(em -> { em.find(EStrict.class, 1L).price = 150; return null; });
                first.getTransaction().begin();
                stale.price = 160;
                expectOptimisticLock(first.getTransaction());
            } finally {
                first.close();
            }
            eq(150L, storedPrice("e_strict", 1), "the winner's price");
        });

        check.test("server-generated version, SELECTED_COLUMNS locking + @ReturnInsert/@ReturnUpdate (lenient): read back after every save", () -> {
            reset();
            EGenSelected created = tx(em -> { EGenSelected g = new EGenSelected(1, "a", 100); em.persist(g); return g; });
            eq(1L, created.version, "version returned by the INSERT (column DEFAULT 1)");
            EntityManager em = emf.createEntityManager();
            try {
                EGenSelected item = em.find(EGenSelected.class, 1L);
                em.getTransaction().begin();
                item.price = 110;
                em.getTransaction().commit();
                eq(2L, item.version, "returned by the first UPDATE");
                em.getTransaction().begin();
                item.price = 120;
                em.getTransaction().commit();
                eq(3L, item.version, "returned by the second UPDATE");
            } finally {
                em.close();
            }
            eq(3L, stored("e_gen_selected", 1), "stored version");
        });

        check.test("server-generated version (SELECTED_COLUMNS): two editors, the stale commit is refused (RollbackException; NPE inside, not OptimisticLockException)", () -> {
            reset();
            tx(em -> { em.persist(new EGenSelected(1, "a", 100)); return null; });
            EntityManager first = emf.createEntityManager();
            try {
                EGenSelected stale = first.find(EGenSelected.class, 1L);
                tx(em -> { em.find(EGenSelected.class, 1L).price = 120; return null; });
                EntityTransaction t = first.getTransaction();
                t.begin();
                stale.price = 110;
                Throwable e = fails(t::commit);
                if (t.isActive()) t.rollback();
                // UPDATE ... WHERE version = <read> RETURNING version matches no row; EclipseLink
                // 2.7.11 then gets no row count back and throws a NullPointerException from
                // DatabaseQueryMechanism.updateObjectForWriteWithChangeSet instead of its
                // OptimisticLockException. The save is refused all the same.
                isTrue(e instanceof RollbackException, "RollbackException: " + chain(e));
                System.out.println("     (the stale commit surfaces as " + chain(e) + ")");
                boolean optimistic;
                try {
                    causeOf(e, OptimisticLockException.class);
                    optimistic = true;
                } catch (AssertionError notOptimistic) {
                    causeOf(e, NullPointerException.class);
                    optimistic = false;
                }
                System.out.println("     (OptimisticLockException: " + optimistic + ")");
            } finally {
                first.close();
            }
            eq(120L, storedPrice("e_gen_selected", 1), "the winner's price");
            eq(2L, stored("e_gen_selected", 1), "the winner's version");
            tx(em -> update(em, "UPDATE EGenSelected e SET e.price = 130 WHERE e.id = 1"));
            eq(3L, stored("e_gen_selected", 1), "a plain JPQL bulk update: the trigger moves it");
        });

        check.test("server-generated version (SELECTED_COLUMNS) in strict mode: the version is not in SET, saves get 42P10", () -> {
            reset();
            EGenSelectedStrict created = tx(em -> {
                EGenSelectedStrict g = new EGenSelectedStrict(1, "a", 100); em.persist(g); return g; });
            eq(1L, created.version, "insert works and returns 1");
            Throwable e = fails(() -> tx(em -> { em.find(EGenSelectedStrict.class, 1L).price = 110; return null; }));
            expectSqlState(e, "42P10", null);
            eq(100L, storedPrice("e_gen_selected_strict", 1), "price unchanged");
        });

        check.test("@Version with @ReturnInsert/@ReturnUpdate is refused by EclipseLink at deployment", () -> {
            Throwable e = fails(() -> {
                EntityManagerFactory f = factory("rowversion-returning-version");
                try {
                    f.createEntityManager().close();   // deploys the unit
                } finally {
                    f.close();
                }
            });
            String all = String.valueOf(e.getMessage());
            for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) all += c.getMessage();
            isTrue(all.contains("ReturningPolicy contains field, [version] which is not supported")
                   && all.contains("used for locking"), "deployment error: " + all);
        });
    }
}
