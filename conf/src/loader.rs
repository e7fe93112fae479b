//! Finding a configuration and reading it with its `includefile`s (stage 1 over files).
//!
//! Facts (common-src/conffile.c: config_init, read_conffile, config_dir_relative;
//! checked with Debian's `amgetconf`): a configuration *name* means the directory
//! `/etc/amanda/<name>` (`CONFIG_DIR`); the server reads `amanda.conf` there, the client
//! `amanda-client.conf`. A relative `includefile`, `diskfile`, `tapelist`, `infofile` ...
//! is relative to that config directory, not to the including file (a nested include
//! `includefile "b.conf"` inside `sub/a.conf` reads `<config dir>/b.conf`). Amanda does
//! not detect include cycles (it recurses until it crashes); we report them.
//!
//! amanda-rs extension: where Amanda takes a name, a path (anything containing `/`) is
//! accepted too: a directory, or an `amanda.conf`-like file whose directory is the config
//! directory.
//!
//! What this module must not do: interpret statements.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{ErrorKind, Errors, Loaded, Sink};
use crate::fs::{FileSystem, strerror};
use crate::source::{FileId, Location, SourceMap, Span};
use crate::syntax::{Item, SyntaxFile, parse_file};

/// Amanda's `CONFIG_DIR` in Debian's build (`amadmin x version`).
pub const CONFIG_DIR: &str = "/etc/amanda";

/// How deep `includefile`s may nest.
pub const MAX_INCLUDE_DEPTH: usize = 32;

/// Where one Amanda configuration lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigLocation {
    /// The configuration's name (`daily`), if it was given by name.
    pub name: Option<String>,
    /// The config directory: base of every relative path in the configuration.
    pub dir: PathBuf,
    /// The main file (`amanda.conf`).
    pub file: PathBuf,
}

impl ConfigLocation {
    /// Resolves what a user typed (`amdump daily`): a name under [`CONFIG_DIR`], or a path
    /// (containing `/`) to a config directory or to its `amanda.conf`. Pure: nothing is read.
    pub fn resolve(arg: &str) -> ConfigLocation {
        Self::resolve_in(Path::new(CONFIG_DIR), arg)
    }

    /// [`ConfigLocation::resolve`] with another `CONFIG_DIR` (tests, unusual builds).
    pub fn resolve_in(config_root: &Path, arg: &str) -> ConfigLocation {
        if arg.contains('/') {
            let p = PathBuf::from(arg);
            if arg.ends_with(".conf") {
                let dir = p
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("."));
                ConfigLocation {
                    name: None,
                    dir,
                    file: p,
                }
            } else {
                ConfigLocation {
                    name: None,
                    file: p.join("amanda.conf"),
                    dir: p,
                }
            }
        } else {
            let dir = config_root.join(arg);
            ConfigLocation {
                name: Some(arg.to_string()),
                file: dir.join("amanda.conf"),
                dir,
            }
        }
    }

    /// A path from the configuration, made absolute against the config directory
    /// (conffile.c: config_dir_relative).
    pub fn relative(&self, path: &str) -> PathBuf {
        resolve_relative(Some(&self.dir), path)
    }
}

pub(crate) fn resolve_relative(dir: Option<&Path>, path: &str) -> PathBuf {
    match dir {
        Some(dir) if !path.starts_with('/') => dir.join(path),
        _ => PathBuf::from(path),
    }
}

/// A configuration file and everything it includes, parsed (stage 1).
#[derive(Clone, Debug)]
pub struct Document {
    /// The text of every file read.
    pub sources: SourceMap,
    /// The syntax of every file read, by id.
    pub files: BTreeMap<FileId, SyntaxFile>,
    /// The main file (absent if it could not be read).
    pub root: Option<FileId>,
}

impl Document {
    /// Reads `path` and, recursively, its `includefile`s (relative ones against
    /// `config_dir`). Problems go to `sink`. With `missing_ok`, a main file that does not
    /// exist is not an error (amandad's `amanda-client.conf` is optional).
    pub(crate) fn load(
        fs: &dyn FileSystem,
        path: &Path,
        config_dir: Option<&Path>,
        missing_ok: bool,
        sources: SourceMap,
        sink: &mut Sink,
    ) -> Document {
        let mut l = Loading::new(fs, config_dir, sources);
        let display = path.to_string_lossy().into_owned();
        match fs.read(path) {
            Ok(bytes) => {
                let id = l.doc.sources.add(display.clone(), bytes);
                l.doc.root = Some(id);
                l.stack.push(display);
                l.parse(id, sink);
            }
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => sink.error(
                Location::file_only(&display),
                ErrorKind::Io {
                    path: display.clone(),
                    reason: strerror(&e),
                },
            ),
        }
        l.doc
    }

