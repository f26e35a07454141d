//! Passkeys (WebAuthn) over webauthn-rs 0.6, with JSON in and out so the
//! server stores strings and never touches webauthn-rs types.
//!
//! Guarantees:
//! - User verification is required: the passkey flows ask for it
//!   (`userVerification: "required"`), webauthn-rs refuses a response
//!   without the UV flag, and [`Passkeys::finish_authentication`] checks
//!   `user_verified()` again, so a passkey login counts as two factors.
//! - Ceremony state is JSON for the caller to keep server-side (never in a
//!   cookie the client could replay or edit), used once, and bound to one
//!   challenge.
//! - A signature counter that goes backwards is refused by webauthn-rs (a
//!   possibly cloned authenticator); a counter that moves forward comes back
//!   in [`AuthenticatedPasskey::updated_passkey`] for the caller to store.
//! - Malformed responses and states are errors, never panics.
//!
//! Origins (checked in webauthn-rs 0.6.2 source): the relying-party id must
//! be the origin's host or a parent domain of it, and the builder needs a
//! domain name, so IP origins such as `http://127.0.0.1:8080` are refused
//! (browsers refuse IP addresses as relying-party ids too). webauthn-rs does
//! not check the scheme; [`Passkeys::new`] requires `https`, except
//! `http://localhost[:port]`, which browsers treat as a secure context. The
//! port must match exactly (webauthn-rs's `allow_any_port` is left off), so
//! local tests use `http://localhost:<port>` with rp id `localhost`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use uuid::Uuid;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Url, Webauthn, WebauthnBuilder,
};

/// A registered passkey as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// The credential id, base64url without padding (as browsers report it).
    pub credential_id: String,
    /// webauthn-rs's `Passkey` as JSON: public key, algorithm, counter,
    /// backup flags. Public material, no secrets.
    pub passkey_json: String,
}

/// Proof that a passkey signed this ceremony's challenge with user
/// verification. Only [`Passkeys::finish_authentication`] builds one.
#[derive(Debug, Clone)]
pub struct AuthenticatedPasskey {
    credential_id: String,
    user_verified: bool,
    counter: u32,
    updated_passkey: Option<StoredPasskey>,
}

impl AuthenticatedPasskey {
    /// Which registered passkey signed, base64url.
    pub fn credential_id(&self) -> &str {
        &self.credential_id
    }

    /// Always true: an unverified assertion is an error, not a value.
    pub fn user_verified(&self) -> bool {
        self.user_verified
    }

    /// The authenticator's signature counter (0 for most synced passkeys).
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// The stored passkey with its new counter and backup flags, when they
    /// changed: replace the stored row with it.
    pub fn updated_passkey(&self) -> Option<&StoredPasskey> {
        self.updated_passkey.as_ref()
    }
}

/// Why a passkey operation failed. Messages describe the request, not
/// server secrets; the webauthn-rs reason is for the log.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("passkey configuration refused: {0}")]
    Configuration(String),
    #[error("the passkey response is not valid JSON of the expected shape: {0}")]
    MalformedResponse(String),
    #[error("the passkey ceremony state is unreadable")]
    MalformedState,
    #[error("a stored passkey is unreadable: {0}")]
    StoredPasskey(String),
    #[error("the passkey ceremony failed: {0}")]
    Ceremony(String),
    #[error("the authenticator did not verify the user (PIN or biometric)")]
    UserNotVerified,
}

/// The relying party: one per server, built from configuration.
#[derive(Debug, Clone)]
pub struct Passkeys {
    webauthn: Webauthn,
}

impl Passkeys {
    /// `rp_id` is the domain passkeys are bound to (`care.example.org`, or
    /// `localhost` in tests); `rp_origin` the exact origin browsers report
    /// (`https://care.example.org`, `http://localhost:8080`); `rp_name` is
    /// shown by some authenticators.
    pub fn new(rp_id: &str, rp_origin: &str, rp_name: &str) -> Result<Self, PasskeyError> {
        let origin = Url::parse(rp_origin).map_err(|error| {
            PasskeyError::Configuration(format!("origin {rp_origin:?}: {error}"))
        })?;
        let secure = match origin.scheme() {
            "https" => true,
            "http" => origin.host_str() == Some("localhost"),
            _ => false,
        };
        if !secure {
            return Err(PasskeyError::Configuration(
                "the origin must be https (http is allowed only for localhost)".to_owned(),
            ));
        }
        if origin.path() != "/" || origin.query().is_some() || origin.fragment().is_some() {
            return Err(PasskeyError::Configuration(
                "the origin is scheme, host and port only, with no path".to_owned(),
            ));
        }
        let webauthn = WebauthnBuilder::new(rp_id, &origin)
            .map_err(|_| {
                PasskeyError::Configuration(
                    "the rp id must be the origin's host name or a parent domain of it \
                     (IP addresses are not allowed)"
                        .to_owned(),
                )
            })?
            .rp_name(rp_name)
            .build()
            .map_err(|error| PasskeyError::Configuration(error.to_string()))?;
        Ok(Self { webauthn })
    }

