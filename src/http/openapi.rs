//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the HTTP API (publish
//! and the server API). The document is the file beside this one, validated in CI
//! (`scripts/validate-openapi.sh`), and tests/openapi.rs checks the server's real
//! answers against its schemas, so it cannot drift from the code.

use actix_web::HttpResponse;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}
