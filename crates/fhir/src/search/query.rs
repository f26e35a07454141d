//! Parsing of search query strings into filters, and the exact re-check of a
//! filter against a resource. The index only narrows; `ParamFilter::matches`
//! is the authority.

use serde_json::Value;

use super::params::{ParamKind, SearchParam};
use super::terms::{self, normalise, prefix_term};
use crate::datetime::{self, Precision};
use crate::types::{ResourceType, resource_type};
use crate::validate::{Issue, IssueCode};

/// Largest page a client may ask for.
pub const MAX_COUNT: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatePrefix {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Sa,
    Eb,
}

/// A query range `[low, high)` in epoch ms with its comparison prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateCondition {
    pub prefix: DatePrefix,
    pub low: i64,
    pub high: i64,
}

impl DateCondition {
    /// FHIR R4 prefix semantics (search.html#prefix) against a resource range `[low, high)`.
    pub fn matches(&self, low: i64, high: i64) -> bool {
        let contained = low >= self.low && high <= self.high;
        match self.prefix {
            DatePrefix::Eq => contained,
            DatePrefix::Ne => !contained,
            DatePrefix::Gt => high > self.high,
            DatePrefix::Lt => low < self.low,
            DatePrefix::Ge => high > self.high || contained,
            DatePrefix::Le => low < self.low || contained,
            DatePrefix::Sa => low >= self.high,
            DatePrefix::Eb => high <= self.low,
        }
    }
}

#[derive(Debug)]
pub enum SortKey {
    Date {
        param: &'static str,
        descending: bool,
    },
    LastUpdated {
        descending: bool,
    },
}

#[derive(Debug)]
pub struct Include {
    pub source: ResourceType,
    pub param: &'static SearchParam,
    pub target: Option<ResourceType>,
}

impl Include {
    /// `Type/id` strings the param points at (relative only, filtered by target).
    pub fn references(&self, resource: &Value) -> Vec<String> {
        let mut out: Vec<String> = terms::reference_values(resource, self.param)
            .into_iter()
            .filter(|r| {
                self.target
                    .is_none_or(|t| r.split('/').next() == Some(t.name()))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[derive(Debug)]
pub struct SearchQuery {
    /// ANDed; each filter's values are ORed.
    pub params: Vec<ParamFilter>,
    pub count: Option<usize>,
    pub sort: Option<SortKey>,
    pub includes: Vec<Include>,
    pub cursor: Option<String>,
}

/// How the store can narrow candidates for a filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Candidate if it has ANY of these terms (same strings as `index_entries`), under `param`
    /// or under any parameter of `also`: those `param` includes (`SearchParam::includes`),
    /// whose terms `index_entries` does not write again under `param`.
    Terms {
        param: &'static str,
        also: &'static [&'static str],
        any_of: Vec<String>,
    },
    /// Candidate if ANY condition matches an indexed range of `param` or of a parameter of
    /// `also` (those it includes, as for `Terms`).
    Dates {
        param: &'static str,
        also: &'static [&'static str],
        any_of: Vec<DateCondition>,
    },
    Ids(Vec<String>),
    /// Any-of semantics, like `Dates`.
    LastUpdated(Vec<DateCondition>),
    /// Cannot narrow: the caller needs another indexed filter or refuses.
    Unindexed,
}

#[derive(Clone, Debug)]
struct TokenQuery {
    /// None: any system; Some(""): explicitly no system.
    system: Option<String>,
    code: Option<String>,
}

#[derive(Clone, Debug)]
enum Filter {
    Id(Vec<String>),
    LastUpdated(Vec<DateCondition>),
    String {
        exact: bool,
        values: Vec<String>,
    },
    Phonetic(Vec<Vec<String>>),
    Token(Vec<TokenQuery>),
    Reference(Vec<String>),
    Date {
        values: Vec<(DateCondition, Option<String>)>,
    },
    Missing(bool),
}

#[derive(Debug)]
pub struct ParamFilter {
    name: String,
    param: Option<&'static SearchParam>,
    filter: Filter,
}

fn not_supported(message: String) -> Issue {
    Issue::error(IssueCode::NotSupported, "", message)
}

fn invalid(message: String) -> Issue {
    Issue::error(IssueCode::Invalid, "", message)
}

/// Parses `(name, value)` pairs of a search on `rt`.
pub fn parse_search(rt: ResourceType, pairs: &[(String, String)]) -> Result<SearchQuery, Issue> {
    let mut query = SearchQuery {
        params: Vec::new(),
        count: None,
        sort: None,
        includes: Vec::new(),
        cursor: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "_count" => {
                let n: usize = value.parse().map_err(|_| {
                    invalid(format!(
                        "_count must be a non-negative integer, got {value:?}"
                    ))
                })?;
                query.count = Some(n.min(MAX_COUNT));
            }
            "_cursor" => query.cursor = Some(value.clone()),
            "_format" => {
                if !matches!(
                    value.as_str(),
                    "json" | "application/json" | "application/fhir+json"
                ) {
                    return Err(not_supported(format!(
                        "_format {value:?} is not supported (json only)"
                    )));
                }
            }
            "_sort" => query.sort = Some(parse_sort(rt, value)?),
            "_include" => query.includes.push(parse_include(rt, value)?),
            _ => query.params.push(parse_filter(rt, key, value)?),
        }
    }
    Ok(query)
}

