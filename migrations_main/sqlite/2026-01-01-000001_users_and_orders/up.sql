-- The main database is shared with the wider application, which may have created these
-- tables already: IF NOT EXISTS keeps the migration harmless there.
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    username TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at TEXT NOT NULL,
    last_login_at TEXT,
    login_count INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    total_cents INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Covers the per-user completed-order statistics (count, sum, latest) as one index range
-- read, and serves the foreign key's lookups from users.
CREATE INDEX IF NOT EXISTS orders_user_status_stats
    ON orders (user_id, status, created_at, total_cents);
