//! What a recording may contain: one set of checks every reader goes through.
//!
//! [`crate::format::Reader`] checks each frame with a [`Declared`] before handing it out, so the
//! report, the exports, the gate, the TUI and the attach client accept and refuse the same
//! recordings. The checks bound what any frame can make a reader hold (ids refer to declarations,
//! counts and lengths stay under the limits below, histograms have loopscope's bounds), so a
//! corrupt or hostile file or stream costs memory in proportion to its size, never more.

use std::collections::HashSet;

use crate::dist::Dist;
use crate::model::{Event, Frame, Header, Interval, StackFrame, Stall, StallCategory};

/// Most spawn sites a recording may declare (the recorder's own cap is 100,000 plus `<other sites>`).
pub const MAX_SITES: usize = 100_001;
/// Most worker threads a recording may declare.
pub const MAX_WORKERS: usize = 65_536;
/// Most `tracing` span callsites a recording may declare (the recorder's cap is 1,024).
pub const MAX_SPANS: usize = 4_096;
/// Most spans one stall or sampled stack is in.
pub const MAX_SPAN_DEPTH: usize = 64;
/// Most frames in all the stacks of one frame of samples (the recorder keeps at most 128 per
/// stack and 1,000 stacks an interval), so that a small hostile file cannot make a reader
/// symbolize millions of frames.
pub const MAX_SAMPLED_FRAMES: usize = 1 << 17;
/// Most loaded modules a recording may declare.
pub const MAX_MODULES: usize = 4_096;
/// Most frames in one captured stack, raw or symbolized.
pub const MAX_STACK: usize = 4_096;
/// Longest string (a path, a function name, a message), in bytes.
pub const MAX_STRING: usize = 64 << 10;
/// Most command-line words, errors in a footer, or workload figures.
pub const MAX_LIST: usize = 4_096;

/// What has been declared so far in one recording, to check later frames against.
#[derive(Clone, Debug, Default)]
pub struct Declared {
    sites: usize,
    workers: usize,
    modules: usize,
    spans: usize,
    runtime: bool,
}

fn string(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_STRING { Err(format!("{what} of {} bytes (at most {MAX_STRING})", s.len())) } else { Ok(()) }
}

fn list<T>(what: &str, l: &[T]) -> Result<(), String> {
    if l.len() > MAX_LIST { Err(format!("{} {what} (at most {MAX_LIST})", l.len())) } else { Ok(()) }
}

fn dist(what: &str, d: &Dist) -> Result<(), String> {
    // The histogram's header (bounds, length) is checked by decoding its bucket list, which
    // never allocates more than the encoding holds.
    d.buckets().map(|_| ()).map_err(|e| format!("{what}: {e}"))
}

fn unique(what: &str, ids: impl Iterator<Item = u32>, declared: usize) -> Result<(), String> {
    let mut seen = HashSet::new();
    for id in ids {
        if id as usize >= declared {
            return Err(format!("refers to undeclared {what} {id}"));
        }
        if !seen.insert(id) {
            return Err(format!("lists {what} {id} twice"));
        }
    }
    Ok(())
}

/// How many more declarations of each kind a recording may make.
#[derive(Clone, Copy, Debug)]
pub struct Room {
    /// Spawn sites.
    pub sites: usize,
    /// Workers.
    pub workers: usize,
    /// Modules.
    pub modules: usize,
    /// Span callsites.
    pub spans: usize,
}

impl Declared {
    /// How many more of each declaration may come.
    pub fn room(&self) -> Room {
        Room {
            sites: MAX_SITES - self.sites,
            workers: MAX_WORKERS - self.workers,
            modules: MAX_MODULES - self.modules,
            spans: MAX_SPANS - self.spans,
        }
    }

