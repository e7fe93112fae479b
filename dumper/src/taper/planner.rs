//! Which volume the taper writes next, and which volumes must be kept: a pure function of
//! the changer's inventory, the tapelist and the catalog, with no I/O and no clock, so that
//! every rule has a test (below, and the nights in `sched`'s tests).
//!
//! Rules (after Amanda 3.5.1's traditional taperscan and server-src/tapefile.c):
//! 1. **Reuse after `tapecycle`**: of the volumes of this configuration in the tapelist
//!    (marked `reuse`, label matching `labelstr`), the newest `tapecycle - 1` are kept;
//!    the others are reusable, the oldest first.
//! 2. **Never the only full**: a volume that holds a part of the newest full dump of a DLE
//!    of which no other copy exists (on the holding disk or another volume) is not reused,
//!    whatever its age (amanda-rs's rule: Amanda would overwrite it and warn).
//! 3. Volumes already written tonight are not chosen again.
//! 4. Otherwise an empty slot is labelled when `autolabel` allows `empty`; a slot with
//!    something that is not an Amanda volume only with `non-amanda`, a volume whose label
//!    does not match `labelstr` only with `other-config`.
//! 5. Nothing usable: every slot says why, and the dumps stay on the holding disk.
//!
//! What this module must not do: read directories or files, or write anything.

use std::collections::BTreeMap;

use conf::value::Autolabel;

use crate::amcatalog::tapelist::Tapelist;

/// What a slot holds, as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotView {
    /// Nothing.
    Empty,
    /// An Amanda volume.
    Labeled {
        /// Its label.
        label: String,
    },
    /// Something that is not an Amanda volume (why).
    NotAmanda(String),
}

/// The configuration's rules.
pub struct Policy<'a> {
    /// The configuration name (tapelist `CONFIG:`).
    pub config: &'a str,
    /// `org` (for `$o` in autolabel).
    pub org: &'a str,
    /// `tapecycle`.
    pub tapecycle: u32,
    /// `autolabel`.
    pub autolabel: &'a Autolabel,
    /// Whether a label matches `labelstr`.
    pub labelstr: &'a dyn Fn(&str) -> bool,
}

/// The volume to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Overwrite an old volume of ours (it keeps its label).
    Reuse {
        /// Index into the slots.
        slot: usize,
        /// Its label.
        label: String,
        /// The run that wrote it last.
        written: String,
    },
    /// Label a volume (an empty slot, or a foreign volume autolabel may take).
    Label {
        /// Index into the slots.
        slot: usize,
        /// The new label.
        label: String,
        /// What was there (`None`: nothing).
        replaces: Option<String>,
    },
}

impl Choice {
    /// The slot index.
    pub fn slot(&self) -> usize {
        match self {
            Choice::Reuse { slot, .. } | Choice::Label { slot, .. } => *slot,
        }
    }

    /// The label written.
    pub fn label(&self) -> &str {
        match self {
            Choice::Reuse { label, .. } | Choice::Label { label, .. } => label,
        }
    }
}

/// No volume can be used; one reason per slot or volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoVolume {
    /// Why each candidate was refused.
    pub reasons: Vec<String>,
}

impl std::fmt::Display for NoVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no usable volume: {}", self.reasons.join("; "))
    }
}

/// One copy of a dump, for the retention rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpCopy {
    /// `host:disk`.
    pub dle: String,
    /// Level.
    pub level: i32,
    /// The run that dumped it.
    pub datestamp: String,
    /// The volumes holding its parts (empty: not on a volume).
    pub labels: Vec<String>,
    /// Its holding file still exists.
    pub on_holding: bool,
}

/// The volumes that hold the only copy of the newest full of some DLE, with why.
pub fn protected(copies: &[DumpCopy]) -> BTreeMap<String, String> {
    let mut newest: BTreeMap<&str, &DumpCopy> = BTreeMap::new();
    for c in copies {
        if c.level != 0 || (c.labels.is_empty() && !c.on_holding) {
            continue;
        }
        let e = newest.entry(c.dle.as_str()).or_insert(c);
        if c.datestamp > e.datestamp {
            *e = c;
        }
    }
    let mut out = BTreeMap::new();
    for (dle, c) in newest {
        if c.on_holding {
            continue;
        }
        for l in &c.labels {
            out.entry(l.clone()).or_insert_with(|| {
                format!(
                    "it holds the only full dump of {dle} (level 0 of {})",
                    c.datestamp
                )
            });
        }
    }
    out
}

