//! Index terms: what the store keeps (blinded) for each resource version.
//!
//! Term design. Every term is plaintext here and deterministic; the caller
//! HMACs it with the tenant's index key before storage, so the store sees only
//! opaque tokens, and equal plaintexts give equal tokens (which is what makes
//! lookups work, and also what leaks equality and prefix structure):
//!
//! * string params: the value is normalised (NFKD, combining marks removed,
//!   lowercase, whitespace collapsed). Terms are `e:<normalised value>` and
//!   `p:<first k chars>` for k = 1..=min(len, 5) of the normalised value and
//!   of each of its words (split on whitespace and hyphens), so `name=smi`
//!   finds "John Smith-Jones". Queries longer than 5 chars look up the
//!   5-char prefix term; `ParamFilter::matches` re-checks the rest. (Up to
//!   the eleventh session the prefixes ran to 12 characters: a file written
//!   then holds the longer ones too, which nothing looks up any more, until
//!   the resource is next written.)
//! * phonetic: `ph:<Soundex>` of each alphabetic word of each name part.
//! * token params: `t:<system>|<code>` (when a system is present), `t:|<code>`
//!   (for every code, so a bare `code` query finds it whatever its system) and
//!   `t:<system>|` (so `system|` finds any code of that system).
//! * reference params: `r:<Type>/<id>` for relative references only.
//! * Patient.birthdate: `d:YYYY`, `d:YYYY-MM`, `d:YYYY-MM-DD` as far as the
//!   value's precision goes, so `eq` at any precision is indexable.
//! * other date params are not terms but plain `[low, high)` epoch-ms ranges
//!   (`IndexEntry::Date`), since clinical date ranges must support ordering.
//!
//! A parameter that includes others (`SearchParam::includes`: a Patient's `name` its
//! `family` and `given`, `telecom` its `phone` and `email`, a clinical resource's `subject` its
//! `patient`, a Condition's `date` its `onset-date` and `recorded-date`) keeps only the terms and date ranges they do not index
//! already; a look-up of it reads theirs as well (`Lookup::Terms::also`,
//! `Lookup::Dates::also`). Each is then written once. With the five-character prefixes, a
//! generated Patient (`carevault-bench populate`) has 38.1 token rows instead of 61.5, and an
//! import writes 14 % fewer bytes to SQLite's WAL (docs/performance.md, twelfth session).

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::params::{ParamKind, SearchParam};
use crate::datetime;
use crate::types::ResourceType;