    /// Checks a header.
    pub fn header(&mut self, h: &Header) -> Result<(), String> {
        if h.workers as usize > MAX_WORKERS {
            return Err(format!("header declares {} workers (at most {MAX_WORKERS})", h.workers));
        }
        if h.interval_ns == 0 {
            return Err("header declares an interval of 0 ns".into());
        }
        list("command-line words", &h.command_line)?;
        for w in &h.command_line {
            string("a command-line word", w)?;
        }
        string("the host name", &h.host)?;
        string("the loopscope version", &h.loopscope_version)?;
        if let Some(w) = &h.workload {
            string("the workload name", w)?;
        }
        Ok(())
    }

    fn declare(what: &str, count: &mut usize, ids: impl Iterator<Item = u32>, max: usize) -> Result<(), String> {
        for id in ids {
            if id as usize != *count {
                return Err(format!("{what} {id} declared out of order (expected {count})"));
            }
            if *count >= max {
                return Err(format!("more than {max} {what}s declared"));
            }
            *count += 1;
        }
        Ok(())
    }

    fn stall(&self, s: &Stall) -> Result<(), String> {
        if s.worker as usize >= self.workers {
            return Err(format!("stall {} refers to undeclared worker {}", s.id, s.worker));
        }
        if let Some(site) = s.site
            && site as usize >= self.sites
        {
            return Err(format!("stall {} refers to undeclared site {site}", s.id));
        }
        self.stack(&s.frames, &s.stack)?;
        self.span_stack(&s.spans).map_err(|e| format!("stall {}: {e}", s.id))?;
        for t in [&s.syscall, &s.fd_target, &s.blocking_site, &s.blocking_function, &s.call].into_iter().flatten() {
            string("a stall's text", t)?;
        }
        Ok(())
    }

    fn stack(&self, frames: &[u64], stack: &[crate::model::StackFrame]) -> Result<(), String> {
        if frames.len() > MAX_STACK || stack.len() > MAX_STACK {
            return Err(format!("a stack of {} frames (at most {MAX_STACK})", frames.len().max(stack.len())));
        }
        for f in stack {
            string("a function name", &f.function)?;
            for t in [&f.file, &f.object].into_iter().flatten() {
                string("a stack frame's file", t)?;
            }
        }
        Ok(())
    }

    fn span_stack(&self, spans: &[u32]) -> Result<(), String> {
        if spans.len() > MAX_SPAN_DEPTH {
            return Err(format!("in {} spans (at most {MAX_SPAN_DEPTH})", spans.len()));
        }
        match spans.iter().find(|s| **s as usize >= self.spans) {
            Some(s) => Err(format!("refers to undeclared span {s}")),
            None => Ok(()),
        }
    }

    fn interval(&self, i: &Interval) -> Result<(), String> {
        let ctx = |e: String| format!("interval {}: {e}", i.index);
        unique("site", i.sites.iter().map(|s| s.site), self.sites).map_err(ctx)?;
        unique("worker", i.workers.iter().map(|w| w.worker), self.workers).map_err(ctx)?;
        if i.gauges.local_queues.len() > MAX_WORKERS {
            return Err(ctx(format!("{} local queues", i.gauges.local_queues.len())));
        }
        if i.stall_tally.len() > self.sites.saturating_add(1).saturating_mul(StallCategory::ALL.len()) {
            return Err(ctx(format!("{} stall tallies", i.stall_tally.len())));
        }
        if let Some(t) = i.stall_tally.iter().find(|t| t.site.is_some_and(|s| s as usize >= self.sites)) {
            return Err(ctx(format!("a stall tally refers to undeclared site {:?}", t.site)));
        }
        list("panics", &i.panics).map_err(ctx)?;
        for p in &i.panics {
            if p.site.is_some_and(|s| s as usize >= self.sites) {
                return Err(ctx(format!("a panic refers to undeclared site {:?}", p.site)));
            }
            string("a panic's message", &p.message).map_err(ctx)?;
            if let Some(l) = &p.location {
                string("a panic's location", l).map_err(ctx)?;
            }
        }
        if i.spans.len() > self.sites.saturating_mul(self.spans).min(MAX_SPANS * 16) {
            return Err(ctx(format!("{} span histograms", i.spans.len())));
        }
        let mut pairs = HashSet::new();
        for s in &i.spans {
            if s.site as usize >= self.sites || s.span as usize >= self.spans {
                return Err(ctx(format!("a span histogram refers to undeclared site {} or span {}", s.site, s.span)));
            }
            if !pairs.insert((s.site, s.span)) {
                return Err(ctx(format!("lists site {} and span {} twice", s.site, s.span)));
            }
            dist("span poll histogram", &s.poll).map_err(ctx)?;
        }
        for s in &i.sites {
            dist("site poll histogram", &s.poll).map_err(ctx)?;
            dist("site scheduling histogram", &s.sched).map_err(ctx)?;
        }
        for w in &i.workers {
            dist("worker poll histogram", &w.poll).map_err(ctx)?;
            dist("worker scheduling histogram", &w.sched).map_err(ctx)?;
        }
        dist("lag probe histogram", &i.lag).map_err(ctx)
    }

