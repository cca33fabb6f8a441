//! `disconnect = { stop_after_ms = N }` in a `[[group]]`: parsed, checked
//! at submission, and carried to the wire the agents read.

use drover_proto::v1 as pb;

use crate::job::JobSpec;
use crate::jobfile::parse;

const CUT_OFF: &str = r#"
name = "solo"
[[group]]
name = "main"
disconnect = { stop_after_ms = 2000 }
[[group.task]]
name = "app"
command = ["/bin/sleep", "1000"]
"#;

#[test]
fn a_group_names_how_long_a_cut_off_node_keeps_its_copies() {
    let j = parse("solo.toml", CUT_OFF).unwrap();
    let spec = JobSpec::try_from(&j).unwrap();
    let d = spec.groups[0].disconnect.unwrap();
    assert_eq!(d.stop_after_ms, 2_000);
    // What the scheduler sends its agents.
    let wire = pb::Group::from(&spec.groups[0]);
    assert_eq!(wire.disconnect.map(|d| d.stop_after_ms), Some(2_000));
    // Unset: no policy.
    let none = CUT_OFF.replace("disconnect = { stop_after_ms = 2000 }\n", "");
    let spec = JobSpec::try_from(&parse("solo.toml", &none).unwrap()).unwrap();
    assert!(spec.groups[0].disconnect.is_none());
}

#[test]
fn a_bad_disconnect_policy_is_refused_with_its_path() {
    let bad = CUT_OFF.replace("stop_after_ms = 2000", "stop_afer_ms = 2000");
    let e = parse("solo.toml", &bad).unwrap_err();
    assert!(
        e.message.contains("unknown field `stop_afer_ms`"),
        "{}",
        e.message
    );
    for (v, says) in [
        ("0", "disconnect.stop_after_ms"),
        ("999", "disconnect.stop_after_ms"),
        ("-5", "disconnect.stop_after_ms"),
        ("604800001", "disconnect.stop_after_ms"),
    ] {
        let text = CUT_OFF.replace("2000", v);
        let e = JobSpec::try_from(&parse("solo.toml", &text).unwrap()).unwrap_err();
        assert!(
            e.to_string().contains(&format!("group \"main\": {says}")),
            "{v}: {e}"
        );
    }
}
