//! End-to-end: how images travel from a real registry (Debian's
//! `docker-registry` on loopback, filled by `skopeo copy`) to a
//! `drover dev` node: a transfer cut mid-layer (by a proxy in between
//! that cuts after a set number of bytes, not by timing a kill) with the
//! registry stopped meanwhile, and resumed with a ranged request when the
//! registry stays up; zstd layers; a multi-arch index; bearer tokens.
//! Build the binary first: `cargo build -p drover-cli`.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use base64::Engine;
use drover_tests::checks::{arr, batch_with, str_of, WAIT};
use drover_tests::registry::dir_names;
use drover_tests::registry_lab::{
    busybox_tar, layer_tar, noise, oci_arch, CutProxy, LabAuth, LabRegistry, LayoutWriter,
    OCI_INDEX,
};
use drover_tests::registry_token::{TokenServer, TOKEN_ISSUER, TOKEN_SERVICE};
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Size of the layer file a cut transfer carries.
const BIG: usize = 24 << 20;
/// Where the proxy cuts it.
const CUT_AFTER: u64 = 5 << 20;

/// A `drover dev` whose policy allows `<registry>/drover/`, with `extra`
/// policy lines (TOML after the `[registries]` table header).
fn cluster(dir: &Path, registry: &str, registries: &str) -> DevCluster {
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!("allowed_images = [\"{registry}/drover/\"]\n[registries]\n{registries}"),
    )
    .expect("policy");
    DevCluster::start_with(&["--policy", policy.to_str().expect("utf-8 path")])
}

/// Runs a batch job on `image` running `script` until it ends; returns
/// `drover job run`'s output and the job's status.
fn run_job(c: &DevCluster, image: &str, script: &str) -> (Output, Value) {
    let name = unique_name("xfer");
    let file = c.write_file(
        &format!("{name}.toml"),
        &batch_with(
            &name,
            script,
            &format!("rootfs = {{ type = \"oci\", image = {image:?} }}"),
        ),
    );
    let out = c.cli(&["job", "run", file.to_str().expect("utf-8 path")]);
    let j = poll_until("the job to end", WAIT * 3, || {
        let j = c.cli_json(&["job", "status", &name]);
        matches!(str_of(&j, "status"), "complete" | "failed").then_some(j)
    });
    (out, j)
}

/// The first allocation's first task.
fn task(j: &Value) -> Value {
    arr(&arr(&j["allocations"])[0]["tasks"])[0].clone()
}

