use super::*;

/// Checks, for every variant of `E`, that `as_str`, `parse`, `TryFrom`,
/// `Display` and the serde (JSON) form agree.
fn round_trips<E>(all: &[E])
where
    E: Copy
        + fmt::Debug
        + fmt::Display
        + PartialEq
        + Serialize
        + for<'de> Deserialize<'de>
        + for<'a> TryFrom<&'a str, Error = UnknownValue>,
{
    for &v in all {
        let wire = v.to_string();
        assert_eq!(E::try_from(wire.as_str()), Ok(v));
        let json = serde_json::to_string(&v).expect("serialize");
        assert_eq!(json, format!("\"{wire}\""), "serde form of {v:?}");
        let back: E = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, v);
    }
}

#[test]
fn wire_serde_and_display_agree() {
    round_trips(JobKind::ALL);
    round_trips(DesiredState::ALL);
    round_trips(AllocStatus::ALL);
    round_trips(TaskStatus::ALL);
    round_trips(NetworkMode::ALL);
    round_trips(RootfsKind::ALL);
    round_trips(VolumeKind::ALL);
}

#[test]
fn stored_forms_are_unchanged() {
    // The forms already stored in etcd.
    assert_eq!(JobKind::Service.as_str(), "service");
    assert_eq!(JobKind::Batch.as_str(), "batch");
    assert_eq!(JobKind::System.as_str(), "system");
    assert_eq!(DesiredState::Run.as_str(), "run");
    assert_eq!(DesiredState::Stop.as_str(), "stop");
    let statuses: Vec<_> = AllocStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        statuses,
        ["pending", "running", "complete", "failed", "lost"]
    );
}

#[test]
fn empty_means_the_default_where_it_may() {
    assert_eq!(
        NetworkMode::parse("group.network", ""),
        Ok(NetworkMode::Bridge)
    );
    assert_eq!(RootfsKind::parse("rootfs.kind", ""), Ok(RootfsKind::Host));
    assert!(JobKind::parse("kind", "").is_err());
}

#[test]
fn unknown_values_name_the_field_and_the_value() {
    let err = AllocStatus::parse("allocation.status", "zombie").expect_err("unknown");
    assert_eq!(err.field, "allocation.status");
    assert_eq!(err.value, "zombie");
    assert_eq!(
        err.to_string(),
        "allocation.status is \"zombie\", expected one of \"pending\" \"running\" \
         \"complete\" \"failed\" \"lost\""
    );
    let err = JobKind::try_from("cron").expect_err("unknown");
    assert_eq!(err.field, "job kind");
    assert_eq!(NetworkMode::EXPECTED, "\"bridge\" \"host\" \"none\"");
    assert!(serde_json::from_str::<VolumeKind>("\"nfs\"").is_err());
}
