//! The registry in the Prometheus text exposition format (version 0.0.4)
//! and in OpenMetrics 1.0, what a `/metrics` endpoint serves.
//!
//! The two differ in little: OpenMetrics names a counter family without
//! its `_total` (the samples keep it) and ends with `# EOF`.

use std::fmt::Write as _;

use super::{Registry, Value};

/// The content type of [`render_prometheus`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of [`render_openmetrics`]'s text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every series of `registry` as Prometheus text: a `# HELP` and `# TYPE`
/// line per metric, then one line per series, label values escaped.
pub fn render_prometheus(registry: &Registry) -> String {
    render(registry, false)
}

/// Every series of `registry` as OpenMetrics 1.0 text.
pub fn render_openmetrics(registry: &Registry) -> String {
    render(registry, true)
}

fn render(registry: &Registry, openmetrics: bool) -> String {
    let snapshot = registry.snapshot();
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for s in &snapshot.samples {
        if current != Some(s.name.as_str()) {
            current = Some(&s.name);
            let (kind, family) = match s.value {
                Value::Counter(_) | Value::CounterF64(_) if openmetrics => {
                    ("counter", s.name.strip_suffix("_total").unwrap_or(&s.name))
                }
                Value::Counter(_) | Value::CounterF64(_) => ("counter", s.name.as_str()),
                Value::Gauge(_) => ("gauge", s.name.as_str()),
                Value::Histogram(_) => ("histogram", s.name.as_str()),
            };
            let _ = writeln!(out, "# HELP {family} {}", escape(&s.help, openmetrics));
            let _ = writeln!(out, "# TYPE {family} {kind}");
        }
        match &s.value {
            Value::Counter(n) => {
                line(&mut out, &s.name, "", &s.labels, None);
                let _ = writeln!(out, "{n}");
            }
            Value::CounterF64(v) | Value::Gauge(v) => {
                line(&mut out, &s.name, "", &s.labels, None);
                number(&mut out, *v);
                out.push('\n');
            }
            Value::Histogram(h) => {
                for (le, n) in &h.buckets {
                    let mut bound = String::new();
                    number(&mut bound, *le);
                    line(&mut out, &s.name, "_bucket", &s.labels, Some(&bound));
                    let _ = writeln!(out, "{n}");
                }
                line(&mut out, &s.name, "_sum", &s.labels, None);
                number(&mut out, h.sum);
                out.push('\n');
                line(&mut out, &s.name, "_count", &s.labels, None);
                let _ = writeln!(out, "{}", h.count);
            }
        }
    }
    if openmetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// `name` + `suffix`, its labels (and `le`), and the space before the value.
fn line(out: &mut String, name: &str, suffix: &str, labels: &[(String, String)], le: Option<&str>) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let le = le.map(|v| ("le", v));
        for (i, (k, v)) in labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(le)
            .enumerate()
        {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v, true));
        }
        out.push('}');
    }
    out.push(' ');
}

fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Escapes `\` and newlines (and `"` in label values), as the format asks.
fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::names;
    use super::*;

    #[test]
    fn text_exposition_format() {
        let registry = Registry::new();
        registry.counter(names::CHANGES, "Row changes seen.", vec![]).add(42);
        let h = |name: &str| vec![("tenant", "shop".to_owned()), ("handler", name.to_owned())];
        registry
            .counter(names::HANDLER_CALLS, "Handler calls.", h("orders"))
            .add(3);
        registry
            .counter(names::HANDLER_CALLS, "Handler calls.", h("audit"))
            .add(1);
        let mut labels = h("orders");
        labels.push(("name", "a\"b\\c\nd".to_owned()));
        registry
            .gauge(names::GUEST_GAUGE, "Guest gauge.\nSet by the handler.", labels)
            .set(0.5);
        registry
            .gauge(names::SOURCE_CONNECTED, "Connected.", vec![])
            .set(f64::NAN);
        assert_eq!(
            render_prometheus(&registry),
            "# HELP rowhook_changes_total Row changes seen.\n\
             # TYPE rowhook_changes_total counter\n\
             rowhook_changes_total 42\n\
             # HELP rowhook_handler_calls_total Handler calls.\n\
             # TYPE rowhook_handler_calls_total counter\n\
             rowhook_handler_calls_total{tenant=\"shop\",handler=\"audit\"} 1\n\
             rowhook_handler_calls_total{tenant=\"shop\",handler=\"orders\"} 3\n\
             # HELP rowhook_handler_gauge Guest gauge.\\nSet by the handler.\n\
             # TYPE rowhook_handler_gauge gauge\n\
             rowhook_handler_gauge{tenant=\"shop\",handler=\"orders\",name=\"a\\\"b\\\\c\\nd\"} 0.5\n\
             # HELP rowhook_source_connected Connected.\n\
             # TYPE rowhook_source_connected gauge\n\
             rowhook_source_connected NaN\n"
        );
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let registry = Registry::new();
        registry.counter(names::CHANGES, "Row changes seen.", vec![]).add(2);
        registry
            .histogram(
                names::SINK_WRITE_SECONDS,
                "Sink writes.",
                vec![("sink", "out".to_owned())],
            )
            .observe(std::time::Duration::from_millis(2));
        let text = render_openmetrics(&registry);
        assert!(text.starts_with(
            "# HELP rowhook_changes Row changes seen.\n\
             # TYPE rowhook_changes counter\n\
             rowhook_changes_total 2\n\
             # HELP rowhook_sink_write_seconds Sink writes.\n\
             # TYPE rowhook_sink_write_seconds histogram\n\
             rowhook_sink_write_seconds_bucket{sink=\"out\",le=\"0.00001\"} 0\n"
        ));
        assert!(text.contains("rowhook_sink_write_seconds_bucket{sink=\"out\",le=\"0.0025\"} 1\n"));
        assert!(text.contains("rowhook_sink_write_seconds_bucket{sink=\"out\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("rowhook_sink_write_seconds_sum{sink=\"out\"} 0.002\n"));
        assert!(text.ends_with("rowhook_sink_write_seconds_count{sink=\"out\"} 1\n# EOF\n"));
        let prom = render_prometheus(&registry);
        assert!(prom.starts_with("# HELP rowhook_changes_total Row changes seen.\n"));
        assert!(!prom.contains("# EOF"));
    }

    #[test]
    fn an_empty_registry_renders_nothing() {
        assert_eq!(render_prometheus(&Registry::new()), "");
        assert_eq!(render_openmetrics(&Registry::new()), "# EOF\n");
    }
}
