//! The audit journal's ingestion, on the writer's connection: journaled frames chained into
//! the trail, tenant by tenant, and the records of a tenant that cannot be chained held back
//! (see `sqlite/journal.rs`).

use std::collections::HashMap;

use carevault_domain::audit::AuditRecord;
use carevault_domain::ids::TenantId;
use carevault_domain::store::{StoreError, StoreResult};
use rusqlite::{Connection, TransactionBehavior, params};

use super::{Writer, backend};
use crate::engine::group_by_tenant;
use crate::sqlite::journal::Frame;

/// One tenant's records of one frame, with the frame's number.
type FrameGroup<'a> = (i64, Vec<&'a AuditRecord>);

/// Most records an ingestion chains into one segment: a tenant's records of the whole batch,
/// whatever frames they came in, are packed into segments this large (as large as the group
/// committer's largest shared commit). A frame per segment made segments of a dozen records
/// when reads came from 64 connections, and their per-segment work (the head, the segment and
/// key rows, the compressor's call) cost more than the records' own.
const SEGMENT_RECORDS: usize = 512;

impl Writer {
    /// Chains journaled `frames` (any tenants) into the trail, each tenant's inside a savepoint
    /// of its own, after the records held back for it, and moves the journal's watermark to
    /// `through`, in one transaction (see `sqlite/journal.rs`). A tenant whose records cannot
    /// be chained (its chain is damaged) has them held back in `audit_journal_held` instead
    /// and is returned with the reason. An error means nothing was written. The caller holds
    /// the store's write lock.
    pub(crate) fn ingest(
        &self,
        frames: &[Frame],
        through: u64,
    ) -> StoreResult<Vec<(TenantId, StoreError)>> {
        let through = i64::try_from(through)
            .map_err(|_| StoreError::Backend("audit journal frame out of range".to_owned()))?;
        let mut connection = self.connection()?;
        let mut tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        // Each tenant's records, frame by frame, after the tenants with records held back.
        let mut tenants: Vec<(TenantId, Vec<FrameGroup>)> = held_tenants(&tx)?
            .into_iter()
            .map(|tenant| (tenant, Vec::new()))
            .collect();
        let mut position: HashMap<TenantId, usize> = tenants
            .iter()
            .enumerate()
            .map(|(index, (tenant, _))| (*tenant, index))
            .collect();
        for (frame, records) in frames {
            let frame = i64::try_from(*frame)
                .map_err(|_| StoreError::Backend("audit journal frame out of range".to_owned()))?;
            for (tenant, group) in group_by_tenant(records) {
                let index = *position.entry(tenant).or_insert_with(|| {
                    tenants.push((tenant, Vec::new()));
                    tenants.len() - 1
                });
                tenants[index].1.push((frame, group));
            }
        }
        let mut failed = Vec::new();
        for (tenant, groups) in &tenants {
            let tenant_bytes = tenant.as_uuid().into_bytes();
            let held = held_records(&tx, *tenant)?;
            // Dropped without `commit`, the savepoint rolls back.
            let savepoint = tx.savepoint().map_err(backend)?;
            // In order: what was held back, then this batch's frames.
            let records: Vec<&AuditRecord> = held
                .iter()
                .flatten()
                .chain(groups.iter().flat_map(|(_, group)| group.iter().copied()))
                .collect();
            let chained = records
                .chunks(SEGMENT_RECORDS)
                .try_for_each(|segment| self.append_chained(&savepoint, *tenant, segment))
                .and_then(|()| {
                    savepoint
                        .execute(
                            "DELETE FROM audit_journal_held WHERE tenant_id = ?1",
                            params![tenant_bytes],
                        )
                        .map_err(backend)
                });
            match chained {
                Ok(_) => savepoint.commit().map_err(backend)?,
                Err(error) => {
                    drop(savepoint);
                    // SQLite abandons the whole transaction on some errors (a full disk, I/O):
                    // then nothing of the batch is written, and what follows would commit on
                    // its own, the watermark among it.
                    if tx.is_autocommit() {
                        return Err(error);
                    }
                    for (frame, group) in groups {
                        let records = serde_json::to_vec(group).map_err(|error| {
                            StoreError::Backend(format!("audit record not serialisable: {error}"))
                        })?;
                        tx.execute(
                            "INSERT INTO audit_journal_held (tenant_id, frame, records) \
                             VALUES (?1, ?2, ?3)",
                            params![tenant_bytes, frame, records],
                        )
                        .map_err(backend)?;
                    }
                    failed.push((*tenant, error));
                }
            }
        }
        let moved = tx
            .execute(
                "UPDATE audit_journal SET through_frame = ?1 WHERE id = 1 AND through_frame <= ?1",
                params![through],
            )
            .map_err(backend)?;
        if moved != 1 {
            return Err(StoreError::Backend(
                "the audit journal's watermark is missing or ahead of the journal".to_owned(),
            ));
        }
        tx.commit().map_err(backend)?;
        Ok(failed)
    }

    /// The tenants with journaled records held back (see [`Writer::ingest`]).
    pub(crate) fn held_back_tenants(&self) -> StoreResult<Vec<TenantId>> {
        held_tenants(&*self.connection()?)
    }

    /// The last journal frame the database holds.
    pub(crate) fn journal_watermark(&self) -> StoreResult<u64> {
        let through: i64 = self
            .connection()?
            .query_row(
                "SELECT through_frame FROM audit_journal WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .map_err(backend)?;
        u64::try_from(through).map_err(|_| {
            StoreError::Backend("the audit journal's watermark is negative".to_owned())
        })
    }
}

/// The tenants with journaled records held back (see [`Writer::ingest`]).
fn held_tenants(connection: &Connection) -> StoreResult<Vec<TenantId>> {
    let mut statement = connection
        .prepare_cached("SELECT DISTINCT tenant_id FROM audit_journal_held")
        .map_err(backend)?;
    let rows = statement
        .query_map([], |row| row.get::<_, [u8; 16]>(0))
        .map_err(backend)?;
    rows.map(|row| {
        row.map(|bytes| TenantId::from_uuid(uuid::Uuid::from_bytes(bytes)))
            .map_err(backend)
    })
    .collect()
}

/// A tenant's held-back records, frame by frame, oldest first.
fn held_records(connection: &Connection, tenant: TenantId) -> StoreResult<Vec<Vec<AuditRecord>>> {
    let mut statement = connection
        .prepare_cached(
            "SELECT records FROM audit_journal_held WHERE tenant_id = ?1 ORDER BY frame",
        )
        .map_err(backend)?;
    let rows = statement
        .query_map(params![tenant.as_uuid().into_bytes()], |row| {
            row.get::<_, Vec<u8>>(0)
        })
        .map_err(backend)?;
    rows.map(|row| {
        let bytes = row.map_err(backend)?;
        serde_json::from_slice(&bytes).map_err(|error| {
            StoreError::Backend(format!("held-back audit records are unreadable: {error}"))
        })
    })
    .collect()
}
