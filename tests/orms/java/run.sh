#!/usr/bin/env bash
# Hibernate and EclipseLink @Version against pg_rowversion: installs the Debian packages if
# missing, compiles with javac into build/, runs both suites. JDBC needs TCP, so the server
# must listen on 127.0.0.1:$PGTCPPORT (default $PGPORT); PGHOST (a socket directory) is not
# used by JDBC. PGUSER, PGDATABASE (an existing database) as for psql.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$HERE/build
: "${PGPORT:?set PGPORT}" "${PGDATABASE:?set PGDATABASE}"
export PGUSER=${PGUSER:-postgres} PGTCPPORT=${PGTCPPORT:-$PGPORT} PGTCPHOST=${PGTCPHOST:-127.0.0.1}

# The versions tested, on Debian 12 (bookworm); another installed version is reported, not refused.
PACKAGES=(
    default-jdk-headless=2:1.17-74
    libpostgresql-jdbc-java=42.5.5-0+deb12u1
    libhibernate3-java=3.6.10.Final-12
    libjavassist-java=1:3.27.0-1          # Hibernate 3.6's proxy provider (only Recommended)
    libeclipselink-java=2.7.11-1
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for spec in "${PACKAGES[@]}"; do
    name=${spec%%=*} want=${spec#*=}
    have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
    case $have in
        "install ok installed $want") ;;
        "install ok installed "*) echo "note: $name ${have##* } is installed, tested with $want" >&2 ;;
        *) missing+=("$name") ;;  # by name: Debian replaces a version with its security updates
    esac
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

J=/usr/share/java
COMMON_CP=$J/postgresql.jar:$J/slf4j-api.jar:$J/slf4j-nop.jar
# Hibernate 3.6 is built against JPA 2.0 (geronimo), EclipseLink 2.7 against JPA 2.1: each
# suite gets its own classpath and is run in its own JVM.
HIBERNATE_CP=$COMMON_CP:$J/hibernate3.jar:$J/hibernate-commons-annotations.jar:$J/geronimo-jpa_2.0_spec.jar
HIBERNATE_CP+=:$J/geronimo-jta-1.2-spec.jar:$J/dom4j.jar:$J/antlr.jar:$J/commons-collections3.jar:$J/javassist.jar
ECLIPSELINK_CP=$COMMON_CP:$J/eclipselink.jar:$J/eclipselink-jpa-2.1-spec.jar
ECLIPSELINK_CP+=:$J/geronimo-jta-1.2-spec.jar:$J/org.eclipse.persistence.jpa.jpql.jar

# Compiles src/common and src/$1 into build/$1 (from scratch: quick, and never stale).
compile() {
    local suite=$1 cp=$2 out=$BUILD/$1 sources
    rm -rf "$out" && mkdir -p "$out"
    mapfile -t sources < <(find "$HERE/src/common" "$HERE/src/$suite" -name '*.java' | sort)
    javac -nowarn -encoding UTF-8 -d "$out" -cp "$cp" "${sources[@]}"
    if [ -d "$HERE/src/$suite/META-INF" ]; then cp -r "$HERE/src/$suite/META-INF" "$out/"; fi
}

echo "==> compiling"
compile hibernate "$HIBERNATE_CP"
compile eclipselink "$ECLIPSELINK_CP"

status=0 passed=0 failed=0
run_suite() {
    local suite=$1 cp=$2 main=$3 log
    echo "==> $suite against 127.0.0.1:$PGTCPPORT/$PGDATABASE"
    log=$(mktemp)
    java -cp "$BUILD/$suite:$cp" "$main" 2>&1 | tee "$log" || status=1
    p='' f='' 
    read -r p f < <(sed -n 's/^\([0-9]\+\) passed, \([0-9]\+\) failed$/\1 \2/p' "$log" | tail -1) || true
    rm -f "$log"
    if [ -z "$p" ]; then
        status=1 failed=$((failed + 1))
        echo "FAIL $suite: did not finish (is a server listening on $PGTCPHOST:$PGTCPPORT?)"
        return
    fi
    passed=$((passed + p)) failed=$((failed + f))
}
run_suite hibernate "$HIBERNATE_CP" rowversion.orm.hibernate.HibernateSuite
run_suite eclipselink "$ECLIPSELINK_CP" rowversion.orm.eclipselink.EclipseLinkSuite

[ "$failed" -eq 0 ] || status=1
echo "$passed passed, $failed failed"
exit $status