    /// Checks one frame after the header against what came before, and takes in its declarations.
    pub fn check(&mut self, frame: &Frame) -> Result<(), String> {
        match frame {
            Frame::Header(_) => Err("a second header frame".into()),
            Frame::Runtime(r) => {
                if std::mem::replace(&mut self.runtime, true) {
                    return Err("a second runtime declaration".into());
                }
                if r.workers as usize > MAX_WORKERS {
                    return Err(format!("the runtime declares {} workers (at most {MAX_WORKERS})", r.workers));
                }
                Ok(())
            }
            Frame::Modules(m) => {
                for d in m {
                    string("a module path", &d.path)?;
                    if d.start >= d.end {
                        return Err(format!("module {} spans no addresses", d.id));
                    }
                    if d.build_id.as_ref().is_some_and(|b| b.len() > 64) {
                        return Err(format!("module {} has a build id longer than 64 bytes", d.id));
                    }
                }
                Self::declare("module", &mut self.modules, m.iter().map(|d| d.id), MAX_MODULES)
            }
            Frame::Sites(s) => {
                for d in s {
                    string("a spawn site's file", &d.file)?;
                }
                Self::declare("site", &mut self.sites, s.iter().map(|d| d.id), MAX_SITES)
            }
            Frame::Spans(d) => {
                for d in d {
                    string("a span's name", &d.name)?;
                    string("a span's target", &d.target)?;
                    if let Some(f) = &d.file {
                        string("a span's file", f)?;
                    }
                }
                Self::declare("span", &mut self.spans, d.iter().map(|d| d.id), MAX_SPANS)
            }
            Frame::Workers(w) => {
                for d in w {
                    string("a thread name", &d.thread_name)?;
                }
                Self::declare("worker", &mut self.workers, w.iter().map(|d| d.id), MAX_WORKERS)
            }
            Frame::Interval(i) => self.interval(i),
            Frame::Samples(s) => {
                list("sampled stacks", &s.stacks)?;
                let frames: usize = s.stacks.iter().map(|st| st.frames.len().max(st.stack.len())).sum();
                if frames > MAX_SAMPLED_FRAMES {
                    return Err(format!("samples of {frames} frames in all (at most {MAX_SAMPLED_FRAMES})"));
                }
                if s.period_ns == 0 {
                    return Err("samples of a period of 0 ns".into());
                }
                for st in &s.stacks {
                    if let Some(site) = st.site
                        && site as usize >= self.sites
                    {
                        return Err(format!("a sampled stack refers to undeclared site {site}"));
                    }
                    self.stack(&st.frames, &st.stack)?;
                    self.span_stack(&st.spans).map_err(|e| format!("a sampled stack: {e}"))?;
                }
                Ok(())
            }
            Frame::Event(Event::StallBegin(s)) => self.stall(s),
            Frame::Event(Event::StallLook { frames, stack, .. }) => self.stack(frames, stack),
            Frame::Event(Event::StallEnd { .. }) => Ok(()),
            Frame::Event(Event::RecorderError { message, .. }) => string("an error message", message),
            Frame::Workload(w) => {
                string("the workload name", &w.name)?;
                list("workload figures", &w.metrics)?;
                list("workload distributions", &w.distributions)?;
                for m in &w.metrics {
                    string("a figure's name", &m.name)?;
                    string("a figure's unit", &m.unit)?;
                }
                for d in &w.distributions {
                    string("a distribution's name", &d.name)?;
                    dist("a workload distribution", &d.dist)?;
                }
                Ok(())
            }
            Frame::TaskAges(t) => {
                let ctx = |e: String| format!("task ages of interval {}: {e}", t.interval);
                unique("site", t.sites.iter().map(|s| s.site), self.sites).map_err(ctx)?;
                for s in &t.sites {
                    dist("idle times", &s.idle).map_err(ctx)?;
                    dist("ages", &s.age).map_err(ctx)?;
                }
                if t.idlest.len() > crate::model::TaskAges::MAX_IDLEST {
                    return Err(ctx(format!(
                        "{} idle tasks listed (at most {})",
                        t.idlest.len(),
                        crate::model::TaskAges::MAX_IDLEST
                    )));
                }
                match t.idlest.iter().find(|i| i.site as usize >= self.sites) {
                    Some(i) => Err(ctx(format!("an idle task refers to undeclared site {}", i.site))),
                    None => Ok(()),
                }
            }
            Frame::TaskDump(d) => {
                let ctx = |e: String| format!("a task dump: {e}");
                if d.requests.len() > crate::model::TaskDump::MAX_REQUESTS {
                    return Err(ctx(format!(
                        "{} requests (at most {})",
                        d.requests.len(),
                        crate::model::TaskDump::MAX_REQUESTS
                    )));
                }
                if d.groups.len() > crate::model::TaskDump::MAX_GROUPS {
                    return Err(ctx(format!(
                        "{} groups (at most {})",
                        d.groups.len(),
                        crate::model::TaskDump::MAX_GROUPS
                    )));
                }
                match &d.outcome {
                    crate::model::DumpOutcome::TimedOut { stalled_workers, .. } => {
                        list("stalled workers", stalled_workers).map_err(ctx)?;
                        if let Some(w) = stalled_workers.iter().find(|w| **w as usize >= self.workers) {
                            return Err(ctx(format!("refers to undeclared worker {w}")));
                        }
                    }
                    crate::model::DumpOutcome::Unavailable { reason } => string("a reason", reason).map_err(ctx)?,
                    crate::model::DumpOutcome::Complete => {}
                }
                if let crate::model::DumpTrigger::Idle { site, .. } = d.trigger
                    && site as usize >= self.sites
                {
                    return Err(ctx(format!("its trigger refers to undeclared site {site}")));
                }
                let mut frames = 0usize;
                for g in &d.groups {
                    if g.site.is_some_and(|s| s as usize >= self.sites) {
                        return Err(ctx(format!("a group refers to undeclared site {:?}", g.site)));
                    }
                    if g.ids.len() > crate::model::TaskDump::MAX_IDS {
                        return Err(ctx(format!(
                            "a group lists {} task ids (at most {})",
                            g.ids.len(),
                            crate::model::TaskDump::MAX_IDS
                        )));
                    }
                    if g.traces.len() > crate::model::TaskDump::MAX_TRACES {
                        return Err(ctx(format!(
                            "a group of {} traces (at most {})",
                            g.traces.len(),
                            crate::model::TaskDump::MAX_TRACES
                        )));
                    }
                    for t in &g.traces {
                        frames += t.len();
                        self.stack(&[], t).map_err(ctx)?;
                    }
                }
                if frames > MAX_SAMPLED_FRAMES {
                    return Err(ctx(format!("{frames} frames in all (at most {MAX_SAMPLED_FRAMES})")));
                }
                Ok(())
            }
            Frame::Footer(f) => {
                list("errors", &f.errors)?;
                for e in &f.errors {
                    string("an error message", e)?;
                }
                Ok(())
            }
        }
    }
}

