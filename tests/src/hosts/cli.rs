//! Talking to a [`MultiHost`]: the CLI in the control namespace, `ip` and
//! netlink in a host's namespace.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use drover_agent::net::{Netlink, PeerRoute};
use serde_json::Value;

use super::procs::{describe, run_in};
use super::{MultiHost, CMD_TIMEOUT, READY_TIMEOUT};
use crate::{drover_bin, poll_until};

impl MultiHost {
    /// Waits until `count` nodes are `ready`; returns `node list` as JSON.
    ///
    /// # Panics
    ///
    /// When that does not happen in time.
    pub fn wait_ready(&self, count: usize) -> Vec<Value> {
        poll_until(&format!("{count} ready nodes"), READY_TIMEOUT, || {
            let out = self.cli(&["node", "list", "-o", "json"]);
            let nodes: Value = serde_json::from_slice(&out.stdout).ok()?;
            let nodes = nodes.as_array()?.clone();
            let ready = nodes
                .iter()
                .filter(|n| n["status"].as_str() == Some("ready"))
                .count();
            (ready >= count).then_some(nodes)
        })
    }

    /// `node list -o json`, keyed by node id.
    pub fn nodes(&self) -> BTreeMap<String, Value> {
        self.cli_json(&["node", "list"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| Some((n["id"].as_str()?.to_string(), n)))
            .collect()
    }

    /// Runs `drover ARGS` in the control namespace against the scheduler,
    /// with the CLI certificate; returns how it ended.
    pub fn cli<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut all: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        let url = self.scheduler_url();
        let tls = [
            ("--tls-ca", self.pki_file("ca.pem")),
            ("--tls-cert", self.pki_file("cli.pem")),
            ("--tls-key", self.pki_file("cli-key.pem")),
        ];
        all.push(OsStr::new("--addr"));
        all.push(OsStr::new(&url));
        for (flag, path) in &tls {
            all.push(OsStr::new(flag));
            all.push(OsStr::new(path));
        }
        let out = run_in(self.control(), &drover_bin(), &all, CMD_TIMEOUT);
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.push(format!("{} -> {}", describe(args), out.status));
        out
    }

    /// Like [`MultiHost::cli`], but the command must succeed; returns stdout.
    ///
    /// # Panics
    ///
    /// When the command fails; its output is in the message.
    pub fn cli_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        crate::util::succeeded(args, &self.cli(args))
    }

    /// Runs `drover ARGS -o json` (which must succeed) and parses stdout.
    ///
    /// # Panics
    ///
    /// When the command fails or prints no JSON.
    pub fn cli_json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        crate::util::json_of(args, |all| self.cli_ok(all))
    }

    /// Writes `contents` to `name` in the temporary directory (job files).
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.root.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Runs `program args` inside host `i`'s network namespace (e.g. `ip`
    /// to look at its routes); returns how it ended.
    pub fn run_on_host<S: AsRef<OsStr>>(&self, i: usize, program: &str, args: &[S]) -> Output {
        run_in(self.hosts[i].netns(), Path::new(program), args, CMD_TIMEOUT)
    }

    /// `ip ARGS` in host `i`'s namespace; must succeed; returns stdout.
    ///
    /// # Panics
    ///
    /// When `ip` fails.
    pub fn ip(&self, i: usize, args: &[&str]) -> String {
        let out = self.run_on_host(i, "ip", args);
        assert!(
            out.status.success(),
            "`ip {}` on host {i} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The Drover (host-gw) routes in host `i`'s main table, read over
    /// netlink.
    ///
    /// # Panics
    ///
    /// When netlink fails.
    pub fn routes(&self, i: usize) -> Vec<PeerRoute> {
        let netns = self.hosts[i].netns();
        let mut routes = self
            .rt()
            .block_on(async {
                let net = Netlink::connect_in(netns).await?;
                net.drover_routes().await
            })
            .unwrap_or_else(|e| panic!("reading routes of host {i}: {e}"));
        routes.sort();
        routes
    }
}
