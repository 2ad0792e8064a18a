//! The web console: pages maasd serves under `/ui/`, rendered on the server from the same
//! `Maas` service calls the gRPC and REST faces make, as the caller's principal. The
//! stylesheet and the one small script are built into the binary (no CDN: it works with
//! no internet). Charts are inline SVG, each with a table of the same figures beside it.
//!
//! - `/ui/`: batches (filter by state, submitter, action), with progress kept live;
//! - `/ui/batches/{id}`: a batch's hosts, their step timelines, its failures, and cancel /
//!   pause / resume for those allowed (the buttons appear only for a viewer who may use
//!   them, in a state they apply to);
//! - `/ui/active`, `/ui/tickets`, `/ui/stats` (success rate and throughput per action by
//!   day, week or month a year back, step runtimes per action and SKU).
//!
//! A state-changing form is accepted only from the console's own origin: browsers send the
//! client certificate with any request to maasd, so a cross-site form must not act.

use std::fmt::Write as _;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maas_core::authz::Principal;
use maas_core::model::BatchState;
use maas_core::time::Timestamp;
use tonic::Status;

use crate::pb;
use crate::pb::maas_server::Maas;
use crate::rest::{Rest, http_status};
use crate::service::Caller;

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");
/// Sent with every console response. The browser presents the client certificate to any
/// page that embeds or links the console, so another site must not frame it (a click on a
/// hidden Cancel would be the viewer's: `frame-ancestors`, `X-Frame-Options`). Scripts,
/// styles and forms come from and go to the console only; nothing inline runs. Pages show
/// the fleet as the viewer may see it, so nothing is cached.
const SECURITY_HEADERS: &[(HeaderName, &str)] = &[
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::CACHE_CONTROL, "no-store"),
];
/// Hosts listed on a batch page (failures are listed apart, all of them).
const HOSTS_SHOWN: usize = 500;
/// How far back the statistics page reads.
const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;

/// The console over a REST face's service.
#[derive(Clone)]
pub struct Console {
    rest: Rest,
}

/// A rendered page or fragment, or the failed call that stopped it.
type Page = Result<String, Status>;

impl Console {
    /// The console.
    pub fn new(rest: Rest) -> Self {
        Console { rest }
    }

    /// Answers one request under `/ui`, with the headers that keep a browser from
    /// framing, sniffing or caching the console ([`SECURITY_HEADERS`]).
    pub async fn handle(&self, request: Request, caller: Result<Principal, Status>) -> Response {
        let mut response = self.route(request, caller).await;
        let headers = response.headers_mut();
        for (name, value) in SECURITY_HEADERS {
            headers.insert(name.clone(), HeaderValue::from_static(value));
        }
        response
    }

    async fn route(&self, request: Request, caller: Result<Principal, Status>) -> Response {
        let path = request.uri().path().trim_end_matches('/').to_string();
        let query: Vec<(String, String)> =
            form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
        let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
        match path.as_str() {
            "/ui/assets/console.css" => return ([(header::CONTENT_TYPE, "text/css")], CSS).into_response(),
            "/ui/assets/console.js" => return ([(header::CONTENT_TYPE, "text/javascript")], JS).into_response(),
            _ => {}
        }
        let who = match caller {
            Ok(p) => p,
            Err(status) => return page_error(None, &status),
        };
        let fragment = q("fragment") == "1";
        let segments: Vec<&str> = path.split('/').skip(2).collect();
        let method = request.method().clone();
        let rendered: Result<(String, &str, String), Status> = match (method, segments.as_slice()) {
            (Method::GET, [] | [""]) => self
                .batches(&who, q("state"), q("submitter"), q("action"), fragment)
                .await
                .map(|b| ("Batches".into(), "batches", b)),
            (Method::GET, ["batches", id]) => {
                self.batch(&who, id, fragment).await.map(|b| (format!("Batch {id}"), "batches", b))
            }
            (Method::POST, ["batches", id, verb @ ("cancel" | "pause" | "resume")]) => {
                if let Err(status) = same_origin(request.headers()) {
                    return page_error(Some(&who), &status);
                }
                return match self.control(&who, id, verb).await {
                    Ok(()) => Redirect::to(&format!("/ui/batches/{id}")).into_response(),
                    Err(status) => page_error(Some(&who), &status),
                };
            }
            (Method::GET, ["active"]) => self.active(&who).await.map(|b| ("Active operations".into(), "active", b)),
            (Method::GET, ["tickets"]) => self.tickets(&who).await.map(|b| ("Tickets".into(), "tickets", b)),
            (Method::GET, ["stats"]) => self.stats(&who, q("by")).await.map(|b| ("Statistics".into(), "stats", b)),
            _ => Err(Status::not_found(format!("no console page {path}"))),
        };
        match rendered {
            Ok((_, _, body)) if fragment => Html(body).into_response(),
            Ok((title, nav, body)) => Html(layout(&who, &title, nav, &body)).into_response(),
            Err(status) => page_error(Some(&who), &status),
        }
    }

