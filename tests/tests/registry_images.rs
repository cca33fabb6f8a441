//! End-to-end: what a node shows of its image pulls and cache, and how
//! the cache is collected. The same loopback `docker-registry` (TLS, basic
//! auth) as `registry_pull.rs`, and a `drover dev` whose node policy
//! trusts it: pull progress as allocation events (`Pulling`, `Pulled`)
//! with bytes and layers; the cache kept within `[images] max_cache_mb`,
//! the least recently used unused layers going first and a running task's
//! never.
//! Build the binary first: `cargo build -p drover-cli`.

use std::path::Path;

use drover_tests::checks::{arr, batch_with, service, str_of, wait_running, WAIT};
use drover_tests::registry::{dir_names, write_layout, Layer, TestRegistry};
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// A `drover dev` whose policy allows `<addr>/drover/` (`addr`: the
/// registry's, or a proxy's in front of it), trusts the registry's CA
/// and has the credentials; `images`: more policy lines (an `[images]`
/// table); `extra`: more flags.
fn cluster_at(
    addr: &str,
    reg: &TestRegistry,
    dir: &Path,
    images: &str,
    extra: &[&str],
) -> DevCluster {
    reg.dev_cluster(dir, addr, images, extra).0
}

fn cluster(reg: &TestRegistry, dir: &Path, images: &str, extra: &[&str]) -> DevCluster {
    cluster_at(reg.addr(), reg, dir, images, extra)
}

/// A TCP proxy on loopback in front of `target` that passes what the
/// server sends at about `bytes_per_s` (TLS goes through untouched: the
/// registry's certificate names 127.0.0.1, whatever the port). Its
/// threads end with the connections; the listener with the test process.
fn slow_proxy(target: &str, bytes_per_s: usize) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address").to_string();
    let target = target.to_owned();
    let pipe = move |mut from: TcpStream, mut to: TcpStream, slow: bool| {
        std::thread::spawn(move || {
            let chunk = if slow {
                (bytes_per_s / 20).max(1)
            } else {
                64 << 10
            };
            let mut buf = vec![0u8; chunk];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if slow {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                (Ok(c), Ok(s)) => (c, s),
                _ => continue,
            };
            pipe(client, server, false);
            pipe(s2, c2, true);
        }
    });
    addr
}

/// `n` bytes that gzip cannot shrink (xorshift).
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A layer with `/marker` (`name`) and `/fill`, `fill` bytes of zeros
/// (small to download, `fill` bytes unpacked).
fn filler(work: &Path, name: &str, fill: usize) -> Layer {
    let dir = work.join(format!("{name}-root"));
    std::fs::create_dir_all(&dir).expect("layer dir");
    std::fs::write(dir.join("marker"), name).expect("marker");
    std::fs::write(dir.join("fill"), vec![0u8; fill]).expect("fill");
    Layer::pack(&dir, work, name).expect("pack")
}

/// Pushes `base` + `top` as `drover/<repo>:v1`; returns the reference.
fn push(reg: &TestRegistry, work: &Path, repo: &str, base: &Layer, top: &Layer) -> String {
    push_digest(reg, work, repo, base, top).0
}

/// [`push`], and the digest of the manifest pushed.
fn push_digest(
    reg: &TestRegistry,
    work: &Path,
    repo: &str,
    base: &Layer,
    top: &Layer,
) -> (String, String) {
    let layout = work.join(format!("layout-{repo}"));
    write_layout(&layout, &[base, top]).expect("layout");
    let digest = reg
        .push(&layout, &format!("drover/{repo}:v1"), false)
        .expect("push");
    (format!("{}/drover/{repo}:v1", reg.addr()), digest)
}

fn rootfs(image: &str) -> String {
    format!("rootfs = {{ type = \"oci\", image = {image:?} }}")
}

