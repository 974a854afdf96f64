//! Diesel's view of the tables the PostgreSQL migrations create.

#![allow(missing_docs)]

diesel::table! {
    users (id) {
        id -> BigInt,
        email -> Text,
        username -> Text,
        status -> Text,
        created_at -> Timestamptz,
        last_login_at -> Nullable<Timestamptz>,
        login_count -> Integer,
    }
}

diesel::table! {
    orders (id) {
        id -> BigInt,
        user_id -> BigInt,
        total_cents -> BigInt,
        status -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    profiles (user_id) {
        user_id -> BigInt,
        version -> BigInt,
        updated_at -> Nullable<Timestamptz>,
        display_name -> Nullable<Text>,
        first_name -> Nullable<Text>,
        last_name -> Nullable<Text>,
        phone -> Nullable<Text>,
        avatar_url -> Nullable<Text>,
        bio -> Nullable<Text>,
        birth_date -> Nullable<Date>,
        city -> Nullable<Text>,
        country -> Nullable<Text>,
        language -> Text,
        timezone -> Text,
        theme -> Text,
        currency -> Text,
        notify_email -> Bool,
        notify_sms -> Bool,
        notify_push -> Bool,
        notify_marketing -> Bool,
        profile_visibility -> Text,
        show_activity -> Bool,
        company_name -> Nullable<Text>,
        job_title -> Nullable<Text>,
        tax_id -> Nullable<Text>,
        website -> Nullable<Text>,
        billing_line1 -> Nullable<Text>,
        billing_line2 -> Nullable<Text>,
        billing_city -> Nullable<Text>,
        billing_postal_code -> Nullable<Text>,
        billing_country -> Nullable<Text>,
    }
}

diesel::table! {
    email_journal (id) {
        id -> BigInt,
        user_id -> BigInt,
        old_email -> Text,
        new_email -> Text,
        record -> Text,
        state -> Text,
        created_at -> Timestamptz,
        claimed_until -> Timestamptz,
    }
}
