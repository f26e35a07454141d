//! The cryptographic checks the identity use cases need, implemented by `carevault-auth`
//! (Argon2id, zxcvbn, TOTP, WebAuthn). The domain decides who and when; this trait only
//! computes and checks.

/// WebAuthn options for the browser (JSON) and the server-side ceremony state (JSON).
pub struct Ceremony {
    pub options: serde_json::Value,
    pub state: String,
}

/// A passkey after a successful authentication ceremony.
pub struct PasskeyAssertion {
    pub credential_id: String,
    pub user_verified: bool,
    /// The credential with its updated counter, to store back.
    pub updated_passkey_json: Option<String>,
}

/// A passkey after a successful registration ceremony.
pub struct NewPasskey {
    pub credential_id: String,
    pub passkey_json: String,
}

pub trait Credentials: Send + Sync {
    fn hash_password(&self, password: &str) -> Result<String, String>;
    fn verify_password(&self, password: &str, phc: &str) -> bool;
    /// Costs what a real verification costs, so an unknown account takes as long.
    fn dummy_verify(&self, password: &str);
    /// Refuses a weak new password with a sentence a person can act on.
    fn check_new_password(&self, password: &str, context: &[&str]) -> Result<(), String>;

    /// A fresh TOTP seed (20 random bytes).
    fn new_totp_secret(&self) -> Vec<u8>;
    /// Base32 text for manual entry, the otpauth URL, and an inline SVG QR code of it.
    fn totp_enrolment(
        &self,
        secret: &[u8],
        account: &str,
    ) -> Result<(String, String, String), String>;
    /// The time step the code belongs to (±1 step), or `None`. Steps at or before
    /// `last_step` are refused.
    fn verify_totp(
        &self,
        secret: &[u8],
        code: &str,
        now_s: i64,
        last_step: Option<i64>,
    ) -> Option<i64>;

    /// Ten recovery codes to show once, and their hashes to store.
    fn new_recovery_codes(&self) -> (Vec<String>, Vec<String>);
    /// The index of the stored hash the code matches.
    fn match_recovery_code(&self, code: &str, hashes: &[String]) -> Option<usize>;

    fn start_passkey_registration(
        &self,
        user_id: uuid::Uuid,
        user_name: &str,
        display_name: &str,
        existing: &[String],
    ) -> Result<Ceremony, String>;
    fn finish_passkey_registration(
        &self,
        response: &str,
        state: &str,
    ) -> Result<NewPasskey, String>;
    /// A discoverable-credential ceremony: the browser offers whichever passkey the person
    /// holds, so no account name is asked for (and none can be probed).
    fn start_passkey_authentication(&self) -> Result<Ceremony, String>;
    /// The user handle (our person id) and credential id the response claims, read before
    /// verification only to find the stored passkeys to verify against.
    fn passkey_response_user(&self, response: &str) -> Result<(uuid::Uuid, String), String>;
    fn finish_passkey_authentication(
        &self,
        response: &str,
        state: &str,
        passkeys: &[String],
    ) -> Result<PasskeyAssertion, String>;
}
