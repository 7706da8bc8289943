//! The process's logs, on stderr: text by default, or one JSON object a line
//! with `COFFER_LOG_FORMAT=json` (for a log shipper). Either way the same
//! events and fields: secrets are never given to the log (their types
//! print redacted), so the format changes nothing about what is written.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The variable that picks the format: `text` (the default) or `json`.
pub const FORMAT_VAR: &str = "COFFER_LOG_FORMAT";

/// Installs the subscriber (once per process; later calls do nothing),
/// filtered by `filter`, in the format [`FORMAT_VAR`] names.
pub fn init(filter: tracing_subscriber::EnvFilter) {
    let format = std::env::var(FORMAT_VAR).unwrap_or_default();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format.trim() {
        "json" => {
            let _ = builder.event_format(Json).try_init();
        }
        "" | "text" => {
            let _ = builder.try_init();
        }
        other => {
            let _ = builder.try_init();
            tracing::warn!(format = other, "{FORMAT_VAR} is `text` or `json`; logging as text");
        }
    }
}

/// One JSON object per event: `timestamp` (RFC 3339, UTC), `level`,
/// `target`, `message`, the event's other `fields`, and the names and
/// fields of the `spans` it happened in, innermost last.
pub struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or(Value::String(String::new()));
        let mut line = Map::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        line.insert("timestamp".into(), now.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("message".into(), message);
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        let spans = spans(ctx);
        if !spans.is_empty() {
            line.insert("spans".into(), Value::Array(spans));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The spans around the event, outermost first: each its name and its
/// fields as the subscriber formatted them.
fn spans<S, N>(ctx: &FmtContext<'_, S, N>) -> Vec<Value>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let Some(scope) = ctx.event_scope() else { return Vec::new() };
    scope
        .from_root()
        .map(|span| {
            let mut entry = Map::new();
            entry.insert("name".into(), span.name().into());
            let extensions = span.extensions();
            if let Some(formatted) = extensions.get::<FormattedFields<N>>()
                && !formatted.is_empty()
            {
                entry.insert("fields".into(), formatted.as_str().into());
            }
            Value::Object(entry)
        })
        .collect()
}

/// An event's fields as JSON values: numbers and booleans as themselves,
/// the rest as the text they display as.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().to_owned(), value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn an_event_is_one_json_object_with_its_fields() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt().event_format(Json).with_writer(captured.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", route = "/v1/payments");
            let _entered = span.enter();
            tracing::warn!(attempts = 3_u64, ok = false, reason = %"a \"quoted\"\nline", "a payment failed");
        });
        let text = String::from_utf8(captured.0.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "a payment failed");
        assert_eq!(line["fields"]["attempts"], 3);
        assert_eq!(line["fields"]["ok"], false);
        assert_eq!(line["fields"]["reason"], "a \"quoted\"\nline");
        assert_eq!(line["spans"][0]["name"], "request");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    }
}
