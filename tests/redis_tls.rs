//! TLS to Redis (features `redis` and `rustls`): a real redis-server listening with a
//! certificate made here (signed by a CA made here), two nodes whose store and backplane
//! reach it only through `rediss://`. Skipped without redis-server unless `CI` is set.

mod common;

use common::daemon::free_port;
use common::nodes::{self, node};
use common::redis::RedisServer;
use tokio_webwire::redis::redis::{Client, TlsCertificates};
use tokio_webwire::redis::{RedisBackplane, RedisConnectError, RedisStore};

/// A redis-server whose TLS port speaks with a certificate for 127.0.0.1 signed by a CA
/// of the test's own; returns it, the TLS port and the CA's certificate (PEM).
async fn tls_redis() -> Option<(RedisServer, u16, String)> {
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let key = rcgen::KeyPair::generate().expect("a key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("a certificate");
    let ca_pem = ca.pem();
    let tls_port = free_port();
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let ca_file = ca_pem.clone();
    let redis = RedisServer::start_with(move |dir| {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("a file for redis-server");
            path.display().to_string()
        };
        vec![
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            write("redis.crt", &cert_pem),
            "--tls-key-file".to_owned(),
            write("redis.key", &key_pem),
            "--tls-ca-cert-file".to_owned(),
            write("ca.crt", &ca_file),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ]
    })
    .await?;
    Some((redis, tls_port, ca_pem))
}

/// A redis-rs client of `rediss://127.0.0.1:<port>/` trusting the test's CA.
fn client(port: u16, ca_pem: &str) -> Client {
    Client::build_with_tls(
        format!("rediss://127.0.0.1:{port}/"),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.as_bytes().to_vec()),
        },
    )
    .expect("a TLS client")
}

async fn tls_node(port: u16, ca_pem: &str) -> nodes::Node {
    let store = common::bounded(RedisStore::from_client(client(port, ca_pem)))
        .await
        .expect("the store connects over TLS");
    let backplane = common::bounded(RedisBackplane::from_client(client(port, ca_pem)))
        .await
        .expect("the backplane connects over TLS");
    node(|b| b.session_store(store).backplane(backplane)).await
}

/// Publishes, session signals and revocations cross between two nodes whose only way to
/// Redis is TLS.
#[tokio::test]
async fn two_nodes_talk_through_redis_over_tls() {
    let Some((_redis, port, ca_pem)) = tls_redis().await else {
        return;
    };
    let a = tls_node(port, &ca_pem).await;
    let mut b = tls_node(port, &ca_pem).await;
    nodes::a_publish_reaches_every_node_once(&a, &b).await;
    nodes::a_session_is_signalled_and_revoked_everywhere(&a, &mut b).await;
}

/// The certificate is checked: without the CA that signed it, `rediss://` fails to
/// connect (it is not silently accepted), with an error that names the address.
#[tokio::test]
async fn a_certificate_nobody_trusts_is_refused() {
    let Some((_redis, port, _ca_pem)) = tls_redis().await else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{port}/");
    let error = common::bounded(RedisBackplane::connect(&url))
        .await
        .expect_err("an unknown CA");
    assert!(
        matches!(error, RedisConnectError::Unreachable { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
}