    fn request<T>(&self, who: &Principal, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.extensions_mut().insert(Caller(who.clone()));
        r
    }

    async fn batches(&self, who: &Principal, state: &str, submitter: &str, action: &str, fragment: bool) -> Page {
        let service = self.rest.service();
        let request = pb::ListBatchesRequest {
            states: if state.is_empty() { Vec::new() } else { vec![state.to_string()] },
            submitter: submitter.to_string(),
            action: action.to_string(),
            limit: 100,
            ..Default::default()
        };
        let list = Maas::list_batches(service, self.request(who, request)).await?.into_inner();
        let mut rows = String::new();
        for b in &list.batches {
            let c = b.counts.unwrap_or_default();
            let total = c.queued + c.running + c.succeeded + c.failed + c.cancelled;
            let done = c.succeeded + c.failed + c.cancelled;
            let _ = write!(
                rows,
                "<tr><td><a class=\"mono id\" href=\"/ui/batches/{id}\">{id}</a></td><td>{action}</td><td>{who}</td>\
                 <td>{state}</td><td><progress max=\"{total}\" value=\"{done}\" aria-label=\"{done} of {total} hosts done\"></progress> \
                 {done}/{total}</td><td class=\"num\">{ok}</td><td class=\"num\">{failed}</td><td>{created}</td></tr>",
                id = esc(&b.id),
                action = esc(&b.action),
                who = esc(&b.submitter),
                state = state_span(&b.state),
                ok = c.succeeded,
                failed = c.failed,
                created = when(b.created_at_ms),
            );
        }
        if list.batches.is_empty() {
            rows.push_str("<tr><td colspan=\"8\">No batches match.</td></tr>");
        }
        if fragment {
            return Ok(rows);
        }
        let options = |current: &str, values: &[&str]| {
            let mut o = String::from("<option value=\"\">any</option>");
            for v in values {
                let sel = if *v == current { " selected" } else { "" };
                let _ = write!(o, "<option{sel}>{v}</option>");
            }
            o
        };
        let states: Vec<&str> = BatchState::ALL.iter().map(|s| s.as_str()).collect();
        let actions: Vec<&str> = maas_core::action::ActionKind::ALL.iter().map(|a| a.as_str()).collect();
        let live = format!("/ui/?fragment=1&state={}&submitter={}&action={}", url(state), url(submitter), url(action));
        Ok(format!(
            "<h1>Batches</h1>\
             <form class=\"filters\" method=\"get\" action=\"/ui/\">\
               <label>State <select name=\"state\">{}</select></label>\
               <label>Submitter <input name=\"submitter\" value=\"{}\" size=\"14\"></label>\
               <label>Action <select name=\"action\">{}</select></label>\
               <button type=\"submit\">Filter</button></form>\
             <table><caption>The newest 100 batches that match, with their progress (kept live)</caption>\
             <thead><tr><th scope=\"col\">Batch</th><th scope=\"col\">Action</th><th scope=\"col\">Submitter</th>\
             <th scope=\"col\">State</th><th scope=\"col\">Progress</th><th scope=\"col\" class=\"num\">Succeeded</th>\
             <th scope=\"col\" class=\"num\">Failed</th><th scope=\"col\">Created</th></tr></thead>\
             <tbody id=\"batch-rows\" data-live=\"{}\">{rows}</tbody></table>",
            options(state, &states),
            esc(submitter),
            options(action, &actions),
            esc(&live),
        ))
    }

