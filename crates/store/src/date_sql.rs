//! FHIR date prefixes as SQL, with exactly the semantics of
//! [`carevault_fhir::DateCondition::matches`]: the resource range `[low, high)` (columns)
//! against the query range `[q.low, q.high)` (bound values). The conformance suite checks the
//! two agree on every prefix, through both forms a search uses (a probe of one candidate's rows
//! and the set of matching ids).
//!
//! **Indexes.** On SQLite `search_dates` has one range index, on `low`, and a partial index on
//! `high` holding only the long ranges (longer than [`LONG_SPAN_MS`]: open periods, ongoing care
//! plans and medication); PostgreSQL keeps an index on every `high` as well and runs the same
//! statements. An index on every `high` cost as much to write as the one on `low`
//! (an import's dates arrive in no order, so each new row dirtied a page of each), a seventh of
//! everything an import wrote to the WAL at 10,000 patients (`bench/wal-profile`). So each
//! condition is written here as a union of terms ([`Term`]) that each bound `low` or
//! are confined to the long ranges:
//!
//! - `high > x` is `(low > x - LONG_SPAN AND high > x)` for the short ranges, since such a range
//!   starts at most `LONG_SPAN` before it ends, plus `(high > low + LONG_SPAN AND high > x)`
//!   for the long ones;
//! - "within `[a, b)`" gains the bound `low <= b` and "ends by `a`" the bound `low <= a`,
//!   both implied because no stored range ends before it starts (`terms::date_ranges` orders
//!   the ends of a reversed period, and migration 0008 reordered the rows stored before).
//!
//! A set of matching ids is then one `SELECT` per term joined by `UNION` ([`push_id_sets`]):
//! SQLite does not use two indexes for an `OR` inside one statement, and walked every row of
//! the parameter for `ge` and `le` even with both indexes. A probe of one candidate's own rows
//! joins the same terms by `OR` ([`push_condition`]).

use carevault_fhir::{DateCondition, DatePrefix};

use crate::sql::{Sql, Value};

/// Ranges longer than this (366 days, in ms) are the ones the partial index on `high` holds.
/// The literal below and the index's `WHERE` clause in migration 0008 must say the same (a
/// unit test checks both), or the planner cannot use the index.
pub(crate) const LONG_SPAN_MS: i64 = 31_622_400_000;
const LONG_SPAN_LITERAL: &str = "31622400000";

/// Which columns hold a range, and whether they are `search_dates`' (whose long ranges have an
/// index of their own) or an expression without that index (`_lastUpdated`).
#[derive(Clone, Copy)]
pub(crate) struct Range {
    pub low: &'static str,
    pub high: &'static str,
    /// The long-range split and `low` bounds pay only where the indexes above exist.
    pub indexed: bool,
}

/// One conjunction of comparisons; a condition matches when any of its terms does.
enum Term {
    /// `low >= a AND high <= b` (with `low <= b` when indexed).
    Within { low: i64, high: i64 },
    /// The negation of [`Term::Within`].
    NotWithin { low: i64, high: i64 },
    /// `high > x`: all ranges when not indexed, else those up to [`LONG_SPAN_MS`] long.
    EndsAfter(i64),
    /// `high > x` among the long ranges only (indexed form).
    LongEndsAfter(i64),
    /// `low < x`.
    StartsBefore(i64),
    /// `low >= x`.
    StartsFrom(i64),
    /// `high <= x` (with `low <= x` when indexed).
    EndsBy(i64),
}

fn terms(condition: &DateCondition, indexed: bool) -> Vec<Term> {
    let within = Term::Within {
        low: condition.low,
        high: condition.high,
    };
    let after = |terms: &mut Vec<Term>| {
        terms.push(Term::EndsAfter(condition.high));
        if indexed {
            terms.push(Term::LongEndsAfter(condition.high));
        }
    };
    let mut terms = Vec::new();
    match condition.prefix {
        DatePrefix::Eq => terms.push(within),
        DatePrefix::Ne => terms.push(Term::NotWithin {
            low: condition.low,
            high: condition.high,
        }),
        DatePrefix::Gt => after(&mut terms),
        DatePrefix::Lt => terms.push(Term::StartsBefore(condition.low)),
        DatePrefix::Ge => {
            after(&mut terms);
            terms.push(within);
        }
        DatePrefix::Le => {
            terms.push(Term::StartsBefore(condition.low));
            terms.push(within);
        }
        DatePrefix::Sa => terms.push(Term::StartsFrom(condition.high)),
        DatePrefix::Eb => terms.push(Term::EndsBy(condition.low)),
    }
    terms
}

