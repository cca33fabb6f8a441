//! End-to-end: images pulled from a real registry by name. A
//! `docker-registry` on loopback with TLS (its own CA) and basic auth,
//! filled by `skopeo copy` from busybox layouts built here (two images
//! sharing their base layer, one pushed with OCI media types and one with
//! Docker v2 schema 2 ones), and a `drover dev` whose node policy lists
//! the registry's CA, a credentials file and one repository prefix.
//! Build the binary first: `cargo build -p drover-cli`.

use std::path::{Path, PathBuf};
use std::process::Output;

use drover_tests::checks::{arr, batch_with, str_of, WAIT};
use drover_tests::registry::{dir_names, write_layout, Layer, TestRegistry, REGISTRY_PASSWORD};
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

/// Images the tests push: base + marker `a`, base + marker `b`, base +
/// marker `c`.
struct Images {
    base: Layer,
    marker_c: Layer,
    /// Manifest digests in the registry.
    a: String,
    b: String,
    c: String,
}

fn push_images(reg: &TestRegistry, work: &Path) -> Images {
    let base = Layer::busybox(work, &["sh", "cat", "test"]).expect("busybox layer");
    let [ma, mb, mc] = ["a", "b", "c"].map(|m| Layer::marker(work, m, m).expect("marker layer"));
    let layout = |name: &str, top: &Layer| -> PathBuf {
        let p = work.join(format!("layout-{name}"));
        write_layout(&p, &[&base, top]).expect("layout");
        p
    };
    let a = reg
        .push(&layout("a", &ma), "drover/app:v1", false)
        .expect("push a");
    let b = reg
        .push(&layout("b", &mb), "drover/other:v1", true)
        .expect("push b");
    let c = reg
        .push(&layout("c", &mc), "drover/swapped:v1", false)
        .expect("push c");
    Images {
        base,
        marker_c: mc,
        a,
        b,
        c,
    }
}

/// A `drover dev` whose policy allows `<registry>/drover/` and trusts the
/// registry's CA; its credentials file is `<dir>/auth.json`.
fn cluster(reg: &TestRegistry, dir: &Path) -> (DevCluster, PathBuf) {
    reg.dev_cluster(dir, reg.addr(), "", &[])
}

/// A batch job on `image` running `script`.
fn image_job(c: &DevCluster, image: &str, script: &str) -> (String, PathBuf) {
    let name = unique_name("img");
    let file = c.write_file(
        &format!("{name}.toml"),
        &batch_with(
            &name,
            script,
            &format!("rootfs = {{ type = \"oci\", image = {image:?} }}"),
        ),
    );
    (name, file)
}

/// Runs the job and waits until it ended; returns its status JSON.
fn run_to_end(c: &DevCluster, name: &str, file: &Path) -> (Output, Value) {
    let out = c.cli(&["job", "run", file.to_str().expect("utf-8 path")]);
    let j = poll_until("the job to end", WAIT * 3, || {
        let j = c.cli_json(&["job", "status", name]);
        matches!(str_of(&j, "status"), "complete" | "failed").then_some(j)
    });
    (out, j)
}

/// The first allocation's first task.
fn task(j: &Value) -> Value {
    arr(&arr(&j["allocations"])[0]["tasks"])[0].clone()
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// GET requests of the registry's log naming `what`.
fn gets(reg: &TestRegistry, what: &str) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains("\"GET ") && l.contains(what))
        .count()
}