fn parse_sort(rt: ResourceType, value: &str) -> Result<SortKey, Issue> {
    let (descending, name) = match value.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, value),
    };
    match name {
        "_lastUpdated" => Ok(SortKey::LastUpdated { descending }),
        "date"
            if rt
                .search_param("date")
                .is_some_and(|p| p.kind == ParamKind::Date) =>
        {
            Ok(SortKey::Date {
                param: "date",
                descending,
            })
        }
        _ => Err(not_supported(format!(
            "_sort={value} is not supported (date, -date, _lastUpdated, -_lastUpdated)"
        ))),
    }
}

fn parse_include(rt: ResourceType, value: &str) -> Result<Include, Issue> {
    let parts: Vec<&str> = value.split(':').collect();
    let (source, name, target) = match parts.as_slice() {
        [s, n] => (*s, *n, None),
        [s, n, t] => (*s, *n, Some(*t)),
        _ => {
            return Err(invalid(format!(
                "_include={value} must be Type:param[:Target]"
            )));
        }
    };
    if source != rt.name() {
        return Err(not_supported(format!(
            "_include={value}: source must be {}",
            rt.name()
        )));
    }
    let Some(param) = rt
        .search_param(name)
        .filter(|p| p.kind == ParamKind::Reference)
    else {
        return Err(not_supported(format!(
            "_include={value}: {name} is not a reference parameter of {source}"
        )));
    };
    let target = match target {
        None => None,
        Some(t) => match resource_type(t).filter(|rt| param.targets.contains(&rt.name())) {
            Some(rt) => Some(rt),
            None => {
                return Err(not_supported(format!(
                    "_include={value}: {t} is not a target of {name}"
                )));
            }
        },
    };
    Ok(Include {
        source: rt,
        param,
        target,
    })
}

fn parse_filter(rt: ResourceType, key: &str, value: &str) -> Result<ParamFilter, Issue> {
    let (name, modifier) = match key.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (key, None),
    };
    let values: Vec<&str> = value.split(',').collect();
    if values.iter().any(|v| v.is_empty()) {
        return Err(invalid(format!("parameter {key} has an empty value")));
    }
    let param = match name {
        "_id" | "_lastUpdated" => None,
        _ => Some(rt.search_param(name).ok_or_else(|| {
            not_supported(format!("unknown search parameter {name} for {}", rt.name()))
        })?),
    };
    if param.is_some_and(|p| p.kind == ParamKind::Token) && values.contains(&"|") {
        return Err(invalid(format!(
            "parameter {key}: a token needs a system or a code"
        )));
    }
    let bad_modifier = || {
        not_supported(format!(
            "modifier :{} is not supported on {name}",
            modifier.unwrap_or_default()
        ))
    };
    let filter = if modifier == Some("missing") {
        match value {
            "true" => Filter::Missing(true),
            "false" => Filter::Missing(false),
            _ => return Err(invalid(format!("{key} takes true or false"))),
        }
    } else {
        match (name, param.map(|p| p.kind), modifier) {
            ("_id", _, None) => Filter::Id(values.iter().map(|v| (*v).to_owned()).collect()),
            ("_lastUpdated", _, None) => Filter::LastUpdated(
                values
                    .iter()
                    .map(|v| parse_date_condition(key, v).map(|(c, _)| c))
                    .collect::<Result<_, _>>()?,
            ),
            (_, Some(ParamKind::String), None | Some("exact")) => Filter::String {
                exact: modifier.is_some(),
                values: values
                    .iter()
                    .map(|v| {
                        if modifier.is_some() {
                            (*v).to_owned()
                        } else {
                            normalise(v)
                        }
                    })
                    .collect(),
            },
            (_, Some(ParamKind::Phonetic), None) => {
                Filter::Phonetic(values.iter().map(|v| terms::phonetic_codes(v)).collect())
            }
            (_, Some(ParamKind::Token), None) => {
                Filter::Token(values.iter().map(|v| parse_token(v)).collect())
            }
            (_, Some(ParamKind::Reference), None) => {
                let targets = param.map_or(&[][..], |p| p.targets);
                Filter::Reference(
                    values
                        .iter()
                        .map(|v| parse_reference(key, v, targets))
                        .collect::<Result<_, _>>()?,
                )
            }
            (_, Some(ParamKind::Date), None) => Filter::Date {
                values: values
                    .iter()
                    .map(|v| parse_date_condition(key, v))
                    .collect::<Result<_, _>>()?,
            },
            _ => return Err(bad_modifier()),
        }
    };
    Ok(ParamFilter {
        name: name.to_owned(),
        param,
        filter,
    })
}

