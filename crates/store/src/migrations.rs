//! Schema migrations, embedded in the binary (one folder per dialect) and applied by sqlx's
//! runtime migrator, which records each applied version and its checksum in
//! `_sqlx_migrations` and refuses to start on a database whose applied migrations differ.
//!
//! To change the schema, add the next numbered file to both folders and a line to both lists.

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

pub(crate) fn sqlite() -> Migrator {
    Migrator::with_migrations(vec![migration(
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    )])
}

pub(crate) fn postgres() -> Migrator {
    Migrator::with_migrations(vec![migration(
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    )])
}