#[test]
fn images_by_tag_and_digest_run_and_share_their_base_layer() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = TestRegistry::start().expect("registry");
    let imgs = push_images(&reg, work.path());
    let (c, _auth) = cluster(&reg, work.path());
    let cache = c.data_dir().join("agent/images");

    // By tag (OCI media types): the job runs in the image.
    let image = format!("{}/drover/app:v1", reg.addr());
    let (name, file) = image_job(&c, &image, "test \"$(cat /marker)\" = a");
    let (out, j) = run_to_end(&c, &name, &file);
    assert_eq!(
        str_of(&j, "status"),
        "complete",
        "{j}\n{out:?}\n{}",
        c.log_tail(40)
    );
    // The tag was resolved once and the digest recorded on the allocation.
    let t = task(&j);
    assert_eq!(
        str_of(&t, "image_digest"),
        format!("{}/drover/app@{}", reg.addr(), imgs.a),
        "{t}"
    );
    let alloc = str_of(&arr(&j["allocations"])[0], "id").to_owned();
    let table = c.cli_ok(&["alloc", "status", &alloc]);
    assert!(
        table.contains(&imgs.a),
        "alloc status shows no digest: {table}"
    );

    // By digest (Docker v2 schema 2 media types): the same base layer is
    // not fetched or unpacked again.
    let image = format!("{}/drover/other@{}", reg.addr(), imgs.b);
    let (name, file) = image_job(&c, &image, "test \"$(cat /marker)\" = b");
    let (out, j) = run_to_end(&c, &name, &file);
    assert_eq!(
        str_of(&j, "status"),
        "complete",
        "{j}\n{out:?}\n{}",
        c.log_tail(40)
    );
    assert_eq!(
        gets(&reg, &format!("/blobs/{}", imgs.base.digest)),
        1,
        "the shared base layer was downloaded more than once:\n{}",
        reg.log()
    );
    let layers = dir_names(&cache.join("layers"));
    assert_eq!(layers.len(), 3, "base + two markers: {layers:?}");
    assert!(
        layers.iter().any(|l| l == hex(&imgs.base.digest)),
        "{layers:?}"
    );
    assert!(dir_names(&cache.join("tmp")).is_empty(), "temporaries left");
}

#[test]
fn failed_pulls_name_the_image_and_cause_and_leave_nothing_half_written() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = TestRegistry::start().expect("registry");
    let imgs = push_images(&reg, work.path());
    let (c, auth) = cluster(&reg, work.path());
    let cache = c.data_dir().join("agent/images");
    let expect_failed = |image: &str, causes: &[&str]| {
        let (name, file) = image_job(&c, image, "true");
        let (out, j) = run_to_end(&c, &name, &file);
        assert_eq!(str_of(&j, "status"), "failed", "{image}: {j}");
        let message = str_of(&task(&j), "message").to_owned();
        eprintln!("{image}: {message}");
        assert!(message.contains(image), "{message:?} does not name {image}");
        for cause in causes {
            assert!(
                message.contains(cause),
                "{message:?} does not say {cause:?}"
            );
        }
        assert!(!out.status.success(), "job run succeeded: {out:?}");
        assert!(dir_names(&cache.join("tmp")).is_empty(), "temporaries left");
    };

    // Wrong credentials, then right ones.
    reg.write_auth_file(&auth, "wrong-password")
        .expect("auth file");
    let image_c = format!("{}/drover/swapped:v1", reg.addr());
    expect_failed(&image_c, &["not authorized"]);
    reg.write_auth_file(&auth, REGISTRY_PASSWORD)
        .expect("auth file");

    // An unknown tag.
    expect_failed(&format!("{}/drover/app:nope", reg.addr()), &["not found"]);

    // A layer whose content was swapped on the registry's disk: refused
    // naming its digest, and never put in the cache.
    let data = reg.blob_data(&imgs.marker_c.digest);
    let good = std::fs::read(&data).expect("reading the blob");
    let mut bad = good.clone();
    for b in bad.iter_mut().skip(20) {
        *b ^= 0x5a;
    }
    std::fs::write(&data, &bad).expect("swapping the blob");
    expect_failed(&image_c, &["corrupt", &imgs.marker_c.digest]);
    assert!(
        !dir_names(&cache.join("layers")).contains(&hex(&imgs.marker_c.digest).to_owned()),
        "the corrupt layer is in the cache"
    );
    // Once the blob is right again, the same image pulls and runs.
    std::fs::write(&data, &good).expect("restoring the blob");
    let (name, file) = image_job(&c, &image_c, "test \"$(cat /marker)\" = c");
    let (out, j) = run_to_end(&c, &name, &file);
    assert_eq!(str_of(&j, "status"), "complete", "{j}\n{out:?}");
    assert_eq!(
        str_of(&task(&j), "image_digest"),
        format!("{}/drover/swapped@{}", reg.addr(), imgs.c)
    );

    // The policy refuses a repository it does not list before any request.
    let image = format!("{}/elsewhere/app:v1", reg.addr());
    expect_failed(&image, &["allowed_images"]);
    assert_eq!(
        gets(&reg, "elsewhere"),
        0,
        "a request reached the registry:\n{}",
        reg.log()
    );
}