fn parse_token(v: &str) -> TokenQuery {
    match v.split_once('|') {
        None => TokenQuery {
            system: None,
            code: Some(v.to_owned()),
        },
        Some((system, code)) => TokenQuery {
            system: Some(system.to_owned()),
            code: (!code.is_empty()).then(|| code.to_owned()),
        },
    }
}

fn parse_reference(key: &str, v: &str, targets: &[&str]) -> Result<String, Issue> {
    if let Some(reference) = terms::relative_reference(v) {
        let ty = reference.split('/').next().unwrap_or_default();
        if !targets.contains(&ty) {
            return Err(invalid(format!(
                "{key}: {ty} is not a target of this parameter"
            )));
        }
        return Ok(reference);
    }
    match targets {
        [only] if crate::primitives::is_id(v) => Ok(format!("{only}/{v}")),
        _ => Err(invalid(format!("{key}: expected Type/id, got {v:?}"))),
    }
}

/// Parses `[prefix]date`; also returns the bare date text when it is a plain
/// date (for birthdate terms).
fn parse_date_condition(key: &str, v: &str) -> Result<(DateCondition, Option<String>), Issue> {
    let prefixes = [
        ("eq", DatePrefix::Eq),
        ("ne", DatePrefix::Ne),
        ("lt", DatePrefix::Lt),
        ("le", DatePrefix::Le),
        ("gt", DatePrefix::Gt),
        ("ge", DatePrefix::Ge),
        ("sa", DatePrefix::Sa),
        ("eb", DatePrefix::Eb),
    ];
    let (prefix, rest) = if v.starts_with(|c: char| c.is_ascii_alphabetic()) {
        let found = prefixes.iter().find(|(p, _)| v.starts_with(p));
        match found {
            Some((p, prefix)) => (*prefix, &v[p.len()..]),
            None => {
                return Err(not_supported(format!(
                    "{key}: unsupported date prefix in {v:?}"
                )));
            }
        }
    } else {
        (DatePrefix::Eq, v)
    };
    // A '+' in an offset arrives as a space when the client did not escape it.
    let rest = rest.replace(' ', "+");
    let range = datetime::parse(&rest, true)
        .ok_or_else(|| invalid(format!("{key}: invalid date {v:?}")))?;
    let text = (range.precision != Precision::Time).then_some(rest);
    Ok((
        DateCondition {
            prefix,
            low: range.low,
            high: range.high,
        },
        text,
    ))
}

