//! The windowed kiosk host (feature `window`): one undecorated, always-on-top tao window with a
//! wry webview (WebKitGTK 4.1) showing the business package, and the SJSL bridge over wry's IPC.
//!
//! Threads: the tao/GTK event loop owns the main thread (GTK requires it); the terminal
//! ([`Terminal`]: devices, rules, journal, keeper heartbeats) and the bridge run on a tokio
//! runtime on a background thread. They talk through two queues:
//!
//! - page → host: wry's IPC handler (`window.ipc.postMessage(text)`) and the page-load handler
//!   push [`ToHost`] into an unbounded tokio channel;
//! - host → page: the host task sends [`ToWindow`] through the tao `EventLoopProxy`; the event
//!   loop evaluates `window.__opentellerReceive(<text as a JS string literal>)` in the page.
//!
//! The messages are those of the WebSocket bridge (docs/terminal-native.md). Every page load
//! (first load, reload, a crashed web process reloaded) gets a fresh [`Bridge`]; the previous
//! page's bridge is closed (its money commands run to their end).
//!
//! The package is served from the `openteller://localhost/` custom scheme: no port is opened,
//! paths that would leave the package directory are refused, and navigation to any other
//! origin is blocked.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use openteller_terminal_native::bridge::Bridge;
use openteller_terminal_native::config::{Settings, WindowSpec};
use openteller_terminal_native::{EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, Terminal};
use serde_json::json;
use tao::event::{Event, StartCause, WindowEvent};
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
use tao::platform::run_return::EventLoopExtRunReturn;
use tao::platform::unix::WindowExtUnix;
use tao::window::{Fullscreen, WindowBuilder};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use webkit2gtk::WebViewExt as _;
use wry::http::{Method, Request, Response, StatusCode, header};
use wry::{PageLoadEvent, WebViewBuilder, WebViewBuilderExtUnix, WebViewExtUnix};

/// The custom scheme the business package is served from.
const SCHEME: &str = "openteller";
/// The page's address.
const START_URL: &str = "openteller://localhost/";
/// Largest message a page may send (as over the WebSocket).
const MAX_MESSAGE: usize = 64 * 1024;

/// From the page (main thread) to the host task.
#[derive(Debug)]
enum ToHost {
    /// A bridge message from `window.ipc.postMessage`.
    Message(String),
    /// A new page started loading (first load, reload, recovery from a crash).
    PageStarted,
}

/// From the host task to the event loop.
#[derive(Debug)]
enum ToWindow {
    /// A bridge message for the page.
    Deliver(String),
    /// The host stopped (signal or failure): close the window and exit with this code.
    Exit(i32),
}

/// Runs the windowed host until SIGTERM / SIGINT; returns the process exit code.
pub(crate) fn run(settings: Settings) -> i32 {
    // tao panics when GTK cannot start; check first so a missing display is a clear error.
    if let Err(e) = gtk::init() {
        eprintln!(
            "terminal-native: cannot open the display for the kiosk window ({e}); set DISPLAY \
             (or WAYLAND_DISPLAY), or run with --headless"
        );
        return EXIT_UNAVAILABLE;
    }
    let spec = settings.window;
    let package = settings.business_package.clone();
    let mut event_loop = EventLoopBuilder::<ToWindow>::with_user_event().build();
    let proxy = event_loop.create_proxy();
    let (to_host, from_page) = mpsc::unbounded_channel::<ToHost>();
    let stop = CancellationToken::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), i32>>();

    let host_stop = stop.clone();
    let host_thread = std::thread::Builder::new()
        .name("terminal-host".into())
        .spawn(move || host_thread(settings, from_page, proxy, host_stop, ready_tx));
    let host_thread = match host_thread {
        Ok(t) => t,
        Err(e) => {
            eprintln!("terminal-native: cannot start the host thread: {e}");
            return EXIT_FAILURE;
        }
    };
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(code)) => {
            let _ = host_thread.join();
            return code;
        }
        Err(_) => {
            let _ = host_thread.join();
            return EXIT_FAILURE;
        }
    }

    let code = match open_and_run(&mut event_loop, spec, package, to_host) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("terminal-native: {message}");
            EXIT_FAILURE
        }
    };
    stop.cancel();
    if host_thread.join().is_err() {
        return EXIT_FAILURE;
    }
    code
}

