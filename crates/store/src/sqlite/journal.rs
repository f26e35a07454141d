//! The audit journal: where the group committer makes read records durable on SQLite.
//!
//! A record of a read (or search, or refusal) must be durable before the data leaves (DESIGN
//! promise 4). Committing it to the database costs a transaction per shared commit: its search
//! keys, a segment, the head, dozens of pages written to the WAL, and every read connection's
//! page cache reset by the commit. Measured at 256 tasks, that put a durable read at 73–81 µs
//! of CPU against 34 µs with a bare in-memory append (bench/notes.md, 2026-11-30).
//!
//! So each shared commit is appended instead as one *frame* to a file in a directory beside the
//! database, and made durable (see **Files**) before anyone is answered. About every
//! [`super::INGEST_EVERY`] the store chains everything journaled into the trail in one
//! transaction, which also moves the *watermark* (`audit_journal.through_frame`, the last frame
//! the database holds). A tenant's records of the whole ingestion, whatever frames they came in,
//! are packed into segments of up to 512 (a frame's records alone made segments of a dozen
//! records from 64 connections). Records of writes do not pass through here: they commit with
//! their write, after the journal is chained (so that within the process the chain keeps the
//! order in which things happened).
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
//! sync failed was not acknowledged, and its number is written again, in a new file. Zeros
//! follow the last frame of a file (every append writes at least a header's worth after its
//! frame), so a reader knows where the frames end.
//!
//! **Files.** Each ingestion starts a new file (its directory synced and its first block
//! cleared before the first frame goes to it), as does an append that would pass
//! [`FILE_BYTES`]. Files are [`FILE_BYTES`] long from the start (sparse) and used again, so
//! that, after a file's first use, an append overwrites blocks the file has: its sync then
//! writes the data and a cache flush, and no metadata. Appends are direct, synchronous writes
//! (`O_DIRECT | O_DSYNC`: whole blocks from aligned memory, the last partly filled block
//! written again with the next frame) where the file system allows them, and go through the
//! page cache and `fdatasync` otherwise. Measured on this kind of machine, a synced append of
//! 20 KB took 81–151 µs of CPU growing a file, 52–72 µs overwriting one, and 34–40 µs written
//! directly (`bench/sync-cost`; bench/notes.md, 2026-11-30, fifth). Once an ingestion's
//! transaction commits, the files it ingested become *spares* (`NNN.spare`, at most
//! [`SPARES`]; more are deleted) and are used again, so files are created rarely. If the
//! process dies before a file is retired, the next open reads its frames, at or below the
//! watermark, and skips them.
//!
//! **Recovery.** Opening reads every file in order, each up to the zeros after its last frame.
//! A damaged frame ends its file: the last frame of the newest file may be torn by a crash
//! mid-write, and was then never acknowledged.
//! Anything else missing shows as a gap in the frame numbers above the watermark, and the
//! store refuses to open rather than lose records it acknowledged.
//!
//! **One process.** The journal belongs to the process holding the lock on `lock` in its
//! directory (the server). Another process opening the same database (the CLI while the server
//! runs) gets no journal: its appends commit to the database as before, and it waits once for
//! the server to chain what it had journaled before it reads the trail.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
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
/// Ingested files kept to be used again.
const SPARE_SUFFIX: &str = ".spare";
/// The length a journal file is created with: at the rate of the in-process read benchmark
/// (about 60,000 records a second, some 450 bytes each) a quarter-second's frames fit about
/// twice.
const FILE_BYTES: u64 = 16 << 20;
/// Ingested files kept as spares; more are deleted.
const SPARES: usize = 2;
/// Direct I/O writes whole blocks, at block offsets, from block-aligned memory.
const BLOCK: usize = 4096;

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
    /// Whether appends are direct, synchronous writes; where the file system refuses direct
    /// I/O, they go through the page cache and `fdatasync`.
    direct: bool,
    state: Mutex<State>,
}