/// Longest prefix kept as a term. A longer query looks up its first five characters and the
/// re-check of each candidate decides; the family and birth-date search ran as fast as with
/// twelve, each resource writes fewer rows, and someone holding the database has less to count
/// (docs/performance.md and docs/threat-model.md, twelfth session).
pub(crate) const MAX_PREFIX: usize = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexEntry {
    /// Blinded later by the caller.
    Term { param: &'static str, term: String },
    /// Plain epoch milliseconds, low inclusive, high exclusive.
    Date {
        param: &'static str,
        low: i64,
        high: i64,
    },
}

/// What the store indexes for one resource version.
pub fn index_entries(rt: ResourceType, resource: &Value) -> Vec<IndexEntry> {
    let mut entries: Vec<IndexEntry> = Vec::new();
    let mut push = |e: IndexEntry| {
        if !entries.contains(&e) {
            entries.push(e);
        }
    };
    for param in rt.search_params() {
        let name = param.name;
        match param.kind {
            ParamKind::String => {
                for s in string_values(resource, param) {
                    for term in string_terms(&normalise(&s)) {
                        push(IndexEntry::Term { param: name, term });
                    }
                }
            }
            ParamKind::Phonetic => {
                for s in string_values(resource, param) {
                    for code in phonetic_codes(&s) {
                        push(IndexEntry::Term {
                            param: name,
                            term: format!("ph:{code}"),
                        });
                    }
                }
            }
            ParamKind::Token => {
                for (system, code) in token_values(resource, param) {
                    for term in token_terms(system.as_deref(), &code) {
                        push(IndexEntry::Term { param: name, term });
                    }
                }
            }
            ParamKind::Reference => {
                for reference in reference_values(resource, param) {
                    push(IndexEntry::Term {
                        param: name,
                        term: format!("r:{reference}"),
                    });
                }
            }
            ParamKind::Date if param.date_as_terms => {
                for s in values_at(resource, param)
                    .into_iter()
                    .filter_map(Value::as_str)
                {
                    for term in birthdate_terms(s) {
                        push(IndexEntry::Term { param: name, term });
                    }
                }
            }
            ParamKind::Date => {
                for (low, high) in date_ranges(resource, param) {
                    push(IndexEntry::Date {
                        param: name,
                        low,
                        high,
                    });
                }
            }
        }
    }
    without_included_terms(rt, entries)
}

/// `entries` less the terms and date ranges of a parameter that one of the parameters it
/// includes indexes already (see [`SearchParam::includes`]).
fn without_included_terms(rt: ResourceType, entries: Vec<IndexEntry>) -> Vec<IndexEntry> {
    let included = |entry: &IndexEntry| {
        let (IndexEntry::Term { param, .. } | IndexEntry::Date { param, .. }) = entry;
        let includes = rt
            .search_param(param)
            .map_or(&[][..], |found| found.includes);
        includes.iter().any(|other| {
            entries.iter().any(|e| match (e, entry) {
                (IndexEntry::Term { param, term }, IndexEntry::Term { term: t, .. }) => {
                    param == other && term == t
                }
                (
                    IndexEntry::Date { param, low, high },
                    IndexEntry::Date {
                        low: l, high: h, ..
                    },
                ) => param == other && low == l && high == h,
                _ => false,
            })
        })
    };
    let keep: Vec<bool> = entries.iter().map(|entry| !included(entry)).collect();
    entries
        .into_iter()
        .zip(keep)
        .filter_map(|(entry, keep)| keep.then_some(entry))
        .collect()
}

/// NFKD, strip combining marks, lowercase, collapse whitespace.
pub(crate) fn normalise(s: &str) -> String {
    let folded: String = s
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn words(normalised: &str) -> impl Iterator<Item = &str> {
    normalised.split([' ', '-']).filter(|w| !w.is_empty())
}

pub(crate) fn prefix_term(normalised: &str) -> String {
    format!(
        "p:{}",
        normalised.chars().take(MAX_PREFIX).collect::<String>()
    )
}

fn string_terms(normalised: &str) -> Vec<String> {
    if normalised.is_empty() {
        return Vec::new();
    }
    let mut terms = vec![format!("e:{normalised}")];
    for part in std::iter::once(normalised).chain(words(normalised)) {
        let mut prefix = String::new();
        for c in part.chars().take(MAX_PREFIX) {
            prefix.push(c);
            let term = format!("p:{prefix}");
            if !terms.contains(&term) {
                terms.push(term);
            }
        }
    }
    terms
}

pub(crate) fn token_terms(system: Option<&str>, code: &str) -> Vec<String> {
    let mut terms = vec![format!("t:|{code}")];
    if let Some(system) = system {
        terms.push(format!("t:{system}|{code}"));
        terms.push(format!("t:{system}|"));
    }
    terms
}

/// Terms for a birth date at each precision it carries.
pub(crate) fn birthdate_terms(s: &str) -> Vec<String> {
    let Some(range) = datetime::parse(s, true) else {
        return Vec::new();
    };
    let date = s.split('T').next().unwrap_or(s);
    let mut terms = Vec::new();
    for (len, precision) in [
        (4, datetime::Precision::Year),
        (7, datetime::Precision::Month),
        (10, datetime::Precision::Day),
    ] {
        if range.precision >= precision
            && let Some(part) = date.get(..len)
        {
            terms.push(format!("d:{part}"));
        }
    }
    terms
}

/// American Soundex of each alphabetic word (after accent folding).
pub(crate) fn phonetic_codes(s: &str) -> Vec<String> {
    let normalised = normalise(s);
    let mut codes = Vec::new();
    for word in normalised
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
    {
        let code = soundex(word);
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

fn soundex_digit(c: u8) -> u8 {
    match c {
        b'b' | b'f' | b'p' | b'v' => b'1',
        b'c' | b'g' | b'j' | b'k' | b'q' | b's' | b'x' | b'z' => b'2',
        b'd' | b't' => b'3',
        b'l' => b'4',
        b'm' | b'n' => b'5',
        b'r' => b'6',
        _ => b'0',
    }
}

/// `word` is lowercase ASCII letters and non-empty.
fn soundex(word: &str) -> String {
    let bytes = word.as_bytes();
    let mut out = String::new();
    let Some(&first) = bytes.first() else {
        return out;
    };
    out.push(char::from(first.to_ascii_uppercase()));
    let mut last = soundex_digit(first);
    for &c in &bytes[1..] {
        let digit = soundex_digit(c);
        if digit != b'0' && digit != last {
            out.push(char::from(digit));
            if out.len() == 4 {
                break;
            }
        }
        // h and w do not separate equal codes; vowels do.
        if c != b'h' && c != b'w' {
            last = digit;
        }
    }
    while out.len() < 4 {
        out.push('0');
    }
    out
}

/// Values at the param's paths (arrays flattened, `x[x]` matching every choice).
pub(crate) fn values_at<'a>(resource: &'a Value, param: &SearchParam) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for path in param.paths {
        let mut current = vec![resource];
        for segment in path.split('.') {
            let mut next = Vec::new();
            for value in current {
                let Some(object) = value.as_object() else {
                    continue;
                };
                for (key, child) in object {
                    let hit = match segment.strip_suffix("[x]") {
                        Some(base) => key
                            .strip_prefix(base)
                            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase())),
                        None => key == segment,
                    };
                    if hit {
                        match child {
                            Value::Array(items) => next.extend(items.iter()),
                            other => next.push(other),
                        }
                    }
                }
            }
            current = next;
        }
        out.extend(current);
    }
    out
}