/// The tokio side: starts the terminal, reports readiness, serves the page until `stop` or a
/// signal, shuts the terminal down and tells the event loop to exit.
fn host_thread(
    settings: Settings,
    from_page: mpsc::UnboundedReceiver<ToHost>,
    proxy: EventLoopProxy<ToWindow>,
    stop: CancellationToken,
    ready: std::sync::mpsc::Sender<Result<(), i32>>,
) {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("terminal-native: cannot start the async runtime: {e}");
            let _ = ready.send(Err(EXIT_FAILURE));
            return;
        }
    };
    runtime.block_on(async move {
        let terminal = match Terminal::start(settings, Vec::new()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("terminal-native: {e}");
                let _ = ready.send(Err(e.exit_code()));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        tracing::info!(terminal = %terminal.settings().terminal_id, "kiosk window host started");
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = crate::wait_for_signal() => signal_stop.cancel(),
                _ = signal_stop.cancelled() => {}
            }
        });
        serve_pages(&terminal, from_page, &proxy, &stop).await;
        terminal.shutdown().await;
        let _ = proxy.send_event(ToWindow::Exit(EXIT_OK));
    });
}

/// One page's bridge with its two outgoing streams.
struct PageLink {
    bridge: Bridge,
    replies: mpsc::Receiver<String>,
    events: broadcast::Receiver<String>,
}

impl PageLink {
    fn new(terminal: &Arc<Terminal>) -> PageLink {
        let (out_tx, replies) = mpsc::channel::<String>(256);
        let bridge = Bridge::new(terminal.clone(), out_tx);
        let events = bridge.events();
        PageLink {
            bridge,
            replies,
            events,
        }
    }

    /// Closes the bridge in the background: nobody reads its replies any more.
    fn retire(self) {
        let PageLink {
            bridge, replies, ..
        } = self;
        drop(replies);
        tokio::spawn(async move { bridge.close().await });
    }
}

/// Feeds page messages to the current page's bridge and forwards its replies and the terminal
/// events to the window, until `stop` or the window is gone.
async fn serve_pages(
    terminal: &Arc<Terminal>,
    mut from_page: mpsc::UnboundedReceiver<ToHost>,
    proxy: &EventLoopProxy<ToWindow>,
    stop: &CancellationToken,
) {
    let mut page = PageLink::new(terminal);
    let deliver = |msg: String| proxy.send_event(ToWindow::Deliver(msg)).is_ok();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            m = from_page.recv() => match m {
                Some(ToHost::Message(text)) => {
                    if text.len() > MAX_MESSAGE {
                        let msg = json!({"id": null, "error": {"code": "INVALID_REQUEST",
                            "message": format!("a message is at most {MAX_MESSAGE} bytes")}});
                        if !deliver(msg.to_string()) {
                            break;
                        }
                    } else {
                        page.bridge.handle(&text).await;
                    }
                }
                Some(ToHost::PageStarted) => {
                    tracing::info!("page loading: new bridge");
                    std::mem::replace(&mut page, PageLink::new(terminal)).retire();
                }
                None => break,
            },
            Some(msg) = page.replies.recv() => {
                if !deliver(msg) {
                    break;
                }
            }
            ev = page.events.recv() => {
                let msg = match ev {
                    Ok(m) => m,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        json!({"event": "bridge.lagged", "data": {"missed": n}}).to_string()
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if !deliver(msg) {
                    break;
                }
            }
        }
    }
    let PageLink {
        bridge, replies, ..
    } = page;
    drop(replies);
    bridge.close().await;
}

