//! Schema migrations, embedded in the binary (one folder per dialect) and applied by sqlx's
//! runtime migrator, which records each applied version and its checksum in
//! `_sqlx_migrations` and refuses to start on a database whose applied migrations differ.
//!
//! To change the schema, add the next numbered file to both folders and a line to both lists
//! (a migration only one engine needs goes in that engine's folder and list alone: version 9,
//! the SQLite audit journal's watermark; version 11, SQLite's token list on the resource;
//! version 12, SQLite's search rows keyed by resource). Numbers may have gaps and may arrive
//! out of order (work in parallel reserves numbers): the migrator applies every listed version
//! not yet applied, whatever its neighbours, and refuses only a database that has applied a
//! version this build does not list. So two migrations developed apart must not depend on each
//! other.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

fn migration(version: i64, description: &'static str, sql: &'static str) -> Migration {
    Migration::new(
        version,
        description.into(),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )
}

/// SQLite's migrations up to `version` and no further: a migration's test writes rows the old
/// way first.
#[cfg(test)]
pub(crate) fn sqlite_through(version: i64) -> Migrator {
    Migrator::with_migrations(
        sqlite()
            .iter()
            .filter(|migration| migration.version <= version)
            .cloned()
            .collect(),
    )
}

pub(crate) fn sqlite() -> Migrator {
    Migrator::with_migrations(vec![
        migration(
            1,
            "initial",
            include_str!("../migrations/sqlite/0001_initial.sql"),
        ),
        migration(
            2,
            "people",
            include_str!("../migrations/sqlite/0002_people.sql"),
        ),
        migration(
            3,
            "audit chain",
            include_str!("../migrations/sqlite/0003_audit_chain.sql"),
        ),
        migration(
            4,
            "audit search",
            include_str!("../migrations/sqlite/0004_audit_search.sql"),
        ),
        migration(
            5,
            "perf",
            include_str!("../migrations/sqlite/0005_perf.sql"),
        ),
        migration(
            6,
            "audit segments",
            include_str!("../migrations/sqlite/0006_audit_segments.sql"),
        ),
        migration(
            7,
            "audit keys gin",
            include_str!("../migrations/sqlite/0007_audit_keys_gin.sql"),
        ),
        migration(
            8,
            "dates",
            include_str!("../migrations/sqlite/0008_dates.sql"),
        ),
        migration(
            9,
            "audit journal",
            include_str!("../migrations/sqlite/0009_audit_journal.sql"),
        ),
        migration(
            10,
            "audit segments by last seq",
            include_str!("../migrations/sqlite/0010_audit_segments_by_last_seq.sql"),
        ),
        migration(
            11,
            "tokens listed on the resource",
            include_str!("../migrations/sqlite/0011_tokens_listed_on_the_resource.sql"),
        ),
        migration(
            12,
            "search rows by resource key",
            include_str!("../migrations/sqlite/0012_search_rows_by_resource_key.sql"),
        ),
    ])
}

pub(crate) fn postgres() -> Migrator {
    Migrator::with_migrations(vec![
        migration(
            1,
            "initial",
            include_str!("../migrations/postgres/0001_initial.sql"),
        ),
        migration(
            2,
            "people",
            include_str!("../migrations/postgres/0002_people.sql"),
        ),
        migration(
            3,
            "audit chain",
            include_str!("../migrations/postgres/0003_audit_chain.sql"),
        ),
        migration(
            4,
            "audit search",
            include_str!("../migrations/postgres/0004_audit_search.sql"),
        ),
        migration(
            5,
            "perf",
            include_str!("../migrations/postgres/0005_perf.sql"),
        ),
        migration(
            6,
            "audit segments",
            include_str!("../migrations/postgres/0006_audit_segments.sql"),
        ),
        migration(
            7,
            "audit keys gin",
            include_str!("../migrations/postgres/0007_audit_keys_gin.sql"),
        ),
        migration(
            8,
            "dates",
            include_str!("../migrations/postgres/0008_dates.sql"),
        ),
        migration(
            10,
            "audit segments by last seq",
            include_str!("../migrations/postgres/0010_audit_segments_by_last_seq.sql"),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database migrated with a gap in the numbers (1 and 3) takes the missing number (2)
    /// later, as happens when parallel work lands in the other order.
    #[tokio::test]
    async fn a_gap_is_accepted_and_filled_later() {
        let Ok(pool) = sqlx::SqlitePool::connect("sqlite::memory:").await else {
            panic!("in-memory SQLite");
        };
        let with_gap = Migrator::with_migrations(vec![
            migration(1, "one", "CREATE TABLE one (x INTEGER)"),
            migration(3, "three", "CREATE TABLE three (x INTEGER)"),
        ]);
        assert!(with_gap.run(&pool).await.is_ok());
        let filled = Migrator::with_migrations(vec![
            migration(1, "one", "CREATE TABLE one (x INTEGER)"),
            migration(2, "two", "CREATE TABLE two (x INTEGER)"),
            migration(3, "three", "CREATE TABLE three (x INTEGER)"),
        ]);
        assert!(filled.run(&pool).await.is_ok());
        assert!(
            sqlx::query("SELECT x FROM two")
                .fetch_all(&pool)
                .await
                .is_ok()
        );
        // The real lists include the chain.
        assert!(sqlite().iter().any(|m| m.version == 3));
        assert!(postgres().iter().any(|m| m.version == 3));
    }
}
