//! The live protocol between a serving session (`SessionBuilder::serve`) and
//! `loopscope tui --attach`: the client sends [`HELLO`]; the server answers with the recording
//! format itself (preamble, then frames: the session so far, then each frame as it is made).

use std::net::SocketAddr;
use std::path::PathBuf;

/// What a client sends first: the protocol and its version.
pub const HELLO: &[u8; 16] = b"LSCOPE-ATTACH 1\n";

/// Where a session serves its live data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeAddr {
    /// A Unix domain socket at this path (created with owner-only permissions).
    Unix(PathBuf),
    /// A TCP address (loopback unless public serving is allowed explicitly).
    Tcp(SocketAddr),
}

impl ServeAddr {
    /// Parses `unix:PATH`, a path (anything with a `/`), or `HOST:PORT` with a numeric host.
    pub fn parse(s: &str) -> Option<ServeAddr> {
        if let Some(p) = s.strip_prefix("unix:") {
            return (!p.is_empty()).then(|| ServeAddr::Unix(p.into()));
        }
        if s.contains('/') {
            return Some(ServeAddr::Unix(s.into()));
        }
        s.parse().ok().map(ServeAddr::Tcp)
    }
}

impl std::fmt::Display for ServeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ServeAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(ServeAddr::parse("unix:/tmp/x.sock"), Some(ServeAddr::Unix("/tmp/x.sock".into())));
        assert_eq!(ServeAddr::parse("./x.sock"), Some(ServeAddr::Unix("./x.sock".into())));
        assert_eq!(ServeAddr::parse("127.0.0.1:6670"), Some(ServeAddr::Tcp("127.0.0.1:6670".parse().unwrap())));
        assert_eq!(ServeAddr::parse("[::1]:0").map(|a| a.to_string()), Some("[::1]:0".into()));
        for bad in ["", "unix:", "localhost", "6670", "host:port"] {
            assert_eq!(ServeAddr::parse(bad), None, "{bad}");
        }
    }
}
