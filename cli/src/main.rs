//! The `drover` binary: parses flags and calls into the libraries.

// The binary is the one place that prints results for people.
#![allow(clippy::print_stdout)]

/// `println!` for command output: a closed stdout ends the command quietly.
#[macro_use]
mod stdout;
mod audit;
mod client;
mod columns;
mod connect;
mod daemon;
mod deploy;
mod dns;
mod etcd_tls;
mod events;
mod exec;
mod ha;
mod load;
mod logs;
mod meta;
mod metrics;
mod node_images;
mod output;
mod periodic;
mod process;
mod pulls;
mod queued;
mod resched;
mod roles;
mod store_cmd;
mod tls;
mod tools;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Where the CLI looks for the scheduler when neither `--addr` nor
/// `DROVER_ADDR` says otherwise: the address `drover dev` listens on.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:4680";

#[derive(Parser, Debug)]
#[command(
    name = "drover",
    version,
    about = "Drover: a cluster scheduler with node agents and built-in service discovery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Scheduler, one agent and the embedded store in one process, on loopback.
    Dev(daemon::DevArgs),
    /// Run the scheduler against an etcd cluster.
    Scheduler(daemon::SchedulerArgs),
    /// Run the node agent.
    Agent(daemon::AgentArgs),
    /// Serve the service-discovery DNS zone from an etcd cluster's records.
    Dns(dns::DnsArgs),
    /// Submit, inspect and stop jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// A job's deployment: status, promote its canaries, fail it.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// Inspect and drain nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Inspect allocations.
    #[command(subcommand)]
    Alloc(AllocCommand),
    /// Print (or follow) a task's output.
    Logs(LogsArgs),
    /// Run a command inside a running allocation's task.
    ///
    /// Exit status: the command's; 128+N when signal N killed it; 126 when
    /// it cannot be executed, 127 when it is not found in the container;
    /// 125 when Drover could not run it at all.
    Exec(ExecArgs),
    /// Mutual TLS material.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Back up and restore the embedded store.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
    /// Print the client's version and the scheduler's.
    Version {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Print a shell completion script: `source <(drover completion bash)`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: tools::CompletionShell,
    },
    /// What happened to allocations: placed, started, exited, restarting,
    /// checks, stops, refusals (`-f`: follow them as they happen).
    Events {
        /// Follow: print events as they are recorded, until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only this job's events.
        #[arg(long)]
        job: Option<String>,
        /// Only this allocation's events (its full id).
        #[arg(long)]
        alloc: Option<String>,
        /// At most this many of the kept events, the newest (0: all; with
        /// -f, how many kept ones to print before following).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Who changed what in the cluster, and who ran which command (admin).
    Audit {
        /// Only entries this recent: 90s, 15m, 2h, 7d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// At most this many, the newest (0: all kept).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
enum TlsCommand {
    /// Create a cluster CA and certificates for the scheduler, agents and CLI.
    Init(tls::InitArgs),
    /// Issue an agent certificate bound to one node: the scheduler accepts
    /// it only from that node (see `drover scheduler --require-node-certs`).
    Agent(tls::AgentCertArgs),
    /// Issue a certificate for a person with a role: viewer (read status
    /// and logs), operator (also run, stop, revert jobs, promote and fail
    /// deployments), admin (also exec, drain and manage nodes).
    Issue(roles::IssueArgs),
    /// Create an etcd CA, a certificate for the etcd members and client
    /// certificates whose common names are the etcd users of Drover's roles
    /// (`drover-scheduler`, `drover-dns`, `root`); see deploy/etcd-rbac.sh.
    Etcd(etcd_tls::EtcdCertArgs),
}

/// Options every client command takes.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Scheduler gRPC address; several, comma separated, for replicas: the
    /// one that leads is found (a follower names it) and used.
    #[arg(long, env = "DROVER_ADDR", default_value = DEFAULT_ADDR, global = true)]
    pub addr: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Mutual TLS towards the scheduler.
    #[command(flatten)]
    pub tls: tls::ClientTls,
}

/// How results are printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Submit a job file and wait for its allocations to start (a batch
    /// job's: to finish); fails when one failed.
    Run {
        /// TOML job file (`-` for standard input).
        file: PathBuf,
        /// Return once the job is accepted, without waiting.
        #[arg(long)]
        detach: bool,
        /// How long to wait for allocations to leave `pending` (a batch
        /// job's: to finish), in seconds [default: 30]. Given, it also
        /// waits for instances queued for lack of capacity to be placed;
        /// without it, the command fails as soon as it sees some queued
        /// (the job stays accepted, and they are placed when capacity
        /// appears).
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Show what submitting a job file would change, changing nothing.
    Plan {
        /// TOML job file (`-` for standard input).
        file: PathBuf,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// A job's spec summary and its allocations.
    Status {
        /// Job name.
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Stop a job's allocations and wait until they have stopped.
    Stop {
        /// Job name.
        name: String,
        /// Return once the stop is recorded, without waiting.
        #[arg(long)]
        detach: bool,
        /// How long to wait for the allocations to stop, in seconds.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Every job (periodic jobs' children with their parent).
    List {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// A job's kept versions, newest first, with what each changed.
    History {
        /// Job name.
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Submit an earlier version's spec again (no canary phase) and follow
    /// its deployment.
    Revert {
        /// Job name.
        name: String,
        /// The version to go back to (see `drover job history`).
        version: u64,
        /// Return once the revert is accepted, without following it.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Periodic jobs.
    #[command(subcommand)]
    Periodic(PeriodicCommand),
}

#[derive(Subcommand, Debug)]
enum PeriodicCommand {
    /// Launch a periodic job's child now, whatever its schedule.
    Force {
        /// The periodic job's name.
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
enum DeploymentCommand {
    /// The job's latest deployment, per group.
    Status {
        /// Job name.
        job: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// End the canary phase: roll the rest of the new version.
    Promote {
        /// Job name.
        job: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Fail the running deployment (auto_revert then applies).
    Fail {
        /// Job name.
        job: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Every node.
    List {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// One node.
    Status {
        /// Node id (or a unique prefix, or its host name).
        id: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// The images and layers in a node's cache: sizes, last use, in use.
    Images {
        /// Node id (or a unique prefix, or its host name).
        id: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Stop placing new allocations on a node (or undo with --disable).
    Drain {
        /// Node id (or a unique prefix, or its host name).
        id: String,
        /// Make the node eligible again.
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Subcommand, Debug)]
enum AllocCommand {
    /// Allocations, optionally of one job or node.
    List {
        /// Only this job's.
        #[arg(long)]
        job: Option<String>,
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// One allocation and its tasks.
    Status {
        /// Allocation id (or a unique prefix).
        id: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Args, Debug)]
struct LogsArgs {
    /// A job name (every live allocation's lines, each prefixed with its
    /// `name[index]`), or an allocation id (or unique prefix).
    target: String,
    /// One allocation of the job: its id (or unique prefix) or name.
    #[arg(long, value_name = "ID")]
    alloc: Option<String>,
    /// Keep printing as the task writes.
    #[arg(short, long)]
    follow: bool,
    /// Standard error instead of standard output.
    #[arg(long)]
    stderr: bool,
    /// Task name, when the allocation has several.
    #[arg(long, default_value = "")]
    task: String,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// Allocation id (or unique prefix), or a job name with one allocation.
    target: String,
    /// Task name, when the allocation has several.
    #[arg(long, default_value = "")]
    task: String,
    /// Run the command on a pseudo-terminal (the default when stdin is one).
    #[arg(short = 't', long, conflicts_with = "no_tty")]
    tty: bool,
    /// Never allocate a pseudo-terminal.
    #[arg(short = 'T', long)]
    no_tty: bool,
    /// Set an environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run as this user instead of the task's: `uid[:gid]` or names from
    /// the task's own /etc/passwd and /etc/group (`-u 0` for root inside).
    #[arg(short = 'u', long, value_name = "USER")]
    user: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
    #[command(flatten)]
    opts: ClientOpts,
}

fn main() -> ExitCode {
    // Nothing any role writes (state, keys, logs, addresses) is for other
    // users, whatever umask we were started with; what must be readable
    // says so with an explicit mode, and tasks get 0022 back.
    drover_agent::private_fs::restrict_umask();
    // The supervisor entry point is dispatched before any runtime or thread
    // exists: it unshares a mount namespace, which a threaded process cannot.
    let mut raw = std::env::args_os().skip(1);
    let first = raw.next();
    if first.as_deref() == Some(std::ffi::OsStr::new("__supervise")) {
        let code = match raw.next() {
            Some(dir) => drover_agent::runtime::supervise_main(std::path::Path::new(&dir)),
            None => 2,
        };
        std::process::exit(code);
    }
    // The exec helper joins mount and user namespaces: single-threaded too.
    if first.as_deref() == Some(std::ffi::OsStr::new(drover_agent::exec::EXEC_ARG)) {
        let code = match raw.next() {
            Some(request) => drover_agent::exec::exec_main(&request),
            None => 2,
        };
        std::process::exit(code);
    }

    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = match cli.command {
        Command::Exec(a) => {
            let options = exec::ExecOptions {
                target: a.target,
                task: a.task,
                tty: if a.tty {
                    Some(true)
                } else if a.no_tty {
                    Some(false)
                } else {
                    None
                },
                env: a.env,
                user: a.user.unwrap_or_default(),
                command: a.command,
            };
            let code = runtime.block_on(exec::exec(&a.opts, &options));
            // Not waiting for the stdin reader thread, blocked in read(2).
            runtime.shutdown_background();
            return ExitCode::from(code);
        }
        other => other,
    };
    let result = runtime.block_on(run(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every command but `exec` (which owns its exit status) and the
/// hidden entry points dispatched before the runtime exists.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev(a) => daemon::dev(a).await,
        Command::Scheduler(a) => daemon::scheduler(a).await,
        Command::Agent(a) => daemon::agent(a).await,
        Command::Dns(a) => dns::dns(a).await,
        Command::Store(c) => store_cmd::run(c).await,
        Command::Job(JobCommand::Run {
            file,
            detach,
            wait,
            opts,
        }) => client::job_run(&opts, &file, detach, wait).await,
        Command::Job(JobCommand::Plan { file, opts }) => client::job_plan(&opts, &file).await,
        Command::Job(JobCommand::Status { name, opts }) => client::job_status(&opts, &name).await,
        Command::Job(JobCommand::Stop {
            name,
            detach,
            wait,
            opts,
        }) => client::job_stop(&opts, &name, detach, wait).await,
        Command::Job(JobCommand::List { opts }) => client::job_list(&opts).await,
        Command::Job(JobCommand::Periodic(PeriodicCommand::Force { name, opts })) => {
            periodic::force(&opts, &name).await
        }
        Command::Job(JobCommand::History { name, opts }) => deploy::history(&opts, &name).await,
        Command::Job(JobCommand::Revert {
            name,
            version,
            detach,
            opts,
        }) => deploy::revert(&opts, &name, version, detach).await,
        Command::Deployment(DeploymentCommand::Status { job, opts }) => {
            deploy::status(&opts, &job).await
        }
        Command::Deployment(DeploymentCommand::Promote { job, opts }) => {
            deploy::promote(&opts, &job).await
        }
        Command::Deployment(DeploymentCommand::Fail { job, opts }) => {
            deploy::fail(&opts, &job).await
        }
        Command::Node(NodeCommand::List { opts }) => client::node_list(&opts).await,
        Command::Node(NodeCommand::Status { id, opts }) => client::node_status(&opts, &id).await,
        Command::Node(NodeCommand::Images { id, opts }) => {
            node_images::node_images(&opts, &id).await
        }
        Command::Node(NodeCommand::Drain { id, disable, opts }) => {
            client::node_drain(&opts, &id, !disable).await
        }
        Command::Alloc(AllocCommand::List { job, node, opts }) => {
            client::alloc_list(&opts, job, node).await
        }
        Command::Alloc(AllocCommand::Status { id, opts }) => client::alloc_status(&opts, &id).await,
        Command::Logs(a) => {
            let req = logs::LogsRequest {
                target: &a.target,
                alloc: a.alloc.as_deref(),
                task: &a.task,
                stderr: a.stderr,
                follow: a.follow,
            };
            logs::logs(&a.opts, &req).await
        }
        Command::Exec(_) => unreachable!("exec is dispatched above"),
        Command::Tls(TlsCommand::Init(a)) => tls::init(&a).map(|f| output::files(a.out, &f)),
        Command::Tls(TlsCommand::Agent(a)) => tls::agent_cert(&a).map(|f| output::files(a.out, &f)),
        Command::Tls(TlsCommand::Issue(a)) => roles::issue(&a).map(|f| output::files(a.out, &f)),
        Command::Version { opts } => tools::version(&opts).await,
        Command::Completion { shell } => {
            tools::completion(shell, &mut Cli::command());
            Ok(())
        }
        Command::Events {
            follow,
            job,
            alloc,
            limit,
            opts,
        } => events::events(&opts, job, alloc, follow, limit).await,
        Command::Audit { since, limit, opts } => audit::audit(&opts, since.as_deref(), limit).await,
        Command::Tls(TlsCommand::Etcd(a)) => {
            etcd_tls::etcd_certs(&a).map(|f| output::files(a.out, &f))
        }
    }
}
