//! A group's fields: name, count, restart and reschedule policies,
//! network, and its tasks.

use std::collections::BTreeSet;

use drover_proto::v1 as pb;

use super::{clamp_u64, constraint, reschedule, service, spread, task, Problems};
use crate::job::{
    DisconnectPolicy, GroupSpec, JobKind, RestartPolicy, MAX_COUNT, MAX_DISCONNECT_STOP_AFTER_MS,
    MAX_RESTART_ATTEMPTS, MAX_RESTART_DELAY_MS, MIN_DISCONNECT_STOP_AFTER_MS,
};
use crate::wire::NetworkMode;

/// Checks the `index`th group of a job of `kind`.
pub(super) fn group(
    p: &mut Problems,
    kind: JobKind,
    index: usize,
    g: &pb::Group,
    seen: &mut BTreeSet<String>,
    seen_services: &mut BTreeSet<String>,
) -> GroupSpec {
    let gpath = p.named("", "group", index, &g.name, seen);
    if kind == JobKind::System {
        p.range(&gpath, "count", g.count, 0, 1);
    } else {
        p.range(&gpath, "count", g.count, 1, MAX_COUNT);
    }
    let restart = match &g.restart {
        Some(r) => {
            p.range(
                &gpath,
                "restart.attempts",
                r.attempts,
                0,
                MAX_RESTART_ATTEMPTS,
            );
            p.range(
                &gpath,
                "restart.delay_ms",
                r.delay_ms,
                0,
                MAX_RESTART_DELAY_MS,
            );
            RestartPolicy {
                attempts: u32::try_from(r.attempts).unwrap_or(0),
                delay_ms: clamp_u64(r.delay_ms),
            }
        }
        None => RestartPolicy::default_for(kind),
    };
    if g.tasks.is_empty() {
        p.push(&gpath, "a group needs at least one [[group.task]]");
    }
    let mut seen_tasks = BTreeSet::new();
    let tasks: Vec<_> = g
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| task::task(p, &gpath, i, t, &mut seen_tasks))
        .collect();
    let services = service::services(p, &gpath, g, &tasks, seen_services);
    if NetworkMode::parse("network", &g.network).is_err() {
        p.push(
            &gpath,
            format!(
                "network must be \"bridge\" (the default), \"host\" or \"none\", got {:?}",
                g.network
            ),
        );
    }
    let reschedule = reschedule::reschedule(p, &gpath, kind, g.reschedule.as_ref());
    let spreads = spread::spreads(p, &gpath, &g.spreads);
    let update = g
        .update
        .as_ref()
        .map(|u| crate::job::update::validate(p, &gpath, kind, g.count, u));
    let disconnect = g.disconnect.as_ref().map(|d| {
        p.range(
            &gpath,
            "disconnect.stop_after_ms",
            d.stop_after_ms,
            MIN_DISCONNECT_STOP_AFTER_MS,
            MAX_DISCONNECT_STOP_AFTER_MS,
        );
        DisconnectPolicy {
            stop_after_ms: clamp_u64(d.stop_after_ms),
        }
    });
    GroupSpec {
        disconnect,
        name: g.name.clone(),
        update,
        count: u32::try_from(g.count).unwrap_or(0),
        tasks,
        restart,
        network: g.network.clone(),
        services,
        constraints: constraint::constraints(p, &gpath, &g.constraints),
        affinities: constraint::affinities(p, &gpath, &g.affinities),
        reschedule,
        spreads,
    }
}
