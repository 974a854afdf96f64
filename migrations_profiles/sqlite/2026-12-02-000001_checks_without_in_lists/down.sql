-- Back to the IN lists of the first migration (same rules), rows copied as they are.
CREATE TABLE profiles_rebuilt (
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

INSERT INTO profiles_rebuilt (user_id, version, updated_at, display_name, first_name, last_name, phone, avatar_url, bio, birth_date, city, country, language, timezone, theme, currency, notify_email, notify_sms, notify_push, notify_marketing, profile_visibility, show_activity, company_name, job_title, tax_id, website, billing_line1, billing_line2, billing_city, billing_postal_code, billing_country)
SELECT user_id, version, updated_at, display_name, first_name, last_name, phone, avatar_url, bio, birth_date, city, country, language, timezone, theme, currency, notify_email, notify_sms, notify_push, notify_marketing, profile_visibility, show_activity, company_name, job_title, tax_id, website, billing_line1, billing_line2, billing_city, billing_postal_code, billing_country FROM profiles;

DROP TABLE profiles;
ALTER TABLE profiles_rebuilt RENAME TO profiles;
