//! The [`Store`](carevault_domain::store::Store) implementation, written once and instantiated
//! for each engine by [`implement_store!`]. The SQL is shared (see `sql.rs`); what differs per
//! engine lives in the engine's own module as inherent methods:
//!
//! - `read_pool(&self) -> &Pool<DB>`: single-statement reads of platform records;
//! - `write_pool(&self) -> &Pool<DB>`: single-statement writes of platform records;
//! - `begin_read(&self, Option<TenantId>)` / `begin_write(&self, Option<TenantId>)`: a
//!   transaction, already bound to the tenant when one is given (PostgreSQL sets the
//!   row-level-security tenant; SQLite takes the write lock up front);
//! - `read_one` / `read_all(&self, TenantId, Query)`: one statement on a tenant's data as its
//!   own read transaction (SQLite runs it alone, saving the `BEGIN`/`COMMIT` round trips to
//!   the connection's thread; PostgreSQL binds the tenant first);
//! - `direct_reads(&self) -> Option<&DirectReads>`: where the hottest reads (bearer token, read
//!   by id, search) run on the caller's thread instead of the pool's (SQLite,
//!   `sqlite/direct.rs`), or `None`;
//! - `append_audit_fast(&self, &[AuditRecord])`: the engine's own shared audit append, or
//!   `None` to use the transaction below (SQLite appends on the caller's thread through a
//!   connection of its own, `sqlite/writer.rs`);
//! - `commit_fast(&self, TenantId, &[ResourceWrite], &[AuditRecord])`: the engine's own commit
//!   of resource writes, or `None` to use the transaction below (SQLite groups concurrent
//!   commits into one transaction, `sqlite/writer.rs`);
//! - `enter_tenant(&mut Connection, TenantId)`: rebinds an open transaction to another tenant
//!   (used by `append_audit`, whose batch may span tenants).
//!
//! Every statement on tenant data also names the tenant in its `WHERE` clause, so isolation
//! does not rest on row-level security alone.

use carevault_domain::audit::AuditRecord;
use carevault_domain::ids::{ClientId, TenantId};
use carevault_domain::store::{
    AccessTokenRecord, ClientStatus, StoreError, StoreResult, TenantStatus, TokenLookup,
};
use uuid::Uuid;

pub(crate) fn backend(error: sqlx::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.is_unique_violation())
}

/// Maps a unique violation to `Duplicate(what)`, anything else to `Backend`.
pub(crate) fn duplicate_or_backend(
    error: sqlx::Error,
    what: impl FnOnce() -> String,
) -> StoreError {
    if is_unique_violation(&error) {
        StoreError::Duplicate(what())
    } else {
        backend(error)
    }
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored {what} is not valid"))
}

/// Audit records grouped by tenant, tenants in order of first appearance, records in the
/// order given (which becomes their sequence order).
pub(crate) fn group_by_tenant(records: &[AuditRecord]) -> Vec<(TenantId, Vec<&AuditRecord>)> {
    let mut groups: Vec<(TenantId, Vec<&AuditRecord>)> = Vec::new();
    for record in records {
        match groups
            .iter_mut()
            .find(|(tenant, _)| *tenant == record.tenant)
        {
            Some((_, group)) => group.push(record),
            None => groups.push((record.tenant, vec![record])),
        }
    }
    groups
}

/// The columns of `sql::FIND_ACCESS_TOKEN`, as read by either engine's driver.
pub(crate) struct TokenColumns {
    pub token_hash: Vec<u8>,
    pub tenant: Uuid,
    pub client: String,
    pub scopes: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
    pub tenant_status: String,
    pub client_status: String,
    pub client_name: String,
}

pub(crate) fn token_lookup(columns: TokenColumns) -> StoreResult<TokenLookup> {
    Ok(TokenLookup {
        token: AccessTokenRecord {
            token_hash: columns
                .token_hash
                .try_into()
                .map_err(|_| corrupt("token hash"))?,
            tenant: TenantId::from_uuid(columns.tenant),
            client: ClientId::parse(&columns.client).ok_or_else(|| corrupt("client id"))?,
            scopes: columns.scopes,
            issued_ms: columns.issued_ms,
            expires_ms: columns.expires_ms,
        },
        tenant_status: TenantStatus::parse(&columns.tenant_status)
            .ok_or_else(|| corrupt("tenant status"))?,
        client_status: ClientStatus::parse(&columns.client_status)
            .ok_or_else(|| corrupt("client status"))?,
        client_name: columns.client_name,
    })
}

