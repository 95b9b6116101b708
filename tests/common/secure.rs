//! Servers that require authentication: the shipped per-role configuration, a private CA for
//! TLS, and operator/account/user JWTs — all generated at test time.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use polos::config::{Config, NatsConfig};
use polos::nats::permissions::{shipped_user, Role};
use polos::nats::server::{NatsServer, ServerOptions};
use serde_json::{json, Value};

/// The repository's `deploy/nats/permissions.conf`.
pub fn shipped_permissions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/permissions.conf")
}

/// A nats-server started with exactly `deploy/nats/permissions.conf`, passwords in its
/// environment, the polos streams applied by the admin user.
pub struct RoleServer {
    /// The server; its log holds any permission violation.
    pub server: NatsServer,
    /// Password per user name.
    passwords: Vec<(String, String)>,
}

/// A password unlike any other text in the test output, so a grep for it finds only leaks.
pub fn secret(label: &str) -> String {
    format!("pw-{label}-{}", nuid::next())
}

impl RoleServer {
    /// Starts the server with the shipped file and applies the streams as `polos-admin`
    /// (through the real CLI, credentials in the URL).
    pub async fn start() -> RoleServer {
        Self::start_with(&shipped_permissions()).await
    }

    /// Starts a server with another permissions file of the same users (e.g. a broken one).
    pub async fn start_with(file: &Path) -> RoleServer {
        let mut env = Vec::new();
        let mut passwords = Vec::new();
        let users = Role::ALL
            .into_iter()
            .map(|r| shipped_user(r, None))
            .chain([shipped_user(
                Role::Worker,
                Some(polos::nats::permissions::EXAMPLE_WORKFLOW),
            )]);
        for (user, variable) in users {
            let password = secret(&user);
            env.push((variable, password.clone()));
            passwords.push((user, password));
        }
        let server = NatsServer::start_with(ServerOptions {
            config_file: Some(file.to_path_buf()),
            env,
            ..ServerOptions::default()
        })
        .expect("start nats-server with the permissions file");
        let env = RoleServer { server, passwords };
        let out = crate::common::polos_cli(&env.url_as("polos-admin"), &["streams", "apply"]).await;
        assert!(
            out.status.success(),
            "streams apply as admin: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// The password of `user`.
    pub fn password(&self, user: &str) -> &str {
        self.passwords
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no user {user}"))
    }

    /// Every password, for checking that none leaked.
    pub fn passwords(&self) -> impl Iterator<Item = &str> {
        self.passwords.iter().map(|(_, p)| p.as_str())
    }

    /// `nats://<user>:<password>@127.0.0.1:<port>`.
    pub fn url_as(&self, user: &str) -> String {
        format!(
            "nats://{user}:{}@127.0.0.1:{}",
            self.password(user),
            self.server.port()
        )
    }

    /// A configuration connecting as `user` (`user`/`password` settings).
    pub fn config_as(&self, user: &str) -> Config {
        Config {
            nats: NatsConfig {
                url: self.server.url().to_string(),
                name: user.to_string(),
                user: Some(user.to_string()),
                password: Some(self.password(user).to_string()),
                ..NatsConfig::default()
            },
            ..Config::default()
        }
    }

    /// A connection as `user` made by `polos::nats::connect` (so refusals are reported).
    pub async fn connect_as(&self, user: &str) -> async_nats::Client {
        polos::nats::connect(&self.config_as(user).nats)
            .await
            .expect("connect with role credentials")
    }

    /// Polls `check` like [`crate::common::eventually`], but a timeout names the server's
    /// permission violations: a missing permission shows as a stalled operation, and the log
    /// says which subject it was.
    pub async fn eventually<F, Fut>(&self, what: &str, bound: std::time::Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + bound.max(crate::common::WAIT);
        while !check().await {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {bound:?} waiting for: {what}; permission violations:\n{}",
                    self.violations().join("\n")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Every `Permissions Violation` / `Publish Violation` / `Subscription Violation` line of
    /// the server log.
    pub fn violations(&self) -> Vec<String> {
        violations(&self.server)
    }
}

/// The violation lines of a server's log.
pub fn violations(server: &NatsServer) -> Vec<String> {
    std::fs::read_to_string(server.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Violation"))
        .map(String::from)
        .collect()
}

/// A private CA with a server certificate for 127.0.0.1/localhost and a client certificate, in
/// PEM files under a temporary directory.
pub struct Pki {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl Pki {
    /// Generates the CA and both certificates.
    pub fn generate() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "polos test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "polos test server",
        );
        let (client_cert, client_key) = leaf(
            vec!["polos-client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "polos test client",
        );
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            dir,
        }
    }
}

/// Writes `text` into a fresh file of `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Signs NATS JWT claims: header `{"typ":"JWT","alg":"ed25519-nkey"}`, base64url JSON, an
/// ed25519 signature by the issuer's nkey.
pub fn encode_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": nuid::next().to_string(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let signing_input = format!("{header}.{body}");
    let signature = issuer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An operator, one JetStream-enabled account and a way to mint users, as a server
/// configuration in operator mode (memory resolver).
pub struct Operator {
    /// The account's key pair (it signs user JWTs).
    pub account: nkeys::KeyPair,
    /// The server configuration text.
    pub server_conf: String,
}

impl Operator {
    /// A new operator and account.
    pub fn generate() -> Operator {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        let operator_jwt = encode_jwt(
            &operator,
            &operator.public_key(),
            "polos-test-operator",
            json!({"type": "operator", "version": 2}),
        );
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        let account_jwt = encode_jwt(
            &operator,
            &account.public_key(),
            "polos",
            json!({"type": "account", "version": 2, "limits": unlimited}),
        );
        // JetStream needs the server's system account to exist.
        let system = nkeys::KeyPair::new_account();
        let system_jwt = encode_jwt(
            &operator,
            &system.public_key(),
            "SYS",
            json!({"type": "account", "version": 2}),
        );
        let server_conf = format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {acc}: \"{account_jwt}\"\n  {sys}: \"{system_jwt}\"\n}}\n",
            acc = account.public_key(),
            sys = system.public_key(),
        );
        Operator {
            account,
            server_conf,
        }
    }

    /// A `.creds` file text for a new user of the account; `permissions` is the user claim's
    /// `pub`/`sub`/`resp` (empty for everything).
    pub fn user_creds(&self, name: &str, permissions: Value) -> (String, String) {
        let user = nkeys::KeyPair::new_user();
        let mut claim =
            json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1});
        if let (Some(claim), Some(extra)) = (claim.as_object_mut(), permissions.as_object()) {
            for (k, v) in extra {
                claim.insert(k.clone(), v.clone());
            }
        }
        let jwt = encode_jwt(&self.account, &user.public_key(), name, claim);
        let seed = user.seed().unwrap();
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        );
        (creds, seed)
    }
}
