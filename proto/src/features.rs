//! The Amanda feature bitmask (spec §7): which optional behaviours a peer supports.
//!
//! Feature `n` is bit `n & 7` of byte `n >> 3`, serialized as two lowercase hex digits per
//! byte, byte 0 first. The table of 3.5.1 has 149 features (0 to 148), so a set is always 19
//! bytes and 38 hex digits, exactly what a 3.5.1 peer sends and keeps: like
//! `am_string_to_feature`, parsing ignores bytes beyond the 19th (a 3.5.2 peer's 20th byte is
//! dropped) and treats missing bytes as 0. Bits 149 to 151 of the last byte are kept as
//! received (3.5.2's `fe_sendbackup_statedone` is bit 151) but have no [`Feature`] name.
//!
//! Which set amanda-rs advertises is the daemons' decision; this module gives them the
//! reference sets ([`Features::amanda_3_5_1`], [`Features::default_2_4_2p2`]) and a
//! chainable builder ([`Features::with`]).
//!
//! What this module must not do: decide policy, or accept a string a 3.5.1 peer would
//! reject.

use std::fmt;

/// Number of features in the 3.5.1 table (`last_feature`).
pub const FEATURE_COUNT: u16 = 149;

/// Bytes in a serialized set: `(last_feature + 8) / 8`.
pub const FEATURE_BYTES: usize = (FEATURE_COUNT as usize + 8) / 8;

/// One feature bit, named as in Amanda's `amfeatures.h` (upper case, without `fe_`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Feature(u16);

macro_rules! feature_table {
    ($(($n:literal, $id:ident, $name:literal),)*) => {
        impl Feature {
            $(
                #[doc = concat!("`", $name, "` (bit ", stringify!($n), ").")]
                pub const $id: Feature = Feature($n);
            )*
        }

        /// `amfeatures.h` names, indexed by bit number.
        const NAMES: [&str; FEATURE_COUNT as usize] = [$($name,)*];
    };
}

