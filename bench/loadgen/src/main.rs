//! `aura-bench`: what `make bench` runs once the data is seeded and the edges are up.
//!
//! For every scenario it drives the real edge over HTTP with `BENCH_CLIENTS` keep-alive
//! connections (warm-up, then `BENCH_SECONDS`) and records each request's latency; then it
//! runs pgbench, at the same number of connections, on the *identical* transaction: the
//! statements the edge sends (the call's SQL comes from the edge's own catalog code, so it is
//! the same text), pipelined like the edge pipelines them. Beside those: the bare request
//! transaction (BEGIN, role switch, timeout, COMMIT: the floor), and the same gate and call
//! run by a superuser, whom row-level security does not apply to (the api functions' own
//! explicit tenant filter stays), to show what the policies cost.
//!
//! The numbers compare variants on one machine in one run; the load generator, the edge,
//! pgbench and PostgreSQL share its cores. Nothing here asserts a speed: the tiny mode of
//! `make test` only checks that every scenario ran without an error.
//!
//! Configuration comes from the environment (scripts/bench.sh sets it): see [`Settings`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Everything from the environment.
struct Settings {
    /// The edge serving the database with all tenants.
    edge: String,
    /// The same database as a superuser (unix socket): setup and the no-RLS variant.
    admin: String,
    /// pgbench's connection: socket directory, port, database.
    pg_host: String,
    pg_port: String,
    db: String,
    pgbench: PathBuf,
    jwt_secret: String,
    seconds: f64,
    warmup: f64,
    clients: usize,
    big: String,
    small: String,
    /// The small tenant again, in a database with few tenants: its edge and admin URL.
    few_edge: Option<String>,
    few_admin: Option<String>,
    few_label: String,
    many_label: String,
    /// The same database through PgBouncer (transaction mode), and an edge with the rate
    /// limiter off: measured for the main scenarios only.
    bouncer_edge: Option<String>,
    unlimited_edge: Option<String>,
    json_out: Option<PathBuf>,
    /// pgbench runs this many transactions per client instead of `seconds` (tiny mode).
    pgbench_transactions: Option<u64>,
    commit: String,
    date: String,
    statement_timeout_ms: u64,
}

fn env(name: &str) -> Result<String, Failure> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

impl Settings {
    fn from_env() -> Result<Settings, Failure> {
        Ok(Settings {
            edge: env("BENCH_EDGE_URL")?,
            admin: env("BENCH_ADMIN_URL")?,
            pg_host: env("BENCH_PG_HOST")?,
            pg_port: env("BENCH_PG_PORT")?,
            db: env("BENCH_DB")?,
            pgbench: env("BENCH_PGBENCH")?.into(),
            jwt_secret: env("BENCH_JWT_SECRET")?,
            seconds: env_or("BENCH_SECONDS", "10").parse()?,
            warmup: env_or("BENCH_WARMUP", "2").parse()?,
            clients: env_or("BENCH_CLIENTS", "16").parse()?,
            big: env_or("BENCH_BIG", "seed-big"),
            small: env_or("BENCH_SMALL", "seed-0002"),
            few_edge: std::env::var("BENCH_FEW_EDGE_URL").ok(),
            few_admin: std::env::var("BENCH_FEW_ADMIN_URL").ok(),
            few_label: env_or("BENCH_FEW_LABEL", "10 tenants"),
            bouncer_edge: std::env::var("BENCH_BOUNCER_EDGE_URL").ok(),
            unlimited_edge: std::env::var("BENCH_UNLIMITED_EDGE_URL").ok(),
            many_label: env_or("BENCH_MANY_LABEL", "1,000 tenants"),
            json_out: std::env::var("BENCH_JSON").ok().map(PathBuf::from),
            pgbench_transactions: match std::env::var("BENCH_PGBENCH_TRANSACTIONS") {
                Ok(n) => Some(n.parse()?),
                Err(_) => None,
            },
            commit: env_or("BENCH_COMMIT", "unknown"),
            date: env_or("BENCH_DATE", "unknown"),
            statement_timeout_ms: env_or("BENCH_STATEMENT_TIMEOUT_MS", "15000").parse()?,
        })
    }
}

/// A member of a tenant with a live session: their token and the claims the edge passes on.
#[derive(Clone)]
struct User {
    token: String,
    claims: Value,
    tenant_id: String,
}

/// What changes from one request to the next (writes must not collide).
#[derive(Clone)]
enum Vary {
    Fixed,
    /// A new contact with a unique email and name.
    NewContact,
    /// A new amount on one of these deals.
    DealAmount(Arc<Vec<String>>),
    /// One of these (open) deals to a random open stage.
    DealStage(Arc<Vec<String>>),
    /// A call logged on one of these contacts.
    Activity(Arc<Vec<String>>),
}

