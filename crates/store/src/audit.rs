//! The audit chain in the store: appending with hashes, inside the caller's transaction, and
//! the reads the checkpointer, `audit verify` and `audit export` use ([`AuditStore`]).
//!
//! An append reserves its sequence numbers by moving the tenant's head row forward (the row
//! lock orders concurrent appenders on PostgreSQL; SQLite's single writer orders them there),
//! chains the records onto the head's hash with [`carevault_domain::audit::chain::extend`] (the
//! same function the verifier uses), inserts them in multi-row statements and moves the head's
//! hash forward: all in the transaction that carries the write, so a record and its link commit
//! together or not at all.
//!
//! The same transaction writes the search indexes: each record's principal, session and source
//! address as columns of its row, and one `audit_subjects` row per patient it touched, so the
//! security officer's search ([`AuditStore::audit_search`]) reads an index rather than the trail.
//!
//! Records stored before hashing began (their `hash` columns are NULL) are adopted by the first
//! append after the upgrade: it hashes them in order from the genesis hash, so the chain covers
//! them too (their rows cannot be updated, and need not be: the verifier recomputes them).
//!
//! [`AuditStore`]: carevault_domain::audit::storage::AuditStore

use carevault_domain::audit::AuditRecord;
use carevault_domain::audit::chain::{self, ChainHash, ChainedRecord, GENESIS};
use carevault_domain::audit::storage::AuditFilter;
use carevault_domain::store::StoreError;

/// Moves the head forward by `$2` records, creating it (at `$2`) for a tenant's first record;
/// returns the new last sequence number and the hash *before* this append (NULL for a new head,
/// or for a head whose records predate hashing).
pub(crate) const ADVANCE_HEAD: &str = "INSERT INTO audit_heads (tenant_id, seq) VALUES ($1, $2) \
     ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_heads.seq + excluded.seq \
     RETURNING seq, hash";
pub(crate) const SET_HEAD_HASH: &str = "UPDATE audit_heads SET hash = $2 WHERE tenant_id = $1";
pub(crate) const SELECT_UNHASHED_TEXTS: &str =
    "SELECT record FROM audit_log WHERE tenant_id = $1 AND seq <= $2 ORDER BY seq";
pub(crate) const SELECT_HEAD: &str = "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1";
pub(crate) const SELECT_TENANT_IDS: &str = "SELECT id FROM tenants ORDER BY id";
pub(crate) const SELECT_HASH_AT: &str =
    "SELECT hash FROM audit_log WHERE tenant_id = $1 AND seq = $2";
pub(crate) const SELECT_LINKS: &str = "SELECT seq, time_ms, record, prev_hash, hash \
     FROM audit_log WHERE tenant_id = $1 AND seq > $2 AND time_ms >= $3 AND time_ms < $4 \
     ORDER BY seq LIMIT $5";

/// Rows per INSERT statement: at most 11 values each, well under both engines' limits on bound
/// values (SQLite 32,766; PostgreSQL 65,535).
pub(crate) const ROWS_PER_INSERT: usize = 256;

/// How an engine numbers placeholders in the multi-row INSERT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Placeholders {
    /// `$1` is the tenant, shared by every row (PostgreSQL).
    Numbered,
    /// Anonymous `?`, eleven per row, tenant included. SQLite resolves a numbered placeholder's
    /// position by a linear scan per parameter, which makes binding a long statement quadratic;
    /// anonymous ones bind in order at no cost.
    Anonymous,
}

/// Values per row of [`insert_statement`] after the tenant.
const ROW_VALUES: usize = 10;

/// `INSERT INTO audit_log … VALUES (…), (…)` for `rows` rows; per row the tenant, then the
/// ten values of an [`AuditRow`] in field order.
pub(crate) fn insert_statement(rows: usize, style: Placeholders) -> String {
    let mut text = String::with_capacity(160 + rows * 56);
    text.push_str(
        "INSERT INTO audit_log (tenant_id, seq, time_ms, action, outcome, record, prev_hash, hash, \
         principal, session, source) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        match style {
            Placeholders::Numbered => {
                let base = 2 + row * ROW_VALUES;
                text.push_str("($1");
                for offset in 0..ROW_VALUES {
                    text.push_str(", $");
                    text.push_str(&(base + offset).to_string());
                }
                text.push(')');
            }
            Placeholders::Anonymous => text.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        }
    }
    text
}