    async fn batch(&self, who: &Principal, id: &str, fragment: bool) -> Page {
        let service = self.rest.service();
        let request = pb::GetBatchRequest { batch_id: id.to_string(), steps: true, ..Default::default() };
        let b = Maas::get_batch(service, self.request(who, request)).await?.into_inner();
        let finished = BatchState::parse(&b.state).is_some_and(|s| s.is_terminal());
        let hosts = hosts_section(&b, finished);
        if fragment {
            return Ok(hosts);
        }
        let c = b.counts.unwrap_or_default();
        let mut out = String::new();
        let _ = write!(
            out,
            "<h1>Batch <span class=\"mono\">{id}</span></h1>\
             <div class=\"cards\">\
               <div class=\"card\"><div>Action</div><div class=\"v\">{action}</div></div>\
               <div class=\"card\"><div>State</div><div class=\"v\">{state}</div></div>\
               <div class=\"card\"><div>Submitter</div><div class=\"v\">{submitter}</div></div>\
               <div class=\"card\"><div>Hosts</div><div class=\"v\">{ok} ok · {failed} failed · {running} running · {queued} queued · {cancelled} cancelled</div></div>\
             </div><p>Created {created}{finished}{paused}</p>",
            id = esc(&b.id),
            action = esc(&b.action),
            state = state_span(&b.state),
            submitter = esc(&b.submitter),
            ok = c.succeeded,
            failed = c.failed,
            running = c.running,
            queued = c.queued,
            cancelled = c.cancelled,
            created = when(b.created_at_ms),
            finished = b.finished_at_ms.map(|t| format!(", finished {}", when(t))).unwrap_or_default(),
            paused =
                if b.pause_reason.is_empty() { String::new() } else { format!(". Paused: {}", esc(&b.pause_reason)) },
        );
        out.push_str(&self.controls(who, &b));
        let _ = write!(
            out,
            "<div id=\"hosts\"{}>{hosts}</div>",
            if finished { String::new() } else { format!(" data-live=\"/ui/batches/{}?fragment=1\"", esc(&b.id)) }
        );
        Ok(out)
    }

