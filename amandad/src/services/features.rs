//! The feature set amandad advertises (spec §7): exactly what the services implement.
//!
//! A 3.5 server decides what it may ask of a client from this set: which OPTIONS keys it
//! sends, whether it sends XML DLEs, and which dumptype options it refuses up front with
//! "does not support ..." (server-src/diskfile.c: validate_optionstr; amcheck.c:
//! start_host). A bit we set promises behaviour; a bit we leave out makes the real server
//! refuse, or avoid, the dumptype option before it ever reaches us. The bits that only
//! matter between the server's own programs (amindexd, amidxtaped, amrecover) are left
//! out: amandad does not run them.
//!
//! What this module must not do: advertise a bit whose behaviour is not implemented here.
//! In particular never bit 117 (`sendbackup_stream_state`: the dumper would then demand a
//! `STATE` pair in the CONNECT line), and no kencrypt, calcsize, DUMP or pre/post-script
//! bits.

use proto::features::{Feature, Features};

/// Every feature amandad advertises, with the reason.
const ADVERTISED: &[(Feature, &str)] = &[
    (
        Feature::HAVE_FEATURE_SUPPORT,
        "we send a feature list at all",
    ),
    (
        Feature::OPTIONS_AUTH,
        "DLEs carry auth=/<auth>, checked against -auth= (spec §4.1 step 6)",
    ),
    (Feature::SELFCHECK_REQ, "selfcheck service"),
    (
        Feature::SELFCHECK_REQ_DEVICE,
        "selfcheck reads the device field / <diskdevice>",
    ),
    (Feature::SELFCHECK_REP, "selfcheck replies"),
    (
        Feature::SENDSIZE_REQ_NO_OPTIONS,
        "legacy sendsize lines without an OPTIONS tail parse",
    ),
    (
        Feature::SENDSIZE_REQ_OPTIONS,
        "legacy sendsize lines with an OPTIONS tail parse",
    ),
    (Feature::SENDSIZE_REQ_DEVICE, "sendsize reads the device"),
    (Feature::SENDSIZE_REP, "sendsize replies"),
    (Feature::SENDBACKUP_REQ, "sendbackup service"),
    (
        Feature::SENDBACKUP_REQ_DEVICE,
        "sendbackup reads the device",
    ),
    (Feature::SENDBACKUP_REP, "sendbackup replies"),
    (Feature::NOOP_REQ, "noop service"),
    (Feature::NOOP_REP, "noop replies"),
    (
        Feature::PROGRAM_GNUTAR,
        "program \"GNUTAR\" (sendbackup-gnutar.c behaviour)",
    ),
    (
        Feature::PROGRAM_APPLICATION_API,
        "program \"APPLICATION\" with the amgtar plugin",
    ),
    (
        Feature::OPTIONS_COMPRESS_FAST,
        "compress client fast: in-process gzip (issue 12)",
    ),
    (
        Feature::OPTIONS_COMPRESS_BEST,
        "compress client best: in-process gzip (issue 12)",
    ),
    (
        Feature::OPTIONS_COMPRESS_CUST,
        "compress client custom: client_custom_compress, no argument (issue 12)",
    ),
    (
        Feature::OPTIONS_ENCRYPT_CUST,
        "encrypt client: client_encrypt, no argument (issue 12)",
    ),
    (
        Feature::OPTIONS_CLIENT_DECRYPT_OPTION,
        "client_decrypt_option: only the server's restore uses it (issue 12)",
    ),
    (
        Feature::OPTIONS_SRVCOMP_FAST,
        "server-side compression needs nothing from us",
    ),
    (
        Feature::OPTIONS_SRVCOMP_BEST,
        "server-side compression needs nothing from us",
    ),
    (
        Feature::OPTIONS_NO_RECORD,
        "record NO: the listed-incremental .new file is dropped",
    ),
    (
        Feature::OPTIONS_INDEX,
        "index YES: the INDEX stream from tar --verbose --block-number",
    ),
    (
        Feature::OPTIONS_EXCLUDE_FILE,
        "exclude file patterns go to tar --exclude-from",
    ),
    (
        Feature::OPTIONS_EXCLUDE_LIST,
        "exclude list files are merged into --exclude-from",
    ),
    (
        Feature::OPTIONS_MULTIPLE_EXCLUDE,
        "several exclude files/lists are merged",
    ),
    (
        Feature::OPTIONS_OPTIONAL_EXCLUDE,
        "exclude optional: a missing list is not an error",
    ),
    (
        Feature::OPTIONS_INCLUDE_FILE,
        "include patterns (./ globs) go to tar --files-from",
    ),
    (
        Feature::OPTIONS_INCLUDE_LIST,
        "include list files are merged into --files-from",
    ),
    (
        Feature::OPTIONS_MULTIPLE_INCLUDE,
        "several include files/lists are merged",
    ),
    (
        Feature::OPTIONS_OPTIONAL_INCLUDE,
        "include optional: a missing list is not an error",
    ),
    (
        Feature::OPTIONS_BSD_AUTH,
        "the legacy bsd-auth option is understood",
    ),
    (
        Feature::REQ_OPTIONS_MAXDUMPS,
        "OPTIONS maxdumps= bounds parallel estimates",
    ),
    (
        Feature::REQ_OPTIONS_HOSTNAME,
        "OPTIONS hostname= names the gnutar-lists files",
    ),
    (
        Feature::REQ_OPTIONS_FEATURES,
        "OPTIONS features= tells us the server's features",
    ),
    (
        Feature::REP_OPTIONS_FEATURES,
        "we put features= into REP OPTIONS lines",
    ),
    (
        Feature::PARTIAL_ESTIMATE,
        "sendsize publishes cumulative partial output (PREP)",
    ),
    (
        Feature::OPTIONS_SRVCOMP_CUST,
        "server-side custom compression needs nothing from us",
    ),
    (
        Feature::OPTIONS_ENCRYPT_SERV_CUST,
        "server-side encryption needs nothing from us",
    ),
    (
        Feature::OPTIONS_SERVER_DECRYPT_OPTION,
        "server-side decrypt option needs nothing from us",
    ),
    (
        Feature::INTERFACE_QUOTED_TEXT,
        "disk names are quoted/unquoted like Amanda",
    ),
    (Feature::REQ_OPTIONS_CONFIG, "OPTIONS config= is accepted"),
    (
        Feature::REP_SENDSIZE_QUOTED_ERROR,
        "sendsize errors are quoted",
    ),
    (Feature::REQ_XML, "XML DLEs"),
    (Feature::XML_ESTIMATE, "<estimate> is read"),
    (
        Feature::XML_PROPERTY_PRIORITY,
        "<priority> in properties is read",
    ),
    (Feature::XML_ESTIMATELIST, "an <estimate> list is read"),
    (
        Feature::XML_LEVEL_SERVER,
        "<level>N<server>YES</server></level> is honoured",
    ),
    (
        Feature::XML_DATA_PATH,
        "<datapath> is read (only AMANDA is accepted)",
    ),
    (
        Feature::APPLICATION_CLIENT_NAME,
        "<client_name> in <backup-program> is accepted",
    ),
    (
        Feature::DUMPTYPE_PROPERTY,
        "dumptype properties are merged into amgtar's",
    ),
    (
        Feature::SENDBACKUP_CRC,
        "native-CRC/client-CRC lines in MESG",
    ),
    (
        Feature::SELFCHECK_MESSAGE,
        "selfcheck can answer MESSAGE JSON",
    ),
    (
        Feature::REQ_OPTIONS_TIMESTAMP,
        "OPTIONS timestamp= is accepted",
    ),
];

