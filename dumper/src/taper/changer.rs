//! The changer shell: which volumes exist and how one is loaded, for `tpchanger
//! "chg-disk:DIR"` (directly or through `define changer`) and for a single vfs device
//! (`tapedev "file:DIR"` or `tpchanger "chg-single:file:DIR"`).
//!
//! chg-disk (spec §12.1, perl/Amanda/Changer/disk.pm): slots are the directories
//! `DIR/slot<N>`, and the symlink `DIR/data` names the slot loaded last. With the property
//! `auto-create-slot` and `num-slot N`, missing `slot1`..`slotN` are created. amanda-rs
//! keeps Amanda's `state` file untouched (the real tools keep it; a slot is found by
//! reading its label, as chg-disk does when its state is stale).
//!
//! What this module must not do: choose a volume (see `planner`), or write dump files.

use std::io;
use std::path::{Path, PathBuf};

use conf::Config;

use super::volume::{self, Content};

/// Where the volumes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `chg-disk:DIR`.
    Disk {
        /// DIR.
        dir: PathBuf,
        /// `property "auto-create-slot" "yes"`.
        auto_create: bool,
        /// `property "num-slot" "N"`.
        num_slot: Option<u32>,
    },
    /// One vfs device directory (no changer).
    Single {
        /// The device directory.
        dir: PathBuf,
    },
}

/// A changer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changer {
    /// Where the volumes are.
    pub kind: Kind,
    /// How amanda.conf named it (for messages).
    pub name: String,
}

/// A slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Its name in messages (`slot 3`, `file:/x`).
    pub name: String,
    /// Its number (chg-disk) or 0.
    pub number: u32,
    /// The volume directory.
    pub dir: PathBuf,
}

/// A changer amanda-rs cannot use; `at` is the amanda.conf location of the setting.
#[derive(Debug, thiserror::Error)]
pub enum ChangerError {
    /// Not chg-disk or a file: device.
    #[error("{at}: tpchanger/tapedev \"{value}\": {reason}")]
    Unsupported {
        /// file:line:column.
        at: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The directory cannot be read.
    #[error("changer {name}: {path}: {source}")]
    Io {
        /// The changer.
        name: String,
        /// The path.
        path: String,
        /// Why.
        source: io::Error,
    },
}

fn yes(v: Option<&str>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "yes" | "true" | "on" | "1" | "y"
        )
    })
}

impl Changer {
    /// The changer of `cfg`, or `None` when it has neither `tpchanger` nor `tapedev` (the
    /// dumps then stay on the holding disk, as before amanda-rs had a taper).
    pub fn from_config(cfg: &Config) -> Result<Option<Changer>, ChangerError> {
        let (value, at) = if !cfg.tpchanger.is_empty() {
            (cfg.tpchanger.clone(), cfg.origin("tpchanger"))
        } else if !cfg.tapedev.is_empty() {
            (cfg.tapedev.clone(), cfg.origin("tapedev"))
        } else {
            return Ok(None);
        };
        let at = at
            .map(|l| l.to_string())
            .unwrap_or_else(|| "amanda.conf".into());
        if let Some(def) = cfg.changers.get(&value) {
            let inner = if def.tpchanger.is_empty() {
                &def.tapedev
            } else {
                &def.tpchanger
            };
            let at = def
                .params
                .location("tpchanger")
                .or(def.params.location("tapedev"))
                .map(|l| l.to_string())
                .unwrap_or_else(|| def.location.to_string());
            let mut c = Self::parse(inner, &at, cfg)?;
            if let Kind::Disk {
                auto_create,
                num_slot,
                ..
            } = &mut c.kind
            {
                *auto_create = yes(def.properties.first("auto_create_slot"));
                *num_slot = def
                    .properties
                    .first("num_slot")
                    .and_then(|n| n.trim().parse().ok());
            }
            c.name = format!("{value} ({})", c.name);
            return Ok(Some(c));
        }
        Self::parse(&value, &at, cfg).map(Some)
    }