/// Rows per `audit_subjects` INSERT (three values each).
pub(crate) const SUBJECTS_PER_INSERT: usize = 1_000;

/// `INSERT INTO audit_subjects … VALUES (…), (…)` for `rows` (tenant, patient, seq) rows, every
/// value its own placeholder (numbered on PostgreSQL, anonymous on SQLite).
pub(crate) fn subjects_statement(rows: usize, style: Placeholders) -> String {
    let mut text = String::with_capacity(80 + rows * 24);
    text.push_str("INSERT INTO audit_subjects (tenant_id, patient, seq) VALUES ");
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        match style {
            Placeholders::Numbered => {
                let base = 1 + row * 3;
                text.push_str(&format!("(${base}, ${}, ${})", base + 1, base + 2));
            }
            Placeholders::Anonymous => text.push_str("(?, ?, ?)"),
        }
    }
    text
}

/// A value bound to a search statement, in placeholder order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum SearchValue {
    Tenant,
    Text(String),
    Number(i64),
}

/// The search statement for `filter` and its values in placeholder order (`$1`, `$2`, …; both
/// engines accept numbered placeholders). It selects the stored record text, newest first.
/// With a patient the walk starts from `audit_subjects` (its primary key is the patient's
/// records in sequence order); otherwise from `audit_log`, whose principal, session and source
/// indexes also end in `seq`.
pub(crate) fn search_statement(filter: &AuditFilter) -> (String, Vec<SearchValue>) {
    let mut values = vec![SearchValue::Tenant];
    let mut text = String::from("SELECT l.record FROM ");
    fn next(value: SearchValue, values: &mut Vec<SearchValue>) -> String {
        values.push(value);
        format!("${}", values.len())
    }
    let key = if let Some(patient) = &filter.patient {
        let placeholder = next(SearchValue::Text(patient.clone()), &mut values);
        text.push_str(&format!(
            "audit_subjects s JOIN audit_log l ON l.tenant_id = s.tenant_id AND l.seq = s.seq \
             WHERE s.tenant_id = $1 AND s.patient = {placeholder}"
        ));
        "s.seq"
    } else {
        text.push_str("audit_log l WHERE l.tenant_id = $1");
        "l.seq"
    };
    let columns = [
        ("l.principal", filter.principal.as_ref()),
        ("l.session", filter.session.as_ref()),
        ("l.source", filter.source.as_ref()),
        ("l.action", filter.action.as_ref()),
    ];
    for (column, value) in columns {
        if let Some(value) = value {
            let placeholder = next(SearchValue::Text(value.clone()), &mut values);
            text.push_str(&format!(" AND {column} = {placeholder}"));
        }
    }
    if let Some(outcome) = filter.outcome {
        let placeholder = next(SearchValue::Text(outcome.as_str().to_owned()), &mut values);
        text.push_str(&format!(" AND l.outcome = {placeholder}"));
    }
    if let Some(since) = filter.since_ms {
        let placeholder = next(SearchValue::Number(since), &mut values);
        text.push_str(&format!(" AND l.time_ms >= {placeholder}"));
    }
    if let Some(until) = filter.until_ms {
        let placeholder = next(SearchValue::Number(until), &mut values);
        text.push_str(&format!(" AND l.time_ms < {placeholder}"));
    }
    if let Some(before) = filter.before_seq {
        let placeholder = next(SearchValue::Number(before), &mut values);
        text.push_str(&format!(" AND {key} < {placeholder}"));
    }
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    let placeholder = next(SearchValue::Number(limit), &mut values);
    text.push_str(&format!(" ORDER BY {key} DESC LIMIT {placeholder}"));
    (text, values)
}

/// One row to insert, values in the statement's order.
pub(crate) struct AuditRow {
    pub seq: i64,
    pub time_ms: i64,
    pub action: String,
    pub outcome: &'static str,
    pub text: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub principal: String,
    pub session: Option<String>,
    pub source: Option<String>,
    /// The record's patients, for `audit_subjects`.
    pub subjects: Vec<String>,
}

