//! The audit journal: where the group committer makes read records durable on SQLite.
//!
//! A record of a read (or search, or refusal) must be durable before the data leaves (DESIGN
//! promise 4). Committing it to the database costs a transaction per shared commit: its search
//! keys, a segment, the head, dozens of pages written to the WAL, and every read connection's
//! page cache reset by the commit. Measured at 256 tasks, that put a durable read at 73–81 µs
//! of CPU against 34 µs with a bare in-memory append (bench/notes.md, 2026-11-30).
//!
//! So each shared commit is appended instead as one *frame* to a file in a directory beside the
//! database, and the file is synced (`fdatasync`) before anyone is answered. About every
//! [`super::INGEST_EVERY`] the store chains everything journaled into the trail in one
//! transaction, which also moves the *watermark* (`audit_journal.through_frame`, the last frame
//! the database holds). Each frame's records of one tenant become one segment, as the shared
//! commit's did before. Records of writes do not pass through here: they commit with their
//! write, after the journal is chained (so that within the process the chain keeps the order
//! in which things happened).
//!
//! **A tenant that cannot be chained** (its chain is damaged) does not hold up the others: each
//! tenant is chained in a savepoint of its own, and the records of one that fails are kept in
//! `audit_journal_held`, unchained, in the same transaction. Its later appends are refused until
//! an ingestion chains what it held (every ingestion tries). If the transaction itself fails (a
//! full disk), nothing moves: the frames stay pending and in their files, and the appends of
//! every tenant in them are refused until an ingestion succeeds.
//!
//! **Frames.** A header (magic `CVJ1`, the frame number as u64 LE, the payload length as u32
//! LE, the SHA-256 of number and payload) and the payload, the frame's records as a JSON
//! array. Frame numbers rise by one from frame to frame across files; a frame whose write or
//! sync failed was not acknowledged, and its number is written again, in a new file.
//!
//! **Files.** Each ingestion starts a new file (created and its directory synced before the
//! first frame goes to it) and deletes the ones it ingested once its transaction commits. If
//! the process dies between the two, the next open reads frames at or below the watermark
//! again and skips them.
//!
//! **Recovery.** Opening reads every file in order. A damaged frame ends its file: the last
//! frame of the newest file may be torn by a crash mid-write, and was then never acknowledged.
//! Anything else missing shows as a gap in the frame numbers above the watermark, and the
//! store refuses to open rather than lose records it acknowledged.
//!
//! **One process.** The journal belongs to the process holding the lock on `lock` in its
//! directory (the server). Another process opening the same database (the CLI while the server
//! runs) gets no journal: its appends commit to the database as before, and it waits once for
//! the server to chain what it had journaled before it reads the trail.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use carevault_crypto::sha256_parts;
use carevault_domain::audit::AuditRecord;
use carevault_domain::store::{StoreError, StoreResult};

const MAGIC: &[u8; 4] = b"CVJ1";
/// Magic, frame number, payload length, checksum.
const HEADER: usize = 4 + 8 + 4 + 32;
/// The largest payload read back: far above a shared commit's (512 records of a few hundred
/// bytes), and a bound on what a damaged length can make recovery allocate.
const MAX_PAYLOAD: usize = 64 << 20;
const SUFFIX: &str = ".frames";
/// While frames are left over from an ingestion that could not write (the database refused the
/// transaction), the files holding them are kept, and new frames go on to the current file
/// until it holds this much.
const KEPT_FILE_BYTES: u64 = 64 << 20;

/// The journal directory of the database at `database`.
pub(crate) fn directory_of(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".audit-journal");
    PathBuf::from(name)
}

pub(crate) struct Journal {
    directory: PathBuf,
    /// Held (locked) for the journal's life.
    _lock: File,
    state: Mutex<State>,
}

