ALTER TABLE profiles
    ALTER COLUMN version TYPE BIGINT,
    ALTER COLUMN theme TYPE TEXT,
    ALTER COLUMN profile_visibility TYPE TEXT,
    ADD CONSTRAINT profiles_version_check CHECK (version >= 1),
    ADD CONSTRAINT profiles_theme_check CHECK (theme IN ('light', 'dark', 'system')),
    ADD CONSTRAINT profiles_profile_visibility_check
        CHECK (profile_visibility IN ('public', 'contacts', 'private')),
    ADD CONSTRAINT profiles_check CHECK ((billing_line1 IS NULL) = (billing_city IS NULL)
        AND (billing_line1 IS NULL) = (billing_country IS NULL)),
    ADD CONSTRAINT profiles_check1
        CHECK (billing_line1 IS NOT NULL OR (billing_line2 IS NULL AND billing_postal_code IS NULL));

DROP DOMAIN visibility_name;
DROP DOMAIN theme_name;
DROP DOMAIN profile_version;
