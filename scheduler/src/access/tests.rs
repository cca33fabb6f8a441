//! The role of every method, as a table: every method of every service the
//! scheduler serves must be in it, and each role is checked on each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;

use super::rules::RULES;
use super::*;

/// Who may call each method, as the README's Security section says:
/// (method, the weakest caller that may, audited).
const EXPECTED: &[(&str, &str, bool)] = &[
    ("drover.v1.JobService/Submit", "operator", true),
    ("drover.v1.JobService/Plan", "operator", false),
    ("drover.v1.JobService/Get", "viewer", false),
    ("drover.v1.JobService/List", "viewer", false),
    ("drover.v1.JobService/Stop", "operator", true),
    ("drover.v1.JobService/Watch", "viewer", false),
    ("drover.v1.JobService/ForcePeriodic", "operator", true),
    ("drover.v1.DeploymentService/Get", "viewer", false),
    ("drover.v1.DeploymentService/Watch", "viewer", false),
    ("drover.v1.DeploymentService/Promote", "operator", true),
    ("drover.v1.DeploymentService/Fail", "operator", true),
    ("drover.v1.DeploymentService/History", "viewer", false),
    ("drover.v1.DeploymentService/Revert", "operator", true),
    ("drover.v1.NodeService/List", "viewer", false),
    ("drover.v1.NodeService/Get", "viewer", false),
    ("drover.v1.NodeService/Images", "viewer", false),
    ("drover.v1.NodeService/Drain", "admin", true),
    ("drover.v1.AllocService/List", "viewer", false),
    ("drover.v1.AllocService/Get", "viewer", false),
    ("drover.v1.AllocService/Logs", "viewer", false),
    ("drover.v1.AllocService/Exec", "admin", true),
    ("drover.v1.AuditService/List", "admin", false),
    ("drover.v1.EventService/List", "viewer", false),
    ("drover.v1.EventService/Follow", "viewer", false),
    ("drover.v1.AgentService/Connect", "agent", false),
    ("drover.v1.VersionService/Get", "anyone", false),
    ("grpc.health.v1.Health/Check", "anyone", false),
    ("grpc.health.v1.Health/Watch", "anyone", false),
    (
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "anyone",
        false,
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "anyone",
        false,
    ),
];

/// `package.Service/Method` of every method the scheduler's server holds.
pub(crate) fn served_methods() -> Vec<String> {
    let sets = [
        drover_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut out = Vec::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(set).unwrap();
        for file in set.file {
            for service in &file.service {
                for m in &service.method {
                    out.push(format!(
                        "{}.{}/{}",
                        file.package(),
                        service.name(),
                        m.name()
                    ));
                }
            }
        }
    }
    assert!(
        out.len() > 20,
        "descriptor sets hold too few methods: {out:?}"
    );
    out
}

fn person(name: &str, role: Role) -> Caller {
    Caller {
        name: name.into(),
        kind: Kind::Person(role),
    }
}

fn callers() -> Vec<(&'static str, Caller)> {
    vec![
        ("viewer", person("vera", Role::Viewer)),
        ("operator", person("otto", Role::Operator)),
        ("admin", person("ada", Role::Admin)),
        (
            "agent",
            Caller {
                name: AGENT_NAME.into(),
                kind: Kind::Agent,
            },
        ),
        ("loopback", Caller::loopback()),
    ]
}

/// Whether the caller called `who` may call a method that `need` may.
fn may(need: &str, who: &str) -> bool {
    let rank = |r: &str| ["viewer", "operator", "admin"].iter().position(|x| *x == r);
    match (need, who) {
        ("anyone", _) | (_, "loopback") => true,
        ("agent", w) => w == "agent",
        (_, "agent") => false,
        (n, w) => rank(w) >= rank(n),
    }
}

#[test]
fn every_served_method_has_an_expected_role_and_a_rule() {
    let served = served_methods();
    let missing: Vec<&String> = served
        .iter()
        .filter(|m| !EXPECTED.iter().any(|(e, _, _)| e == m))
        .collect();
    assert!(
        missing.is_empty(),
        "methods without an entry in EXPECTED (and the README's role table): {missing:?}"
    );
    for rule in RULES {
        assert!(
            served.iter().any(|m| format!("/{m}") == rule.path),
            "rule for {} names no served method",
            rule.path
        );
    }
}

#[test]
fn each_role_may_call_exactly_what_the_table_says() {
    for method in served_methods() {
        let &(_, need, audited) = EXPECTED.iter().find(|(m, _, _)| *m == method).unwrap();
        let path = format!("/{method}");
        let rule = rule_of(&path).unwrap_or_else(|| panic!("{method} has no rule"));
        assert_eq!(rule.audit.is_some(), audited, "{method}: audited");
        for (who, caller) in callers() {
            let got = authorize(&path, &caller);
            if may(need, who) {
                assert!(got.is_ok(), "{who} refused {method}: {:?}", got.err());
                continue;
            }
            let err = got.expect_err(&format!("{who} may call {method}"));
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{method} {who}");
            let msg = err.message();
            assert!(msg.contains(&method), "{msg}");
            let needed = if need == "agent" {
                "an agent certificate".to_owned()
            } else {
                format!("the {need} role")
            };
            assert!(msg.contains(&needed), "{msg}");
            assert!(msg.contains(&caller.name), "{msg}");
            if who != "agent" {
                assert!(msg.contains(&format!("has the {who} role")), "{msg}");
            }
        }
    }
}

#[test]
fn an_unknown_method_is_refused_to_everyone() {
    for (_, caller) in callers() {
        let err = authorize("/drover.v1.JobService/Nuke", &caller).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("JobService/Nuke"), "{err}");
    }
}

/// A DER certificate with common name `cn` and `uris` as subject
/// alternative names.
fn cert(cn: &str, uris: &[&str]) -> Vec<u8> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for u in uris {
        p.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(*u).unwrap(),
        ));
    }
    let key = rcgen::KeyPair::generate().unwrap();
    p.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn certificates_name_their_role() {
    for role in Role::ALL {
        let who = identify(&cert("alice", &[&role.uri()])).unwrap();
        assert_eq!(who, person("alice", role));
    }
    // `drover tls init`'s CLI certificate, with or without the URI: admin.
    assert_eq!(
        identify(&cert(BOOTSTRAP_CLI_NAME, &[])).unwrap().kind,
        Kind::Person(Role::Admin)
    );
    assert_eq!(
        identify(&cert(BOOTSTRAP_CLI_NAME, &[&Role::Viewer.uri()]))
            .unwrap()
            .kind,
        Kind::Person(Role::Viewer)
    );
    assert_eq!(identify(&cert(AGENT_NAME, &[])).unwrap().kind, Kind::Agent);
    // Unrelated URIs are ignored; the same role twice is one role.
    let twice = cert(
        "bob",
        &[
            "https://example.test/x",
            &Role::Operator.uri(),
            &Role::Operator.uri(),
        ],
    );
    assert_eq!(identify(&twice).unwrap().kind, Kind::Person(Role::Operator));

    let refused = |der: Vec<u8>, says: &str| {
        let err = identify(&der).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        assert!(err.message().contains(says), "{err}");
    };
    refused(cert("carol", &[]), "carries no Drover role");
    refused(cert("carol", &["urn:drover:role:root"]), "none of viewer");
    refused(
        cert("carol", &[&Role::Viewer.uri(), &Role::Admin.uri()]),
        "one role",
    );
    refused(cert(AGENT_NAME, &[&Role::Admin.uri()]), "one role");
}
