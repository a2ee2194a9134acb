//! TLS to the database, with libpq's sslmode meanings. The whole suite already runs with
//! `sslmode=verify-full` against each cluster's throwaway CA; this shows what each mode
//! accepts and refuses, and that a refusal says why.

use aura_tests::*;

/// Connects with `params`: Ok, or the error with its causes.
async fn probe(cluster: &Cluster, params: &str) -> Result<(), String> {
    let mut config = Edge::config(cluster);
    config.database_url = cluster.authenticator_url_with(params);
    edge::db::probe(&config).await
}

/// Whether the edge's backends use TLS, as PostgreSQL sees them.
async fn edge_backends_use_tls(admin: &tokio_postgres::Client) -> Vec<bool> {
    admin
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.usename = 'authenticator'",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_verify_what_libpq_verifies() {
    let Seeded {
        edge,
        members,
        admin,
        cluster,
    } = Seeded::start("tls", 2).await;
    let tls = &cluster.tls;
    let ca = tls.ca.display().to_string();
    let other_ca = tls.other_ca.display().to_string();

    // The suite's own edge: verify-full, encrypted.
    let token = members[0].token();
    assert_eq!(rpc(&edge, Some(&token), "whoami", "{}").await.0, 200);
    // Every backend of the edge (the pool may hold a second one: its email sender shares it).
    let backends = edge_backends_use_tls(&admin).await;
    assert!(
        !backends.is_empty() && backends.iter().all(|tls| *tls),
        "{backends:?}"
    );

    // The right CA and name: every mode that verifies works.
    for params in [
        format!("sslmode=verify-full&sslrootcert={ca}"),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=require&sslrootcert={ca}"),
        "sslmode=require".to_owned(),
        "sslmode=prefer".to_owned(),
        "sslmode=disable".to_owned(),
    ] {
        assert_eq!(probe(&cluster, &params).await, Ok(()), "{params}");
    }
    // A Unix socket: no TLS there, and no host name needed.
    let mut config = Edge::config(&cluster);
    config.database_url = format!(
        "host={} port={} user=authenticator dbname=aura",
        cluster.socket_dir().display(),
        cluster.port
    );
    assert_eq!(edge::db::probe(&config).await, Ok(()));

    // A CA that did not sign the server's certificate.
    for mode in ["verify-full", "verify-ca", "require"] {
        let refused = probe(&cluster, &format!("sslmode={mode}&sslrootcert={other_ca}"))
            .await
            .expect_err(mode);
        assert!(
            refused.contains("certificate") && refused.contains("UnknownIssuer"),
            "{mode}: {refused}"
        );
    }

    // The server now presents a certificate for another name, from the same CA.
    cluster
        .serve_certificate(&tls.wrong_name.0, &tls.wrong_name.1)
        .await;
    let refused = probe(&cluster, &format!("sslmode=verify-full&sslrootcert={ca}"))
        .await
        .expect_err("verify-full must refuse a certificate for another name");
    println!("verify-full, wrong name: {refused}");
    assert!(
        refused.contains("TLS") && refused.contains("not valid for name"),
        "unclear error: {refused}"
    );
    assert!(
        refused.contains("127.0.0.1") && refused.contains("db.elsewhere.test"),
        "the error names neither the host nor the certificate's name: {refused}"
    );
    // verify-ca checks the chain only, as in libpq.
    assert_eq!(
        probe(&cluster, &format!("sslmode=verify-ca&sslrootcert={ca}")).await,
        Ok(())
    );
    // An edge configured like that answers 503 (and logs why), never anything else.
    let strict = Edge::start_with(&cluster, |c| {
        c.database_url =
            cluster.authenticator_url_with(&format!("sslmode=verify-full&sslrootcert={ca}"));
    })
    .await;
    let (status, headers, body) = rpc(&strict, Some(&token), "whoami", "{}").await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.get("retry-after").is_some());
    assert_error_body(&body, "PGRST001");

    // With the right certificate back, the same edge recovers without a restart.
    cluster
        .serve_certificate(&tls.server.0, &tls.server.1)
        .await;
    let mut recovered = false;
    for _ in 0..30 {
        if rpc(&strict, Some(&token), "whoami", "{}").await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "the edge did not recover once the certificate was right"
    );
}