struct State {
    /// The file frames are appended to; `None` after a failed write, until the next append
    /// starts a new one (a partly written frame must be the last of its file).
    file: Option<File>,
    /// The number of the newest file, and where its next frame goes (the end of its last).
    file_number: u64,
    end: u64,
    /// With direct I/O: the bytes of the current file's last, partly filled block, up to
    /// `end`, written again with the next frame.
    tail: Vec<u8>,
    /// What an append writes from, kept between appends.
    buffer: Vec<u8>,
    next_frame: u64,
    /// Frames journaled and not yet ingested, oldest first; the number of their records; the
    /// newest frame's number.
    pending: Vec<Frame>,
    pending_records: usize,
    pending_through: u64,
    /// Whether frames taken by an ingestion are not yet in the database or pending again.
    taken: bool,
    /// Files whose frames are all in `pending` or ingested, to retire after an ingestion.
    retired: Vec<PathBuf>,
    /// Ingested files waiting to be used again, and the number the next one is named by.
    spares: Vec<PathBuf>,
    next_spare: u64,
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
        Journal::open_with(database, watermark, true)
    }

    /// [`Journal::open`], with direct I/O only if `direct` (tests try both ways of writing).
    fn open_with(database: &Path, watermark: u64, direct: bool) -> StoreResult<Option<Journal>> {
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
        let files = journal_files(&directory, SUFFIX)?;
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
        // Everything in them is in the database: nothing to keep them for.
        let ingested = if pending.is_empty() {
            std::mem::take(&mut retired)
        } else {
            Vec::new()
        };
        let spares = journal_files(&directory, SPARE_SUFFIX)?;
        let next_spare = spares.last().map_or(0, |(number, _)| *number) + 1;
        let mut spares: Vec<PathBuf> = spares.into_iter().map(|(_, path)| path).collect();
        let path = file_path(&directory, file_number);
        prepare_file(&directory, &path, &mut spares)?;
        // Direct I/O where the file system allows it: opening the file and clearing its head
        // is what one without it refuses (`InvalidInput`).
        let (file, direct) = match direct.then(|| open_file(&path, true)) {
            Some(Ok(file)) => (file, true),
            Some(Err(error)) if error.kind() != ErrorKind::InvalidInput => {
                return Err(io_error("open", &path, error));
            }
            refused => {
                if refused.is_some() {
                    tracing::info!(
                        directory = %directory.display(),
                        "the file system refuses direct I/O: the audit journal is synced with \
                         fdatasync"
                    );
                }
                let file =
                    open_file(&path, false).map_err(|error| io_error("open", &path, error))?;
                (file, false)
            }
        };
        let journal = Journal {
            directory,
            _lock: lock,
            direct,
            state: Mutex::new(State {
                file: Some(file),
                file_number,
                end: 0,
                tail: Vec::new(),
                buffer: Vec::new(),
                next_frame: through + 1,
                pending_records: pending.iter().map(|(_, records)| records.len()).sum(),
                pending,
                pending_through: through,
                taken: false,
                retired,
                spares,
                next_spare,
            }),
        };
        journal.retire(ingested);
        // A spare ready for the first ingestion, so that it does not write one while appends
        // wait.
        journal.replenish();
        Ok(Some(journal))
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
        let needed = (bytes.len() + HEADER) as u64;
        if state.file.is_none() || (state.end > 0 && state.end + needed > FILE_BYTES) {
            self.start_file(&mut state)?;
        }
        if let Err(error) = self.write_frame(&mut state, &bytes) {
            // The frame may be partly on disk: the next append starts a new file.
            state.file = None;
            return Err(io_error(
                "append to",
                &self.path_of(state.file_number),
                error,
            ));
        }
        state.next_frame += 1;
        state.pending.push((frame, records.to_vec()));
        state.pending_records += records.len();
        state.pending_through = frame;
        Ok(())
    }

    /// Writes `frame` (encoded) at the end of the current file, followed by zeros, and makes
    /// it durable.
    fn write_frame(&self, state: &mut State, frame: &[u8]) -> std::io::Result<()> {
        let State {
            file,
            end,
            tail,
            buffer,
            ..
        } = state;
        let Some(file) = file.as_ref() else {
            return Err(std::io::Error::other("no journal file"));
        };
        let written = if self.direct {
            // From the start of the last, partly filled block, in whole blocks.
            let lead = tail.len();
            let length = (lead + frame.len() + HEADER).div_ceil(BLOCK) * BLOCK;
            let window = aligned_zeros(buffer, length)?;
            window[..lead].copy_from_slice(tail);
            window[lead..lead + frame.len()].copy_from_slice(frame);
            file.write_all_at(window, *end - lead as u64)?;
            let through = lead + frame.len();
            let partial = ((*end + frame.len() as u64) % BLOCK as u64) as usize;
            tail.clear();
            tail.extend_from_slice(&window[through - partial..through]);
            Ok(())
        } else {
            buffer.clear();
            buffer.extend_from_slice(frame);
            buffer.resize(frame.len() + HEADER, 0);
            file.write_all_at(buffer, *end)
                .and_then(|()| file.sync_data())
        };
        if written.is_ok() {
            *end += frame.len() as u64;
        }
        written
    }

    /// Whether a record journaled and not yet in the database satisfies `test`: a pending one,
    /// or any at all while an ingestion has frames taken (they are in neither place to look).
    pub(crate) fn any_unchained(&self, test: impl Fn(&AuditRecord) -> bool) -> bool {
        self.state().map_or(true, |state| {
            state.taken
                || state
                    .pending
                    .iter()
                    .any(|(_, records)| records.iter().any(&test))
        })
    }

    /// Records journaled and not yet ingested.
    pub(crate) fn pending(&self) -> usize {
        self.state().map_or(0, |state| state.pending_records)
    }

    /// Takes every pending frame for ingestion (none when nothing is pending: an ingestion
    /// that only retries records held back). Taking frames starts a new file, so that the ones
    /// taken can be retired once ingested ([`Journal::finish`]), unless files are kept already
    /// for frames an earlier ingestion could not write (then the current file goes on until it
    /// is full). Files are started under the lock, so their numbers follow the order frames
    /// reach them.
    pub(crate) fn take(&self) -> StoreResult<Batch> {
        let mut state = self.state()?;
        if !state.pending.is_empty() && state.retired.is_empty() {
            self.start_file(&mut state)?;
        }
        state.pending_records = 0;
        state.taken = !state.pending.is_empty();
        Ok(Batch {
            frames: std::mem::take(&mut state.pending),
            through: state.pending_through,
        })
    }

    /// Retires the current file and starts the next: a spare renamed, or a new file.
    fn start_file(&self, state: &mut State) -> StoreResult<()> {
        let number = state.file_number + 1;
        let path = self.path_of(number);
        prepare_file(&self.directory, &path, &mut state.spares)?;
        let file = open_file(&path, self.direct).map_err(|error| io_error("open", &path, error))?;
        let previous = self.path_of(state.file_number);
        state.retired.push(previous);
        state.file_number = number;
        state.file = Some(file);
        state.end = 0;
        state.tail.clear();
        Ok(())
    }

    /// After an ingestion: `left` are the frames of the batch that are not in the database (all
    /// of them if its transaction failed, none if it committed); they are pending again, ahead
    /// of any appended since. When none are left, the files the batch came from are retired
    /// (kept as spares, or deleted).
    pub(crate) fn finish(&self, left: Vec<Frame>) {
        let retired = match self.state() {
            Ok(mut state) if left.is_empty() => {
                state.taken = false;
                std::mem::take(&mut state.retired)
            }
            Ok(mut state) => {
                state.taken = false;
                state.pending_records +=
                    left.iter().map(|(_, records)| records.len()).sum::<usize>();
                let newer = std::mem::replace(&mut state.pending, left);
                state.pending.extend(newer);
                return;
            }
            Err(_) => return,
        };
        self.retire(retired);
        self.replenish();
    }

    /// Keeps files whose frames are all in the database as spares, up to [`SPARES`] of full
    /// length, and deletes the rest. Renamed or deleted, a file no longer counts as holding
    /// frames ([`wait_for_holder`]); if a crash undoes the rename, the next open reads its
    /// frames again and skips them.
    fn retire(&self, paths: Vec<PathBuf>) {
        for path in paths {
            let full = std::fs::metadata(&path).is_ok_and(|metadata| metadata.len() >= FILE_BYTES);
            let spare = match self.state() {
                Ok(mut state) if full && state.spares.len() < SPARES => {
                    let number = state.next_spare;
                    state.next_spare += 1;
                    Some(spare_path(&self.directory, number))
                }
                _ => None,
            };
            let kept = spare.and_then(|spare| match std::fs::rename(&path, &spare) {
                Ok(()) => Some(spare),
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "an ingested audit journal file could not be kept as a spare");
                    None
                }
            });
            match (kept, self.state()) {
                (Some(spare), Ok(mut state)) => state.spares.push(spare),
                (Some(_), Err(_)) => {}
                (None, _) => delete_ingested([path]),
            }
        }
    }

    /// Creates a spare when none is kept, outside the lock, so that the next file is started
    /// without appends waiting for it to be created and synced.
    fn replenish(&self) {
        let number = match self.state() {
            Ok(mut state) if state.spares.is_empty() => {
                state.next_spare += 1;
                state.next_spare - 1
            }
            _ => return,
        };
        let path = spare_path(&self.directory, number);
        match create_sized(&path) {
            Ok(()) => {
                if let Ok(mut state) = self.state() {
                    state.spares.push(path);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "a spare audit journal file could not be created");
                delete_ingested([path]);
            }
        }
    }

    fn path_of(&self, number: u64) -> PathBuf {
        file_path(&self.directory, number)
    }
}

