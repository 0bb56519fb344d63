//! Flame graphs of folded stacks, drawn by inferno.

use std::io::Write;
use std::path::Path;

use anyhow::anyhow;
use loopscope::core::export::Folded;

use crate::Failure;

/// Draws folded stacks (`stack count` lines) as a flame graph (SVG) into `out`.
pub fn draw(folded: &[u8], what: Folded, file: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    let mut options = inferno::flamegraph::Options::default();
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    match what {
        Folded::Samples => {
            options.title = format!("Where slow polls spend their time: {name}");
            options.count_name = "samples".into();
        }
        Folded::Stalls => {
            options.title = format!("Where stalls blocked: {name}");
            options.count_name = "µs".into();
        }
    }
    let text = String::from_utf8_lossy(folded);
    if text.trim().is_empty() {
        // inferno refuses an empty input; an empty graph says so instead.
        options.subtitle = Some("nothing to draw".into());
        return inferno::flamegraph::from_lines(&mut options, ["(none) 1"], out)
            .map_err(|e| Failure::Run(anyhow!("drawing the flame graph: {e}")));
    }
    inferno::flamegraph::from_lines(&mut options, text.lines(), out)
        .map_err(|e| Failure::Run(anyhow!("drawing the flame graph: {e}")))
}
