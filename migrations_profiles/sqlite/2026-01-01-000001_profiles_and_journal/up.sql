-- One row per user who edited their profile; a user without a row has the defaults
-- (version 0). One column per editable field so a profile is one primary-key read.
CREATE TABLE profiles (
    user_id INTEGER PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    updated_at TEXT,
    display_name TEXT,
    first_name TEXT,
    last_name TEXT,
    phone TEXT,
    avatar_url TEXT,
    bio TEXT,
    birth_date TEXT,
    city TEXT,
    country TEXT,
    language TEXT NOT NULL,
    timezone TEXT NOT NULL,
    theme TEXT NOT NULL CHECK (theme IN ('light', 'dark', 'system')),
    currency TEXT NOT NULL,
    notify_email INTEGER NOT NULL CHECK (notify_email IN (0, 1)),
    notify_sms INTEGER NOT NULL CHECK (notify_sms IN (0, 1)),
    notify_push INTEGER NOT NULL CHECK (notify_push IN (0, 1)),
    notify_marketing INTEGER NOT NULL CHECK (notify_marketing IN (0, 1)),
    profile_visibility TEXT NOT NULL CHECK (profile_visibility IN ('public', 'contacts', 'private')),
    show_activity INTEGER NOT NULL CHECK (show_activity IN (0, 1)),
    company_name TEXT,
    job_title TEXT,
    tax_id TEXT,
    website TEXT,
    billing_line1 TEXT,
    billing_line2 TEXT,
    billing_city TEXT,
    billing_postal_code TEXT,
    billing_country TEXT,
    -- A billing address is whole (line1, city, country) or absent.
    CHECK ((billing_line1 IS NULL) = (billing_city IS NULL)
       AND (billing_line1 IS NULL) = (billing_country IS NULL)),
    CHECK (billing_line1 IS NOT NULL OR (billing_line2 IS NULL AND billing_postal_code IS NULL))
) STRICT;

-- Cross-database e-mail changes: the intent is written before either database changes,
-- so start-up recovery can finish or roll back whatever a crash interrupted.
-- AUTOINCREMENT: an id is never reused, so a stale id can never settle a newer entry.
CREATE TABLE email_journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    old_email TEXT NOT NULL,
    new_email TEXT NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'aborted')),
    created_at TEXT NOT NULL
) STRICT;

-- Recovery lists pending entries; finished ones pile up and must not be scanned.
CREATE INDEX email_journal_pending ON email_journal (id) WHERE state = 'pending';