struct State {
    /// The file frames are appended to; `None` after a failed write, until the next append
    /// starts a new one (a partly written frame must be the last of its file).
    file: Option<File>,
    /// The number of the newest file, and the bytes appended to it.
    file_number: u64,
    file_bytes: u64,
    next_frame: u64,
    /// Frames journaled and not yet ingested, oldest first; the number of their records; the
    /// newest frame's number.
    pending: Vec<Frame>,
    pending_records: usize,
    pending_through: u64,
    /// Files whose frames are all in `pending` or ingested, to delete after an ingestion.
    retired: Vec<PathBuf>,
}

/// One frame: its number and its records (one shared commit's, of any tenants).
pub(crate) type Frame = (u64, Vec<AuditRecord>);

/// What one ingestion takes: every frame pending when it began.
pub(crate) struct Batch {
    pub(crate) frames: Vec<Frame>,
    /// The newest frame among them: the new watermark.
    pub(crate) through: u64,
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Backend(format!(
        "audit journal: cannot {what} {}: {error}",
        path.display()
    ))
}

impl Journal {
    /// Opens the journal of `database`, whose database holds every frame through
    /// `watermark`. Returns `None` when another process holds it. Frames found in the files
    /// past the watermark are pending: the caller ingests them before serving.
    pub(crate) fn open(database: &Path, watermark: u64) -> StoreResult<Option<Journal>> {
        let directory = directory_of(database);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&directory)
            .map_err(|error| io_error("create", &directory, error))?;
        let lock_path = directory.join("lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|error| io_error("open", &lock_path, error))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(error)) => return Err(io_error("lock", &lock_path, error)),
        }
        let files = journal_files(&directory)?;
        let mut frames: Vec<(u64, Vec<AuditRecord>)> = Vec::new();
        for (index, (_, path)) in files.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(|error| io_error("read", path, error))?;
            let (found, damaged_at) = read_frames(&bytes);
            if let Some(offset) = damaged_at {
                let why = if index + 1 == files.len() {
                    "a crash while it was written"
                } else {
                    "a failed write, retried in the next file"
                };
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    "an audit journal file ends in a partly written frame ({why}); it was never \
                     acknowledged and is dropped"
                );
            }
            for (frame, records) in found {
                let through = frames.last().map_or(watermark, |(last, _)| *last);
                if frame <= watermark {
                    continue;
                }
                match frames.last_mut() {
                    // A frame whose sync failed is written again, under its number, in a
                    // later file: the later one is the one acknowledged.
                    Some(last) if last.0 == frame => last.1 = records,
                    _ if frame == through + 1 => frames.push((frame, records)),
                    _ => {
                        return Err(StoreError::Backend(format!(
                            "the audit journal in {} is missing frame {} (found {frame} in \
                             {}): read records acknowledged to clients would be lost. Keep \
                             the directory for investigation, move it aside, and start again \
                             to continue without them",
                            directory.display(),
                            through + 1,
                            path.display()
                        )));
                    }
                }
            }
        }
        let through = frames.last().map_or(watermark, |(last, _)| *last);
        let pending = frames;
        let file_number = files.last().map_or(0, |(number, _)| *number) + 1;
        let mut retired: Vec<PathBuf> = files.into_iter().map(|(_, path)| path).collect();
        if pending.is_empty() {
            // Everything in them is in the database: nothing to keep for.
            delete_ingested(retired.drain(..));
        }
        let file = create_file(&directory, file_number)?;
        Ok(Some(Journal {
            directory,
            _lock: lock,
            state: Mutex::new(State {
                file: Some(file),
                file_number,
                file_bytes: 0,
                next_frame: through + 1,
                pending_records: pending.iter().map(|(_, records)| records.len()).sum(),
                pending,
                pending_through: through,
                retired,
            }),
        }))
    }

    fn state(&self) -> StoreResult<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| StoreError::Backend("the audit journal is poisoned".to_owned()))
    }

    /// Appends `records` as one frame and syncs it: on `Ok` they are durable.
    pub(crate) fn append(&self, records: &[AuditRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut state = self.state()?;
        let frame = state.next_frame;
        let bytes = encode_frame(frame, records)?;
        if state.file.is_none() {
            self.start_file(&mut state)?;
        }
        let written = match state.file.as_mut() {
            Some(file) => file.write_all(&bytes).and_then(|()| file.sync_data()),
            None => Err(std::io::Error::other("no journal file")),
        };
        if let Err(error) = written {
            // The frame may be partly on disk: the next append starts a new file.
            state.file = None;
            return Err(io_error(
                "append to",
                &self.path_of(state.file_number),
                error,
            ));
        }
        state.next_frame += 1;
        state.file_bytes += bytes.len() as u64;
        state.pending.push((frame, records.to_vec()));
        state.pending_records += records.len();
        state.pending_through = frame;
        Ok(())
    }

    /// Records journaled and not yet ingested.
    pub(crate) fn pending(&self) -> usize {
        self.state().map_or(0, |state| state.pending_records)
    }

    /// Takes every pending frame for ingestion (none when nothing is pending: an ingestion
    /// that only retries records held back). Taking frames starts a new file, so that the ones
    /// taken can be deleted once ingested ([`Journal::finish`]), unless files are kept already
    /// for frames an earlier ingestion could not write and the current one is still small.
    /// Files are created under the lock, so their numbers follow the order frames reach them.
    pub(crate) fn take(&self) -> StoreResult<Batch> {
        let mut state = self.state()?;
        if !state.pending.is_empty()
            && (state.retired.is_empty() || state.file_bytes >= KEPT_FILE_BYTES)
        {
            self.start_file(&mut state)?;
        }
        state.pending_records = 0;
        Ok(Batch {
            frames: std::mem::take(&mut state.pending),
            through: state.pending_through,
        })
    }

    /// Retires the current file and starts the next.
    fn start_file(&self, state: &mut State) -> StoreResult<()> {
        let number = state.file_number + 1;
        let file = create_file(&self.directory, number)?;
        let previous = self.path_of(state.file_number);
        state.retired.push(previous);
        state.file_number = number;
        state.file = Some(file);
        state.file_bytes = 0;
        Ok(())
    }

    /// After an ingestion: `left` are the frames of the batch that are not in the database (all
    /// of them if its transaction failed, none if it committed); they are pending again, ahead
    /// of any appended since. When none are left, the files the batch came from are deleted.
    pub(crate) fn finish(&self, left: Vec<Frame>) {
        let retired = match self.state() {
            Ok(mut state) if left.is_empty() => std::mem::take(&mut state.retired),
            Ok(mut state) => {
                state.pending_records +=
                    left.iter().map(|(_, records)| records.len()).sum::<usize>();
                let newer = std::mem::replace(&mut state.pending, left);
                state.pending.extend(newer);
                return;
            }
            Err(_) => return,
        };
        delete_ingested(retired);
    }

    fn path_of(&self, number: u64) -> PathBuf {
        file_path(&self.directory, number)
    }
}

