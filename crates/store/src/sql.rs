//! SQL shared by both engines. Both dialects accept `$n` placeholders, `ON CONFLICT`,
//! `RETURNING` and row comparisons, so one text serves both.
//!
//! Dynamic statements (search, history, batches) are assembled by [`Sql`], which only accepts
//! `&'static str` fragments and numbered placeholders: no caller-provided text ever becomes
//! SQL, which is what makes the `AssertSqlSafe` at execution sound.

use carevault_domain::ids::TenantId;
use carevault_domain::store::{
    CandidateFilter, CandidateQuery, DateEntry, HistoryQuery, ResourceWrite, SortBy, StoredVersion,
};
use carevault_fhir::DateCondition;
use uuid::Uuid;

use crate::date_sql;

/// A value bound to a numbered placeholder.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    Uuid(Uuid),
    Text(String),
    Int(i64),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// A statement under construction: text from static fragments, values bound by number.
#[derive(Default)]
pub(crate) struct Sql {
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(crate) fn new() -> Sql {
        Sql::default()
    }

    pub(crate) fn push(&mut self, fragment: &'static str) -> &mut Sql {
        self.text.push_str(fragment);
        self
    }

    /// Appends a placeholder for a new value.
    pub(crate) fn bind(&mut self, value: Value) -> &mut Sql {
        self.values.push(value);
        self.text.push('$');
        self.text.push_str(&self.values.len().to_string());
        self
    }

    /// Binds a value without writing its placeholder (for values the text refers to by number).
    pub(crate) fn preset(&mut self, value: Value) -> usize {
        self.values.push(value);
        self.values.len()
    }

    /// Appends a placeholder for a value bound earlier (`index` as returned by [`Sql::last`]).
    pub(crate) fn again(&mut self, index: usize) -> &mut Sql {
        self.text.push('$');
        self.text.push_str(&index.to_string());
        self
    }

    /// The placeholder number of the value bound last.
    pub(crate) fn last(&self) -> usize {
        self.values.len()
    }

    /// Appends `value, value, …` placeholders.
    pub(crate) fn bind_list(&mut self, values: impl IntoIterator<Item = Value>) -> &mut Sql {
        for (position, value) in values.into_iter().enumerate() {
            if position > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The text with `?n` placeholders instead of `$n`, for a single SQLite statement that
    /// refers to every value. SQLite treats `$n` as a name and looks each one up among the
    /// statement's names in turn, quadratic in a multi-row INSERT of thousands of values (it
    /// was 14 % of the writer's time during an import); `?n` is a plain number. Not for
    /// several statements in one text: sqlx fills the numbers a statement skips from the
    /// values in order, which only works for names.
    pub(crate) fn sqlite_text(&self) -> String {
        sqlite_placeholders(&self.text)
    }

    pub(crate) fn values(&self) -> &[Value] {
        &self.values
    }
}

/// `text` with SQLite's `?n` placeholders instead of `$n` (see [`Sql::sqlite_text`]).
pub(crate) fn sqlite_placeholders(text: &str) -> String {
    let mut converted = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        // Statements are built from static text holding no `$` before a digit except
        // placeholders.
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            converted.push('?');
        } else {
            converted.push(c);
        }
    }
    converted
}

pub(crate) fn tenant_value(tenant: TenantId) -> Value {
    Value::Uuid(tenant.as_uuid())
}

/// Columns of a stored version, in the order `row_to_version` reads them.
pub(crate) const VERSION_COLUMNS: &str =
    "v.resource_type, v.id, v.version, v.last_updated_ms, v.deleted, v.body";

// ---- platform records ----

pub(crate) const INSERT_TENANT: &str =
    "INSERT INTO tenants (id, name, status, created_ms) VALUES ($1, $2, $3, $4)";
pub(crate) const INSERT_TENANT_KEY: &str = "INSERT INTO tenant_keys \
     (tenant_id, purpose, version, wrapped, kek_id, created_ms) VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const LIST_TENANTS: &str =
    "SELECT id, name, status, created_ms FROM tenants ORDER BY name, id";
pub(crate) const SELECT_TENANT: &str =
    "SELECT id, name, status, created_ms FROM tenants WHERE id = $1";
pub(crate) const UPDATE_TENANT_STATUS: &str = "UPDATE tenants SET status = $2 WHERE id = $1";
pub(crate) const DELETE_TENANT_TOKENS: &str = "DELETE FROM access_tokens WHERE tenant_id = $1";
pub(crate) const DELETE_CLIENT_TOKENS: &str = "DELETE FROM access_tokens WHERE client_id = $1";
pub(crate) const SELECT_TENANT_KEYS: &str = "SELECT tenant_id, purpose, version, wrapped, kek_id, \
     created_ms FROM tenant_keys WHERE tenant_id = $1 ORDER BY purpose, version";

pub(crate) const INSERT_CLIENT: &str = "INSERT INTO clients \
     (id, tenant_id, name, jwks, scopes, status, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const SELECT_CLIENT: &str =
    "SELECT id, tenant_id, name, jwks, scopes, status, created_ms FROM clients WHERE id = $1";
pub(crate) const LIST_CLIENTS: &str = "SELECT id, tenant_id, name, jwks, scopes, status, \
     created_ms FROM clients ORDER BY tenant_id, name, id";