impl ParamFilter {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the store can narrow candidates for this filter.
    pub fn lookup(&self) -> Lookup {
        let param = match self.param {
            Some(p) => p.name,
            None => "",
        };
        let also = self.param.map_or(&[][..], |p| p.includes);
        match &self.filter {
            Filter::Id(ids) => Lookup::Ids(ids.clone()),
            Filter::LastUpdated(conditions) => Lookup::LastUpdated(conditions.clone()),
            Filter::Missing(_) => Lookup::Unindexed,
            Filter::String {
                exact: true,
                values,
            } => Lookup::Terms {
                param,
                also,
                any_of: values
                    .iter()
                    .map(|v| format!("e:{}", normalise(v)))
                    .collect(),
            },
            Filter::String {
                exact: false,
                values,
            } => Lookup::Terms {
                param,
                also,
                any_of: values.iter().map(|v| prefix_term(v)).collect(),
            },
            Filter::Phonetic(codes) => {
                // Any one word's code narrows; matches() requires all of them.
                let any_of: Option<Vec<String>> = codes
                    .iter()
                    .map(|c| c.first().map(|c| format!("ph:{c}")))
                    .collect();
                any_of.map_or(Lookup::Unindexed, |any_of| Lookup::Terms {
                    param,
                    also,
                    any_of,
                })
            }
            Filter::Token(tokens) => Lookup::Terms {
                param,
                also,
                any_of: tokens
                    .iter()
                    .map(|t| match (&t.system, &t.code) {
                        (Some(s), Some(c)) if !s.is_empty() => format!("t:{s}|{c}"),
                        (_, Some(c)) => format!("t:|{c}"),
                        (Some(s), None) => format!("t:{s}|"),
                        (None, None) => String::new(),
                    })
                    .collect(),
            },
            Filter::Reference(refs) => Lookup::Terms {
                param,
                also,
                any_of: refs.iter().map(|r| format!("r:{r}")).collect(),
            },
            Filter::Date { values } if self.param.is_some_and(|p| p.date_as_terms) => {
                let terms: Option<Vec<String>> = values
                    .iter()
                    .map(|(c, text)| match (c.prefix, text) {
                        (DatePrefix::Eq, Some(t)) => Some(format!("d:{t}")),
                        _ => None,
                    })
                    .collect();
                terms.map_or(Lookup::Unindexed, |any_of| Lookup::Terms {
                    param,
                    also,
                    any_of,
                })
            }
            Filter::Date { values } => Lookup::Dates {
                param,
                also,
                any_of: values.iter().map(|(c, _)| *c).collect(),
            },
        }
    }

    /// Exact re-check against an opened resource (the authority; the index only narrows).
    pub fn matches(&self, resource: &Value, id: &str, last_updated_ms: i64) -> bool {
        let Some(param) = self.param else {
            return match &self.filter {
                Filter::Id(ids) => ids.iter().any(|i| i == id),
                Filter::LastUpdated(conditions) => conditions
                    .iter()
                    .any(|c| c.matches(last_updated_ms, last_updated_ms + 1)),
                _ => false,
            };
        };
        match &self.filter {
            Filter::Id(_) | Filter::LastUpdated(_) => false,
            Filter::Missing(missing) => terms::values_at(resource, param).is_empty() == *missing,
            Filter::String { exact, values } => {
                let found = terms::string_values(resource, param);
                values.iter().any(|q| {
                    found.iter().any(|s| {
                        if *exact {
                            s == q
                        } else {
                            let n = normalise(s);
                            n.starts_with(q.as_str())
                                || terms::words(&n).any(|w| w.starts_with(q.as_str()))
                        }
                    })
                })
            }
            Filter::Phonetic(codes) => {
                let found: Vec<String> = terms::string_values(resource, param)
                    .iter()
                    .flat_map(|s| terms::phonetic_codes(s))
                    .collect();
                codes
                    .iter()
                    .any(|q| !q.is_empty() && q.iter().all(|c| found.contains(c)))
            }
            Filter::Token(tokens) => {
                let found = terms::token_values(resource, param);
                tokens.iter().any(|t| {
                    found.iter().any(|(system, code)| {
                        let system_ok = match t.system.as_deref() {
                            None => true,
                            Some("") => system.is_none(),
                            Some(s) => system.as_deref() == Some(s),
                        };
                        system_ok && t.code.as_ref().is_none_or(|c| c == code)
                    })
                })
            }
            Filter::Reference(refs) => {
                let found = terms::reference_values(resource, param);
                refs.iter().any(|r| found.contains(r))
            }
            Filter::Date { values } => {
                let ranges: Vec<(i64, i64)> = if param.date_as_terms {
                    terms::values_at(resource, param)
                        .into_iter()
                        .filter_map(Value::as_str)
                        .filter_map(|s| datetime::parse(s, false))
                        .map(|r| (r.low, r.high))
                        .collect()
                } else {
                    terms::date_ranges(resource, param)
                };
                values
                    .iter()
                    .any(|(c, _)| ranges.iter().any(|(low, high)| c.matches(*low, *high)))
            }
        }
    }
}
