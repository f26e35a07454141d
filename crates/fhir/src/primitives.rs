//! FHIR R4 primitive formats (the regexes of datatypes.html, written out as
//! code so the crate needs no regex engine).

use serde_json::Value;

use crate::datetime;

/// Checks a JSON value against a primitive type code; `Err` holds a message.
pub(crate) fn check(type_code: &str, value: &Value) -> Result<(), String> {
    match type_code {
        "boolean" => value
            .is_boolean()
            .then_some(())
            .ok_or_else(|| "must be a JSON boolean".into()),
        "integer" => check_integer(value, i64::from(i32::MIN)),
        "unsignedInt" => check_integer(value, 0),
        "positiveInt" => check_integer(value, 1),
        "decimal" => value
            .is_number()
            .then_some(())
            .ok_or_else(|| "must be a JSON number".into()),
        _ => {
            let Some(s) = value.as_str() else {
                return Err(format!("must be a JSON string ({type_code})"));
            };
            check_text(type_code, s)
        }
    }
}

fn check_integer(value: &Value, min: i64) -> Result<(), String> {
    let Some(n) = value.as_number() else {
        return Err("must be a JSON integer".into());
    };
    // With arbitrary_precision the number keeps its text: 1.0 is not an integer.
    let text = n.to_string();
    if text.contains(['.', 'e', 'E']) {
        return Err("must be an integer without a fraction or exponent".into());
    }
    match n.as_i64() {
        Some(i) if i >= min && i <= i64::from(i32::MAX) => Ok(()),
        _ => Err(format!("integer out of range ({min}..={})", i32::MAX)),
    }
}

fn check_text(type_code: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty strings are not allowed in FHIR".into());
    }
    let ok = match type_code {
        "string" | "markdown" | "xhtml" => !s.trim().is_empty(),
        "code" => is_code(s),
        "id" => is_id(s),
        "uri" | "url" | "canonical" => !s.chars().any(char::is_whitespace),
        "oid" => is_oid(s),
        "uuid" => s.strip_prefix("urn:uuid:").is_some_and(is_uuid),
        "date" => datetime::is_date(s),
        "dateTime" => datetime::is_date_time(s),
        "instant" => datetime::is_instant(s),
        "time" => datetime::is_time(s),
        "base64Binary" => is_base64(s),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid {type_code} format: {s:?}"))
    }
}

/// `[^\s]+(\s[^\s]+)*`: no leading, trailing or doubled whitespace.
fn is_code(s: &str) -> bool {
    !s.starts_with(char::is_whitespace) && !s.ends_with(char::is_whitespace) && !s.contains("  ")
}

/// `[A-Za-z0-9\-\.]{1,64}`
pub(crate) fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`
pub(crate) fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut arcs = rest.split('.');
    let first_ok = matches!(arcs.next(), Some("0" | "1" | "2"));
    let mut count = 0;
    let rest_ok = arcs.all(|a| {
        count += 1;
        !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) && (a == "0" || !a.starts_with('0'))
    });
    first_ok && rest_ok && count > 0
}

/// 8-4-4-4-12 lower- or upper-case hex.
pub(crate) fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_base64(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    !compact.is_empty()
        && compact.len().is_multiple_of(4)
        && compact
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn primitive_formats() {
        assert!(check("boolean", &json!(true)).is_ok());
        assert!(check("boolean", &json!("true")).is_err());
        assert!(check("integer", &json!(-5)).is_ok());
        assert!(check("positiveInt", &json!(0)).is_err());
        assert!(check("unsignedInt", &json!(0)).is_ok());
        assert!(check("integer", &serde_json::from_str::<Value>("1.0").unwrap()).is_err());
        assert!(check("integer", &json!(3_000_000_000_i64)).is_err());
        assert!(check("decimal", &json!("1.5")).is_err());
        assert!(check("code", &json!(" male")).is_err());
        assert!(check("code", &json!("in progress")).is_ok());
        assert!(check("id", &json!("a_b")).is_err());
        assert!(check("uri", &json!("http://x y")).is_err());
        assert!(check("string", &json!("")).is_err());
        assert!(check("oid", &json!("urn:oid:1.2.840.10008")).is_ok());
        assert!(check("oid", &json!("urn:oid:3.2")).is_err());
        assert!(check("base64Binary", &json!("aGVsbG8=")).is_ok());
        assert!(check("base64Binary", &json!("aGVsbG8")).is_err());
    }
}