pub(crate) fn parse_audit(text: &str) -> Result<AuditRecord, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt("audit record"))
}

macro_rules! implement_store {
    ($store:ty, $db:ty, $connection:ty, $row:ty, $engine:literal) => {
        mod shared_implementation {
            use async_trait::async_trait;
            use carevault_domain::audit::AuditRecord;
            use carevault_domain::ids::{ClientId, TenantId};
            use carevault_domain::principal::TenantScope;
            use carevault_domain::store::{
                AccessTokenRecord, Candidate, CandidateQuery, ClientRecord, ClientStatus,
                HistoryQuery, KeyPurpose, Precondition, ResourceWrite, Store, StoreError,
                StoreResult, StoredVersion, TenantRecord, TenantStatus, TokenLookup, WrappedKey,
            };
            use sqlx::Row;

            use super::*;
            use crate::engine::{
                TokenColumns, backend, corrupt, duplicate_or_backend, group_by_tenant, token_lookup,
            };
            use crate::sql::{self, Sql, Value};

            type Query = sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments>;

            /// A statement built from static fragments by [`Sql`], with its values bound.
            pub(crate) fn dynamic(statement: &Sql) -> Query {
                with_values(statement.text().to_owned(), statement)
            }

            /// One multi-row statement of a commit's writes, its placeholders numbered for the
            /// engine (see [`Sql::sqlite_text`]) and not kept in the connection's statement
            /// cache: its text changes with the number of rows.
            fn batch(statement: &Sql) -> Query {
                let text = if $engine == "sqlite" {
                    statement.sqlite_text()
                } else {
                    statement.text().to_owned()
                };
                with_values(text, statement).persistent(false)
            }

            fn with_values(text: String, statement: &Sql) -> Query {
                // Sound: `Sql` text is made only of `&'static str` fragments and placeholders.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(text));
                for value in statement.values() {
                    query = match value {
                        Value::Uuid(uuid) => query.bind(*uuid),
                        Value::Text(text) => query.bind(text.clone()),
                        Value::Int(number) => query.bind(*number),
                        Value::Bool(flag) => query.bind(*flag),
                        Value::Bytes(bytes) => query.bind(bytes.clone()),
                    };
                }
                query
            }

            fn get<T>(row: &$row, index: usize) -> StoreResult<T>
            where
                T: for<'r> sqlx::Decode<'r, $db> + sqlx::Type<$db>,
            {
                row.try_get(index).map_err(backend)
            }

            fn tenant_from(row: &$row) -> StoreResult<TenantRecord> {
                let status: String = get(row, 2)?;
                Ok(TenantRecord {
                    id: TenantId::from_uuid(get(row, 0)?),
                    name: get(row, 1)?,
                    status: TenantStatus::parse(&status).ok_or_else(|| corrupt("tenant status"))?,
                    created_ms: get(row, 3)?,
                })
            }

            fn key_from(row: &$row) -> StoreResult<WrappedKey> {
                let purpose: String = get(row, 1)?;
                let version: i64 = get(row, 2)?;
                Ok(WrappedKey {
                    tenant: TenantId::from_uuid(get(row, 0)?),
                    purpose: KeyPurpose::parse(&purpose).ok_or_else(|| corrupt("key purpose"))?,
                    version: u32::try_from(version).map_err(|_| corrupt("key version"))?,
                    wrapped: get(row, 3)?,
                    kek_id: get(row, 4)?,
                    created_ms: get(row, 5)?,
                })
            }

            fn client_from(row: &$row) -> StoreResult<ClientRecord> {
                let id: String = get(row, 0)?;
                let status: String = get(row, 5)?;
                Ok(ClientRecord {
                    id: ClientId::parse(&id).ok_or_else(|| corrupt("client id"))?,
                    tenant: TenantId::from_uuid(get(row, 1)?),
                    name: get(row, 2)?,
                    jwks: get(row, 3)?,
                    scopes: get(row, 4)?,
                    status: ClientStatus::parse(&status).ok_or_else(|| corrupt("client status"))?,
                    created_ms: get(row, 6)?,
                })
            }

            /// Reads `VERSION_COLUMNS` starting at column `first`.
            fn version_from(row: &$row, first: usize) -> StoreResult<StoredVersion> {
                Ok(StoredVersion {
                    resource_type: get(row, first)?,
                    id: get(row, first + 1)?,
                    version: get(row, first + 2)?,
                    last_updated_ms: get(row, first + 3)?,
                    deleted: get(row, first + 4)?,
                    body: get(row, first + 5)?,
                })
            }

            /// Appends one tenant's records, hash-chained, inside an open transaction already
            /// bound to that tenant (see `audit.rs`).
            async fn append_group(
                connection: &mut $connection,
                tenant: TenantId,
                records: &[&AuditRecord],
            ) -> StoreResult<()> {
                super::audit_implementation::append_chained(connection, tenant, records).await
            }

            /// Applies `writes`, in order, inside the committing transaction (PostgreSQL's
            /// commits; SQLite's go through `commit_fast`, `sqlite/writer.rs`). A run of creates
            /// is written together, a few multi-row statements for the whole run (one round trip
            /// each to the server, not four or more per resource). Any other write checks its
            /// precondition alone first, so two writes to one resource in one commit see each
            /// other.
            async fn apply_writes(
                connection: &mut $connection,
                tenant: TenantId,
                writes: &[ResourceWrite],
            ) -> StoreResult<()> {
                // A create of version 1 needs no look-up: every resource has a version 1 once
                // it exists (versions are never removed), so the primary key of
                // `resource_versions` refuses a create of an existing id, and a new id has no
                // search rows to replace.
                let creates = |write: &ResourceWrite| {
                    write.precondition == Precondition::Absent && write.version.version == 1
                };
                let mut rest = writes;
                while let Some(first) = rest.first() {
                    let run = if creates(first) {
                        rest.iter().take_while(|write| creates(write)).count()
                    } else {
                        check_precondition(connection, tenant, first).await?;
                        1
                    };
                    let (now, later) = rest.split_at(run);
                    insert_writes(connection, tenant, now).await?;
                    rest = later;
                }
                Ok(())
            }

            fn conflict(version: &StoredVersion) -> StoreError {
                StoreError::Conflict {
                    resource_type: version.resource_type.clone(),
                    id: version.id.clone(),
                }
            }

            /// Checks a write's precondition against the current version and clears the
            /// search rows its new version replaces.
            async fn check_precondition(
                connection: &mut $connection,
                tenant: TenantId,
                write: &ResourceWrite,
            ) -> StoreResult<()> {
                let version = &write.version;
                let current: Option<i64> = match sqlx::query(sql::SELECT_CURRENT_VERSION_NUMBER)
                    .bind(tenant.as_uuid())
                    .bind(version.resource_type.clone())
                    .bind(version.id.clone())
                    .fetch_optional(&mut *connection)
                    .await
                    .map_err(backend)?
                {
                    Some(row) => Some(get(&row, 0)?),
                    None => None,
                };
                let holds = match write.precondition {
                    Precondition::Absent => current.is_none(),
                    Precondition::CurrentVersion(expected) => current == Some(expected),
                };
                if !holds {
                    return Err(conflict(version));
                }
                for statement in [sql::DELETE_TOKENS, sql::DELETE_DATES] {
                    sqlx::query(statement)
                        .bind(tenant.as_uuid())
                        .bind(version.resource_type.clone())
                        .bind(version.id.clone())
                        .execute(&mut *connection)
                        .await
                        .map_err(backend)?;
                }
                Ok(())
            }

            /// Inserts the new versions of `writes`, points the current rows at them and
            /// writes their search rows. A version that exists already (a concurrent writer
            /// that passed the same check inserted it first, or a create of an existing id)
            /// is a conflict naming that resource.
            async fn insert_writes(
                connection: &mut $connection,
                tenant: TenantId,
                writes: &[ResourceWrite],
            ) -> StoreResult<()> {
                let versions: Vec<&StoredVersion> =
                    writes.iter().map(|write| &write.version).collect();
                for chunk in versions.chunks(sql::ROWS_PER_INSERT) {
                    let rows = batch(&sql::insert_versions(tenant, chunk))
                        .fetch_all(&mut *connection)
                        .await
                        .map_err(backend)?;
                    if rows.len() != chunk.len() {
                        let mut inserted = std::collections::HashSet::new();
                        for row in &rows {
                            inserted.insert((get::<String>(row, 0)?, get::<String>(row, 1)?));
                        }
                        // The first of two writes of one key in the chunk took the row.
                        let refused = chunk.iter().find(|version| {
                            !inserted.remove(&(version.resource_type.clone(), version.id.clone()))
                        });
                        return Err(refused.or(chunk.first()).map_or_else(
                            || StoreError::Backend("an empty insert was refused".to_owned()),
                            |version| conflict(version),
                        ));
                    }
                    batch(&sql::upsert_current(tenant, chunk))
                        .execute(&mut *connection)
                        .await
                        .map_err(backend)?;
                }
                for statement in sql::insert_search_rows(tenant, writes) {
                    batch(&statement)
                        .execute(&mut *connection)
                        .await
                        .map_err(backend)?;
                }
                Ok(())
            }

            #[async_trait]
            impl Store for $store {
                fn engine(&self) -> &'static str {
                    $engine
                }

                async fn ping(&self) -> StoreResult<()> {
                    sqlx::query("SELECT 1")
                        .execute(self.read_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn create_tenant(
                    &self,
                    tenant: &TenantRecord,
                    keys: &[WrappedKey],
                ) -> StoreResult<()> {
                    let mut tx = self.begin_write(None).await?;
                    sqlx::query(sql::INSERT_TENANT)
                        .bind(tenant.id.as_uuid())
                        .bind(tenant.name.clone())
                        .bind(tenant.status.as_str())
                        .bind(tenant.created_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(|error| {
                            duplicate_or_backend(error, || format!("tenant {}", tenant.id))
                        })?;
                    for key in keys {
                        if key.tenant != tenant.id {
                            return Err(StoreError::Backend(
                                "a tenant key names another tenant".to_owned(),
                            ));
                        }
                        sqlx::query(sql::INSERT_TENANT_KEY)
                            .bind(key.tenant.as_uuid())
                            .bind(key.purpose.as_str())
                            .bind(i64::from(key.version))
                            .bind(key.wrapped.clone())
                            .bind(key.kek_id.clone())
                            .bind(key.created_ms)
                            .execute(&mut *tx)
                            .await
                            .map_err(|error| {
                                duplicate_or_backend(error, || {
                                    format!("{} key version {}", key.purpose.as_str(), key.version)
                                })
                            })?;
                    }
                    tx.commit().await.map_err(backend)
                }

                async fn list_tenants(&self) -> StoreResult<Vec<TenantRecord>> {
                    let rows = sqlx::query(sql::LIST_TENANTS)
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(tenant_from).collect()
                }

                async fn tenant(&self, id: TenantId) -> StoreResult<Option<TenantRecord>> {
                    let row = sqlx::query(sql::SELECT_TENANT)
                        .bind(id.as_uuid())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?;
                    row.as_ref().map(tenant_from).transpose()
                }

                async fn set_tenant_status(
                    &self,
                    id: TenantId,
                    status: TenantStatus,
                ) -> StoreResult<bool> {
                    // Quarantine revokes every access token of the tenant in the same
                    // transaction, so a release never revives a token issued before it.
                    let mut tx = self.begin_write(None).await?;
                    let done = sqlx::query(sql::UPDATE_TENANT_STATUS)
                        .bind(id.as_uuid())
                        .bind(status.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if status == TenantStatus::Quarantined {
                        sqlx::query(sql::DELETE_TENANT_TOKENS)
                            .bind(id.as_uuid())
                            .execute(&mut *tx)
                            .await
                            .map_err(backend)?;
                    }
                    tx.commit().await.map_err(backend)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn tenant_keys(&self, id: TenantId) -> StoreResult<Vec<WrappedKey>> {
                    let rows = sqlx::query(sql::SELECT_TENANT_KEYS)
                        .bind(id.as_uuid())
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(key_from).collect()
                }

                async fn create_client(&self, client: &ClientRecord) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_CLIENT)
                        .bind(client.id.as_str().to_owned())
                        .bind(client.tenant.as_uuid())
                        .bind(client.name.clone())
                        .bind(client.jwks.clone())
                        .bind(client.scopes.clone())
                        .bind(client.status.as_str())
                        .bind(client.created_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(|error| {
                            duplicate_or_backend(error, || format!("client {}", client.id))
                        })
                }

                async fn client(&self, id: &ClientId) -> StoreResult<Option<ClientRecord>> {
                    let row = sqlx::query(sql::SELECT_CLIENT)
                        .bind(id.as_str().to_owned())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?;
                    row.as_ref().map(client_from).transpose()
                }

                async fn list_clients(
                    &self,
                    tenant: Option<TenantId>,
                ) -> StoreResult<Vec<ClientRecord>> {
                    let query = match tenant {
                        Some(tenant) => {
                            sqlx::query(sql::LIST_CLIENTS_OF_TENANT).bind(tenant.as_uuid())
                        }
                        None => sqlx::query(sql::LIST_CLIENTS),
                    };
                    let rows = query.fetch_all(self.read_pool()).await.map_err(backend)?;
                    rows.iter().map(client_from).collect()
                }

                async fn set_client_status(
                    &self,
                    id: &ClientId,
                    status: ClientStatus,
                ) -> StoreResult<bool> {
                    // Disabling revokes the client's tokens in the same transaction.
                    let mut tx = self.begin_write(None).await?;
                    let done = sqlx::query(sql::UPDATE_CLIENT_STATUS)
                        .bind(id.as_str().to_owned())
                        .bind(status.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if status == ClientStatus::Disabled {
                        sqlx::query(sql::DELETE_CLIENT_TOKENS)
                            .bind(id.as_str().to_owned())
                            .execute(&mut *tx)
                            .await
                            .map_err(backend)?;
                    }
                    tx.commit().await.map_err(backend)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn remember_jti(
                    &self,
                    client: &ClientId,
                    jti: &str,
                    expires_ms: i64,
                    now_ms: i64,
                ) -> StoreResult<bool> {
                    let mut tx = self.begin_write(None).await?;
                    sqlx::query(sql::PRUNE_JTI)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    let inserted = sqlx::query(sql::INSERT_JTI)
                        .bind(client.as_str().to_owned())
                        .bind(jti.to_owned())
                        .bind(expires_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?
                        .rows_affected();
                    tx.commit().await.map_err(backend)?;
                    Ok(inserted == 1)
                }

                async fn store_access_token(&self, token: &AccessTokenRecord) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_ACCESS_TOKEN)
                        .bind(token.token_hash.to_vec())
                        .bind(token.tenant.as_uuid())
                        .bind(token.client.as_str().to_owned())
                        .bind(token.scopes.clone())
                        .bind(token.issued_ms)
                        .bind(token.expires_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(|error| duplicate_or_backend(error, || "access token".to_owned()))
                }

                async fn find_access_token(
                    &self,
                    token_hash: &[u8; 32],
                ) -> StoreResult<Option<TokenLookup>> {
                    if let Some(direct) = self.direct_reads() {
                        return direct.find_access_token(token_hash);
                    }
                    let Some(row) = sqlx::query(sql::FIND_ACCESS_TOKEN)
                        .bind(token_hash.to_vec())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?
                    else {
                        return Ok(None);
                    };
                    token_lookup(TokenColumns {
                        token_hash: get(&row, 0)?,
                        tenant: get(&row, 1)?,
                        client: get(&row, 2)?,
                        scopes: get(&row, 3)?,
                        issued_ms: get(&row, 4)?,
                        expires_ms: get(&row, 5)?,
                        tenant_status: get(&row, 6)?,
                        client_status: get(&row, 7)?,
                        client_name: get(&row, 8)?,
                    })
                    .map(Some)
                }

                async fn current(
                    &self,
                    scope: &TenantScope,
                    resource_type: &str,
                    id: &str,
                ) -> StoreResult<Option<StoredVersion>> {
                    if let Some(direct) = self.direct_reads() {
                        return direct.current(scope.tenant(), resource_type, id);
                    }
                    let query = sqlx::query(sql::SELECT_CURRENT)
                        .bind(scope.tenant().as_uuid())
                        .bind(resource_type.to_owned())
                        .bind(id.to_owned());
                    let row = self.read_one(scope.tenant(), query).await?;
                    row.map(|row| version_from(&row, 0)).transpose()
                }

                async fn version(
                    &self,
                    scope: &TenantScope,
                    resource_type: &str,
                    id: &str,
                    version: i64,
                ) -> StoreResult<Option<StoredVersion>> {
                    let query = sqlx::query(sql::SELECT_VERSION)
                        .bind(scope.tenant().as_uuid())
                        .bind(resource_type.to_owned())
                        .bind(id.to_owned())
                        .bind(version);
                    let row = self.read_one(scope.tenant(), query).await?;
                    row.map(|row| version_from(&row, 0)).transpose()
                }

                async fn current_many(
                    &self,
                    scope: &TenantScope,
                    refs: &[(String, String)],
                ) -> StoreResult<Vec<StoredVersion>> {
                    if refs.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut found = std::collections::HashMap::new();
                    let mut tx = self.begin_read(Some(scope.tenant())).await?;
                    for chunk in refs.chunks(sql::CURRENT_MANY_CHUNK) {
                        let statement = sql::current_many(scope.tenant(), chunk);
                        let rows = dynamic(&statement)
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(backend)?;
                        for row in &rows {
                            let version = version_from(row, 0)?;
                            found.insert(
                                (version.resource_type.clone(), version.id.clone()),
                                version,
                            );
                        }
                    }
                    tx.commit().await.map_err(backend)?;
                    // In the order asked for; a pair asked for twice is returned once.
                    Ok(refs.iter().filter_map(|key| found.remove(key)).collect())
                }

                async fn history(
                    &self,
                    scope: &TenantScope,
                    query: &HistoryQuery,
                ) -> StoreResult<Vec<StoredVersion>> {
                    if query.limit == 0 {
                        return Ok(Vec::new());
                    }
                    let statement = sql::history(scope.tenant(), query);
                    let rows = self.read_all(scope.tenant(), dynamic(&statement)).await?;
                    rows.iter().map(|row| version_from(row, 0)).collect()
                }

                async fn search(
                    &self,
                    scope: &TenantScope,
                    query: &CandidateQuery,
                ) -> StoreResult<Vec<Candidate>> {
                    if query.limit == 0 {
                        return Ok(Vec::new());
                    }
                    // How this engine's search tables name a resource.
                    let engine = if $engine == "sqlite" {
                        sql::Engine::Sqlite
                    } else {
                        sql::Engine::Postgres
                    };
                    let mut driver = None;
                    if let Some((sizes, positions)) =
                        sql::filter_sizes(scope.tenant(), query, engine)
                    {
                        let counted = match self.direct_reads() {
                            Some(direct) => direct.integers(&sizes, positions.len())?,
                            None => match self.read_one(scope.tenant(), dynamic(&sizes)).await? {
                                Some(row) => Some(
                                    (0..positions.len())
                                        .map(|index| get::<i64>(&row, index))
                                        .collect::<StoreResult<Vec<i64>>>()?,
                                ),
                                None => None,
                            },
                        };
                        // The filter with the fewest rows; the first of equals.
                        let mut least = i64::MAX;
                        for (size, position) in counted.iter().flatten().zip(&positions) {
                            if *size < least {
                                least = *size;
                                driver = Some(*position);
                            }
                        }
                    }
                    let statement = sql::search(scope.tenant(), query, driver, engine);
                    if let Some(direct) = self.direct_reads() {
                        return direct.candidates(&statement);
                    }
                    let rows = self.read_all(scope.tenant(), dynamic(&statement)).await?;
                    rows.iter()
                        .map(|row| {
                            Ok(Candidate {
                                sort_value: get(row, 0)?,
                                version: version_from(row, 1)?,
                            })
                        })
                        .collect()
                }

                async fn commit(
                    &self,
                    scope: &TenantScope,
                    writes: &[ResourceWrite],
                    audit: &[AuditRecord],
                ) -> StoreResult<()> {
                    let tenant = scope.tenant();
                    if audit.iter().any(|record| record.tenant != tenant) {
                        return Err(StoreError::Backend(
                            "an audit record of a commit names another tenant".to_owned(),
                        ));
                    }
                    if let Some(committed) = self.commit_fast(tenant, writes, audit).await {
                        return committed;
                    }
                    let mut tx = self.begin_write(Some(tenant)).await?;
                    // On error the transaction is dropped, which rolls it back.
                    apply_writes(&mut *tx, tenant, writes).await?;
                    let records: Vec<&AuditRecord> = audit.iter().collect();
                    append_group(&mut *tx, tenant, &records).await?;
                    tx.commit().await.map_err(backend)
                }

                async fn append_audit(&self, records: &[AuditRecord]) -> StoreResult<()> {
                    if let Some(appended) = self.append_audit_fast(records).await {
                        return appended;
                    }
                    let groups = group_by_tenant(records);
                    let Some((first, _)) = groups.first() else {
                        return Ok(());
                    };
                    let mut tx = self.begin_write(Some(*first)).await?;
                    for (position, (tenant, group)) in groups.iter().enumerate() {
                        if position > 0 {
                            <$store>::enter_tenant(&mut *tx, *tenant).await?;
                        }
                        append_group(&mut *tx, *tenant, group).await?;
                    }
                    tx.commit().await.map_err(backend)
                }

                async fn audit_records(&self, tenant: TenantId) -> StoreResult<Vec<AuditRecord>> {
                    self.settle_audit().await?;
                    super::audit_implementation::all_records(self, tenant).await
                }
            }
        }
    };
}

pub(crate) use implement_store;
