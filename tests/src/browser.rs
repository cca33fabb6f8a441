//! Looking at the status page as a person would: headless Chromium
//! (Debian's `chromium`) dumps the DOM it built or takes a screenshot, and
//! a plain HTTP/1.1 client reads the raw bytes. Every Chromium runs in a
//! process group of its own with a private profile directory; the group is
//! killed (by its id) when it ends, times out or the test fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::dev::DevCluster;

/// How long one Chromium run may take.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// The binary: `$DROVER_CHROMIUM`, else `chromium` on the `PATH`.
pub fn chromium_bin() -> PathBuf {
    std::env::var_os("DROVER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

/// `drover dev`'s status page address (`<data dir>/http.addr`).
///
/// # Panics
///
/// When the file is missing or malformed.
pub fn http_addr(c: &DevCluster) -> SocketAddr {
    let path = c.data_dir().join("http.addr");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

/// A Chromium process group, killed on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Runs headless Chromium on `url` with `args` (besides the headless
/// ones), with a private profile under `scratch`; its standard output.
///
/// # Panics
///
/// When Chromium is missing, fails or outlasts its deadline.
pub fn chromium(url: &str, args: &[&str], scratch: &Path) -> String {
    let profile = scratch.join(format!("chromium-profile-{}", std::process::id()));
    let out_path = scratch.join("chromium.stdout");
    let err_path = scratch.join("chromium.stderr");
    let out = std::fs::File::create(&out_path).expect("creating Chromium's stdout file");
    let err = std::fs::File::create(&err_path).expect("creating Chromium's stderr file");
    let child = Command::new(chromium_bin())
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--no-first-run", "--disable-extensions", "--mute-audio"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .env("HOME", scratch)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting {} ({e}): install Debian's chromium (deploy/deps.sh does)",
                chromium_bin().display()
            )
        });
    let mut group = Group(child);
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = group.0.try_wait().expect("waiting for Chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("Chromium on {url} took over {CHROMIUM_TIMEOUT:?}: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(group);
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(status.success(), "Chromium on {url}: {status}: {stderr}");
    stdout
}

/// The DOM Chromium built from `url`, serialized.
pub fn dump_dom(url: &str, scratch: &Path) -> String {
    chromium(url, &["--dump-dom"], scratch)
}

/// A 1280×900 screenshot of `url` into `png`.
///
/// # Panics
///
/// As [`chromium`], or when no PNG was written.
pub fn screenshot(url: &str, png: &Path, scratch: &Path) {
    let arg = format!("--screenshot={}", png.display());
    chromium(url, &[&arg, "--window-size=1280,900"], scratch);
    let bytes = std::fs::read(png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
}

/// `GET path` over plain HTTP/1.1 to `addr` (loopback): the status code
/// and the whole response, headers and body.
///
/// # Panics
///
/// When the connection or the read fails.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("setting a read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("sending the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line: {text:?}"));
    (code, text)
}
