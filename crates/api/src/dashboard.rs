//! The live dashboard at `GET /`: one HTML page, a script, a stylesheet and an icon, hand-written
//! (no framework, no front-end build step) and compiled into the binary, so the page works with no
//! internet at build or run time.
//!
//! - `GET /` the page, `Cache-Control: no-cache` with an `ETag`, so a new binary's page is seen at
//!   once and an unchanged one costs a 304.
//! - `GET /dashboard/{file}` the assets. The page links them as `…?v=<version>`, a digest of all
//!   assets, so they can be cached for a year: a new build links new URLs.
//!
//! Every answer carries a Content-Security-Policy that allows only this origin's own scripts,
//! styles, images and connections (`fetch`, `EventSource`): no inline script, no third party.
//! The page's data comes from the public API: `GET /stocks?include=technical_analysis`,
//! `GET /stocks/stream`, ticks, time series and indicators.

use crate::{ApiContext, ApiError};
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// Only this origin; nothing inline; no frames, forms or base-URL tricks.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX_TEMPLATE: &str = include_str!("../dashboard/index.html");

const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../dashboard/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../dashboard/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../dashboard/icon.svg"),
    },
];

fn digest(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.len().to_le_bytes());
        hash.update(part.as_bytes());
    }
    hex(&hash.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The assets' version: a digest of all of them, the `v` of the URLs the page links.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let bodies: Vec<&str> = ASSETS.iter().map(|a| a.body).collect();
    digest(&bodies)
});

/// The page with its asset URLs versioned, and its ETag.
static INDEX: LazyLock<(String, String)> = LazyLock::new(|| {
    let page = INDEX_TEMPLATE.replace("{{version}}", &VERSION);
    let etag = format!("\"{}\"", digest(&[&page]));
    (page, etag)
});

static ASSET_ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", digest(&[a.body])))
        .collect()
});

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/{file}", get(asset))
}

/// The version string the page puts on its asset URLs.
pub fn version() -> &'static str {
    &VERSION
}

fn respond(
    headers: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    cache: &'static str,
    body: &'static str,
) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(tag) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, tag);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The dashboard page.
async fn index(headers: HeaderMap) -> Response {
    let (page, etag) = &*INDEX;
    respond(
        &headers,
        etag,
        "text/html; charset=utf-8",
        "no-cache",
        page.as_str(),
    )
}

/// One of the page's assets.
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (i, asset) = ASSETS
        .iter()
        .enumerate()
        .find(|(_, a)| a.name == file)
        .ok_or_else(|| ApiError::NotFound("no such dashboard file".into()))?;
    Ok(respond(
        &headers,
        &ASSET_ETAGS[i],
        asset.content_type,
        "public, max-age=31536000, immutable",
        asset.body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_versioned_assets_that_exist() {
        let (page, _) = &*INDEX;
        assert!(!page.contains("{{"), "every placeholder is filled");
        for asset in &ASSETS {
            let link = format!("/dashboard/{}?v={}", asset.name, version());
            assert!(page.contains(&link), "{link} linked from the page");
        }
        assert_eq!(version().len(), 16);
    }

    #[test]
    fn the_page_needs_nothing_the_policy_forbids() {
        let (page, _) = &*INDEX;
        // No inline script or style, no handler attributes, nothing from another origin.
        for forbidden in [
            "<script>",
            "<style",
            " style=",
            " onclick=",
            " onload=",
            "http://",
            "https://",
        ] {
            assert!(!page.contains(forbidden), "page contains {forbidden:?}");
        }
        for asset in &ASSETS {
            for forbidden in ["http://", "https://", "eval(", "new Function", "innerHTML"] {
                if asset.name == "icon.svg" && forbidden == "http://" {
                    continue; // the SVG namespace URI, not a fetch
                }
                assert!(
                    !asset.body.contains(forbidden),
                    "{} contains {forbidden:?}",
                    asset.name
                );
            }
        }
    }
}