/// Replaces control characters (terminal escape sequences among them) in a recorded string with
/// visible escapes (`\x1b`), so that no reader ever prints one raw: a recording names files,
/// threads, hosts and a command line that anyone could have chosen.
pub fn clean(s: &mut String) {
    if s.chars().any(char::is_control) {
        *s = s.chars().map(|c| if c.is_control() { format!("\\x{:02x}", c as u32) } else { c.to_string() }).collect();
    }
}

fn clean_opt(s: &mut Option<String>) {
    if let Some(s) = s {
        clean(s);
    }
}

/// Cleans the symbolized frames of a stack.
pub fn clean_stack(stack: &mut [StackFrame]) {
    for f in stack {
        clean(&mut f.function);
        clean_opt(&mut f.file);
        clean_opt(&mut f.object);
    }
}

/// Cleans every string of a header.
pub fn clean_header(h: &mut Header) {
    clean(&mut h.loopscope_version);
    clean(&mut h.host);
    clean_opt(&mut h.workload);
    h.command_line.iter_mut().for_each(clean);
}

fn clean_stall(s: &mut Stall) {
    for t in [&mut s.syscall, &mut s.fd_target, &mut s.blocking_site, &mut s.blocking_function, &mut s.call] {
        clean_opt(t);
    }
    clean_stack(&mut s.stack);
}

