//! The edge sends a request's whole transaction in one round trip.
//!
//! Between the edge and PostgreSQL sits a proxy that reads the client's protocol messages.
//! Once it sees a request transaction begin (`BEGIN…; SET LOCAL ROLE authenticated…`), it
//! holds every byte the server sends back until the client has sent that transaction's
//! `COMMIT`. An edge that waited for any reply before sending `COMMIT` would wait forever
//! (here: until its transaction limit, then 503); a pipelining edge gets its answers at once.
//! Reads, writes, a refusal by the gate and a value the call cannot convert all go through it.

use aura_tests::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Client-to-server protocol messages, parsed from a byte stream that may split them.
struct Messages {
    buf: Vec<u8>,
    started: bool,
}

impl Messages {
    /// Adds bytes; returns the text of each complete simple Query ('Q') among them.
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut queries = Vec::new();
        loop {
            // The startup message has no type byte: just a length.
            let (header, typed) = if self.started { (5, true) } else { (4, false) };
            if self.buf.len() < header {
                break;
            }
            let at = if typed { 1 } else { 0 };
            let len = u32::from_be_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
            let total = at + len;
            if self.buf.len() < total {
                break;
            }
            if typed && self.buf[0] == b'Q' {
                let body = &self.buf[5..total];
                let text = body.strip_suffix(&[0]).unwrap_or(body);
                queries.push(String::from_utf8_lossy(text).into_owned());
            }
            self.buf.drain(..total);
            self.started = true;
        }
        queries
    }
}

/// Forwards one connection, holding the server's replies inside request transactions until
/// the client has sent their COMMIT. Counts the transactions it released that way.
async fn forward(mut client: TcpStream, upstream: u16, released: Arc<AtomicUsize>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let mut parser = Messages {
        buf: Vec::new(),
        started: false,
    };
    let (mut from_client, mut from_server) = (vec![0u8; 65536], vec![0u8; 65536]);
    let mut held: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            n = client.read(&mut from_client) => {
                let Ok(n) = n else { return };
                if n == 0 || server.write_all(&from_client[..n]).await.is_err() {
                    return;
                }
                for query in parser.feed(&from_client[..n]) {
                    if query.starts_with("BEGIN") && query.contains("SET LOCAL ROLE authenticated") {
                        held.get_or_insert_with(Vec::new);
                    } else if query == "COMMIT" {
                        if let Some(bytes) = held.take() {
                            released.fetch_add(1, Ordering::SeqCst);
                            if client.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            n = server.read(&mut from_server) => {
                let Ok(n) = n else { return };
                if n == 0 {
                    return;
                }
                match held.as_mut() {
                    Some(bytes) => bytes.extend_from_slice(&from_server[..n]),
                    None => {
                        if client.write_all(&from_server[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_transaction_is_one_round_trip() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin().await;
    let members = seed_two_tenants(&admin, "pipe").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_port = listener.local_addr().expect("addr").port();
    let released = Arc::new(AtomicUsize::new(0));
    // Through PgBouncer when the suite runs that way (AURA_TEST_VIA_PGBOUNCER).
    let upstream = cluster.bouncer_port.unwrap_or(cluster.port);
    let counter = released.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(forward(client, upstream, counter.clone()));
        }
    });
    let edge = Edge::start_with(&cluster, |config| {
        config.database_url =
            format!("postgresql://authenticator@127.0.0.1:{proxy_port}/aura?sslmode=disable");
        // Were a reply awaited mid-transaction, the request would end as a 503 after this
        // (plus the edge's margin) instead of hanging the test.
        config.statement_timeout = Duration::from_secs(1);
        config.pool_size = 2;
    })
    .await;
    let rep = &members[2];
    let admin_a = &members[0];

    // A read (GET: BEGIN READ ONLY) and a write (POST).
    let (status, whoami) = get(&edge, Some(&rep.token()), "/rest/v1/rpc/whoami").await;
    assert_eq!(status, 200, "{whoami}");
    assert_eq!(whoami["user_id"], rep.user_id.as_str());
    let (status, _, contact) = rpc(
        &edge,
        Some(&rep.token()),
        "create_contact",
        &json!({"first_name": "Pia", "email": "pia@pipe.example"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{contact}");
    let id = contact["contact"]["id"]
        .as_str()
        .expect("contact id")
        .to_owned();
    let (status, _, got) = rpc(
        &edge,
        Some(&admin_a.token()),
        "get_contact",
        &json!({ "id": id }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["email"], "pia@pipe.example");

    // The gate refuses (a session that does not exist): the pipelined COMMIT became a
    // rollback, and the connection serves the next request.
    let stranger = sign(&claims(&rep.user_id, &rep.tenant_id));
    let (status, _, body) = rpc(&edge, Some(&stranger), "whoami", "{}").await;
    assert_eq!(status, 403, "{body}");

    // A value PostgreSQL cannot convert (a date: the edge checks only uuids, integers and
    // booleans itself): the field is named (the probes run after the transaction ended).
    let (status, _, body) = rpc(
        &edge,
        Some(&rep.token()),
        "list_deals",
        r#"{"close_to": "not-a-date"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"], "field: close_to", "{body}");

    let (status, _, body) = rpc(
        &edge,
        Some(&rep.token()),
        "create_contact",
        &json!({"first_name": "Pia", "email": "PIA@pipe.example"}).to_string(),
    )
    .await;
    assert_eq!(status, 409, "a duplicate email: {body}");
    let count: i64 = admin
        .query_one(
            "SELECT count(*) FROM crm.contacts WHERE lower(email) = 'pia@pipe.example'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1, "the refused write left nothing behind");

    assert_eq!(
        released.load(Ordering::SeqCst),
        6,
        "every request's replies were held until its COMMIT had been sent"
    );
}