#[derive(Clone)]
struct Scenario {
    /// The same for the same call in every tenant (the name may differ: page depths, terms).
    key: &'static str,
    name: String,
    user: User,
    function: &'static str,
    /// The request's arguments as the edge receives them (strings for a GET).
    args: Map<String, Value>,
    get: bool,
    vary: Vary,
    /// The tenant's slug: pgbench derives the seeded ids from it, as the seed did.
    slug: String,
}

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn pick<'a>(&mut self, items: &'a [String]) -> &'a str {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

const OPEN_STAGES: [&str; 4] = ["prospect", "qualified", "proposal", "negotiation"];

impl Scenario {
    /// This request's arguments.
    fn args_for(&self, rng: &mut Xorshift) -> Map<String, Value> {
        let mut args = self.args.clone();
        match &self.vary {
            Vary::Fixed => {}
            Vary::NewContact => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                args.insert("first_name".into(), json!(format!("B{}", &id[..8])));
                args.insert("last_name".into(), json!(format!("L{}", &id[8..20])));
                // New contacts work at one of 1,000 companies, as people do: not all at one.
                let company = rng.next() % 1000;
                args.insert(
                    "email".into(),
                    json!(format!("bench-{id}@c{company}.load.example")),
                );
            }
            Vary::DealAmount(ids) => {
                args.insert("id".into(), json!(rng.pick(ids)));
                let amount = 1000 + rng.next() % 89_000;
                args.insert("changes".into(), json!({ "amount": amount }));
            }
            Vary::DealStage(ids) => {
                args.insert("id".into(), json!(rng.pick(ids)));
                let stage = OPEN_STAGES[(rng.next() % 4) as usize];
                args.insert("stage".into(), json!(stage));
            }
            Vary::Activity(ids) => {
                args.insert("contact_id".into(), json!(rng.pick(ids)));
                args.insert("type".into(), json!("call"));
                args.insert("description".into(), json!("Bench call"));
            }
        }
        args
    }

    /// pgbench's version of [`Scenario::args_for`]: `\set` lines and the SQL expression that
    /// stands where the edge binds its arguments object. (pgbench substitutes `:name` even
    /// inside string literals, hence `chr(58)` for the colons of the seed's id recipe.)
    fn pgbench_args(&self, ids: usize) -> (String, String) {
        match &self.vary {
            Vary::Fixed => (String::new(), ":args::jsonb".into()),
            Vary::NewContact => (
                String::new(),
                "jsonb_build_object('first_name', 'B' || left(md5(random()::text), 8), \
                 'last_name', 'L' || left(md5(random()::text), 12), \
                 'email', 'bench-' || gen_random_uuid() || '@c' || (random() * 999)::integer || '.load.example')"
                    .into(),
            ),
            Vary::DealAmount(_) => (
                format!("\\set i random(1, {ids})\n\\set amount random(1000, 89999)\n"),
                "jsonb_build_object('id', md5(:slug::text || chr(58) || 'd' || chr(58) || :i::integer)::uuid, \
                 'changes', jsonb_build_object('amount', :amount::integer))"
                    .into(),
            ),
            Vary::DealStage(_) => (
                format!("\\set j random(0, {})\n\\set s random(1, 4)\n", ids - 1),
                "jsonb_build_object('id', md5(:slug::text || chr(58) || 'd' || chr(58) || (8 * :j::integer + 1))::uuid, \
                 'stage', (ARRAY['prospect', 'qualified', 'proposal', 'negotiation'])[:s::integer])"
                    .into(),
            ),
            Vary::Activity(_) => (
                format!("\\set i random(1, {ids})\n"),
                "jsonb_build_object('contact_id', md5(:slug::text || chr(58) || 'c' || chr(58) || :i::integer)::uuid, \
                 'type', 'call', 'description', 'Bench call')"
                    .into(),
            ),
        }
    }
}

/// One scenario through the edge.
#[derive(Clone, Debug, Default)]
struct EdgeFigures {
    requests: u64,
    errors: u64,
    tps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    first_error: Option<String>,
}