/// Runs a batch job on `image` to completion; returns its allocation id.
fn run_batch(c: &DevCluster, image: &str, script: &str) -> (String, std::process::Output) {
    let name = unique_name("img");
    let file = c.write_file(
        &format!("{name}.toml"),
        &batch_with(&name, script, &rootfs(image)),
    );
    let out = c.cli(&["job", "run", file.to_str().expect("utf-8 path")]);
    let j = poll_until("the job to end", WAIT * 3, || {
        let j = c.cli_json(&["job", "status", &name]);
        matches!(str_of(&j, "status"), "complete" | "failed").then_some(j)
    });
    assert_eq!(
        str_of(&j, "status"),
        "complete",
        "{j}\n{out:?}\n{}",
        c.log_tail(40)
    );
    let alloc = str_of(&arr(&j["allocations"])[0], "id").to_owned();
    (alloc, out)
}

fn layer_dirs(c: &DevCluster) -> Vec<String> {
    dir_names(&c.data_dir().join("agent/images/layers"))
}

/// Bytes of the regular files below `dir`, as the cache counts a layer.
fn files_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = e.path().symlink_metadata().expect("metadata");
        if meta.is_dir() {
            total += files_size(&e.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

fn hex(l: &Layer) -> String {
    l.digest.trim_start_matches("sha256:").to_owned()
}

/// `(X of Y bytes)` in a progress message.
fn bytes_in(message: &str) -> Option<(u64, u64)> {
    let inner = message.rsplit_once('(')?.1.strip_suffix(" bytes)")?;
    let (x, y) = inner.split_once(" of ")?;
    Some((x.parse().ok()?, y.parse().ok()?))
}

#[test]
fn pull_progress_is_reported_as_allocation_events() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = TestRegistry::start().expect("registry");
    let base = Layer::busybox(work.path(), &["sh", "cat", "test"]).expect("busybox layer");
    let big = filler(work.path(), "big", 8 << 20);
    let image = push(&reg, work.path(), "big", &base, &big);
    let c = cluster(&reg, work.path(), "", &[]);

    let (alloc, out) = run_batch(&c, &image, "test \"$(cat /marker)\" = big");
    let events = poll_until("the Pulled event", WAIT, || {
        let v = c.cli_json(&["events", "--alloc", &alloc]);
        let events = arr(&v).clone();
        events
            .iter()
            .any(|e| str_of(e, "type") == "Pulled")
            .then_some(events)
    });
    let pulling: Vec<&Value> = events
        .iter()
        .filter(|e| str_of(e, "type") == "Pulling")
        .collect();
    assert!(!pulling.is_empty(), "no Pulling event: {events:?}");
    let first = str_of(pulling[0], "message");
    assert!(
        first.contains(&image) && first.contains("2 layers"),
        "{first:?}"
    );
    // Progress notes, if the pull lasted long enough for any, count up.
    let mut last = 0;
    for e in &pulling[1..] {
        let m = str_of(e, "message");
        let (done, total) = bytes_in(m).unwrap_or_else(|| panic!("no bytes in {m:?}"));
        assert!(done >= last && done <= total, "{events:?}");
        last = done;
    }
    let pulled = events
        .iter()
        .find(|e| str_of(e, "type") == "Pulled")
        .expect("Pulled");
    let m = str_of(pulled, "message");
    assert!(
        m.contains("@sha256:") && m.contains(" MB downloaded in "),
        "{m:?}"
    );
    // Pulling comes before Started, Pulled too.
    let pos = |t: &str| events.iter().position(|e| str_of(e, "type") == t);
    assert!(pos("Pulling") < pos("Started"), "{events:?}");
    let table = c.cli_ok(&["alloc", "status", &alloc]);
    assert!(table.contains("Pulled"), "{table}");
    // `drover job run` showed the pull while it waited.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pulled image"), "{stdout}");

    // Pulled again from the cache: no byte downloaded, both layers cached.
    let (alloc, _) = run_batch(&c, &image, "true");
    let v = poll_until("the second Pulled event", WAIT, || {
        let v = c.cli_json(&["events", "--alloc", &alloc]);
        arr(&v)
            .iter()
            .any(|e| str_of(e, "type") == "Pulled")
            .then_some(v)
    });
    let pulling = arr(&v)
        .iter()
        .find(|e| str_of(e, "type") == "Pulling")
        .expect("Pulling");
    assert!(
        str_of(pulling, "message").contains("(2 cached)"),
        "{pulling}"
    );
}

#[test]
fn the_cache_keeps_to_its_budget_and_never_drops_a_running_tasks_layers() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = TestRegistry::start().expect("registry");
    let base = Layer::busybox(work.path(), &["sh", "cat", "test", "sleep"]).expect("busybox layer");
    let base_size = files_size(&work.path().join("busybox-root"));
    let marker = filler(work.path(), "run", 0);
    let fill = 3 * MIB as usize;
    let f1 = filler(work.path(), "f1", fill);
    let f2 = filler(work.path(), "f2", fill);
    let (running, running_digest) = push_digest(&reg, work.path(), "run", &base, &marker);
    let (one, one_digest) = push_digest(&reg, work.path(), "one", &base, &f1);
    let (two, two_digest) = push_digest(&reg, work.path(), "two", &base, &f2);
    // Room for base + marker + one filler, not two.
    let budget = (base_size + fill as u64 + 64).div_ceil(MIB) + 1;
    let c = cluster(
        &reg,
        work.path(),
        &format!("[images]\ngc_unused_after = \"24h\"\nmax_cache_mb = {budget}"),
        &["--keep-finished", "1"],
    );

    let svc = unique_name("run");
    let file = c.write_file(
        "run.toml",
        &format!(
            "{}{}\n",
            service(&svc, 1, "exec sleep 3600"),
            rootfs(&running)
        ),
    );
    c.cli_ok(&["job", "run", file.to_str().expect("utf-8 path")]);
    wait_running(&c, &svc, 1);

    // A finished job's allocation is collected, its image is unused, and
    // the cache is within budget: its layers stay (as young, unused).
    run_batch(&c, &one, "test \"$(cat /marker)\" = f1");
    poll_until("the finished allocation's files to go", WAIT, || {
        (c.task_dirs().len() == 1).then_some(())
    });
    let layers = layer_dirs(&c);
    for l in [&base, &marker, &f1] {
        assert!(layers.contains(&hex(l)), "{} gone: {layers:?}", l.digest);
    }

    // A second one: over budget, the least recently used unused layers go
    // (f1's top), the running task's stay, whatever the budget says.
    run_batch(&c, &two, "test \"$(cat /marker)\" = f2");
    poll_until("the finished allocation's files to go", WAIT, || {
        (c.task_dirs().len() == 1).then_some(())
    });
    let layers = poll_until("the least recently used layer to go", WAIT, || {
        let layers = layer_dirs(&c);
        (!layers.contains(&hex(&f1))).then_some(layers)
    });
    for l in [&base, &marker, &f2] {
        assert!(layers.contains(&hex(l)), "{} gone: {layers:?}", l.digest);
    }
    assert_eq!(layers.len(), 3, "{layers:?}");
    // The manifest kept for `one` (to start it pinned without the
    // registry) went with its layer; the other two images' stay.
    let doc = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        c.data_dir().join("agent/images/documents").join(hex)
    };
    poll_until("one's kept manifest to go", WAIT, || {
        (!doc(&one_digest).exists()).then_some(())
    });
    for d in [&running_digest, &two_digest] {
        assert!(
            doc(d).exists(),
            "manifest {d} kept for a cached image is gone"
        );
    }
    let tmp = c.data_dir().join("agent/images/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in tmp: {left:?}");
    // The running task still runs in its image.
    let j = c.cli_json(&["job", "status", &svc]);
    assert_eq!(
        str_of(&arr(&j["allocations"])[0], "status"),
        "running",
        "{j}"
    );

    // `drover node images` lists what is left: the running image and the
    // second one (the first lost a layer), the base shared by both.
    let nodes = c.cli_json(&["node", "list"]);
    let node = str_of(&arr(&nodes)[0], "id").to_owned();
    let v = c.cli_json(&["node", "images", &node]);
    let images = arr(&v["images"]);
    let named = |image: &str| {
        images
            .iter()
            .find(|i| arr(&i["names"]).iter().any(|n| n == image))
            .unwrap_or_else(|| panic!("{image} not listed: {v}"))
    };
    assert_eq!(images.len(), 2, "{v}");
    assert_eq!(named(&running)["in_use"], true, "{v}");
    assert_eq!(named(&two)["in_use"], false, "{v}");
    assert!(
        named(&two)["size_bytes"].as_u64().unwrap_or(0) >= fill as u64,
        "{v}"
    );
    assert!(
        named(&running)["last_used_unix_ms"].as_i64().unwrap_or(0) > 0,
        "{v}"
    );
    let layer = |l: &Layer| {
        arr(&v["layers"])
            .iter()
            .find(|x| str_of(x, "digest") == l.digest)
            .unwrap_or_else(|| panic!("{} not listed: {v}", l.digest))
            .clone()
    };
    let shared = layer(&base);
    assert_eq!(arr(&shared["used_by"]).len(), 2, "{shared}");
    assert_eq!(shared["in_use"], true, "{shared}");
    assert_eq!(shared["size_bytes"].as_u64(), Some(base_size), "{shared}");
    assert_eq!(layer(&f2)["in_use"], false, "{v}");
    assert_eq!(arr(&v["layers"]).len(), 3, "{v}");
    let table = c.cli_ok(&["node", "images", &node]);
    assert!(
        table.contains(&running) && table.contains("LAYER"),
        "{table}"
    );
}