pub(crate) const LIST_CLIENTS_OF_TENANT: &str = "SELECT id, tenant_id, name, jwks, scopes, \
     status, created_ms FROM clients WHERE tenant_id = $1 ORDER BY name, id";
pub(crate) const UPDATE_CLIENT_STATUS: &str = "UPDATE clients SET status = $2 WHERE id = $1";

pub(crate) const PRUNE_JTI: &str = "DELETE FROM client_jti WHERE expires_ms <= $1";
pub(crate) const INSERT_JTI: &str = "INSERT INTO client_jti (client_id, jti, expires_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (client_id, jti) DO NOTHING";

pub(crate) const INSERT_ACCESS_TOKEN: &str = "INSERT INTO access_tokens \
     (token_hash, tenant_id, client_id, scopes, issued_ms, expires_ms) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const FIND_ACCESS_TOKEN: &str = "SELECT a.token_hash, a.tenant_id, a.client_id, \
     a.scopes, a.issued_ms, a.expires_ms, t.status, c.status, c.name \
     FROM access_tokens a \
     JOIN tenants t ON t.id = a.tenant_id \
     JOIN clients c ON c.id = a.client_id \
     WHERE a.token_hash = $1";

// ---- tenant data ----

/// A resource's current version: its newest, which is the one `resource_current` points at
/// (every commit writes both in one transaction, and versions are never removed). Read from
/// the versions' key alone, it takes two B-tree descents instead of four.
pub(crate) const SELECT_CURRENT: &str = "SELECT v.resource_type, v.id, v.version, \
     v.last_updated_ms, v.deleted, v.body FROM resource_versions v \
     WHERE v.tenant_id = $1 AND v.resource_type = $2 AND v.id = $3 \
     ORDER BY v.version DESC LIMIT 1";
pub(crate) const SELECT_VERSION: &str = "SELECT v.resource_type, v.id, v.version, \
     v.last_updated_ms, v.deleted, v.body FROM resource_versions v \
     WHERE v.tenant_id = $1 AND v.resource_type = $2 AND v.id = $3 AND v.version = $4";
pub(crate) const SELECT_CURRENT_VERSION_NUMBER: &str = "SELECT version FROM resource_current \
     WHERE tenant_id = $1 AND resource_type = $2 AND id = $3";
/// A resource's token and date rows (PostgreSQL, whose keys start with the id; SQLite's
/// writer deletes the token rows listed on the current row one by one, by the table's key, and
/// the date rows by the resource's key).
pub(crate) const DELETE_TOKENS: &str =
    "DELETE FROM search_tokens WHERE tenant_id = $1 AND resource_type = $2 AND id = $3";
pub(crate) const DELETE_DATES: &str =
    "DELETE FROM search_dates WHERE tenant_id = $1 AND resource_type = $2 AND id = $3";

/// Rows per multi-row INSERT: the rows of many resources go in one statement (one round trip
/// to the writer), chunked so the bound values stay far under both engines' limits (SQLite
/// 32,766; PostgreSQL 65,535): at most seven values a row.
pub(crate) const ROWS_PER_INSERT: usize = 500;

/// `INSERT INTO resource_versions … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING
/// resource_type, id`: new versions of several resources. A version whose key exists already is
/// skipped and missing from the rows returned, so the caller can name the resource that
/// conflicted.
pub(crate) fn insert_versions(tenant: TenantId, versions: &[&StoredVersion]) -> Sql {
    let mut sql = version_rows(
        tenant,
        "INSERT INTO resource_versions \
         (tenant_id, resource_type, id, version, last_updated_ms, deleted, body) VALUES ",
        versions,
        true,
    );
    sql.push(" ON CONFLICT DO NOTHING RETURNING resource_type, id");
    sql
}

/// `INSERT INTO resource_current … VALUES (…), (…) ON CONFLICT … DO UPDATE`: points several
/// resources at their new versions.
pub(crate) fn upsert_current(tenant: TenantId, versions: &[&StoredVersion]) -> Sql {
    let mut sql = version_rows(
        tenant,
        "INSERT INTO resource_current \
         (tenant_id, resource_type, id, version, last_updated_ms, deleted) VALUES ",
        versions,
        false,
    );
    sql.push(
        " ON CONFLICT (tenant_id, resource_type, id) DO UPDATE SET \
           version = excluded.version, last_updated_ms = excluded.last_updated_ms, \
           deleted = excluded.deleted",
    );
    sql
}

/// `insert` followed by one row per version: the tenant (bound once), type, id, version, time,
/// deleted and, with `body`, the sealed body.
fn version_rows(
    tenant: TenantId,
    insert: &'static str,
    versions: &[&StoredVersion],
    body: bool,
) -> Sql {
    let mut sql = Sql::new();
    let tenant = sql.preset(tenant_value(tenant));
    sql.push(insert);
    for (position, version) in versions.iter().enumerate() {
        if position > 0 {
            sql.push(", ");
        }
        sql.push("(").again(tenant).push(", ");
        sql.bind_list([
            Value::Text(version.resource_type.clone()),
            Value::Text(version.id.clone()),
            Value::Int(version.version),
            Value::Int(version.last_updated_ms),
            Value::Bool(version.deleted),
        ]);
        if body {
            sql.push(", ").bind(Value::Bytes(version.body.clone()));
        }
        sql.push(")");
    }
    sql
}