async fn drive_edge(
    http: &reqwest::Client,
    edge: &str,
    scenario: &Scenario,
    clients: usize,
    warmup: f64,
    seconds: f64,
) -> EdgeFigures {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let until = measure_from + Duration::from_secs_f64(seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let http = http.clone();
        let url = format!("{edge}/rest/v1/rpc/{}", scenario.function);
        let scenario = scenario.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15 ^ ((client as u64 + 1) * 0x1000_0001));
            let mut latencies: Vec<u32> = Vec::with_capacity(65_536);
            let mut first_error = None;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let args = scenario.args_for(&mut rng);
                let request = if scenario.get {
                    let pairs: Vec<(String, String)> = args
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect();
                    http.get(&url).query(&pairs)
                } else {
                    http.post(&url).json(&Value::Object(args))
                };
                let outcome = request.bearer_auth(&scenario.user.token).send().await;
                let ok = match outcome {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.bytes().await;
                        match (status.is_success(), body) {
                            (true, Ok(_)) => true,
                            (_, body) => {
                                if first_error.is_none() {
                                    let text = body
                                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                                        .unwrap_or_default();
                                    first_error = Some(format!(
                                        "{status}: {}",
                                        text.chars().take(300).collect::<String>()
                                    ));
                                }
                                false
                            }
                        }
                    }
                    Err(e) => {
                        first_error.get_or_insert_with(|| e.to_string());
                        false
                    }
                };
                let done = Instant::now();
                if sent >= measure_from && done <= until {
                    if ok {
                        latencies.push(
                            done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32
                        );
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                } else if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            (latencies, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut first_error = None;
    for task in tasks {
        let (latencies, error) = task.await.expect("load task");
        all.extend(latencies);
        if first_error.is_none() {
            first_error = error;
        }
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    EdgeFigures {
        requests: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        tps: all.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        first_error,
    }
}

/// pgbench on one script; returns tps (without initial connection time).
struct Pgbench<'a> {
    settings: &'a Settings,
    dir: PathBuf,
}

impl Pgbench<'_> {
    fn run(
        &self,
        name: &str,
        user: &str,
        script: &str,
        vars: &[(&str, String)],
    ) -> Result<f64, Failure> {
        let file = self.dir.join(format!("{name}.sql"));
        std::fs::write(&file, script)?;
        let s = self.settings;
        let mut cmd = Command::new(&s.pgbench);
        cmd.args(["-n", "-M", "extended", "-j", "2"])
            .arg("-c")
            .arg(s.clients.to_string());
        match s.pgbench_transactions {
            Some(n) => cmd.arg("-t").arg(n.to_string()),
            None => cmd
                .arg("-T")
                .arg(((s.seconds.ceil() as u64).max(1)).to_string()),
        };
        cmd.args(["-h", &s.pg_host, "-p", &s.pg_port, "-U", user, "-f"])
            .arg(&file);
        for (k, v) in vars {
            cmd.arg("-D").arg(format!("{k}={v}"));
        }
        cmd.arg(&s.db);
        let out = cmd.output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let failed = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if !out.status.success() || failed > 0 {
            return Err(format!(
                "pgbench {name} failed ({failed} failed transactions): {stderr}{stdout}"
            )
            .into());
        }
        stdout
            .lines()
            .find(|l| l.starts_with("tps = ") && l.contains("without initial connection time"))
            .and_then(|l| l[6..].split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("pgbench {name}: no tps in its output: {stdout}").into())
    }
}

