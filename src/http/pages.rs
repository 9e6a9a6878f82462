//! The pages served for people: the demo chat (`GET /`), the admin view
//! (`GET /admin`, which polls `/admin/stats` with the token the user types, charts
//! the last 15 minutes itself, and shows a channel's presence and history and
//! disconnects sockets through the server API with that token) and
//! the vendored `@xano/js-sdk` browser bundle the demo loads. All of it is
//! compiled into the binary, so it works from any working directory.

use actix_web::http::header;
use actix_web::HttpResponse;

const DEMO_HTML: &str = include_str!("../../static/demo.html");
const ADMIN_HTML: &str = include_str!("../../static/admin.html");
const XANO_SDK_JS: &[u8] = include_bytes!("../../static/vendor/xano.min.js");
const XANO_SDK_LICENSE: &str = include_str!("../../static/vendor/xano.min.js.LICENSE.txt");

/// Inline script and style are the pages' own (no build step); sockets and
/// fetches go to this same origin only.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn page(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

/// `GET /`: the demo chat on the app with hash `demo`.
pub async fn demo() -> HttpResponse {
    page(DEMO_HTML)
}

/// `GET /admin`: the admin view. The page itself holds no secret; the data
/// comes from `/admin/stats`, which checks the token.
pub async fn admin() -> HttpResponse {
    page(ADMIN_HTML)
}

/// `GET /static/vendor/xano.min.js`: the SDK's browser bundle, unmodified.
pub async fn xano_sdk() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(XANO_SDK_JS)
}

/// `GET /static/vendor/xano.min.js.LICENSE.txt`: the notice the bundle points to.
pub async fn xano_sdk_license() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(XANO_SDK_LICENSE)
}
