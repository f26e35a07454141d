//! The journal's files: frames across reopening, damage, reuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
    let (_, path) = journal_files(&directory_of(&database), SUFFIX)
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let whole = std::fs::read(&path).unwrap();
    // The file keeps its length; zeros follow the frames.
    assert_eq!(whole.len() as u64, FILE_BYTES);
    let (frames, damaged) = read_frames(&whole);
    assert_eq!((frames.len(), damaged), (2, None));
    let first_size = read_frame(&whole).unwrap().2;
    let second_size = read_frame(&whole[first_size..]).unwrap().2;
    assert!(
        whole[first_size + second_size..]
            .iter()
            .all(|byte| *byte == 0)
    );

    // The second frame half written (its start on disk, zeros after): a crash while it
    // was written.
    let mut torn = whole.clone();
    torn[first_size + second_size / 2..].fill(0);
    std::fs::write(&path, &torn).unwrap();
    let journal = Journal::open(&database, 0).unwrap().unwrap();
    assert_eq!(details(&journal.take().unwrap()), ["a"]);
    drop(journal);

    // A flipped byte in the first frame of two: the second was acknowledged and is lost.
    for file in journal_files(&directory_of(&database), SUFFIX).unwrap() {
        std::fs::remove_file(file.1).unwrap();
    }
    let mut flipped = whole.clone();
    flipped[HEADER + 3] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    // The second frame, alone in a later file, after the damaged first.
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
fn ingested_files_are_used_again_and_their_old_frames_stay_behind() {
    // Records longer than a block, so that a used file's old frames reach past the blocks
    // a new frame is written in.
    let long = |detail: &str| record(&format!("{detail}{}", "x".repeat(5_000)));
    for direct in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("db.sqlite");
        let directory = directory_of(&database);
        let journal = Journal::open_with(&database, 0, direct).unwrap().unwrap();
        for (round, detail) in ["a", "b", "c", "d"].into_iter().enumerate() {
            journal.append(&[long(detail), long(detail)]).unwrap();
            journal.append(&[long(detail)]).unwrap();
            assert_eq!(journal.take().unwrap().through, 2 * round as u64 + 2);
            journal.finish(Vec::new());
        }
        // The file appends go to now, a spare used again, holds no frame yet.
        let current = &journal_files(&directory, SUFFIX).unwrap()[0].1;
        let (frames, damaged) = read_frames(&std::fs::read(current).unwrap());
        assert!(frames.is_empty() && damaged.is_none());
        assert!(!holds_frames(current));
        // Frame 9, short, over frames of an earlier round.
        journal.append(&[record("e")]).unwrap();
        assert!(holds_frames(current));
        drop(journal);
        let files = journal_files(&directory, SUFFIX).unwrap();
        let spares = journal_files(&directory, SPARE_SUFFIX).unwrap();
        assert_eq!(files.len(), 1);
        assert!(spares.len() <= SPARES);
        let bytes = std::fs::read(&files[0].1).unwrap();
        let size = read_frame(&bytes).unwrap().2;
        // Zeros after the new frame, and an earlier round's frame still further on.
        assert!(bytes[size..size + HEADER].iter().all(|byte| *byte == 0));
        assert!(bytes[size + HEADER..].iter().any(|byte| *byte != 0));

        let journal = Journal::open_with(&database, 8, direct).unwrap().unwrap();
        assert_eq!(journal.direct, direct);
        assert_eq!(details(&journal.take().unwrap()), ["e"]);
    }
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
    // Only the file appends go to now is left, beside the spares.
    let directory = directory_of(&database);
    assert_eq!(journal_files(&directory, SUFFIX).unwrap().len(), 1);
    assert!(journal_files(&directory, SPARE_SUFFIX).unwrap().len() <= SPARES);
}
