//! The overview: each algorithm's active and pending key, the next rotation, warnings.

use std::sync::Arc;

use askama::Template;
use rocket::http::Status;
use rocket::{get, routes, Route, State};

use super::format::when;
use super::page::{frame, render, Frame, Page};
use super::AdminSession;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::{Keys, Keyturn};

pub fn routes() -> Vec<Route> {
    routes![overview]
}

struct AlgRow {
    alg: String,
    active_kid: String,
    active_since: String,
    pending_kid: String,
    next_rotation: String,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    f: Frame,
    algorithms: Vec<AlgRow>,
    next_fire: String,
    tokens_24h: u64,
    revocations: usize,
    jwks_size: String,
    /// Introspection answers since this process started: (active, inactive).
    introspections: (u64, u64),
    warnings: Vec<String>,
    timeline: super::timeline::Timeline,
    charts: Vec<super::chart::Chart>,
    schedule: String,
    publish_lead: String,
}

#[get("/admin")]
async fn overview(
    service: &State<Arc<Keyturn>>,
    keys: &State<Arc<Keys>>,
    config: &State<Arc<Config>>,
    metrics: &State<Arc<Metrics>>,
    s: AdminSession,
) -> Page {
    let o = service.overview().await.map_err(|_| Status::InternalServerError)?;
    let internal = |_| Status::InternalServerError;
    let views = keys.list_keys().await.map_err(internal)?;
    let hours = service.activity(24, 3600).await.map_err(internal)?;
    let days = service.activity(30, 86_400).await.map_err(internal)?;
    let algs: Vec<String> = config.algorithms.iter().map(|a| a.to_string()).collect();
    let timeline = super::timeline::draw(&views, &algs, o.now, o.next_fire, 3, 7);
    let hour = |a: &crate::service::overview::Activity| format!("{:02}:00", a.start.hour());
    let day = |a: &crate::service::overview::Activity| format!("{:02}-{:02}", u8::from(a.start.month()), a.start.day());
    let chart = super::chart::draw("Last 24 hours, per hour (UTC)", &hours, hour);
    let chart_days = super::chart::draw("Last 30 days, per day (UTC)", &days, day);
    let policy = keys.policy();
    let dash = || "—".to_owned();
    let algorithms = o
        .algorithms
        .iter()
        .map(|a| AlgRow {
            alg: a.alg.to_string(),
            active_kid: a.active_kid.clone().unwrap_or_else(dash),
            active_since: a.active_since.map(|t| when(o.now, t)).unwrap_or_else(dash),
            pending_kid: a.pending_kid.clone().unwrap_or_else(dash),
            next_rotation: a.next_rotation.map(|t| when(o.now, t)).unwrap_or_else(dash),
        })
        .collect();
    render(&OverviewPage {
        f: frame(config, "Overview", Some(&s)),
        algorithms,
        next_fire: o.next_fire.map(|t| when(o.now, t)).unwrap_or_else(dash),
        tokens_24h: o.tokens_24h,
        revocations: o.revocations,
        jwks_size: format!("{:.1} KB", o.jwks_bytes as f64 / 1024.0),
        introspections: metrics.introspections(),
        warnings: o.warnings,
        timeline,
        charts: vec![chart, chart_days],
        schedule: policy.schedule.as_str().to_owned(),
        publish_lead: crate::duration::format_duration(policy.publish_lead),
    })
}
