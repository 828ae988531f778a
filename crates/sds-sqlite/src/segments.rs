//! Message bytes outside the database: append-only segment files.
//!
//! A message (~19 KB at default settings) written into SQLite goes through the WAL and again
//! into the database at checkpoint, and drags a leaf and overflow pages through both. Here it
//! is written once, appended to the active segment file of the directory `<database>-messages`;
//! the database row keeps its location, length and CRC-32. Messages are packed end to end,
//! but every write covers whole 4 KiB pages: the partly filled last page is kept in memory and
//! written again, in full, with the next message. So a page is never read back before it is
//! written over (which a partial write of an uncached page costs), and a 1–4 KiB message takes
//! its size on disk, not a page or more (2,000 messages of 1–2 KiB took 2.7 times their size
//! padded to pages). Rewriting the last page writes the same bytes again over those of earlier
//! messages, so a torn write of it cannot change them. Segments rotate at a size limit, are
//! deleted once nothing refers to them, and a mostly-dead segment is compacted (its live
//! messages copied forward) so the directory stays within about twice the live bytes. One
//! emptied segment is kept as a spare and the next segment is written over it: overwriting
//! pages the kernel still caches costs a third of appending new ones (2.8 against 9.6 µs for
//! 19 KB here).
//!
//! Ordering. Bytes are appended before the transaction that refers to them commits, so a
//! process crash never leaves a row pointing at bytes the file does not have (appended bytes
//! whose transaction never committed are garbage, reclaimed with their segment). Against power
//! loss, bytes and the names of new segment files are synced before the rows referring to them
//! can be: with `FULL` before each commit (the directory too when a segment was created or the
//! spare renamed), with `NORMAL` before each checkpoint ([`Unsynced`], synced by every sync
//! round of the store). A segment nothing refers to any more is deleted only once the commit
//! that emptied it is durable (with `NORMAL`, after the next sync round), so a database rolled
//! back by power loss never refers to a deleted file. With `NORMAL`, the kernel may still write
//! WAL pages out before a round syncs the bytes they refer to, so power loss can leave rows of
//! the last moments without their bytes: the CRC and the missing file are detected and reported
//! (see [`crate::damage`]), never misread.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::damage::DamageKind;
use crate::key::{Owner, Seal};

/// Where a message's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seg: u32,
    pub off: u64,
    pub len: u32,
    pub crc: u32,
}

/// Bytes of one segment file.
#[derive(Debug, Default, Clone, Copy)]
struct Seg {
    /// Bytes still referred to by committed rows.
    live: u64,
    /// Size of the file.
    size: u64,
}

#[derive(Debug)]
struct Active {
    id: u32,
    file: Arc<File>,
    /// Where the next message goes.
    size: u64,
    /// The bytes of the partly filled page at the end (from its start up to `size`), written
    /// again with the next message so every write covers whole pages.
    tail: Vec<u8>,
}

/// What of the segment directory may not be on disk yet: shared by the connection thread, which
/// appends and creates, with whoever syncs before a checkpoint.
#[derive(Debug)]
pub(crate) struct Unsynced {
    dir: PathBuf,
    state: Mutex<UnsyncedFiles>,
    /// Held while syncing: a sync that returns has seen every earlier one finish, so what
    /// another took from `state` is on disk too.
    syncing: Mutex<()>,
}

#[derive(Debug, Default)]
struct UnsyncedFiles {
    /// The active segment: synced every time (a sync of a file with nothing new costs next to
    /// nothing), so appending takes no lock.
    active: Option<Arc<File>>,
    /// Segments closed since the last sync, maybe with bytes not yet on disk.
    retired: Vec<Arc<File>>,
    /// A segment file was created or renamed since the directory was last synced.
    names: bool,
}

