//! End-to-end: a job file's `user`, `workdir` and `volumes` go through the
//! CLI, the scheduler and the agent of a `drover dev` whose node policy
//! (`--policy`) allows one host directory; the task's writes are checked on
//! the host. A volume outside the policy fails `job run`, naming the path
//! and the policy setting.

use std::os::unix::fs::MetadataExt;

use drover_agent::policy::DEFAULT_USERNS_BASE;
use drover_tests::checks::{batch_with, str_of, WAIT};
use drover_tests::{poll_until, unique_name, DevCluster};

fn job(name: &str, root: &str, volumes: &str, script: &str) -> String {
    batch_with(
        name,
        script,
        &format!(
            "rootfs = {{ type = \"dir\", path = {root:?} }}\n\
             user = \"1000:1000\"\n\
             workdir = \"/work/here\"\n\
             volumes = [{volumes}]"
        ),
    )
}

#[test]
fn job_files_give_tasks_a_user_a_workdir_and_volumes_within_the_policy() {
    let outside = tempfile::tempdir().expect("tempdir");
    let allowed = outside.path().join("allowed");
    let denied = outside.path().join("denied");
    std::fs::create_dir_all(&allowed).expect("mkdir allowed");
    std::fs::create_dir_all(&denied).expect("mkdir denied");
    // Writable for uid 1000 inside the task's user namespace.
    let uid = DEFAULT_USERNS_BASE + 1000;
    std::os::unix::fs::chown(&allowed, Some(uid), Some(uid)).expect("chown");
    let policy = outside.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "allowed_host_paths = [{:?}]\nallowed_rootfs_dirs = [{:?}]\n",
            allowed.display().to_string(),
            // The cluster's data dir, which holds the rootfs, is made there.
            std::env::temp_dir().display().to_string()
        ),
    )
    .expect("writing the policy");
    let c = DevCluster::start_with(&["--policy", policy.to_str().expect("utf-8 path")]);

    let root = c.data_dir().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir rootfs");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copying busybox");
    for tool in ["sh", "id", "pwd", "cat", "df", "tail", "tr", "cut"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).expect("symlink");
    }
    let root = root.display().to_string();

    let name = unique_name("iso");
    let volumes = format!(
        r#"{{ type = "bind", source = {:?}, target = "/data" }}, {{ type = "tmpfs", target = "/scratch", size_mb = 4 }}"#,
        allowed.display().to_string()
    );
    let script = "{ id -u; id -g; pwd; df -k /scratch | tail -n 1 | tr -s ' ' | cut -d ' ' -f 2; } > /data/out";
    let file = c.write_file(
        &format!("{name}.toml"),
        &job(&name, &root, &volumes, script),
    );
    c.cli_ok(&["job", "run", file.to_str().expect("utf-8 path")]);
    let j = poll_until("the job to finish", WAIT, || {
        let j = c.cli_json(&["job", "status", &name]);
        matches!(str_of(&j, "status"), "complete" | "failed").then_some(j)
    });
    assert_eq!(str_of(&j, "status"), "complete", "{j}");
    let out = allowed.join("out");
    assert_eq!(
        std::fs::read_to_string(&out).expect("the task's output file"),
        "1000\n1000\n/work/here\n4096\n"
    );
    let meta = std::fs::metadata(&out).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uid, uid),
        "owned by the mapped user"
    );

    // A host path the policy does not list: `job run` fails and says why.
    let name = unique_name("denied");
    let volumes = format!(
        r#"{{ type = "bind", source = {:?}, target = "/data", read_only = true }}"#,
        denied.display().to_string()
    );
    let file = c.write_file(
        &format!("{name}.toml"),
        &job(&name, &root, &volumes, "true"),
    );
    let dirs_before = c.task_dirs();
    let out = c.cli(&["job", "run", file.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&denied.display().to_string()) && stderr.contains("allowed_host_paths"),
        "{stderr}"
    );
    assert_eq!(
        c.task_dirs(),
        dirs_before,
        "a task dir was left for the refused job"
    );
}