/// Multi-row INSERTs of search rows of several resources, at most [`ROWS_PER_INSERT`] rows
/// each: the tenant is bound once a statement, a resource's type and id once per resource and
/// statement, then `row` binds the rest of each row.
struct SearchRows<'a, T> {
    tenant: TenantId,
    table: &'static str,
    row: fn(&mut Sql, &T),
    statements: Vec<Sql>,
    current: Option<(Sql, usize, usize)>,
    resource: Option<(&'a str, &'a str)>,
    rows: usize,
}

impl<'a, T> SearchRows<'a, T> {
    fn new(tenant: TenantId, table: &'static str, row: fn(&mut Sql, &T)) -> SearchRows<'a, T> {
        SearchRows {
            tenant,
            table,
            row,
            statements: Vec::new(),
            current: None,
            resource: None,
            rows: 0,
        }
    }

    fn resource(&mut self, resource_type: &'a str, id: &'a str) {
        self.resource = Some((resource_type, id));
        // The next row binds this resource's type and id afresh.
        if let Some((_, type_at, _)) = self.current.as_mut() {
            *type_at = 0;
        }
    }

    fn add(&mut self, value: &T) {
        let Some((resource_type, id)) = self.resource else {
            return;
        };
        if self.rows == ROWS_PER_INSERT {
            self.finish();
        }
        let (tenant, table, row) = (self.tenant, self.table, self.row);
        let (sql, type_at, id_at) = self.current.get_or_insert_with(|| {
            let mut sql = Sql::new();
            sql.preset(tenant_value(tenant));
            sql.push(table);
            (sql, 0, 0)
        });
        if *type_at == 0 {
            *type_at = sql.preset(Value::Text(resource_type.to_owned()));
            *id_at = sql.preset(Value::Text(id.to_owned()));
        }
        if self.rows > 0 {
            sql.push(", ");
        }
        sql.push("($1, ")
            .again(*type_at)
            .push(", ")
            .again(*id_at)
            .push(", ");
        row(sql, value);
        sql.push(")");
        self.rows += 1;
    }

    fn finish(&mut self) {
        if let Some((mut sql, _, _)) = self.current.take() {
            sql.push(" ON CONFLICT DO NOTHING");
            self.statements.push(sql);
        }
        self.rows = 0;
    }

    fn into_statements(mut self) -> Vec<Sql> {
        self.finish();
        self.statements
    }
}

/// The search rows (blind tokens, then dates) of `writes`, as multi-row INSERTs. Tombstones
/// have none.
pub(crate) fn insert_search_rows(tenant: TenantId, writes: &[ResourceWrite]) -> Vec<Sql> {
    let mut tokens = SearchRows::new(
        tenant,
        "INSERT INTO search_tokens (tenant_id, resource_type, id, token) VALUES ",
        |sql, token: &[u8; 16]| {
            sql.bind(Value::Bytes(token.to_vec()));
        },
    );
    let mut dates = SearchRows::new(
        tenant,
        "INSERT INTO search_dates (tenant_id, resource_type, id, param, low, high) VALUES ",
        |sql, date: &DateEntry| {
            sql.bind_list([
                Value::Text(date.param.clone()),
                Value::Int(date.low),
                Value::Int(date.high),
            ]);
        },
    );
    for write in writes.iter().filter(|write| !write.version.deleted) {
        let version = &write.version;
        tokens.resource(&version.resource_type, &version.id);
        dates.resource(&version.resource_type, &version.id);
        for token in &write.tokens {
            tokens.add(token);
        }
        for date in &write.dates {
            dates.add(date);
        }
    }
    let mut statements = tokens.into_statements();
    statements.extend(dates.into_statements());
    statements
}

/// The most (type, id) pairs one `current_many` statement carries.
pub(crate) const CURRENT_MANY_CHUNK: usize = 200;

/// Current versions of some (type, id) pairs of one tenant; deleted ones excluded.
pub(crate) fn current_many(tenant: TenantId, refs: &[(String, String)]) -> Sql {
    let mut sql = Sql::new();
    sql.push("SELECT ")
        .push(VERSION_COLUMNS)
        .push(
            " FROM resource_current c JOIN resource_versions v \
               ON v.tenant_id = c.tenant_id AND v.resource_type = c.resource_type \
              AND v.id = c.id AND v.version = c.version \
             WHERE c.tenant_id = ",
        )
        .bind(tenant_value(tenant))
        .push(" AND c.deleted = FALSE AND (");
    for (position, (resource_type, id)) in refs.iter().enumerate() {
        if position > 0 {
            sql.push(" OR ");
        }
        sql.push("(c.resource_type = ")
            .bind(Value::Text(resource_type.clone()))
            .push(" AND c.id = ")
            .bind(Value::Text(id.clone()))
            .push(")");
    }
    if refs.is_empty() {
        sql.push("FALSE");
    }
    sql.push(")");
    sql
}

/// History, newest first, keyset-paged strictly after `before`. Tombstones included.
///
/// - Type history: ordered by (last_updated desc, id asc, version desc) within the type, which
///   the `resource_versions_history` index serves.
/// - Instance history: one resource's versions, newest version first (FHIR: "oldest versions
///   last"), paged by version. The primary key serves both the look-up and the order. Ordered
///   by time instead, SQLite's planner walked the history index through every version of the
///   type in the tenant to find the resource's few: 442 ms at p50 for a Patient's history at
///   100,000 patients. Version order is also the right one if the clock ever stepped back
///   between two updates.
pub(crate) fn history(tenant: TenantId, query: &HistoryQuery) -> Sql {
    let mut sql = Sql::new();
    sql.push("SELECT ")
        .push(VERSION_COLUMNS)
        .push(" FROM resource_versions v WHERE v.tenant_id = ")
        .bind(tenant_value(tenant))
        .push(" AND v.resource_type = ")
        .bind(Value::Text(query.resource_type.clone()));
    if let Some(since) = query.since_ms {
        sql.push(" AND v.last_updated_ms >= ")
            .bind(Value::Int(since));
    }
    if let Some(id) = &query.id {
        sql.push(" AND v.id = ").bind(Value::Text(id.clone()));
        if let Some((_, _, version)) = &query.before {
            sql.push(" AND v.version < ").bind(Value::Int(*version));
        }
        sql.push(" ORDER BY v.version DESC LIMIT ")
            .bind(Value::Int(limit_value(query.limit)));
        return sql;
    }
    if let Some((last_updated, id, version)) = &query.before {
        sql.push(" AND (v.last_updated_ms < ")
            .bind(Value::Int(*last_updated));
        let updated = sql.last();
        sql.push(" OR (v.last_updated_ms = ")
            .again(updated)
            .push(" AND (v.id > ")
            .bind(Value::Text(id.clone()));
        let id_index = sql.last();
        sql.push(" OR (v.id = ")
            .again(id_index)
            .push(" AND v.version < ")
            .bind(Value::Int(*version))
            .push("))))");
    }
    sql.push(" ORDER BY v.last_updated_ms DESC, v.id ASC, v.version DESC LIMIT ")
        .bind(Value::Int(limit_value(query.limit)));
    sql
}

/// How far [`filter_sizes`] counts a filter's rows.
const FILTER_SIZE_BOUND: i64 = 100;

/// With two or more token or date filters: one row counting (up to a bound) the search rows each
/// of them matches, and the filters' positions in the query (token filters first, so that a tie
/// keeps a token filter as the driver). A search drives from the smallest (see [`search`]):
/// SQLite's planner cannot tell a family name shared by thousands of patients from a birth date
/// shared by three, and drove from whichever filter came first, or from the token filter when
/// the other was a date.
pub(crate) fn filter_sizes(
    tenant: TenantId,
    query: &CandidateQuery,
    engine: Engine,
) -> Option<(Sql, Vec<usize>)> {
    let drivable = |position: usize, filter: &CandidateFilter| match filter {
        CandidateFilter::AnyToken(tokens) if !tokens.is_empty() => Some(position),
        CandidateFilter::AnyDate { conditions, .. } if !conditions.is_empty() => Some(position),
        _ => None,
    };
    let (mut positions, dates): (Vec<usize>, Vec<usize>) = query
        .filters
        .iter()
        .enumerate()
        .filter_map(|(position, filter)| drivable(position, filter))
        .partition(|position| matches!(query.filters[*position], CandidateFilter::AnyToken(_)));
    positions.extend(dates);
    if positions.len() < 2 {
        return None;
    }
    let mut sql = Sql::new();
    sql.preset(tenant_value(tenant));
    sql.preset(Value::Text(query.resource_type.clone()));
    let bound = sql.preset(Value::Int(FILTER_SIZE_BOUND));
    sql.push("SELECT ");
    for (index, position) in positions.iter().enumerate() {
        if index > 0 {
            sql.push(", ");
        }
        sql.push("(SELECT count(*) FROM (");
        match &query.filters[*position] {
            CandidateFilter::AnyDate { params, conditions } => {
                push_date_rows(&mut sql, engine, Rows::Ids, params, conditions);
            }
            CandidateFilter::AnyToken(tokens) => {
                push_token_rows(&mut sql, engine, Rows::Ids, tokens);
            }
            // Not drivable: `drivable` above leaves them out.
            CandidateFilter::Ids(_) | CandidateFilter::LastUpdated(_) => {
                sql.push("SELECT NULL");
            }
        }
        sql.push(" LIMIT ").again(bound).push(") AS bounded)");
    }
    Some((sql, positions))
}

/// How an engine's search tables name a resource, and where a search driven by a token filter
/// probes the other filters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Engine {
    /// Search rows name a resource by its key, `resource_current.rkey`; a token row holds the
    /// token, a type code and the key, no tenant (migration 0012), and a search checks the
    /// tenant and type on the resource's row. A driving token filter probes the other token
    /// and date filters on each of its rows, inside the driver's set, before the resource is
    /// looked up (SQLite runs the statement as written).
    Sqlite,
    /// Search rows carry the tenant, type and id (row-level security filters them by tenant).
    /// Probes are made on each candidate, after its look-up: given the other shape,
    /// PostgreSQL ran the conformance test of several token filters in 318 s instead of 4.
    Postgres,
}

