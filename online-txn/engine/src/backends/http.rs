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
//! There is no MAC: protect the link with TLS at a proxy, a private network, and the optional
//! shared-secret header (`headers`).

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
        url: String,
        headers: Vec<(String, String)>,
        max_body: usize,
    ) -> Result<HttpLink, String> {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(HttpLink {
            client,
            url,
            headers,
            max_body,
        })
    }

    /// Sends `request` and waits up to `timeout` for its answer.
    pub async fn exchange(
        &self,
        request: &Message,
        timeout: Duration,
    ) -> Result<Message, HostError> {
        let body = request.to_json();
        let mut post = self
            .client
            .post(&self.url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (k, v) in &self.headers {
            post = post.header(k, v);
        }
        let response = match post.body(body).send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(HostError::NotSent(format!("cannot connect: {e}")));
            }
            Err(e) if e.is_timeout() => return Err(HostError::Timeout),
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "HTTP back end failed after sending");
                return Err(HostError::Lost);
            }
        };
        let status = response.status();
        if !status.is_success() {
            tracing::warn!(url = %self.url, %status, "HTTP back end answered an error status");
            return Err(HostError::Lost);
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            tracing::warn!(url = %self.url, "HTTP back end answer too large");
            return Err(HostError::Lost);
        }
        let bytes = match response.bytes().await {
            Ok(b) if b.len() <= self.max_body => b,
            Ok(_) => {
                tracing::warn!(url = %self.url, "HTTP back end answer too large");
                return Err(HostError::Lost);
            }
            Err(e) if e.is_timeout() => return Err(HostError::Timeout),
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "HTTP back end answer unreadable");
                return Err(HostError::Lost);
            }
        };
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
