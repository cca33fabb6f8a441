//! Command output on stdout that ends quietly when the reader goes away:
//! `drover job status web | head` exits once `head` has what it wants,
//! as any Unix filter does, instead of panicking in `println!`. SIGPIPE
//! itself stays ignored (Rust's default), so that a peer closing a socket
//! is an error the gRPC client handles, never the end of the process.

use std::io::ErrorKind;

/// Ends the process after a failed write to stdout: quietly with 141 (the
/// status a shell reports for a process killed by SIGPIPE) when the
/// reader closed the pipe, with the error otherwise.
pub fn failed(error: &std::io::Error) -> ! {
    if error.kind() == ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: cannot write to standard output: {error}");
    std::process::exit(1);
}

/// `println!` to stdout, through [`failed`] when the write fails.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout::failed(&e);
        }
    }};
}