#[test]
fn five_allocations_pull_once_and_restarts_keep_the_recorded_digest() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = TestRegistry::start().expect("registry");
    let imgs = push_images(&reg, work.path());
    let (c, _auth) = cluster(&reg, work.path());

    // Five allocations of an image new to the node, started side by side:
    // each of its layers is downloaded once.
    let many = Layer::marker(work.path(), "m", "m").expect("marker layer");
    let layout = work.path().join("layout-m");
    write_layout(&layout, &[&imgs.base, &many]).expect("layout");
    reg.push(&layout, "drover/many:v1", false).expect("push");
    let name = unique_name("many");
    let file = c.write_file(
        &format!("{name}.toml"),
        &drover_tests::checks::service(&name, 5, "test \"$(cat /marker)\" = m && exec sleep 3600")
            .replace(
                "kill_timeout_ms = 200",
                &format!(
                    "kill_timeout_ms = 200\nrootfs = {{ type = \"oci\", image = \"{}/drover/many:v1\" }}",
                    reg.addr()
                ),
            ),
    );
    c.cli_ok(&["job", "run", "--detach", file.to_str().expect("utf-8 path")]);
    drover_tests::checks::wait_running(&c, &name, 5);
    for layer in [&many.digest, &imgs.base.digest] {
        assert_eq!(
            gets(&reg, &format!("/blobs/{layer}")),
            1,
            "layer {layer} was downloaded more than once:\n{}",
            reg.log()
        );
    }
    c.cli_ok(&["job", "stop", &name]);

    // A tag moved after the deployment: every restart runs the digest
    // the first start resolved.
    let moving = format!("{}/drover/moving:v1", reg.addr());
    reg.push(&work.path().join("layout-a"), "drover/moving:v1", false)
        .expect("push");
    let name = unique_name("moving");
    let file = c.write_file(
        &format!("{name}.toml"),
        &format!(
            r#"name = "{name}"
[[group]]
name = "main"
restart = {{ attempts = 2, delay_ms = 200 }}
[[group.task]]
name = "app"
command = ["/bin/sh", "-c", "cat /marker; echo; sleep 3; exit 1"]
kill_timeout_ms = 200
rootfs = {{ type = "oci", image = "{moving}" }}
"#
        ),
    );
    c.cli_ok(&["job", "run", "--detach", file.to_str().expect("utf-8 path")]);
    let pinned = format!("{}/drover/moving@{}", reg.addr(), imgs.a);
    let alloc = poll_until("the first start to record its digest", WAIT, || {
        let j = c.cli_json(&["job", "status", &name]);
        let a = arr(&j["allocations"]).first()?.clone();
        (a["tasks"][0]["image_digest"].as_str()? == pinned).then(|| str_of(&a, "id").to_owned())
    });
    let manifests_at_first_start = gets(&reg, "/drover/moving/manifests/");
    reg.push(&work.path().join("layout-b"), "drover/moving:v1", false)
        .expect("moving the tag");
    let j = poll_until(
        "the allocation to fail after its restarts",
        WAIT * 3,
        || {
            let j = c.cli_json(&["job", "status", &name]);
            let a = arr(&j["allocations"]).first()?.clone();
            (str_of(&a, "status") == "failed").then_some(a)
        },
    );
    let t = &arr(&j["tasks"])[0];
    assert_eq!(t["restarts"], 2, "{j}");
    assert_eq!(str_of(t, "image_digest"), pinned, "{j}");
    let logs = c.cli_ok(&["logs", &alloc]);
    assert_eq!(
        logs.matches('a').count(),
        3,
        "every run saw image a: {logs:?}"
    );
    assert!(!logs.contains('b'), "a restart ran the moved tag: {logs:?}");
    // The restarts ran the pinned digest from the cache: no manifest
    // request reached the registry for them.
    assert_eq!(
        gets(&reg, "/drover/moving/manifests/"),
        manifests_at_first_start,
        "a restart of the pinned image asked the registry:\n{}",
        reg.log()
    );
    // A new deployment of the tag runs what it names now.
    let (name, file) = image_job(&c, &moving, "test \"$(cat /marker)\" = b");
    let (out, j) = run_to_end(&c, &name, &file);
    assert_eq!(str_of(&j, "status"), "complete", "{j}\n{out:?}");
}