    fn parse(value: &str, at: &str, cfg: &Config) -> Result<Changer, ChangerError> {
        let unsupported = |reason: &str| ChangerError::Unsupported {
            at: at.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let dir_of = |d: &str| -> Result<PathBuf, ChangerError> {
            if d.is_empty() {
                return Err(unsupported("no directory"));
            }
            Ok(cfg.path(d))
        };
        if let Some(d) = value.strip_prefix("chg-disk:") {
            return Ok(Changer {
                kind: Kind::Disk {
                    dir: dir_of(d)?,
                    auto_create: false,
                    num_slot: None,
                },
                name: value.to_owned(),
            });
        }
        let single = value.strip_prefix("chg-single:").unwrap_or(value);
        if let Some(d) = single.strip_prefix("file:") {
            return Ok(Changer {
                kind: Kind::Single { dir: dir_of(d)? },
                name: value.to_owned(),
            });
        }
        Err(unsupported(
            "amanda-rs writes only to chg-disk:DIR changers and file:DIR devices (vtapes); use Amanda's taper (amflush) for real tape drives",
        ))
    }

    fn io(&self, path: &Path, source: io::Error) -> ChangerError {
        ChangerError::Io {
            name: self.name.clone(),
            path: path.display().to_string(),
            source,
        }
    }

    /// The slots, in order (creating missing ones when `auto-create-slot` says so).
    pub fn slots(&self) -> Result<Vec<Slot>, ChangerError> {
        match &self.kind {
            Kind::Single { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| self.io(dir, e))?;
                Ok(vec![Slot {
                    name: format!("file:{}", dir.display()),
                    number: 0,
                    dir: dir.clone(),
                }])
            }
            Kind::Disk {
                dir,
                auto_create,
                num_slot,
            } => {
                if *auto_create {
                    for n in 1..=num_slot.unwrap_or(0).min(10_000) {
                        let s = dir.join(format!("slot{n}"));
                        if !s.exists() {
                            std::fs::create_dir_all(&s).map_err(|e| self.io(&s, e))?;
                        }
                    }
                }
                let mut out = Vec::new();
                for e in std::fs::read_dir(dir).map_err(|e| self.io(dir, e))? {
                    let e = e.map_err(|e| self.io(dir, e))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    let Some(n) = name
                        .strip_prefix("slot")
                        .and_then(|n| n.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        out.push(Slot {
                            name: format!("slot {n}"),
                            number: n,
                            dir: e.path(),
                        });
                    }
                }
                out.sort_by_key(|s| s.number);
                Ok(out)
            }
        }
    }

    /// Makes `slot` the loaded one (chg-disk: the `data` symlink, replaced atomically).
    pub fn load(&self, slot: &Slot) -> Result<(), ChangerError> {
        let Kind::Disk { dir, .. } = &self.kind else {
            return Ok(());
        };
        let link = dir.join("data");
        let tmp = dir.join(format!(".data.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let target = PathBuf::from(format!("slot{}", slot.number));
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| self.io(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| self.io(&link, e))?;
        volume::sync_dir(dir);
        Ok(())
    }

    /// Every slot with what it holds.
    pub fn inventory(&self) -> Result<Vec<(Slot, Content)>, ChangerError> {
        let mut out = Vec::new();
        for s in self.slots()? {
            let c = volume::read(&s.dir).map_err(|e| self.io(&s.dir, e))?;
            out.push((s, c));
        }
        Ok(out)
    }

    /// The slot holding `label`.
    pub fn find(&self, label: &str) -> Result<Option<Slot>, ChangerError> {
        Ok(self.inventory()?.into_iter().find_map(|(s, c)| match c {
            Content::Labeled { label: l, .. } if l == label => Some(s),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse_str("amanda.conf", text).unwrap().value
    }

    #[test]
    fn chg_disk_through_define_changer_and_its_properties() {
        let c = cfg(
            "define changer vtl {\n tpchanger \"chg-disk:/v\"\n property \"num-slot\" \"3\"\n property \"auto-create-slot\" \"yes\"\n}\ntpchanger \"vtl\"\n",
        );
        let ch = Changer::from_config(&c).unwrap().unwrap();
        assert_eq!(
            ch.kind,
            Kind::Disk {
                dir: "/v".into(),
                auto_create: true,
                num_slot: Some(3)
            }
        );
        let c = cfg("tapedev \"file:/t\"\n");
        assert_eq!(
            Changer::from_config(&c).unwrap().unwrap().kind,
            Kind::Single { dir: "/t".into() }
        );
        assert!(Changer::from_config(&cfg("")).unwrap().is_none());
    }

    #[test]
    fn other_changers_are_refused_with_their_location() {
        let e = Changer::from_config(&cfg("org \"x\"\ntpchanger \"chg-robot:/dev/sg0\"\n"))
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "amanda.conf:2:1: tpchanger/tapedev \"chg-robot:/dev/sg0\": amanda-rs writes only"
            ),
            "{e}"
        );
    }

    #[test]
    fn slots_are_created_listed_and_loaded() {
        let d = tempfile::tempdir().unwrap();
        let ch = Changer {
            kind: Kind::Disk {
                dir: d.path().to_path_buf(),
                auto_create: true,
                num_slot: Some(3),
            },
            name: "t".into(),
        };
        let slots = ch.slots().unwrap();
        assert_eq!(
            slots.iter().map(|s| s.number).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        volume::write_label(&slots[1].dir, "20260101000000", "vt-01").unwrap();
        ch.load(&slots[1]).unwrap();
        assert_eq!(
            std::fs::read_link(d.path().join("data")).unwrap(),
            Path::new("slot2")
        );
        assert_eq!(ch.find("vt-01").unwrap().unwrap().number, 2);
        assert!(ch.find("vt-02").unwrap().is_none());
    }
}