fn assert_complete(c: &DevCluster, out: &Output, j: &Value) {
    assert_eq!(
        str_of(j, "status"),
        "complete",
        "{j}\n{out:?}\n{}",
        c.log_tail(40)
    );
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Pushes `<registry>/drover/<repo>:v1`: a busybox base and a layer with
/// `/big` ([`BIG`] bytes of noise from `seed`) and `/big.sha256` to check
/// it. Returns the big layer's digest.
fn push_big(reg: &LabRegistry, work: &Path, repo: &str, seed: u64) -> String {
    let layout = LayoutWriter::new(&work.join(format!("layout-{repo}"))).expect("layout");
    let base = busybox_tar(
        work,
        &format!("{repo}-base"),
        &["sh", "sha256sum"],
        &["gzip", "-n"],
    )
    .expect("busybox layer");
    let big = noise(BIG, seed);
    let sum = format!(
        "{}  /big\n",
        hex(&drover_tests::registry::sha256_digest(&big))
    );
    let top = layer_tar(
        work,
        &format!("{repo}-big"),
        &[("big", &big), ("big.sha256", sum.as_bytes())],
        &["gzip", "-1", "-n"],
    )
    .expect("big layer");
    let layers = [
        layout.blob(GZIP_LAYER, &base).expect("blob"),
        layout.blob(GZIP_LAYER, &top).expect("blob"),
    ];
    let image = layout.image("linux", oci_arch(), &layers).expect("image");
    let source = layout.tag(&image, "v1").expect("tag");
    reg.push(&source, &format!("drover/{repo}:v1"), None, &[])
        .expect("push");
    str_of(&layers[1], "digest").to_owned()
}

/// The proxied registry's blob GETs for `digest`, with their Range.
fn blob_gets(proxy: &CutProxy, digest: &str) -> Vec<Option<String>> {
    proxy
        .seen()
        .into_iter()
        .filter(|r| r.line.starts_with("GET ") && r.line.contains(&format!("/blobs/{digest}")))
        .map(|r| r.range)
        .collect()
}

#[test]
fn registry_stopped_mid_layer_fails_clearly_leaves_nothing_and_next_pull_works() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = Arc::new(LabRegistry::start(false, &LabAuth::None).expect("registry"));
    let big = push_big(&reg, work.path(), "stopped", 7);
    let proxy = CutProxy::start(reg.addr()).expect("proxy");
    let c = cluster(work.path(), proxy.addr(), "");
    let cache = c.data_dir().join("agent/images");

    // The registry dies 5 MiB into the big layer.
    let r = Arc::clone(&reg);
    proxy.cut_once(
        &format!("/blobs/{big}"),
        CUT_AFTER,
        Some(Box::new(move || r.stop())),
    );
    let image = format!("{}/drover/stopped:v1", proxy.addr());
    let (out, j) = run_job(&c, &image, "sha256sum -c /big.sha256");
    assert!(proxy.cut_done(), "the transfer was never cut");
    assert_eq!(str_of(&j, "status"), "failed", "{j}");
    assert!(!out.status.success(), "job run succeeded: {out:?}");
    let message = str_of(&task(&j), "message").to_owned();
    eprintln!("{message}");
    // Layers download side by side: on a loaded machine another layer of
    // the image may still be in flight when the registry goes, and its
    // failure is the one reported. Either way the image, the layer and
    // the cause are named; the cut one also says where it broke.
    let mut parts = vec![image.as_str(), "layer sha256:", "cannot reach the registry"];
    if message.contains(big.as_str()) {
        parts.extend(["the transfer broke after", "could not be resumed"]);
    }
    for part in parts {
        assert!(message.contains(part), "{message:?} does not say {part:?}");
    }
    // Nothing half-written: no layer dir for it, no temporaries.
    assert!(
        !dir_names(&cache.join("layers")).contains(&hex(&big).to_owned()),
        "the cut layer is in the cache"
    );
    assert_eq!(
        dir_names(&cache.join("tmp")),
        Vec::<String>::new(),
        "temporaries left"
    );

    // The registry back: the same image pulls, verifies and runs.
    reg.restart().expect("restarting the registry");
    let (out, j) = run_job(&c, &image, "sha256sum -c /big.sha256");
    assert_complete(&c, &out, &j);
    assert!(dir_names(&cache.join("layers")).contains(&hex(&big).to_owned()));
    assert_eq!(
        dir_names(&cache.join("tmp")),
        Vec::<String>::new(),
        "temporaries left"
    );
}

#[test]
fn a_cut_layer_transfer_resumes_at_its_offset() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = LabRegistry::start(false, &LabAuth::None).expect("registry");
    let big = push_big(&reg, work.path(), "resumed", 11);
    let proxy = CutProxy::start(reg.addr()).expect("proxy");
    let c = cluster(work.path(), proxy.addr(), "");

    proxy.cut_once(&format!("/blobs/{big}"), CUT_AFTER, None);
    let image = format!("{}/drover/resumed:v1", proxy.addr());
    let (out, j) = run_job(&c, &image, "sha256sum -c /big.sha256");
    assert!(proxy.cut_done(), "the transfer was never cut");
    assert_complete(&c, &out, &j);
    // Two requests for the layer: the whole, then the rest from where the
    // cut left it (the bytes before it, less the response's headers).
    let gets = blob_gets(&proxy, &big);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0], None, "{gets:?}");
    let offset: u64 = gets[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second request is not ranged from an offset: {gets:?}"));
    assert!(
        offset > CUT_AFTER - 4096 && offset < CUT_AFTER,
        "resumed at {offset}, cut after {CUT_AFTER} bytes with headers"
    );
    let cache = c.data_dir().join("agent/images");
    assert!(dir_names(&cache.join("layers")).contains(&hex(&big).to_owned()));
    assert_eq!(
        dir_names(&cache.join("tmp")),
        Vec::<String>::new(),
        "temporaries left"
    );
}

/// A layout with an image of a busybox base and a `/marker` layer holding
/// `marker`, both compressed by `compressor` and typed `media_type`.
fn marker_image(
    layout: &LayoutWriter,
    work: &Path,
    name: &str,
    (os, arch): (&str, &str),
    compressor: &[&str],
    media_type: &str,
) -> Value {
    let base = busybox_tar(
        work,
        &format!("{name}-base"),
        &["sh", "cat", "test"],
        compressor,
    )
    .expect("busybox layer");
    let top =
        layer_tar(work, name, &[("marker", name.as_bytes())], compressor).expect("marker layer");
    let layers = [
        layout.blob(media_type, &base).expect("blob"),
        layout.blob(media_type, &top).expect("blob"),
    ];
    layout.image(os, arch, &layers).expect("image")
}

