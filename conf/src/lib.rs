//! `conf`: the Amanda 3.5 configuration language, and amanda-rs's own settings.
//!
//! Parsers for everything an Amanda installation configures, each in two stages like
//! ripgrep's `lowargs`/`hiargs`: first the syntax with a [`Span`] on every token
//! ([`syntax`], [`disklist::parse_lines`], ...), then a resolved, typed value
//! ([`Config`], [`ClientConfig`], [`Disklist`], [`AmandaHosts`], [`SecurityConf`]) with
//! Amanda's defaults applied (Debian 3.5.1's where the build changed them, see
//! [`defaults`]) and inheritance done. Errors name `file:line:column` and what was
//! expected; keywords this crate does not know are warnings, never failures.
//!
//! | file | entry point |
//! |---|---|
//! | amanda.conf (+ includefile) | [`Config::load`], [`Config::parse_str`] |
//! | amanda-client.conf | [`ClientConfig::load`], [`ClientConfig::parse_str`] |
//! | disklist | [`Disklist::parse`], [`Disklist::load`] |
//! | ~backup/.amandahosts | [`AmandaHosts::parse`], [`amandahosts::load`], [`AmandaHosts::check`] |
//! | /etc/amanda-security.conf | [`SecurityConf::parse`], [`security::load`] |
//! | /etc/amanda-rs/amanda-rs.toml + `AMANDA_RS_*` | [`Settings::load`] |
//!
//! Semantics follow Amanda 3.5.1's common-src/conffile.c, server-src/diskfile.c and
//! common-src/security-util.c, security-file.c (facts only; no code was copied), checked
//! against Debian's `amgetconf` where they matter.
//!
//! What this crate must not do: open sockets, bind ports, resolve host names, or read a
//! clock. Only [`fs::RealFs`], [`amandahosts::load`], [`security::load`] and
//! [`Settings::load`] touch the file system; everything else is pure.

#![warn(missing_docs)]

pub mod amandahosts;
pub mod client;
pub mod defaults;
pub mod diag;
pub mod disklist;
pub mod fs;
pub mod fuzz;
pub mod keywords;
mod lex;
pub mod loader;
pub mod model;
pub mod proxy;
pub mod quote;
pub mod resolve;
pub mod security;
pub mod server;
pub mod settings;
pub mod source;
pub mod ssl;
pub mod syntax;
pub mod value;

pub use amandahosts::{AmandaHosts, Refusal};
pub use client::ClientConfig;
pub use diag::{Error, ErrorKind, Errors, Loaded, Warning, WarningKind};
pub use disklist::{DiskEntry, Disklist};
pub use loader::ConfigLocation;
pub use model::{Application, AuthSetting, Dumptype, HoldingDisk, Interface, Program, Script};
pub use security::SecurityConf;
pub use server::Config;
pub use settings::Settings;
pub use source::{Location, Span};
pub use ssl::SslSettings;