/// In a process without the journal (the CLI beside the server): waits until the holder has
/// chained every frame journaled so far, that is, until each journal file that holds frames now
/// has been deleted, at most `limit`. Returns whether it had to give up.
pub(crate) async fn wait_for_holder(database: &Path, limit: std::time::Duration) -> bool {
    let directory = directory_of(database);
    let holding = |path: &Path| std::fs::metadata(path).is_ok_and(|metadata| metadata.len() > 0);
    let mut waiting: Vec<PathBuf> = journal_files(&directory)
        .map(|files| files.into_iter().map(|(_, path)| path).collect())
        .unwrap_or_default();
    let deadline = std::time::Instant::now() + limit;
    loop {
        waiting.retain(|path| holding(path));
        if waiting.is_empty() {
            return false;
        }
        if std::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Deletes journal files whose frames are all in the database. A file left behind is read
/// again at the next open, and skipped: its frames are at or below the watermark.
fn delete_ingested(paths: impl IntoIterator<Item = PathBuf>) {
    for path in paths {
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), %error, "an ingested audit journal file could not be deleted");
        }
    }
}

fn file_path(directory: &Path, number: u64) -> PathBuf {
    directory.join(format!("{number:020}{SUFFIX}"))
}

/// One frame: header and payload.
fn encode_frame(frame: u64, records: &[AuditRecord]) -> StoreResult<Vec<u8>> {
    let payload = serde_json::to_vec(records)
        .map_err(|error| StoreError::Backend(format!("audit record not serialisable: {error}")))?;
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length as usize <= MAX_PAYLOAD)
        .ok_or_else(|| StoreError::Backend("audit journal frame too large".to_owned()))?;
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&frame.to_le_bytes());
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&checksum(frame, &payload));
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