    /// The buttons `who` may use on `b` in its state (maas-core's `batch_controls`): none for
    /// a viewer who may not.
    fn controls(&self, who: &Principal, b: &pb::Batch) -> String {
        let Some(state) = BatchState::parse(&b.state) else { return String::new() };
        if !self.rest.service().engine().may_control(who, &b.submitter) {
            return String::new();
        }
        let mut out = String::from("<div class=\"controls\">");
        let button = |out: &mut String, verb: &str, label: &str, class: &str| {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/ui/batches/{}/{verb}\"><button type=\"submit\" class=\"{class}\">{label}</button></form>",
                esc(&b.id)
            );
        };
        let offered = maas_core::machine::batch_controls(state);
        if offered.pause {
            button(&mut out, "pause", "Pause", "");
        }
        if offered.resume {
            button(&mut out, "resume", "Resume", "");
        }
        if offered.cancel {
            button(&mut out, "cancel", "Cancel batch", "danger");
        }
        out.push_str("</div>");
        out
    }

    async fn control(&self, who: &Principal, id: &str, verb: &str) -> Result<(), Status> {
        let service = self.rest.service();
        let batch_ref = pb::BatchRef { batch_id: id.to_string() };
        match verb {
            "cancel" => {
                let r =
                    pb::CancelBatchRequest { batch_id: id.to_string(), reason: "cancelled from the console".into() };
                Maas::cancel_batch(service, self.request(who, r)).await?;
            }
            "pause" => {
                Maas::pause_batch(service, self.request(who, batch_ref)).await?;
            }
            _ => {
                Maas::resume_batch(service, self.request(who, batch_ref)).await?;
            }
        }
        Ok(())
    }

    async fn active(&self, who: &Principal) -> Page {
        let service = self.rest.service();
        let a = Maas::active_counts(service, self.request(who, pb::ActiveCountsRequest {})).await?.into_inner();
        let mut rows = String::new();
        for s in &a.sites {
            let _ = write!(
                rows,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&s.site),
                s.hosts_in_flight,
                s.jobs_queued,
                s.jobs_running,
                s.jobs_waiting,
                s.live_workers
            );
        }
        if a.sites.is_empty() {
            rows.push_str("<tr><td colspan=\"6\">Nothing is running.</td></tr>");
        }
        Ok(format!(
            "<h1>Active operations</h1><table><caption>Per site, now</caption><thead><tr><th scope=\"col\">Site</th>\
             <th scope=\"col\" class=\"num\">Hosts in flight</th><th scope=\"col\" class=\"num\">Jobs queued</th>\
             <th scope=\"col\" class=\"num\">Jobs running</th><th scope=\"col\" class=\"num\">Waiting on installers</th>\
             <th scope=\"col\" class=\"num\">Live workers</th></tr></thead><tbody>{rows}</tbody></table>"
        ))
    }

    async fn tickets(&self, who: &Principal) -> Page {
        let service = self.rest.service();
        let t =
            Maas::list_tickets(service, self.request(who, pb::ListTicketsRequest { limit: 200 })).await?.into_inner();
        let mut rows = String::new();
        for t in &t.tickets {
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td><a class=\"mono id\" href=\"/ui/batches/{b}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(t.at_ms),
                esc(&t.kind),
                esc(&t.batch_id),
                esc(&t.host),
                esc(&t.step),
                esc(&t.summary),
                b = esc(&t.batch_id),
            );
        }
        if t.tickets.is_empty() {
            rows.push_str("<tr><td colspan=\"6\">No tickets.</td></tr>");
        }
        Ok(format!(
            "<h1>Tickets</h1><table><caption>The newest 200</caption><thead><tr><th scope=\"col\">When</th>\
             <th scope=\"col\">Kind</th><th scope=\"col\">Batch</th><th scope=\"col\">Host</th><th scope=\"col\">Step</th>\
             <th scope=\"col\">Summary</th></tr></thead><tbody>{rows}</tbody></table>"
        ))
    }

    async fn stats(&self, who: &Principal, by: &str) -> Page {
        let by = if by.is_empty() { "week" } else { by };
        let now = self.rest.service().engine().clock().now().as_millis();
        let request = pb::BatchStatsRequest { from_ms: Some(now - YEAR_MS), until_ms: None, by: by.to_string() };
        let s = Maas::batch_stats(self.rest.service(), self.request(who, request)).await?.into_inner();
        let mut out = String::from("<h1>Statistics</h1>");
        let _ = write!(
            out,
            "<form class=\"filters\" method=\"get\" action=\"/ui/stats\"><label>Group by <select name=\"by\">{}</select></label>\
             <button type=\"submit\">Show</button></form>\
             <div class=\"cards\"><div class=\"card\"><div>Host runs succeeded</div><div class=\"v\">{}</div></div>\
             <div class=\"card\"><div>Failed</div><div class=\"v\">{}</div></div>\
             <div class=\"card\"><div>Cancelled</div><div class=\"v\">{}</div></div>\
             <div class=\"card\"><div>Success rate</div><div class=\"v\">{}</div></div></div>",
            ["day", "week", "month"]
                .iter()
                .map(|p| format!("<option{}>{p}</option>", if *p == by { " selected" } else { "" }))
                .collect::<String>(),
            s.succeeded,
            s.failed,
            s.cancelled,
            percent(s.success_rate),
        );
        let mut actions: Vec<&str> = s.periods.iter().map(|p| p.action.as_str()).collect();
        actions.sort_unstable();
        actions.dedup();
        if actions.is_empty() {
            out.push_str("<p class=\"notice\">No host runs finished in the last year.</p>");
        }
        for action in actions {
            let periods: Vec<&pb::PeriodStats> = s.periods.iter().filter(|p| p.action == action).collect();
            let labels: Vec<String> = periods.iter().map(|p| day(p.start_ms)).collect();
            let rates: Vec<f64> = periods.iter().map(|p| p.success_rate.unwrap_or(0.0) * 100.0).collect();
            let runs: Vec<f64> = periods.iter().map(|p| (p.succeeded + p.failed + p.cancelled) as f64).collect();
            let mut table = String::new();
            for p in &periods {
                let _ = write!(
                    table,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    day(p.start_ms),
                    p.succeeded,
                    p.failed,
                    p.cancelled,
                    percent(p.success_rate),
                    p.p50_seconds.map(seconds).unwrap_or_else(|| "–".into()),
                );
            }
            let _ = write!(
                out,
                "<h2>{a}</h2><div class=\"chart-row\">{c1}{c2}\
                 <table class=\"narrow\"><caption>{a} by {by} (the charts' figures)</caption><thead><tr>\
                 <th scope=\"col\">{by} from</th><th scope=\"col\" class=\"num\">Succeeded</th><th scope=\"col\" class=\"num\">Failed</th>\
                 <th scope=\"col\" class=\"num\">Cancelled</th><th scope=\"col\" class=\"num\">Success rate</th>\
                 <th scope=\"col\" class=\"num\">p50 runtime</th></tr></thead><tbody>{table}</tbody></table></div>",
                a = esc(action),
                c1 = bar_chart(&format!("{action} success rate by {by}"), &labels, &rates, "%", Some(100.0)),
                c2 = bar_chart(&format!("{action} host runs finished by {by}"), &labels, &runs, "", None),
            );
        }
        // Failures per action and SKU.
        if !s.outcomes.is_empty() {
            let labels: Vec<String> = s.outcomes.iter().map(|o| format!("{}/{}", o.action, o.sku)).collect();
            let failed: Vec<f64> = s.outcomes.iter().map(|o| f64::from(o.failed)).collect();
            let mut table = String::new();
            for o in &s.outcomes {
                let finished = o.succeeded + o.failed;
                let rate = (finished > 0).then(|| f64::from(o.succeeded) / f64::from(finished));
                let _ = write!(
                    table,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    esc(&o.action),
                    esc(&o.sku),
                    esc(&o.site),
                    o.succeeded,
                    o.failed,
                    o.cancelled,
                    percent(rate),
                );
            }
            let _ = write!(
                out,
                "<h2>Failures per action and SKU</h2><div class=\"chart-row\">{}\
                 <table class=\"medium\"><caption>Host runs finished in the last year by action, SKU and site (the chart's figures)</caption>\
                 <thead><tr><th scope=\"col\">Action</th><th scope=\"col\">SKU</th><th scope=\"col\">Site</th>\
                 <th scope=\"col\" class=\"num\">Succeeded</th><th scope=\"col\" class=\"num\">Failed</th>\
                 <th scope=\"col\" class=\"num\">Cancelled</th><th scope=\"col\" class=\"num\">Success rate</th></tr></thead>\
                 <tbody>{table}</tbody></table></div>",
                bar_chart("Failed host runs per action and SKU", &labels, &failed, "", None),
            );
        }
        // Step runtimes per action and SKU.
        let mut steps: Vec<&pb::DurationStats> = s.steps.iter().collect();
        steps.sort_by(|a, b| (&a.action, &a.sku, &a.step).cmp(&(&b.action, &b.sku, &b.step)));
        if !steps.is_empty() {
            let labels: Vec<String> = steps.iter().map(|d| format!("{}/{}", d.sku, d.step)).collect();
            let p50: Vec<f64> = steps.iter().map(|d| d.durations.as_ref().map_or(0.0, |p| p.p50_seconds)).collect();
            let mut table = String::new();
            for d in &steps {
                let p = d.durations.unwrap_or_default();
                let _ = write!(
                    table,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    esc(&d.action),
                    esc(&d.sku),
                    esc(&d.site),
                    esc(&d.step),
                    p.count,
                    seconds(p.p50_seconds),
                    seconds(p.p95_seconds),
                    seconds(p.max_seconds),
                );
            }
            let _ = write!(
                out,
                "<h2>Step runtimes per action and SKU</h2><div class=\"chart-row\">{}\
                 <table class=\"medium\"><caption>Finished steps in the last year (the chart's figures)</caption>\
                 <thead><tr><th scope=\"col\">Action</th><th scope=\"col\">SKU</th><th scope=\"col\">Site</th><th scope=\"col\">Step</th>\
                 <th scope=\"col\" class=\"num\">Count</th><th scope=\"col\" class=\"num\">p50</th><th scope=\"col\" class=\"num\">p95</th>\
                 <th scope=\"col\" class=\"num\">Max</th></tr></thead><tbody>{table}</tbody></table></div>",
                bar_chart(
                    "Step p50 runtime (seconds) per SKU and step, actions in the table's order",
                    &labels,
                    &p50,
                    "s",
                    None
                ),
            );
        }
        Ok(out)
    }
}