impl Unsynced {
    /// Syncs the directory's new names and every segment's bytes appended so far. On failure
    /// what was not synced stays marked.
    pub fn sync(&self) -> io::Result<()> {
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let (active, retired, names) = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            (
                s.active.clone(),
                std::mem::take(&mut s.retired),
                std::mem::take(&mut s.names),
            )
        };
        let result = (|| {
            if names {
                sync_dir(&self.dir)?;
            }
            for f in retired.iter().chain(&active) {
                f.sync_data()?;
            }
            Ok(())
        })();
        if result.is_err() {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.retired.extend(retired);
            s.names |= names;
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UnsyncedFiles> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes the entries of directory `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment directory of one database, owned by its connection thread.
#[derive(Debug)]
pub(crate) struct Segments {
    dir: PathBuf,
    limit: u64,
    sync_each_commit: bool,
    segs: BTreeMap<u32, Seg>,
    active: Option<Active>,
    /// Bytes appended or a segment created since the last sync (with `FULL`).
    dirty: bool,
    unsynced: Arc<Unsynced>,
    next_id: u32,
    /// Live-byte changes of the open transaction, applied when it commits.
    pending: Vec<(u32, i64)>,
    /// Segments nothing refers to, with the commit that emptied them: deleted once that commit
    /// is durable (with `NORMAL`; with `FULL` every commit is, and they are deleted at once).
    doomed: Vec<(u64, u32, u64)>,
    /// Segments a compaction could not empty (unreadable bytes, I/O errors): not tried again
    /// while the store is open.
    stuck: std::collections::BTreeSet<u32>,
    /// The whole pages of the current append.
    scratch: Vec<u8>,
    /// With a key: records are sealed (see [`crate::key`]).
    seal: Option<Seal>,
    /// Held for as long as the store is open: one store per directory.
    _lock: File,
}

/// Writes cover whole pages of this size.
const PAGE: usize = 4096;

/// The name of the spare segment file.
const SPARE: &str = "spare";

/// The subdirectory where segment files nothing refers to are kept when they cannot be known
/// to be garbage.
pub(crate) const ASIDE: &str = "unreferenced";

/// Moves a segment file into [`ASIDE`], under its name and the time, so nothing is overwritten.
fn put_aside(dir: &Path, file: &Path) -> io::Result<()> {
    let aside = dir.join(ASIDE);
    fs::create_dir_all(&aside)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let target = aside.join(format!("{}.{stamp}", name.unwrap_or_default()));
    fs::rename(file, &target)?;
    // Both names: the file must not vanish from one before it is in the other.
    sync_dir(&aside)?;
    sync_dir(dir)
}

/// How long `open` waits for another store of the same database to close.
const LOCK_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn seg_name(id: u32) -> String {
    format!("{id:08}.seg")
}

pub(crate) fn seg_id(name: &str) -> Option<u32> {
    name.strip_suffix(".seg")?.parse().ok()
}

/// Why bytes could not be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The file is gone or shorter than the location, or the bytes fail their checksum: lost
    /// (power loss with `synchronous = NORMAL`) or damaged.
    #[error("message bytes lost or damaged at segment {seg}, offset {off}: {kind:?}")]
    Lost {
        /// Segment.
        seg: u32,
        /// Offset.
        off: u64,
        /// What is wrong.
        kind: DamageKind,
    },
    /// Any other I/O failure: maybe transient, so nothing is dropped.
    #[error("reading segment {seg}: {source}")]
    Io {
        /// Segment.
        seg: u32,
        /// The error.
        source: io::Error,
    },
}

impl Segments {
    /// Opens (creating) the directory. `live` is, per segment, the size of the bytes the
    /// database refers to; `highest_ref` the highest segment id it refers to.
    /// Segment files nothing refers to are deleted (a spare is kept), or with `keep_aside`
    /// (the database is new, was adopted or is damaged, so "unreferenced" may be wrong) moved
    /// into [`ASIDE`] under a name of their own; appends go to a new segment. With `seal`,
    /// records are sealed when appended and opened when read.
    pub fn open(
        dir: PathBuf,
        limit: u64,
        sync_each_commit: bool,
        live: &[(u32, u64)],
        highest_ref: Option<u32>,
        keep_aside: bool,
        seal: Option<Seal>,
    ) -> io::Result<Self> {
        // Its name is synced with the database's (see `SqliteStore::open_with_options`).
        fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        let since = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if since.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("{} is in use by another store", dir.display()),
                    ))
                }
                // A file system without locks: one writer is then the caller's to ensure.
                Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => break,
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        let live: HashMap<u32, u64> = live.iter().copied().collect();
        let mut segs = BTreeMap::new();
        let mut highest = highest_ref.unwrap_or(0);
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().and_then(seg_id) else {
                continue;
            };
            highest = highest.max(id);
            match live.get(&id) {
                Some(&l) if l > 0 => {
                    let size = entry.metadata()?.len();
                    segs.insert(id, Seg { live: l, size });
                }
                _ if keep_aside => put_aside(&dir, &entry.path())?,
                _ => fs::remove_file(entry.path())?,
            }
        }
        let unsynced = Arc::new(Unsynced {
            dir: dir.clone(),
            state: Mutex::new(UnsyncedFiles::default()),
            syncing: Mutex::new(()),
        });
        Ok(Segments {
            dir,
            limit,
            sync_each_commit,
            segs,
            active: None,
            dirty: false,
            unsynced,
            next_id: highest.saturating_add(1),
            pending: Vec::new(),
            doomed: Vec::new(),
            stuck: Default::default(),
            scratch: Vec::new(),
            seal,
            _lock: lock,
        })
    }

    fn path(&self, id: u32) -> PathBuf {
        self.dir.join(seg_name(id))
    }

    /// Appends the record of `bytes` (the bytes themselves, or sealed for `owner`) to the
    /// active segment (starting a new one when it is full).
    pub fn append(&mut self, bytes: &[u8], owner: Owner<'_>) -> io::Result<Loc> {
        let sealed = self.seal.as_ref().map_or(0, |_| crate::key::SEAL_OVERHEAD);
        let len = u32::try_from(bytes.len() + sealed)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
        let full = self
            .active
            .as_ref()
            .is_none_or(|a| a.size > 0 && a.size + u64::from(len) > self.limit);
        if full {
            self.rotate()?;
        }
        let Some(a) = self.active.as_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        // The last page's earlier bytes, the message, zeros to the end of its last page: whole
        // pages, so writing over a recycled segment never reads a page back first.
        self.scratch.clear();
        self.scratch.extend_from_slice(&a.tail);
        match &self.seal {
            None => self.scratch.extend_from_slice(bytes),
            Some(seal) => seal.seal_into(bytes, owner, &mut self.scratch)?,
        }
        let used = self.scratch.len();
        let crc = crc32fast::hash(&self.scratch[a.tail.len()..used]);
        self.scratch.resize(used.div_ceil(PAGE) * PAGE, 0);
        let page_start = a.size - a.tail.len() as u64;
        a.file.write_all_at(&self.scratch, page_start)?;
        let loc = Loc {
            seg: a.id,
            off: a.size,
            len,
            crc,
        };
        a.size += u64::from(len);
        a.tail.clear();
        a.tail
            .extend_from_slice(&self.scratch[used - used % PAGE..used]);
        self.dirty = true;
        if let Some(s) = self.segs.get_mut(&a.id) {
            s.size = a.size;
        }
        self.pending.push((a.id, i64::from(len)));
        Ok(loc)
    }

    /// What may not be on disk yet, for syncing before a checkpoint.
    pub fn unsynced(&self) -> Arc<Unsynced> {
        self.unsynced.clone()
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(old) = self.active.take() {
            // Synced with the next sync (with `FULL`, before this transaction commits).
            self.unsynced.lock().retired.push(old.file);
        }
        let id = self.next_id;
        // A spare (an emptied segment kept for this) is written over: its pages are likely
        // still cached, and overwriting cached pages costs a third of appending new ones.
        let spare = self.dir.join(SPARE);
        let file = match fs::rename(&spare, self.path(id)) {
            Ok(()) => OpenOptions::new().write(true).open(self.path(id))?,
            Err(_) => OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(self.path(id))?,
        };
        let file = Arc::new(file);
        {
            let mut u = self.unsynced.lock();
            u.active = Some(file.clone());
            u.names = true;
        }
        self.dirty = true;
        self.next_id = id.saturating_add(1);
        self.segs.insert(id, Seg::default());
        self.active = Some(Active {
            id,
            file,
            size: 0,
            tail: Vec::with_capacity(PAGE),
        });
        Ok(())
    }

    /// Bytes at `loc` no longer referred to (once the transaction commits).
    pub fn released(&mut self, seg: u32, len: u32) {
        self.pending.push((seg, -i64::from(len)));
    }

    /// Before a commit: with FULL durability, the bytes, and the name of a segment file created
    /// for them, reach the disk before the rows do.
    pub fn before_commit(&mut self) -> io::Result<()> {
        if self.sync_each_commit && self.dirty {
            self.unsynced.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// The transaction committed: its changes count. Returns the segments nothing refers to
    /// any more (never the active one), to be deleted once the commit is durable.
    pub fn committed(&mut self) -> Vec<u32> {
        for (id, delta) in self.pending.drain(..) {
            if let Some(s) = self.segs.get_mut(&id) {
                s.live = s.live.saturating_add_signed(delta);
            }
        }
        let active = self.active.as_ref().map(|a| a.id);
        self.segs
            .iter()
            .filter(|(id, s)| s.live == 0 && Some(**id) != active)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The transaction rolled back: its changes never happened (appended bytes are garbage).
    pub fn rolled_back(&mut self) {
        self.pending.clear();
    }

    /// Segments nothing refers to since commit number `commit`: deleted once that commit is
    /// durable — at once with `FULL`, else by [`Self::delete_durable`]. Until then a database
    /// rolled back by power loss may still need them (for rows the commit deleted, or bytes a
    /// compaction copied).
    pub fn retire(&mut self, ids: &[u32], commit: u64) -> io::Result<()> {
        for id in ids {
            if let Some(seg) = self.segs.remove(id) {
                self.doomed.push((commit, *id, seg.size));
            }
        }
        if self.sync_each_commit {
            self.delete_durable(commit)?;
        }
        Ok(())
    }

    /// Whether segments wait for their emptying commit to become durable.
    pub fn has_doomed(&self) -> bool {
        !self.doomed.is_empty()
    }

    /// Deletes the segments emptied by commits up to number `durable`, which are durable.
    pub fn delete_durable(&mut self, durable: u64) -> io::Result<()> {
        while let Some(&(commit, id, size)) = self.doomed.first() {
            if commit > durable {
                break;
            }
            let path = self.path(id);
            // The first emptied segment of a full size becomes the spare; the others go.
            let spare = self.dir.join(SPARE);
            if size >= self.limit / 2 && !spare.exists() && fs::rename(&path, &spare).is_ok() {
                self.doomed.remove(0);
                continue;
            }
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.doomed.remove(0);
        }
        Ok(())
    }

    /// The segment worth compacting, if the directory holds more than about twice the live
    /// bytes: the one (other than the active one) with the fewest live bytes.
    pub fn compaction_candidate(&self) -> Option<u32> {
        let (size, live) = self
            .segs
            .values()
            .fold((0u64, 0u64), |(s, l), seg| (s + seg.size, l + seg.live));
        if size
            <= live
                .saturating_mul(2)
                .saturating_add(self.limit.saturating_mul(2))
        {
            return None;
        }
        let active = self.active.as_ref().map(|a| a.id);
        self.segs
            .iter()
            .filter(|(id, _)| Some(**id) != active && !self.stuck.contains(id))
            .min_by_key(|(_, s)| s.live)
            .map(|(id, _)| *id)
    }

    /// After compacting `seg`: if it is still there, it is not proposed again.
    pub fn compacted(&mut self, seg: u32) {
        if self.segs.contains_key(&seg) {
            self.stuck.insert(seg);
        }
    }

    /// Reads and checks the record at `loc`, and gives its bytes (opened, if sealed for
    /// `owner`); `files` caches open segments.
    pub fn read(
        &self,
        loc: Loc,
        owner: Owner<'_>,
        files: &mut HashMap<u32, File>,
    ) -> Result<Vec<u8>, ReadError> {
        read_in(&self.dir, loc, self.seal.as_ref(), owner, files)
    }
}

/// Reads and checks the record at `loc` in the segment directory `dir`, and gives its bytes
/// (opened with `seal`, for `owner`, if the store is encrypted); `files` caches open segments.
pub(crate) fn read_in(
    dir: &Path,
    loc: Loc,
    seal: Option<&Seal>,
    owner: Owner<'_>,
    files: &mut HashMap<u32, File>,
) -> Result<Vec<u8>, ReadError> {
    let lost = |kind| ReadError::Lost {
        seg: loc.seg,
        off: loc.off,
        kind,
    };
    let io = |source| ReadError::Io {
        seg: loc.seg,
        source,
    };
    let file = match files.entry(loc.seg) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            match File::open(dir.join(seg_name(loc.seg))) {
                Ok(f) => v.insert(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(lost(DamageKind::MissingFile))
                }
                Err(e) => return Err(io(e)),
            }
        }
    };
    // A damaged row may name any length: the file's size bounds what is allocated.
    let size = file.metadata().map_err(io)?.len();
    if loc.off.saturating_add(u64::from(loc.len)) > size {
        return Err(lost(DamageKind::Truncated));
    }
    let mut buf = vec![0u8; loc.len as usize];
    match file.read_exact_at(&mut buf, loc.off) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(lost(DamageKind::Truncated))
        }
        Err(e) => return Err(io(e)),
    }
    if crc32fast::hash(&buf) != loc.crc {
        return Err(lost(DamageKind::Checksum));
    }
    match seal {
        None => Ok(buf),
        Some(seal) => seal
            .open(buf, owner)
            .ok_or_else(|| lost(DamageKind::Authentication)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner of every record here (unsealed, it plays no part).
    const O: Owner<'static> = Owner {
        channel: b"c",
        id: b"m",
    };

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sds-seg-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn appended_bytes_read_back_and_damage_is_detected() {
        let d = dir("read");
        let mut s = Segments::open(d.clone(), 1 << 20, false, &[], None, false, None).unwrap();
        let a = s.append(b"hello", O).unwrap();
        let b = s.append(b"world!", O).unwrap();
        // Packed end to end.
        assert_eq!((a.seg, a.off, b.off), (b.seg, 0, 5));
        let mut files = HashMap::new();
        assert_eq!(s.read(b, O, &mut files).unwrap(), b"world!");
        let bad = Loc {
            crc: b.crc ^ 1,
            ..b
        };
        assert!(matches!(
            s.read(bad, O, &mut files),
            Err(ReadError::Lost { .. })
        ));
        let past = Loc { off: 100, ..b };
        assert!(matches!(
            s.read(past, O, &mut files),
            Err(ReadError::Lost { .. })
        ));
        let gone = Loc { seg: 99, ..b };
        assert!(matches!(
            s.read(gone, O, &mut files),
            Err(ReadError::Lost { .. })
        ));
    }

    #[test]
    fn messages_are_packed_and_every_write_covers_whole_pages() {
        let d = dir("packed");
        let mut s = Segments::open(d.clone(), 1 << 20, false, &[], None, false, None).unwrap();
        let messages: Vec<Vec<u8>> = [1500, 3000, 100, 5000, 4096, 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8 + 1; n])
            .collect();
        let locs: Vec<Loc> = messages.iter().map(|m| s.append(m, O).unwrap()).collect();
        let mut end = 0;
        for l in &locs {
            assert_eq!(l.off, end, "packed end to end");
            end += u64::from(l.len);
        }
        // The file ends at the end of the last page written: no page per message.
        let file = d.join(seg_name(locs[0].seg));
        assert_eq!(
            fs::metadata(&file).unwrap().len(),
            end.div_ceil(PAGE as u64) * PAGE as u64
        );
        let mut files = HashMap::new();
        for (m, l) in messages.iter().zip(&locs) {
            assert_eq!(&s.read(*l, O, &mut files).unwrap(), m);
        }
    }

    #[test]
    fn segments_rotate_and_empty_ones_are_deleted_after_commit() {
        let d = dir("rotate");
        let mut s = Segments::open(d.clone(), 10, false, &[], None, false, None).unwrap();
        let a = s.append(b"0123456789", O).unwrap();
        let b = s.append(b"abc", O).unwrap();
        assert_ne!(a.seg, b.seg);
        assert!(s.committed().is_empty());
        s.released(a.seg, a.len);
        // Rolled back: nothing changes.
        s.rolled_back();
        assert!(s.committed().is_empty());
        s.released(a.seg, a.len);
        assert_eq!(s.committed(), vec![a.seg]);
        // Kept until the commit that emptied it is durable.
        s.retire(&[a.seg], 7).unwrap();
        assert!(s.committed().is_empty());
        s.delete_durable(6).unwrap();
        assert!(d.join(seg_name(a.seg)).exists());
        s.delete_durable(7).unwrap();
        assert!(!d.join(seg_name(a.seg)).exists());
        assert!(d.join(seg_name(b.seg)).exists());
        // The emptied segment became the spare, which the next segment is written over.
        assert!(d.join(SPARE).exists());
        let c = s.append(b"over the spare", O).unwrap();
        assert!(c.seg > b.seg);
        assert!(!d.join(SPARE).exists());
        assert_eq!(
            s.read(c, O, &mut HashMap::new()).unwrap(),
            b"over the spare"
        );
    }

    #[test]
    fn reopening_drops_unreferenced_files_and_never_reuses_ids() {
        let d = dir("reopen");
        let (kept, orphan) = {
            let mut s = Segments::open(d.clone(), 4, false, &[], None, false, None).unwrap();
            let kept = s.append(b"keep", O).unwrap();
            let orphan = s.append(b"lost", O).unwrap();
            (kept, orphan)
        };
        let mut s = Segments::open(
            d.clone(),
            4,
            false,
            &[(kept.seg, 4)],
            Some(kept.seg),
            false,
            None,
        )
        .unwrap();
        assert!(d.join(seg_name(kept.seg)).exists());
        assert!(!d.join(seg_name(orphan.seg)).exists());
        let next = s.append(b"new!", O).unwrap();
        assert!(next.seg > orphan.seg);
        drop(s);
        // Kept aside instead when the caller cannot know the file to be garbage.
        let mut s = Segments::open(
            d.clone(),
            4,
            false,
            &[(kept.seg, 4)],
            Some(kept.seg),
            true,
            None,
        )
        .unwrap();
        assert!(!d.join(seg_name(next.seg)).exists());
        let aside: Vec<_> = fs::read_dir(d.join(ASIDE)).unwrap().collect();
        assert_eq!(aside.len(), 1);
        assert!(s.append(b"more", O).unwrap().seg > next.seg);
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused_until_the_first_closes() {
        let d = dir("lock");
        let first = Segments::open(d.clone(), 4, false, &[], None, false, None).unwrap();
        let waiter = {
            let d = d.clone();
            std::thread::spawn(move || {
                Segments::open(d, 4, false, &[], None, false, None).map(|_| ())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(first);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn compaction_is_proposed_when_garbage_outweighs_live_bytes() {
        let d = dir("compact");
        let mut s =
            Segments::open(d.clone(), 3 * PAGE as u64, false, &[], None, false, None).unwrap();
        // 12 segments of three messages, a page each.
        let locs: Vec<Loc> = (0..36).map(|_| s.append(&[7; PAGE], O).unwrap()).collect();
        s.committed();
        assert_eq!(s.compaction_candidate(), None);
        // Two of three die in every segment but the last: 36 pages on disk, 14 live.
        for (i, l) in locs[..33].iter().enumerate() {
            if i % 3 != 0 {
                s.released(l.seg, l.len);
            }
        }
        assert!(s.committed().is_empty());
        // Every candidate holds one live page: the oldest is taken.
        assert_eq!(s.compaction_candidate(), Some(locs[0].seg));
        // A compaction that could not empty it (say its bytes are unreadable) is not retried
        // after every operation: the next one is proposed.
        s.compacted(locs[0].seg);
        assert_eq!(s.compaction_candidate(), Some(locs[3].seg));
    }
}
