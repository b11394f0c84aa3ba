//! The format listeners of the real `host-sim` binary: the same accounts reached over HTTP
//! JSON, HTTP XML, TCP fixed-width and TCP delimited messages (the shipped `formats/`).

mod common;

use std::path::Path;

use common::*;
use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::{Format, Message, Record};
use openteller_host_sim::client::Terminal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn listeners() -> String {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("formats");
    let f = f.display();
    let maps = format!(
        "mapping = {{ request = \"{f}/request-map.toml\", response = \"{f}/response-map.toml\" }}"
    );
    format!(
        "[[listeners]]\nname = \"json\"\nkind = \"http_json\"\nlisten = \"127.0.0.1:0\"\npath = \"/iso\"\n\
         [[listeners]]\nname = \"xml\"\nkind = \"http_xml\"\nlisten = \"127.0.0.1:0\"\n\
         format = \"{f}/xml-request.toml\"\nresponse_format = \"{f}/xml-response.toml\"\n{maps}\n\
         [[listeners]]\nname = \"fixed\"\nkind = \"tcp_fixed\"\nlisten = \"127.0.0.1:0\"\nframing = \"ascii4\"\n\
         format = \"{f}/fixed-request.toml\"\nresponse_format = \"{f}/fixed-response.toml\"\n{maps}\n\
         [[listeners]]\nname = \"delimited\"\nkind = \"tcp_delimited\"\nlisten = \"127.0.0.1:0\"\n\
         format = \"{f}/delimited-request.toml\"\nresponse_format = \"{f}/delimited-response.toml\"\n{maps}\n"
    )
}

fn format(name: &str) -> Format {
    Format::from_file(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("formats")
            .join(name),
    )
    .unwrap()
}

fn addr_of(sim: &Sim, name: &str) -> String {
    sim.line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {}", sim.line))
        .to_owned()
}

/// A request record in the formats' names: withdrawal / inquiry / transfer / reversal.
fn record(t: &Terminal, mti: &str, code: &str, stan: &str, amount: Option<&str>) -> Record {
    let mut r = Record::new()
        .with("mti", mti)
        .with("code", code)
        .with("terminal", t.id())
        .with("stan", stan)
        .with("date", "1122")
        .with("pan", ZHANG)
        .with("currency", "156");
    if let Some(a) = amount {
        r.insert("amount", a);
    }
    if mti.starts_with("02") {
        r.insert("pin_block", hex::encode_upper(t.pin_block("1234", ZHANG)));
    }
    r
}

async fn tcp_call(addr: &str, prefix: LengthPrefix, body: &[u8]) -> Option<Vec<u8>> {
    let framer = Framer::new(prefix, 16 * 1024);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&framer.frame(body).unwrap()).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some(f) = framer.decode_frame(&mut buf).unwrap() {
            return Some(f.to_vec());
        }
        if s.read_buf(&mut buf).await.unwrap() == 0 {
            return None;
        }
    }
}

#[tokio::test]
async fn every_format_reaches_the_same_accounts() {
    let sim = Sim::start(&listeners());
    let t = sim.terminal("FMT00001");
    let http = reqwest::Client::new();

    // HTTP JSON: the codec's JSON form of the cup message, no MAC.
    let mut atm = sim.terminal("FMT00001");
    let mut w = atm.withdrawal(ZHANG, "1234", 10_000);
    w.remove(64);
    let answer = http
        .post(format!("http://{}/iso", addr_of(&sim, "json")))
        .body(w.to_json())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer = Message::from_json(&answer).unwrap();
    assert_eq!((answer.mti.as_str(), answer.text(39)), ("0210", Some("00")));
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 10_000);

    // HTTP XML: an inquiry answers the balance.
    let xml_req = format("xml-request.toml");
    let body = xml_req
        .encode_record(&record(&t, "0200", "310000", "000101", None))
        .unwrap();
    let r = http
        .post(format!("http://{}/", addr_of(&sim, "xml")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resp = format("xml-response.toml")
        .decode_record(&r.bytes().await.unwrap())
        .unwrap();
    assert_eq!(resp.get("rc"), Some("00"));
    assert_eq!(resp.get("mti"), Some("0210"));
    assert!(resp.get("balance").unwrap().ends_with("099990000"));
    // Garbage: 400 with the codec's code.
    let r = http
        .post(format!("http://{}/", addr_of(&sim, "xml")))
        .body("<nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // TCP fixed-width: a withdrawal and its reversal (0400 with the original's STAN).
    let fixed = format("fixed-request.toml");
    let fixed_resp = format("fixed-response.toml");
    let addr = addr_of(&sim, "fixed");
    let w = fixed
        .encode_record(&record(&t, "0200", "010000", "000102", Some("250.00")))
        .unwrap();
    let a = fixed_resp
        .decode_record(&tcp_call(&addr, LengthPrefix::Ascii4, &w).await.unwrap())
        .unwrap();
    assert_eq!((a.get("mti"), a.get("rc")), (Some("0210"), Some("00")));
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 35_000);
    let rev = fixed
        .encode_record(&record(&t, "0400", "010000", "000102", Some("250.00")))
        .unwrap();
    let a = fixed_resp
        .decode_record(&tcp_call(&addr, LengthPrefix::Ascii4, &rev).await.unwrap())
        .unwrap();
    assert_eq!((a.get("mti"), a.get("rc")), (Some("0410"), Some("00")));
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 10_000);
    // A frame that is not a record closes the connection.
    assert_eq!(tcp_call(&addr, LengthPrefix::Ascii4, b"short").await, None);

    // TCP delimited: a transfer.
    let delimited = format("delimited-request.toml");
    let mut tr = record(&t, "0200", "400000", "000103", Some("1.00"));
    tr.insert("to_account", LI);
    let a = format("delimited-response.toml")
        .decode_record(
            &tcp_call(
                &addr_of(&sim, "delimited"),
                LengthPrefix::Binary2,
                &delimited.encode_record(&tr).unwrap(),
            )
            .await
            .unwrap(),
        )
        .unwrap();
    assert_eq!(a.get("rc"), Some("00"));
    assert_eq!(sim.available(LI).await, 100_000_000 + 100);

    let tx = sim.transactions().await;
    let kinds: Vec<&str> = tx["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["withdrawal", "withdrawal", "reversal", "transfer"]);
}

#[tokio::test]
async fn bad_listener_configurations_exit_78() {
    for bad in [
        "[[listeners]]\nname = \"x\"\nkind = \"tcp_fixed\"\nlisten = \"127.0.0.1:0\"\n",
        "[[listeners]]\nname = \"x\"\nkind = \"http_json\"\nlisten = \"127.0.0.1:0\"\nframing = \"binary2\"\n",
        "[[listeners]]\nname = \"control\"\nkind = \"http_json\"\nlisten = \"127.0.0.1:0\"\n",
        "[[listeners]]\nname = \"x\"\nkind = \"smoke\"\nlisten = \"127.0.0.1:0\"\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host-sim.toml");
        std::fs::write(
            &path,
            format!("listen = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\n{bad}\n[keys]\nzpk = \"{ZPK}\"\nzak = \"{ZAK}\"\n"),
        )
        .unwrap();
        let out = std::process::Command::new(bin())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{bad}");
    }
}
