//! The typed-vector rows: `FeatureStore::vectors` against raw pipelined
//! HMGET, and `POST /v1/features` against `/batch-read` of the same ids and
//! fields, both 100 entities x 10 features of the demo's user.

use std::path::Path;
use std::time::Duration;

use feature_store::registry::{Registry, Resolved};
use feature_store::store::Status;

use crate::http::{check_ok, HttpClient, Server};
use crate::library::{self, read_ids, Ctx, PREFIX};
use crate::measure::paired;
use crate::report::{Check, Figures, RatioOn, Row};
use crate::BResult;

/// `--only vectors`: loads the users both rows read (their load rows are
/// not kept), then the library row and, with a server, the HTTP row; with
/// `vs` too, the same requests on that server against the first.
pub fn section(
    ctx: &mut Ctx,
    server_bin: Option<&Path>,
    vs: Option<&Path>,
    rows: &mut Vec<Row>,
) -> BResult<()> {
    library::bulk_load(ctx)?;
    library::update_streaming(ctx)?;
    crate::step("vectors", rows, library_row(ctx))?;
    if let Some(bin) = server_bin {
        eprintln!("fs-bench: starting {} ...", bin.display());
        let server = Server::start(bin, &ctx.redis.url())?;
        crate::step("http /v1/features", rows, http_row(ctx, &server))?;
        if let Some(other) = vs {
            eprintln!("fs-bench: starting {} ...", other.display());
            let other_server = Server::start(other, &ctx.redis.url())?;
            crate::step(
                "http /v1/features vs another server",
                rows,
                vs_row(ctx, &server, &other_server, other),
            )?;
        }
    }
    Ok(())
}

/// The bodies of the `/v1/features` requests: 100 ids each.
fn v1_bodies(ids: &[String]) -> BResult<Vec<Vec<u8>>> {
    Ok(ids
        .chunks(100)
        .map(|chunk| {
            serde_json::to_vec(&serde_json::json!({
                "entity": "user", "features": VECTOR_FEATURES, "ids": chunk,
            }))
        })
        .collect::<Result<_, _>>()?)
}

/// `POST /v1/features` on `server` against the same on `other` (another
/// build), alternating in blocks of 10 requests.
fn vs_row(ctx: &mut Ctx, server: &Server, other: &Server, other_bin: &Path) -> BResult<Row> {
    let n = ctx.sizes.http_batch_iters;
    let bodies = v1_bodies(&read_ids(ctx.streamed, n * 100, 10))?;
    let mut a = HttpClient::connect(server.addr)?;
    let mut b = HttpClient::connect(other.addr)?;
    let cpu_before = (server.cpu_time(), other.cpu_time());
    let (ours, base) = paired(
        (n / 10).max(5),
        n,
        (n / 10).max(1),
        |i| -> BResult<()> {
            let (status, body) = a.post("/v1/features", &bodies[i])?;
            check_ok("POST /v1/features", status, &body)
        },
        |i| -> BResult<()> {
            let (status, body) = b.post("/v1/features", &bodies[i])?;
            check_ok("POST /v1/features (other server)", status, &body)
        },
    )?;
    Ok(Row {
        id: "v1_features_vs",
        operation: "HTTP `POST /v1/features`, 100 entities x 10 typed features, this server".into(),
        unit: "req",
        ours: Figures::Timed(ours),
        baseline_name: format!("the same requests on {}", other_bin.display()),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![],
        note: format!(
            "{n} requests each side (after {} warm-up ones), alternating in blocks of 10. \
             Server CPU (user + system, from /proc) per request, warm-up included: {}.",
            (n / 10).max(5),
            match (cpu_before, (server.cpu_time(), other.cpu_time())) {
                ((Some(a0), Some(b0)), (Some(a1), Some(b1))) => {
                    let per = |d: Duration| d.as_secs_f64() * 1e6 / (n + (n / 10).max(5)) as f64;
                    format!(
                        "this server {:.0} us, the other {:.0} us",
                        per(a1.saturating_sub(a0)),
                        per(b1.saturating_sub(b0))
                    )
                }
                _ => "not readable here".into(),
            }
        ),
    })
}

/// Ten of the demo registry's eleven user features, of every type it
/// declares (category, int, float, string), batch and stream views.
pub const VECTOR_FEATURES: [&str; 10] = [
    "user_profile.country_iso",
    "user_profile.risk_segment",
    "user_profile.account_age_days",
    "user_profile.tx_count_7d",
    "user_profile.avg_amount_30d",
    "user_profile.chargeback_count_180d",
    "user_activity.last_login_ts",
    "user_activity.last_device_id",
    "user_activity.tx_count_5m",
    "user_activity.failed_logins_15m",
];

/// The same features as hash fields (what `/batch-read` and HMGET name).
fn fields() -> Vec<&'static str> {
    VECTOR_FEATURES
        .iter()
        .map(|r| r.split_once('.').map_or(*r, |(_, f)| f))
        .collect()
}

