#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn good() -> pb::Job {
    pb::Job {
        name: "hello".into(),
        kind: "service".into(),
        groups: vec![pb::Group {
            name: "main".into(),
            count: 2,
            restart: None,
            tasks: vec![pb::Task {
                name: "app".into(),
                command: vec!["/bin/sh".into(), "-c".into(), "sleep 1".into()],
                env: Default::default(),
                resources: Some(pb::Resources {
                    cpu_millis: 100,
                    memory_mb: 32,
                }),
                kill_timeout_ms: 5000,
                rootfs: None,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn problems(job: &pb::Job) -> Vec<String> {
    JobSpec::try_from(job).unwrap_err().problems
}

#[test]
fn user_workdir_and_volumes_are_checked() {
    let mut j = good();
    let t = &mut j.groups[0].tasks[0];
    t.user = "app:staff".into();
    t.workdir = "/srv/app".into();
    t.volumes = vec![
        pb::Volume {
            kind: "bind".into(),
            source: "/srv/data".into(),
            target: "/data".into(),
            read_only: true,
            size_mb: 0,
        },
        pb::Volume {
            kind: "tmpfs".into(),
            target: "/scratch".into(),
            size_mb: 16,
            ..Default::default()
        },
    ];
    let spec = JobSpec::try_from(&j).unwrap();
    assert_eq!(spec.groups[0].tasks[0].volumes.len(), 2);
    assert_eq!(JobSpec::try_from(&pb::Job::from(&spec)).unwrap(), spec);

    let t = &mut j.groups[0].tasks[0];
    t.user = "a b:1".into();
    t.workdir = "app".into();
    let volume = |kind: &str, target: &str| pb::Volume {
        kind: kind.into(),
        target: target.into(),
        ..Default::default()
    };
    t.volumes.push(pb::Volume {
        source: "/srv/../etc".into(),
        ..volume("bind", "/proc/sys")
    });
    t.volumes.push(pb::Volume {
        read_only: true,
        size_mb: -1,
        ..volume("tmpfs", "/data")
    });
    t.volumes.push(volume("nfs", "/"));
    t.volumes.push(volume("tmpfs", "/"));
    let p = problems(&j);
    let has = |s: &str| p.iter().any(|x| x.contains(s));
    assert!(has("user \"a b:1\": the user must be"), "{p:?}");
    assert!(has("workdir must be an absolute path"), "{p:?}");
    assert!(
        has("volume #3: source \"/srv/../etc\" may not contain"),
        "{p:?}"
    );
    assert!(
        has("volume #3: target \"/proc/sys\" is at or under /proc"),
        "{p:?}"
    );
    assert!(
        has("volume #4: target \"/data\" is used by another volume"),
        "{p:?}"
    );
    assert!(
        has("volume #4: read_only is only for type \"bind\""),
        "{p:?}"
    );
    assert!(has("volume #4: size_mb must be between 0"), "{p:?}");
    assert!(has("volume #5: type \"nfs\" is not one of"), "{p:?}");
    assert!(has("volume #6: target / would hide"), "{p:?}");
}

#[test]
fn accepts_a_good_job_and_round_trips() {
    let spec = JobSpec::try_from(&good()).unwrap();
    assert_eq!(spec.groups[0].count, 2);
    assert_eq!(spec.groups[0].resources().memory_mb, 32);
    let back = pb::Job::from(&spec);
    assert_eq!(JobSpec::try_from(&back).unwrap(), spec);
}

#[test]
fn names_every_problem_with_its_path() {
    let mut j = good();
    j.groups[0].count = 0;
    j.groups[0].tasks[0].resources = Some(pb::Resources {
        cpu_millis: -5,
        memory_mb: 0,
    });
    j.groups[0].tasks[0].command.clear();
    let p = problems(&j);
    assert_eq!(
        p,
        vec![
            "group \"main\": count must be > 0, got 0",
            "group \"main\" task \"app\": command must not be empty",
            "group \"main\" task \"app\": resources.cpu_millis must be > 0, got -5",
            "group \"main\" task \"app\": resources.memory_mb must be > 0, got 0",
        ]
    );
}

#[test]
fn refuses_absurd_values_and_duplicates() {
    let mut j = good();
    j.groups[0].count = 1_000_000;
    let t = j.groups[0].tasks[0].clone();
    j.groups[0].tasks.push(t);
    let g = j.groups[0].clone();
    j.groups.push(g);
    let p = problems(&j);
    assert!(p.contains(&"group \"main\": duplicate group name".to_string()));
    assert!(p.contains(&"group \"main\" task \"app\": duplicate task name".to_string()));
    assert!(p.contains(&"group \"main\": count must be <= 10000, got 1000000".to_string()));
}

#[test]
fn refuses_names_that_are_not_dns_labels() {
    let mut j = good();
    j.name = "Hello_World".into();
    j.groups[0].name = "-x".into();
    j.groups[0].tasks[0].name = "a".repeat(64);
    let p = problems(&j);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p[0].starts_with("name \"Hello_World\" contains 'H'"),
        "{p:?}"
    );
    assert!(p[1].contains("must start and end with a letter or digit"));
    assert!(p[2].contains("is 64 characters"));
}

#[test]
fn rootfs_is_host_by_default_and_dir_needs_an_absolute_path() {
    let spec = JobSpec::try_from(&good()).unwrap();
    assert_eq!(spec.groups[0].tasks[0].rootfs, RootfsSpec::Host);
    let mut j = good();
    j.groups[0].tasks[0].rootfs = Some(pb::Rootfs {
        kind: "dir".into(),
        path: "rootfs".into(),
        image: String::new(),
    });
    assert_eq!(
        problems(&j),
        vec!["group \"main\" task \"app\": rootfs.path must be an absolute path, got \"rootfs\""]
    );
    j.groups[0].tasks[0].rootfs = Some(pb::Rootfs {
        kind: "image".into(),
        path: String::new(),
        image: String::new(),
    });
    assert!(problems(&j)[0].contains("rootfs.type \"image\" is not one of"));
    // An OCI image may supply the command; nothing else may.
    j.groups[0].tasks[0].command.clear();
    j.groups[0].tasks[0].rootfs = Some(pb::Rootfs {
        kind: "oci".into(),
        path: "/var/lib/images/web".into(),
        image: String::new(),
    });
    let spec = JobSpec::try_from(&j).unwrap();
    assert_eq!(
        spec.groups[0].tasks[0].rootfs,
        RootfsSpec::Oci {
            path: "/var/lib/images/web".into()
        }
    );
    j.groups[0].tasks[0].rootfs = None;
    assert_eq!(
        problems(&j),
        vec!["group \"main\" task \"app\": command must not be empty"]
    );
}

#[test]
fn refuses_unknown_kind_and_empty_job() {
    let j = pb::Job {
        name: "x".into(),
        kind: "cron".into(),
        groups: vec![],
        ..Default::default()
    };
    let p = problems(&j);
    assert_eq!(
        p,
        vec![
            "kind \"cron\" is not one of \"service\", \"batch\", \"system\"",
            "a job needs at least one [[group]]",
        ]
    );
}

fn check(kind: &str) -> pb::Check {
    pb::Check {
        r#type: kind.into(),
        interval_ms: 1000,
        timeout_ms: 500,
        success_before_passing: 1,
        failures_before_critical: 2,
        ..Default::default()
    }
}

fn with_service(service: pb::Service) -> pb::Job {
    let mut j = good();
    j.groups[0].services = vec![service];
    j
}

#[test]
fn services_and_checks_round_trip_and_exec_defaults_to_the_first_task() {
    let mut http = check("http");
    http.path = "/health".into();
    let mut exec = check("exec");
    exec.command = vec!["/bin/check".into()];
    let j = with_service(pb::Service {
        name: "web".into(),
        port: 8080,
        protocol: "tcp".into(),
        tags: vec!["v2".into(), "blue".into()],
        checks: vec![http, check("tcp"), exec],
    });
    let spec = JobSpec::try_from(&j).unwrap();
    let s = &spec.groups[0].services[0];
    assert_eq!((s.name.as_str(), s.port), ("web", 8080));
    assert_eq!(s.checks[0].port, 8080, "a check probes the service port");
    assert_eq!(s.checks[2].task, "app");
    assert_eq!(JobSpec::try_from(&pb::Job::from(&spec)).unwrap(), spec);
}

#[test]
fn every_bad_service_field_is_named() {
    let mut http = check("http");
    http.path = "health".into();
    let mut exec = check("exec");
    exec.task = "nope".into();
    let mut slow = check("tcp");
    slow.timeout_ms = 5000;
    slow.interval_ms = 10;
    slow.success_before_passing = 0;
    let j = with_service(pb::Service {
        name: "Web".into(),
        port: 70000,
        protocol: "sctp".into(),
        tags: vec!["a".into(), "a".into(), "_x".into()],
        checks: vec![http, exec, slow, check("ping")],
    });
    let p = problems(&j).join("\n");
    for needle in [
        "service \"Web\": name",
        "port must be <= 65535, got 70000",
        "protocol \"sctp\"",
        "tag \"a\" is listed twice",
        "tag \"_x\" contains",
        "check #1: path must start with '/'",
        "check #2: an exec check needs a command",
        "check #2: task \"nope\" is not a task of this group",
        "check #3: interval_ms must be >= 100, got 10",
        "check #3: timeout_ms (5000) must not exceed interval_ms (10)",
        "check #3: success_before_passing must be > 0, got 0",
        "check #4: type \"ping\" is not one of \"tcp\" \"http\" \"exec\"",
    ] {
        assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
    }
}

#[test]
fn a_service_name_is_unique_within_a_job_and_needs_an_address() {
    let mut j = with_service(pb::Service {
        name: "web".into(),
        port: 80,
        ..Default::default()
    });
    let mut second = j.groups[0].clone();
    second.name = "other".into();
    second.network = "none".into();
    j.groups.push(second);
    let p = problems(&j).join("\n");
    assert!(
        p.contains("group \"other\" service \"web\": duplicate service name"),
        "{p}"
    );
    assert!(
        p.contains("group \"other\": a service needs an address"),
        "{p}"
    );
}

fn constraint(attribute: &str, operator: &str, value: &str) -> pb::Constraint {
    pb::Constraint {
        attribute: attribute.into(),
        operator: operator.into(),
        value: value.into(),
    }
}

#[test]
fn bad_constraints_are_refused_with_their_path() {
    let mut j = good();
    j.constraints = vec![
        constraint("${attr.arch}", "=", "amd64"),
        constraint("${attr.arch}", "like", "amd64"),
    ];
    j.groups[0].name = "web".into();
    j.groups[0].constraints = vec![
        constraint("${arch}", "=", "x"),
        constraint("${attr.kernel.version}", "version", ">= six"),
        constraint("${meta.rack}", "regexp", "r(1"),
        constraint("${meta.ssd}", "=", ""),
    ];
    j.groups[0].tasks[0].constraints = vec![constraint("", "distinct_property", "")];
    j.groups[0].affinities = vec![pb::Affinity {
        attribute: "${meta.rack}".into(),
        value: "r1".into(),
        weight: 0,
        ..Default::default()
    }];
    j.affinities = vec![pb::Affinity {
        operator: "distinct_hosts".into(),
        weight: 10,
        ..Default::default()
    }];
    let p = problems(&j);
    let expected = [
        r#"group "web" task "app" constraint 0: operator "distinct_property" needs an attribute"#,
        r#"group "web" constraint 0: attribute "${arch}" is not a node property: unknown prefix"#,
        r#"group "web" constraint 1: value ">= six": "#,
        r#"group "web" constraint 2: value "r(1": not a regular expression"#,
        r#"group "web" constraint 3: operator "=" needs a value"#,
        r#"group "web" affinity 0: weight must be -100..=100 and not 0, got 0"#,
        r#"constraint 1: operator "like" is not one of =, !="#,
        r#"affinity 0: operator "distinct_hosts" is for constraints, not affinities"#,
    ];
    assert_eq!(p.len(), expected.len(), "{p:#?}");
    for (got, want) in p.iter().zip(expected) {
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }
}

#[test]
fn constraints_survive_the_wire_and_the_store() {
    let mut j = good();
    j.constraints = vec![constraint("", "distinct_hosts", "")];
    j.groups[0].constraints = vec![constraint("${attr.kernel.version}", "version", ">= 6.1")];
    j.groups[0].tasks[0].constraints = vec![constraint("${meta.ssd}", "", "true")];
    j.groups[0].affinities = vec![pb::Affinity {
        attribute: "${meta.rack}".into(),
        operator: "=".into(),
        value: "r1".into(),
        weight: -40,
    }];
    let spec = JobSpec::try_from(&j).unwrap();
    assert_eq!(spec.constraints.len(), 1);
    assert_eq!(
        spec.groups[0].tasks[0].constraints[0].to_string(),
        "${meta.ssd} = true"
    );
    assert_eq!(spec.groups[0].affinities[0].weight, -40);
    assert_eq!(JobSpec::try_from(&pb::Job::from(&spec)).unwrap(), spec);
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec);
    // A job stored before constraints existed reads back without them.
    let mut old: serde_json::Value =
        serde_json::to_value(JobSpec::try_from(&good()).unwrap()).unwrap();
    assert!(old.get("constraints").is_none());
    old["name"] = "older".into();
    assert!(serde_json::from_value::<JobSpec>(old)
        .unwrap()
        .constraints
        .is_empty());
}

#[test]
fn seccomp_is_default_or_unconfined() {
    let mut j = good();
    let spec = JobSpec::try_from(&j).unwrap();
    assert_eq!(spec.groups[0].tasks[0].seccomp, SeccompMode::Default);
    j.groups[0].tasks[0].seccomp = "unconfined".into();
    let spec = JobSpec::try_from(&j).unwrap();
    assert_eq!(spec.groups[0].tasks[0].seccomp, SeccompMode::Unconfined);
    assert_eq!(JobSpec::try_from(&pb::Job::from(&spec)).unwrap(), spec);
    j.groups[0].tasks[0].seccomp = "default".into();
    assert_eq!(
        JobSpec::try_from(&j).unwrap().groups[0].tasks[0].seccomp,
        SeccompMode::Default
    );
    j.groups[0].tasks[0].seccomp = "off".into();
    let p = problems(&j);
    assert!(
        p.iter()
            .any(|m| m.contains("task \"app\"") && m.contains("seccomp \"off\"")),
        "{p:?}"
    );
}

#[test]
fn oci_rootfs_may_name_a_registry_image_normalised_as_docker_does() {
    let mut j = good();
    j.groups[0].tasks[0].command.clear();
    let rootfs = |path: &str, image: &str| {
        Some(pb::Rootfs {
            kind: "oci".into(),
            path: path.into(),
            image: image.into(),
        })
    };
    j.groups[0].tasks[0].rootfs = rootfs("", "nginx:1.25");
    let spec = JobSpec::try_from(&j).unwrap();
    assert_eq!(
        spec.groups[0].tasks[0].rootfs,
        RootfsSpec::Image {
            image: "docker.io/library/nginx:1.25".into()
        }
    );
    // The stored form goes back on the wire as it was normalised.
    let back = pb::Task::from(&spec.groups[0].tasks[0]);
    assert_eq!(back.rootfs, rootfs("", "docker.io/library/nginx:1.25"));
    j.groups[0].tasks[0].rootfs = rootfs("/var/lib/images/web", "nginx");
    assert!(
        problems(&j)[0].contains("either path"),
        "{:?}",
        problems(&j)
    );
    j.groups[0].tasks[0].rootfs = rootfs("", "Nginx");
    let p = problems(&j);
    assert!(
        p[0].contains("rootfs.image") && p[0].contains("lowercase"),
        "{p:?}"
    );
    j.groups[0].tasks[0].rootfs = Some(pb::Rootfs {
        kind: "dir".into(),
        path: "/srv/root".into(),
        image: "nginx".into(),
    });
    let p = problems(&j);
    assert!(
        p.iter().any(|m| m.contains("only for type \"oci\"")),
        "{p:?}"
    );
}