/// Cleans every string of a frame (see [`clean`]).
pub fn clean_frame(frame: &mut Frame) {
    match frame {
        Frame::Header(h) => clean_header(h),
        Frame::Modules(m) => m.iter_mut().for_each(|d| clean(&mut d.path)),
        Frame::Sites(s) => s.iter_mut().for_each(|d| clean(&mut d.file)),
        Frame::Workers(w) => w.iter_mut().for_each(|d| clean(&mut d.thread_name)),
        Frame::Spans(d) => d.iter_mut().for_each(|d| {
            clean(&mut d.name);
            clean(&mut d.target);
            clean_opt(&mut d.file);
        }),
        Frame::Event(Event::StallBegin(s)) => clean_stall(s),
        Frame::Event(Event::StallLook { stack, .. }) => clean_stack(stack),
        Frame::Event(Event::RecorderError { message, .. }) => clean(message),
        Frame::Workload(w) => {
            clean(&mut w.name);
            for m in &mut w.metrics {
                clean(&mut m.name);
                clean(&mut m.unit);
            }
            w.distributions.iter_mut().for_each(|d| clean(&mut d.name));
        }
        Frame::Footer(f) => f.errors.iter_mut().for_each(clean),
        Frame::Samples(s) => s.stacks.iter_mut().for_each(|st| clean_stack(&mut st.stack)),
        Frame::Interval(i) => i.panics.iter_mut().for_each(|p| {
            clean(&mut p.message);
            clean_opt(&mut p.location);
        }),
        Frame::TaskDump(d) => {
            if let crate::model::DumpOutcome::Unavailable { reason } = &mut d.outcome {
                clean(reason);
            }
            d.groups.iter_mut().flat_map(|g| g.traces.iter_mut()).for_each(|t| clean_stack(t));
        }
        Frame::Runtime(_) | Frame::TaskAges(_) | Frame::Event(Event::StallEnd { .. }) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_made_visible() {
        let mut esc = "a\u{1b}]0;pwned\u{7}b\n".to_string();
        clean(&mut esc);
        assert_eq!(esc, r"a\x1b]0;pwned\x07b\x0a");
        let mut plain = "src/main.rs:10 — ok ünïcode".to_string();
        clean(&mut plain);
        assert_eq!(plain, "src/main.rs:10 — ok ünïcode");
    }
}
