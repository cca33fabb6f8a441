//! Scraping a Drover metrics endpoint and reading samples from the text
//! format, and `promtool check metrics` (Debian's `prometheus` package).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::DevCluster;

impl DevCluster {
    /// The metrics address of `drover dev` (`<data dir>/metrics.addr`).
    ///
    /// # Panics
    ///
    /// When the file is missing or malformed.
    pub fn metrics_addr(&self) -> SocketAddr {
        let path = self.data_dir().join("metrics.addr");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
    }
}

/// A GET of `path` on `addr`: the status line and headers, and the body.
///
/// # Panics
///
/// When the connection or the read fails.
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("setting a read timeout");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("sending to {addr}: {e}"));
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("reading from {addr}: {e}"));
    match out.split_once("\r\n\r\n") {
        Some((head, body)) => (head.to_string(), body.to_string()),
        None => (out, String::new()),
    }
}

/// The body of `GET /metrics` on `addr`, which must answer 200.
///
/// # Panics
///
/// When it does not.
pub fn scrape(addr: SocketAddr) -> String {
    let (head, body) = http_get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    body
}

/// The values of every sample of metric `name` (exact name, so `_bucket`
/// and `_count` series are their own names) whose labels include all of
/// `labels`, each as `key="value"`.
pub fn values(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
        .collect()
}

/// The one sample of `name` with `labels`, or `None` when there is none.
///
/// # Panics
///
/// When several match.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let v = values(text, name, labels);
    assert!(v.len() <= 1, "several samples of {name} {labels:?}: {v:?}");
    v.first().copied()
}

/// The sum of every sample of `name` with `labels` (0 when none).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    values(text, name, labels).iter().sum()
}

/// Runs `promtool check metrics` on `text`: whether it passed, and what it
/// printed (stdout then stderr).
///
/// # Panics
///
/// When promtool cannot be run (install Debian's `prometheus`, see
/// deploy/deps.sh).
pub fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (Debian's prometheus package; see deploy/deps.sh)");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\n\
                    a_total{status=\"running\",kind=\"x\"} 2\na_total{status=\"failed\"} 1\n\
                    b 4.5\n";
        assert_eq!(value(text, "a_total", &[("status", "running")]), Some(2.0));
        assert_eq!(sum(text, "a_total", &[]), 3.0);
        assert_eq!(value(text, "b", &[]), Some(4.5));
        assert_eq!(value(text, "a", &[]), None);
    }
}
