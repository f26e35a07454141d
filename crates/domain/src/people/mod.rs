//! People: accounts with mandatory multi-factor authentication, sessions, roles, care
//! relationships, break-glass, supplier grants and home-entry details.

pub mod credentials;
pub mod model;
pub mod store;

pub use credentials::{Ceremony, Credentials, NewPasskey, PasskeyAssertion};
pub use model::*;
pub use store::PeopleStore;