impl Engine {
    /// The column of `resource_current` (and of the search rows) that names a resource.
    fn resource_column(self) -> &'static str {
        match self {
            Engine::Sqlite => "rkey",
            Engine::Postgres => "id",
        }
    }
}

/// Which rows a filter's sub-select yields.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// The resources (ids, or keys on SQLite) of every matching row of the query's tenant and
    /// type (`$1`, `$2`): a set of candidates (`c.id IN (…)`, `c.rkey IN (…)`).
    Ids,
    /// The candidate's own matching rows (`EXISTS (…)`): a look-up by the candidate.
    OfCandidate,
    /// The matching rows of the resource a driving token row names (`EXISTS (…)` inside the
    /// driver's set): a look-up by the driving row's resource, made before the resource itself
    /// is looked up.
    OfDriverRow,
}

/// The search tables.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Tokens,
    Dates,
}

impl Rows {
    /// `SELECT … FROM table alias WHERE` the rows are the query's tenant's and type's (`$1`,
    /// `$2`) and, for a probe, the resource's.
    fn push_head(self, sql: &mut Sql, engine: Engine, table: Table, alias: &'static str) {
        let column = engine.resource_column();
        match self {
            Rows::Ids => sql.push("SELECT ").push(alias).push(".").push(column),
            Rows::OfCandidate | Rows::OfDriverRow => sql.push("SELECT 1"),
        };
        let name = match table {
            Table::Tokens => " FROM search_tokens ",
            Table::Dates => " FROM search_dates ",
        };
        sql.push(name).push(alias).push(" WHERE ");
        let of = match self {
            Rows::Ids => None,
            Rows::OfCandidate => Some("c"),
            Rows::OfDriverRow => Some("t"),
        };
        // The rows' type and tenant; a probe of a date row needs neither on SQLite, where the
        // resource's key is of one tenant and type.
        let scoped = match (engine, table) {
            // A token row holds no tenant: the search checks the tenant on the resource's row,
            // and a probe follows a resource the search checks there.
            (Engine::Sqlite, Table::Tokens) => {
                sql.push(alias)
                    .push(".type_code = (SELECT code FROM resource_types WHERE name = $2)");
                true
            }
            (Engine::Sqlite, Table::Dates) if of.is_some() => false,
            _ => {
                sql.push(alias)
                    .push(".tenant_id = $1 AND ")
                    .push(alias)
                    .push(".resource_type = $2");
                true
            }
        };
        if let Some(of) = of {
            if scoped {
                sql.push(" AND ");
            }
            sql.push(alias)
                .push(".")
                .push(column)
                .push(" = ")
                .push(of)
                .push(".")
                .push(column);
        }
    }
}