fn checksum(frame: u64, payload: &[u8]) -> [u8; 32] {
    sha256_parts(&[MAGIC, &frame.to_le_bytes(), payload])
}

/// Creates journal file `number` (0600) and syncs the directory, so the file survives a crash
/// along with the frames synced to it.
fn create_file(directory: &Path, number: u64) -> StoreResult<File> {
    let path = file_path(directory, number);
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| io_error("create", &path, error))?;
    File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| io_error("sync the directory of", &path, error))?;
    Ok(file)
}

/// The journal files in `directory`, oldest first.
fn journal_files(directory: &Path) -> StoreResult<Vec<(u64, PathBuf)>> {
    let entries =
        std::fs::read_dir(directory).map_err(|error| io_error("list", directory, error))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", directory, error))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|name| name.strip_suffix(SUFFIX))
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        files.push((number, entry.path()));
    }
    files.sort_unstable();
    Ok(files)
}

/// The whole frames at the start of `bytes`, and the offset of the first damaged one, if any.
fn read_frames(bytes: &[u8]) -> (Vec<(u64, Vec<AuditRecord>)>, Option<usize>) {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match read_frame(&bytes[offset..]) {
            Some((frame, records, size)) => {
                frames.push((frame, records));
                offset += size;
            }
            None => return (frames, Some(offset)),
        }
    }
    (frames, None)
}

/// One frame at the start of `bytes`: its number, records and size.
fn read_frame(bytes: &[u8]) -> Option<(u64, Vec<AuditRecord>, usize)> {
    let header = bytes.get(..HEADER)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let frame = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let length = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    if length > MAX_PAYLOAD {
        return None;
    }
    let payload = bytes.get(HEADER..HEADER + length)?;
    if checksum(frame, payload) != header[16..HEADER] {
        return None;
    }
    let records = serde_json::from_slice(payload).ok()?;
    Some((frame, records, HEADER + length))
}

