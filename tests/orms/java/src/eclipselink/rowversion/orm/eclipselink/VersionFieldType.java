package rowversion.orm.eclipselink;

import org.eclipse.persistence.config.DescriptorCustomizer;
import org.eclipse.persistence.descriptors.ClassDescriptor;

/** On PostgreSQL EclipseLink 2.7 refuses a RETURNING field that has no Java type
 *  ("ReturningPolicy contains mapped field, [version] which requires type", EclipseLink-189),
 *  and JPA annotations cannot give one: this sets the version field's type to Long. */
public class VersionFieldType implements DescriptorCustomizer {
    @Override
    public void customize(ClassDescriptor descriptor) {
        descriptor.getMappingForAttributeName("version").getField().setType(Long.class);
    }
}
