//! Symbolizes the stacks of loopscope recordings from the binaries on disk.
//!
//! A recording holds stacks as instruction addresses and the modules they fall in (path, build
//! id, load bias); the profiled program never parses debug information. Readers (`loopscope
//! report`, `tui`, `export`, `check`) hand a [`Symbolizer`] to `loopscope_core`'s `Resolver`,
//! which asks it for the function, file and line at each address, inlined calls included.
//!
//! Before a file is used, its build id is compared with the recorded one: a binary rebuilt or
//! replaced since the recording would name the wrong code, so its frames stay addresses and a
//! note says why. A binary without line tables (a plain `cargo build --release`) still names
//! functions from its symbol table, and a note says how to get lines.

#![warn(missing_docs)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use loopscope_core::model::ModuleDecl;
use loopscope_core::resolve::{Symbol, Symbolize};
use object::{Object, ReadCache};

/// Files whose debug information is kept loaded at once.
const MAX_LOADED: usize = 16;

pub use loopscope_core::resolve::LINE_TABLES_HINT;

enum Loaded {
    Ready {
        loader: Box<addr2line::Loader>,
    },
    /// The file cannot be used; the note says why.
    Unusable,
}

/// Symbolizes from the files at the recorded paths, after checking their build ids.
pub struct Symbolizer {
    loaded: HashMap<String, Loaded>,
    notes: BTreeSet<String>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer").field("loaded", &self.loaded.len()).field("notes", &self.notes).finish()
    }
}

impl Symbolizer {
    /// A symbolizer with nothing loaded yet.
    pub fn new() -> Self {
        Symbolizer { loaded: HashMap::new(), notes: BTreeSet::new() }
    }

    /// A boxed symbolizer for `loopscope_core::resolve::Resolver::new`.
    pub fn boxed() -> Box<dyn Symbolize> {
        Box::new(Self::new())
    }

    fn load(&mut self, module: &ModuleDecl) -> &Loaded {
        if !self.loaded.contains_key(&module.path) && self.loaded.len() >= MAX_LOADED {
            self.loaded.clear();
        }
        if !self.loaded.contains_key(&module.path) {
            let loaded = match check(module) {
                Err(note) => {
                    if let Some(note) = note {
                        self.notes.insert(note);
                    }
                    Loaded::Unusable
                }
                Ok(lines) => match addr2line::Loader::new(&module.path) {
                    Ok(loader) => {
                        if module.main && !lines {
                            self.notes.insert(format!(
                                "{} has no line tables: stalls are named by function; {LINE_TABLES_HINT}",
                                Path::new(&module.path)
                                    .file_name()
                                    .map_or(module.path.clone(), |n| n.to_string_lossy().into_owned())
                            ));
                        }
                        Loaded::Ready { loader: Box::new(loader) }
                    }
                    Err(e) => {
                        self.notes.insert(format!("{}: cannot read its symbols ({e})", module.path));
                        Loaded::Unusable
                    }
                },
            };
            self.loaded.insert(module.path.clone(), loaded);
        }
        &self.loaded[&module.path]
    }
}

/// Whether the file at the module's path is the one that was recorded, and whether it has line
/// tables (or a separate debug file it points to); `Err(Some(note))` says why it cannot be used,
/// `Err(None)` is a module that has no file (the kernel's vDSO).
fn check(module: &ModuleDecl) -> Result<bool, Option<String>> {
    if module.path.starts_with('[') {
        return Err(None);
    }
    // Only a regular file: a recording names paths, and opening a FIFO would block the reader.
    let unusable = |why: String| Some(format!("{}: {why}; its frames are shown as addresses", module.path));
    match std::fs::metadata(&module.path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(unusable("not a regular file".into())),
        Err(e) => return Err(unusable(format!("cannot open it ({e})"))),
    }
    let file = std::fs::File::open(&module.path).map_err(|e| unusable(format!("cannot open it ({e})")))?;
    let cache = ReadCache::new(file);
    let parsed = object::File::parse(&cache).ok();
    let lines = parsed
        .as_ref()
        .is_some_and(|o| o.section_by_name(".debug_line").is_some() || o.gnu_debuglink().ok().flatten().is_some());
    let Some(recorded) = &module.build_id else { return Ok(lines) };
    let found = parsed.and_then(|o| o.build_id().ok().flatten().map(<[u8]>::to_vec));
    match found {
        Some(found) if found == *recorded => Ok(lines),
        found => Err(Some(format!(
            "{}: not the build that was recorded (build id {}, recorded {}): it was rebuilt or replaced since; its frames are shown as addresses",
            module.path,
            found.map_or_else(|| "none".to_string(), |b| hex(&b)),
            hex(recorded)
        ))),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Rust name without its hash; other names as they are.
pub fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_string(),
    }
}

impl Symbolize for Symbolizer {
    fn symbolize(&mut self, module: &ModuleDecl, file_address: u64) -> Vec<Symbol> {
        match self.load(module) {
            Loaded::Unusable => Vec::new(),
            Loaded::Ready { loader } => {
                let mut out = Vec::new();
                if let Ok(mut frames) = loader.find_frames(file_address) {
                    while let Ok(Some(frame)) = frames.next() {
                        let function =
                            frame.function.as_ref().and_then(|n| n.raw_name().ok()).map(|raw| demangle(&raw));
                        let (file, line) =
                            frame.location.map_or((None, None), |l| (l.file.map(str::to_string), l.line));
                        out.push(Symbol { function, file, line });
                    }
                }
                // No debug information for it: the symbol table may still name the function.
                if out.iter().all(|s| s.file.is_none())
                    && let Some(name) = loader.find_symbol(file_address)
                {
                    out = vec![Symbol { function: Some(demangle(name)), file: None, line: None }];
                }
                out
            }
        }
    }

    fn notes(&self) -> Vec<String> {
        self.notes.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(path: &str, build_id: Option<Vec<u8>>) -> ModuleDecl {
        ModuleDecl { id: 0, path: path.into(), main: true, build_id, bias: 0, start: 0x1000, end: 0x2000 }
    }

    #[test]
    fn only_the_recorded_build_of_a_regular_file_is_read() {
        let dir = std::env::temp_dir().join(format!("loopscope-symbols-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: creates a FIFO at a path of our own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut s = Symbolizer::new();
        // A FIFO (opening it would block), a directory, a missing file: addresses, and a note.
        for path in [fifo.to_str().unwrap(), dir.to_str().unwrap(), "/nonexistent/program"] {
            assert!(s.symbolize(&module(path, None), 0x10).is_empty(), "{path}");
        }
        // This test program with a wrong build id: refused, with both ids in the note.
        let me = std::env::current_exe().unwrap();
        assert!(s.symbolize(&module(me.to_str().unwrap(), Some(vec![1, 2, 3])), 0x10).is_empty());
        let notes = s.notes();
        assert_eq!(notes.len(), 4, "{notes:#?}");
        assert!(
            notes.iter().any(|n| n.contains("not the build that was recorded") && n.contains("010203")),
            "{notes:#?}"
        );
        assert!(notes.iter().any(|n| n.contains("not a regular file")), "{notes:#?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
