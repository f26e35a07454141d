//! Identity settings: session lifetimes, step-up window, invitation and break-glass lengths,
//! throttling. Configurable tighter; looser than the defaults only with a logged warning.

use super::throttle::ThrottlePolicy;

#[derive(Clone, Debug)]
pub struct IdentitySettings {
    pub idle_ms: i64,
    pub absolute_ms: i64,
    /// A sensitive action needs a second factor proven within this window.
    pub step_up_ms: i64,
    pub invitation_ms: i64,
    pub setup_link_ms: i64,
    pub break_glass_ms: i64,
    pub account_throttle: ThrottlePolicy,
    pub address_throttle: ThrottlePolicy,
    /// The site's origin for WebAuthn and links, such as `https://records.example.org`.
    pub origin: String,
}

impl IdentitySettings {
    pub fn defaults(origin: &str) -> IdentitySettings {
        IdentitySettings {
            idle_ms: 15 * 60_000,
            absolute_ms: 12 * 3_600_000,
            step_up_ms: 5 * 60_000,
            invitation_ms: 72 * 3_600_000,
            setup_link_ms: 15 * 60_000,
            break_glass_ms: 3_600_000,
            account_throttle: ThrottlePolicy::PER_ACCOUNT,
            address_throttle: ThrottlePolicy::PER_SOURCE_ADDRESS,
            origin: origin.trim_end_matches('/').to_owned(),
        }
    }
}
