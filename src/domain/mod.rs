//! Domain types: the profile and its sections, accounts, rewards, the merge patch.

pub mod account;
pub mod error;
pub mod etag;
pub mod patch;
pub mod profile;
pub mod rewards;
pub mod rules;
mod timetext;
pub mod values;

pub use account::{AccountSnapshot, AccountStatus, OrderStats, UserId};
pub use error::FieldError;
pub use etag::{EntityTag, Precondition};
pub use patch::{BillingAddressPatch, NotificationsPatch, ParsedUpdate, Patch, PrivacyPatch, ProfileUpdate};
pub use profile::{
    BillingAddress, Business, Notifications, Personal, PersonalFields, Preferences, Privacy, Profile,
    ProfileFields, ProfileRecord, ProfileSnapshot, ProfileView, Statistics, Theme, Visibility,
};
pub use rewards::{Rewards, RewardsBalance, RewardsSnapshot, RewardsStatus};
pub use values::{
    AddressLine, Bio, BusinessText, CountryCode, CurrencyCode, DisplayName, Email, FieldValue, LanguageTag,
    MultilineText, PersonName, Phone, PostalCode, TaxId, Text, TimeZone, WebUrl,
};