/// The label `autolabel` gives the next new volume: `%`s are a zero-padded counter (the
/// smallest not yet used), `$c` the configuration, `$o` the org.
pub fn next_label(p: &Policy<'_>, taken: &dyn Fn(&str) -> bool) -> Option<String> {
    let t = p.autolabel.template.as_deref()?;
    let t = t.replace("$c", p.config).replace("$o", p.org);
    let start = t.find('%');
    let width = t.chars().filter(|&c| c == '%').count();
    let Some(start) = start else {
        return (!taken(&t)).then_some(t);
    };
    let digits = width.min(9);
    let max = 10u64.pow(digits as u32);
    for n in 1..max {
        let label = format!("{}{n:0digits$}{}", &t[..start], &t[start + width..]);
        if !taken(&label) && (p.labelstr)(&label) {
            return Some(label);
        }
    }
    None
}

/// Chooses the next volume. `slots` are the changer's slots in order, `used` the labels
/// written tonight, `keep` the output of [`protected`]. With the choice come the notes the
/// report shows: the older volumes that were kept, and why.
pub fn choose(
    slots: &[(String, SlotView)],
    tapelist: &Tapelist,
    used: &[String],
    keep: &BTreeMap<String, String>,
    p: &Policy<'_>,
) -> Result<(Choice, Vec<String>), NoVolume> {
    let mut reasons = Vec::new();
    let mut kept_notes = Vec::new();
    let slot_of = |label: &str| {
        slots
            .iter()
            .position(|(_, v)| matches!(v, SlotView::Labeled { label: l } if l == label))
    };
    let ours: Vec<_> = tapelist
        .entries
        .iter()
        .filter(|e| {
            e.reuse
                && e.datestamp != "0"
                && e.config.as_deref().is_none_or(|c| c == p.config)
                && (p.labelstr)(&e.label)
        })
        .collect();
    let kept = (p.tapecycle.max(1) - 1) as usize;
    for e in ours.iter().take(kept) {
        if slot_of(&e.label).is_some() && !used.contains(&e.label) {
            reasons.push(format!(
                "{} (written {}) is one of the newest {kept} volume(s) tapecycle {} keeps",
                e.label, e.datestamp, p.tapecycle
            ));
        }
    }
    for e in ours.iter().skip(kept).rev() {
        if used.contains(&e.label) {
            continue;
        }
        let Some(slot) = slot_of(&e.label) else {
            reasons.push(format!("{} is reusable but in no slot", e.label));
            continue;
        };
        if let Some(why) = keep.get(&e.label) {
            let note = format!("{} (written {}) is kept: {why}", e.label, e.datestamp);
            reasons.push(note.clone());
            kept_notes.push(note);
            continue;
        }
        return Ok((
            Choice::Reuse {
                slot,
                label: e.label.clone(),
                written: e.datestamp.clone(),
            },
            kept_notes,
        ));
    }
    let allows = |w: &str| p.autolabel.template.is_some() && p.autolabel.when.contains(&w);
    let taken = |l: &str| tapelist.get(l).is_some() || slot_of(l).is_some();
    let mut relabel: Option<(usize, String)> = None;
    for (i, (name, v)) in slots.iter().enumerate() {
        match v {
            SlotView::Empty => {
                if allows("empty") {
                    match next_label(p, &taken) {
                        Some(label) => {
                            return Ok((
                                Choice::Label {
                                    slot: i,
                                    label,
                                    replaces: None,
                                },
                                kept_notes,
                            ));
                        }
                        None => reasons.push(format!(
                            "{name} is empty but autolabel {:?} gives no free label matching labelstr",
                            p.autolabel.template.as_deref().unwrap_or("")
                        )),
                    }
                } else {
                    reasons.push(format!(
                        "{name} is empty and autolabel does not allow labelling it (autolabel \"...\" empty)"
                    ));
                }
            }
            SlotView::NotAmanda(why) => {
                if allows("non_amanda") && relabel.is_none() {
                    relabel = Some((i, why.clone()));
                } else {
                    reasons.push(format!("{name} is not ours: {why}"));
                }
            }
            SlotView::Labeled { label } => {
                if !(p.labelstr)(label) {
                    if allows("other_config") && relabel.is_none() {
                        relabel = Some((i, format!("label {label}")));
                    } else {
                        reasons.push(format!(
                            "{name} holds {label}, which does not match labelstr: not ours"
                        ));
                    }
                } else if let Some(e) = tapelist.get(label) {
                    if e.config.as_deref().is_some_and(|c| c != p.config) {
                        reasons.push(format!(
                            "{name} holds {label} of configuration {}: not ours",
                            e.config.as_deref().unwrap_or("")
                        ));
                    } else if !e.reuse {
                        reasons.push(format!("{name} holds {label}, marked no-reuse"));
                    } else if used.contains(label) {
                        reasons.push(format!("{name} holds {label}, written tonight"));
                    }
                } else {
                    reasons.push(format!(
                        "{name} holds {label}, which is not in the tapelist: not ours (amlabel it, or remove it)"
                    ));
                }
            }
        }
    }
    if let Some((slot, was)) = relabel
        && let Some(label) = next_label(p, &taken)
    {
        return Ok((
            Choice::Label {
                slot,
                label,
                replaces: Some(was),
            },
            kept_notes,
        ));
    }
    if slots.is_empty() {
        reasons.push("the changer has no slot".into());
    }
    Err(NoVolume { reasons })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amcatalog::tapelist::TapeEntry;

    fn auto(t: &str, when: &[&'static str]) -> Autolabel {
        Autolabel {
            template: Some(t.into()),
            when: when.to_vec(),
        }
    }

    fn vt(l: &str) -> bool {
        l.starts_with("vt-")
    }

    fn policy<'a>(a: &'a Autolabel, tapecycle: u32) -> Policy<'a> {
        Policy {
            config: "c",
            org: "o",
            tapecycle,
            autolabel: a,
            labelstr: &vt,
        }
    }

    fn tl(labels: &[(&str, &str)]) -> Tapelist {
        let mut t = Tapelist::default();
        for (d, l) in labels {
            t.upsert(TapeEntry::ours(d, l, "c"));
        }
        t
    }

    fn lab(l: &str) -> SlotView {
        SlotView::Labeled { label: l.into() }
    }

    /// [`choose`] with no protected volume: the choice.
    fn pick(
        slots: &[(String, SlotView)],
        tapelist: &Tapelist,
        used: &[String],
        a: &Autolabel,
        tapecycle: u32,
    ) -> Result<Choice, NoVolume> {
        choose(
            slots,
            tapelist,
            used,
            &BTreeMap::new(),
            &policy(a, tapecycle),
        )
        .map(|(c, _)| c)
    }

    /// Slots 1 to 3 holding vt-01 to vt-03.
    fn labelled_slots() -> Vec<(String, SlotView)> {
        (1..=3)
            .map(|i| (format!("slot {i}"), lab(&format!("vt-0{i}"))))
            .collect()
    }

    /// vt-01 to vt-03 written on the first three nights of 2026.
    fn three_nights() -> Tapelist {
        tl(&[
            ("20260101000000", "vt-01"),
            ("20260102000000", "vt-02"),
            ("20260103000000", "vt-03"),
        ])
    }

    /// A copy of a dump of `dle`, on volume `label` or none.
    fn copy(
        dle: &str,
        level: i32,
        datestamp: &str,
        label: Option<&str>,
        on_holding: bool,
    ) -> DumpCopy {
        DumpCopy {
            dle: dle.into(),
            level,
            datestamp: datestamp.into(),
            labels: label.map(String::from).into_iter().collect(),
            on_holding,
        }
    }

    #[test]
    fn an_empty_slot_is_labelled_with_the_next_counter() {
        let a = auto("vt-%%", &["empty"]);
        let slots = vec![
            ("slot 1".into(), lab("vt-01")),
            ("slot 2".into(), SlotView::Empty),
        ];
        let t = tl(&[("20260101000000", "vt-01")]);
        let c = pick(&slots, &t, &[], &a, 3).unwrap();
        assert_eq!(
            c,
            Choice::Label {
                slot: 1,
                label: "vt-02".into(),
                replaces: None
            }
        );
    }

    #[test]
    fn the_oldest_volume_is_reused_after_tapecycle() {
        let a = auto("vt-%%", &["empty"]);
        let slots = labelled_slots();
        let t = tl(&[("20260101000000", "vt-01"), ("20260102000000", "vt-02")]);
        // Two volumes, tapecycle 3: both are kept; vt-03 is not in the tapelist.
        let e = pick(&slots, &t, &[], &a, 3).unwrap_err();
        assert!(
            e.to_string()
                .contains("vt-03, which is not in the tapelist"),
            "{e}"
        );
        let t = three_nights();
        let c = pick(&slots, &t, &[], &a, 3).unwrap();
        assert_eq!(c.label(), "vt-01");
        // Written tonight already: the next oldest reusable one (none: tapecycle keeps 2).
        let e = pick(&slots, &t, &["vt-01".into()], &a, 3).unwrap_err();
        assert!(
            e.reasons.iter().any(|r| r.contains("tapecycle 3 keeps")),
            "{e}"
        );
        let c = pick(&slots, &t, &["vt-01".into()], &a, 2).unwrap();
        assert_eq!(c.label(), "vt-02");
    }

    #[test]
    fn a_volume_with_the_only_full_is_never_reused() {
        let a = auto("vt-%%", &["empty"]);
        let slots = labelled_slots();
        let t = three_nights();
        let copies = vec![
            copy("h:/a", 0, "20260101000000", Some("vt-01"), false),
            copy("h:/a", 1, "20260102000000", Some("vt-02"), false),
        ];
        let keep = protected(&copies);
        assert_eq!(keep.len(), 1);
        // tapecycle 2: vt-01 and vt-02 are reusable; vt-01 holds the only full.
        let (c, notes) = choose(&slots, &t, &[], &keep, &policy(&a, 2)).unwrap();
        assert_eq!(c.label(), "vt-02");
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains(
                "vt-01 (written 20260101000000) is kept: it holds the only full dump of h:/a"
            ),
            "{notes:?}"
        );
        // A newer full on the holding disk frees it.
        let mut more = copies.clone();
        more.push(copy("h:/a", 0, "20260104000000", None, true));
        let (c, _) = choose(&slots, &t, &[], &protected(&more), &policy(&a, 2)).unwrap();
        assert_eq!(c.label(), "vt-01");
    }

    #[test]
    fn foreign_volumes_are_refused_unless_autolabel_allows_them() {
        let a = auto("vt-%%", &["empty"]);
        let slots = vec![
            (
                "slot 1".into(),
                SlotView::NotAmanda("slot1 holds 2 file(s) but no Amanda volume label".into()),
            ),
            ("slot 2".into(), lab("other-07")),
        ];
        let e = pick(&slots, &Tapelist::default(), &[], &a, 3).unwrap_err();
        assert_eq!(e.reasons.len(), 2, "{e}");
        assert!(
            e.reasons[0].contains("slot 1 is not ours: slot1 holds 2 file(s)"),
            "{e}"
        );
        assert!(
            e.reasons[1].contains("other-07, which does not match labelstr"),
            "{e}"
        );
        let a = auto("vt-%%", &["other_config"]);
        let c = pick(&slots, &Tapelist::default(), &[], &a, 3).unwrap();
        assert_eq!(
            c,
            Choice::Label {
                slot: 1,
                label: "vt-01".into(),
                replaces: Some("label other-07".into())
            }
        );
        let none = Autolabel::default();
        let e = pick(
            &[("slot 1".into(), SlotView::Empty)],
            &Tapelist::default(),
            &[],
            &none,
            3,
        )
        .unwrap_err();
        assert!(e.to_string().contains("autolabel does not allow"), "{e}");
        let e = pick(&[], &Tapelist::default(), &[], &none, 3).unwrap_err();
        assert!(e.to_string().contains("no slot"), "{e}");
    }

    #[test]
    fn autolabel_templates_expand() {
        let a = auto("$c-$o-%%%", &["empty"]);
        let any = |_: &str| true;
        let p = Policy {
            labelstr: &any,
            ..policy(&a, 1)
        };
        assert_eq!(
            next_label(&p, &|l| l == "c-o-001").as_deref(),
            Some("c-o-002")
        );
    }

    /// Six nights in virtual time (issue 15): tapecycle 3, four slots, DLE a fully dumped
    /// on night 1 only, b every night. Volumes: 01 02 03, then the new 04 (01 is the oldest
    /// but holds a's only full), then 02 and 03 are reused; with three slots night 4 has
    /// no volume and says why.
    #[test]
    fn six_nights_reuse_the_oldest_volume_but_never_the_only_full() {
        fn night_plan(nslots: usize) -> Vec<Result<String, NoVolume>> {
            let a = auto("vt-%%", &["empty"]);
            let mut slots: Vec<(String, SlotView)> = (1..=nslots)
                .map(|i| (format!("slot {i}"), SlotView::Empty))
                .collect();
            let mut t = Tapelist::default();
            let mut copies: Vec<DumpCopy> = Vec::new();
            let mut out = Vec::new();
            for night in 1..=6 {
                let ds = format!("2026010{night}000000");
                // Tonight's dumps are on the holding disk when the volume is chosen.
                let tonight = vec![
                    copy("h:/a", i32::from(night != 1), &ds, None, true),
                    copy("h:/b", 0, &ds, None, true),
                ];
                let mut all = copies.clone();
                all.extend(tonight.iter().cloned());
                match choose(&slots, &t, &[], &protected(&all), &policy(&a, 3)) {
                    Ok((c, _)) => {
                        let label = c.label().to_owned();
                        slots[c.slot()].1 = lab(&label);
                        t.upsert(TapeEntry::ours(&ds, &label, "c"));
                        copies.retain(|x| !x.labels.contains(&label));
                        for mut x in tonight {
                            x.labels = vec![label.clone()];
                            x.on_holding = false;
                            copies.push(x);
                        }
                        out.push(Ok(label));
                    }
                    Err(e) => out.push(Err(e)),
                }
            }
            out
        }
        let got: Vec<String> = night_plan(4).into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(got, ["vt-01", "vt-02", "vt-03", "vt-04", "vt-02", "vt-03"]);
        let three = night_plan(3);
        let e = three[3].as_ref().unwrap_err().to_string();
        assert!(
            e.contains(
                "vt-01 (written 20260101000000) is kept: it holds the only full dump of h:/a"
            ),
            "{e}"
        );
    }
}
