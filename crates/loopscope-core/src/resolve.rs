//! Symbolizing on the reader's side.
//!
//! The recorder stores stacks as instruction addresses plus the modules they fall in
//! ([`ModuleDecl`]); the profiled program never parses debug information. Every reader passes
//! the frames it reads through a [`Resolver`], which turns addresses into functions, files and
//! lines with a [`Symbolize`] implementation (the `loopscope-symbols` crate reads the binaries on
//! disk and checks their build ids), then names each stall's blocking site
//! ([`crate::stall::attribute`]).

use std::collections::HashMap;

use crate::model::{Event, Frame, ModuleDecl, StackFrame};

/// One symbol at an address: several at one address when calls were inlined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbol {
    /// The function, demangled, without its hash.
    pub function: Option<String>,
    /// Its source file, when line tables have it.
    pub file: Option<String>,
    /// Its line.
    pub line: Option<u32>,
}

/// Turns addresses within a module's file into symbols.
pub trait Symbolize: Send {
    /// The symbols at `file_address` (a runtime address minus the module's load bias) in
    /// `module`, innermost (inlined) first; empty when nothing is known.
    fn symbolize(&mut self, module: &ModuleDecl, file_address: u64) -> Vec<Symbol>;

    /// What the user should know about the symbols given so far (a binary that is missing or
    /// has changed since the recording, a build without line tables), each said once.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Addresses resolved and kept, at most.
const CACHE: usize = 1 << 16;

/// How to get file and line in stall reports, for a program built without line tables.
pub const LINE_TABLES_HINT: &str = "add `[profile.release] debug = \"line-tables-only\"` to the program's Cargo.toml \
     (or build with CARGO_PROFILE_RELEASE_DEBUG=line-tables-only) for file and line";

/// Resolves the stacks of a recording's frames, in the order they are read.
pub struct Resolver {
    modules: Vec<ModuleDecl>,
    symbolizer: Option<Box<dyn Symbolize>>,
    cache: HashMap<u64, Vec<StackFrame>>,
    /// A stall was named by a function only: the program's code has no line tables.
    no_lines: Option<String>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("modules", &self.modules.len())
            .field("symbolizer", &self.symbolizer.is_some())
            .finish()
    }
}

impl Resolver {
    /// A resolver that symbolizes with `symbolizer`.
    pub fn new(symbolizer: Box<dyn Symbolize>) -> Resolver {
        Resolver { modules: Vec::new(), symbolizer: Some(symbolizer), cache: HashMap::new(), no_lines: None }
    }

    /// A resolver that names frames by address and module only.
    pub fn addresses_only() -> Resolver {
        Resolver { modules: Vec::new(), symbolizer: None, cache: HashMap::new(), no_lines: None }
    }

    /// Forgets the modules declared so far (a new live connection declares them again).
    pub fn reset(&mut self) {
        self.modules.clear();
        self.cache.clear();
    }

    /// What the user should know about the symbols: the symbolizer's notes (a binary missing or
    /// rebuilt since the recording), and, once, that a stall was named by a function only.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = self.symbolizer.as_ref().map(|s| s.notes()).unwrap_or_default();
        if let Some(note) = &self.no_lines
            && !notes.iter().any(|n| n.contains("no line tables"))
        {
            notes.push(note.clone());
        }
        notes
    }

    /// The modules declared so far.
    pub fn modules(&self) -> &[ModuleDecl] {
        &self.modules
    }

    /// Passes one frame through: declarations are kept, stall stacks symbolized and attributed.
    pub fn frame(&mut self, mut frame: Frame) -> Frame {
        match &mut frame {
            Frame::Modules(m) => self.modules.extend(m.iter().cloned()),
            Frame::Event(Event::StallBegin(s)) => {
                let resolved_here = s.stack.is_empty() && !s.frames.is_empty();
                if resolved_here {
                    s.stack = self.stack(&s.frames);
                }
                crate::stall::attribute(s);
                // Named by a function of the program's own, from the symbol table: no lines.
                if resolved_here
                    && self.no_lines.is_none()
                    && let Some(f) = s.stack.iter().find(|f| !crate::stall::is_library(f))
                    && f.file.is_none()
                {
                    let program = self.modules.iter().find(|m| m.main).map_or("the program", |m| m.file_name());
                    self.no_lines =
                        Some(format!("{program} has no line tables: stalls are named by function; {LINE_TABLES_HINT}"));
                }
            }
            Frame::Event(Event::StallLook { frames, stack, .. }) if stack.is_empty() && !frames.is_empty() => {
                *stack = self.stack(frames);
            }
            Frame::Samples(samples) => {
                for st in samples.stacks.iter_mut().filter(|st| st.stack.is_empty() && !st.frames.is_empty()) {
                    st.stack = self.stack(&st.frames);
                }
            }
            _ => {}
        }
        frame
    }

    /// Symbolizes a stack of runtime addresses (innermost first), inlined calls expanded.
    pub fn stack(&mut self, addresses: &[u64]) -> Vec<StackFrame> {
        let mut out = Vec::new();
        for &a in addresses {
            if let Some(frames) = self.cache.get(&a) {
                out.extend(frames.iter().cloned());
                continue;
            }
            let frames = self.address(a);
            if self.cache.len() >= CACHE {
                self.cache.clear();
            }
            self.cache.insert(a, frames.clone());
            out.extend(frames);
        }
        out
    }

    fn address(&mut self, address: u64) -> Vec<StackFrame> {
        let module = self.modules.iter().find(|m| m.contains(address));
        let object = module.filter(|m| !m.main).map(|m| m.file_name().to_string());
        let symbols = match (module, self.symbolizer.as_mut()) {
            (Some(m), Some(s)) => s.symbolize(m, address.wrapping_sub(m.bias)),
            _ => Vec::new(),
        };
        frames_at(address, object, symbols)
    }
}

/// The frames at one address from its symbols, innermost first: all but the last were inlined
/// into the next. No symbol gives one frame named by the address.
pub fn frames_at(address: u64, object: Option<String>, symbols: Vec<Symbol>) -> Vec<StackFrame> {
    let mut here: Vec<StackFrame> = symbols
        .into_iter()
        .map(|s| StackFrame {
            address,
            function: s
                .function
                .map_or_else(|| format!("{address:#x}"), |f| crate::stall::qualify(f, s.file.as_deref())),
            file: s.file,
            line: s.line,
            inlined: false,
            object: object.clone(),
        })
        .collect();
    if here.is_empty() {
        here.push(StackFrame {
            address,
            function: format!("{address:#x}"),
            file: None,
            line: None,
            inlined: false,
            object,
        });
    }
    let n = here.len();
    for (i, f) in here.iter_mut().enumerate() {
        f.inlined = i + 1 < n;
    }
    // Names come from a binary on disk, which anyone could have built.
    crate::validate::clean_stack(&mut here);
    here
}