/// The hosts of a batch: failures first (all), then up to [`HOSTS_SHOWN`] hosts with their
/// step timelines. `final` marks it for the live refresh to stop.
fn hosts_section(b: &pb::Batch, finished: bool) -> String {
    let mut out = String::new();
    if finished {
        out.push_str("<span data-final=\"true\" hidden></span>");
    }
    let failed: Vec<&pb::HostRun> = b.hosts.iter().filter(|h| h.state == "failed").collect();
    if !failed.is_empty() {
        let _ = write!(
            out,
            "<h2>Failures ({})</h2><table><caption>Hosts that failed, the step that failed and its error</caption>\
             <thead><tr><th scope=\"col\">Host</th><th scope=\"col\">Step</th><th scope=\"col\">Attempts</th>\
             <th scope=\"col\">Error</th></tr></thead><tbody>",
            failed.len()
        );
        for h in failed {
            let (why, log) = maas_core::netboot::split_log_excerpt(&h.last_error);
            let log = log
                .map(|l| {
                    format!(
                        "<details><summary>Installer log (its end)</summary><pre class=\"log\">{}</pre></details>",
                        esc(l)
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><span class=\"error\">{}</span>{log}</td></tr>",
                esc(&h.hostname),
                esc(&h.step),
                h.attempts,
                esc(why)
            );
        }
        out.push_str("</tbody></table>");
    }
    let _ = write!(
        out,
        "<h2>Hosts ({})</h2><table><caption>Each host's current step and its timeline{}</caption><thead><tr>\
         <th scope=\"col\">Host</th><th scope=\"col\">Site</th><th scope=\"col\">State</th><th scope=\"col\">Step</th>\
         <th scope=\"col\">Timeline</th></tr></thead><tbody>",
        b.hosts.len(),
        if b.hosts.len() > HOSTS_SHOWN { format!(" (the first {HOSTS_SHOWN})") } else { String::new() }
    );
    for h in b.hosts.iter().take(HOSTS_SHOWN) {
        let mut timeline = String::from("<ol class=\"timeline\">");
        for s in &h.steps {
            let took = if s.finished_at_ms > 0 && s.started_at_ms > 0 {
                format!(" {}", seconds((s.finished_at_ms - s.started_at_ms) as f64 / 1000.0))
            } else {
                String::new()
            };
            let _ = write!(
                timeline,
                "<li class=\"state-{st}\" title=\"{step}: {st}, {n} attempt(s){err}\">{step} <span class=\"mono\">{st}{took}</span></li>",
                step = esc(&s.step),
                st = esc(&s.state),
                n = s.attempts,
                err = if s.error.is_empty() { String::new() } else { format!("; {}", esc(&s.error)) },
            );
        }
        timeline.push_str("</ol>");
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} <span class=\"mono\">{}</span></td><td>{timeline}</td></tr>",
            esc(&h.hostname),
            esc(&h.site),
            state_span(&h.state),
            esc(&h.step),
            esc(&h.step_state),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// A vertical bar chart as inline SVG, labelled for screen readers; the figures are also in
/// the table beside it.
fn bar_chart(title: &str, labels: &[String], values: &[f64], unit: &str, max: Option<f64>) -> String {
    let (w, h, left, bottom) = (420.0_f64, 240.0_f64, 36.0_f64, 84.0_f64);
    // Failure counts are drawn in the failure colour.
    let class = if title.starts_with("Failed") { "bar bad" } else { "bar" };
    let top = max.unwrap_or_else(|| values.iter().cloned().fold(0.0, f64::max)).max(1e-9);
    let n = values.len().max(1) as f64;
    let slot = (w - left) / n;
    let mut bars = String::new();
    for (i, (v, label)) in values.iter().zip(labels).enumerate() {
        let bh = (v / top).clamp(0.0, 1.0) * (h - bottom - 10.0);
        let x = left + i as f64 * slot + slot * 0.15;
        let y = h - bottom - bh;
        let _ = write!(
            bars,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"><title>{}: {v:.1}{unit}</title></rect>",
            (slot * 0.7).max(1.0),
            esc(label)
        );
        if values.len() <= 16 {
            let _ = write!(
                bars,
                "<text x=\"{:.1}\" y=\"{:.1}\" transform=\"rotate(45 {:.1} {:.1})\">{}</text>",
                x,
                h - bottom + 12.0,
                x,
                h - bottom + 12.0,
                esc(label.get(..label.len().min(24)).unwrap_or(label))
            );
        }
    }
    let id = format!("chart-{:x}", title.bytes().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64)));
    format!(
        "<figure><svg class=\"chart\" role=\"img\" aria-labelledby=\"{id}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
         <title id=\"{id}\">{t}</title>\
         <line class=\"axis\" x1=\"{left}\" y1=\"{base}\" x2=\"{w}\" y2=\"{base}\"/>\
         <line class=\"axis\" x1=\"{left}\" y1=\"10\" x2=\"{left}\" y2=\"{base}\"/>\
         <text x=\"2\" y=\"16\">{top_label}{unit}</text><text x=\"2\" y=\"{base}\">0</text>{bars}</svg>\
         <figcaption>{t}</figcaption></figure>",
        t = esc(title),
        base = h - bottom,
        top_label = if top >= 10.0 { format!("{top:.0}") } else { format!("{top:.1}") },
    )
}

/// The whole page around `body`.
fn layout(who: &Principal, title: &str, current: &str, body: &str) -> String {
    let link = |href: &str, key: &str, label: &str| {
        let cur = if key == current { " aria-current=\"page\"" } else { "" };
        format!("<a href=\"{href}\"{cur}>{label}</a>")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · maas</title><link rel=\"stylesheet\" href=\"/ui/assets/console.css\"></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><span class=\"brand\">maas</span><nav aria-label=\"Console\">{}{}{}{}</nav>\
         <span class=\"who\">signed in as <strong>{w}</strong></span></header>\
         <main id=\"main\" tabindex=\"-1\">{body}</main><script src=\"/ui/assets/console.js\"></script></body></html>",
        link("/ui/", "batches", "Batches"),
        link("/ui/active", "active", "Active"),
        link("/ui/tickets", "tickets", "Tickets"),
        link("/ui/stats", "stats", "Statistics"),
        t = esc(title),
        w = esc(&who.name),
    )
}

/// An error page with the HTTP status the gRPC code maps to.
fn page_error(who: Option<&Principal>, status: &Status) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"notice error\">{}</p><p><a href=\"/ui/\">Back to the batches</a></p>",
        http_status(status.code()).canonical_reason().unwrap_or("Error"),
        esc(status.message())
    );
    let html = match who {
        Some(p) => layout(p, "Error", "", &body),
        None => format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>maas</title></head><body>{body}</body></html>"
        ),
    };
    (http_status(status.code()), Html(html)).into_response()
}