/// The rows matching any of `tokens`.
fn push_token_rows(sql: &mut Sql, engine: Engine, rows: Rows, tokens: &[[u8; 16]]) {
    // `t` is the driving token row that a probe of the same table refers to.
    let alias = if rows == Rows::OfDriverRow { "p" } else { "t" };
    rows.push_head(sql, engine, Table::Tokens, alias);
    sql.push(" AND ")
        .push(alias)
        .push(".token IN (")
        .bind_list(tokens.iter().map(|token| Value::Bytes(token.to_vec())))
        .push(")");
}

/// One date row as PostgreSQL, and SQLite before version 12, hold it: tests write rows
/// directly. (PostgreSQL's commits write multi-row statements, SQLite's writer its own.)
#[cfg(test)]
pub(crate) const INSERT_DATE: &str = "INSERT INTO search_dates \
     (tenant_id, resource_type, id, param, low, high) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

/// `search_dates`' range columns, under their indexes (see `date_sql`).
const DATE_ROWS: date_sql::Range = date_sql::Range {
    low: "d.low",
    high: "d.high",
    indexed: true,
};

/// ` AND column = $n` for one parameter, ` AND column IN ($n, …)` for several (values preset
/// at `indexes`); no parameter matches no row.
fn push_param_in(sql: &mut Sql, column: &'static str, indexes: &[usize]) {
    match indexes {
        [] => {
            sql.push(" AND FALSE");
        }
        [one] => {
            sql.push(" AND ").push(column).push(" = ").again(*one);
        }
        several => {
            sql.push(" AND ").push(column).push(" IN (");
            for (position, index) in several.iter().enumerate() {
                if position > 0 {
                    sql.push(", ");
                }
                sql.again(*index);
            }
            sql.push(")");
        }
    }
}

/// The rows of the date `params` meeting any of `conditions`: as a set of ids, one `SELECT`
/// per term of the conditions joined by `UNION`, so that each can use an index (see
/// `date_sql`); as a probe of the candidate's own rows, the terms joined by `OR`.
fn push_date_rows(
    sql: &mut Sql,
    engine: Engine,
    rows: Rows,
    params: &[String],
    conditions: &[DateCondition],
) {
    let param_indexes: Vec<usize> = params
        .iter()
        .map(|param| sql.preset(Value::Text(param.clone())))
        .collect();
    let head = |sql: &mut Sql| {
        rows.push_head(sql, engine, Table::Dates, "d");
        push_param_in(sql, "d.param", &param_indexes);
    };
    match rows {
        Rows::Ids => date_sql::push_id_sets(sql, conditions, DATE_ROWS, head),
        Rows::OfCandidate | Rows::OfDriverRow => {
            head(sql);
            sql.push(" AND (");
            push_conditions(sql, conditions, DATE_ROWS);
            sql.push(")");
        }
    }
}

