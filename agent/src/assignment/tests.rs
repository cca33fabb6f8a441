use super::*;

fn wire() -> pb::Assignment {
    pb::Assignment {
        allocation: Some(pb::Allocation {
            id: "a1".into(),
            job: "web".into(),
            group: "main".into(),
            index: 2,
            desired: "run".into(),
            status: "pending".into(),
            ..Default::default()
        }),
        group: Some(pb::Group {
            name: "main".into(),
            restart: Some(pb::RestartPolicy {
                attempts: 3,
                delay_ms: 1000,
            }),
            tasks: vec![pb::Task {
                name: "app".into(),
                command: vec!["/bin/true".into()],
                resources: Some(pb::Resources {
                    cpu_millis: 100,
                    memory_mb: 32,
                }),
                kill_timeout_ms: 5000,
                rootfs: Some(pb::Rootfs {
                    kind: "dir".into(),
                    path: "/srv/rootfs".into(),
                    image: String::new(),
                }),
                volumes: vec![pb::Volume {
                    kind: "tmpfs".into(),
                    target: "/scratch".into(),
                    size_mb: 16,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        job_kind: "batch".into(),
        image_pins: Default::default(),
    }
}

#[test]
fn a_deployment_pin_applies_only_to_its_tag() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let mut w = wire();
    let rootfs = &mut w.group.as_mut().expect("group").tasks[0].rootfs;
    *rootfs = Some(pb::Rootfs {
        kind: "oci".into(),
        path: String::new(),
        image: "reg.lan:5000/team/web:1.4".into(),
    });
    let pinned = format!("reg.lan:5000/team/web@{digest}");
    w.image_pins.insert("app".into(), pinned.clone());
    let a = Assignment::try_from(&w).expect("valid");
    assert_eq!(
        a.group.tasks[0].pinned_image.as_deref(),
        Some(pinned.as_str())
    );
    // Another repository's digest is no pin of this task.
    w.image_pins
        .insert("app".into(), format!("reg.lan:5000/team/other@{digest}"));
    let a = Assignment::try_from(&w).expect("valid");
    assert_eq!(a.group.tasks[0].pinned_image, None);
    // Nor is a tag, nor a pin of a task that names a directory.
    w.image_pins
        .insert("app".into(), "reg.lan:5000/team/web:1.5".into());
    assert_eq!(
        Assignment::try_from(&w).expect("valid").group.tasks[0].pinned_image,
        None
    );
    let mut d = wire();
    d.image_pins.insert("app".into(), pinned);
    assert_eq!(
        Assignment::try_from(&d).expect("valid").group.tasks[0].pinned_image,
        None
    );
}

/// A name the scheduler would never send (not a DNS label) whose 63rd
/// byte falls inside a character: cut before it, no panic (found with
/// `fuzz/regressions/assignment/hostname-cut-inside-a-character`).
#[test]
fn a_host_name_is_cut_at_a_character_boundary() {
    let mut a = Assignment::try_from(&wire()).expect("valid").alloc;
    a.job = format!("{}é", "a".repeat(62));
    assert_eq!(a.hostname(), "a".repeat(62));
    a.job = "x".repeat(70);
    assert_eq!(a.hostname().len(), 63);
    a.job = "€".repeat(30);
    assert_eq!(
        a.hostname(),
        "€".repeat(21),
        "63 bytes of 3-byte characters"
    );
}

#[test]
fn a_wire_assignment_decodes_into_domain_types() {
    let a = Assignment::try_from(&wire()).expect("valid");
    assert_eq!(a.alloc.desired, DesiredState::Run);
    assert_eq!(a.alloc.status, AllocStatus::Pending);
    assert_eq!(a.alloc.hostname(), "web-main-2");
    let mut child = a.alloc.clone();
    child.job = "web/periodic-1700000000".into();
    assert_eq!(child.hostname(), "web-periodic-1700000000-main-2");
    assert_eq!(a.job_kind, JobKind::Batch);
    assert_eq!(a.group.network, NetworkMode::Bridge);
    assert_eq!(
        a.group.restart,
        RestartPolicy {
            attempts: 3,
            delay: Duration::from_secs(1)
        }
    );
    let t = &a.group.tasks[0];
    assert_eq!(t.rootfs, Rootfs::Dir("/srv/rootfs".into()));
    assert_eq!(t.kill_timeout, Duration::from_secs(5));
    assert_eq!(
        t.volumes,
        vec![Volume::Tmpfs {
            target: "/scratch".into(),
            size_mb: 16
        }]
    );
    assert_eq!((t.user.as_deref(), t.workdir.as_deref()), (None, None));
}

#[test]
fn unknown_values_from_a_newer_scheduler_name_their_field() {
    type Break = fn(&mut pb::Assignment);
    let cases: [(&str, Break); 6] = [
        ("allocation.desired", |a| {
            a.allocation.as_mut().expect("alloc").desired = "drain".into()
        }),
        ("allocation.status", |a| {
            a.allocation.as_mut().expect("alloc").status = "evicted".into()
        }),
        ("job_kind", |a| a.job_kind = "cron".into()),
        ("group.network", |a| {
            a.group.as_mut().expect("group").network = "overlay".into()
        }),
        ("group.tasks[\"app\"].rootfs.kind", |a| {
            a.group.as_mut().expect("group").tasks[0]
                .rootfs
                .as_mut()
                .expect("rootfs")
                .kind = "nfs".into()
        }),
        ("group.tasks[\"app\"].volumes[0].kind", |a| {
            a.group.as_mut().expect("group").tasks[0].volumes[0].kind = "nfs".into()
        }),
    ];
    for (field, break_it) in cases {
        let mut a = wire();
        break_it(&mut a);
        let err = Assignment::try_from(&a).expect_err(field);
        assert_eq!(err.field(), field);
        let text = err.to_string();
        assert!(text.contains(field) && text.contains("newer"), "{text}");
    }
    let mut a = wire();
    a.group.as_mut().expect("group").restart = Some(pb::RestartPolicy {
        attempts: -1,
        delay_ms: 0,
    });
    let err = Assignment::try_from(&a).expect_err("negative");
    assert_eq!(err.field(), "group.restart.attempts");
    let mut a = wire();
    a.job_kind = String::new();
    assert_eq!(
        Assignment::try_from(&a).expect_err("empty kind").field(),
        "job_kind"
    );
}

#[test]
fn unknown_wire_names_ask_whether_the_scheduler_is_newer() {
    // Round trips of the names themselves are tested in drover-model.
    let err = InvalidAssignment::from(NetworkMode::parse("f", "x").expect_err("unknown"));
    assert_eq!(err.field(), "f");
    assert_eq!(
        err.to_string(),
        "f is \"x\", which this agent does not know (expected \"bridge\" \"host\" \"none\"); \
         is the scheduler newer than the agent?"
    );
}

#[test]
fn undecodable_assignments_are_refused_apart_with_their_tasks() {
    let mut bad = wire();
    bad.allocation.as_mut().expect("alloc").id = "a2".into();
    bad.job_kind = "cron".into();
    let mut anonymous = wire();
    anonymous.allocation = None;
    let (ok, refused) = decode_all(&[wire(), bad, anonymous]);
    assert_eq!(ok.len(), 1);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].alloc_id, "a2");
    assert_eq!(refused[0].tasks, vec!["app".to_string()]);
    assert_eq!(refused[0].error.field(), "job_kind");
}

fn with_services(services: Vec<pb::Service>) -> pb::Assignment {
    let mut a = wire();
    a.group.as_mut().expect("wire() has a group").services = services;
    a
}

fn web(checks: Vec<pb::Check>) -> pb::Service {
    pb::Service {
        name: "web".into(),
        port: 8080,
        protocol: "tcp".into(),
        tags: vec!["v2".into()],
        checks,
    }
}

fn http_check() -> pb::Check {
    pb::Check {
        r#type: "http".into(),
        path: "/health".into(),
        interval_ms: 1000,
        timeout_ms: 500,
        success_before_passing: 1,
        failures_before_critical: 2,
        ..Default::default()
    }
}

#[test]
fn services_and_checks_decode_with_defaults_filled_in() {
    let exec = pb::Check {
        r#type: "exec".into(),
        path: String::new(),
        command: vec!["/bin/check".into()],
        ..http_check()
    };
    let tcp = pb::Check {
        r#type: "tcp".into(),
        path: String::new(),
        port: 9090,
        ..http_check()
    };
    let a = Assignment::try_from(&with_services(vec![web(vec![http_check(), exec, tcp])]))
        .expect("valid");
    let s = &a.group.services[0];
    assert_eq!((s.name.as_str(), s.port), ("web", 8080));
    assert_eq!(s.checks[0].kind, drover_model::CheckKind::Http);
    assert_eq!(s.checks[0].port, 8080, "the service's port by default");
    assert_eq!(s.checks[0].interval_ms, 1000);
    assert_eq!(s.checks[0].failures_before_critical, 2);
    assert_eq!(s.checks[1].task, "app", "the group's first task by default");
    assert_eq!(s.checks[2].port, 9090);
}

#[test]
fn a_bad_service_or_check_is_refused_with_its_field_named() {
    let bad = |c: pb::Check| {
        Assignment::try_from(&with_services(vec![web(vec![c])])).expect_err("refused")
    };
    let e = bad(pb::Check {
        interval_ms: 10,
        ..http_check()
    });
    assert_eq!(e.field(), "group.services[\"web\"].checks[0].interval_ms");
    let e = bad(pb::Check {
        timeout_ms: 2000,
        ..http_check()
    });
    assert_eq!(
        e.field(),
        "group.services[\"web\"].checks[0].timeout_ms",
        "{e}"
    );
    let e = bad(pb::Check {
        path: "/x HTTP/1.1\r\nHost: evil".into(),
        ..http_check()
    });
    assert_eq!(e.field(), "group.services[\"web\"].checks[0].path", "{e}");
    let e = bad(pb::Check {
        success_before_passing: 0,
        ..http_check()
    });
    assert!(e.field().ends_with("success_before_passing"), "{e}");
    let e = bad(pb::Check {
        r#type: "exec".into(),
        command: vec!["/bin/check".into()],
        task: "nope".into(),
        ..http_check()
    });
    assert!(e.to_string().contains("\"nope\" is not a task"), "{e}");
    let e = bad(pb::Check {
        r#type: "grpc".into(),
        ..http_check()
    });
    assert!(matches!(e, InvalidAssignment::Unknown { .. }), "{e}");
    let mut zero_port = web(Vec::new());
    zero_port.port = 0;
    let e = Assignment::try_from(&with_services(vec![zero_port])).expect_err("refused");
    assert_eq!(e.field(), "group.services[\"web\"].port");
}