/// Refuses a state-changing request a browser sent from another site.
fn same_origin(headers: &HeaderMap) -> Result<(), Status> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if matches!(get("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return Err(Status::permission_denied("a console form must be sent from the console (cross-site request)"));
    }
    if let (Some(origin), Some(host)) = (get("origin"), get("host")) {
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        if origin != "null" && origin_host != host {
            return Err(Status::permission_denied(format!(
                "a console form must be sent from the console, not {origin}"
            )));
        }
    }
    Ok(())
}

fn state_span(state: &str) -> String {
    format!("<span class=\"state state-{s}\">{s}</span>", s = esc(state))
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        return "–".into();
    }
    let t = Timestamp::from_millis(ms);
    format!("<time datetime=\"{t}\">{}</time>", t.to_string().get(..19).unwrap_or("").replace('T', " "))
}

fn day(ms: i64) -> String {
    Timestamp::from_millis(ms).to_string().get(..10).unwrap_or("").to_string()
}

fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "–".into())
}

fn seconds(s: f64) -> String {
    if s >= 120.0 { format!("{:.1} min", s / 60.0) } else { format!("{s:.1} s") }
}

fn url(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// HTML-escapes text for element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn cross_site_forms_are_refused() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:7444".parse().unwrap());
        h.insert("origin", "https://127.0.0.1:7444".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert!(same_origin(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(same_origin(&h).is_err());
    }

    #[test]
    fn a_failure_shows_its_error_and_the_installers_log_apart() {
        let host = |name: &str, state: &str, error: &str| pb::HostRun {
            hostname: name.into(),
            state: state.into(),
            step: "await_install".into(),
            last_error: error.into(),
            ..Default::default()
        };
        let b = pb::Batch {
            hosts: vec![
                host("web1.dc1", "failed", "disk full; log: mkfs: /dev/sda1 <no space>"),
                host("web2.dc1", "succeeded", ""),
            ],
            ..Default::default()
        };
        let html = hosts_section(&b, true);
        assert!(html.contains("<span class=\"error\">disk full</span><details>"), "{html}");
        assert!(html.contains("<pre class=\"log\">mkfs: /dev/sda1 &lt;no space&gt;</pre>"), "{html}");
        assert!(html.contains("Failures (1)") && html.contains("data-final"), "{html}");
    }

    #[test]
    fn charts_carry_a_title_and_one_bar_per_value() {
        let svg = bar_chart("rate", &["a".into(), "b".into()], &[50.0, 100.0], "%", Some(100.0));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
        assert!(svg.contains("role=\"img\"") && svg.contains("<title id="));
    }
}