#[test]
fn zstd_layers_are_verified_unpacked_and_run() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = LabRegistry::start(true, &LabAuth::None).expect("registry");
    // One image built with zstd layers here, one recompressed to zstd by
    // skopeo from gzip ones.
    let layout = LayoutWriter::new(&work.path().join("layout-own")).expect("layout");
    let own = marker_image(
        &layout,
        work.path(),
        "own",
        ("linux", oci_arch()),
        &["zstd", "-q", "-c"],
        ZSTD_LAYER,
    );
    let source = layout.tag(&own, "v1").expect("tag");
    reg.push(&source, "drover/zstd-own:v1", None, &[])
        .expect("push");
    let layout = LayoutWriter::new(&work.path().join("layout-skopeo")).expect("layout");
    let gz = marker_image(
        &layout,
        work.path(),
        "skopeo",
        ("linux", oci_arch()),
        &["gzip", "-n"],
        GZIP_LAYER,
    );
    let source = layout.tag(&gz, "v1").expect("tag");
    reg.push(
        &source,
        "drover/zstd-skopeo:v1",
        None,
        &["--dest-compress", "--dest-compress-format", "zstd"],
    )
    .expect("push");
    let ca = format!(
        "[registries.ca_files]\n\"{}\" = {:?}\n",
        reg.addr(),
        reg.ca_file()
    );
    let c = cluster(work.path(), reg.addr(), &ca);
    let cache = c.data_dir().join("agent/images");

    for repo in ["zstd-own", "zstd-skopeo"] {
        let manifest = reg
            .raw_manifest(&format!("drover/{repo}:v1"), None)
            .expect("manifest");
        let layers = arr(&manifest["layers"]);
        assert!(
            layers.iter().all(|l| str_of(l, "mediaType") == ZSTD_LAYER),
            "{repo} is not zstd: {manifest}"
        );
        let marker = repo.trim_start_matches("zstd-");
        let image = format!("{}/drover/{repo}:v1", reg.addr());
        let (out, j) = run_job(&c, &image, &format!("test \"$(cat /marker)\" = {marker}"));
        assert_complete(&c, &out, &j);
        let cached = dir_names(&cache.join("layers"));
        for l in layers {
            let d = str_of(l, "digest");
            assert!(
                cached.contains(&hex(d).to_owned()),
                "{d} not cached: {cached:?}"
            );
        }
    }
    assert_eq!(
        dir_names(&cache.join("tmp")),
        Vec::<String>::new(),
        "temporaries left"
    );
}

#[test]
fn a_multi_arch_index_runs_the_node_platform_and_records_its_manifest() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = LabRegistry::start(false, &LabAuth::None).expect("registry");
    let arch = oci_arch();
    let other = if arch == "arm64" { "amd64" } else { "arm64" };
    let layout = LayoutWriter::new(&work.path().join("layout-multi")).expect("layout");
    let gz = |name: &str, platform: (&str, &str)| {
        marker_image(
            &layout,
            work.path(),
            name,
            platform,
            &["gzip", "-n"],
            GZIP_LAYER,
        )
    };
    // The node's platform last, behind another OS of the same
    // architecture, another architecture and an attestation-like entry.
    let entries = [
        gz("windows", ("windows", arch)),
        gz("other", ("linux", other)),
        gz("unknown", ("unknown", "unknown")),
        gz("native", ("linux", arch)),
    ];
    let index = layout.index(&entries).expect("index");
    let source = layout.tag(&index, "multi").expect("tag");
    let index_digest = reg
        .push(&source, "drover/multi:v1", None, &["--all"])
        .expect("push");
    // The same as a Docker manifest list of Docker v2 schema 2 manifests.
    reg.push(
        &source,
        "drover/multi-docker:v1",
        None,
        &["--all", "--format", "v2s2"],
    )
    .expect("push");
    // Only foreign platforms.
    let foreign = layout.index(&entries[..3]).expect("index");
    let source = layout.tag(&foreign, "foreign").expect("tag");
    reg.push(&source, "drover/foreign:v1", None, &["--all"])
        .expect("push");

    let c = cluster(work.path(), reg.addr(), "");
    for (repo, list_type) in [("multi", OCI_INDEX), ("multi-docker", DOCKER_LIST)] {
        let served = reg
            .raw_manifest(&format!("drover/{repo}:v1"), None)
            .expect("index");
        assert_eq!(str_of(&served, "mediaType"), list_type, "{served}");
        let native = arr(&served["manifests"])
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            .map(|m| str_of(m, "digest").to_owned())
            .expect("the native manifest in the index");
        assert_ne!(native, index_digest);
        let image = format!("{}/drover/{repo}:v1", reg.addr());
        let (out, j) = run_job(&c, &image, "test \"$(cat /marker)\" = native");
        assert_complete(&c, &out, &j);
        assert_eq!(
            str_of(&task(&j), "image_digest"),
            format!("{}/drover/{repo}@{native}", reg.addr()),
            "the recorded digest is not linux/{arch}'s manifest"
        );
    }

    // No manifest for the node: refused naming the image and what it has.
    let image = format!("{}/drover/foreign:v1", reg.addr());
    let (out, j) = run_job(&c, &image, "true");
    assert_eq!(str_of(&j, "status"), "failed", "{j}");
    assert!(!out.status.success(), "job run succeeded: {out:?}");
    let message = str_of(&task(&j), "message").to_owned();
    eprintln!("{message}");
    for part in [
        image.clone(),
        format!("linux/{arch}"),
        format!("windows/{arch}"),
        format!("linux/{other}"),
        "unknown/unknown".to_owned(),
    ] {
        assert!(message.contains(&part), "{message:?} does not say {part:?}");
    }
}