/// A candidate search. See [`CandidateQuery`]: every filter must match; ordered by sort value
/// then id; keyset-paged strictly after `after`.
///
/// With `driver`, that token or date filter selects the candidates and every other filter is a
/// membership probe on each of them (a look-up by the candidate); without, every token filter
/// is a set the planner may start from. On [`Engine::Sqlite`], a driving token filter probes
/// the other token and date filters on each of its rows, before the resource is looked up: a
/// birth date shared by a few patients at 100,000 then costs one look-up, of the one whose
/// family name matches, not one for each of them.
pub(crate) fn search(
    tenant: TenantId,
    query: &CandidateQuery,
    driver: Option<usize>,
    engine: Engine,
) -> Sql {
    let mut sql = Sql::new();
    // $1 and $2 are reused by every fragment below.
    sql.preset(tenant_value(tenant));
    sql.preset(Value::Text(query.resource_type.clone()));
    sql.push("SELECT s.sort_value, ")
        .push(VERSION_COLUMNS)
        .push(" FROM (SELECT ");
    match &query.sort {
        SortBy::LastUpdated => {
            sql.push("c.last_updated_ms");
        }
        SortBy::Date(params) => {
            let indexes: Vec<usize> = params
                .iter()
                .map(|param| sql.preset(Value::Text(param.clone())))
                .collect();
            sql.push(match engine {
                Engine::Sqlite => {
                    "COALESCE((SELECT MIN(d.low) FROM search_dates d WHERE d.rkey = c.rkey"
                }
                Engine::Postgres => {
                    "COALESCE((SELECT MIN(d.low) FROM search_dates d \
                     WHERE d.tenant_id = c.tenant_id AND d.resource_type = c.resource_type \
                       AND d.id = c.id"
                }
            });
            push_param_in(&mut sql, "d.param", &indexes);
            sql.push("), 9223372036854775807)");
        }
    }
    sql.push(
        " AS sort_value, c.id AS id, c.version AS version FROM resource_current c \
         WHERE c.tenant_id = $1 AND c.resource_type = $2 AND c.deleted = FALSE",
    );
    let probe = |filter: &CandidateFilter| match filter {
        CandidateFilter::AnyToken(tokens) => !tokens.is_empty(),
        CandidateFilter::AnyDate { conditions, .. } => !conditions.is_empty(),
        CandidateFilter::Ids(_) | CandidateFilter::LastUpdated(_) => false,
    };
    let member = engine.resource_column();
    let token_driver = driver.filter(|position| {
        let token = matches!(
            query.filters.get(*position),
            Some(CandidateFilter::AnyToken(tokens)) if !tokens.is_empty()
        );
        engine == Engine::Sqlite && token
    });
    for (position, filter) in query.filters.iter().enumerate() {
        if token_driver.is_some_and(|driver| driver != position) && probe(filter) {
            // Probed inside the driver's set, below.
            continue;
        }
        sql.push(" AND ");
        match filter {
            CandidateFilter::AnyToken(tokens) if token_driver == Some(position) => {
                sql.push("c.").push(member).push(" IN (");
                push_token_rows(&mut sql, engine, Rows::Ids, tokens);
                for (other, probed) in query.filters.iter().enumerate() {
                    if other == position || !probe(probed) {
                        continue;
                    }
                    sql.push(" AND EXISTS (");
                    if let CandidateFilter::AnyDate { params, conditions } = probed {
                        push_date_rows(&mut sql, engine, Rows::OfDriverRow, params, conditions);
                    } else if let CandidateFilter::AnyToken(tokens) = probed {
                        push_token_rows(&mut sql, engine, Rows::OfDriverRow, tokens);
                    }
                    // A subquery with a limit stays a probe: SQLite (3.51) turns a bare
                    // `EXISTS` here into a join, which it may then run from the probed
                    // filter's rows (every patient with that family name) or prime with a
                    // Bloom filter built from them.
                    sql.push(" LIMIT 1)");
                }
                sql.push(")");
            }
            CandidateFilter::AnyToken(tokens)
                if !tokens.is_empty() && driver.is_some_and(|driver| driver != position) =>
            {
                sql.push("EXISTS (");
                push_token_rows(&mut sql, engine, Rows::OfCandidate, tokens);
                sql.push(")");
            }
            CandidateFilter::AnyDate { params, conditions }
                if !conditions.is_empty() && driver == Some(position) =>
            {
                sql.push("c.").push(member).push(" IN (");
                push_date_rows(&mut sql, engine, Rows::Ids, params, conditions);
                sql.push(")");
            }
            _ => push_filter(&mut sql, engine, filter),
        }
    }
    // The candidates drive, their versions are looked up by primary key: `CROSS JOIN` keeps
    // that order on SQLite, whose planner otherwise walked every version of the type (the
    // history index) and sorted them, even for the first page of an unfiltered search
    // (`GET /fhir/Patient` at 100,000 patients: 1 s of SQL with the file in the OS's cache, 14 s
    // without, against under 1 ms walking `resource_current_by_update` in the page's order).
    // PostgreSQL plans the join either way.
    sql.push(
        ") s CROSS JOIN resource_versions v WHERE v.tenant_id = $1 AND v.resource_type = $2 \
         AND v.id = s.id AND v.version = s.version",
    );
    let (comparison, order) = if query.descending {
        (" < ", " ORDER BY s.sort_value DESC, s.id DESC LIMIT ")
    } else {
        (" > ", " ORDER BY s.sort_value ASC, s.id ASC LIMIT ")
    };
    if let Some((sort_value, id)) = &query.after {
        sql.push(" AND (s.sort_value")
            .push(comparison)
            .bind(Value::Int(*sort_value));
        let value_index = sql.last();
        sql.push(" OR (s.sort_value = ")
            .again(value_index)
            .push(" AND s.id")
            .push(comparison)
            .bind(Value::Text(id.clone()))
            .push("))");
    }
    sql.push(order).bind(Value::Int(limit_value(query.limit)));
    sql
}

