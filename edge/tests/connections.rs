//! What a client connection may cost, over real TCP: slow and idle clients are closed within
//! their timeouts, the connection cap holds while real requests are still served, and
//! requests the router never sees answered correctly (405 with the true `Allow`, 413, 431).
//! None of this needs a database: the edge runs against a closed port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge::{Config, HttpLimits, JwtConfig};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "connections-test-secret-at-least-32-bytes";

struct Edge {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn edge(limits: HttpLimits) -> Edge {
    // Port 1 on loopback refuses connections: the database is "down".
    let mut config = Config::new(
        "postgresql://authenticator@127.0.0.1:1/aura",
        JwtConfig::hs256(SECRET),
    );
    config.http = limits;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(edge::serve(config, listener, async {
        let _ = stopped.await;
    }));
    Edge {
        addr,
        stop: Some(stop),
    }
}

fn limits() -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        // Longer than the others: an idle connection closed at 1 s would still be in its
        // writing phase, not idle.
        keep_alive_timeout: Duration::from_secs(2),
        ..HttpLimits::default()
    }
}

fn token() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "sub": "6f1c1e0a-5b7e-4b8e-9a51-0a7c2f4a1d10", "role": "authenticated",
        "aud": "authenticated", "exp": now + 600,
        "app_metadata": {"tenant_id": "0b9a53d6-3c8b-4c3f-8f8e-2f9e1b2f0c11"}
    });
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// Reads until the server closes the connection (or `limit` passes); returns what arrived
/// and how long after `since` the connection ended, if it did.
async fn read_since(
    stream: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&received).into_owned(),
                    Some(since.elapsed()),
                )
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), None),
        }
    }
}

async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    read_since(stream, Instant::now(), limit).await
}

/// One request on a new connection with `Connection: close`; the whole response.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .0
}

fn body_of(response: &str) -> serde_json::Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body: {response}"))
}