feature_table! {
    (0, HAVE_FEATURE_SUPPORT, "have_feature_support"),
    (1, OPTIONS_AUTH, "fe_options_auth"),
    (2, SELFCHECK_REQ, "fe_selfcheck_req"),
    (3, SELFCHECK_REQ_DEVICE, "fe_selfcheck_req_device"),
    (4, SELFCHECK_REP, "fe_selfcheck_rep"),
    (5, SENDSIZE_REQ_NO_OPTIONS, "fe_sendsize_req_no_options"),
    (6, SENDSIZE_REQ_OPTIONS, "fe_sendsize_req_options"),
    (7, SENDSIZE_REQ_DEVICE, "fe_sendsize_req_device"),
    (8, SENDSIZE_REP, "fe_sendsize_rep"),
    (9, SENDBACKUP_REQ, "fe_sendbackup_req"),
    (10, SENDBACKUP_REQ_DEVICE, "fe_sendbackup_req_device"),
    (11, SENDBACKUP_REP, "fe_sendbackup_rep"),
    (12, NOOP_REQ, "fe_noop_req"),
    (13, NOOP_REP, "fe_noop_rep"),
    (14, PROGRAM_DUMP, "fe_program_dump"),
    (15, PROGRAM_GNUTAR, "fe_program_gnutar"),
    (16, PROGRAM_APPLICATION_API, "fe_program_application_api"),
    (17, OPTIONS_COMPRESS_FAST, "fe_options_compress_fast"),
    (18, OPTIONS_COMPRESS_BEST, "fe_options_compress_best"),
    (19, OPTIONS_SRVCOMP_FAST, "fe_options_srvcomp_fast"),
    (20, OPTIONS_SRVCOMP_BEST, "fe_options_srvcomp_best"),
    (21, OPTIONS_NO_RECORD, "fe_options_no_record"),
    (22, OPTIONS_INDEX, "fe_options_index"),
    (23, OPTIONS_EXCLUDE_FILE, "fe_options_exclude_file"),
    (24, OPTIONS_EXCLUDE_LIST, "fe_options_exclude_list"),
    (25, OPTIONS_MULTIPLE_EXCLUDE, "fe_options_multiple_exclude"),
    (26, OPTIONS_OPTIONAL_EXCLUDE, "fe_options_optional_exclude"),
    (27, OPTIONS_INCLUDE_FILE, "fe_options_include_file"),
    (28, OPTIONS_INCLUDE_LIST, "fe_options_include_list"),
    (29, OPTIONS_MULTIPLE_INCLUDE, "fe_options_multiple_include"),
    (30, OPTIONS_OPTIONAL_INCLUDE, "fe_options_optional_include"),
    (31, OPTIONS_BSD_AUTH, "fe_options_bsd_auth"),
    (32, OPTIONS_KRB4_AUTH, "fe_options_krb4_auth"),
    (33, OPTIONS_KENCRYPT, "fe_options_kencrypt"),
    (34, REQ_OPTIONS_MAXDUMPS, "fe_req_options_maxdumps"),
    (35, REQ_OPTIONS_HOSTNAME, "fe_req_options_hostname"),
    (36, REQ_OPTIONS_FEATURES, "fe_req_options_features"),
    (37, REP_OPTIONS_MAXDUMPS, "fe_rep_options_maxdumps"),
    (38, REP_OPTIONS_HOSTNAME, "fe_rep_options_hostname"),
    (39, REP_OPTIONS_FEATURES, "fe_rep_options_features"),
    (40, REP_OPTIONS_SENDBACKUP_OPTIONS, "fe_rep_options_sendbackup_options"),
    (41, AMINDEXD_FILENO_IN_OLSD, "fe_amindexd_fileno_in_OLSD"),
    (42, AMINDEXD_FILENO_IN_ORLD, "fe_amindexd_fileno_in_ORLD"),
    (43, AMIDXTAPED_FSF, "fe_amidxtaped_fsf"),
    (44, AMIDXTAPED_LABEL, "fe_amidxtaped_label"),
    (45, AMIDXTAPED_DEVICE, "fe_amidxtaped_device"),
    (46, AMIDXTAPED_HOST, "fe_amidxtaped_host"),
    (47, AMIDXTAPED_DISK, "fe_amidxtaped_disk"),
    (48, AMIDXTAPED_DATESTAMP, "fe_amidxtaped_datestamp"),
    (49, AMIDXTAPED_HEADER, "fe_amidxtaped_header"),
    (50, AMIDXTAPED_NARGS, "fe_amidxtaped_nargs"),
    (51, AMIDXTAPED_CONFIG, "fe_amidxtaped_config"),
    (52, PARTIAL_ESTIMATE, "fe_partial_estimate"),
    (53, CALCSIZE_ESTIMATE, "fe_calcsize_estimate"),
    (54, SELFCHECK_CALCSIZE, "fe_selfcheck_calcsize"),
    (55, RECOVER_SPLITS, "fe_recover_splits"),
    (56, AMIDXTAPED_EXCHANGE_FEATURES, "fe_amidxtaped_exchange_features"),
    (57, OPTIONS_COMPRESS_CUST, "fe_options_compress_cust"),
    (58, OPTIONS_SRVCOMP_CUST, "fe_options_srvcomp_cust"),
    (59, OPTIONS_ENCRYPT_CUST, "fe_options_encrypt_cust"),
    (60, OPTIONS_ENCRYPT_SERV_CUST, "fe_options_encrypt_serv_cust"),
    (61, OPTIONS_CLIENT_DECRYPT_OPTION, "fe_options_client_decrypt_option"),
    (62, OPTIONS_SERVER_DECRYPT_OPTION, "fe_options_server_decrypt_option"),
    (63, AMINDEXD_MARSHALL_IN_OLSD, "fe_amindexd_marshall_in_OLSD"),
    (64, AMINDEXD_MARSHALL_IN_ORLD, "fe_amindexd_marshall_in_ORLD"),
    (65, AMINDEXD_MARSHALL_IN_DHST, "fe_amindexd_marshall_in_DHST"),
    (66, AMRECOVER_FEEDME, "fe_amrecover_FEEDME"),
    (67, AMRECOVER_TIMESTAMP, "fe_amrecover_timestamp"),
    (68, INTERFACE_QUOTED_TEXT, "fe_interface_quoted_text"),
    (69, PROGRAM_STAR, "fe_program_star"),
    (70, AMINDEXD_OPTIONS_HOSTNAME, "fe_amindexd_options_hostname"),
    (71, AMINDEXD_OPTIONS_FEATURES, "fe_amindexd_options_features"),
    (72, AMINDEXD_OPTIONS_AUTH, "fe_amindexd_options_auth"),
    (73, AMIDXTAPED_OPTIONS_HOSTNAME, "fe_amidxtaped_options_hostname"),
    (74, AMIDXTAPED_OPTIONS_FEATURES, "fe_amidxtaped_options_features"),
    (75, AMIDXTAPED_OPTIONS_AUTH, "fe_amidxtaped_options_auth"),
    (76, AMRECOVER_MESSAGE, "fe_amrecover_message"),
    (77, AMRECOVER_FEEDME_TAPE, "fe_amrecover_feedme_tape"),
    (78, REQ_OPTIONS_CONFIG, "fe_req_options_config"),
    (79, REP_SENDSIZE_QUOTED_ERROR, "fe_rep_sendsize_quoted_error"),
    (80, REQ_XML, "fe_req_xml"),
    (81, PP_SCRIPT, "fe_pp_script"),
    (82, AMINDEXD_DLE, "fe_amindexd_DLE"),
    (83, AMRECOVER_DLE_IN_HEADER, "fe_amrecover_dle_in_header"),
    (84, XML_ESTIMATE, "fe_xml_estimate"),
    (85, XML_PROPERTY_PRIORITY, "fe_xml_property_priority"),
    (86, SENDSIZE_REP_WARNING, "fe_sendsize_rep_warning"),
    (87, XML_ESTIMATELIST, "fe_xml_estimatelist"),
    (88, XML_LEVEL_SERVER, "fe_xml_level_server"),
    (89, XML_DATA_PATH, "fe_xml_data_path"),
    (90, XML_DIRECTTCP_LIST, "fe_xml_directtcp_list"),
    (91, AMIDXTAPED_DATAPATH, "fe_amidxtaped_datapath"),
    (92, SENDBACKUP_NOOP, "fe_sendbackup_noop"),
    (93, AMRECOVER_ORIGSIZE_IN_HEADER, "fe_amrecover_origsize_in_header"),
    (94, AMIDXTAPED_ABORT, "fe_amidxtaped_abort"),
    (95, AMRECOVER_CORRECT_DISK_QUOTING, "fe_amrecover_correct_disk_quoting"),
    (96, AMINDEXD_QUOTE_LABEL, "fe_amindexd_quote_label"),
    (97, AMRECOVER_RECEIVE_UNFILTERED, "fe_amrecover_receive_unfiltered"),
    (98, APPLICATION_CLIENT_NAME, "fe_application_client_name"),
    (99, SCRIPT_CLIENT_NAME, "fe_script_client_name"),
    (100, DUMPTYPE_PROPERTY, "fe_dumptype_property"),
    (101, SENDBACKUP_STATE, "fe_sendbackup_state"),
    (102, SENDBACKUP_CRC, "fe_sendbackup_crc"),
    (103, AMRECOVER_CRC_IN_HEADER, "fe_amrecover_crc_in_header"),
    (104, AMRECOVER_DATA_STATUS, "fe_amrecover_data_status"),
    (105, AMRECOVER_DATA_CRC, "fe_amrecover_data_crc"),
    (106, AMRECOVER_STORAGE_IN_MARSHALL, "fe_amrecover_storage_in_marshall"),
    (107, AMIDXTAPED_STORAGE_IN_MARSHALL, "fe_amidxtaped_storage_in_marshall"),
    (108, AMINDEXD_STORAGE, "fe_amindexd_STORAGE"),
    (109, SENDBACKUP_RETRY, "fe_sendbackup_retry"),
    (110, SENDBACKUP_RETRY_DELAY, "fe_sendbackup_retry_delay"),
    (111, SENDBACKUP_RETRY_LEVEL, "fe_sendbackup_retry_level"),
    (112, SENDBACKUP_RETRY_MESSAGE, "fe_sendbackup_retry_message"),
    (113, SELFCHECK_MESSAGE, "fe_selfcheck_message"),
    (114, SENDSIZE_MESSAGE, "fe_sendsize_message"),
    (115, SENDBACKUP_MESSAGE, "fe_sendbackup_message"),
    (116, SENDBACKUP_REP_RETRY, "fe_sendbackup_rep_retry"),
    (117, SENDBACKUP_STREAM_STATE, "fe_sendbackup_stream_state"),
    (118, AMRECOVER_STREAM_STATE, "fe_amrecover_stream_state"),
    (119, AMIDXTAPED_DAR, "fe_amidxtaped_dar"),
    (120, RESTORE_MESG_JSON, "fe_restore_mesg_json"),
    (121, RESTORE_STATE_STREAM, "fe_restore_state_stream"),
    (122, AMRECOVER_HEADER_SEND_SIZE, "fe_amrecover_header_send_size"),
    (123, AMRECOVER_HEADER_READY, "fe_amrecover_header_ready"),
    (124, AMRECOVER_HEADER_DONE, "fe_amrecover_header_done"),
    (125, AMRECOVER_STATE_SEND, "fe_amrecover_state_send"),
    (126, AMRECOVER_STATE_READY, "fe_amrecover_state_ready"),
    (127, AMRECOVER_STATE_DONE, "fe_amrecover_state_done"),
    (128, AMRECOVER_DATA_SEND, "fe_amrecover_data_send"),
    (129, AMRECOVER_DATA_READY, "fe_amrecover_data_ready"),
    (130, AMRECOVER_DATA_DONE, "fe_amrecover_data_done"),
    (131, RESTORE_HEADER_SEND_SIZE, "fe_restore_header_send_size"),
    (132, RESTORE_HEADER_READY, "fe_restore_header_ready"),
    (133, RESTORE_HEADER_DONE, "fe_restore_header_done"),
    (134, RESTORE_STATE_SEND, "fe_restore_state_send"),
    (135, RESTORE_STATE_READY, "fe_restore_state_ready"),
    (136, RESTORE_STATE_DONE, "fe_restore_state_done"),
    (137, RESTORE_DATA_SEND, "fe_restore_data_send"),
    (138, RESTORE_DATA_READY, "fe_restore_data_ready"),
    (139, RESTORE_DATA_DONE, "fe_restore_data_done"),
    (140, RESTORE_DAR, "fe_restore_dar"),
    (141, RESTORE_DATAPATH, "fe_restore_datapath"),
    (142, RESTORE_INCLUDE, "fe_restore_include"),
    (143, RESTORE_INCLUDE_GLOB, "fe_restore_include_glob"),
    (144, RESTORE_EXCLUDE, "fe_restore_exclude"),
    (145, RESTORE_EXCLUDE_GLOB, "fe_restore_exclude_glob"),
    (146, RESTORE_PREV_NEXT_LEVEL, "fe_restore_prev_next_level"),
    (147, SENDBACKUP_REQ_OPTIONS_DATA_SHM_CONTROL_NAME, "fe_sendbackup_req_options_data_shm_control_name"),
    (148, REQ_OPTIONS_TIMESTAMP, "fe_req_options_timestamp"),
}