fn push_filter(sql: &mut Sql, engine: Engine, filter: &CandidateFilter) {
    match filter {
        CandidateFilter::AnyToken(tokens) => {
            if tokens.is_empty() {
                sql.push("FALSE");
                return;
            }
            sql.push("c.").push(engine.resource_column()).push(" IN (");
            push_token_rows(sql, engine, Rows::Ids, tokens);
            sql.push(")");
        }
        CandidateFilter::AnyDate { params, conditions } => {
            if conditions.is_empty() {
                sql.push("FALSE");
                return;
            }
            sql.push("EXISTS (");
            push_date_rows(sql, engine, Rows::OfCandidate, params, conditions);
            sql.push(")");
        }
        CandidateFilter::Ids(ids) => {
            if ids.is_empty() {
                sql.push("FALSE");
                return;
            }
            sql.push("c.id IN (")
                .bind_list(ids.iter().map(|id| Value::Text(id.clone())))
                .push(")");
        }
        CandidateFilter::LastUpdated(conditions) => {
            if conditions.is_empty() {
                sql.push("FALSE");
                return;
            }
            sql.push("(");
            push_conditions(
                sql,
                conditions,
                date_sql::Range {
                    low: "c.last_updated_ms",
                    high: "(c.last_updated_ms + 1)",
                    indexed: false,
                },
            );
            sql.push(")");
        }
    }
}

/// `cond OR cond OR …` over a resource range [low, high).
fn push_conditions(sql: &mut Sql, conditions: &[DateCondition], range: date_sql::Range) {
    for (position, condition) in conditions.iter().enumerate() {
        if position > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        date_sql::push_condition(sql, condition, range);
        sql.push(")");
    }
}