    /// Options for `navigator.credentials.create()` (the `publicKey` member
    /// is inside) and the state to keep server-side until the response.
    /// `exclude` stops the person registering the same authenticator twice.
    pub fn start_registration(
        &self,
        user_id: Uuid,
        user_name: &str,
        display_name: &str,
        exclude: &[StoredPasskey],
    ) -> Result<(Value, String), PasskeyError> {
        let exclude_ids = exclude
            .iter()
            .map(|stored| parse_passkey(stored).map(|passkey| passkey.cred_id().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let exclude_ids = (!exclude_ids.is_empty()).then_some(exclude_ids);
        let (options, state) = self
            .webauthn
            .start_passkey_registration(user_id, user_name, display_name, exclude_ids)
            .map_err(|error| PasskeyError::Ceremony(error.to_string()))?;
        Ok((to_value(&options)?, to_state(&state)?))
    }

    /// Checks the browser's `PublicKeyCredential` (as JSON) against the
    /// state from [`Self::start_registration`]. The caller must check the
    /// credential id is not already registered to another account.
    pub fn finish_registration(
        &self,
        response_json: &str,
        state_json: &str,
    ) -> Result<StoredPasskey, PasskeyError> {
        let response: RegisterPublicKeyCredential = serde_json::from_str(response_json)
            .map_err(|error| PasskeyError::MalformedResponse(error.to_string()))?;
        let state: PasskeyRegistration =
            serde_json::from_str(state_json).map_err(|_| PasskeyError::MalformedState)?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&response, &state)
            .map_err(|error| PasskeyError::Ceremony(error.to_string()))?;
        stored_passkey(&passkey)
    }

    /// Options for `navigator.credentials.get()` allowing `creds` (the
    /// person's registered passkeys), and the state to keep server-side.
    pub fn start_authentication(
        &self,
        creds: &[StoredPasskey],
    ) -> Result<(Value, String), PasskeyError> {
        let passkeys = creds
            .iter()
            .map(parse_passkey)
            .collect::<Result<Vec<_>, _>>()?;
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|error| PasskeyError::Ceremony(error.to_string()))?;
        Ok((to_value(&options)?, to_state(&state)?))
    }

    /// Checks the browser's assertion (as JSON) against the state from
    /// [`Self::start_authentication`]; `creds` are the same stored passkeys,
    /// used to produce the updated row.
    pub fn finish_authentication(
        &self,
        response_json: &str,
        state_json: &str,
        creds: &[StoredPasskey],
    ) -> Result<AuthenticatedPasskey, PasskeyError> {
        let response: PublicKeyCredential = serde_json::from_str(response_json)
            .map_err(|error| PasskeyError::MalformedResponse(error.to_string()))?;
        let state: PasskeyAuthentication =
            serde_json::from_str(state_json).map_err(|_| PasskeyError::MalformedState)?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&response, &state)
            .map_err(|error| PasskeyError::Ceremony(error.to_string()))?;
        // webauthn-rs already refuses a missing UV flag under the Required
        // policy; checked again because promise 1 rests on it.
        if !result.user_verified() {
            return Err(PasskeyError::UserNotVerified);
        }
        let credential_id = URL_SAFE_NO_PAD.encode(result.cred_id());
        let mut updated_passkey = None;
        for stored in creds {
            let mut passkey = parse_passkey(stored)?;
            if passkey.update_credential(&result) == Some(true) {
                updated_passkey = Some(stored_passkey(&passkey)?);
            }
        }
        Ok(AuthenticatedPasskey {
            credential_id,
            user_verified: true,
            counter: result.counter(),
            updated_passkey,
        })
    }
}

impl StoredPasskey {
    /// Wraps a stored credential (webauthn-rs's serialised `Passkey`), reading its id from it.
    pub fn from_json(passkey_json: &str) -> Result<StoredPasskey, PasskeyError> {
        let passkey: Passkey = serde_json::from_str(passkey_json)
            .map_err(|error| PasskeyError::StoredPasskey(error.to_string()))?;
        stored_passkey(&passkey)
    }
}

