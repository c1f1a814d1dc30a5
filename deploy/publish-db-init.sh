#!/bin/bash
# Runs once, when the publish PostgreSQL is first created (docker-entrypoint-initdb.d), as
# its superuser. The pipeline publishes as c360_publisher: it owns the database c360 (so it
# may REVOKE TEMP/CONNECT from PUBLIC there) and administers the two group roles, but it is
# no superuser, cannot create roles or databases, and cannot reach the other databases.
set -euo pipefail
case "${PUBLISH_DB_PASSWORD:-}${POSTGRES_PASSWORD:-}" in
  *change-me*|*changeme*) echo "refused: a publish-db password is still the placeholder of deploy/.env.example" >&2; exit 1;;
esac
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v publisher_password="$PUBLISH_DB_PASSWORD" <<'SQL'
CREATE ROLE c360_publisher LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'publisher_password';
CREATE ROLE c360_analyst NOLOGIN;
CREATE ROLE c360_admin NOLOGIN;
GRANT c360_admin TO c360_publisher WITH ADMIN OPTION;
GRANT c360_analyst TO c360_publisher WITH ADMIN OPTION;
ALTER DATABASE c360 OWNER TO c360_publisher;
ALTER SCHEMA public OWNER TO c360_publisher;
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;
SQL