fn push_term(sql: &mut Sql, term: &Term, range: Range) {
    let Range { low, high, indexed } = range;
    match *term {
        Term::Within { low: a, high: b } => {
            sql.push("(").push(low).push(" >= ").bind(Value::Int(a));
            if indexed {
                sql.push(" AND ").push(low).push(" <= ").bind(Value::Int(b));
            }
            sql.push(" AND ")
                .push(high)
                .push(" <= ")
                .bind(Value::Int(b))
                .push(")");
        }
        Term::NotWithin { low: a, high: b } => {
            sql.push("NOT ");
            push_term(sql, &Term::Within { low: a, high: b }, range);
        }
        Term::EndsAfter(x) => {
            if indexed {
                sql.push("(")
                    .push(low)
                    .push(" > ")
                    .bind(Value::Int(x.saturating_sub(LONG_SPAN_MS)))
                    .push(" AND ");
            }
            sql.push(high).push(" > ").bind(Value::Int(x));
            if indexed {
                sql.push(")");
            }
        }
        Term::LongEndsAfter(x) => {
            sql.push("(")
                .push(high)
                .push(" > ")
                .push(low)
                .push(" + ")
                .push(LONG_SPAN_LITERAL)
                .push(" AND ")
                .push(high)
                .push(" > ")
                .bind(Value::Int(x))
                .push(")");
        }
        Term::StartsBefore(x) => {
            sql.push(low).push(" < ").bind(Value::Int(x));
        }
        Term::StartsFrom(x) => {
            sql.push(low).push(" >= ").bind(Value::Int(x));
        }
        Term::EndsBy(x) => {
            sql.push("(");
            if indexed {
                sql.push(low).push(" <= ").bind(Value::Int(x)).push(" AND ");
            }
            sql.push(high).push(" <= ").bind(Value::Int(x)).push(")");
        }
    }
}

/// Appends one condition over `range` as `term OR term …`.
pub(crate) fn push_condition(sql: &mut Sql, condition: &DateCondition, range: Range) {
    for (position, term) in terms(condition, range.indexed).iter().enumerate() {
        if position > 0 {
            sql.push(" OR ");
        }
        push_term(sql, term, range);
    }
}

