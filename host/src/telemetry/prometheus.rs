//! The registry in the Prometheus text exposition format (version 0.0.4),
//! what a `/metrics` endpoint serves.

use std::fmt::Write as _;

use super::{Registry, Value};

/// Every series of `registry` as Prometheus text: a `# HELP` and `# TYPE`
/// line per metric, then one line per series, label values escaped.
pub fn render_prometheus(registry: &Registry) -> String {
    let snapshot = registry.snapshot();
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for s in &snapshot.samples {
        if current != Some(s.name.as_str()) {
            current = Some(&s.name);
            let kind = match s.value {
                Value::Counter(_) => "counter",
                Value::Gauge(_) => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", s.name, escape(&s.help, false));
            let _ = writeln!(out, "# TYPE {} {kind}", s.name);
        }
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", escape(v, true));
            }
            out.push('}');
        }
        out.push(' ');
        match s.value {
            Value::Counter(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Gauge(v) if v.is_nan() => out.push_str("NaN"),
            Value::Gauge(v) if v.is_infinite() => out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" }),
            Value::Gauge(v) => {
                let _ = write!(out, "{v}");
            }
        }
        out.push('\n');
    }
    out
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
             # HELP rowhook_guest_gauge Guest gauge.\\nSet by the handler.\n\
             # TYPE rowhook_guest_gauge gauge\n\
             rowhook_guest_gauge{tenant=\"shop\",handler=\"orders\",name=\"a\\\"b\\\\c\\nd\"} 0.5\n\
             # HELP rowhook_handler_calls_total Handler calls.\n\
             # TYPE rowhook_handler_calls_total counter\n\
             rowhook_handler_calls_total{tenant=\"shop\",handler=\"audit\"} 1\n\
             rowhook_handler_calls_total{tenant=\"shop\",handler=\"orders\"} 3\n\
             # HELP rowhook_source_connected Connected.\n\
             # TYPE rowhook_source_connected gauge\n\
             rowhook_source_connected NaN\n"
        );
    }

    #[test]
    fn an_empty_registry_renders_nothing() {
        assert_eq!(render_prometheus(&Registry::new()), "");
    }
}