/// The features amandad advertises in every `OPTIONS features=` it writes.
///
/// Checked against a real 3.5.1 server: `program "GNUTAR"` and `program "APPLICATION"` with
/// the amgtar application pass its validations (bits 15, 16, 80; 21-30 for the usual
/// dumptype options), client compression and encryption (17, 18, 57, 59, 61), and a
/// dumptype we cannot honour is refused by the server itself (kencrypt; scripts: "does not
/// support script").
pub fn advertised() -> Features {
    ADVERTISED.iter().map(|(f, _)| *f).collect()
}

/// [`advertised`] as the lowercase hex string that goes on the wire.
pub fn advertised_hex() -> String {
    advertised().to_hex()
}

/// Why each bit is set, for documentation and `--help`-style output.
pub fn reasons() -> impl Iterator<Item = (Feature, &'static str)> {
    ADVERTISED.iter().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_advertises_state_stream_kencrypt_or_calcsize() {
        let f = advertised();
        for bad in [
            Feature::SENDBACKUP_STREAM_STATE,
            Feature::OPTIONS_KENCRYPT,
            Feature::CALCSIZE_ESTIMATE,
            Feature::SELFCHECK_CALCSIZE,
            Feature::PROGRAM_DUMP,
            Feature::PP_SCRIPT,
            Feature::SENDBACKUP_REQ_OPTIONS_DATA_SHM_CONTROL_NAME,
            Feature::XML_DIRECTTCP_LIST,
        ] {
            assert!(!f.has(bad), "{} must not be advertised", bad.name());
        }
    }

    #[test]
    fn advertises_what_a_3_5_server_needs_for_gnutar_and_amgtar() {
        let f = advertised();
        for good in [
            Feature::OPTIONS_AUTH,
            Feature::PROGRAM_GNUTAR,
            Feature::PROGRAM_APPLICATION_API,
            Feature::REQ_XML,
            Feature::OPTIONS_INDEX,
            Feature::OPTIONS_NO_RECORD,
            Feature::REQ_OPTIONS_FEATURES,
            Feature::REQ_OPTIONS_HOSTNAME,
            Feature::REQ_OPTIONS_MAXDUMPS,
            Feature::REQ_OPTIONS_CONFIG,
            Feature::SENDBACKUP_REQ_DEVICE,
            Feature::SENDSIZE_REQ_DEVICE,
            Feature::SELFCHECK_REQ_DEVICE,
            // issue 12: the real amcheck refuses client compression/encryption without them.
            Feature::OPTIONS_COMPRESS_FAST,
            Feature::OPTIONS_COMPRESS_BEST,
            Feature::OPTIONS_COMPRESS_CUST,
            Feature::OPTIONS_ENCRYPT_CUST,
            Feature::OPTIONS_CLIENT_DECRYPT_OPTION,
        ] {
            assert!(f.has(good), "{} must be advertised", good.name());
        }
    }

    #[test]
    fn hex_is_stable() {
        // A change here changes what every server sees; update docs/README with it.
        assert_eq!(advertised_hex(), "ffbfffff9c00107e10c0b10354000200000010");
    }

    #[test]
    fn no_bit_is_listed_twice() {
        let mut bits: Vec<u16> = ADVERTISED.iter().map(|(f, _)| f.bit()).collect();
        bits.sort_unstable();
        let n = bits.len();
        bits.dedup();
        assert_eq!(bits.len(), n);
    }
}
