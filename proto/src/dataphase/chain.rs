//! The filter chain of a dump (spec §11): which stages run on the client and on the
//! server, in which order, which CRC is taken where, what the client announces on MESG, and
//! what the 32 KiB header says to undo them.
//!
//! ```text
//! application ──native-CRC──► [client compress] ► [client encrypt] ──client-CRC──► DATA
//! DATA ──(client-CRC checked)──► [server compress] ► [server encrypt] ──server-CRC──► stored
//! ```
//!
//! Restoring undoes the stages in reverse: decrypt (`<prog> <decrypt option>`), then
//! uncompress (`/bin/gzip -dc`, or `<custom prog> -d`).
//!
//! What this module must not do: run a filter. It describes the chain from the DLE; the
//! daemons run the stages (in-process gzip or external programs, crate `filters`).

use std::fmt;

use crate::dle::{Compress, Encrypt};
use crate::header::{FilterFields, FilterPrograms};
use crate::quote::ByteString;

/// How gzip is asked to trade speed for size (`gzip --fast` / `--best`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GzipLevel {
    /// `compress ... fast`.
    Fast,
    /// `compress ... best`.
    Best,
}

/// One stage of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stage {
    /// gzip (Amanda runs `gzip --fast|--best`; amanda-rs runs it in-process), undone by
    /// `/bin/gzip -dc`.
    Gzip(GzipLevel),
    /// A custom compression program, started without arguments, undone by `<prog> -d`.
    CustomCompress(ByteString),
    /// An encryption program, started without arguments, undone by `<prog> <decrypt>`.
    Encrypt {
        /// The program.
        program: ByteString,
        /// Its decrypt option (`-d` when the dumptype does not say).
        decrypt_option: ByteString,
    },
}

impl Stage {
    /// Whether this stage compresses.
    pub fn compresses(&self) -> bool {
        !matches!(self, Stage::Encrypt { .. })
    }

    /// The command that undoes this stage, as it appears in the header's restore line and
    /// as `amrestore` runs it: `/bin/gzip -dc`, `<prog> -d`, `<prog> <decrypt option>`.
    pub fn undo_command(&self) -> ByteString {
        match self {
            Stage::Gzip(_) => ByteString::from("/bin/gzip -dc"),
            Stage::CustomCompress(p) => cat(&[p.as_bytes(), b" -d"]),
            Stage::Encrypt {
                program,
                decrypt_option,
            } => cat(&[program.as_bytes(), b" ", decrypt_option.as_bytes()]),
        }
    }
}

fn cat(parts: &[&[u8]]) -> ByteString {
    ByteString::from(parts.concat())
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Gzip(GzipLevel::Fast) => f.write_str("gzip --fast"),
            Stage::Gzip(GzipLevel::Best) => f.write_str("gzip --best"),
            Stage::CustomCompress(p) => f.write_str(&String::from_utf8_lossy(p)),
            Stage::Encrypt { program, .. } => f.write_str(&String::from_utf8_lossy(program)),
        }
    }
}

/// Why a dumptype's compression and encryption cannot be combined or run (the real
/// server's texts, spec §11.7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// `encrypt client` with `compress server ...`.
    #[error(
        "Client encryption with server compression is not supported. See amanda.conf(5) for detail"
    )]
    ClientEncryptServerCompress,
    /// `compress client custom` without a program.
    #[error("client custom compression with no compression program specified")]
    NoClientCompressProgram,
    /// `compress server custom` without a program.
    #[error("server custom compression with no compression program specified")]
    NoServerCompressProgram,
    /// `encrypt client` without a program.
    #[error("encrypt client with no encryption program specified")]
    NoClientEncryptProgram,
    /// `encrypt server` without a program.
    #[error("encrypt server with no encryption program specified")]
    NoServerEncryptProgram,
}

/// The stages of one dump, each side in the order it runs them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FilterChain {
    /// Between the application and DATA (compression first, then encryption).
    pub client: Vec<Stage>,
    /// Between DATA and the holding disk (compression first, then encryption).
    pub server: Vec<Stage>,
}

