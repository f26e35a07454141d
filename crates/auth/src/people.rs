//! The domain's [`Credentials`]: Argon2id passwords with the calibrated parameters, zxcvbn
//! policy, TOTP, recovery codes and discoverable passkeys.

use carevault_domain::people::{Ceremony, Credentials, NewPasskey, PasskeyAssertion};
use uuid::Uuid;

use crate::passkeys::{Passkeys, StoredPasskey};
use crate::password::{
    PasswordParams, check_new_password, dummy_verify, hash_password, verify_password,
};
use crate::recovery::{find_recovery_code, generate_recovery_codes};
use crate::totp::{TotpSecret, otpauth_url, qr_svg, verify_totp};

const ISSUER: &str = "carevault";

pub struct PeopleCredentials {
    params: PasswordParams,
    passkeys: Passkeys,
}

impl PeopleCredentials {
    /// `origin` is the site's origin (`https://…`, or `http://localhost:PORT` locally): its
    /// host is the passkeys' relying-party id.
    pub fn new(params: PasswordParams, origin: &str) -> Result<PeopleCredentials, String> {
        let host = origin
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("cannot read a host name from the origin {origin:?}"))?;
        let passkeys = Passkeys::new(host, origin, "carevault").map_err(|e| e.to_string())?;
        Ok(PeopleCredentials { params, passkeys })
    }
}

/// Stored credentials that parse; one that does not is skipped (and cannot sign anyone in).
fn stored(passkeys: &[String]) -> Vec<StoredPasskey> {
    passkeys
        .iter()
        .filter_map(|json| StoredPasskey::from_json(json).ok())
        .collect()
}

impl Credentials for PeopleCredentials {
    fn hash_password(&self, password: &str) -> Result<String, String> {
        hash_password(password, &self.params).map_err(|e| e.to_string())
    }

    fn verify_password(&self, password: &str, phc: &str) -> bool {
        verify_password(password, phc)
    }

    fn dummy_verify(&self, password: &str) {
        let _ = dummy_verify(password, &self.params);
    }

    fn check_new_password(&self, password: &str, context: &[&str]) -> Result<(), String> {
        check_new_password(password, context).map_err(|rejection| rejection.to_string())
    }

    fn new_totp_secret(&self) -> Vec<u8> {
        TotpSecret::generate()
            .map(|secret| secret.reveal_bytes().to_vec())
            .unwrap_or_default()
    }

    fn totp_enrolment(
        &self,
        secret: &[u8],
        account: &str,
    ) -> Result<(String, String, String), String> {
        let secret = TotpSecret::from_bytes(secret).map_err(|e| e.to_string())?;
        let url =
            otpauth_url(&secret, ISSUER, &account.replace(':', " ")).map_err(|e| e.to_string())?;
        let svg = qr_svg(&url).map_err(|e| e.to_string())?;
        Ok((secret.reveal_base32().to_string(), url.to_string(), svg))
    }

    fn verify_totp(
        &self,
        secret: &[u8],
        code: &str,
        now_s: i64,
        last_step: Option<i64>,
    ) -> Option<i64> {
        let secret = TotpSecret::from_bytes(secret).ok()?;
        verify_totp(&secret, code, now_s, last_step)
    }

    fn new_recovery_codes(&self) -> (Vec<String>, Vec<String>) {
        match generate_recovery_codes() {
            Ok((codes, hashes)) => (codes.iter().map(|code| code.to_string()).collect(), hashes),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }

    fn match_recovery_code(&self, code: &str, hashes: &[String]) -> Option<usize> {
        find_recovery_code(code, hashes)
    }

    fn start_passkey_registration(
        &self,
        user_id: Uuid,
        user_name: &str,
        display_name: &str,
        existing: &[String],
    ) -> Result<Ceremony, String> {
        let (options, state) = self
            .passkeys
            .start_discoverable_registration(user_id, user_name, display_name, &stored(existing))
            .map_err(|e| e.to_string())?;
        Ok(Ceremony { options, state })
    }

    fn finish_passkey_registration(
        &self,
        response: &str,
        state: &str,
    ) -> Result<NewPasskey, String> {
        let passkey = self
            .passkeys
            .finish_registration(response, state)
            .map_err(|e| e.to_string())?;
        Ok(NewPasskey {
            credential_id: passkey.credential_id,
            passkey_json: passkey.passkey_json,
        })
    }

    fn start_passkey_authentication(&self) -> Result<Ceremony, String> {
        let (options, state) = self
            .passkeys
            .start_discoverable_authentication()
            .map_err(|e| e.to_string())?;
        Ok(Ceremony { options, state })
    }

    fn passkey_response_user(&self, response: &str) -> Result<(Uuid, String), String> {
        self.passkeys.identify(response).map_err(|e| e.to_string())
    }

    fn finish_passkey_authentication(
        &self,
        response: &str,
        state: &str,
        passkeys: &[String],
    ) -> Result<PasskeyAssertion, String> {
        let result = self
            .passkeys
            .finish_discoverable_authentication(response, state, &stored(passkeys))
            .map_err(|e| e.to_string())?;
        Ok(PasskeyAssertion {
            credential_id: result.credential_id().to_owned(),
            user_verified: result.user_verified(),
            updated_passkey_json: result.updated_passkey().map(|p| p.passkey_json.clone()),
        })
    }
}
