//! Looking at service discovery from outside: `dig` against a Drover DNS
//! server, and the SkyDNS records as stored (value and lease), read
//! straight from the store.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;

/// `dig @addr` with `args` (no recursion, one 2 s try): the whole answer
/// text.
///
/// # Panics
///
/// When `dig` (Debian's bind9-dnsutils) cannot be run.
pub fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args([
            "-p",
            &addr.port().to_string(),
            "+norec",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("running dig (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The addresses of the A records in the answer section of `dig` output.
pub fn a_records(answer: &str) -> Vec<String> {
    let mut in_answer = false;
    let mut out = Vec::new();
    for line in answer.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer && (line.is_empty() || line.starts_with(";;")) {
            break;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if in_answer && fields.len() == 5 && fields[3] == "A" {
            out.push(fields[4].to_owned());
        }
    }
    out
}

/// One record under `/skydns/` as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The key.
    pub key: String,
    /// The value, as JSON (`Value::Null` when it is not JSON).
    pub value: Value,
    /// The lease it is bound to; 0 for none.
    pub lease: i64,
}

/// Runs `f` with a client of the store at `store_addr` (`host:port`), on
/// a thread and runtime of its own (block_on inside a caller's runtime
/// would panic), so it works from sync code and from async tests alike.
pub(crate) fn with_client<T: Send + 'static>(
    store_addr: &str,
    f: impl AsyncFnOnce(&mut etcd_client::Client) -> Result<T, String> + Send + 'static,
) -> T {
    let endpoint = format!("http://{store_addr}");
    std::thread::spawn(move || -> Result<T, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut client = etcd_client::Client::connect([endpoint], None)
                .await
                .map_err(|e| format!("connecting to the store: {e}"))?;
            f(&mut client).await
        })
    })
    .join()
    .expect("store client thread panicked")
    .unwrap_or_else(|e| panic!("the store: {e}"))
}

/// The seconds `lease` has left in the store at `store_addr`; -1 when it
/// is gone.
///
/// # Panics
///
/// When the store cannot be read.
pub fn lease_remaining(store_addr: &str, lease: i64) -> i64 {
    with_client(store_addr, async move |client| {
        let resp = client
            .lease_time_to_live(lease, None)
            .await
            .map_err(|e| format!("time-to-live of lease {lease:#x}: {e}"))?;
        Ok(resp.ttl())
    })
}

/// Every key under `prefix` in the store at `store_addr` (`host:port`),
/// sorted.
///
/// # Panics
///
/// When the store cannot be read.
pub fn stored(store_addr: &str, prefix: &str) -> Vec<Stored> {
    let prefix = prefix.to_owned();
    with_client(store_addr, async move |client| {
        let resp = client
            .get(
                prefix.as_bytes(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| format!("range {prefix}: {e}"))?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| Stored {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: serde_json::from_slice(kv.value()).unwrap_or(Value::Null),
                lease: kv.lease(),
            })
            .collect())
    })
}
