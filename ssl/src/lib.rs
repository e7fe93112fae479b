//! Amanda's auth `ssl` on rustls, for both daemons (spec §13): TLS 1.3/1.2 over one TCP
//! connection (or any connected stream), bsdtcp's framing inside, certificates of the Amanda
//! CA made by `amssl` under `ssl-dir`.
//!
//! - [`config`]: rustls client/server configurations from the `ssl-*` settings (the files
//!   amssl makes, Amanda's defaults, errors naming file, keyword and line);
//! - [`verify`]: the CA check (the peer certificate signed directly by the Amanda CA);
//! - [`check`]: the checks after the handshake (CN, its resolution, the fingerprint file),
//!   with Amanda's texts;
//! - [`layer`]: the TLS layer a loop drives, and a blocking stream;
//! - [`x509`], [`sign`], [`pem`], [`fingerprint`]: what webpki and ring do not do for
//!   amssl's v1 certificates and 1024-bit RSA keys; [`names`]: Amanda's name checks.
//!
//! Why a crate of its own: amandad (acceptor) and dumper (initiator) need the same
//! verifier, checks and layer, and `proto` stays free of I/O and crypto. No OpenSSL is
//! linked: rustls with ring, and RustCrypto's `rsa` for the keys ring refuses.
//!
//! What this crate must not do: own sockets or event loops (the daemons do), or parse
//! Amanda's frames.

pub mod check;
pub mod config;
pub mod fingerprint;
pub mod layer;
pub mod names;
pub mod pem;
pub mod sign;
pub mod verify;
pub mod x509;

pub use check::{Check, CheckFailure, PeerIdentity, Side, check_peer};
pub use config::{Identity, SetupError, client_config, server_config};
pub use layer::{TlsLayer, TlsStream};
// The daemons hold rustls configurations without depending on rustls themselves.
pub use rustls;