/// Strings of a string param: the value itself, or the text parts of a
/// HumanName/Address (not `use`, `type` or `period`).
pub(crate) fn string_values(resource: &Value, param: &SearchParam) -> Vec<String> {
    let mut out = Vec::new();
    for value in values_at(resource, param) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Object(object) => {
                for (key, child) in object {
                    if matches!(key.as_str(), "use" | "type" | "period" | "id" | "extension")
                        || key.starts_with('_')
                    {
                        continue;
                    }
                    match child {
                        Value::String(s) => out.push(s.clone()),
                        Value::Array(items) => {
                            out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `(system, code)` pairs: codes, booleans, Coding, CodeableConcept,
/// Identifier (system, value) and ContactPoint (value, filtered by system).
pub(crate) fn token_values(resource: &Value, param: &SearchParam) -> Vec<(Option<String>, String)> {
    let is_contact = param.paths == ["telecom"];
    let mut out = Vec::new();
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    for value in values_at(resource, param) {
        match value {
            Value::String(s) => out.push((None, s.clone())),
            Value::Bool(b) => out.push((None, b.to_string())),
            Value::Object(o) if is_contact => {
                let system_ok = param
                    .contact_system
                    .is_none_or(|want| o.get("system").and_then(Value::as_str) == Some(want));
                if let (true, Some(v)) = (system_ok, text(o.get("value"))) {
                    out.push((None, v));
                }
            }
            Value::Object(o) => {
                let codings = o
                    .get("coding")
                    .and_then(Value::as_array)
                    .map(|c| c.iter().collect())
                    .unwrap_or_else(|| vec![value]);
                for coding in codings {
                    let code = text(coding.get("code")).or_else(|| text(coding.get("value")));
                    if let Some(code) = code {
                        out.push((text(coding.get("system")), code));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Relative `Type/id` of a reference string (version dropped), if relative.
pub(crate) fn relative_reference(reference: &str) -> Option<String> {
    let parts: Vec<&str> = reference.split('/').collect();
    match parts.as_slice() {
        [t, id] | [t, id, "_history", _]
            if t.starts_with(|c: char| c.is_ascii_uppercase()) && !id.is_empty() =>
        {
            Some(format!("{t}/{id}"))
        }
        _ => None,
    }
}

/// `Type/id` of the param's relative references to one of its target types.
pub(crate) fn reference_values(resource: &Value, param: &SearchParam) -> Vec<String> {
    values_at(resource, param)
        .into_iter()
        .filter_map(|v| v.get("reference").and_then(Value::as_str))
        .filter_map(relative_reference)
        .filter(|r| {
            r.split('/')
                .next()
                .is_some_and(|t| param.targets.contains(&t))
        })
        .collect()
}

/// `[low, high)` ranges of date, dateTime, instant and Period values.
pub(crate) fn date_ranges(resource: &Value, param: &SearchParam) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for value in values_at(resource, param) {
        match value {
            Value::String(s) => {
                if let Some(r) = datetime::parse(s, false) {
                    out.push((r.low, r.high));
                }
            }
            Value::Object(o) if o.contains_key("start") || o.contains_key("end") => {
                let bound = |k: &str| {
                    o.get(k)
                        .and_then(Value::as_str)
                        .and_then(|s| datetime::parse(s, false))
                };
                // An open end of a Period extends without limit. A period whose end comes
                // before its start (invalid, but accepted) covers the time between the two:
                // no stored range ends before it starts, which the store's date indexes rely on.
                let start = bound("start");
                let end = bound("end");
                let range = match (start, end) {
                    (Some(start), Some(end)) if end.high < start.low => (end.low, start.high),
                    _ => (
                        start.map_or(i64::MIN, |r| r.low),
                        end.map_or(i64::MAX, |r| r.high),
                    ),
                };
                out.push(range);
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn soundex_codes() {
        assert_eq!(soundex("robert"), "R163");
        assert_eq!(soundex("rupert"), "R163");
        assert_eq!(soundex("ashcraft"), "A261");
        assert_eq!(soundex("tymczak"), "T522");
        assert_eq!(soundex("smith"), soundex("smyth"));
        assert_eq!(phonetic_codes("Smith-Jones"), vec!["S530", "J520"]);
    }

    #[test]
    fn a_period_range_never_ends_before_it_starts() {
        let encounter = crate::resource_type("Encounter").unwrap();
        let dates = |period: Value| -> Vec<(i64, i64)> {
            let resource = serde_json::json!({"resourceType": "Encounter", "period": period});
            index_entries(encounter, &resource)
                .into_iter()
                .filter_map(|entry| match entry {
                    IndexEntry::Date {
                        param: "date",
                        low,
                        high,
                    } => Some((low, high)),
                    _ => None,
                })
                .collect()
        };
        let day = |text: &str| datetime::parse(text, false).unwrap();
        let (first, second) = (day("2024-03-01"), day("2024-03-05"));
        // In order: from the start of the first day to the end of the last.
        assert_eq!(
            dates(serde_json::json!({"start": "2024-03-01", "end": "2024-03-05"})),
            vec![(first.low, second.high)]
        );
        // Reversed (end before start): the same span, its ends in order.
        assert_eq!(
            dates(serde_json::json!({"start": "2024-03-05", "end": "2024-03-01"})),
            vec![(first.low, second.high)]
        );
        // Open ends extend without limit.
        assert_eq!(
            dates(serde_json::json!({"start": "2024-03-01"})),
            vec![(first.low, i64::MAX)]
        );
        assert_eq!(
            dates(serde_json::json!({"end": "2024-03-05"})),
            vec![(i64::MIN, second.high)]
        );
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalise("  José   SMITH "), "jose smith");
        assert_eq!(normalise("Ångström"), "angstrom");
    }

    #[test]
    fn birthdate_precisions() {
        assert_eq!(
            birthdate_terms("1974-12-25"),
            vec!["d:1974", "d:1974-12", "d:1974-12-25"]
        );
        assert_eq!(birthdate_terms("1974"), vec!["d:1974"]);
    }
}
