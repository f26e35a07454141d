//! The PostgreSQL store: the same schema as SQLite, with row-level security as a second wall
//! between tenants.
//!
//! Every tenant-scoped transaction first sets `carevault.tenant` (transaction-local), and the
//! policies on the tenant-data tables admit only that tenant's rows. The policies would be
//! worthless for a superuser or a role with BYPASSRLS, so the pool runs as `carevault_app`
//! (NOSUPERUSER NOBYPASSRLS, no UPDATE or DELETE on the audit tables), and [`PgStore::connect`]
//! refuses to start when the pooled role could bypass the policies.

use std::str::FromStr;
use std::time::Duration;

use carevault_domain::audit::AuditRecord;
use carevault_domain::audit::storage::AuditFilter;
use carevault_domain::ids::TenantId;
use carevault_domain::store::{ResourceWrite, StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, Postgres, Row, Transaction};

use crate::audit::implement_audit_store;
use crate::engine::{backend, implement_store};
use crate::migrations;
use crate::people::implement_people_store;

mod audit_keys;

/// The role the server's connections act as. It owns nothing and cannot bypass row-level
/// security. Production may log in as it directly (migrations then run separately as the
/// owner, through [`migrate`]).
pub const APP_ROLE: &str = "carevault_app";

const POOL_SIZE: u32 = 16;

/// Each pooled connection plans a prepared statement once, for any values bound. The statements
/// are shaped for the plan they need (the search picks its driving filter itself), and under
/// the default (`auto`) PostgreSQL kept planning an NHS-number search afresh on every execution,
/// its generic plan's estimate being higher than the custom ones': 0.49 ms of planning for
/// 0.07 ms of execution, with row-level security's policy and three tables to plan.
pub(crate) const PLAN_ONCE: &str = "SET plan_cache_mode = force_generic_plan";

/// A pooled connection idle for longer than this is pinged before it is handed out (a server
/// restart or a dropped socket then costs no request); one used more recently is handed out as
/// it is, saving a round trip per transaction under load.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Serialises concurrent `migrate` runs on one database (grants race otherwise).
const MIGRATE_LOCK: i64 = 0x6361_7265_7661_756c; // "carevaul"

type TenantQuery<'q> = sqlx::query::Query<'q, Postgres, <Postgres as sqlx::Database>::Arguments>;

pub struct PgStore {
    pool: PgPool,
    /// How to connect as the schema owner (for retention), when the URL's user is the owner.
    owner: Option<PgConnectOptions>,
}

impl PgStore {
    /// Connects. When the URL's user is not [`APP_ROLE`], it is taken to be the schema owner:
    /// migrations run first, and every pooled connection then switches to [`APP_ROLE`].
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(backend)?;
        let mut first = PgConnection::connect_with(&options)
            .await
            .map_err(backend)?;
        let user: String = sqlx::query("SELECT current_user::text")
            .fetch_one(&mut first)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(backend)?;
        let switch_role = user != APP_ROLE;
        if switch_role {
            migrate_on(&mut first).await?;
        }
        first.close().await.map_err(backend)?;

        let owner = switch_role.then(|| options.clone());
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_AFTER_IDLE {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if switch_role {
                        connection.execute("SET ROLE carevault_app").await?;
                    }
                    connection.execute(PLAN_ONCE).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(backend)?;
        refuse_privileged_role(&pool).await?;
        Ok(PgStore { pool, owner })
    }

    /// The pool, for the conformance suite's checks of roles and row-level security.
    #[cfg(feature = "test-support")]
    pub fn pool_for_tests(&self) -> &PgPool {
        &self.pool
    }

    fn read_pool(&self) -> &PgPool {
        &self.pool
    }