/// In a process without the journal (the CLI beside the server): waits until the holder has
/// chained every frame journaled so far, that is, until each journal file that holds frames now
/// has been retired (renamed to a spare, or deleted), at most `limit`. Returns whether it had to
/// give up.
pub(crate) async fn wait_for_holder(database: &Path, limit: std::time::Duration) -> bool {
    let directory = directory_of(database);
    let mut waiting: Vec<PathBuf> = journal_files(&directory, SUFFIX)
        .map(|files| {
            files
                .into_iter()
                .map(|(_, path)| path)
                .filter(|path| holds_frames(path))
                .collect()
        })
        .unwrap_or_default();
    let deadline = std::time::Instant::now() + limit;
    loop {
        waiting.retain(|path| path.exists());
        if waiting.is_empty() {
            return false;
        }
        if std::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Whether journal file `path` holds a frame: a file's first block is cleared when it is put to
/// use, so it starts with zeros until its first frame.
fn holds_frames(path: &Path) -> bool {
    let mut head = [0; 4];
    File::open(path)
        .and_then(|file| file.read_exact_at(&mut head, 0))
        .is_ok_and(|()| head != [0; 4])
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

fn spare_path(directory: &Path, number: u64) -> PathBuf {
    directory.join(format!("{number:020}{SPARE_SUFFIX}"))
}

/// One frame: header and payload, the payload serialised in place after the header.
fn encode_frame(frame: u64, records: &[AuditRecord]) -> StoreResult<Vec<u8>> {
    let mut bytes = Vec::with_capacity(HEADER + records.len() * 512);
    bytes.resize(HEADER, 0);
    serde_json::to_writer(&mut bytes, records)
        .map_err(|error| StoreError::Backend(format!("audit record not serialisable: {error}")))?;
    let payload = &bytes[HEADER..];
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length as usize <= MAX_PAYLOAD)
        .ok_or_else(|| StoreError::Backend("audit journal frame too large".to_owned()))?;
    let sum = checksum(frame, payload);
    bytes[..4].copy_from_slice(MAGIC);
    bytes[4..12].copy_from_slice(&frame.to_le_bytes());
    bytes[12..16].copy_from_slice(&length.to_le_bytes());
    bytes[16..HEADER].copy_from_slice(&sum);
    Ok(bytes)
}

fn checksum(frame: u64, payload: &[u8]) -> [u8; 32] {
    sha256_parts(&[MAGIC, &frame.to_le_bytes(), payload])
}

/// `length` zeros at a block-aligned place in `buffer` (grown as needed), for direct I/O.
fn aligned_zeros(buffer: &mut Vec<u8>, length: usize) -> std::io::Result<&mut [u8]> {
    buffer.clear();
    buffer.resize(length + BLOCK, 0);
    let offset = buffer.as_ptr().align_offset(BLOCK);
    buffer
        .get_mut(offset..offset + length)
        .ok_or_else(|| std::io::Error::other("no block-aligned buffer"))
}

/// Makes journal file `path` ready for its first frame: a spare renamed to it, or a new file;
/// then syncs the directory, so the file survives a crash along with the frames synced
/// to it.
fn prepare_file(directory: &Path, path: &Path, spares: &mut Vec<PathBuf>) -> StoreResult<()> {
    match spares.pop() {
        Some(spare) => std::fs::rename(&spare, path).map_err(|error| {
            delete_ingested([spare]);
            io_error("use a spare as", path, error)
        })?,
        None => create_sized(path).map_err(|error| io_error("create", path, error))?,
    }
    File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| io_error("sync the directory of", path, error))
}

/// Creates `path` (0600), [`FILE_BYTES`] long and synced. The file is sparse: it reads as zeros,
/// and the first frames written over each part of it allocate its blocks (a slower sync, as
/// with a growing file); once it is used again those blocks are overwritten. Writing the zeros
/// out instead would cost every start, and every test, 16 MiB per file.
fn create_sized(path: &Path) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_len(FILE_BYTES)?;
    file.sync_all()
}

