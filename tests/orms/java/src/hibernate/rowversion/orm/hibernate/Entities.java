package rowversion.orm.hibernate;

import javax.persistence.Column;
import javax.persistence.Entity;
import javax.persistence.Id;
import javax.persistence.MappedSuperclass;
import javax.persistence.Table;
import javax.persistence.Version;
import org.hibernate.annotations.Generated;
import org.hibernate.annotations.GenerationTime;

/** The mapped classes. Tables are created by the test with plain SQL (no hbm2ddl). */
final class Entities {
    private Entities() {}

    @MappedSuperclass
    abstract static class Item {
        @Id Long id;
        String name;
        int price;
        int seen;   // bookkeeping column, listed in ignore_columns

        abstract Long version();
    }

    /** The usual Hibernate pattern: @Version, Hibernate computes read+1 itself. */
    @Entity(name = "HItem") @Table(name = "h_item")
    static class HItem extends Item {
        @Version long version;
        HItem() {}
        HItem(long id, String name, int price) { this.id = id; this.name = name; this.price = price; }
        Long version() { return version; }
    }

    /** The same, on a table enabled in strict mode. */
    @Entity(name = "HStrict") @Table(name = "h_strict")
    static class HStrict extends Item {
        @Version long version;
        HStrict() {}
        HStrict(long id, String name, int price) { this.id = id; this.name = name; this.price = price; }
        Long version() { return version; }
    }

    /** A server-generated version: the trigger moves it, Hibernate reads it back. */
    @Entity(name = "HGen") @Table(name = "h_gen")
    static class HGen extends Item {
        @Version @Generated(GenerationTime.ALWAYS)
        @Column(insertable = false, updatable = false)
        Long version;
        HGen() {}
        HGen(long id, String name, int price) { this.id = id; this.name = name; this.price = price; }
        Long version() { return version; }
    }

    /** The same, on a table enabled in strict mode. */
    @Entity(name = "HGenStrict") @Table(name = "h_gen_strict")
    static class HGenStrict extends Item {
        @Version @Generated(GenerationTime.ALWAYS)
        @Column(insertable = false, updatable = false)
        Long version;
        HGenStrict() {}
        HGenStrict(long id, String name, int price) { this.id = id; this.name = name; this.price = price; }
        Long version() { return version; }
    }
}
