package rowversion.orm;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Objects;
import java.util.Properties;

/** A tiny test runner shared by the Hibernate and the EclipseLink suites: named checks,
 *  assertions, a search of an exception's cause chain, and an admin JDBC connection. */
public final class Check {
    public interface Body { void run() throws Exception; }

    private final String suite;
    private int passed, failed;

    public Check(String suite) { this.suite = suite; }

    public void test(String name, Body body) {
        try {
            body.run();
            passed++;
            System.out.println("ok   " + suite + ": " + name);
        } catch (Throwable t) {
            failed++;
            System.out.println("FAIL " + suite + ": " + name + ": " + t);
            t.printStackTrace(System.out);
        }
    }

    /** Prints the final line, "N passed, M failed", and gives the exit status. */
    public int finish() {
        System.out.println(passed + " passed, " + failed + " failed");
        return failed == 0 ? 0 : 1;
    }

    // ---- assertions -------------------------------------------------------------------

    public static void eq(Object expected, Object actual, String what) {
        if (!Objects.equals(expected, actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but was <" + actual + ">");
        }
    }

    public static void isTrue(boolean condition, String what) {
        if (!condition) throw new AssertionError(what);
    }

    /** Runs body, which must throw; returns what it threw. */
    public static Throwable fails(Body body) {
        try {
            body.run();
        } catch (Throwable t) {
            return t;
        }
        throw new AssertionError("expected an exception, none was thrown");
    }

    /** The first throwable of this class in t's cause chain, else an AssertionError. */
    public static <T extends Throwable> T causeOf(Throwable t, Class<T> cls) {
        for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (cls.isInstance(c)) return cls.cast(c);
            if (c instanceof SQLException && ((SQLException) c).getNextException() != null
                    && cls.isInstance(((SQLException) c).getNextException())) {
                return cls.cast(((SQLException) c).getNextException());
            }
        }
        throw new AssertionError("no " + cls.getName() + " in the cause chain of " + chain(t), t);
    }

    /** The SQLSTATE of the first SQLException in t's cause chain (or its next exception). */
    public static String sqlState(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c instanceof SQLException) {
                SQLException e = (SQLException) c;
                for (SQLException n = e; n != null; n = n.getNextException()) {
                    if (n.getSQLState() != null) return n.getSQLState();
                }
            }
        }
        return null;
    }

    /** The server's message of the first SQLException in the chain (with DETAIL, if any). */
    public static String serverMessage(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c instanceof SQLException) {
                SQLException e = (SQLException) c;
                for (SQLException n = e; n != null; n = n.getNextException()) {
                    if (n.getSQLState() != null) return n.getMessage();
                }
            }
        }
        return null;
    }

    public static String chain(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (sb.length() > 0) sb.append(" <- ");
            sb.append(c.getClass().getName());
        }
        return sb.toString();
    }

    public static void expectSqlState(Throwable t, String state, String messagePart) {
        eq(state, sqlState(t), "SQLSTATE of " + chain(t));
        if (messagePart != null) {
            String msg = serverMessage(t);
            isTrue(msg != null && msg.contains(messagePart),
                   "server message should contain \"" + messagePart + "\": " + msg);
        }
    }

    // ---- the server ---------------------------------------------------------------------

    /** JDBC needs TCP: 127.0.0.1 (or PGTCPHOST) and PGTCPPORT, else PGPORT. */
    public static String jdbcUrl() {
        String host = env("PGTCPHOST", "127.0.0.1");
        String port = env("PGTCPPORT", env("PGPORT", "5432"));
        String db = env("PGDATABASE", "postgres");
        return "jdbc:postgresql://" + host + ":" + port + "/" + db + "?ApplicationName=pg_rowversion-orm-java";
    }

    public static String user() { return env("PGUSER", "postgres"); }

    public static String password() { return env("PGPASSWORD", ""); }

    private static String env(String name, String fallback) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? fallback : v;
    }

    public static Connection admin() throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user());
        if (!password().isEmpty()) p.setProperty("password", password());
        Connection c = DriverManager.getConnection(jdbcUrl(), p);
        c.setAutoCommit(true);
        return c;
    }

    public static void sql(String... statements) throws SQLException {
        try (Connection c = admin(); Statement s = c.createStatement()) {
            for (String stmt : statements) s.execute(stmt);
        }
    }

    public static long queryLong(String query) throws SQLException {
        try (Connection c = admin(); Statement s = c.createStatement(); ResultSet r = s.executeQuery(query)) {
            if (!r.next()) throw new AssertionError("no row from " + query);
            return r.getLong(1);
        }
    }
}