impl Passkeys {
    /// Registration options that ask for a discoverable credential (a passkey the browser can
    /// offer without being told which account), so sign-in needs no account name.
    /// webauthn-rs's passkey flow does not ask for one by itself; the verification of the
    /// response is unchanged.
    pub fn start_discoverable_registration(
        &self,
        user_id: Uuid,
        user_name: &str,
        display_name: &str,
        exclude: &[StoredPasskey],
    ) -> Result<(Value, String), PasskeyError> {
        let (mut options, state) =
            self.start_registration(user_id, user_name, display_name, exclude)?;
        if let Some(selection) = options
            .get_mut("publicKey")
            .and_then(|key| key.get_mut("authenticatorSelection"))
            .and_then(Value::as_object_mut)
        {
            selection.insert("residentKey".to_owned(), Value::from("required"));
            selection.insert("requireResidentKey".to_owned(), Value::from(true));
            selection.insert("userVerification".to_owned(), Value::from("required"));
        }
        Ok((options, state))
    }

    /// Options for `navigator.credentials.get()` with no allow list: the browser offers the
    /// person's passkey for this site. User verification is required.
    pub fn start_discoverable_authentication(&self) -> Result<(Value, String), PasskeyError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|error| PasskeyError::Ceremony(error.to_string()))?;
        Ok((to_value(&options)?, to_state(&state)?))
    }

    /// The user handle (a person id) and credential id a discoverable response claims. Read
    /// before verification only to find which stored passkeys to verify against.
    pub fn identify(&self, response_json: &str) -> Result<(Uuid, String), PasskeyError> {
        let response: PublicKeyCredential = serde_json::from_str(response_json)
            .map_err(|error| PasskeyError::MalformedResponse(error.to_string()))?;
        let (user, credential) = self
            .webauthn
            .identify_discoverable_authentication(&response)
            .map_err(|error| PasskeyError::Ceremony(error.to_string()))?;
        Ok((user, URL_SAFE_NO_PAD.encode(credential)))
    }

    /// Verifies a discoverable assertion against the identified person's stored passkeys.
    pub fn finish_discoverable_authentication(
        &self,
        response_json: &str,
        state_json: &str,
        creds: &[StoredPasskey],
    ) -> Result<AuthenticatedPasskey, PasskeyError> {
        let response: PublicKeyCredential = serde_json::from_str(response_json)
            .map_err(|error| PasskeyError::MalformedResponse(error.to_string()))?;
        let state: DiscoverableAuthentication =
            serde_json::from_str(state_json).map_err(|_| PasskeyError::MalformedState)?;
        // Only the passkey the response names takes part in the verification.
        let claimed = URL_SAFE_NO_PAD.encode(response.get_credential_id());
        let passkeys = creds
            .iter()
            .filter(|stored| stored.credential_id == claimed)
            .map(parse_passkey)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(passkey) = passkeys.first() else {
            return Err(PasskeyError::Ceremony(
                "the credential is not registered to this person".to_owned(),
            ));
        };
        let result = self
            .webauthn
            .finish_discoverable_authentication_v2(&response, state, passkey)
            .map_err(|error| PasskeyError::Ceremony(error.to_string()))?;
        if !result.user_verified() {
            return Err(PasskeyError::UserNotVerified);
        }
        let credential_id = URL_SAFE_NO_PAD.encode(result.cred_id());
        let mut updated_passkey = None;
        for mut passkey in passkeys {
            if passkey.update_credential(&result) == Some(true) {
                updated_passkey = Some(stored_passkey(&passkey)?);
            }
        }
        Ok(AuthenticatedPasskey {
            credential_id,
            user_verified: true,
            counter: result.counter(),
            updated_passkey,
        })
    }
}

fn parse_passkey(stored: &StoredPasskey) -> Result<Passkey, PasskeyError> {
    let passkey: Passkey = serde_json::from_str(&stored.passkey_json)
        .map_err(|error| PasskeyError::StoredPasskey(error.to_string()))?;
    if URL_SAFE_NO_PAD.encode(passkey.cred_id()) != stored.credential_id {
        return Err(PasskeyError::StoredPasskey(
            "the credential id does not match the stored passkey".to_owned(),
        ));
    }
    Ok(passkey)
}

