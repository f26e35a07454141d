//! The domain of carevault: who may do what to which tenant's records, and the use cases that
//! do it. No HTTP, no database driver: adapters implement [`store::Store`] below, the server
//! calls the use cases above.

pub mod access;
pub mod admin;
pub mod audit;
pub mod bundle;
pub mod clock;
pub mod ids;
pub mod keyring;
pub mod people;
pub mod principal;
pub mod records;
pub mod scopes;
pub mod search;
pub mod store;

#[cfg(feature = "test-support")]
pub mod testing;
