//! Stalls as `tracing` events (the `tracing` feature), so they reach the program's own logs and
//! OpenTelemetry pipeline, as asyncio's debug mode logs slow callbacks: one WARN event with
//! target `loopscope` per recorded stall, when it ends.
//!
//! The recorder never reads debug information (see `docs/detector.md`), so the event names the
//! blocking function from the executable's symbol table, mapped from the file on first use (its
//! pages stay on disk); the line is in the recording, for `loopscope report`.

use std::collections::HashMap;

use loopscope_core::model::{ModuleDecl, SiteDecl, StackFrame, Stall, StallCategory};

/// Stalls open at once whose event is pending; a program with more (hundreds of workers stuck)
/// logs only the first ones.
const MAX_OPEN: usize = 1024;

/// What the event will say about a stall, gathered when it began.
struct Open {
    category: StallCategory,
    worker: u32,
    spawn_site: Option<String>,
    span: Option<String>,
    blocking_function: Option<String>,
    call: Option<String>,
}

/// The stalls waiting for their end, and the executable's symbols once needed.
#[derive(Default)]
pub(crate) struct StallLog {
    open: HashMap<u64, Open>,
    symbols: Option<Option<ExeSymbols>>,
    main: Option<ModuleDecl>,
}

impl StallLog {
    /// Notes loaded modules (the executable's load bias, to look its symbols up).
    pub(crate) fn modules(&mut self, modules: &[ModuleDecl]) {
        if let Some(m) = modules.iter().find(|m| m.main) {
            self.main = Some(m.clone());
        }
    }

    /// A stall began: what its event will say, if anyone listens.
    pub(crate) fn begin(&mut self, s: &Stall, sites: &[SiteDecl], spans: &[loopscope_core::model::SpanDecl]) {
        if !tracing::enabled!(target: "loopscope", tracing::Level::WARN) || self.open.len() >= MAX_OPEN {
            return;
        }
        let (blocking_function, call) = self.blocking_function(&s.frames);
        self.open.insert(
            s.id,
            Open {
                category: s.category,
                worker: s.worker,
                spawn_site: s.site.and_then(|i| sites.get(i as usize)).map(SiteDecl::location),
                span: (!s.spans.is_empty()).then(|| {
                    s.spans
                        .iter()
                        .filter_map(|i| spans.get(*i as usize))
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(":")
                }),
                blocking_function,
                call,
            },
        );
    }

    /// A further look at a stall: its stack names the function when the first did not (a
    /// thread inside a system call gives its stack when the call returns).
    pub(crate) fn look(&mut self, id: u64, frames: &[u64]) {
        if self.open.get(&id).is_some_and(|o| o.blocking_function.is_none()) {
            let (function, call) = self.blocking_function(frames);
            if let Some(o) = self.open.get_mut(&id) {
                (o.blocking_function, o.call) = (function, call);
            }
        }
    }

    /// A stall ended: its event.
    pub(crate) fn end(&mut self, id: u64, duration_ns: u64, category: Option<StallCategory>) {
        let Some(o) = self.open.remove(&id) else { return };
        let category = category.unwrap_or(o.category);
        let duration_ms = duration_ns as f64 / 1e6;
        tracing::warn!(
            target: "loopscope",
            duration_ms,
            category = %category,
            blocking_site = o.blocking_function.as_deref().unwrap_or("unknown"),
            call = o.call.as_deref().unwrap_or(""),
            spawn_site = o.spawn_site.as_deref().unwrap_or("unknown"),
            span = o.span.as_deref().unwrap_or(""),
            worker = o.worker,
            "event loop stalled for {duration_ms:.1} ms ({category}) in {}",
            o.blocking_function.as_deref().unwrap_or("an unknown function"),
        );
    }

    /// The innermost function of the program's own code in a stack, by the symbol table, and
    /// the library function it was calling.
    fn blocking_function(&mut self, frames: &[u64]) -> (Option<String>, Option<String>) {
        let Some(main) = self.main.clone() else { return (None, None) };
        let symbols = self.symbols.get_or_insert_with(|| ExeSymbols::open("/proc/self/exe")).as_ref();
        let Some(symbols) = symbols else { return (None, None) };
        let stack: Vec<StackFrame> = frames
            .iter()
            .map(|&a| {
                let inside = (main.start..main.end).contains(&a);
                let function = inside.then(|| symbols.name(a.wrapping_sub(main.bias))).flatten();
                StackFrame {
                    address: a,
                    function: function.unwrap_or_else(|| format!("{a:#x}")),
                    file: None,
                    line: None,
                    inlined: false,
                    object: (!inside).then(String::new),
                }
            })
            .collect();
        let Some(at) = loopscope_core::stall::blocking_site(&stack) else { return (None, None) };
        let name = |f: &StackFrame| loopscope_core::stall::short_name(&f.function);
        (Some(name(&stack[at])), at.checked_sub(1).map(|i| name(&stack[i])).filter(|c| !c.starts_with("0x")))
    }
}

/// The executable's symbol table, from the file mapped into memory (read-only, never freed: a
/// few pages of it are touched).
struct ExeSymbols {
    map: object::read::SymbolMap<object::read::SymbolMapName<'static>>,
}

impl ExeSymbols {
    fn open(path: &str) -> Option<ExeSymbols> {
        use object::Object as _;
        let file = std::fs::File::open(path).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok().filter(|l| *l > 0)?;
        // SAFETY: a fresh private read-only mapping of a file we opened; the pointer is checked
        // before use and the mapping is never unmapped, so the slice lives for 'static.
        let data: &'static [u8] = unsafe {
            use std::os::fd::AsRawFd as _;
            let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0);
            if p == libc::MAP_FAILED {
                return None;
            }
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        };
        let object = object::File::parse(data).ok()?;
        Some(ExeSymbols { map: object.symbol_map() })
    }

    fn name(&self, file_address: u64) -> Option<String> {
        let raw = self.map.containing(file_address)?.name();
        Some(match rustc_demangle::try_demangle(raw) {
            Ok(d) => format!("{d:#}"),
            Err(_) => raw.to_string(),
        })
    }
}
