//! Search: parameter definitions, index terms and query parsing/matching.

pub(crate) mod params;
mod query;
mod terms;

pub use params::{ParamKind, SearchParam};
pub use query::{
    DateCondition, DatePrefix, Include, Lookup, ParamFilter, SearchQuery, SortKey, parse_search,
};
pub(crate) use terms::reference_values as terms_reference_values;
pub use terms::{IndexEntry, index_entries};
