package rowversion.orm.eclipselink;

import javax.persistence.Column;
import javax.persistence.Entity;
import javax.persistence.Id;
import javax.persistence.MappedSuperclass;
import javax.persistence.Table;
import javax.persistence.Version;
import org.eclipse.persistence.annotations.Customizer;
import org.eclipse.persistence.annotations.ReturnInsert;
import org.eclipse.persistence.annotations.ReturnUpdate;

/** The mapped classes. Tables are created by the test with plain SQL (no DDL generation). */
public final class Entities {
    private Entities() {}

    @MappedSuperclass
    public abstract static class Item {
        @Id Long id;
        String name;
        int price;
        int seen;   // bookkeeping column, listed in ignore_columns
    }

    /** The usual JPA pattern: @Version, EclipseLink computes read+1 itself. */
    @Entity(name = "EItem") @Table(name = "e_item")
    public static class EItem extends Item {
        @Version long version;
        public EItem() {}
        EItem(long id, String name, int price) { this.id = id; this.name = name; this.price = price; }
    }

    /** The same, on a table enabled in strict mode. */
    @Entity(name = "EStrict") @Table(name = "e_strict")
    public static class EStrict extends Item {
        @Version long version;
        public EStrict() {}
        EStrict(long id, String name, int price) { this.id = id; this.name = name; this.price = price; }
    }

    /** Server-generated attempt 1: @Version marked as returned by INSERT/UPDATE RETURNING. */
    @Entity(name = "EGenVersion") @Table(name = "e_gen_version")
    @Customizer(VersionFieldType.class)
    public static class EGenVersion extends Item {
        @Version @ReturnInsert(returnOnly = true) @ReturnUpdate
        @Column(name = "version")
        Long version;
        public EGenVersion() {}
        EGenVersion(long id, String name, int price) { this.id = id; this.name = name; this.price = price; }
    }

    /** Server-generated attempt 2: no @Version; RETURNING reads the trigger's version back
     *  after every INSERT and UPDATE, and SELECTED_COLUMNS optimistic locking (set by
     *  ServerVersionLocking) puts the version read in the UPDATE's WHERE clause. */
    @Entity(name = "EGenSelected") @Table(name = "e_gen_selected")
    @Customizer(ServerVersionLocking.class)
    public static class EGenSelected extends Item {
        @ReturnInsert(returnOnly = true) @ReturnUpdate
        @Column(name = "version")
        Long version;
        public EGenSelected() {}
        EGenSelected(long id, String name, int price) { this.id = id; this.name = name; this.price = price; }
    }

    /** The same, on a table enabled in strict mode. */
    @Entity(name = "EGenSelectedStrict") @Table(name = "e_gen_selected_strict")
    @Customizer(ServerVersionLocking.class)
    public static class EGenSelectedStrict extends Item {
        @ReturnInsert(returnOnly = true) @ReturnUpdate
        @Column(name = "version")
        Long version;
        public EGenSelectedStrict() {}
        EGenSelectedStrict(long id, String name, int price) { this.id = id; this.name = name; this.price = price; }
    }
}