fn assert_closed_within(what: &str, closed: Option<Duration>, limit: Duration) {
    let closed = closed.unwrap_or_else(|| panic!("{what}: still open after the test's wait"));
    assert!(
        closed >= limit.mul_f64(0.8) && closed <= limit + Duration::from_millis(1500),
        "{what}: closed after {closed:?}, the timeout is {limit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_within_their_timeouts() {
    let edge = edge(limits()).await;
    let wait = Duration::from_secs(5);
    let second = Duration::from_secs(1);

    // Sends nothing at all.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(edge.addr).await.expect("connect");
    // Stalls half-way through the request line and headers.
    let mut half_head = TcpStream::connect(edge.addr).await.expect("connect");
    half_head
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // Trickles its head a byte at a time (slowloris): the deadline does not move.
    let mut trickle = TcpStream::connect(edge.addr).await.expect("connect");
    let trickler = tokio::spawn(async move {
        let started = Instant::now();
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1234567890\r\n".iter() {
            if trickle.write_all(&[*b]).await.is_err() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    // Sends its head and then a body slower than its Content-Length.
    let body_started = Instant::now();
    let mut half_body = TcpStream::connect(edge.addr).await.expect("connect");
    let head = format!(
        "POST /rest/v1/rpc/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\":",
        token()
    );
    half_body.write_all(head.as_bytes()).await.expect("write");
    // Keeps a connection open after one request.
    let mut idle = TcpStream::connect(edge.addr).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let idle_since = Instant::now();

    let (silent_got, silent_closed) = read_since(&mut silent, opened, wait).await;
    assert_closed_within("a silent connection", silent_closed, second);
    assert!(silent_got.is_empty(), "{silent_got}");
    let (_, half_head_closed) = read_since(&mut half_head, opened, wait).await;
    assert_closed_within("a connection stalled mid-head", half_head_closed, second);
    let (body_response, body_closed) = read_since(&mut half_body, body_started, wait).await;
    assert_closed_within("a connection stalled mid-body", body_closed, second);
    assert!(body_response.starts_with("HTTP/1.1 408"), "{body_response}");
    assert_eq!(body_of(&body_response)["code"], "57014");
    let (idle_got, idle_closed) = read_since(&mut idle, idle_since, wait).await;
    assert!(idle_got.starts_with("HTTP/1.1 200"), "{idle_got}");
    assert_closed_within(
        "an idle keep-alive connection",
        idle_closed,
        Duration::from_secs(2),
    );
    let trickled = trickler.await.expect("trickler");
    assert!(
        trickled.is_some_and(|t| t < Duration::from_millis(2500)),
        "the trickling client was not cut off: {trickled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_real_requests_are_still_served() {
    let cap = 8;
    let edge = edge(HttpLimits {
        max_connections: cap,
        header_timeout: Duration::from_secs(30),
        keep_alive_timeout: Duration::from_secs(30),
        ..HttpLimits::default()
    })
    .await;
    // Twice the cap of connections that send nothing, opened one after another.
    let mut idle = Vec::new();
    for _ in 0..2 * cap {
        idle.push(TcpStream::connect(edge.addr).await.expect("connect"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Real requests meanwhile: each is served at once.
    for _ in 0..5 {
        let started = Instant::now();
        let response = exchange(
            edge.addr,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut still_open = 0;
    for stream in &mut idle {
        if read_until_closed(stream, Duration::from_millis(50))
            .await
            .1
            .is_none()
        {
            still_open += 1;
        }
    }
    assert!(
        still_open <= cap,
        "{still_open} idle connections open, the cap is {cap}"
    );
    assert!(
        still_open >= cap - 6,
        "the cap closed more than it needed: {still_open} left"
    );
    // The oldest went first: the last one opened is still there.
    assert!(
        read_until_closed(idle.last_mut().expect("one"), Duration::from_millis(50))
            .await
            .1
            .is_none(),
        "the newest idle connection was closed before older ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_bodies_with_a_valid_token_cannot_lock_others_out() {
    let cap = 6;
    let edge = edge(HttpLimits {
        max_connections: cap,
        body_timeout: Duration::from_secs(30),
        ..HttpLimits::default()
    })
    .await;
    let head = format!(
        "POST /rest/v1/rpc/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        token()
    );
    let mut trickling = Vec::new();
    for _ in 0..cap {
        let mut stream = TcpStream::connect(edge.addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write");
        trickling.push(stream);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let response = exchange(
            edge.addr,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // The oldest trickling connections made room.
    let (_, first_closed) = read_until_closed(&mut trickling[0], Duration::from_millis(500)).await;
    assert!(
        first_closed.is_some(),
        "the oldest body-trickling connection is still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_bodies_and_heads_get_the_json_error_they_deserve() {
    let edge = edge(limits()).await;

    // 405 says what is allowed, in the header and the message alike.
    let response = exchange(
        edge.addr,
        "PUT /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nallow: get, head, options\r\n"),
        "{response}"
    );
    let body = body_of(&response);
    assert_eq!(body["code"], "PGRST101");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("PUT") && m.contains("GET or HEAD") && !m.contains("POST")),
        "{body}"
    );
    let response = exchange(
        edge.addr,
        "OPTIONS /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response
        .to_ascii_lowercase()
        .contains("\r\nallow: get, head, options\r\n"));

    // A declared body over the limit: 413 before reading it.
    let response = exchange(
        edge.addr,
        &format!(
            "POST /rest/v1/rpc/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Length: {}\r\n\r\n",
            token(),
            2 << 20
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(body_of(&response)["code"], "54000");
    // A chunked body that grows past the limit.
    let mut stream = TcpStream::connect(edge.addr).await.expect("connect");
    let head = format!(
        "POST /rest/v1/rpc/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        token()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
    for _ in 0..20 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let (response, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    // A head over the configured limit gets 431 with the JSON body.
    let response = exchange(
        edge.addr,
        &format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            "c".repeat(20_000)
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    assert_eq!(body_of(&response)["code"], "54000");
}