/// The hash to chain from: the head's, or for records predating hashing, their recomputation.
pub(crate) fn starting_hash(
    previous_seq: i64,
    stored: Option<Vec<u8>>,
    unhashed_texts: impl FnOnce() -> Option<Vec<String>>,
) -> Result<Option<ChainHash>, StoreError> {
    if previous_seq == 0 {
        return Ok(Some(GENESIS));
    }
    match stored {
        Some(bytes) => chain::hash_from_bytes(&bytes)
            .map(Some)
            .ok_or_else(|| StoreError::Backend("stored audit head hash is not valid".to_owned())),
        None => Ok(unhashed_texts().map(|texts| {
            texts
                .iter()
                .fold(GENESIS, |hash, text| chain::link(&hash, text.as_bytes()))
        })),
    }
}

/// Chains the records after `(previous_seq, previous_hash)` into rows to insert.
pub(crate) fn chain_rows(
    previous_seq: i64,
    previous_hash: ChainHash,
    records: &[&AuditRecord],
) -> Result<(Vec<AuditRow>, ChainHash), StoreError> {
    let chained = chain::extend(previous_seq, previous_hash, records.iter().copied())
        .map_err(|error| StoreError::Backend(format!("audit record not serialisable: {error}")))?;
    let head = chained.last().map_or(previous_hash, |last| last.hash);
    let rows = chained
        .into_iter()
        .zip(records)
        .map(|(chained, record)| {
            let ChainedRecord {
                seq,
                text,
                prev_hash,
                hash,
            } = chained;
            AuditRow {
                seq,
                time_ms: record.time_ms,
                action: record.action.clone(),
                outcome: record.outcome.as_str(),
                text,
                prev_hash: prev_hash.to_vec(),
                hash: hash.to_vec(),
                principal: record.principal.clone(),
                session: record.session.clone(),
                source: record.source.clone(),
                subjects: distinct(&record.subjects),
            }
        })
        .collect();
    Ok((rows, head))
}

/// The record's patients once each (the index's key holds each pair once).
fn distinct(subjects: &[String]) -> Vec<String> {
    let mut subjects = subjects.to_vec();
    subjects.sort();
    subjects.dedup();
    subjects
}

