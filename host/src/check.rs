//! `rowhook check`: is the server ready to feed rowhook? Each problem is
//! named with the statement that fixes it.

use crate::source::server::{self, ProblemKind, ServerInfo, SourceUrl};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    /// Whether this item is fine.
    pub ok: bool,
    /// What was checked and what was found (with the fix, when not ok).
    pub text: String,
}

/// Checks the server behind `url` for use with replica id `server_id`.
pub async fn check_server(url: &SourceUrl, server_id: u32) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    let mut conn = match url.connect().await {
        Ok(c) => c,
        Err(e) => {
            lines.push(CheckLine {
                ok: false,
                text: format!("{e:#}"),
            });
            return lines;
        }
    };
    let info = match ServerInfo::read(&mut conn).await {
        Ok(i) => i,
        Err(e) => {
            lines.push(CheckLine {
                ok: false,
                text: url.scrub(&format!("reading server settings: {e:#}")),
            });
            return lines;
        }
    };
    lines.push(CheckLine {
        ok: true,
        text: format!("connected to {url} ({})", info.version),
    });
    let problems = info.problems();
    for (setting, kind) in [
        ("binary log on", ProblemKind::LogBin),
        ("binlog_format=ROW", ProblemKind::Format),
        ("binlog_row_image=FULL", ProblemKind::RowImage),
        ("binlog_row_metadata=FULL", ProblemKind::RowMetadata),
    ] {
        if !problems.iter().any(|p| p.kind == kind) {
            lines.push(CheckLine {
                ok: true,
                text: setting.to_string(),
            });
        }
    }
    lines.extend(problems.into_iter().map(|p| CheckLine {
        ok: false,
        text: p.to_string(),
    }));
    match server::server_id_problem(&mut conn, &info, server_id).await {
        Some(p) => lines.push(CheckLine {
            ok: false,
            text: p.to_string(),
        }),
        None => lines.push(CheckLine {
            ok: true,
            text: format!("server_id {server_id} is free"),
        }),
    }
    match server::missing_grants(&mut conn).await {
        Ok(missing) if missing.is_empty() => lines.push(CheckLine {
            ok: true,
            text: "grants REPLICATION SLAVE and REPLICATION CLIENT".into(),
        }),
        Ok(missing) => lines.extend(missing.into_iter().map(|p| CheckLine {
            ok: false,
            text: p.to_string(),
        })),
        Err(e) => lines.push(CheckLine {
            ok: false,
            text: url.scrub(&format!("cannot read the user's grants: {e:#}")),
        }),
    }
    let _ = conn.disconnect().await;
    lines
}