/// The script that hands one message to the page: a no-op while the page has not installed
/// its receiver yet (like a WebSocket that is not open yet).
fn receive_script(text: &str) -> String {
    // A JSON string literal is a valid JS string literal.
    let literal = serde_json::Value::String(text.to_owned()).to_string();
    format!(
        "typeof window.__opentellerReceive === 'function' && window.__opentellerReceive({literal});"
    )
}

/// Runs before every page: no context menu, no text selection by long press, no zoom by
/// Ctrl+wheel, and (when configured) no cursor.
fn kiosk_script(spec: WindowSpec) -> String {
    let mut s = String::from(
        "document.addEventListener('contextmenu', e => e.preventDefault());\n\
         window.addEventListener('wheel', e => { if (e.ctrlKey) e.preventDefault(); }, {passive: false});\n",
    );
    if !spec.cursor {
        s.push_str(
            "document.addEventListener('DOMContentLoaded', () => {\n\
               const st = document.createElement('style');\n\
               st.textContent = '* { cursor: none !important; }';\n\
               document.head.appendChild(st);\n\
             });\n",
        );
    }
    s
}

/// Opens the window and the webview, and runs the event loop until the host says exit.
fn open_and_run(
    event_loop: &mut tao::event_loop::EventLoop<ToWindow>,
    spec: WindowSpec,
    package: PathBuf,
    to_host: mpsc::UnboundedSender<ToHost>,
) -> Result<i32, String> {
    let mut builder = WindowBuilder::new()
        .with_title("OpenTeller")
        .with_decorations(false)
        .with_always_on_top(true);
    if spec.fullscreen {
        builder = builder.with_fullscreen(Some(Fullscreen::Borderless(None)));
        // Fullscreen is a request to the window manager; a kiosk X session may have none, so
        // the window also covers the primary monitor by its own geometry.
        let monitor = event_loop
            .primary_monitor()
            .or_else(|| event_loop.available_monitors().next());
        if let Some(m) = monitor {
            builder = builder
                .with_inner_size(m.size())
                .with_position(m.position());
        }
    } else {
        builder = builder.with_inner_size(tao::dpi::LogicalSize::new(1280.0, 1024.0));
    }
    let window = builder
        .build(event_loop)
        .map_err(|e| format!("cannot open the kiosk window: {e}"))?;
    window.set_cursor_visible(spec.cursor);

    let ipc_tx = to_host.clone();
    let load_tx = to_host;
    let webview = WebViewBuilder::new()
        .with_custom_protocol(SCHEME.into(), move |_id, request| {
            serve_file(&package, &request)
        })
        .with_ipc_handler(move |request: Request<String>| {
            // Only our own pages may talk to the host.
            if request.uri().scheme_str() != Some(SCHEME) {
                tracing::warn!(uri = %request.uri(), "IPC message from a foreign page dropped");
                return;
            }
            let _ = ipc_tx.send(ToHost::Message(request.into_body()));
        })
        .with_on_page_load_handler(move |event, url| {
            if matches!(event, PageLoadEvent::Started) {
                tracing::debug!(%url, "page load started");
                let _ = load_tx.send(ToHost::PageStarted);
            }
        })
        .with_navigation_handler(|url| {
            let allowed = url.starts_with(START_URL);
            if !allowed {
                tracing::warn!(%url, "navigation outside the business package blocked");
            }
            allowed
        })
        .with_new_window_req_handler(|url, _| {
            tracing::warn!(%url, "new window blocked");
            wry::NewWindowResponse::Deny
        })
        .with_initialization_script(kiosk_script(spec))
        .with_devtools(spec.devtools)
        .with_url(START_URL)
        .build_gtk(
            window
                .default_vbox()
                .ok_or("the kiosk window has no GTK container")?,
        )
        .map_err(|e| format!("cannot create the webview: {e}"))?;

    // A crashed web process leaves a blank page: reload it (a new page, so a new bridge).
    webview
        .webview()
        .connect_web_process_terminated(|view, reason| {
            tracing::error!(?reason, "the page's web process ended; reloading the page");
            view.reload();
        });

    let mut code = EXIT_OK;
    let closable = !spec.fullscreen;
    event_loop.run_return(|event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        match event {
            Event::NewEvents(StartCause::Init) => {
                tracing::info!(url = START_URL, "kiosk window open");
            }
            Event::UserEvent(ToWindow::Deliver(text)) => {
                if let Err(e) = webview.evaluate_script(&receive_script(&text)) {
                    tracing::warn!(error = %e, "cannot deliver a bridge message to the page");
                }
            }
            Event::UserEvent(ToWindow::Exit(c)) => {
                code = c;
                *control_flow = ControlFlow::Exit;
            }
            Event::WindowEvent {
                event: WindowEvent::CloseRequested,
                ..
            } => {
                if closable {
                    *control_flow = ControlFlow::Exit;
                } else {
                    tracing::warn!("close request ignored: the kiosk window stops with SIGTERM");
                }
            }
            _ => {}
        }
    });
    Ok(code)
}

