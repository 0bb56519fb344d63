//! `loopscope-test.toml`: what every `#[loopscope::test]` of a crate accepts, at the crate's root
//! (beside its `Cargo.toml`). Every error names the file, the line and the key.
//!
//! ```toml
//! # Polls of this crate's tests may block up to 5 ms before a test fails.
//! stall_threshold = "5ms"
//! # Fail on known blocking calls of any length (see docs/testing.md).
//! strict = true
//! # Functions and source files that may block.
//! allow = ["my_crate::logger::flush", "src/log.rs"]
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The policy file's name, looked for at the crate's root.
pub const POLICY_FILE: &str = "loopscope-test.toml";

/// A policy file that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The key, when one is at fault.
    pub key: Option<String>,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    stall_threshold: Option<Spanned<String>>,
    strict: Option<bool>,
    allow: Option<Vec<Spanned<String>>>,
}

/// What a crate's `loopscope-test.toml` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The file it came from.
    pub(crate) file: PathBuf,
    pub(crate) stall_threshold: Option<Duration>,
    pub(crate) strict: Option<bool>,
    pub(crate) allow: Vec<String>,
}

/// Reads `loopscope-test.toml` in `dir`, if there is one.
pub(crate) fn load(dir: &Path) -> Result<Option<Policy>, PolicyError> {
    let file = dir.join(POLICY_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => parse(&text, &file).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PolicyError { file, line: None, key: None, message: format!("cannot read it: {e}") }),
    }
}

/// Parses a policy's text; `file` names it in errors.
pub(crate) fn parse(text: &str, file: &Path) -> Result<Policy, PolicyError> {
    let at = |span: std::ops::Range<usize>, key: &str, message: String| PolicyError {
        file: file.to_path_buf(),
        line: Some(line_of(text, span.start)),
        key: Some(key.to_string()),
        message,
    };
    let raw: Raw = toml::from_str(text).map_err(|e| PolicyError {
        file: file.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        key: None,
        message: format!("{} (the keys are `stall_threshold`, `strict` and `allow`)", e.message().trim_end()),
    })?;
    let stall_threshold = match &raw.stall_threshold {
        None => None,
        Some(t) => {
            let d = humantime::parse_duration(t.get_ref()).map_err(|e| {
                at(
                    t.span(),
                    "stall_threshold",
                    format!("expected a duration such as \"5ms\" or \"2500us\", found {:?} ({e})", t.get_ref()),
                )
            })?;
            if d < Duration::from_millis(1) {
                return Err(at(
                    t.span(),
                    "stall_threshold",
                    format!(
                        "{:?} is below the watchdog's 1ms resolution (`strict = true` catches blocking calls of any \
                         length)",
                        t.get_ref()
                    ),
                ));
            }
            Some(d)
        }
    };
    let mut allow = Vec::new();
    for (i, entry) in raw.allow.iter().flatten().enumerate() {
        if entry.get_ref().trim().is_empty() {
            return Err(at(
                entry.span(),
                &format!("allow[{i}]"),
                "an empty entry would allow nothing: name a function (`my_crate::log::flush`) or a source path \
                 (`src/log.rs`)"
                    .into(),
            ));
        }
        allow.push(entry.get_ref().trim().to_string());
    }
    Ok(Policy { file: file.to_path_buf(), stall_threshold, strict: raw.strict, allow })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Path::new("/c/loopscope-test.toml")).unwrap_err().to_string()
    }

    #[test]
    fn a_policy_sets_threshold_strictness_and_allowed_code() {
        let p = parse(
            "# comment\nstall_threshold = \"5ms\"\nstrict = true\nallow = [\"app::log::flush\", \"src/log.rs\"]\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(p.stall_threshold, Some(Duration::from_millis(5)));
        assert_eq!(p.strict, Some(true));
        assert_eq!(p.allow, ["app::log::flush", "src/log.rs"]);
        assert_eq!(parse("", Path::new("x.toml")).unwrap().allow, Vec::<String>::new());
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        assert_eq!(
            err("strict = true\nstall_threshold = \"5 parsecs\"\n"),
            "/c/loopscope-test.toml:2: key `stall_threshold`: expected a duration such as \"5ms\" or \"2500us\", \
             found \"5 parsecs\" (unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, \
             days, weeks, months, years (and few variations))"
        );
        assert!(
            err("\n\nstall_threshold = \"100us\"").starts_with("/c/loopscope-test.toml:3: key `stall_threshold`: ")
        );
        assert!(err("allow = [\"a\",\n \"\"]").starts_with("/c/loopscope-test.toml:2: key `allow[1]`: an empty entry"));
        let unknown = err("strict = true\nalow = [\"a\"]\n");
        assert!(unknown.starts_with("/c/loopscope-test.toml:2: unknown field `alow`"), "{unknown}");
        assert!(unknown.ends_with("(the keys are `stall_threshold`, `strict` and `allow`)"), "{unknown}");
        assert!(err("strict = \"yes\"").starts_with("/c/loopscope-test.toml:1: "), "{}", err("strict = \"yes\""));
    }
}