/// Opens journal file `path` for appends (direct and synchronous, or through the page cache)
/// and clears its first block, durably: a spare used again holds frames already ingested, and
/// until its own first frame the file reads as holding none.
fn open_file(path: &Path, direct: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true);
    if direct {
        options.custom_flags(libc::O_DIRECT | libc::O_DSYNC);
    }
    let file = options.open(path)?;
    let mut buffer = Vec::new();
    file.write_all_at(aligned_zeros(&mut buffer, BLOCK)?, 0)?;
    if !direct {
        file.sync_data()?;
    }
    Ok(file)
}

/// The journal files (or spares, by `suffix`) in `directory`, oldest first.
fn journal_files(directory: &Path, suffix: &str) -> StoreResult<Vec<(u64, PathBuf)>> {
    let entries =
        std::fs::read_dir(directory).map_err(|error| io_error("list", directory, error))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", directory, error))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|name| name.strip_suffix(suffix))
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        files.push((number, entry.path()));
    }
    files.sort_unstable();
    Ok(files)
}

/// The whole frames at the start of `bytes` (up to the zeros after the last), and the offset of
/// the first damaged one, if any.
fn read_frames(bytes: &[u8]) -> (Vec<(u64, Vec<AuditRecord>)>, Option<usize>) {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        if bytes[offset..].starts_with(&[0; 4]) {
            // The zeros after the last frame.
            break;
        }
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
mod tests;
