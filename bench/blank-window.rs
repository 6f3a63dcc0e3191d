//! The floor `scripts/bench` measures the window against: a blank Tauri window, built from the
//! same crate, dependencies and release profile as `mailbox-auth-desktop` (an example of
//! `src-tauri`, only built with `--features bench-floor`, so tests and lints never compile it).
//! It opens one 1280×800 webview on an empty page served by a custom URI scheme (as the app's
//! own pages are) and, once WebKit has finished loading it, writes the line the benchmark waits
//! for: what WebKitGTK and Tauri cost before any app code runs. No tray, no plugins, no core.
//!
//!   cargo build --release -p mailbox-auth-desktop --example blank-window --features bench-floor

use std::borrow::Cow;
use std::time::Instant;

use tauri::webview::PageLoadEvent;
use tauri::{WebviewUrl, WebviewWindowBuilder};

const PAGE: &str = "<!doctype html><html><head><meta charset=utf-8><title>blank</title></head><body></body></html>";

fn main() {
    let started = Instant::now();
    let mut context = tauri::generate_context!();
    // The app's config declares its main window; the floor opens its own, on the blank page.
    context.config_mut().app.windows.clear();
    tauri::Builder::default()
        .register_uri_scheme_protocol("blank", |_, _| {
            tauri::http::Response::builder()
                .header("Content-Type", "text/html")
                .body(Cow::Borrowed(PAGE.as_bytes()))
                .expect("static response")
        })
        .setup(move |app| {
            WebviewWindowBuilder::new(app, "main", WebviewUrl::CustomProtocol("blank://localhost/".parse()?))
                .title("blank")
                .inner_size(1280.0, 800.0)
                .on_page_load(move |_, p| {
                    if p.event() == PageLoadEvent::Finished {
                        eprintln!("board ready: blank page loaded, {} ms after start", started.elapsed().as_millis());
                    }
                })
                .build()?;
            Ok(())
        })
        .run(context)
        .expect("blank window");
}