fn resolved() -> BResult<Resolved> {
    let refs: Vec<String> = VECTOR_FEATURES.iter().map(|r| r.to_string()).collect();
    Ok(Registry::demo().resolve_features(Some("user"), &refs)?)
}

/// `FeatureStore::vectors` of 100 entities x 10 features against 100
/// pipelined HMGETs of the same keys and fields.
pub fn library_row(ctx: &mut Ctx) -> BResult<Row> {
    let n = ctx.sizes.batch_iters;
    let ids = read_ids(ctx.streamed, n * 100, 8);
    let resolved = resolved()?;
    let fields = fields();
    let (store, raw) = (ctx.store, &mut *ctx.raw);
    // Once: every value is there and of its type, so the row times typed
    // reads, not a short cut.
    let first = store.vectors(&resolved, &ids[..100], None)?;
    if first.status.iter().flatten().any(|s| *s != Status::Present) {
        return Err(format!(
            "vectors: not every value present: {:?}",
            first
                .status
                .iter()
                .flatten()
                .find(|s| **s != Status::Present)
        )
        .into());
    }
    let (ours, base) = paired(
        (n / 10).max(5),
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            let v = store.vectors(&resolved, &ids[i * 100..(i + 1) * 100], None)?;
            if v.values.len() != 100 {
                return Err(format!("vectors returned {} rows", v.values.len()).into());
            }
            Ok(())
        },
        |i| -> BResult<()> {
            let mut pipe = redis::pipe();
            for id in &ids[i * 100..(i + 1) * 100] {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(format!("{PREFIX}{id}")).arg(&fields);
                pipe.add_command(cmd);
            }
            let _: Vec<Vec<Option<String>>> = pipe.query(raw)?;
            Ok(())
        },
    )?;
    Ok(Row {
        id: "vectors",
        operation: "`FeatureStore::vectors`, 100 entities x 10 typed features".into(),
        unit: "batches",
        ours: Figures::Timed(ours),
        baseline_name: "raw pipelined HMGET of the same keys and fields (100 in one round trip)"
            .into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![Check::RatioAtMost(1.15)],
        note: format!(
            "{n} batches of 100 random users each side, interleaved in {} rounds; ours checks the \
             ids against the entity, and parses every value as its declared type (category, int, \
             float, string) with a status; the baseline reads `Vec<Vec<Option<String>>>`.",
            ctx.sizes.rounds
        ),
    })
}

/// `POST /v1/features` of 100 users x 10 features against `POST
/// /batch-read` of the same ids and fields, each on a keep-alive connection.
pub fn http_row(ctx: &mut Ctx, server: &Server) -> BResult<Row> {
    let n = ctx.sizes.http_batch_iters;
    let ids = read_ids(ctx.streamed, n * 100, 9);
    let fields = fields();
    let ours_bodies = v1_bodies(&ids)?;
    let base_bodies: Vec<Vec<u8>> = ids
        .chunks(100)
        .map(|chunk| serde_json::to_vec(&serde_json::json!({ "ids": chunk, "fields": fields })))
        .collect::<Result<_, _>>()?;
    let mut client = HttpClient::connect(server.addr)?;
    let mut base_client = HttpClient::connect(server.addr)?;
    let (status, body) = client.post("/v1/features", &ours_bodies[0])?;
    check_ok("POST /v1/features", status, &body)?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let present = v["status"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r.as_array())
                .flatten()
                .filter(|s| *s == "present")
                .count()
        })
        .unwrap_or(0);
    if present != 100 * VECTOR_FEATURES.len() {
        return Err(format!("POST /v1/features: {present} values present of 1000").into());
    }
    let (ours, base) = paired(
        (n / 10).max(5),
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            let (status, body) = client.post("/v1/features", &ours_bodies[i])?;
            check_ok("POST /v1/features", status, &body)
        },
        |i| -> BResult<()> {
            let (status, body) = base_client.post("/batch-read", &base_bodies[i])?;
            check_ok("POST /batch-read", status, &body)
        },
    )?;
    Ok(Row {
        id: "v1_features",
        operation: "HTTP `POST /v1/features`, 100 entities x 10 typed features, one keep-alive \
                    client"
            .into(),
        unit: "req",
        ours: Figures::Timed(ours),
        baseline_name: "HTTP `POST /batch-read` of the same ids and fields (counts only)".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![
            Check::RatioAtMost(1.2),
            Check::P50AtMost(Duration::from_millis(1)),
        ],
        note: format!(
            "{n} requests of 100 random users each side, each on its own keep-alive \
             connection, interleaved in {} rounds; ours answers all 1000 values JSON-typed with a status each \
             (about 25 KB), `/batch-read` only counts (about 1 KB).",
            ctx.sizes.rounds
        ),
    })
}