#[cfg(test)]
mod store_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use carevault_domain::ids::TenantId;

    fn record(detail: &str) -> AuditRecord {
        crate::sqlite::test_support::record(TenantId::platform(), "read", detail)
    }

    fn details(batch: &Batch) -> Vec<String> {
        batch
            .frames
            .iter()
            .flat_map(|(_, records)| records)
            .map(|record| record.detail.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn frames_survive_reopening_and_ingested_frames_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("db.sqlite");
        let journal = Journal::open(&database, 0).unwrap().unwrap();
        journal.append(&[record("a"), record("b")]).unwrap();
        journal.append(&[record("c")]).unwrap();
        drop(journal);

        let journal = Journal::open(&database, 0).unwrap().unwrap();
        let batch = journal.take().unwrap();
        assert_eq!(details(&batch), ["a", "b", "c"]);
        assert_eq!(batch.through, 2);
        drop(journal);

        // The watermark says frame 1 is in the trail: only frame 2 is pending.
        let journal = Journal::open(&database, 1).unwrap().unwrap();
        let batch = journal.take().unwrap();
        assert_eq!(details(&batch), ["c"]);
        journal.finish(Vec::new());
        journal.append(&[record("d")]).unwrap();
        drop(journal);
        let journal = Journal::open(&database, 2).unwrap().unwrap();
        let batch = journal.take().unwrap();
        assert_eq!(details(&batch), ["d"]);
        assert_eq!(batch.through, 3);
    }

    #[test]
    fn a_second_opener_gets_no_journal() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("db.sqlite");
        let first = Journal::open(&database, 0).unwrap();
        assert!(first.is_some());
        assert!(Journal::open(&database, 0).unwrap().is_none());
        drop(first);
        assert!(Journal::open(&database, 0).unwrap().is_some());
    }

    #[test]
    fn a_torn_last_frame_is_dropped_and_a_lost_frame_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("db.sqlite");
        let journal = Journal::open(&database, 0).unwrap().unwrap();
        journal.append(&[record("a")]).unwrap();
        journal.append(&[record("b")]).unwrap();
        drop(journal);
        let (_, path) = journal_files(&directory_of(&database))
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        let whole = std::fs::read(&path).unwrap();

        // Cut inside the second frame: a crash while it was written.
        std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
        let journal = Journal::open(&database, 0).unwrap().unwrap();
        assert_eq!(details(&journal.take().unwrap()), ["a"]);
        drop(journal);

        // A flipped byte in the first frame of two: the second was acknowledged and is lost.
        for file in journal_files(&directory_of(&database)).unwrap() {
            std::fs::remove_file(file.1).unwrap();
        }
        let mut flipped = whole.clone();
        flipped[HEADER + 3] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        // The second frame, alone in a later file, after the damaged first.
        let (frames, damaged) = read_frames(&whole);
        assert_eq!((frames.len(), damaged), (2, None));
        let first_size = read_frame(&whole).unwrap().2;
        let later = file_path(&directory_of(&database), 99);
        std::fs::write(&later, &whole[first_size..]).unwrap();
        let error = Journal::open(&database, 0).err().unwrap();
        assert!(error.to_string().contains("missing frame 1"), "{error}");
        // Once frame 1 is in the trail, the rest opens.
        let journal = Journal::open(&database, 1).unwrap().unwrap();
        assert_eq!(details(&journal.take().unwrap()), ["b"]);
    }

    #[test]
    fn a_frame_written_again_in_a_later_file_replaces_the_unacknowledged_one() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("db.sqlite");
        let directory = directory_of(&database);
        std::fs::create_dir_all(&directory).unwrap();
        let mut first = encode_frame(1, &[record("a")]).unwrap();
        first.extend(encode_frame(2, &[record("unacknowledged")]).unwrap());
        std::fs::write(file_path(&directory, 1), first).unwrap();
        let mut second = encode_frame(2, &[record("b")]).unwrap();
        second.extend(encode_frame(3, &[record("c")]).unwrap());
        std::fs::write(file_path(&directory, 2), second).unwrap();
        let journal = Journal::open(&database, 0).unwrap().unwrap();
        let batch = journal.take().unwrap();
        assert_eq!(details(&batch), ["a", "b", "c"]);
        assert_eq!(batch.through, 3);
    }

    #[test]
    fn a_failed_ingestion_puts_its_records_back_ahead_of_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("db.sqlite");
        let journal = Journal::open(&database, 0).unwrap().unwrap();
        journal.append(&[record("a")]).unwrap();
        let batch = journal.take().unwrap();
        journal.append(&[record("b")]).unwrap();
        journal.finish(batch.frames);
        assert_eq!(journal.pending(), 2);
        let batch = journal.take().unwrap();
        assert_eq!(details(&batch), ["a", "b"]);
        assert_eq!(batch.through, 2);
        journal.finish(Vec::new());
        assert!(journal.take().unwrap().frames.is_empty());
        // Only the file appends go to now is left.
        assert_eq!(journal_files(&directory_of(&database)).unwrap().len(), 1);
    }
}