/// Limits beyond i64 cannot be expressed and are meaningless; clamp.
fn limit_value(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;

    /// A migrated, empty SQLite database (kept while the directory lives) and a connection to
    /// it, for reading plans.
    pub(crate) async fn migrated_database() -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(SqliteStore::open(&path).await.unwrap());
        let connection = rusqlite::Connection::open(&path).unwrap();
        (dir, connection)
    }

    /// SQLite's plan lines for `statement`.
    pub(crate) fn plan(connection: &rusqlite::Connection, statement: &Sql) -> Vec<String> {
        plan_tree(connection, statement)
            .into_iter()
            .map(|(_, _, detail)| detail)
            .collect()
    }

    /// SQLite's plan lines for `statement`, each as (id, parent id, detail).
    fn plan_tree(connection: &rusqlite::Connection, statement: &Sql) -> Vec<(i64, i64, String)> {
        let mut plan = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {}", statement.sqlite_text()))
            .unwrap();
        plan.query_map(rusqlite::params_from_iter(statement.values()), |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// An instance's history is found and ordered by the primary key, whatever the page: it
    /// must not walk every version of the type in the tenant (the history index) to find the
    /// resource's few, as it did when it was ordered by time.
    #[tokio::test]
    async fn sqlite_finds_an_instances_history_by_its_primary_key() {
        let (_dir, connection) = migrated_database().await;
        let instance = HistoryQuery {
            resource_type: "Patient".to_owned(),
            id: Some("p1".to_owned()),
            since_ms: None,
            before: None,
            limit: 50,
        };
        for query in [
            instance.clone(),
            HistoryQuery {
                before: Some((10, "p1".to_owned(), 3)),
                since_ms: Some(5),
                ..instance.clone()
            },
        ] {
            let lines = plan(&connection, &history(TenantId::generate(), &query));
            // One look-up of the primary key's index (SQLite names it), and no sort.
            assert_eq!(lines.len(), 1, "{lines:#?}");
            assert!(
                lines[0].contains(
                    "USING INDEX sqlite_autoindex_resource_versions_1 \
                     (tenant_id=? AND resource_type=? AND id=?"
                ),
                "{lines:#?}"
            );
        }
    }

    /// The first page of a search without filters, newest first, walks the current versions'
    /// index in the page's order and stops at the page's end: no sort of the whole type, and no
    /// walk of every version of it.
    #[tokio::test]
    async fn sqlite_pages_an_unfiltered_search_along_the_update_index() {
        use carevault_domain::store::{CandidateQuery, SortBy};

        let (_dir, connection) = migrated_database().await;
        for descending in [true, false] {
            let query = CandidateQuery {
                resource_type: "Patient".to_owned(),
                filters: Vec::new(),
                sort: SortBy::LastUpdated,
                descending,
                after: None,
                limit: 20,
            };
            let lines = plan(
                &connection,
                &search(TenantId::generate(), &query, None, Engine::Sqlite),
            );
            assert_eq!(lines.len(), 2, "{lines:#?}");
            assert!(
                lines[0].contains("USING INDEX resource_current_by_update")
                    && lines[1].contains("sqlite_autoindex_resource_versions_1")
                    && lines.iter().all(|line| !line.contains("TEMP B-TREE")),
                "{lines:#?}"
            );
        }
    }

    /// A read by id finds the newest version at the end of the id's run in the versions' key:
    /// one index search, no sort, and no look-up in `resource_current` (two descents fewer).
    #[tokio::test]
    async fn sqlite_reads_a_current_version_from_the_versions_key_alone() {
        let (_dir, connection) = migrated_database().await;
        let mut statement = Sql::new();
        statement.preset(tenant_value(TenantId::generate()));
        statement.preset(Value::Text("Patient".to_owned()));
        statement.preset(Value::Text("p1".to_owned()));
        statement.push(SELECT_CURRENT);
        let lines = plan(&connection, &statement);
        assert_eq!(
            lines,
            ["SEARCH v USING INDEX sqlite_autoindex_resource_versions_1 \
              (tenant_id=? AND resource_type=? AND id=?)"],
            "{lines:#?}"
        );
    }

    /// A search by one token (an NHS number) reads the token's rows by the table's key and
    /// looks up each of their resources by its key, where the tenant and type are checked; it
    /// never walks the type's resources.
    #[tokio::test]
    async fn sqlite_finds_a_tokens_resources_by_their_keys() {
        use carevault_domain::store::{CandidateFilter, CandidateQuery, SortBy};

        let (_dir, connection) = migrated_database().await;
        let query = CandidateQuery {
            resource_type: "Patient".to_owned(),
            filters: vec![CandidateFilter::AnyToken(vec![[1; 16]])],
            sort: SortBy::LastUpdated,
            descending: false,
            after: None,
            limit: 20,
        };
        let statement = search(TenantId::generate(), &query, None, Engine::Sqlite);
        assert!(
            statement
                .text()
                .contains("c.tenant_id = $1 AND c.resource_type = $2"),
            "{}",
            statement.text()
        );
        let lines = plan(&connection, &statement);
        for expected in [
            "SEARCH t USING PRIMARY KEY (token=? AND type_code=?)",
            "SEARCH c USING INTEGER PRIMARY KEY (rowid=?)",
            "SEARCH v USING INDEX sqlite_autoindex_resource_versions_1",
        ] {
            assert!(
                lines.iter().any(|line| line.contains(expected)),
                "no {expected:?} in {lines:#?}"
            );
        }
        assert!(
            lines
                .iter()
                .all(|line| !line.contains("resource_current_by_update")),
            "{lines:#?}"
        );
    }

    /// A search driven by a token probes the other token and date filters on each of the
    /// driver's rows, inside the driver's set, before the resource is looked up (a birth date
    /// shared by a few patients then costs one resource look-up, for the one whose family name
    /// matches). On the old statement the probes were the resource's own subqueries, made after
    /// its look-up.
    #[tokio::test]
    async fn sqlite_probes_a_driving_tokens_rows_before_looking_up_their_resources() {
        use carevault_domain::store::{CandidateFilter, CandidateQuery, SortBy};
        use carevault_fhir::DatePrefix;

        let (_dir, connection) = migrated_database().await;
        let query = CandidateQuery {
            resource_type: "Patient".to_owned(),
            filters: vec![
                CandidateFilter::AnyToken(vec![[1; 16], [2; 16]]),
                CandidateFilter::AnyToken(vec![[3; 16]]),
                CandidateFilter::AnyDate {
                    params: vec!["birthdate".to_owned()],
                    conditions: vec![DateCondition {
                        prefix: DatePrefix::Eq,
                        low: 0,
                        high: 86_400_000,
                    }],
                },
            ],
            sort: SortBy::LastUpdated,
            descending: false,
            after: None,
            limit: 20,
        };
        let statement = search(TenantId::generate(), &query, Some(1), Engine::Sqlite);
        let lines = plan_tree(&connection, &statement);
        let parent_of = |id: i64| {
            lines
                .iter()
                .find(|(line, _, _)| *line == id)
                .map(|(_, parent, _)| *parent)
                .unwrap()
        };
        let find = |text: &str| {
            lines
                .iter()
                .find(|(_, _, detail)| detail.contains(text))
                .unwrap_or_else(|| panic!("no {text:?} in {lines:#?}"))
        };
        let driver = find("SEARCH t USING PRIMARY KEY (token=? AND type_code=?)");
        // By the table's key: there is no index of token rows by resource (migration 0011),
        // and the rows name their resource by its key (migration 0012).
        let token_probe = find("SEARCH p USING PRIMARY KEY (token=? AND type_code=? AND rkey=?)");
        let date_probe = find("SEARCH d USING PRIMARY KEY (rkey=? AND param=? AND low>?");
        // Each candidate is looked up by its key, where its tenant and type are checked.
        find("SEARCH c USING INTEGER PRIMARY KEY (rowid=?)");
        // Each probe is a subquery of the driver's set, not of the outer look-up.
        assert_eq!(parent_of(token_probe.1), driver.1, "{lines:#?}");
        assert_eq!(parent_of(date_probe.1), driver.1, "{lines:#?}");
        assert!(
            lines
                .iter()
                .filter(|(_, parent, _)| *parent == 0)
                .all(|(_, _, detail)| !detail.contains("SUBQUERY")
                    || detail.starts_with("LIST SUBQUERY")),
            "{lines:#?}"
        );
    }
}
