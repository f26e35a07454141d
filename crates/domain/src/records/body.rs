//! A resource's JSON as a read returns it: the text exactly as it was sealed, and its parsed
//! form, each made from the other on first use.
//!
//! A read by id of a Patient needs neither the parsed form nor a fresh serialisation: the patient
//! it is about is its own id, and the response is the stored text. Parsing the opened body into a
//! `serde_json::Value` and writing it out again was about a tenth of the server's time in a read
//! over HTTP (bench/notes.md, "Reads send the stored text"). Searches and other resource types
//! still parse (their parameters and data subjects are read from the parsed form).

use std::borrow::Cow;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

/// The text and the parsed form of one resource; at least one is always set.
#[derive(Clone, Debug)]
pub struct ResourceBody {
    text: OnceLock<String>,
    value: OnceLock<Value>,
}

impl ResourceBody {
    /// A body known by its parsed form (a write); the text is serialised when first asked for.
    pub fn from_value(value: Value) -> ResourceBody {
        ResourceBody {
            text: OnceLock::new(),
            value: OnceLock::from(value),
        }
    }

    /// An opened body whose text is valid JSON (checked by [`identity`]); it is parsed when
    /// first asked for.
    pub(crate) fn from_text(text: String) -> ResourceBody {
        ResourceBody {
            text: OnceLock::from(text),
            value: OnceLock::new(),
        }
    }

    /// An opened body already parsed: both forms.
    pub(crate) fn from_both(text: String, value: Value) -> ResourceBody {
        ResourceBody {
            text: OnceLock::from(text),
            value: OnceLock::from(value),
        }
    }

    /// The compact JSON text: for an opened body, exactly the bytes that were sealed.
    pub fn text(&self) -> &str {
        self.text.get_or_init(|| {
            self.value
                .get()
                .map(Value::to_string)
                .unwrap_or_else(|| "null".to_owned())
        })
    }

    /// The parsed form.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            self.text
                .get()
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or(Value::Null)
        })
    }
}

/// The two members an opened body must carry to be the resource it is stored as.
#[derive(Deserialize)]
struct Identity<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// Whether `text` is one JSON object whose `resourceType` and `id` are these, without building
/// its parsed form (every other member is read past, and must be valid JSON too).
pub(crate) fn identity(text: &[u8], resource_type: &str, id: &str) -> bool {
    // serde would also read a struct from an array of its fields in order.
    let object = text.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{');
    object
        && serde_json::from_slice::<Identity>(text)
            .is_ok_and(|found| found.resource_type == resource_type && found.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_needs_the_type_and_id_and_valid_json_throughout() {
        let text = br#"{"resourceType":"Patient","id":"p1","name":[{"family":"O\"Neil"}]}"#;
        assert!(identity(text, "Patient", "p1"));
        assert!(!identity(text, "Patient", "p2"));
        assert!(!identity(text, "Observation", "p1"));
        assert!(!identity(br#"{"resourceType":"Patient"}"#, "Patient", "p1"));
        // Damage after the two members is still found.
        assert!(!identity(
            br#"{"resourceType":"Patient","id":"p1","name":[}"#,
            "Patient",
            "p1"
        ));
        assert!(!identity(br#"["Patient","p1"]"#, "Patient", "p1"));
        // An escaped id is compared by its value.
        assert!(identity(
            br#"{"id":"p\u0031","resourceType":"Patient"}"#,
            "Patient",
            "p1"
        ));
    }

    #[test]
    fn each_form_is_made_from_the_other() {
        let value = json!({"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"});
        let text = value.to_string();
        assert_eq!(ResourceBody::from_value(value.clone()).text(), text);
        assert_eq!(ResourceBody::from_text(text.clone()).value(), &value);
        let both = ResourceBody::from_both(text.clone(), value.clone());
        assert_eq!((both.text(), both.value()), (text.as_str(), &value));
    }
}