impl Feature {
    /// The feature with bit number `n`, if it is in the 3.5.1 table.
    pub const fn from_bit(n: u16) -> Option<Feature> {
        if n < FEATURE_COUNT {
            Some(Feature(n))
        } else {
            None
        }
    }

    /// The bit number.
    pub const fn bit(self) -> u16 {
        self.0
    }

    /// The name in `amfeatures.h`, e.g. `fe_req_xml`.
    pub fn name(self) -> &'static str {
        NAMES
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("unknown_feature")
    }

    /// Looks a feature up by its `amfeatures.h` name.
    pub fn from_name(name: &str) -> Option<Feature> {
        NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(Feature)
    }

    /// Every feature of the table, in bit order.
    pub fn all() -> impl Iterator<Item = Feature> {
        (0..FEATURE_COUNT).map(Feature)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Features that 3.5.1's `am_init_feature_set` leaves out (all others up to 148 are set).
const NOT_IN_3_5_1: [u16; 9] = [32, 37, 38, 40, 50, 114, 115, 130, 139];

/// A set of features, as a peer advertises it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Features {
    bytes: [u8; FEATURE_BYTES],
}

/// Why a feature string was refused (where `am_string_to_feature` returns NULL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeaturesError {
    /// The literal `UNKNOWNFEATURE`, Amanda's way of saying "no feature list".
    #[error("feature string is UNKNOWNFEATURE")]
    Unknown,
    /// A byte that is not a hex digit, at this offset.
    #[error("bad feature string: byte {byte:#04x} at offset {offset} is not a hex digit")]
    BadDigit {
        /// Offset in the string.
        offset: usize,
        /// The offending byte.
        byte: u8,
    },
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl Features {
    /// No feature at all.
    pub const fn empty() -> Features {
        Features {
            bytes: [0; FEATURE_BYTES],
        }
    }

    /// What a real Amanda 3.5.1 client or server advertises:
    /// `ffffffff9efefbfffffffffffffff3fffbf71f`.
    pub fn amanda_3_5_1() -> Features {
        Feature::all()
            .filter(|f| !NOT_IN_3_5_1.contains(&f.bit()))
            .collect()
    }

    /// The set assumed for a peer that sent no feature list (`am_set_default_feature_set`,
    /// Amanda 2.4.2p2): `34cbfe811e01` followed by zeros.
    pub fn default_2_4_2p2() -> Features {
        [
            Feature::SELFCHECK_REQ,
            Feature::SELFCHECK_REP,
            Feature::SENDSIZE_REQ_NO_OPTIONS,
            Feature::SENDSIZE_REP,
            Feature::SENDBACKUP_REQ,
            Feature::SENDBACKUP_REP,
            Feature::PROGRAM_DUMP,
            Feature::PROGRAM_GNUTAR,
            Feature::OPTIONS_COMPRESS_FAST,
            Feature::OPTIONS_COMPRESS_BEST,
            Feature::OPTIONS_SRVCOMP_FAST,
            Feature::OPTIONS_SRVCOMP_BEST,
            Feature::OPTIONS_NO_RECORD,
            Feature::OPTIONS_BSD_AUTH,
            Feature::OPTIONS_INDEX,
            Feature::OPTIONS_EXCLUDE_FILE,
            Feature::OPTIONS_EXCLUDE_LIST,
            Feature::OPTIONS_KENCRYPT,
            Feature::REQ_OPTIONS_MAXDUMPS,
            Feature::REQ_OPTIONS_HOSTNAME,
            Feature::REQ_OPTIONS_FEATURES,
            Feature::REP_OPTIONS_SENDBACKUP_OPTIONS,
        ]
        .into_iter()
        .collect()
    }

    /// The minimal client set of spec §7.4 for plain GNUTAR with device support (bits 0-4,
    /// 6-13, 15, 17, 18, 21-30, 34-36, 68, 78): `dfbfe67f1c0000001040000000000000000000`.
    pub fn minimal_gnutar_client() -> Features {
        [0u16, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 15, 17, 18]
            .into_iter()
            .chain(21..=30)
            .chain([34, 35, 36, 68, 78])
            .filter_map(Feature::from_bit)
            .collect()
    }

    /// Parses a feature string exactly like `am_string_to_feature`: upper or lower case hex;
    /// at most [`FEATURE_BYTES`] bytes are read and anything after them is ignored (not even
    /// checked); missing bytes are 0; an odd trailing digit is dropped; a non-hex byte within
    /// the read part, or `UNKNOWNFEATURE`, is an error. Callers strip the trailing `;`.
    pub fn parse(s: &[u8]) -> Result<Features, FeaturesError> {
        if s == b"UNKNOWNFEATURE" {
            return Err(FeaturesError::Unknown);
        }
        let mut features = Features::empty();
        for (i, slot) in features.bytes.iter_mut().enumerate() {
            let offset = i * 2;
            let Some(&hi) = s.get(offset) else { break };
            // A NUL ends the C string.
            if hi == 0 {
                break;
            }
            let hi = hex_value(hi).ok_or(FeaturesError::BadDigit { offset, byte: hi })?;
            let lo = match s.get(offset + 1) {
                None | Some(0) => break, // odd number of digits: truncated, as 3.5.1 does
                Some(&lo) => hex_value(lo).ok_or(FeaturesError::BadDigit {
                    offset: offset + 1,
                    byte: lo,
                })?,
            };
            *slot = (hi << 4) | lo;
        }
        Ok(features)
    }

    /// The wire form: 38 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        let mut s = String::with_capacity(FEATURE_BYTES * 2);
        for b in self.bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// The raw bytes (byte 0 holds features 0 to 7).
    pub fn as_bytes(&self) -> &[u8; FEATURE_BYTES] {
        &self.bytes
    }

    /// Whether `f` is in the set.
    pub fn has(&self, f: Feature) -> bool {
        let i = usize::from(f.0 >> 3);
        self.bytes.get(i).is_some_and(|b| b & (1 << (f.0 & 7)) != 0)
    }

    /// Adds `f`.
    pub fn insert(&mut self, f: Feature) {
        if let Some(b) = self.bytes.get_mut(usize::from(f.0 >> 3)) {
            *b |= 1 << (f.0 & 7);
        }
    }

    /// Removes `f`.
    pub fn remove(&mut self, f: Feature) {
        if let Some(b) = self.bytes.get_mut(usize::from(f.0 >> 3)) {
            *b &= !(1 << (f.0 & 7));
        }
    }

    /// Builder style: the set plus `f`.
    #[must_use]
    pub fn with(mut self, f: Feature) -> Features {
        self.insert(f);
        self
    }

    /// Builder style: the set without `f`.
    #[must_use]
    pub fn without(mut self, f: Feature) -> Features {
        self.remove(f);
        self
    }

    /// Features in both sets (what two peers can both do).
    #[must_use]
    pub fn intersection(&self, other: &Features) -> Features {
        let mut bytes = self.bytes;
        for (b, o) in bytes.iter_mut().zip(other.bytes) {
            *b &= o;
        }
        Features { bytes }
    }

    /// Features in either set.
    #[must_use]
    pub fn union(&self, other: &Features) -> Features {
        let mut bytes = self.bytes;
        for (b, o) in bytes.iter_mut().zip(other.bytes) {
            *b |= o;
        }
        Features { bytes }
    }

    /// Features in `self` but not in `other`.
    #[must_use]
    pub fn difference(&self, other: &Features) -> Features {
        let mut bytes = self.bytes;
        for (b, o) in bytes.iter_mut().zip(other.bytes) {
            *b &= !o;
        }
        Features { bytes }
    }

    /// Whether no feature is set.
    pub fn is_empty(&self) -> bool {
        self.bytes.iter().all(|&b| b == 0)
    }

    /// The features in the set, in bit order.
    pub fn iter(&self) -> impl Iterator<Item = Feature> + '_ {
        Feature::all().filter(|f| self.has(*f))
    }
}

