//! The holding disks as the driver counts them: which disk a dump gets, what it reserves
//! there, and the corrections when the dump ends (its real size) and when the taper removes
//! a file. Numbers only: the shell reports what the file systems have free
//! ([`super::Input::HoldingSpace`]); this module never looks at a file or a file system.
//!
//! A disk's room for a new dump is the smaller of
//! - its file system's free space, less what `use` -N keeps free, less the reservations of
//!   the dumps running on it (a running dump's bytes already written are in both, so the
//!   room errs on the small side until the dump ends), and
//! - for `use` N > 0, N less what this run has on the disk: reservations of running dumps
//!   and the files of finished ones that the taper has not removed.
//!
//! A dump reserves its estimate (0 when unknown) on the disk it starts on; when it ends the
//! reservation goes, and what it wrote stays counted until the taper frees it.
//!
//! What this module must not do: read a clock, touch files, or decide when a dump starts
//! (the driver does, asking [`Disks::choose`]).

/// A holding disk's limit, from amanda.conf's `use`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldingDisk {
    /// `use` N > 0: this run writes at most N bytes to it.
    pub cap: Option<u64>,
    /// `use` -N (or 0): N bytes of its file system stay free.
    pub keep_free: u64,
}

impl HoldingDisk {
    /// No limit but the file system's.
    pub const UNBOUNDED: HoldingDisk = HoldingDisk {
        cap: None,
        keep_free: 0,
    };

    /// From `use` in KiB (> 0: a cap for this run; <= 0: that much kept free).
    pub fn from_use_kib(use_kib: i64) -> HoldingDisk {
        if use_kib > 0 {
            HoldingDisk {
                cap: Some((use_kib as u64).saturating_mul(1024)),
                keep_free: 0,
            }
        } else {
            HoldingDisk {
                cap: None,
                keep_free: use_kib.unsigned_abs().saturating_mul(1024),
            }
        }
    }

    /// What a dump may still write here: the file system has `fs_free` bytes free (`None`:
    /// not known), this run has `kept` bytes of finished dumps on it and `reserved` bytes
    /// reserved by running ones.
    pub fn room(&self, fs_free: Option<u64>, kept: u64, reserved: u64) -> u64 {
        let fs = fs_free.map_or(u64::MAX, |f| {
            f.saturating_sub(self.keep_free).saturating_sub(reserved)
        });
        let cap = self.cap.map_or(u64::MAX, |c| {
            c.saturating_sub(kept.saturating_add(reserved))
        });
        fs.min(cap)
    }
}

/// One disk's accounting.
#[derive(Clone, Debug)]
struct Disk {
    limit: HoldingDisk,
    fs_free: Option<u64>,
    reserved: u64,
    kept: u64,
    written: u64,
    running: u32,
}

/// Every holding disk of the run, in configuration order.
#[derive(Clone, Debug)]
pub struct Disks {
    disks: Vec<Disk>,
}

/// Where a dump should go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// A disk where its estimate fits.
    Fits(usize),
    /// None fits: the disk with the most room, and that room.
    Tightest {
        /// The disk.
        disk: usize,
        /// Its room.
        room: u64,
    },
}

impl Disks {
    /// The disks of a run; an empty list is one disk without limits.
    pub fn new(limits: &[HoldingDisk]) -> Disks {
        let limits = if limits.is_empty() {
            &[HoldingDisk::UNBOUNDED][..]
        } else {
            limits
        };
        Disks {
            disks: limits
                .iter()
                .map(|&limit| Disk {
                    limit,
                    fs_free: None,
                    reserved: 0,
                    kept: 0,
                    written: 0,
                    running: 0,
                })
                .collect(),
        }
    }

    /// What the file systems have free now (one entry per disk, `None` when it cannot be
    /// read; extra entries are ignored).
    pub fn report(&mut self, free: &[Option<u64>]) {
        for (d, f) in self.disks.iter_mut().zip(free) {
            d.fs_free = *f;
        }
    }

    /// Room on disk `i` for a new dump.
    pub fn room(&self, i: usize) -> u64 {
        self.disks
            .get(i)
            .map_or(0, |d| d.limit.room(d.fs_free, d.kept, d.reserved))
    }

    /// Where a dump of about `need` bytes should go: among the disks where it fits, the one
    /// with the fewest running dumps (spreading the writes), then the most room, then the
    /// first; when it fits nowhere, the disk with the most room.
    pub fn choose(&self, need: u64) -> Choice {
        let fits = (0..self.disks.len())
            .filter(|&i| self.room(i) >= need)
            .min_by_key(|&i| (self.disks[i].running, std::cmp::Reverse(self.room(i)), i));
        match fits {
            Some(i) => Choice::Fits(i),
            None => {
                let disk = (0..self.disks.len())
                    .max_by_key(|&i| (self.room(i), std::cmp::Reverse(i)))
                    .unwrap_or(0);
                Choice::Tightest {
                    disk,
                    room: self.room(disk),
                }
            }
        }
    }

    /// A dump starts on disk `i`, reserving `bytes`.
    pub fn reserve(&mut self, i: usize, bytes: u64) {
        if let Some(d) = self.disks.get_mut(i) {
            d.reserved = d.reserved.saturating_add(bytes);
            d.running += 1;
        }
    }

    /// A dump that reserved `reserved` on disk `i` ended, leaving `written` bytes there
    /// (0 when it failed: its file is gone).
    pub fn release(&mut self, i: usize, reserved: u64, written: u64) {
        if let Some(d) = self.disks.get_mut(i) {
            d.reserved = d.reserved.saturating_sub(reserved);
            d.running = d.running.saturating_sub(1);
            d.kept = d.kept.saturating_add(written);
            d.written = d.written.saturating_add(written);
        }
    }

    /// The taper removed `bytes` of this run's files from disk `i`.
    pub fn freed(&mut self, i: usize, bytes: u64) {
        if let Some(d) = self.disks.get_mut(i) {
            d.kept = d.kept.saturating_sub(bytes);
        }
    }

    /// Bytes this run's finished dumps wrote to each disk (for the report).
    pub fn written(&self) -> Vec<u64> {
        self.disks.iter().map(|d| d.written).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_caps_the_run_or_keeps_space_free() {
        let cap = HoldingDisk::from_use_kib(2);
        assert_eq!(cap.room(Some(10_000), 0, 0), 2048);
        assert_eq!(cap.room(Some(10_000), 1000, 500), 548);
        assert_eq!(
            cap.room(Some(100), 0, 0),
            100,
            "the file system bounds it too"
        );
        let keep = HoldingDisk::from_use_kib(-1);
        assert_eq!(keep.room(Some(10_000), 5000, 3000), 10_000 - 1024 - 3000);
        assert_eq!(keep.room(None, 0, 0), u64::MAX, "not reported yet");
    }

    #[test]
    fn a_dump_goes_where_its_estimate_fits_spreading_the_writes() {
        let mut d = Disks::new(&[HoldingDisk::UNBOUNDED, HoldingDisk::UNBOUNDED]);
        d.report(&[Some(10_000), Some(3000)]);
        d.reserve(0, 1000);
        // Disk 1 has less room but no dump: a small dump goes there...
        assert_eq!(d.choose(2000), Choice::Fits(1));
        // ...a large one only fits on disk 0.
        assert_eq!(d.choose(5000), Choice::Fits(0));
        assert_eq!(
            d.choose(20_000),
            Choice::Tightest {
                disk: 0,
                room: 9000
            }
        );
    }
}
