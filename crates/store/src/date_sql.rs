//! FHIR date prefixes as SQL, with exactly the semantics of
//! [`carevault_fhir::DateCondition::matches`]: the resource range `[low, high)` (columns)
//! against the query range `[q.low, q.high)` (bound values). The conformance suite checks the
//! two agree on every prefix.

use carevault_fhir::{DateCondition, DatePrefix};

use crate::sql::{Sql, Value};

/// Appends one condition over the resource range held in the `low` and `high` expressions.
pub(crate) fn push_condition(
    sql: &mut Sql,
    condition: &DateCondition,
    low: &'static str,
    high: &'static str,
) {
    match condition.prefix {
        DatePrefix::Eq => push_contained(sql, condition, low, high),
        DatePrefix::Ne => {
            sql.push("NOT (");
            push_contained(sql, condition, low, high);
            sql.push(")");
        }
        DatePrefix::Gt => push_after_high(sql, condition, high),
        DatePrefix::Lt => push_before_low(sql, condition, low),
        DatePrefix::Ge => {
            push_after_high(sql, condition, high);
            sql.push(" OR ");
            push_contained(sql, condition, low, high);
        }
        DatePrefix::Le => {
            push_before_low(sql, condition, low);
            sql.push(" OR ");
            push_contained(sql, condition, low, high);
        }
        DatePrefix::Sa => {
            sql.push(low).push(" >= ").bind(Value::Int(condition.high));
        }
        DatePrefix::Eb => {
            sql.push(high).push(" <= ").bind(Value::Int(condition.low));
        }
    }
}

/// The resource range lies within the query range.
fn push_contained(sql: &mut Sql, condition: &DateCondition, low: &'static str, high: &'static str) {
    sql.push("(")
        .push(low)
        .push(" >= ")
        .bind(Value::Int(condition.low))
        .push(" AND ")
        .push(high)
        .push(" <= ")
        .bind(Value::Int(condition.high))
        .push(")");
}

fn push_after_high(sql: &mut Sql, condition: &DateCondition, high: &'static str) {
    sql.push(high).push(" > ").bind(Value::Int(condition.high));
}

fn push_before_low(sql: &mut Sql, condition: &DateCondition, low: &'static str) {
    sql.push(low).push(" < ").bind(Value::Int(condition.low));
}