fn sign(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token")
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, Failure> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The tenant `slug`'s first manager and its rep with the most contacts,
/// each with a new live session and a token valid for an hour.
async fn users(
    db: &tokio_postgres::Client,
    secret: &str,
    slug: &str,
) -> Result<(User, User), Failure> {
    let rows = db
        .query(
            "SELECT t.id::text, m.user_id::text, m.role, crm_private.create_session(m.user_id)::text
               FROM core.tenants t
               JOIN core.memberships m ON m.tenant_id = t.id
               JOIN auth.users u ON u.id = m.user_id
              WHERE t.slug = $1
                AND (u.email = 'manager1@' || t.slug || '.example'
                     OR m.user_id = (SELECT c.assigned_to FROM crm.contacts c
                                      WHERE c.tenant_id = t.id GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1))",
            &[&slug],
        )
        .await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut manager = None;
    let mut rep = None;
    for row in rows {
        let (tenant_id, user_id, role, session): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let claims = json!({
            "iss": "aura-bench", "sub": user_id, "aud": "authenticated", "role": "authenticated",
            "iat": now, "exp": now + 3 * 3600, "session_id": session,
            "app_metadata": { "tenant_id": tenant_id }, "user_metadata": {}
        });
        let user = User {
            token: sign(secret, &claims),
            claims,
            tenant_id,
        };
        if role == "manager" {
            manager = Some(user);
        } else if role == "rep" {
            rep = Some(user);
        }
    }
    match (manager, rep) {
        (Some(m), Some(r)) => Ok((m, r)),
        _ => Err(
            format!("tenant {slug} has no manager1 or no rep with contacts: run make seed").into(),
        ),
    }
}

/// The cursor `pages` pages into list_contacts for `user`, following next_cursor through
/// the edge; fewer pages where the list is shorter. Returns the cursor and the depth.
async fn deep_cursor(
    http: &reqwest::Client,
    edge: &str,
    user: &User,
    pages: usize,
) -> Result<(Option<String>, usize), Failure> {
    let mut cursor: Option<String> = None;
    let mut depth = 0;
    for _ in 0..pages {
        let mut request = http
            .get(format!("{edge}/rest/v1/rpc/list_contacts"))
            .bearer_auth(&user.token);
        if let Some(c) = &cursor {
            request = request.query(&[("cursor", c)]);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            return Err(format!("list_contacts while paging: {status} {body}").into());
        }
        match body["next_cursor"].as_str() {
            Some(next) => {
                cursor = Some(next.to_owned());
                depth += 1;
            }
            None => break,
        }
    }
    Ok((cursor, depth))
}

/// Ids and search terms from the tenant's own data.
struct Samples {
    contact: String,
    name_fragment: String,
    email: String,
    phone: String,
    deals: Arc<Vec<String>>,
    open_deals: Arc<Vec<String>>,
    contacts: Arc<Vec<String>>,
    ids: usize,
}

async fn samples(db: &tokio_postgres::Client, slug: &str, rep: &User) -> Result<Samples, Failure> {
    let row = db
        .query_one(
            "SELECT c.id::text, lower(left(c.last_name, 5)), c.email,
                    regexp_replace(c.phone_digits, '^.*(...)(....)$', '\\1 \\2')
               FROM crm.contacts c
              WHERE c.tenant_id = $1::text::uuid AND c.assigned_to = $2::text::uuid
              ORDER BY c.email LIMIT 1",
            &[
                &rep.tenant_id,
                &rep.claims["sub"].as_str().unwrap_or_default(),
            ],
        )
        .await?;
    let ids: i64 = db
        .query_one(
            "SELECT least(count(*) / 8, 1000)::bigint FROM crm.deals d JOIN core.tenants t ON t.id = d.tenant_id WHERE t.slug = $1",
            &[&slug],
        )
        .await?
        .get(0);
    let ids = ids.max(1);
    // The seed's ids (md5 of slug, kind and number): deals 1.., open deals 1, 9, 17.. (every
    // eighth deal starts as a prospect), contacts 1..; pgbench derives the same.
    let list = |kind: &'static str, step: i64| {
        let sql = format!("SELECT md5($1 || ':{kind}:' || ({step} * i + 1))::uuid::text FROM generate_series(0, $2::bigint - 1) i");
        async move { db.query(&sql, &[&slug, &ids]).await }
    };
    let strings = |rows: Vec<tokio_postgres::Row>| {
        Arc::new(
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>(),
        )
    };
    Ok(Samples {
        contact: row.get(0),
        name_fragment: row.get(1),
        email: row.get(2),
        phone: row.get(3),
        deals: strings(list("d", 1).await?),
        open_deals: strings(list("d", 8).await?),
        contacts: strings(list("c", 1).await?),
        ids: ids as usize,
    })
}

