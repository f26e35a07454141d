//! People: accounts with mandatory multi-factor authentication, sessions, roles, care
//! relationships, break-glass, supplier grants and home-entry details.

pub mod admin;
pub mod care;
pub mod credentials;
pub mod identity;
pub mod model;
pub mod settings;
pub mod store;
pub mod throttle;

pub use admin::{Invitation, Inviter, LogNotifier, Notifier};
pub use care::HomeEntryDetails;
pub use credentials::{Ceremony, Credentials, NewPasskey, PasskeyAssertion};
pub use identity::{
    AccountOverview, Identity, PasskeySummary, SessionSummary, SessionToken, SessionView,
    SignInError, TotpEnrolment,
};
pub use model::*;
pub use settings::IdentitySettings;
pub use store::PeopleStore;
pub use throttle::{ThrottlePolicy, guesses_per_hour};
