//! Cutting a host off the switch and plugging it back: its switch port
//! (`p-h{i}`, in the switch namespace) set down or up. The host's own
//! `eth0` only loses its carrier, so its addresses and routes stay, as on
//! a machine whose switch port or cable failed.

use std::path::Path;

use super::procs::run_in;
use super::{MultiHost, CMD_TIMEOUT};

impl MultiHost {
    /// Sets host `i`'s switch port down (`up == false`: the host is
    /// partitioned from the scheduler and every other host) or up again.
    ///
    /// # Panics
    ///
    /// When `ip` fails.
    pub fn set_host_link(&self, i: usize, up: bool) {
        let port = format!("p-h{i}");
        let state = if up { "up" } else { "down" };
        let switch = self.switch.as_ref().expect("switch namespace is open");
        let out = run_in(
            switch,
            Path::new("ip"),
            &["link", "set", port.as_str(), state],
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "`ip link set {port} {state}` in the switch namespace failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