#[test]
fn bearer_tokens_from_the_realm_with_the_node_credentials() {
    let work = tempfile::tempdir().expect("tempdir");
    let (user, password) = ("puller", "token-secret-7");
    let realm = TokenServer::start(user, password).expect("token server");
    let reg = LabRegistry::start(
        true,
        &LabAuth::Token {
            realm: realm.realm(),
            service: TOKEN_SERVICE.to_owned(),
            issuer: TOKEN_ISSUER.to_owned(),
            bundle: realm.bundle(),
        },
    )
    .expect("registry");
    let layout = LayoutWriter::new(&work.path().join("layout-tok")).expect("layout");
    let image = marker_image(
        &layout,
        work.path(),
        "tok",
        ("linux", oci_arch()),
        &["gzip", "-n"],
        GZIP_LAYER,
    );
    let source = layout.tag(&image, "v1").expect("tag");
    let creds = format!("{user}:{password}");
    reg.push(&source, "drover/tok:v1", Some(&creds), &[])
        .expect("push with a token");

    let auth = work.path().join("auth.json");
    let write_auth = |password: &str| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            &auth,
            serde_json::json!({"auths": {reg.addr(): {"auth": b64}}}).to_string(),
        )
        .expect("auth file");
    };
    write_auth("wrong-secret");
    let registries = format!(
        "auth_file = {:?}\n[registries.ca_files]\n\"{}\" = {:?}\n",
        auth,
        reg.addr(),
        reg.ca_file()
    );
    let c = cluster(work.path(), reg.addr(), &registries);
    let image = format!("{}/drover/tok:v1", reg.addr());

    // Wrong password: the realm refuses it, the pull fails saying so.
    let before = realm.seen().len();
    let (out, j) = run_job(&c, &image, "true");
    assert_eq!(str_of(&j, "status"), "failed", "{j}");
    assert!(!out.status.success(), "job run succeeded: {out:?}");
    let message = str_of(&task(&j), "message").to_owned();
    eprintln!("{message}");
    for part in [image.as_str(), "not authorized", "credentials"] {
        assert!(message.contains(part), "{message:?} does not say {part:?}");
    }
    let asked: Vec<_> = realm.seen().into_iter().skip(before).collect();
    assert!(
        !asked.is_empty() && asked.iter().all(|r| r.user == user && !r.granted),
        "the node did not ask the realm with its credentials: {asked:?}"
    );

    // The right password: a token for the repository, then the image runs.
    write_auth(password);
    let before = realm.seen().len();
    let (out, j) = run_job(&c, &image, "test \"$(cat /marker)\" = tok");
    assert_complete(&c, &out, &j);
    let asked: Vec<_> = realm.seen().into_iter().skip(before).collect();
    assert!(
        asked
            .iter()
            .any(|r| r.granted && r.scopes.iter().any(|s| s == "repository:drover/tok:pull")),
        "no pull token issued for the repository: {asked:?}"
    );
}