/// Answers a request for `openteller://localhost/PATH` from the package directory: GET / HEAD
/// only, `index.html` for a directory, 404 for anything missing or outside the package.
fn serve_file(package: &Path, request: &Request<Vec<u8>>) -> Response<Cow<'static, [u8]>> {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only");
    }
    let Some(relative) = package_path(request.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let mut path = package.join(relative);
    if path.is_dir() {
        path.push("index.html");
    }
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    let mime = mime_guess::from_path(&path).first_or_octet_stream();
    let body = if method == Method::HEAD {
        Vec::new()
    } else {
        body
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, mime.essence_str())
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Cow::Owned(body))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Cow<'static, [u8]>> {
    let mut r = Response::new(Cow::Borrowed(text.as_bytes()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The package-relative path of a URL path, or `None` when it would leave the package
/// (`..`, encoded or not), is absolute after decoding, has a backslash or a NUL, or is not
/// UTF-8.
fn package_path(url_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(url_path)
        .decode_utf8()
        .ok()?;
    if decoded.contains('\\') || decoded.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for part in decoded.split('/') {
        if part.is_empty() || part == "." {
            continue;
        }
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(c)), None) => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_paths_stay_inside() {
        assert_eq!(package_path("/"), Some(PathBuf::new()));
        assert_eq!(
            package_path("/assets/app%20x.js"),
            Some(PathBuf::from("assets/app x.js"))
        );
        assert_eq!(package_path("/./a//b"), Some(PathBuf::from("a/b")));
        for bad in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/a%2f..%2f..%2fx",
            "/a%5c..%5cx",
            "/a%00b",
            "/%ff",
        ] {
            assert_eq!(package_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn serves_files_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>hi</p>").unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/app.js"), "1").unwrap();
        let get = |uri: &str, method: Method| {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Vec::new())
                .unwrap();
            serve_file(dir.path(), &req)
        };
        let r = get("openteller://localhost/", Method::GET);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html");
        assert_eq!(&r.body()[..], b"<p>hi</p>");
        let r = get("openteller://localhost/assets/app.js", Method::GET);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/javascript");
        let r = get("openteller://localhost/assets/app.js", Method::HEAD);
        assert_eq!((r.status(), r.body().len()), (StatusCode::OK, 0));
        assert_eq!(
            get("openteller://localhost/missing", Method::GET).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("openteller://localhost/assets/../../x", Method::GET).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("openteller://localhost/", Method::POST).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn messages_become_js_string_literals() {
        let s = receive_script("{\"a\":\"</script>\\u2028'\"}");
        assert!(s.starts_with("typeof window.__opentellerReceive === 'function'"));
        let literal = &s[s.find("__opentellerReceive(\"").unwrap() + 20..s.len() - 2];
        let back: String = serde_json::from_str(literal).unwrap();
        assert_eq!(back, "{\"a\":\"</script>\\u2028'\"}");
    }
}