impl FilterChain {
    /// The chain a DLE asks for.
    pub fn of(compress: &Compress, encrypt: &Encrypt) -> Result<FilterChain, ChainError> {
        let mut chain = FilterChain::default();
        let nonempty = |p: &ByteString, e: ChainError| {
            if p.is_empty() { Err(e) } else { Ok(p.clone()) }
        };
        match compress {
            Compress::None => {}
            Compress::Fast => chain.client.push(Stage::Gzip(GzipLevel::Fast)),
            Compress::Best => chain.client.push(Stage::Gzip(GzipLevel::Best)),
            Compress::Custom(p) => chain.client.push(Stage::CustomCompress(nonempty(
                p,
                ChainError::NoClientCompressProgram,
            )?)),
            Compress::ServerFast => chain.server.push(Stage::Gzip(GzipLevel::Fast)),
            Compress::ServerBest => chain.server.push(Stage::Gzip(GzipLevel::Best)),
            Compress::ServerCustom(p) => chain.server.push(Stage::CustomCompress(nonempty(
                p,
                ChainError::NoServerCompressProgram,
            )?)),
        }
        let decrypt = |o: &Option<ByteString>| {
            o.clone()
                .filter(|o| !o.is_empty())
                .unwrap_or_else(|| ByteString::from("-d"))
        };
        match encrypt {
            Encrypt::None => {}
            Encrypt::Custom {
                program,
                decrypt_option,
            } => {
                if !chain.server.is_empty() {
                    return Err(ChainError::ClientEncryptServerCompress);
                }
                chain.client.push(Stage::Encrypt {
                    program: nonempty(program, ChainError::NoClientEncryptProgram)?,
                    decrypt_option: decrypt(decrypt_option),
                });
            }
            Encrypt::ServerCustom {
                program,
                decrypt_option,
            } => chain.server.push(Stage::Encrypt {
                program: nonempty(program, ChainError::NoServerEncryptProgram)?,
                decrypt_option: decrypt(decrypt_option),
            }),
        }
        Ok(chain)
    }

    /// Whether the client runs a filter: then DATA is not the application's output, and the
    /// `size` line and native-CRC describe the bytes before the filters.
    pub fn client_filters(&self) -> bool {
        !self.client.is_empty()
    }

    /// The `COMPRESS_SUFFIX` info line value a client sends: `.gz` for every compression
    /// mode but none (the real 3.5.1 client sends it for server and custom modes too; the
    /// dumper trusts it only for client gzip, spec §11.3). `compress` is the DLE's.
    pub fn client_compress_suffix(compress: &Compress) -> Option<&'static str> {
        (*compress != Compress::None).then_some(".gz")
    }

    /// Every stage, in the order the bytes go through them.
    pub fn stages(&self) -> impl DoubleEndedIterator<Item = &Stage> {
        self.client.iter().chain(self.server.iter())
    }

    /// The header's view of the chain (spec §11.5): the `comp` suffix, `crypt enc`, the
    /// programs and decrypt options, and the restore pipeline's decrypt and uncompress
    /// commands (each with the spaces and trailing `|` the dumper writes).
    pub fn header_fields(&self) -> FilterFields {
        let mut h = FilterFields::default();
        for (server, stage) in self
            .client
            .iter()
            .map(|s| (false, s))
            .chain(self.server.iter().map(|s| (true, s)))
        {
            match stage {
                Stage::Gzip(_) => {
                    h.comp_suffix = Some(ByteString::from(".gz"));
                    h.uncompress_cmd = Some(ByteString::from(" /bin/gzip -dc |"));
                }
                Stage::CustomCompress(p) => {
                    h.comp_suffix = Some(ByteString::from("cust"));
                    side(&mut h, server).custom_compress = Some(p.clone());
                    h.uncompress_cmd = Some(cat(&[b" ", p.as_bytes(), b" -d |"]));
                }
                Stage::Encrypt {
                    program,
                    decrypt_option,
                } => {
                    h.encrypt_suffix = Some(ByteString::from("enc"));
                    let programs = side(&mut h, server);
                    programs.encrypt = Some(program.clone());
                    programs.decrypt_option = Some(decrypt_option.clone());
                    h.decrypt_cmd = Some(cat(&[
                        b" ",
                        program.as_bytes(),
                        b" ",
                        decrypt_option.as_bytes(),
                        b" |",
                    ]));
                }
            }
        }
        h
    }

    /// The commands that undo the whole chain, in the order a restore runs them.
    pub fn undo(&self) -> Vec<Stage> {
        self.stages().rev().cloned().collect()
    }
}