impl Default for Features {
    /// The empty set.
    fn default() -> Features {
        Features::empty()
    }
}

impl FromIterator<Feature> for Features {
    fn from_iter<I: IntoIterator<Item = Feature>>(iter: I) -> Features {
        let mut f = Features::empty();
        for x in iter {
            f.insert(x);
        }
        f
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Features({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const F_3_5_1: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

    #[test]
    fn amanda_3_5_1_set_matches_the_real_string() {
        assert_eq!(Features::amanda_3_5_1().to_hex(), F_3_5_1);
        let parsed = Features::parse(F_3_5_1.as_bytes()).unwrap();
        assert_eq!(parsed, Features::amanda_3_5_1());
        assert_eq!(parsed.to_hex(), F_3_5_1);
        assert!(parsed.has(Feature::REQ_XML));
        assert!(parsed.has(Feature::SENDBACKUP_STREAM_STATE));
        assert!(parsed.has(Feature::REQ_OPTIONS_TIMESTAMP));
        assert!(!parsed.has(Feature::REP_OPTIONS_HOSTNAME));
        assert!(!parsed.has(Feature::SENDSIZE_MESSAGE));
    }

    #[test]
    fn default_and_minimal_sets_match_spec_7() {
        assert_eq!(
            Features::default_2_4_2p2().to_hex(),
            format!("34cbfe811e01{}", "0".repeat(26))
        );
        assert_eq!(
            Features::minimal_gnutar_client().to_hex(),
            "dfbfe67f1c0000001040000000000000000000"
        );
        let xml = Features::minimal_gnutar_client()
            .with(Feature::PROGRAM_APPLICATION_API)
            .with(Feature::REQ_XML)
            .with(Feature::XML_ESTIMATE)
            .with(Feature::XML_ESTIMATELIST)
            .with(Feature::XML_DATA_PATH);
        assert_eq!(xml.to_hex(), "dfbfe77f1c0000001040910200000000000000");
    }

    #[test]
    fn names_follow_amfeatures_h() {
        assert_eq!(Feature::REQ_XML.bit(), 80);
        assert_eq!(Feature::REQ_XML.name(), "fe_req_xml");
        assert_eq!(Feature::HAVE_FEATURE_SUPPORT.name(), "have_feature_support");
        assert_eq!(Feature::SELFCHECK_MESSAGE.bit(), 113);
        assert_eq!(Feature::SENDBACKUP_STREAM_STATE.bit(), 117);
        assert_eq!(Feature::SENDBACKUP_CRC.bit(), 102);
        assert_eq!(Feature::PARTIAL_ESTIMATE.bit(), 52);
        assert_eq!(
            Feature::SENDBACKUP_REQ_OPTIONS_DATA_SHM_CONTROL_NAME.bit(),
            147
        );
        assert_eq!(Feature::REQ_OPTIONS_TIMESTAMP.bit(), 148);
        assert_eq!(
            Feature::from_name("fe_req_options_config"),
            Some(Feature::REQ_OPTIONS_CONFIG)
        );
        assert_eq!(Feature::from_bit(149), None);
    }

    #[test]
    fn parse_follows_am_string_to_feature() {
        // upper case accepted
        assert_eq!(
            Features::parse(F_3_5_1.to_uppercase().as_bytes()).unwrap(),
            Features::amanda_3_5_1()
        );
        // short strings: missing bytes are 0
        assert_eq!(
            Features::parse(b"01").unwrap(),
            Features::empty().with(Feature::HAVE_FEATURE_SUPPORT)
        );
        assert!(Features::parse(b"").unwrap().is_empty());
        // odd digit count: the last digit is dropped
        assert_eq!(
            Features::parse(b"01f").unwrap(),
            Features::empty().with(Feature::HAVE_FEATURE_SUPPORT)
        );
        // bad characters
        assert_eq!(
            Features::parse(b"0g"),
            Err(FeaturesError::BadDigit {
                offset: 1,
                byte: b'g'
            })
        );
        assert_eq!(
            Features::parse(b"x"),
            Err(FeaturesError::BadDigit {
                offset: 0,
                byte: b'x'
            })
        );
        assert_eq!(
            Features::parse(b"UNKNOWNFEATURE"),
            Err(FeaturesError::Unknown)
        );
        // the 3.5.2 string: byte 19 is beyond the 3.5.1 table and ignored, even if it is junk
        let tip = Features::parse(b"ffffffff9efefbfffffffffffffff3fffbf79f00").unwrap();
        assert_eq!(tip.to_hex(), "ffffffff9efefbfffffffffffffff3fffbf79f");
        assert!(Features::parse(b"ffffffff9efefbfffffffffffffff3fffbf71fzz").is_ok());
    }

    #[test]
    fn set_operations() {
        let a = Features::empty()
            .with(Feature::REQ_XML)
            .with(Feature::OPTIONS_AUTH);
        let b = Features::empty()
            .with(Feature::REQ_XML)
            .with(Feature::SENDBACKUP_CRC);
        assert_eq!(a.intersection(&b), Features::empty().with(Feature::REQ_XML));
        assert_eq!(a.union(&b).iter().count(), 3);
        assert_eq!(
            a.difference(&b),
            Features::empty().with(Feature::OPTIONS_AUTH)
        );
        assert_eq!(
            a.clone()
                .without(Feature::REQ_XML)
                .without(Feature::OPTIONS_AUTH),
            Features::empty()
        );
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in proptest::array::uniform19(any::<u8>())) {
            let f = Features { bytes };
            prop_assert_eq!(Features::parse(f.to_hex().as_bytes()).unwrap(), f);
        }

        #[test]
        fn parse_never_panics(s in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Features::parse(&s);
        }
    }
}