    fn write_pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_read(
        &self,
        tenant: Option<TenantId>,
    ) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool
            .begin_with(begin_statement("BEGIN READ ONLY", tenant))
            .await
            .map_err(backend)
    }

    /// One statement on a tenant's data, in a read-only transaction bound to the tenant (the
    /// row-level-security policies read the tenant from the transaction).
    async fn read_one(
        &self,
        tenant: TenantId,
        query: TenantQuery<'_>,
    ) -> StoreResult<Option<PgRow>> {
        let mut tx = self.begin_read(Some(tenant)).await?;
        let row = query.fetch_optional(&mut *tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(row)
    }

    /// Every row of one statement on a tenant's data (see [`PgStore::read_one`]).
    async fn read_all(&self, tenant: TenantId, query: TenantQuery<'_>) -> StoreResult<Vec<PgRow>> {
        let mut tx = self.begin_read(Some(tenant)).await?;
        let rows = query.fetch_all(&mut *tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(rows)
    }

    /// Every PostgreSQL read goes through the pool (a connection is a socket, not a thread of
    /// this process).
    fn direct_reads(&self) -> Option<&crate::sqlite::direct::DirectReads> {
        None
    }

    /// PostgreSQL appends in the shared transaction of `implement_store!`.
    async fn append_audit_fast(&self, _records: &[AuditRecord]) -> Option<StoreResult<()>> {
        None
    }

    /// PostgreSQL commits every audit record to the trail at once: nothing to chain first.
    async fn settle_audit(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Nothing to chain first (see [`PgStore::settle_audit`]).
    async fn settle_audit_for(&self, _tenant: TenantId, _filter: &AuditFilter) -> StoreResult<()> {
        Ok(())
    }

    /// PostgreSQL commits in the shared transaction of `implement_store!`.
    async fn commit_fast(
        &self,
        _tenant: TenantId,
        _writes: &[ResourceWrite],
        _audit: &[AuditRecord],
    ) -> Option<StoreResult<()>> {
        None
    }

    async fn begin_write(
        &self,
        tenant: Option<TenantId>,
    ) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool
            .begin_with(begin_statement("BEGIN", tenant))
            .await
            .map_err(backend)
    }

    /// A write transaction as the schema owner, bound to `tenant`: retention's deletes, which
    /// the server's role has no privilege for. Needs a URL that logs in as the owner.
    async fn begin_owner(&self, tenant: TenantId) -> StoreResult<Transaction<'static, Postgres>> {
        let Some(options) = &self.owner else {
            return Err(StoreError::Backend(format!(
                "removing audit records needs the schema owner, but the database URL logs in \
                 as {APP_ROLE}: run retention with the owner's URL"
            )));
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        pool.begin_with(begin_statement("BEGIN", Some(tenant)))
            .await
            .map_err(backend)
    }

    /// Binds the open transaction to `tenant` for row-level security (until it ends).
    async fn enter_tenant(connection: &mut PgConnection, tenant: TenantId) -> StoreResult<()> {
        sqlx::query("SELECT set_config('carevault.tenant', $1, true)")
            .bind(tenant.to_string())
            .execute(connection)
            .await
            .map(|_| ())
            .map_err(backend)
    }
}

/// `BEGIN`, and the tenant bound for row-level security in the same message (one round trip
/// instead of two). Sound to format: a tenant id prints as a UUID, hex digits and dashes only.
fn begin_statement(begin: &'static str, tenant: Option<TenantId>) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(match tenant {
        Some(tenant) => format!(
            "{begin}; SELECT set_config('carevault.tenant', '{}', true)",
            tenant.as_uuid().hyphenated()
        ),
        None => begin.to_owned(),
    })
}

/// Applies pending migrations as the URL's user (the schema owner), creates [`APP_ROLE`] if
/// absent and grants it what the server needs. Idempotent.
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(backend)?;
    let mut connection = PgConnection::connect_with(&options)
        .await
        .map_err(backend)?;
    migrate_on(&mut connection).await?;
    connection.close().await.map_err(backend)
}

/// Creates the role when absent. Roles are cluster-wide, so another database's migration may
/// create it at the same moment; both "already exists" errors are taken as success.
const ENSURE_APP_ROLE: &str = "DO $$ BEGIN \
       IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'carevault_app') THEN \
         CREATE ROLE carevault_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; \
       END IF; \
     EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
     END $$";

const GRANTS: &str = "GRANT USAGE ON SCHEMA public TO carevault_app; \
     GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, tenant_keys, clients, client_jti, \
       access_tokens, resource_versions, resource_current, search_tokens, search_dates, \
       audit_heads TO carevault_app; \
     REVOKE ALL ON audit_segments, audit_segment_keys, audit_retention FROM carevault_app; \
     GRANT SELECT, INSERT ON audit_segments, audit_segment_keys, audit_retention \
       TO carevault_app; \
     GRANT EXECUTE ON FUNCTION carevault_audit_segments_with_keys(bigint[], bigint, bigint) \
       TO carevault_app";

async fn migrate_on(connection: &mut PgConnection) -> Result<(), StoreError> {
    migrations::postgres()
        .run(&mut *connection)
        .await
        .map_err(|error| StoreError::Backend(format!("migration failed: {error}")))?;
    audit_implementation::convert_legacy(&mut *connection).await?;
    let mut tx = connection.begin().await.map_err(backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    sqlx::raw_sql(ENSURE_APP_ROLE)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    let superuser: bool = sqlx::query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(backend)?;
    if !superuser {
        // A non-superuser owner may only switch to roles it is a member of.
        sqlx::raw_sql("GRANT carevault_app TO CURRENT_USER")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    sqlx::raw_sql(GRANTS)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    sqlx::raw_sql(crate::people_sql::POSTGRES_GRANTS)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    tx.commit().await.map_err(backend)
}

/// Fails closed when the pool's role could read across tenants.
async fn refuse_privileged_role(pool: &PgPool) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles \
         WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await
    .map_err(backend)?;
    let user: String = row.try_get(0).map_err(backend)?;
    let superuser: bool = row.try_get(1).map_err(backend)?;
    let bypass: bool = row.try_get(2).map_err(backend)?;
    if superuser || bypass {
        return Err(StoreError::Backend(format!(
            "the database role {user} can bypass row-level security; \
             the server must run as {APP_ROLE} (NOSUPERUSER NOBYPASSRLS)"
        )));
    }
    Ok(())
}

implement_store!(PgStore, Postgres, PgConnection, PgRow, "postgres");
implement_people_store!(PgStore, Postgres, PgRow);
implement_audit_store!(
    PgStore,
    Postgres,
    PgConnection,
    PgRow,
    audit_keys,
    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() \
     AND tablename = 'audit_log_v5'"
);