#[test]
fn a_slow_pull_reports_its_progress_with_increasing_bytes() {
    let work = tempfile::tempdir().expect("tempdir");
    let reg = TestRegistry::start().expect("registry");
    let base = Layer::busybox(work.path(), &["sh", "cat", "test"]).expect("busybox layer");
    let dir = work.path().join("noise-root");
    std::fs::create_dir_all(&dir).expect("layer dir");
    std::fs::write(dir.join("marker"), "noise").expect("marker");
    std::fs::write(dir.join("noise"), noise(4 << 20, 0x9e37_79b9_7f4a_7c15)).expect("noise");
    let top = Layer::pack(&dir, work.path(), "noise").expect("pack");
    push(&reg, work.path(), "slow", &base, &top);
    // About 1.2 MB/s: the 4 MB layer takes a few seconds.
    let proxy = slow_proxy(reg.addr(), 1_200_000);
    let c = cluster_at(&proxy, &reg, work.path(), "", &[]);

    let image = format!("{proxy}/drover/slow:v1");
    let (alloc, out) = run_batch(&c, &image, "test \"$(cat /marker)\" = noise");
    let events = poll_until("the Pulled event", WAIT, || {
        let v = c.cli_json(&["events", "--alloc", &alloc]);
        let events = arr(&v).clone();
        events
            .iter()
            .any(|e| str_of(e, "type") == "Pulled")
            .then_some(events)
    });
    let progress: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| str_of(e, "type") == "Pulling")
        .filter_map(|e| bytes_in(str_of(e, "message")))
        .collect();
    assert!(
        progress.len() >= 2,
        "fewer than two progress events: {events:#?}"
    );
    for w in progress.windows(2) {
        assert!(w[0].0 < w[1].0, "bytes do not increase: {progress:?}");
    }
    assert!(progress.iter().all(|(d, t)| d <= t), "{progress:?}");
    // At most one a second, plus the start and the end: well under the
    // allocation's 25 kept events.
    assert!(events.len() <= 20, "{events:#?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("layers,") && stdout.contains("pulled image"),
        "job run did not show the pull: {stdout}"
    );
}
