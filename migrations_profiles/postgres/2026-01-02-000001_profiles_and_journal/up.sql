-- One row per user who edited their profile; a user without a row has the defaults
-- (version 0). One column per editable field so a profile is one primary-key read.
CREATE TABLE profiles (
    user_id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL CHECK (version >= 1),
    updated_at TIMESTAMPTZ,
    display_name TEXT,
    first_name TEXT,
    last_name TEXT,
    phone TEXT,
    avatar_url TEXT,
    bio TEXT,
    birth_date DATE,
    city TEXT,
    country TEXT,
    language TEXT NOT NULL,
    timezone TEXT NOT NULL,
    theme TEXT NOT NULL CHECK (theme IN ('light', 'dark', 'system')),
    currency TEXT NOT NULL,
    notify_email BOOLEAN NOT NULL,
    notify_sms BOOLEAN NOT NULL,
    notify_push BOOLEAN NOT NULL,
    notify_marketing BOOLEAN NOT NULL,
    profile_visibility TEXT NOT NULL CHECK (profile_visibility IN ('public', 'contacts', 'private')),
    show_activity BOOLEAN NOT NULL,
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
);

-- Cross-database e-mail changes: the intent is written before either database changes,
-- so recovery can finish or roll back whatever a crash interrupted. An identity never
-- hands out an id twice, so a stale id can never settle a newer entry. `claimed_until`:
-- nobody but the holder settles the entry before then (a lease, so several instances
-- never settle one entry together, and a crashed holder's entry is taken over).
CREATE TABLE email_journal (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id BIGINT NOT NULL,
    old_email TEXT NOT NULL,
    new_email TEXT NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'aborted')),
    created_at TIMESTAMPTZ NOT NULL,
    claimed_until TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Recovery lists pending entries, and an update looks for its user's; finished ones pile
-- up and must not be scanned.
CREATE INDEX email_journal_pending ON email_journal (id) WHERE state = 'pending';
CREATE INDEX email_journal_pending_user ON email_journal (user_id) WHERE state = 'pending';