/// Implements the chained append (`append_chained`, called by the shared `Store` code) and
/// [`AuditStore`](carevault_domain::audit::storage::AuditStore) for one engine, with the same
/// four engine methods `implement_store!` relies on.
macro_rules! implement_audit_store {
    ($store:ty, $db:ty, $connection:ty, $row:ty, $placeholders:expr) => {
        pub(crate) mod audit_implementation {
            use async_trait::async_trait;
            use carevault_domain::audit::AuditRecord;
            use carevault_domain::audit::chain::{ChainHash, GENESIS, hash_from_bytes};
            use carevault_domain::audit::storage::{
                AuditFilter, AuditStore, ChainHead, LinkQuery, StoredEntry, StoredLink,
            };
            use carevault_domain::audit::retention::RetentionMarker;
            use carevault_domain::ids::TenantId;
            use carevault_domain::principal::TenantScope;
            use carevault_domain::store::{StoreError, StoreResult};
            use sqlx::Row;

            use super::*;
            use crate::audit::{
                ADVANCE_HEAD, Placeholders, ROWS_PER_INSERT, SELECT_HASH_AT, SELECT_HEAD,
                SELECT_LINKS, SELECT_TENANT_IDS, SELECT_UNHASHED_TEXTS, SET_HEAD_HASH,
                SUBJECTS_PER_INSERT, SearchValue, chain_rows, insert_statement, search_statement,
                starting_hash, subjects_statement,
            };
            use crate::engine::backend;

            fn get<T>(row: &$row, index: usize) -> StoreResult<T>
            where
                T: for<'r> sqlx::Decode<'r, $db> + sqlx::Type<$db>,
            {
                row.try_get(index).map_err(backend)
            }

            /// Appends one tenant's records, chained, inside an open transaction already bound
            /// to that tenant.
            pub(crate) async fn append_chained(
                connection: &mut $connection,
                tenant: TenantId,
                records: &[&AuditRecord],
            ) -> StoreResult<()> {
                let count = i64::try_from(records.len())
                    .map_err(|_| StoreError::Backend("audit batch too large".to_owned()))?;
                if count == 0 {
                    return Ok(());
                }
                let row = sqlx::query(ADVANCE_HEAD)
                    .bind(tenant.as_uuid())
                    .bind(count)
                    .fetch_one(&mut *connection)
                    .await
                    .map_err(backend)?;
                let last: i64 = get(&row, 0)?;
                let stored: Option<Vec<u8>> = get(&row, 1)?;
                let previous_seq = last - count;
                let unhashed = if previous_seq > 0 && stored.is_none() {
                    let rows = sqlx::query(SELECT_UNHASHED_TEXTS)
                        .bind(tenant.as_uuid())
                        .bind(previous_seq)
                        .fetch_all(&mut *connection)
                        .await
                        .map_err(backend)?;
                    Some(
                        rows.iter()
                            .map(|row| get::<String>(row, 0))
                            .collect::<StoreResult<Vec<String>>>()?,
                    )
                } else {
                    None
                };
                let previous_hash = starting_hash(previous_seq, stored, || unhashed)?
                    .ok_or_else(|| StoreError::Backend("audit head not adoptable".to_owned()))?;
                let (rows, head) = chain_rows(previous_seq, previous_hash, records)?;
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    // Sound: the text is built only from fixed fragments and placeholders.
                    let style: Placeholders = $placeholders;
                    let statement = insert_statement(chunk.len(), style);
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                    if style == Placeholders::Numbered {
                        query = query.bind(tenant.as_uuid());
                    }
                    for row in chunk {
                        if style == Placeholders::Anonymous {
                            query = query.bind(tenant.as_uuid());
                        }
                        query = query
                            .bind(row.seq)
                            .bind(row.time_ms)
                            .bind(row.action.clone())
                            .bind(row.outcome)
                            .bind(row.text.clone())
                            .bind(row.prev_hash.clone())
                            .bind(row.hash.clone())
                            .bind(row.principal.clone())
                            .bind(row.session.clone())
                            .bind(row.source.clone());
                    }
                    query.execute(&mut *connection).await.map_err(backend)?;
                }
                let subjects: Vec<(&str, i64)> = rows
                    .iter()
                    .flat_map(|row| {
                        row.subjects
                            .iter()
                            .map(|patient| (patient.as_str(), row.seq))
                    })
                    .collect();
                for chunk in subjects.chunks(SUBJECTS_PER_INSERT) {
                    // Sound: the text is built only from fixed fragments and placeholders.
                    let statement = subjects_statement(chunk.len(), $placeholders);
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                    for (patient, seq) in chunk {
                        query = query
                            .bind(tenant.as_uuid())
                            .bind((*patient).to_owned())
                            .bind(*seq);
                    }
                    query.execute(&mut *connection).await.map_err(backend)?;
                }
                sqlx::query(SET_HEAD_HASH)
                    .bind(tenant.as_uuid())
                    .bind(head.to_vec())
                    .execute(&mut *connection)
                    .await
                    .map_err(backend)?;
                Ok(())
            }

            async fn head_on(
                connection: &mut $connection,
                tenant: TenantId,
            ) -> StoreResult<Option<ChainHead>> {
                let Some(row) = sqlx::query(SELECT_HEAD)
                    .bind(tenant.as_uuid())
                    .fetch_optional(&mut *connection)
                    .await
                    .map_err(backend)?
                else {
                    return Ok(None);
                };
                let seq: i64 = get(&row, 0)?;
                let hash: Option<Vec<u8>> = get(&row, 1)?;
                let hash = match hash {
                    Some(bytes) => Some(hash_from_bytes(&bytes).ok_or_else(|| {
                        StoreError::Backend("stored audit head hash is not valid".to_owned())
                    })?),
                    None if seq == 0 => Some(GENESIS),
                    None => None,
                };
                Ok(Some(ChainHead { seq, hash }))
            }

            #[async_trait]
            impl AuditStore for $store {
                async fn audit_heads(&self) -> StoreResult<Vec<(TenantId, ChainHead)>> {
                    let mut tx = self.begin_read(None).await?;
                    let mut tenants = vec![TenantId::platform()];
                    for row in sqlx::query(SELECT_TENANT_IDS)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(backend)?
                    {
                        tenants.push(TenantId::from_uuid(get(&row, 0)?));
                    }
                    let mut heads = Vec::new();
                    for tenant in tenants {
                        <$store>::enter_tenant(&mut *tx, tenant).await?;
                        if let Some(head) = head_on(&mut *tx, tenant).await? {
                            heads.push((tenant, head));
                        }
                    }
                    tx.commit().await.map_err(backend)?;
                    Ok(heads)
                }

                async fn audit_head(&self, tenant: TenantId) -> StoreResult<Option<ChainHead>> {
                    let mut tx = self.begin_read(Some(tenant)).await?;
                    let head = head_on(&mut *tx, tenant).await?;
                    tx.commit().await.map_err(backend)?;
                    Ok(head)
                }

                async fn audit_hash_at(
                    &self,
                    tenant: TenantId,
                    seq: i64,
                ) -> StoreResult<Option<ChainHash>> {
                    let mut tx = self.begin_read(Some(tenant)).await?;
                    let row = sqlx::query(SELECT_HASH_AT)
                        .bind(tenant.as_uuid())
                        .bind(seq)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?;
                    tx.commit().await.map_err(backend)?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let hash: Option<Vec<u8>> = get(&row, 0)?;
                    Ok(hash.as_deref().and_then(hash_from_bytes))
                }

                async fn audit_links(
                    &self,
                    tenant: TenantId,
                    query: &LinkQuery,
                ) -> StoreResult<Vec<StoredEntry>> {
                    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
                    let mut tx = self.begin_read(Some(tenant)).await?;
                    let rows = sqlx::query(SELECT_LINKS)
                        .bind(tenant.as_uuid())
                        .bind(query.after_seq)
                        .bind(query.since_ms.unwrap_or(i64::MIN))
                        .bind(query.until_ms.unwrap_or(i64::MAX))
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(backend)?;
                    tx.commit().await.map_err(backend)?;
                    rows.iter()
                        .map(|row| {
                            Ok(StoredEntry::Link(StoredLink {
                                seq: get(row, 0)?,
                                time_ms: get(row, 1)?,
                                text: get(row, 2)?,
                                prev_hash: get(row, 3)?,
                                hash: get(row, 4)?,
                            }))
                        })
                        .collect()
                }

                async fn audit_retention_markers(
                    &self,
                    _tenant: TenantId,
                ) -> StoreResult<Vec<RetentionMarker>> {
                    Ok(Vec::new())
                }

                async fn audit_retention_boundary(
                    &self,
                    _tenant: TenantId,
                    _before_ms: i64,
                ) -> StoreResult<Option<i64>> {
                    Err(StoreError::Backend("retention: work in progress".to_owned()))
                }

                async fn audit_retain(
                    &self,
                    _tenant: TenantId,
                    _marker: &RetentionMarker,
                ) -> StoreResult<u64> {
                    Err(StoreError::Backend("retention: work in progress".to_owned()))
                }

                async fn audit_search(
                    &self,
                    scope: &TenantScope,
                    filter: &AuditFilter,
                ) -> StoreResult<Vec<AuditRecord>> {
                    let tenant = scope.tenant();
                    let (statement, values) = search_statement(filter);
                    // Sound: the text is built only from fixed fragments and placeholders.
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                    for value in values {
                        query = match value {
                            SearchValue::Tenant => query.bind(tenant.as_uuid()),
                            SearchValue::Text(text) => query.bind(text),
                            SearchValue::Number(number) => query.bind(number),
                        };
                    }
                    let mut tx = self.begin_read(Some(tenant)).await?;
                    let rows = query.fetch_all(&mut *tx).await.map_err(backend)?;
                    tx.commit().await.map_err(backend)?;
                    rows.iter()
                        .map(|row| {
                            let text: String = get(row, 0)?;
                            serde_json::from_str::<AuditRecord>(&text).map_err(|error| {
                                StoreError::Backend(format!(
                                    "stored audit record unreadable: {error}"
                                ))
                            })
                        })
                        .collect()
                }
            }
        }
    };
}