fn stored_passkey(passkey: &Passkey) -> Result<StoredPasskey, PasskeyError> {
    Ok(StoredPasskey {
        credential_id: URL_SAFE_NO_PAD.encode(passkey.cred_id()),
        passkey_json: serde_json::to_string(passkey)
            .map_err(|error| PasskeyError::StoredPasskey(error.to_string()))?,
    })
}

fn to_value(options: &impl serde::Serialize) -> Result<Value, PasskeyError> {
    serde_json::to_value(options).map_err(|error| PasskeyError::Ceremony(error.to_string()))
}

fn to_state(state: &impl serde::Serialize) -> Result<String, PasskeyError> {
    serde_json::to_string(state).map_err(|error| PasskeyError::Ceremony(error.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn local() -> Passkeys {
        Passkeys::new("localhost", "http://localhost:8080", "carevault").unwrap()
    }

    #[test]
    fn registration_options_require_user_verification() {
        let user = Uuid::from_u128(0x1234);
        let (options, state) = local()
            .start_registration(user, "jane@example.org", "Jane Doe", &[])
            .unwrap();
        let public_key = &options["publicKey"];
        assert_eq!(
            public_key["authenticatorSelection"]["userVerification"],
            "required"
        );
        assert_eq!(public_key["rp"]["id"], "localhost");
        assert_eq!(public_key["rp"]["name"], "carevault");
        assert_eq!(public_key["user"]["name"], "jane@example.org");
        assert_eq!(public_key["user"]["displayName"], "Jane Doe");
        assert!(
            public_key["challenge"]
                .as_str()
                .is_some_and(|c| c.len() >= 43)
        );
        // The state is JSON that parses back into webauthn-rs's state.
        let parsed: PasskeyRegistration = serde_json::from_str(&state).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), state);
        // Two ceremonies never share a challenge.
        let (again, _) = local()
            .start_registration(user, "jane@example.org", "Jane Doe", &[])
            .unwrap();
        assert_ne!(again["publicKey"]["challenge"], public_key["challenge"]);
    }

    #[test]
    fn origins() {
        assert!(Passkeys::new("care.example.org", "https://care.example.org", "carevault").is_ok());
        assert!(Passkeys::new("example.org", "https://care.example.org", "carevault").is_ok());
        assert!(Passkeys::new("localhost", "http://localhost:3000", "carevault").is_ok());
        for (rp_id, origin) in [
            ("care.example.org", "http://care.example.org"),
            ("127.0.0.1", "http://127.0.0.1:8080"),
            ("localhost", "http://127.0.0.1:8080"),
            ("other.example.org", "https://care.example.org"),
            ("ample.org", "https://care.example.org"),
            ("care.example.org", "https://care.example.org/login"),
            ("care.example.org", "not a url"),
        ] {
            assert!(
                matches!(
                    Passkeys::new(rp_id, origin, "carevault"),
                    Err(PasskeyError::Configuration(_))
                ),
                "{rp_id} {origin}"
            );
        }
    }

    #[test]
    fn garbage_fails_cleanly() {
        let passkeys = local();
        let user = Uuid::from_u128(7);
        let (_, state) = passkeys
            .start_registration(user, "jane", "Jane", &[])
            .unwrap();
        for response in [
            "",
            "{}",
            "null",
            "[1,2]",
            r#"{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"attestationObject":"AAAA","clientDataJSON":"AAAA"}}"#,
        ] {
            assert!(
                passkeys.finish_registration(response, &state).is_err(),
                "{response}"
            );
        }
        assert!(matches!(
            passkeys.finish_registration(r#"{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"attestationObject":"AAAA","clientDataJSON":"AAAA"}}"#, "{}"),
            Err(PasskeyError::MalformedState)
        ));
        assert!(passkeys.finish_authentication("{}", "{}", &[]).is_err());
        let broken = StoredPasskey {
            credential_id: "AAAA".to_owned(),
            passkey_json: "{}".to_owned(),
        };
        assert!(matches!(
            passkeys.start_authentication(std::slice::from_ref(&broken)),
            Err(PasskeyError::StoredPasskey(_))
        ));
        assert!(matches!(
            passkeys.start_registration(user, "jane", "Jane", &[broken]),
            Err(PasskeyError::StoredPasskey(_))
        ));
    }

    /// The full ceremony with webauthn-authenticator-rs's software passkey
    /// (it claims user verification when built with `falsify_uv = true`,
    /// like a browser's virtual authenticator with UV enabled).
    mod ceremony {
        use super::*;
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        use webauthn_authenticator_rs::softpasskey::SoftPasskey;

        fn register(
            passkeys: &Passkeys,
            authenticator: &mut SoftPasskey,
            origin: &str,
        ) -> Result<StoredPasskey, PasskeyError> {
            let user = Uuid::from_u128(42);
            let (options, state) =
                passkeys.start_registration(user, "jane@example.org", "Jane Doe", &[])?;
            let response = authenticator
                .do_registration(
                    Url::parse(origin).unwrap(),
                    serde_json::from_value(options).unwrap(),
                )
                .unwrap();
            passkeys.finish_registration(&serde_json::to_string(&response).unwrap(), &state)
        }

        fn authenticate(
            passkeys: &Passkeys,
            authenticator: &mut SoftPasskey,
            creds: &[StoredPasskey],
        ) -> Result<AuthenticatedPasskey, PasskeyError> {
            let (options, state) = passkeys.start_authentication(creds)?;
            assert_eq!(options["publicKey"]["userVerification"], "required");
            let response = authenticator
                .do_authentication(
                    Url::parse("http://localhost:8080").unwrap(),
                    serde_json::from_value(options).unwrap(),
                )
                .unwrap();
            passkeys.finish_authentication(
                &serde_json::to_string(&response).unwrap(),
                &state,
                creds,
            )
        }

        #[test]
        fn register_then_authenticate_twice() {
            let passkeys = local();
            let mut authenticator = SoftPasskey::new(true);
            let stored = register(&passkeys, &mut authenticator, "http://localhost:8080").unwrap();
            assert!(stored.credential_id.len() >= 22);
            assert!(!stored.credential_id.contains('='));

            let first =
                authenticate(&passkeys, &mut authenticator, std::slice::from_ref(&stored)).unwrap();
            assert_eq!(first.credential_id(), stored.credential_id);
            assert!(first.user_verified());
            // The software authenticator counts signatures, so the stored row changes.
            let updated = first.updated_passkey().expect("counter moved").clone();
            assert_eq!(updated.credential_id, stored.credential_id);
            assert_ne!(updated.passkey_json, stored.passkey_json);

            let second = authenticate(
                &passkeys,
                &mut authenticator,
                std::slice::from_ref(&updated),
            )
            .unwrap();
            assert!(second.counter() > first.counter());

            // The excluded credential appears in the next registration's options.
            let (options, _) = passkeys
                .start_registration(
                    Uuid::from_u128(42),
                    "jane@example.org",
                    "Jane Doe",
                    &[updated],
                )
                .unwrap();
            assert_eq!(
                options["publicKey"]["excludeCredentials"][0]["id"],
                stored.credential_id.as_str()
            );
        }

        #[test]
        fn another_port_or_another_ceremony_is_refused() {
            let passkeys = local();
            let mut authenticator = SoftPasskey::new(true);
            assert!(matches!(
                register(&passkeys, &mut authenticator, "http://localhost:9090"),
                Err(PasskeyError::Ceremony(_))
            ));
            // A response made for one challenge does not finish another ceremony.
            let user = Uuid::from_u128(42);
            let (options, _) = passkeys
                .start_registration(user, "jane", "Jane", &[])
                .unwrap();
            let (_, other_state) = passkeys
                .start_registration(user, "jane", "Jane", &[])
                .unwrap();
            let response = authenticator
                .do_registration(
                    Url::parse("http://localhost:8080").unwrap(),
                    serde_json::from_value(options).unwrap(),
                )
                .unwrap();
            assert!(matches!(
                passkeys
                    .finish_registration(&serde_json::to_string(&response).unwrap(), &other_state),
                Err(PasskeyError::Ceremony(_))
            ));
        }

        #[test]
        fn a_passkey_registered_elsewhere_does_not_sign_in_here() {
            let other_site = Passkeys::new("localhost", "http://localhost:8080", "other").unwrap();
            let mut authenticator = SoftPasskey::new(true);
            let mine = register(&local(), &mut authenticator, "http://localhost:8080").unwrap();
            let mut stranger = SoftPasskey::new(true);
            let theirs = register(&other_site, &mut stranger, "http://localhost:8080").unwrap();
            // Allowed credentials are only mine; the stranger's authenticator has none of them.
            let (options, _) = local()
                .start_authentication(std::slice::from_ref(&mine))
                .unwrap();
            assert!(
                stranger
                    .do_authentication(
                        Url::parse("http://localhost:8080").unwrap(),
                        serde_json::from_value(options).unwrap()
                    )
                    .is_err()
            );
            assert_ne!(mine.credential_id, theirs.credential_id);
        }
    }
}