/// Appends `head AND term UNION head AND term …` over every term of every condition, where
/// `head` writes a `SELECT … WHERE …` ending in a condition the term can be ANDed to.
pub(crate) fn push_id_sets(
    sql: &mut Sql,
    conditions: &[DateCondition],
    range: Range,
    mut head: impl FnMut(&mut Sql),
) {
    let mut first = true;
    for condition in conditions {
        for term in terms(condition, range.indexed) {
            if !first {
                sql.push(" UNION ");
            }
            first = false;
            head(sql);
            sql.push(" AND ");
            push_term(sql, &term, range);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use carevault_domain::ids::TenantId;
    use carevault_domain::store::{CandidateFilter, CandidateQuery, SortBy};

    use super::*;
    use crate::sql::tests::{migrated_database, plan};

    /// SQLite's plan for a search driven by a date filter uses an index range for every term
    /// (a bound on `low`, or `high` among the long ranges): none walks all of the parameter's
    /// rows, as `ge` and `le` did with an index on each end. (`ne` cannot be bounded.) So does
    /// a filter over a parameter and those it includes (`param IN (…)`).
    #[tokio::test]
    async fn sqlite_bounds_every_date_term_by_an_index_range() {
        let (_dir, connection) = migrated_database().await;
        let one = vec!["date".to_owned()];
        let several: Vec<String> = ["date", "onset-date", "recorded-date"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        for (params, prefix) in [
            DatePrefix::Eq,
            DatePrefix::Lt,
            DatePrefix::Le,
            DatePrefix::Gt,
            DatePrefix::Ge,
            DatePrefix::Sa,
            DatePrefix::Eb,
        ]
        .into_iter()
        .flat_map(|prefix| [(one.clone(), prefix), (several.clone(), prefix)])
        {
            let query = CandidateQuery {
                resource_type: "Encounter".to_owned(),
                filters: vec![
                    CandidateFilter::AnyToken(vec![[7; 16]]),
                    CandidateFilter::AnyDate {
                        params: params.clone(),
                        conditions: vec![DateCondition {
                            prefix,
                            low: 1_000,
                            high: 2_000,
                        }],
                    },
                ],
                sort: SortBy::LastUpdated,
                descending: false,
                after: None,
                limit: 10,
            };
            let statement = crate::sql::search(
                TenantId::generate(),
                &query,
                Some(1),
                crate::sql::Engine::Sqlite,
            );
            let lines = plan(&connection, &statement);
            let dates: Vec<&String> = lines
                .iter()
                .filter(|line| line.contains("search_dates"))
                .collect();
            assert!(!dates.is_empty(), "{prefix:?} {params:?}: {lines:#?}");
            if params.len() > 1 {
                let statement_text = statement.sqlite_text();
                assert!(statement_text.contains("d.param IN ("), "{statement_text}");
            }
            for line in &dates {
                let ranged = ["low>", "low<", "high>"]
                    .iter()
                    .any(|range| line.contains(&format!("param=? AND {range}")));
                assert!(
                    ranged,
                    "{prefix:?} {params:?} walks every row of the parameter: {lines:#?}"
                );
            }
            let long = dates.iter().any(|line| line.contains("search_dates_long"));
            assert_eq!(
                long,
                matches!(prefix, DatePrefix::Gt | DatePrefix::Ge),
                "{prefix:?}: only `high >` terms look among the long ranges: {lines:#?}"
            );
        }
    }

    /// Migration 0008 on a database of version 7: a reversed range is stored in order, the
    /// others are kept, and the index on every `high` gives way to the partial one.
    #[tokio::test]
    async fn migration_8_orders_reversed_ranges_and_replaces_the_index_on_high() {
        use sqlx::Row;

        let (_dir, _path, mut connection) = crate::sqlite::test_support::database_through(7).await;
        let tenant = TenantId::generate();
        for (id, low, high) in [
            ("reversed", 5_000, 1_000),
            ("ordered", 1_000, 5_000),
            ("open", 1_000, i64::MAX),
        ] {
            sqlx::query(crate::sql::INSERT_DATE)
                .bind(tenant.as_uuid())
                .bind("Encounter")
                .bind(id)
                .bind("date")
                .bind(low)
                .bind(high)
                .execute(&mut connection)
                .await
                .unwrap();
        }
        crate::migrations::sqlite_through(8)
            .run(&mut connection)
            .await
            .unwrap();
        let rows: Vec<(String, i64, i64)> =
            sqlx::query("SELECT id, low, high FROM search_dates ORDER BY id")
                .fetch_all(&mut connection)
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect();
        assert_eq!(
            rows,
            vec![
                ("open".to_owned(), 1_000, i64::MAX),
                ("ordered".to_owned(), 1_000, 5_000),
                ("reversed".to_owned(), 1_000, 5_000),
            ]
        );
        let indexes: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'search_dates' \
             AND sql IS NOT NULL ORDER BY name",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
        assert_eq!(indexes, vec!["search_dates_by_low", "search_dates_long"]);
    }

    #[test]
    fn the_long_span_literal_matches_the_constant_and_the_partial_index() {
        assert_eq!(LONG_SPAN_LITERAL.parse::<i64>().unwrap(), LONG_SPAN_MS);
        // Made by version 8, and again by version 12, which rebuilds the table.
        for migration in [
            include_str!("../migrations/sqlite/0008_dates.sql"),
            include_str!("../migrations/sqlite/0012_search_rows_by_resource_key.sql"),
        ] {
            assert!(
                migration.contains(&format!("WHERE high > low + {LONG_SPAN_LITERAL};")),
                "the partial index must hold exactly the ranges the queries ask it for"
            );
        }
    }
}
