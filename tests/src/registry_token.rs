//! [`TokenServer`]: a bearer-token realm for a [`crate::registry_lab`]
//! registry configured with `auth: token`, on loopback (plain HTTP). It
//! checks the basic credentials a client sends and answers with a JWT
//! (ES256) granting the scopes asked for, signed by a P-256 key whose
//! self-signed certificate the registry trusts (`rootcertbundle`) and
//! which rides in the token's `x5c` header.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use tempfile::TempDir;

/// The registry's name in the tokens' audience.
pub const TOKEN_SERVICE: &str = "drover-lab-registry";
/// The tokens' issuer.
pub const TOKEN_ISSUER: &str = "drover-lab-token-issuer";

/// One token request the server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The user named in the basic credentials (empty without any).
    pub user: String,
    /// Whether the credentials were right (a token was issued).
    pub granted: bool,
    /// The `scope` parameters asked for.
    pub scopes: Vec<String>,
}

struct Shared {
    user: String,
    password: String,
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    seen: Mutex<Vec<TokenRequest>>,
    stopping: AtomicBool,
}

/// A running token server; dropping it stops it.
pub struct TokenServer {
    addr: String,
    dir: TempDir,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Makes the signing key and certificate and listens on a free
    /// loopback port; tokens go to `user` with `password` only.
    pub fn start(user: &str, password: &str) -> Result<TokenServer> {
        let dir = tempfile::Builder::new()
            .prefix("drover-token-")
            .tempdir()
            .context("tempdir")?;
        let key_pair = rcgen::KeyPair::generate().context("generating the signing key")?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "drover lab token signer");
        let cert = params.self_signed(&key_pair)?;
        std::fs::write(dir.path().join("bundle.pem"), cert.pem())?;
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("loading the signing key: {e}"))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            user: user.to_owned(),
            password: password.to_owned(),
            key,
            cert_der: cert.der().to_vec(),
            seen: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let _ = answer(&s, conn);
                });
            }
        });
        Ok(TokenServer {
            addr,
            dir,
            shared,
            accept: Some(accept),
        })
    }

    /// The realm URL the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate bundle (PEM) the registry checks tokens with.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle.pem")
    }

    /// The requests answered so far.
    pub fn seen(&self) -> Vec<TokenRequest> {
        self.shared.seen.lock().expect("token lock").clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and answers it, closing the connection.
fn answer(s: &Shared, mut conn: TcpStream) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let target = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned();
    let basic = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.trim().strip_prefix("Basic ").map(str::to_owned))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (user, password) = basic
        .as_deref()
        .and_then(|b| b.split_once(':'))
        .map_or((String::new(), String::new()), |(u, p)| {
            (u.to_owned(), p.to_owned())
        });
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .map(|(_, v)| percent_decode(v))
        .collect();
    let granted = user == s.user && password == s.password;
    s.seen.lock().expect("token lock").push(TokenRequest {
        user: user.clone(),
        granted,
        scopes: scopes.clone(),
    });
    let (status, body) = if granted {
        let token = sign(s, &user, &scopes)?;
        (
            "200 OK",
            json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "wrong user or password"}]})
                .to_string(),
        )
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// A JWT for `user` granting `scopes` (`repository:<name>:<actions>`).
fn sign(s: &Shared, user: &str, scopes: &[String]) -> Result<String> {
    let access: Vec<_> = scopes
        .iter()
        .flat_map(|sc| sc.split(' '))
        .filter_map(|sc| {
            let (kind, rest) = sc.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&s.cert_der)]});
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": user,
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", scopes.join(";").len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = s
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing the token: {e}"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    ))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = h {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
