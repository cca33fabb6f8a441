//! Unit tests against fake cgroupfs trees in temp dirs. A fake tree cannot
//! enforce anything; it shows which files are written with what. Each test
//! lays out the files the kernel would create when a cgroup directory is
//! made, since a temp dir does not populate itself on `mkdir`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::*;

const V2_FILES: [&str; 9] = [
    "cgroup.procs",
    "cgroup.subtree_control",
    "cgroup.controllers",
    "memory.max",
    "memory.swap.max",
    "memory.events",
    "cpu.max",
    "pids.max",
    "pids.current",
];

/// A fake v2 root with `path`'s directories populated as the kernel would.
fn fake_v2(path: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(
        tmp.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .expect("write");
    fs::write(tmp.path().join("cgroup.subtree_control"), "").expect("write");
    let mut dir = tmp.path().to_owned();
    for part in Path::new(path).components() {
        dir.push(part);
        fs::create_dir(&dir).expect("mkdir");
        for file in V2_FILES {
            fs::write(dir.join(file), "").expect("write");
        }
    }
    tmp
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn detects_v2_only_when_it_lists_the_controllers() {
    let tmp = fake_v2("x");
    let cg = detect(tmp.path()).expect("detect");
    assert_eq!(cg.version(), Version::V2);

    // A hybrid host: an empty unified hierarchy and v1 controllers.
    let hybrid = tempfile::tempdir().expect("tempdir");
    fs::create_dir(hybrid.path().join("unified")).expect("mkdir");
    fs::write(hybrid.path().join("unified/cgroup.controllers"), "").expect("write");
    let err = detect(hybrid.path()).expect_err("nothing usable");
    assert!(err.to_string().contains("memory, cpu, pids"), "{err}");
    for c in V1::CONTROLLERS {
        fs::create_dir(hybrid.path().join(c)).expect("mkdir");
        fs::write(hybrid.path().join(c).join("cgroup.procs"), "").expect("write");
    }
    assert_eq!(detect(hybrid.path()).expect("v1").version(), Version::V1);

    // Controllers on the unified hierarchy of a hybrid host: v2 there.
    fs::write(
        hybrid.path().join("unified/cgroup.controllers"),
        "memory pids cpu",
    )
    .expect("write");
    assert_eq!(detect(hybrid.path()).expect("v2").version(), Version::V2);
}

#[test]
fn v2_writes_limits_and_enables_controllers_above_the_leaf() {
    let tmp = fake_v2("drover/a1/web");
    let cg = V2::new(tmp.path().to_owned());
    let limits = Limits::from_spec(32, 250, 64);
    cg.create(Path::new("drover/a1/web"), &limits)
        .expect("create");
    let leaf = tmp.path().join("drover/a1/web");
    assert_eq!(
        read(&leaf.join("memory.max")),
        (32 * 1024 * 1024).to_string()
    );
    assert_eq!(read(&leaf.join("memory.swap.max")), "0");
    assert_eq!(read(&leaf.join("cpu.max")), "25000 100000");
    assert_eq!(read(&leaf.join("pids.max")), "64");
    for level in ["", "drover", "drover/a1"] {
        let file = tmp.path().join(level).join("cgroup.subtree_control");
        assert_eq!(read(&file), "+cpu +memory +pids", "{}", file.display());
    }
    assert_eq!(read(&leaf.join("cgroup.subtree_control")), "", "leaf");
    assert_eq!(
        cg.procs_files(Path::new("drover/a1/web")),
        [leaf.join("cgroup.procs")]
    );
    // A v2 process joins its domain as a whole.
    assert_eq!(
        cg.join_files(Path::new("drover/a1/web")),
        [leaf.join("cgroup.procs")]
    );
}

#[test]
fn v2_unlimited_writes_max() {
    let tmp = fake_v2("t");
    let cg = V2::new(tmp.path().to_owned());
    cg.create(Path::new("t"), &Limits::from_spec(0, 0, 0))
        .expect("create");
    let leaf = tmp.path().join("t");
    assert_eq!(read(&leaf.join("memory.max")), "max");
    assert_eq!(read(&leaf.join("memory.swap.max")), "", "untouched");
    assert_eq!(read(&leaf.join("cpu.max")), "max 100000");
    assert_eq!(read(&leaf.join("pids.max")), "max");
}

#[test]
fn v2_reads_oom_kills_pids_and_procs() {
    let tmp = fake_v2("t");
    let cg = V2::new(tmp.path().to_owned());
    let leaf = tmp.path().join("t");
    let path = Path::new("t");
    assert_eq!(cg.oom_kills(path).expect("empty events"), 0);
    fs::write(
        leaf.join("memory.events"),
        "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
    )
    .expect("write");
    assert_eq!(cg.oom_kills(path).expect("events"), 1);
    fs::write(leaf.join("memory.events"), "oom_kill many\n").expect("write");
    let err = cg.oom_kills(path).expect_err("garbage");
    assert!(err.to_string().contains("memory.events"), "{err}");

    fs::write(leaf.join("pids.current"), "7\n").expect("write");
    assert_eq!(cg.pids_current(path).expect("pids"), 7);
    fs::write(leaf.join("cgroup.procs"), "10\n11\n").expect("write");
    assert_eq!(cg.procs(path).expect("procs"), [10, 11]);
}

#[test]
fn a_missing_control_file_is_an_error_naming_it_and_nothing_is_left() {
    // The leaf exists but has no pids controller file: as if the
    // controller was not enabled.
    let tmp = fake_v2("t");
    let leaf = tmp.path().join("t");
    fs::remove_file(leaf.join("pids.max")).expect("rm");
    let cg = V2::new(tmp.path().to_owned());
    let err = cg
        .create(Path::new("t"), &Limits::default())
        .expect_err("no pids.max");
    let msg = err.to_string();
    assert!(
        msg.starts_with("open ") && msg.contains("t/pids.max"),
        "{msg}"
    );
}

#[test]
fn remove_names_rmdir_and_prunes_only_empty_ancestors() {
    let tmp = fake_v2("drover/a1/web");
    let cg = V2::new(tmp.path().to_owned());
    let (leaf, alloc, parent) = (
        Path::new("drover/a1/web"),
        Path::new("drover/a1"),
        Path::new("drover"),
    );
    // Control files are still there: a real cgroupfs would not say
    // ENOTEMPTY, a temp dir does, and the error names rmdir and the path.
    let err = cg
        .remove(leaf, &[alloc, parent], Duration::ZERO)
        .expect_err("files in the fake dir");
    let msg = err.to_string();
    assert!(
        msg.starts_with("rmdir ") && msg.contains("drover/a1/web"),
        "{msg}"
    );

    // The kernel drops a cgroup's files with it: do that by hand.
    for dir in ["drover/a1/web", "drover/a1", "drover"] {
        for file in V2_FILES {
            fs::remove_file(tmp.path().join(dir).join(file)).expect("rm");
        }
    }
    fs::create_dir(tmp.path().join("drover/other")).expect("mkdir");
    cg.remove(leaf, &[alloc, parent], Duration::ZERO)
        .expect("remove");
    assert!(!tmp.path().join("drover/a1").exists());
    assert!(
        tmp.path().join("drover/other").exists(),
        "non-empty parent kept"
    );
    // Idempotent.
    cg.remove(leaf, &[alloc], Duration::ZERO).expect("again");
}

#[test]
fn paths_must_stay_below_the_root() {
    let tmp = fake_v2("t");
    let cg = V2::new(tmp.path().to_owned());
    for bad in ["/abs", "../up", "a/../b", ""] {
        let err = cg
            .create(Path::new(bad), &Limits::default())
            .expect_err(bad);
        assert!(matches!(err, CgroupError::BadPath { .. }), "{bad}: {err}");
    }
}

#[test]
fn v1_writes_each_hierarchy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files: [(&str, &[&str]); 3] = [
        (
            "memory",
            &[
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.oom_control",
            ],
        ),
        ("cpu", &["cpu.cfs_period_us", "cpu.cfs_quota_us"]),
        ("pids", &["pids.max", "pids.current"]),
    ];
    for (controller, names) in files {
        let dir = tmp.path().join(controller).join("d/a/t");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(tmp.path().join(controller).join("cgroup.procs"), "").expect("write");
        for name in names.iter().chain(&["cgroup.procs"]) {
            fs::write(dir.join(name), "").expect("write");
        }
    }
    let cg = detect(tmp.path()).expect("detect");
    assert_eq!(cg.version(), Version::V1);
    let path = Path::new("d/a/t");
    cg.create(path, &Limits::from_spec(1, 2000, 10))
        .expect("create");
    let at = |c: &str, f: &str| read(&tmp.path().join(c).join("d/a/t").join(f));
    assert_eq!(at("memory", "memory.limit_in_bytes"), "1048576");
    assert_eq!(at("memory", "memory.memsw.limit_in_bytes"), "1048576");
    assert_eq!(at("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(at("cpu", "cpu.cfs_quota_us"), "200000");
    assert_eq!(at("pids", "pids.max"), "10");
    assert_eq!(cg.procs_files(path).len(), 3);
    // A single-threaded v1 process joins through `tasks`, which spares the
    // kernel's global threadgroup lock.
    let tasks: Vec<_> = ["memory", "cpu", "pids"]
        .iter()
        .map(|c| tmp.path().join(c).join("d/a/t/tasks"))
        .collect();
    assert_eq!(cg.join_files(path), tasks);
    fs::write(
        tmp.path().join("memory/d/a/t/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    )
    .expect("write");
    assert_eq!(cg.oom_kills(path).expect("oom"), 3);
}

#[test]
fn cpu_quota_has_a_floor() {
    assert_eq!(Limits::from_spec(0, 1, 0).cpu_quota_us(), Some(1_000));
    assert_eq!(Limits::from_spec(0, 1500, 0).cpu_quota_us(), Some(150_000));
    assert_eq!(Limits::from_spec(0, 0, 0).cpu_quota_us(), None);
}
