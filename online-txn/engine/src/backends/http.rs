//! The HTTP/JSON back channel: each request is POSTed to a URL as the canonical message in the
//! codec's JSON form (`{"mti":"0200","fields":{"2":"...","52":"hex:..."}}`, see
//! `docs/codec.md`), and the answer is the same JSON form of the response (`0210` with the
//! request's F11 and F41, F39 the response code).
//!
//! Outcomes: a connection that cannot be made is "not sent" (declined 91); a timeout, a
//! non-2xx status, a body that is not a message or an answer that does not match the request
//! (MTI, F11, F41) leave the request **in doubt** — it may have been applied — so it is
//! reversed (a `0400` POSTed to the same URL).
//!
//! There is no MAC: protect the link with TLS (`https://` URLs, rustls; `ca_file` for a
//! private CA), a private network, and the optional shared-secret header (`headers`).

use std::time::Duration;

use openteller_codec::{FieldValue, Message};

use crate::host::{HostError, answer_key, received_key};

/// A JSON host reached over HTTP.
#[derive(Debug, Clone)]
pub struct HttpLink {
    client: reqwest::Client,
    url: String,
    headers: Vec<(String, String)>,
    max_body: usize,
}

impl HttpLink {
    /// A link POSTing to `url` with these extra headers; answers larger than `max_body` bytes
    /// are refused.
    pub fn new(
        client: reqwest::Client,
        url: String,
        headers: Vec<(String, String)>,
        max_body: usize,
    ) -> HttpLink {
        HttpLink {
            client,
            url,
            headers,
            max_body,
        }
    }

    /// Sends `request` and waits up to `timeout` for its answer.
    pub async fn exchange(
        &self,
        request: &Message,
        timeout: Duration,
    ) -> Result<Message, HostError> {
        let bytes = post(
            &self.client,
            &self.url,
            "application/json",
            &self.headers,
            request.to_json().into_bytes(),
            timeout,
            self.max_body,
        )
        .await?;
        let answer = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| Message::from_json(t).map_err(|e| e.to_string()));
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "HTTP back end answer is not a message");
                return Err(HostError::Lost);
            }
        };
        if received_key(&answer) != answer_key(request)
            || answer.get(39).and_then(FieldValue::as_text).is_none()
        {
            tracing::warn!(
                url = %self.url,
                mti = %answer.mti,
                "HTTP back end answer does not match the request (MTI, F11, F41) or lacks F39"
            );
            return Err(HostError::Lost);
        }
        Ok(answer)
    }
}

/// An HTTP client for back ends: `https://` through rustls, trusting the system's root
/// certificates (webpki roots) and, if given, the CA certificates of the PEM file `ca_file`.
pub fn client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .use_rustls_tls();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {}: no certificate in it", path.display()));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// POSTs `body` and returns the answer's body: cannot connect → not sent; timeout → timeout;
/// any other failure after sending, a non-2xx status or an answer over `max_body` bytes →
/// lost (in doubt).
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    timeout: Duration,
    max_body: usize,
) -> Result<Vec<u8>, HostError> {
    let mut post = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, content_type);
    for (k, v) in headers {
        post = post.header(k, v);
    }
    let response = match post.body(body).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            return Err(HostError::NotSent(format!("cannot connect: {e}")));
        }
        Err(e) if e.is_timeout() => return Err(HostError::Timeout),
        Err(e) => {
            tracing::warn!(url, error = %e, "HTTP back end failed after sending");
            return Err(HostError::Lost);
        }
    };
    let status = response.status();
    if !status.is_success() {
        tracing::warn!(url, %status, "HTTP back end answered an error status");
        return Err(HostError::Lost);
    }
    if response
        .content_length()
        .is_some_and(|n| n > max_body as u64)
    {
        tracing::warn!(url, "HTTP back end answer too large");
        return Err(HostError::Lost);
    }
    match response.bytes().await {
        Ok(b) if b.len() <= max_body => Ok(b.to_vec()),
        Ok(_) => {
            tracing::warn!(url, "HTTP back end answer too large");
            Err(HostError::Lost)
        }
        Err(e) if e.is_timeout() => Err(HostError::Timeout),
        Err(e) => {
            tracing::warn!(url, error = %e, "HTTP back end answer unreadable");
            Err(HostError::Lost)
        }
    }
}
