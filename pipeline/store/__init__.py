"""PostgreSQL access: the connection pool, migrations and one small repository per table."""
