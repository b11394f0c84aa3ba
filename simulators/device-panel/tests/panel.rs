//! The panel's HTTP API against real virtual devices: device list, simulator POST, the event
//! stream, reconnection, and the `{code, message}` errors.

mod common;

use std::time::Duration;

use common::{Panel, Proxy, SseReader, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client")
}

/// Waits until the panel reports `name` as connected (or not) and returns its view.
async fn wait_connected(panel: &Panel, name: &str, connected: bool) -> Value {
    let http = client();
    let url = panel.url(&format!("/api/devices/{name}"));
    eventually(WAIT, || {
        let request = http.get(&url).send();
        async move {
            let view: Value = request.await.ok()?.json().await.ok()?;
            (view["connected"] == connected).then_some(view)
        }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{name} never became connected={connected}; log: {}",
            panel.log_text()
        )
    })
}

async fn post_sim(panel: &Panel, name: &str, body: &str) -> (u16, Value) {
    let response = client()
        .post(panel.url(&format!("/api/devices/{name}/simulator")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST simulator");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn lists_devices_with_status_and_capabilities() {
    let idc = Proxy::start("CardReader");
    let dead = format!("unix:{}", idc.dir().join("nobody.sock").display());
    let panel = Panel::start(&[("idc", &idc.endpoint), ("gone", &dead)]);
    wait_connected(&panel, "idc", true).await;

    let list: Value = client()
        .get(panel.url("/api/devices"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let devices = list["devices"].as_array().expect("devices array");
    assert_eq!(devices.len(), 2, "{list}");
    let idc_view = &devices[0];
    assert_eq!(idc_view["name"], "idc");
    assert_eq!(idc_view["endpoint"], idc.endpoint.as_str());
    assert_eq!(idc_view["connected"], true);
    assert_eq!(idc_view["deviceClass"], "DEVICE_CLASS_CARD_READER");
    assert!(
        idc_view["capabilities"]["commands"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "CardReader.ReadRawData")),
        "{idc_view}"
    );
    assert_eq!(
        idc_view["status"]["deviceClass"],
        "DEVICE_CLASS_CARD_READER"
    );
    assert_eq!(devices[1]["name"], "gone");
    assert_eq!(devices[1]["connected"], false);
    assert!(devices[1]["error"].is_string(), "{list}");

    let status = client()
        .get(panel.url("/api/devices/idc/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status().as_u16(), 200);
    let status: Value = status.json().await.unwrap();
    assert_eq!(status["deviceClass"], "DEVICE_CLASS_CARD_READER");

    let gone = client()
        .get(panel.url("/api/devices/gone/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 503);
    let gone: Value = gone.json().await.unwrap();
    assert_eq!(gone["code"], "DEVICE_UNAVAILABLE");

    let page = client().get(panel.url("/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("OpenTeller") && html.contains("EventSource"),
        "the page has its script inlined"
    );
    for external in ["<script src", "<link", "http://", "https://"] {
        assert!(
            !html.contains(external),
            "the page must load nothing from elsewhere: {external}"
        );
    }
}

#[tokio::test]
async fn simulator_post_returns_the_reply() {
    let idc = Proxy::start("CardReader");
    let panel = Panel::start(&[("idc", &idc.endpoint)]);

    let put = json!({"cardReader": {"putCard": {"card": {"name": "panel-card", "magnetic": {"track2": "1234567890=2512"}}}}});
    let (code, reply) = post_sim(&panel, "idc", &put.to_string()).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(
        reply["result"]["code"], "COMPLETION_CODE_SUCCESS",
        "{reply}"
    );

    let (code, reply) = post_sim(&panel, "idc", r#"{"cardReader":{"listCards":{}}}"#).await;
    assert_eq!(code, 200, "{reply}");
    assert!(
        reply["cards"]["cards"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == "panel-card")),
        "{reply}"
    );

    // A refused action is still a 200: the completion tells why.
    let (code, reply) = post_sim(
        &panel,
        "idc",
        r#"{"cardReader":{"insertCard":{"card":{"magnetic":{"track2":"1=2"}}}}}"#,
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_ne!(
        reply["result"]["code"], "COMPLETION_CODE_SUCCESS",
        "{reply}"
    );
    assert!(reply["result"]["description"].is_string(), "{reply}");
    assert_eq!(reply["status"]["deviceClass"], "DEVICE_CLASS_CARD_READER");
}

#[tokio::test]
async fn events_stream_relays_status_notices() {
    let idc = Proxy::start("CardReader");
    let panel = Panel::start(&[("idc", &idc.endpoint)]);
    wait_connected(&panel, "idc", true).await;

    let response = client()
        .get(panel.url("/api/devices/idc/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream"),
        "{:?}",
        response.headers()
    );
    let mut events = SseReader::new(response);
    let first = events.next(WAIT).await.expect("a first event");
    assert_eq!(first.event, "device");
    let view: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(view["connected"], true);
    let status = events
        .until(WAIT, |e| {
            e.event == "notice" && e.data.contains("statusChanged")
        })
        .await
        .expect("a status notice");
    let notice: Value = serde_json::from_str(&status.data).unwrap();
    assert_eq!(
        notice["event"]["statusChanged"]["deviceClass"],
        "DEVICE_CLASS_CARD_READER"
    );

    let (code, _) = post_sim(
        &panel,
        "idc",
        r#"{"setDeviceState":{"device":"DEVICE_STATE_HARDWARE_ERROR"}}"#,
    )
    .await;
    assert_eq!(code, 200);
    events
        .until(WAIT, |e| {
            e.event == "notice" && e.data.contains("DEVICE_STATE_HARDWARE_ERROR")
        })
        .await
        .expect("the new state is relayed");

    // The all-devices stream tags notices with the device name.
    let all = client().get(panel.url("/api/events")).send().await.unwrap();
    let mut all = SseReader::new(all);
    let tagged = all
        .until(WAIT, |e| e.event == "notice")
        .await
        .expect("a tagged notice");
    let tagged: Value = serde_json::from_str(&tagged.data).unwrap();
    assert_eq!(tagged["device"], "idc");
    assert!(tagged["notice"].is_object(), "{tagged}");
}

#[tokio::test]
async fn tells_the_page_when_the_proxy_goes_and_comes_back() {
    let mut idc = Proxy::start("CardReader");
    let panel = Panel::start(&[("idc", &idc.endpoint)]);
    wait_connected(&panel, "idc", true).await;
    let mut events = SseReader::new(
        client()
            .get(panel.url("/api/devices/idc/events"))
            .send()
            .await
            .unwrap(),
    );
    events.next(WAIT).await.expect("the first view");

    idc.kill();
    let down = events
        .until(WAIT, |e| {
            e.event == "device" && e.data.contains(r#""connected":false"#)
        })
        .await
        .expect("a disconnected view");
    assert!(down.data.contains("error"), "{}", down.data);
    wait_connected(&panel, "idc", false).await;

    idc.restart();
    events
        .until(WAIT, |e| {
            e.event == "device" && e.data.contains(r#""connected":true"#)
        })
        .await
        .unwrap_or_else(|| panic!("never reconnected; panel log: {}", panel.log_text()));
    events
        .until(WAIT, |e| {
            e.event == "notice" && e.data.contains("statusChanged")
        })
        .await
        .expect("the new proxy's status");
    let (code, reply) = post_sim(&panel, "idc", r#"{"openDevice":{}}"#).await;
    assert_eq!(code, 200, "{reply}");
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    // No proxy needed: these never reach a device.
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix:{}", dir.path().join("absent.sock").display());
    let panel = Panel::start(&[("idc", &endpoint)]);
    let http = client();

    for path in [
        "/api/devices/nope",
        "/api/devices/nope/status",
        "/api/devices/nope/events",
    ] {
        let r = http.get(panel.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "UNKNOWN_DEVICE", "{path}: {body}");
        assert!(body["message"].is_string());
    }
    let (code, body) = post_sim(&panel, "nope", r#"{"openDevice":{}}"#).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("UNKNOWN_DEVICE")),
        "{body}"
    );

    for bad in [
        "{not json",
        r#"{"openDevice":{},"unknownField":1}"#,
        "{}",
        r#"{"cardReader":{}}"#,
        "[]",
        "",
    ] {
        let (code, body) = post_sim(&panel, "idc", bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert_eq!(body["code"], "BAD_REQUEST", "{bad}: {body}");
    }

    let plain = http
        .post(panel.url("/api/devices/idc/simulator"))
        .header("content-type", "text/plain")
        .body(r#"{"openDevice":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 415);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["code"], "UNSUPPORTED_MEDIA_TYPE");

    let (code, body) = post_sim(&panel, "idc", r#"{"openDevice":{}}"#).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (503, Some("DEVICE_UNAVAILABLE")),
        "{body}"
    );

    let r = http.get(panel.url("/api/nothing")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "NOT_FOUND");
    let r = http.delete(panel.url("/api/devices")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "METHOD_NOT_ALLOWED"
    );

    // Key presses never reach the log, even when refused.
    let (code, _) = post_sim(
        &panel,
        "idc",
        r#"{"pinPad":{"pressKeys":{"keys":["8","6","4","2"]}}}"#,
    )
    .await;
    assert_eq!(code, 503);
    let log = panel.log_text();
    assert!(!log.contains("8642") && !log.contains(r#""8""#), "{log}");
}
