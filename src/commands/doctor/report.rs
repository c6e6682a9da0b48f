//! What `ferroturn doctor` found and how it is shown: an aligned table for a
//! person, or one JSON object (`checks` and `iceServers`) for a script.

use serde::Serialize;

/// The verdict of one check. Only `Fail` makes the exit status non-zero: a
/// `Warn` is something the operator should look at but that does not stop
/// clients, and a `Skip` is a check that could not be made from here (the
/// reason says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked, e.g. `binding udp`, `round trip tcp`.
    pub check: String,
    pub status: Status,
    /// What was seen, with the addresses and numbers involved.
    pub detail: String,
    /// What to do about it; absent on PASS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Round-trip time of relayed data, for the round-trip checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

impl Check {
    pub fn pass(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(check, Status::Pass, detail, None)
    }

    pub fn warn(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(check, Status::Warn, detail, Some(fix.into()))
    }

    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(check, Status::Fail, detail, Some(fix.into()))
    }

    pub fn skip(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(check, Status::Skip, detail, Some(fix.into()))
    }

    fn new(
        check: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Check {
            check: check.into(),
            status,
            detail: detail.into(),
            fix,
            rtt_ms: None,
        }
    }
}

/// A WebRTC `RTCIceServer` entry for the URLs that passed.
#[derive(Clone, Debug, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Everything doctor found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
}

impl Report {
    /// How many checks FAILed: the exit status is 0 only when none did.
    pub fn failed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count()
    }

    /// `STATUS  CHECK  DETAIL` in aligned columns, each fix on the line under
    /// its check, then a summary and the iceServers JSON.
    pub fn table(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.check.chars().count())
            .max()
            .unwrap_or(0)
            .max("CHECK".len());
        let mut out = format!("{:<6}  {:<width$}  DETAIL\n", "STATUS", "CHECK");
        for c in &self.checks {
            out.push_str(&format!(
                "{:<6}  {:<width$}  {}\n",
                c.status.label(),
                c.check,
                c.detail
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("{:<6}  {:<width$}  fix: {fix}\n", "", ""));
            }
        }
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "\n{} passed, {} warned, {} failed, {} skipped\n",
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip)
        ));
        if self.ice_servers.is_empty() {
            out.push_str("\nno iceServers entry: no STUN/TURN URL passed\n");
        } else {
            out.push_str("\niceServers for the app:\n");
            out.push_str(&serde_json::to_string_pretty(&self.ice_servers).unwrap_or_default());
            out.push('\n');
        }
        out
    }

    /// The whole report as one JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_counts() {
        let report = Report {
            checks: vec![
                Check::pass("binding udp", "ok"),
                Check::fail("tls certificate", "expired", "renew it"),
            ],
            ice_servers: Vec::new(),
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "STATUS  CHECK            DETAIL");
        assert_eq!(lines[1], "PASS    binding udp      ok");
        assert_eq!(lines[2], "FAIL    tls certificate  expired");
        assert_eq!(lines[3], "                         fix: renew it");
        assert!(table.contains("1 passed, 0 warned, 1 failed, 0 skipped"));
        assert_eq!(report.failed(), 1);
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["checks"][1]["status"], "FAIL");
        assert!(json["checks"][0].get("fix").is_none());
        assert!(json["iceServers"].as_array().unwrap().is_empty());
    }
}