pub(crate) use implement_audit_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_statement_numbers_ten_values_per_row_after_the_tenant() {
        assert_eq!(
            insert_statement(2, Placeholders::Numbered),
            "INSERT INTO audit_log (tenant_id, seq, time_ms, action, outcome, record, prev_hash, hash, \
             principal, session, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11), \
             ($1, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
        );
        assert!(insert_statement(2, Placeholders::Anonymous).ends_with(
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ));
        assert_eq!(
            subjects_statement(2, Placeholders::Numbered),
            "INSERT INTO audit_subjects (tenant_id, patient, seq) VALUES ($1, $2, $3), ($4, $5, $6)"
        );
    }

    #[test]
    fn a_search_by_patient_walks_the_subject_index_newest_first() {
        let filter = AuditFilter {
            patient: Some("p1".to_owned()),
            principal: Some("person/a".to_owned()),
            outcome: Some(carevault_domain::audit::Outcome::Success),
            since_ms: Some(5),
            before_seq: Some(90),
            limit: 10,
            ..AuditFilter::default()
        };
        let (text, values) = search_statement(&filter);
        assert_eq!(
            text,
            "SELECT l.record FROM audit_subjects s JOIN audit_log l ON l.tenant_id = s.tenant_id \
             AND l.seq = s.seq WHERE s.tenant_id = $1 AND s.patient = $2 AND l.principal = $3 \
             AND l.outcome = $4 AND l.time_ms >= $5 AND s.seq < $6 ORDER BY s.seq DESC LIMIT $7"
        );
        assert_eq!(values.len(), 7);
        assert_eq!(values[5], SearchValue::Number(90));
        let (text, values) = search_statement(&AuditFilter {
            limit: 3,
            ..AuditFilter::default()
        });
        assert_eq!(
            text,
            "SELECT l.record FROM audit_log l WHERE l.tenant_id = $1 ORDER BY l.seq DESC LIMIT $2"
        );
        assert_eq!(values, vec![SearchValue::Tenant, SearchValue::Number(3)]);
    }
}

