//! `drover version` (the CLI's release and the scheduler's) and
//! `drover completion SHELL` (a completion script for bash, zsh or fish).

use anyhow::Result;
use clap::ValueEnum;
use drover_proto::v1 as pb;
use serde_json::json;

use crate::connect::{channel, status_error};
use crate::{output, ClientOpts, Output};

/// The CLI's own release.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shells `drover completion` writes a script for.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionShell {
    /// `source <(drover completion bash)`, or save it under
    /// `/etc/bash_completion.d/drover`.
    Bash,
    /// Save as `_drover` in a directory of `$fpath`.
    Zsh,
    /// Save as `~/.config/fish/completions/drover.fish`.
    Fish,
}

/// Writes the completion script for `shell` of the command `cmd` on stdout.
pub fn completion(shell: CompletionShell, cmd: &mut clap::Command) {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, cmd, name, &mut std::io::stdout());
}

/// `drover version`: the client's release, and the scheduler's when it
/// answers (an unreachable scheduler is shown, not an error: the client's
/// version is still worth printing).
pub async fn version(opts: &ClientOpts) -> Result<()> {
    let server = match channel(opts).await {
        Ok(ch) => pb::version_service_client::VersionServiceClient::new(ch)
            .get(pb::GetVersionRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{:#}", status_error(s))),
        Err(e) => Err(format!("{e:#}")),
    };
    match opts.output {
        Output::Json => output::json(&json!({
            "client": {"version": CLIENT_VERSION},
            "server": match &server {
                Ok(s) => json!({"version": s.version, "component": s.component, "api": s.api, "address": opts.addr}),
                Err(e) => json!({"error": e, "address": opts.addr}),
            },
        })),
        Output::Table => {
            outln!("Client: {CLIENT_VERSION}");
            match &server {
                Ok(s) => outln!(
                    "Server: {} ({} at {}, API {})",
                    s.version,
                    s.component,
                    opts.addr,
                    s.api
                ),
                Err(e) => outln!("Server: unreachable at {}: {e}", opts.addr),
            }
        }
    }
    Ok(())
}
