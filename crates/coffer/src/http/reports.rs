//! Spend reports: where the money went, by agent, tree, task, tag, payee
//! or day, as JSON or CSV.

use super::AppState;
use super::extract::{ApiQuery, Caller};
use crate::error::Error;
use crate::gateway::reports::{GroupBy, ReportRow, SpendReport, Sum, day_text};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use coffer_client::{SpendReportRow, SpendSum};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// `agent`, `tree` (an agent with its sub-agents), `task`, `tag`,
    /// `payee` or `day`.
    group_by: String,
    /// The first day covered: an RFC 3339 instant or a date (`YYYY-MM-DD`),
    /// UTC. Default: 29 days before `to`.
    from: Option<String>,
    /// The last day covered (included), like `from`. Default: today.
    to: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// A spend report: the operator's over every agent, an agent's over its own
/// tree. Read from totals kept as payments settle, so its cost does not
/// grow with the history.
#[utoipa::path(get, path = "/v1/reports/spend", tag = "reports", params(ReportParams),
    responses((status = 200, body = coffer_client::SpendReport,
        description = "The report (`text/csv` with `format=csv`: key,label,payments,amount_msat,fee_msat)")))]
pub async fn spend(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(params): ApiQuery<ReportParams>,
) -> Result<Response, Error> {
    let group_by = GroupBy::parse(&params.group_by)?;
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(invalid("format", "json or csv")),
    };
    let from_ms = params.from.as_deref().map(|t| instant_ms("from", t)).transpose()?;
    let to_ms = params.to.as_deref().map(|t| instant_ms("to", t)).transpose()?;
    let report = wire(gw.spend_report(&caller, group_by, from_ms, to_ms).await?);
    if !csv {
        return Ok(Json(report).into_response());
    }
    let filename = format!("attachment; filename=\"spend-by-{}-{}-{}.csv\"", report.group_by, report.from, report.to);
    let headers =
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, filename)];
    Ok((headers, to_csv(&report.rows)).into_response())
}

fn invalid(field: &'static str, detail: &str) -> Error {
    crate::gateway::invalid(field, detail.to_owned())
}

/// An RFC 3339 instant, or a date meaning its first instant (UTC).
fn instant_ms(field: &'static str, text: &str) -> Result<i64, Error> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| invalid(field, "an RFC 3339 instant or a date (YYYY-MM-DD)"))
}

fn sum(s: Sum) -> SpendSum {
    SpendSum { payments: s.payments, amount_msat: s.amount.as_u64(), fee_msat: s.fee.as_u64() }
}

fn wire(r: SpendReport) -> coffer_client::SpendReport {
    let row = |r: ReportRow| SpendReportRow {
        key: r.key,
        label: r.label,
        payments: r.sum.payments,
        amount_msat: r.sum.amount.as_u64(),
        fee_msat: r.sum.fee.as_u64(),
    };
    coffer_client::SpendReport {
        group_by: r.group_by.as_str().to_owned(),
        from: day_text(r.from_day),
        to: day_text(r.to_day),
        rows: r.rows.into_iter().map(row).collect(),
        total: sum(r.total),
        truncated: r.truncated,
    }
}

/// RFC 4180 CSV of the rows, with a header line.
fn to_csv(rows: &[SpendReportRow]) -> String {
    let mut out = String::from("key,label,payments,amount_msat,fee_msat\r\n");
    for r in rows {
        let label = r.label.as_deref().unwrap_or("");
        out.push_str(&format!("{},{},{},{},{}\r\n", cell(&r.key), cell(label), r.payments, r.amount_msat, r.fee_msat));
    }
    out
}

/// A text cell: quoted when it holds a comma, quote or line break; a
/// leading `=`, `+`, `-`, `@` (which a spreadsheet would run as a formula:
/// tasks and names are written by agents) is kept as text with a `'`.
fn cell(text: &str) -> String {
    let text = match text.chars().next() {
        Some('=' | '+' | '-' | '@') => format!("'{text}"),
        _ => text.to_owned(),
    };
    if text.contains([',', '"', '\r', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-5"), "'-5");
        let rows = [SpendReportRow { key: "t,1".into(), label: None, payments: 2, amount_msat: 3, fee_msat: 4 }];
        assert_eq!(to_csv(&rows), "key,label,payments,amount_msat,fee_msat\r\n\"t,1\",,2,3,4\r\n");
    }

    #[test]
    fn instants_and_dates_are_read_and_nonsense_refused() {
        assert_eq!(instant_ms("from", "1970-01-02").expect("a date"), 86_400_000);
        assert_eq!(instant_ms("from", "1970-01-01T00:00:01Z").expect("an instant"), 1_000);
        assert!(matches!(instant_ms("to", "yesterday"), Err(Error::InvalidField { field: "to", .. })));
    }
}
