package rowversion.orm.eclipselink;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.eclipse.persistence.descriptors.ClassDescriptor;
import org.eclipse.persistence.descriptors.SelectedFieldsLockingPolicy;
import org.eclipse.persistence.internal.helper.DatabaseField;
import org.eclipse.persistence.internal.helper.DatabaseTable;
import org.eclipse.persistence.internal.sessions.AbstractSession;

/** A server-generated version for EclipseLink 2.7, which refuses RETURNING on an @Version
 *  field ("ReturningPolicy contains field, [VERSION] which is not supported: ... used for
 *  locking"). The entity maps the version as a plain field with @ReturnInsert(returnOnly)
 *  and @ReturnUpdate, so EclipseLink never writes it and reads the trigger's value back
 *  with RETURNING; this customizer makes it the optimistic-lock column (SELECTED_COLUMNS):
 *  EclipseLink puts the value it read in the UPDATE's WHERE clause, and 0 rows updated
 *  becomes its OptimisticLockException.
 *
 *  Set in code, not with @OptimisticLocking(type = SELECTED_COLUMNS): in 2.7.11 either way
 *  the policy's own field object has a different hashCode from the mapping's equal field,
 *  so the first UPDATE fails with EclipseLink-4020 "Could not find the matched database
 *  field for the specified optimistic locking field". initialize() below swaps in the
 *  mapping's own field object. */
public class ServerVersionLocking extends VersionFieldType {
    @Override
    public void customize(ClassDescriptor descriptor) {
        super.customize(descriptor);
        descriptor.setOptimisticLockingPolicy(new Policy());
    }

    static final class Policy extends SelectedFieldsLockingPolicy {
        Policy() { addLockFieldName("version"); }

        @Override
        public void initialize(AbstractSession session) {
            super.initialize(session);
            DatabaseField field = descriptor.getMappingForAttributeName("version").getField();
            List<DatabaseField> fields = new ArrayList<>();
            fields.add(field);
            Map<DatabaseTable, List<DatabaseField>> byTable = new HashMap<>();
            byTable.put(field.getTable(), fields);
            setLockFields(fields);
            setLockFieldsByTable(byTable);
        }
    }
}
