//! The dashboard at `/`: the files of `web/dashboard`, embedded in the
//! binary at build time, so that `pulse` serves it from any directory or
//! copied alone. `gateway.static_dir` (`--static-dir`) overrides it with a
//! directory on disk, for working on the dashboard without rebuilding.

use std::path::PathBuf;

use actix_web::http::header::{self, ETag, EntityTag, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use rust_embed::Embed;

/// `web/dashboard` as it was when the binary was built.
#[derive(Embed)]
// Relative to this crate's directory.
#[folder = "../../web/dashboard/"]
struct Embedded;

/// Mounts the dashboard: from `dir` when given, else the embedded copy.
/// Mount it last, as it answers every path.
pub fn configure(dir: Option<PathBuf>) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg| match dir {
        Some(dir) => {
            // Pages served by Pulse may `import('/pulse-client.js')`: keep the
            // built-in client when the directory has none of its own.
            if !dir.join("pulse-client.js").is_file() {
                cfg.service(
                    web::resource("/pulse-client.js").route(web::get().to(embedded)).route(web::head().to(embedded)),
                );
            }
            pulse_websocket_gateway::configure_static(Some(&dir))(cfg)
        }
        None => {
            cfg.service(web::resource("/{path:.*}").route(web::get().to(embedded)).route(web::head().to(embedded)));
        }
    }
}

/// Whether a file of that name is embedded (`index.html` for `/`).
pub fn has_embedded(path: &str) -> bool {
    Embedded::get(file_name(path)).is_some()
}

fn file_name(path: &str) -> &str {
    match path.trim_start_matches('/') {
        "" => "index.html",
        name => name,
    }
}

/// One embedded file, with its content type and an `ETag` (its SHA-256),
/// answering `304` to a matching `If-None-Match`.
async fn embedded(req: HttpRequest) -> HttpResponse {
    let Some(file) = Embedded::get(file_name(req.path())) else {
        return HttpResponse::NotFound()
            .content_type("application/json")
            .body(r#"{"code":"not_found","message":"no such file"}"#);
    };
    let tag = EntityTag::new_strong(hex(&file.metadata.sha256_hash()));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag.to_string()));
    let mut response = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response
        .insert_header(ETag(tag))
        // Revalidate each time: the files change with every build.
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")));
    if fresh {
        return response.finish();
    }
    let mime = file.metadata.mimetype();
    let textual = mime.starts_with("text/") || mime.ends_with("javascript") || mime.ends_with("json");
    let content_type = if textual { format!("{mime}; charset=utf-8") } else { mime.to_owned() };
    response.content_type(content_type).body(file.data.into_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_files_are_embedded() {
        for path in ["/", "/index.html", "/app.js", "/pulse-client.js", "/style.css"] {
            assert!(has_embedded(path), "{path}");
        }
        assert!(!has_embedded("/nope.js"));
    }
}
