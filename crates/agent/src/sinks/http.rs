//! `http` sink: each batch POSTed to `url` (http or https) as a JSON array of events.

use std::sync::Arc;

use hyper::Uri;

use super::delivery::Target;
use super::SinkError;
use crate::config::HttpSinkArgs;
use crate::events::Event;

pub struct HttpTarget {
    uri: Uri,
}

impl HttpTarget {
    pub fn new(args: &HttpSinkArgs) -> Result<HttpTarget, SinkError> {
        if !args.url.starts_with("http://") && !args.url.starts_with("https://") {
            return Err(SinkError::Setup {
                sink: "http",
                message: format!(
                    "`{}`: only http:// and https:// URLs are supported",
                    args.url
                ),
            });
        }
        let uri = args.url.parse().map_err(|e| SinkError::Setup {
            sink: "http",
            message: format!("`{}`: {e}", args.url),
        })?;
        Ok(HttpTarget { uri })
    }
}

impl Target for HttpTarget {
    fn name(&self) -> &'static str {
        "http"
    }

    fn uri(&self) -> &Uri {
        &self.uri
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn encode(&self, batch: &[Arc<Event>]) -> Vec<u8> {
        let events: Vec<&Event> = batch.iter().map(|e| &**e).collect();
        serde_json::to_vec(&events).unwrap_or_default()
    }
}