fn get_args(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

/// The scenarios for one tenant.
async fn scenarios(
    http: &reqwest::Client,
    edge: &str,
    db: &tokio_postgres::Client,
    secret: &str,
    slug: &str,
) -> Result<(Vec<Scenario>, usize), Failure> {
    let (manager, rep) = users(db, secret, slug).await?;
    let s = samples(db, slug, &rep).await?;
    let (manager_deep, depth_m) = deep_cursor(http, edge, &manager, 100).await?;
    let (rep_deep, depth_r) = deep_cursor(http, edge, &rep, 100).await?;
    let sc = |key: &'static str,
              name: String,
              user: &User,
              function: &'static str,
              args: Map<String, Value>,
              get: bool,
              vary: Vary| Scenario {
        key,
        name,
        user: user.clone(),
        function,
        args,
        get,
        vary,
        slug: slug.to_owned(),
    };
    let mut list = vec![
        sc(
            "whoami",
            "whoami".into(),
            &rep,
            "whoami",
            Map::new(),
            true,
            Vary::Fixed,
        ),
        sc(
            "get_contact",
            "get_contact".into(),
            &rep,
            "get_contact",
            get_args(&[("id", &s.contact)]),
            true,
            Vary::Fixed,
        ),
        sc(
            "list_manager_1",
            "list contacts, manager, page 1".into(),
            &manager,
            "list_contacts",
            Map::new(),
            true,
            Vary::Fixed,
        ),
    ];
    if let Some(c) = &manager_deep {
        list.push(sc(
            "list_manager_deep",
            format!("list contacts, manager, page {}", depth_m + 1),
            &manager,
            "list_contacts",
            get_args(&[("cursor", c)]),
            true,
            Vary::Fixed,
        ));
    }
    list.push(sc(
        "list_rep_1",
        "list contacts, rep, page 1".into(),
        &rep,
        "list_contacts",
        Map::new(),
        true,
        Vary::Fixed,
    ));
    if let Some(c) = &rep_deep {
        list.push(sc(
            "list_rep_deep",
            format!("list contacts, rep, page {}", depth_r + 1),
            &rep,
            "list_contacts",
            get_args(&[("cursor", c)]),
            true,
            Vary::Fixed,
        ));
    }
    list.extend([
        sc(
            "search_name_rep",
            format!("search name \"{}\", rep", s.name_fragment),
            &rep,
            "search_contacts",
            get_args(&[("q", &s.name_fragment)]),
            true,
            Vary::Fixed,
        ),
        sc(
            "search_name_manager",
            format!("search name \"{}\", manager", s.name_fragment),
            &manager,
            "search_contacts",
            get_args(&[("q", &s.name_fragment)]),
            true,
            Vary::Fixed,
        ),
        sc(
            "search_email",
            "search email, rep".into(),
            &rep,
            "search_contacts",
            get_args(&[("q", &s.email)]),
            true,
            Vary::Fixed,
        ),
        sc(
            "search_phone",
            format!("search phone \"{}\", rep", s.phone),
            &rep,
            "search_contacts",
            get_args(&[("q", &s.phone)]),
            true,
            Vary::Fixed,
        ),
        sc(
            "deal_filter",
            "deal filter (stage, probability, close date, by amount), manager".into(),
            &manager,
            "list_deals",
            get_args(&[
                ("stage", "proposal"),
                ("min_probability", "10"),
                ("close_to", "2027-06-30"),
                ("sort", "amount"),
            ]),
            true,
            Vary::Fixed,
        ),
        sc(
            "pipeline_summary",
            "pipeline summary, manager".into(),
            &manager,
            "pipeline_summary",
            Map::new(),
            true,
            Vary::Fixed,
        ),
        sc(
            "create_contact",
            "create contact, manager".into(),
            &manager,
            "create_contact",
            Map::new(),
            false,
            Vary::NewContact,
        ),
        sc(
            "update_deal",
            "update deal amount, manager".into(),
            &manager,
            "update_deal",
            Map::new(),
            false,
            Vary::DealAmount(s.deals.clone()),
        ),
        sc(
            "move_deal",
            "move deal, manager".into(),
            &manager,
            "move_deal",
            Map::new(),
            false,
            Vary::DealStage(s.open_deals.clone()),
        ),
        sc(
            "log_activity",
            "log activity, manager".into(),
            &manager,
            "log_activity",
            Map::new(),
            false,
            Vary::Activity(s.contacts.clone()),
        ),
    ]);
    Ok((list, s.ids))
}

/// The edge's SQL for this call, from the edge's own catalog code.
async fn call_sql(
    db: &tokio_postgres::Client,
    scenario: &Scenario,
    rng: &mut Xorshift,
) -> Result<String, Failure> {
    let catalog = edge::catalog::Catalog::load(db).await?;
    let keys: BTreeSet<String> = scenario.args_for(rng).keys().cloned().collect();
    let f = catalog
        .resolve(scenario.function, &keys)
        .map_err(|e| format!("{}: {e:?}", scenario.function))?;
    Ok(edge::rpc::build_call(f, &keys).sql)
}

/// The pgbench script of the edge's transaction for `scenario`; `as_owner` leaves out the
/// role switch (the superuser is not subject to row-level security).
fn transaction_script(
    scenario: &Scenario,
    sql: &str,
    ids: usize,
    as_owner: bool,
    timeout_ms: u64,
) -> String {
    let (sets, args) = scenario.pgbench_args(ids);
    let begin = if scenario.get {
        "BEGIN READ ONLY"
    } else {
        "BEGIN"
    };
    let role = if as_owner {
        ""
    } else {
        "SET LOCAL ROLE authenticated;\n"
    };
    let call = sql.replace("$1::jsonb", &format!("({args})::jsonb"));
    format!(
        "{sets}\\startpipeline\n{begin};\n{role}SET LOCAL statement_timeout = {timeout_ms};\n\
         SELECT crm_private.begin_request(:claims::jsonb, :tenant::uuid);\n{call};\nCOMMIT;\n\\endpipeline\n"
    )
}

fn bare_script(read_only: bool, timeout_ms: u64) -> String {
    let begin = if read_only {
        "BEGIN READ ONLY"
    } else {
        "BEGIN"
    };
    format!("\\startpipeline\n{begin};\nSET LOCAL ROLE authenticated;\nSET LOCAL statement_timeout = {timeout_ms};\nCOMMIT;\n\\endpipeline\n")
}

#[derive(Debug, Clone)]
struct Row {
    scenario: String,
    edge: EdgeFigures,
    pgbench_tps: f64,
    bare_tps: f64,
    no_rls_tps: f64,
    /// The main scenarios: through PgBouncer, and with the rate limiter off.
    bouncer: Option<EdgeFigures>,
    unlimited: Option<EdgeFigures>,
    /// Audited writes and access-logged reads: the same through the edge with the audit
    /// triggers disabled or the access log off.
    not_recorded: Option<EdgeFigures>,
}

/// Record reads that write the access log: measured again with it off server-wide
/// (`pg_crm.access_log`), for what it costs a read (issue 9).
const ACCESS_LOGGED: [&str; 1] = ["get_contact"];

/// Audited write scenarios and the audit triggers that serve them: measured again with those
/// triggers disabled, for what auditing costs (issue 9: at least 90% of the throughput).
const AUDITED: [(&str, &str, &str); 1] = [(
    "move_deal",
    "crm.deal_stage_changes",
    "deal_stage_changes_audit",
)];

/// The scenarios measured through PgBouncer and without the rate limiter too.
const MAIN: [&str; 5] = [
    "get_contact",
    "list_manager_1",
    "search_name_rep",
    "deal_filter",
    "create_contact",
];

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    if let Err(e) = run().await {
        // tokio-postgres says only "db error"; the server's message is its source.
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        eprintln!("aura-bench: {message}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Failure> {
    let s = Settings::from_env()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(s.clients)
        .timeout(Duration::from_secs(60))
        .build()?;
    let db = connect(&s.admin).await?;
    let dir = std::env::temp_dir().join(format!("aura-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pgbench = Pgbench {
        settings: &s,
        dir: dir.clone(),
    };
    let mut rng = Xorshift(42);

    println!(
        "bench: {} clients, {} s warm-up, {} s per variant; tenant {} (big) and {} (small)",
        s.clients, s.warmup, s.seconds, s.big, s.small
    );
    let bare_ro = pgbench.run(
        "bare_ro",
        "authenticator",
        &bare_script(true, s.statement_timeout_ms),
        &[],
    )?;
    let bare_rw = pgbench.run(
        "bare_rw",
        "authenticator",
        &bare_script(false, s.statement_timeout_ms),
        &[],
    )?;
    println!("bench: bare transaction {bare_ro:.0} tps read-only, {bare_rw:.0} tps read-write");

    let mut errors = Vec::new();
    let mut big_rows = Vec::new();
    let (big, ids) = scenarios(&http, &s.edge, &db, &s.jwt_secret, &s.big).await?;
    for (i, scenario) in big.iter().enumerate() {
        let edge = drive_edge(&http, &s.edge, scenario, s.clients, s.warmup, s.seconds).await;
        if edge.errors > 0 || edge.requests == 0 {
            errors.push(format!(
                "{}: {} errors, {} ok; first: {}",
                scenario.name,
                edge.errors,
                edge.requests,
                edge.first_error.clone().unwrap_or_default()
            ));
        }
        let sql = call_sql(&db, scenario, &mut rng).await?;
        let vars = [
            ("claims", scenario.user.claims.to_string()),
            ("tenant", scenario.user.tenant_id.clone()),
            (
                "args",
                Value::Object(scenario.args_for(&mut rng)).to_string(),
            ),
            ("slug", scenario.slug.clone()),
        ];
        let same = pgbench.run(
            &format!("s{i}"),
            "authenticator",
            &transaction_script(scenario, &sql, ids, false, s.statement_timeout_ms),
            &vars,
        )?;
        let owner = pgbench.run(
            &format!("s{i}_owner"),
            "postgres",
            &transaction_script(scenario, &sql, ids, true, s.statement_timeout_ms),
            &vars,
        )?;
        let mut extra = Vec::new();
        for url in [&s.bouncer_edge, &s.unlimited_edge] {
            let figures = match url {
                Some(url) if MAIN.contains(&scenario.key) => {
                    let f = drive_edge(&http, url, scenario, s.clients, s.warmup, s.seconds).await;
                    if f.errors > 0 || f.requests == 0 {
                        errors.push(format!(
                            "{} at {url}: {} errors; first: {}",
                            scenario.name,
                            f.errors,
                            f.first_error.clone().unwrap_or_default()
                        ));
                    }
                    Some(f)
                }
                _ => None,
            };
            extra.push(figures);
        }
        let unlimited = extra.pop().flatten();
        let bouncer = extra.pop().flatten();
        let mut not_recorded = None;
        if let Some((_, table, trigger)) = AUDITED.iter().find(|(key, ..)| *key == scenario.key) {
            db.batch_execute(&format!("ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
                .await?;
            let f = drive_edge(&http, &s.edge, scenario, s.clients, s.warmup, s.seconds).await;
            db.batch_execute(&format!("ALTER TABLE {table} ENABLE TRIGGER {trigger}"))
                .await?;
            if f.errors > 0 || f.requests == 0 {
                errors.push(format!(
                    "{} without auditing: {} errors; first: {}",
                    scenario.name,
                    f.errors,
                    f.first_error.clone().unwrap_or_default()
                ));
            }
            not_recorded = Some(f);
        }
        if ACCESS_LOGGED.contains(&scenario.key) {
            // ALTER SYSTEM runs alone, outside any transaction block.
            for sql in [
                "ALTER SYSTEM SET pg_crm.access_log = off",
                "SELECT pg_reload_conf()",
            ] {
                db.batch_execute(sql).await?;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let f = drive_edge(&http, &s.edge, scenario, s.clients, s.warmup, s.seconds).await;
            for sql in [
                "ALTER SYSTEM RESET pg_crm.access_log",
                "SELECT pg_reload_conf()",
            ] {
                db.batch_execute(sql).await?;
            }
            if f.errors > 0 || f.requests == 0 {
                errors.push(format!(
                    "{} without the access log: {} errors; first: {}",
                    scenario.name,
                    f.errors,
                    f.first_error.clone().unwrap_or_default()
                ));
            }
            not_recorded = Some(f);
        }
        let row = Row {
            scenario: scenario.name.clone(),
            edge,
            pgbench_tps: same,
            bare_tps: if scenario.get { bare_ro } else { bare_rw },
            no_rls_tps: owner,
            bouncer,
            unlimited,
            not_recorded,
        };
        println!(
            "  {:<58} edge {:>7.0} tps  p95 {:>6.1} ms | pgbench {:>7.0} | no RLS {:>7.0}",
            row.scenario, row.edge.tps, row.edge.p95_ms, row.pgbench_tps, row.no_rls_tps
        );
        big_rows.push(row);
    }

    // The small tenant, among many tenants and among few: the edge alone.
    let mut small_rows: Vec<(String, EdgeFigures, Option<EdgeFigures>)> = Vec::new();
    let (small, _) = scenarios(&http, &s.edge, &db, &s.jwt_secret, &s.small).await?;
    let few = match (&s.few_edge, &s.few_admin) {
        (Some(edge), Some(admin)) => {
            let few_db = connect(admin).await?;
            Some((
                edge.clone(),
                scenarios(&http, edge, &few_db, &s.jwt_secret, &s.small)
                    .await?
                    .0,
            ))
        }
        _ => None,
    };
    for scenario in &small {
        let many = drive_edge(&http, &s.edge, scenario, s.clients, s.warmup, s.seconds).await;
        if many.errors > 0 || many.requests == 0 {
            errors.push(format!(
                "small {}: {} errors; first: {}",
                scenario.name,
                many.errors,
                many.first_error.clone().unwrap_or_default()
            ));
        }
        let other = match &few {
            Some((edge, list)) => match list.iter().find(|x| x.key == scenario.key) {
                Some(twin) => {
                    let f = drive_edge(&http, edge, twin, s.clients, s.warmup, s.seconds).await;
                    if f.errors > 0 || f.requests == 0 {
                        errors.push(format!(
                            "small (few tenants) {}: {} errors; first: {}",
                            twin.name,
                            f.errors,
                            f.first_error.clone().unwrap_or_default()
                        ));
                    }
                    Some(f)
                }
                _ => None,
            },
            None => None,
        };
        println!(
            "  small: {:<51} {} {:>7.0} tps p95 {:>6.1} ms | {} {}",
            scenario.name,
            s.many_label,
            many.tps,
            many.p95_ms,
            s.few_label,
            other
                .as_ref()
                .map(|f| format!("{:>7.0} tps p95 {:>6.1} ms", f.tps, f.p95_ms))
                .unwrap_or_else(|| "-".into())
        );
        small_rows.push((scenario.name.clone(), many, other));
    }

    let table = render(&s, bare_ro, bare_rw, &big_rows, &small_rows);
    println!("\n{table}");
    if let Some(path) = &s.json_out {
        let doc = json!({
            "machine": machine(),
            "commit": s.commit,
            "date": s.date,
            "clients": s.clients,
            "seconds": s.seconds,
            "warmup_seconds": s.warmup,
            "big_tenant": s.big,
            "small_tenant": s.small,
            "bare_tps": { "read_only": bare_ro, "read_write": bare_rw },
            "big": big_rows.iter().map(|r| json!({
                "scenario": r.scenario,
                "edge": { "tps": r.edge.tps, "requests": r.edge.requests, "errors": r.edge.errors,
                          "p50_ms": r.edge.p50_ms, "p95_ms": r.edge.p95_ms, "p99_ms": r.edge.p99_ms },
                "pgbench_identical_tps": r.pgbench_tps,
                "bare_tps": r.bare_tps,
                "no_rls_tps": r.no_rls_tps,
                "edge_vs_pgbench": ratio(r.edge.tps, r.pgbench_tps),
                "pgbench_vs_bare": ratio(r.pgbench_tps, r.bare_tps),
                "rls_vs_no_rls": ratio(r.pgbench_tps, r.no_rls_tps),
                "edge_via_pgbouncer": r.bouncer.as_ref().map(|f| json!({ "tps": f.tps, "p50_ms": f.p50_ms, "p95_ms": f.p95_ms, "p99_ms": f.p99_ms })),
                "edge_rate_limiter_off": r.unlimited.as_ref().map(|f| json!({ "tps": f.tps, "p50_ms": f.p50_ms, "p95_ms": f.p95_ms, "p99_ms": f.p99_ms })),
                "edge_not_recorded": r.not_recorded.as_ref().map(|f| json!({ "tps": f.tps, "p50_ms": f.p50_ms, "p95_ms": f.p95_ms, "p99_ms": f.p99_ms })),
            })).collect::<Vec<_>>(),
            "small": small_rows.iter().map(|(name, many, few)| json!({
                "scenario": name,
                "many_tenants": { "label": s.many_label, "tps": many.tps, "p50_ms": many.p50_ms, "p95_ms": many.p95_ms, "p99_ms": many.p99_ms },
                "few_tenants": few.as_ref().map(|f| json!({ "label": s.few_label, "tps": f.tps, "p50_ms": f.p50_ms, "p95_ms": f.p95_ms, "p99_ms": f.p99_ms })),
            })).collect::<Vec<_>>(),
            "table": table,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
        println!("bench: wrote {}", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !errors.is_empty() {
        return Err(format!("some requests failed:\n  {}", errors.join("\n  ")).into());
    }
    Ok(())
}

/// The one table `make bench` prints (and the README shows).
fn render(
    s: &Settings,
    bare_ro: f64,
    bare_rw: f64,
    big: &[Row],
    small: &[(String, EdgeFigures, Option<EdgeFigures>)],
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Tenant {} at {} connections ({} s per variant; commit {}, {})",
        s.big, s.clients, s.seconds, s.commit, s.date
    );
    let _ = writeln!(
        t,
        "bare transaction: {bare_ro:.0} tps read-only, {bare_rw:.0} tps read-write"
    );
    let _ = writeln!(t);
    let _ = writeln!(t, "| scenario | edge tps | p50 ms | p95 ms | p99 ms | pgbench tps | edge / pgbench | pgbench / bare | no-RLS tps | RLS / no-RLS |");
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in big {
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |",
            r.scenario,
            r.edge.tps,
            r.edge.p50_ms,
            r.edge.p95_ms,
            r.edge.p99_ms,
            r.pgbench_tps,
            ratio(r.edge.tps, r.pgbench_tps),
            ratio(r.pgbench_tps, r.bare_tps),
            r.no_rls_tps,
            ratio(r.pgbench_tps, r.no_rls_tps)
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "The main scenarios through PgBouncer (transaction mode) and with the rate limiter off"
    );
    let _ = writeln!(t);
    let _ = writeln!(t, "| scenario | edge tps | via PgBouncer tps | p95 ms | PgBouncer / direct | limiter off tps | limiter on / off |");
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|");
    for r in big
        .iter()
        .filter(|r| r.bouncer.is_some() || r.unlimited.is_some())
    {
        let cell = |f: &Option<EdgeFigures>| {
            f.as_ref()
                .map(|f| format!("{:.0}", f.tps))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            t,
            "| {} | {:.0} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.edge.tps,
            cell(&r.bouncer),
            r.bouncer
                .as_ref()
                .map(|f| format!("{:.1}", f.p95_ms))
                .unwrap_or_else(|| "-".into()),
            r.bouncer
                .as_ref()
                .map(|f| format!("{:.2}", ratio(f.tps, r.edge.tps)))
                .unwrap_or_else(|| "-".into()),
            cell(&r.unlimited),
            r.unlimited
                .as_ref()
                .map(|f| format!("{:.2}", ratio(r.edge.tps, f.tps)))
                .unwrap_or_else(|| "-".into()),
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Audited writes with the audit triggers disabled, and reads with the access log off (same tenant, same connections)"
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| scenario | edge tps (recorded) | p95 ms | edge tps (not recorded) | p95 ms | recorded / not |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
    for r in big {
        if let Some(f) = &r.not_recorded {
            let _ = writeln!(
                t,
                "| {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2} |",
                r.scenario,
                r.edge.tps,
                r.edge.p95_ms,
                f.tps,
                f.p95_ms,
                ratio(r.edge.tps, f.tps)
            );
        }
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Tenant {} through the edge, among {} and among {}",
        s.small, s.many_label, s.few_label
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| scenario | tps ({}) | p95 ms | tps ({}) | p95 ms | tps ratio |",
        s.many_label, s.few_label
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
    for (name, many, few) in small {
        match few {
            Some(f) => {
                let _ = writeln!(
                    t,
                    "| {name} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2} |",
                    many.tps,
                    many.p95_ms,
                    f.tps,
                    f.p95_ms,
                    ratio(many.tps, f.tps)
                );
            }
            None => {
                let _ = writeln!(
                    t,
                    "| {name} | {:.0} | {:.1} | - | - | - |",
                    many.tps, many.p95_ms
                );
            }
        }
    }
    t
}