#[cfg(test)]
mod migration_tests {
    use sqlx::Row;
    use sqlx::migrate::Migrator;

    /// Records stored before version 4 are indexed by it: their patients, principal, session
    /// and source, taken from their JSON; the guard against updates is back afterwards.
    #[tokio::test]
    async fn version_4_indexes_the_records_before_it() {
        let Ok(pool) = sqlx::SqlitePool::connect("sqlite::memory:").await else {
            panic!("in-memory SQLite");
        };
        let before = Migrator::with_migrations(
            crate::migrations::sqlite()
                .iter()
                .filter(|migration| migration.version <= 3)
                .cloned()
                .collect(),
        );
        assert!(before.run(&pool).await.is_ok());
        let record =
            r#"{"principal":"person/n","session":"s1","source":"10.0.0.1","subjects":["p1","p2"]}"#;
        let inserted = sqlx::query(
            "INSERT INTO audit_log (tenant_id, seq, time_ms, action, outcome, record) \
             VALUES (x'01', 1, 5, 'read', 'success', $1)",
        )
        .bind(record)
        .execute(&pool)
        .await;
        assert!(inserted.is_ok(), "{inserted:?}");
        let migrated = crate::migrations::sqlite().run(&pool).await;
        assert!(migrated.is_ok(), "{migrated:?}");
        let row = sqlx::query("SELECT principal, session, source FROM audit_log WHERE seq = 1")
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let columns: (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            columns,
            (
                "person/n".to_owned(),
                "s1".to_owned(),
                "10.0.0.1".to_owned()
            )
        );
        let patients: Vec<String> =
            sqlx::query("SELECT patient FROM audit_subjects WHERE seq = 1 ORDER BY patient")
                .fetch_all(&pool)
                .await
                .unwrap_or_default()
                .iter()
                .map(|row| row.get(0))
                .collect();
        assert_eq!(patients, vec!["p1".to_owned(), "p2".to_owned()]);
        assert!(
            sqlx::query("UPDATE audit_log SET principal = 'x'")
                .execute(&pool)
                .await
                .is_err(),
            "the update guard is back"
        );
    }
}