    /// Parses text already in memory, with includes read from `fs`.
    pub(crate) fn from_text(
        fs: &dyn FileSystem,
        name: &str,
        text: &[u8],
        config_dir: Option<&Path>,
        sink: &mut Sink,
    ) -> Document {
        let mut l = Loading::new(fs, config_dir, SourceMap::new());
        l.stack.push(name.to_string());
        let id = l.doc.sources.add(name, text.to_vec());
        l.doc.root = Some(id);
        l.parse(id, sink);
        l.doc
    }

    /// Parses text already in memory ([`Document::from_text`]) and builds a configuration
    /// from it with `build`; the result carries the warnings, or is every error.
    pub(crate) fn parse_text<T>(
        fs: &dyn FileSystem,
        name: &str,
        text: &[u8],
        config_dir: Option<&Path>,
        build: impl FnOnce(&Document, &mut Sink) -> T,
    ) -> Result<Loaded<T>, Errors> {
        let mut sink = Sink::default();
        let doc = Document::from_text(fs, name, text, config_dir, &mut sink);
        let value = build(&doc, &mut sink);
        sink.finish(value)
    }
}

struct Loading<'a> {
    fs: &'a dyn FileSystem,
    config_dir: Option<&'a Path>,
    doc: Document,
    stack: Vec<String>,
}

impl<'a> Loading<'a> {
    fn new(fs: &'a dyn FileSystem, config_dir: Option<&'a Path>, sources: SourceMap) -> Self {
        Loading {
            fs,
            config_dir,
            doc: Document {
                sources,
                files: BTreeMap::new(),
                root: None,
            },
            stack: Vec::new(),
        }
    }

    fn parse(&mut self, id: FileId, sink: &mut Sink) {
        let mut syntax = parse_file(&self.doc.sources, id, sink);
        for item in &mut syntax.items {
            if let Item::Include(inc) = item {
                inc.target = self.include(&inc.path, inc.path_span, sink);
            }
        }
        self.doc.files.insert(id, syntax);
    }

    fn include(&mut self, path: &str, at: Span, sink: &mut Sink) -> Option<FileId> {
        let full = resolve_relative(self.config_dir, path);
        let display = full.to_string_lossy().into_owned();
        let loc = self.doc.sources.location(at);
        if self.stack.contains(&display) {
            let mut chain = self.stack.clone();
            chain.push(display.clone());
            sink.error(
                loc,
                ErrorKind::IncludeCycle {
                    path: display,
                    chain: chain.join(" -> "),
                },
            );
            return None;
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            sink.error(
                loc,
                ErrorKind::IncludeTooDeep {
                    limit: MAX_INCLUDE_DEPTH,
                },
            );
            return None;
        }
        match self.fs.read(&full) {
            Ok(bytes) => {
                let id = self.doc.sources.add(display.clone(), bytes);
                self.stack.push(display);
                self.parse(id, sink);
                self.stack.pop();
                Some(id)
            }
            Err(e) => {
                sink.error(
                    loc,
                    ErrorKind::Io {
                        path: display,
                        reason: strerror(&e),
                    },
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_a_directory_under_etc_amanda_and_a_path_is_a_path() {
        let l = ConfigLocation::resolve("daily");
        assert_eq!(l.file, PathBuf::from("/etc/amanda/daily/amanda.conf"));
        assert_eq!(
            l.relative("disklist"),
            PathBuf::from("/etc/amanda/daily/disklist")
        );
        assert_eq!(l.relative("/abs/disklist"), PathBuf::from("/abs/disklist"));
        let l = ConfigLocation::resolve("/srv/cfg");
        assert_eq!(l.file, PathBuf::from("/srv/cfg/amanda.conf"));
        assert_eq!(l.name, None);
        let l = ConfigLocation::resolve("./x/my.conf");
        assert_eq!(l.dir, PathBuf::from("./x"));
    }
}