/// The server's or the client's programs of `h`.
fn side(h: &mut FilterFields, server: bool) -> &mut FilterPrograms {
    if server { &mut h.server } else { &mut h.client }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(p: &str) -> Encrypt {
        Encrypt::Custom {
            program: p.into(),
            decrypt_option: None,
        }
    }

    #[test]
    fn each_variant_of_spec_11_5_gives_its_header_fields() {
        let h = FilterChain::of(&Compress::Fast, &Encrypt::None)
            .unwrap()
            .header_fields();
        assert_eq!(h.comp_suffix.as_deref(), Some(b".gz".as_slice()));
        assert_eq!(
            h.uncompress_cmd.as_deref(),
            Some(b" /bin/gzip -dc |".as_slice())
        );
        assert!(h.encrypt_suffix.is_none());

        let h = FilterChain::of(&Compress::Custom("/usr/bin/zstd".into()), &Encrypt::None)
            .unwrap()
            .header_fields();
        assert_eq!(h.comp_suffix.as_deref(), Some(b"cust".as_slice()));
        assert_eq!(
            h.client.custom_compress.as_deref(),
            Some(b"/usr/bin/zstd".as_slice())
        );
        assert_eq!(
            h.uncompress_cmd.as_deref(),
            Some(b" /usr/bin/zstd -d |".as_slice())
        );

        let c = FilterChain::of(&Compress::Fast, &enc("/usr/sbin/amcrypt-ossl")).unwrap();
        assert!(c.client_filters());
        assert!(c.server.is_empty());
        let h = c.header_fields();
        assert_eq!(h.encrypt_suffix.as_deref(), Some(b"enc".as_slice()));
        assert_eq!(h.client.decrypt_option.as_deref(), Some(b"-d".as_slice()));
        assert_eq!(
            h.decrypt_cmd.as_deref(),
            Some(b" /usr/sbin/amcrypt-ossl -d |".as_slice())
        );
        assert_eq!(
            c.undo().iter().map(Stage::undo_command).collect::<Vec<_>>(),
            vec![
                ByteString::from("/usr/sbin/amcrypt-ossl -d"),
                ByteString::from("/bin/gzip -dc")
            ]
        );

        let c = FilterChain::of(
            &Compress::ServerCustom("/usr/bin/zstd".into()),
            &Encrypt::ServerCustom {
                program: "/usr/sbin/amcrypt-ossl".into(),
                decrypt_option: Some("-d".into()),
            },
        )
        .unwrap();
        assert!(!c.client_filters());
        let h = c.header_fields();
        assert_eq!(
            h.server.custom_compress.as_deref(),
            Some(b"/usr/bin/zstd".as_slice())
        );
        assert_eq!(
            h.server.encrypt.as_deref(),
            Some(b"/usr/sbin/amcrypt-ossl".as_slice())
        );
    }

    #[test]
    fn the_real_servers_refusals() {
        assert_eq!(
            FilterChain::of(&Compress::ServerFast, &enc("/p")),
            Err(ChainError::ClientEncryptServerCompress)
        );
        assert_eq!(
            FilterChain::of(&Compress::Custom("".into()), &Encrypt::None),
            Err(ChainError::NoClientCompressProgram)
        );
        assert_eq!(
            FilterChain::of(&Compress::None, &enc("")),
            Err(ChainError::NoClientEncryptProgram)
        );
        assert_eq!(
            FilterChain::client_compress_suffix(&Compress::ServerBest),
            Some(".gz")
        );
        assert_eq!(FilterChain::client_compress_suffix(&Compress::None), None);
    }
}
