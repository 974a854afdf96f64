-- The main database is shared with the wider application, which may have created these
-- tables already: IF NOT EXISTS keeps the migration harmless there. The names and types
-- are part of the contract with it (SPEC §9).
CREATE TABLE IF NOT EXISTS users (
    id BIGINT PRIMARY KEY,
    email TEXT NOT NULL,
    username TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at TIMESTAMPTZ NOT NULL,
    last_login_at TIMESTAMPTZ,
    login_count INTEGER NOT NULL DEFAULT 0
);

-- E-mail addresses are unique whatever their case. lower() folds by the database's
-- LC_CTYPE: every letter under a UTF-8 locale, ASCII only under C.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower ON users (lower(email));

CREATE TABLE IF NOT EXISTS orders (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id),
    total_cents BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- Serves the per-user completed-order statistics (count, sum, latest) as an index-only
-- range scan, and the foreign key's lookups from users.
CREATE INDEX IF NOT EXISTS orders_user_status_stats
    ON orders (user_id, status) INCLUDE (total_cents, created_at);
