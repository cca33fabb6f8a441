//! The HTTP of an http check, by hand and pure: the request written, and
//! the verdict read from the response's status line. An HTTP/1.1 `GET`
//! with `Connection: close` needs nothing more, and a client crate would
//! bring a connection pool, TLS and redirects the check must not follow.

use std::fmt;

/// Longest response head read before giving up on finding the status line.
pub const MAX_STATUS_LINE: usize = 4096;

/// The request for `path` (validated: starts with `/`, no space or
/// control character) on `port`.
pub fn request(path: &str, port: u16) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: drover-health-check\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Why a response gives no verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadResponse {
    /// The connection ended before a whole status line.
    Incomplete,
    /// No line end within [`MAX_STATUS_LINE`] bytes.
    TooLong,
    /// The first line is not `HTTP/1.x <3 digits> ...`.
    NotHttp(String),
}

impl fmt::Display for BadResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Incomplete => f.write_str("connection closed before a complete status line"),
            Self::TooLong => write!(f, "no status line within {MAX_STATUS_LINE} bytes"),
            Self::NotHttp(line) => write!(f, "not an HTTP response: {line:?}"),
        }
    }
}

/// The status line and code in the first bytes of a response; `Ok(None)`
/// while more bytes are needed (no line end yet), `complete` when no more
/// will come.
pub fn status_line(head: &[u8], complete: bool) -> Result<Option<(String, u16)>, BadResponse> {
    let Some(end) = head.iter().position(|b| *b == b'\n') else {
        return if head.len() >= MAX_STATUS_LINE {
            Err(BadResponse::TooLong)
        } else if complete {
            Err(BadResponse::Incomplete)
        } else {
            Ok(None)
        };
    };
    let line = String::from_utf8_lossy(&head[..end]);
    let line = line.trim_end_matches('\r').to_owned();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !(version == "HTTP/1.1" || version == "HTTP/1.0")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(BadResponse::NotHttp(line));
    }
    let code: u16 = code
        .parse()
        .map_err(|_| BadResponse::NotHttp(line.clone()))?;
    if !(100..=599).contains(&code) {
        return Err(BadResponse::NotHttp(line));
    }
    Ok(Some((line, code)))
}

/// Whether a status code passes: 2xx and 3xx (redirects are not followed).
pub fn passes(code: u16) -> bool {
    (200..400).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_closing_http11_get_of_the_path() {
        let r = String::from_utf8(request("/health?x=1", 8080)).expect("ASCII");
        assert!(r.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{r}");
        assert!(r.contains("\r\nHost: 127.0.0.1:8080\r\n"), "{r}");
        assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
    }

    #[test]
    fn a_status_line_gives_its_code_and_text() {
        let got = status_line(b"HTTP/1.1 204 No Content\r\nServer: x\r\n", false);
        assert_eq!(got, Ok(Some(("HTTP/1.1 204 No Content".into(), 204))));
        let got = status_line(b"HTTP/1.0 500\n", true);
        assert_eq!(got, Ok(Some(("HTTP/1.0 500".into(), 500))));
    }

    #[test]
    fn a_partial_line_waits_for_more_until_the_connection_ends() {
        assert_eq!(status_line(b"HTTP/1.1 20", false), Ok(None));
        assert_eq!(
            status_line(b"HTTP/1.1 20", true),
            Err(BadResponse::Incomplete)
        );
        assert_eq!(status_line(b"", true), Err(BadResponse::Incomplete));
    }

    #[test]
    fn a_line_too_long_or_not_http_is_refused() {
        let long = vec![b'a'; MAX_STATUS_LINE];
        assert_eq!(status_line(&long, false), Err(BadResponse::TooLong));
        for bad in [
            &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1 OK 200\r\n",
            b"HTTP/2 200\r\n",
            b"HTTP/1.1 099 Low\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(status_line(bad, true), Err(BadResponse::NotHttp(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn two_and_three_hundreds_pass_the_rest_fail() {
        for (code, ok) in [
            (100, false),
            (199, false),
            (200, true),
            (302, true),
            (399, true),
            (400, false),
            (404, false),
            (500, false),
        ] {
            assert_eq!(passes(code), ok, "{code}");
        }
    }
}
