#![allow(clippy::unwrap_used)]

use super::*;
use crate::state::AllocStatus;
use crate::testkit::{alloc, job};

fn image_group(image: &str, count: u32, command: &str) -> GroupSpec {
    let mut g = job("service", count, command).groups.remove(0);
    g.tasks[0].rootfs = RootfsSpec::Image {
        image: image.into(),
    };
    g
}

const TAG: &str = "reg.example:5000/team/web:1.4";
const PINNED: &str = "reg.example:5000/team/web@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[test]
fn a_count_change_keeps_the_pin_and_a_task_change_does_not() {
    let g = image_group(TAG, 2, "true");
    let scaled = image_group(TAG, 3, "true");
    let changed = image_group(TAG, 2, "false");
    assert_eq!(pin_name("j", &g, "t"), pin_name("j", &scaled, "t"));
    assert_ne!(pin_name("j", &g, "t"), pin_name("j", &changed, "t"));
    assert_eq!(
        job_of(&pin_name("web/periodic-1", &g, "t")),
        Some("web/periodic-1")
    );
    assert_eq!(job_of(&pin_name("web", &g, "t")), Some("web"));
}

#[test]
fn only_a_tag_pinned_to_its_own_name_makes_a_pin() {
    let a = alloc("a", 0, "n", AllocStatus::Running);
    let g = image_group(TAG, 2, "true");
    let pin = pin_for(&a, &g, "t", PINNED, "n").unwrap();
    assert_eq!((pin.image.as_str(), pin.pinned.as_str()), (TAG, PINNED));
    let other = PINNED.replace("team/web", "team/other");
    assert!(pin_for(&a, &g, "t", &other, "n").is_none());
    assert!(pin_for(&a, &g, "t", TAG, "n").is_none(), "no digest");
    assert!(pin_for(&a, &g, "nope", PINNED, "n").is_none());
    let by_digest = image_group(PINNED, 2, "true");
    assert!(pin_for(&a, &by_digest, "t", PINNED, "n").is_none());
}

#[test]
fn assignments_carry_the_pins_of_the_instances_that_placed_them() {
    let g = image_group(TAG, 2, "true");
    let pins = Pins(HashMap::from([(pin_name("j", &g, "t"), PINNED.to_owned())]));
    let mut a = alloc("a", 0, "n", AllocStatus::Running);
    assert_eq!(pins.for_alloc(&a, &g)["t"], PINNED);
    // A count-only change keeps the instances: the same pin.
    assert_eq!(
        pins.for_alloc(&a, &image_group(TAG, 5, "true"))["t"],
        PINNED
    );
    a.job = "other".into();
    assert!(pins.for_alloc(&a, &g).is_empty());
    // Other instances (a version that changed the task): not this pin.
    let changed = image_group(TAG, 2, "false");
    a.job = "j".into();
    assert!(pins.for_alloc(&a, &changed).is_empty());
}
