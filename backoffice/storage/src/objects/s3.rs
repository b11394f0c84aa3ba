//! The S3 backend, over `rust-s3` (built with `fail-on-err`: every non-2xx answer is an
//! `HttpFailWithBody`, which is where "missing" is told apart from "failed").

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, BucketConfiguration, Region};

use super::{ObjectError, ObjectMeta, S3Config, validate_key};

/// Each request gives up after this long (rust-s3's own default is a minute).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: Box<Bucket>,
    region: Region,
    credentials: Credentials,
    endpoint: String,
    path_style: bool,
}

impl S3Store {
    pub(crate) fn new(config: &S3Config) -> Result<Self, ObjectError> {
        let endpoint = config.endpoint.trim_end_matches('/').to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ObjectError::Config(format!(
                "objects.s3.endpoint must start with http:// or https://, not {endpoint:?}"
            )));
        }
        if config.bucket.is_empty() || config.region.is_empty() {
            return Err(ObjectError::Config(
                "objects.s3.bucket and objects.s3.region must not be empty".to_owned(),
            ));
        }
        let region = Region::Custom {
            region: config.region.clone(),
            endpoint: endpoint.clone(),
        };
        let credentials = Credentials::new(
            Some(&config.access_key),
            Some(&config.secret_key),
            None,
            None,
            None,
        )
        .map_err(|e| ObjectError::Config(format!("objects.s3 credentials: {e}")))?;
        let bucket = Bucket::new(&config.bucket, region.clone(), credentials.clone())
            .map_err(|e| ObjectError::Config(format!("objects.s3: {e}")))?;
        let bucket = if config.path_style {
            bucket.with_path_style()
        } else {
            bucket
        };
        let bucket = bucket
            .with_request_timeout(REQUEST_TIMEOUT)
            .map_err(|e| ObjectError::Config(format!("objects.s3: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                bucket,
                region,
                credentials,
                endpoint,
                path_style: config.path_style,
            }),
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    pub(crate) fn bucket_name(&self) -> &str {
        &self.inner.bucket.name
    }

    pub(crate) async fn ping(&self) -> Result<(), ObjectError> {
        self.inner
            .bucket
            .list_page(String::new(), None, None, None, Some(1))
            .await
            .map(drop)
            .map_err(s3_err("list bucket"))
    }

    pub(crate) async fn ensure_bucket(&self) -> Result<(), ObjectError> {
        match self.ping().await {
            Ok(()) => return Ok(()),
            Err(ObjectError::S3Status { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        let inner = &self.inner;
        let name = inner.bucket.name.as_str();
        let region = inner.region.clone();
        let credentials = inner.credentials.clone();
        let config = BucketConfiguration::default();
        let created = if inner.path_style {
            Bucket::create_with_path_style(name, region, credentials, config).await
        } else {
            Bucket::create(name, region, credentials, config).await
        };
        match created.map_err(s3_err("create bucket")) {
            Ok(_) => {
                tracing::info!(bucket = name, endpoint = %inner.endpoint, "created the S3 bucket");
                Ok(())
            }
            // Created meanwhile by another process.
            Err(ObjectError::S3Status { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        self.inner
            .bucket
            .put_object_with_content_type(key, &bytes, content_type)
            .await
            .map(drop)
            .map_err(s3_err("put object"))
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<(Bytes, ObjectMeta)>, ObjectError> {
        let response = match self.inner.bucket.get_object(key).await {
            Ok(response) => response,
            Err(S3Error::HttpFailWithBody(404, _)) => return Ok(None),
            Err(e) => return Err(s3_err("get object")(e)),
        };
        let headers = response.headers();
        let header = |name: &str| headers.get(name).cloned();
        let content_type = header("content-type");
        let last_modified = header("last-modified").as_deref().and_then(parse_time);
        let bytes = response.into_bytes();
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: bytes.len() as u64,
            content_type,
            last_modified,
        };
        Ok(Some((bytes, meta)))
    }

    pub(crate) async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        let head = match self.inner.bucket.head_object(key).await {
            Ok((head, _status)) => head,
            Err(S3Error::HttpFailWithBody(404, _)) => return Ok(None),
            Err(e) => return Err(s3_err("head object")(e)),
        };
        Ok(Some(ObjectMeta {
            key: key.to_owned(),
            size: head
                .content_length
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            content_type: head.content_type,
            last_modified: head.last_modified.as_deref().and_then(parse_time),
        }))
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.inner.bucket.delete_object(key).await {
            // S3 answers 204 for a missing key; some servers say 404.
            Ok(_) | Err(S3Error::HttpFailWithBody(404, _)) => Ok(()),
            Err(e) => Err(s3_err("delete object")(e)),
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let pages = self
            .inner
            .bucket
            .list(prefix.to_owned(), None)
            .await
            .map_err(s3_err("list objects"))?;
        Ok(pages
            .into_iter()
            .flat_map(|page| page.contents)
            .filter(|object| validate_key(&object.key).is_ok())
            .map(|object| ObjectMeta {
                last_modified: parse_time(&object.last_modified),
                key: object.key,
                size: object.size,
                content_type: None,
            })
            .collect())
    }
}

/// Maps a client error: error answers keep their status and S3 code, the rest their cause.
fn s3_err(op: &'static str) -> impl FnOnce(S3Error) -> ObjectError {
    move |error| match error {
        S3Error::HttpFailWithBody(status, body) => ObjectError::S3Status {
            op,
            status,
            code: error_code(&body),
        },
        other => ObjectError::S3 {
            op,
            source: Box::new(other),
        },
    }
}

/// `<Code>NoSuchBucket</Code>` of an S3 error body, or "".
fn error_code(body: &str) -> String {
    body.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.chars().take(64).collect())
        .unwrap_or_default()
}

/// S3 times: RFC 3339 in listings, HTTP dates (RFC 7231, a form of RFC 2822) in headers.
fn parse_time(text: &str) -> Option<SystemTime> {
    use time::OffsetDateTime;
    use time::format_description::well_known::{Rfc2822, Rfc3339};
    OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(text, &Rfc2822))
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let http = parse_time("Wed, 21 Oct 2015 07:28:00 GMT").expect("http date");
        let iso = parse_time("2015-10-21T07:28:00.000Z").expect("rfc 3339");
        assert_eq!(http, iso);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn error_codes() {
        let body =
            "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body), "NoSuchBucket");
        assert_eq!(error_code(""), "");
        assert_eq!(error_code("<Code>unterminated"), "");
    }
}
