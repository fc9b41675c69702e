//! Asking an upstream index for a project page.

use crate::config::Upstream;
use pickguard_index::{Project, parse_html, parse_json};

/// What an upstream said about a project.
#[derive(Clone, Debug)]
pub enum Fetch {
    Found(Project),
    NotFound,
    /// Anything else: connection failure, timeout, 401/403/5xx, unparseable page.
    Error(String),
}

const ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

pub async fn fetch_project(client: &reqwest::Client, up: &Upstream, name: &str) -> Fetch {
    let base = if up.url.ends_with('/') {
        up.url.clone()
    } else {
        format!("{}/", up.url)
    };
    let url = format!("{base}{name}/");
    let resp = client
        .get(&url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .timeout(std::time::Duration::from_secs(up.timeout_secs))
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Fetch::Error(format!("{}: {}", up.name, e.without_url())),
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Fetch::NotFound;
    }
    if !status.is_success() {
        return Fetch::Error(format!("{}: HTTP {}", up.name, status.as_u16()));
    }
    let page_url = resp.url().clone();
    let json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Fetch::Error(format!("{}: {}", up.name, e.without_url())),
    };
    let parsed = if json {
        parse_json(&body)
    } else {
        parse_html(&String::from_utf8_lossy(&body), name)
    };
    let mut p = match parsed {
        Ok(p) => p,
        Err(e) => return Fetch::Error(format!("{}: {e}", up.name)),
    };
    // Absolute file URLs, resolved against the page.
    for f in &mut p.files {
        match page_url.join(&f.url) {
            Ok(u) => f.url = u.to_string(),
            Err(_) => return Fetch::Error(format!("{}: bad file URL {:?}", up.name, f.url)),
        }
    }
    Fetch::Found(p)
}
