//! The session object of the contract, serialised from a [`Session`]: the `radacct`
//! column names, times as RFC 3339 UTC, absent values as `null`.

use serde::Serialize;

use super::params::rfc3339;
use crate::sessions::Session;

#[derive(Debug, Serialize)]
pub struct SessionView<'a> {
    pub radacctid: i64,
    pub username: &'a str,
    pub acctsessionid: &'a str,
    pub acctuniqueid: &'a str,
    pub nasipaddress: Option<String>,
    pub nas_id: Option<i64>,
    pub nasportid: Option<&'a str>,
    pub nasporttype: Option<&'a str>,
    pub framedipaddress: Option<String>,
    pub framedipv6prefix: Option<&'a str>,
    pub delegatedipv6prefix: Option<&'a str>,
    pub callingstationid: Option<&'a str>,
    pub calledstationid: Option<&'a str>,
    pub acctstarttime: String,
    pub acctstoptime: Option<String>,
    pub acctupdatetime: String,
    pub acctinputoctets: i64,
    pub acctoutputoctets: i64,
    pub acctsessiontime: i64,
    pub acctterminatecause: Option<&'a str>,
}

impl<'a> From<&'a Session> for SessionView<'a> {
    fn from(s: &'a Session) -> Self {
        let f = &s.fields;
        SessionView {
            radacctid: s.radacctid,
            username: &f.username,
            acctsessionid: &f.acctsessionid,
            acctuniqueid: &s.acctuniqueid,
            nasipaddress: f.nasipaddress.map(|ip| ip.to_string()),
            nas_id: s.nas_id,
            nasportid: f.nasportid.as_deref(),
            nasporttype: f.nasporttype.as_deref(),
            framedipaddress: f.framedipaddress.map(|ip| ip.to_string()),
            framedipv6prefix: f.framedipv6prefix.as_deref(),
            delegatedipv6prefix: f.delegatedipv6prefix.as_deref(),
            callingstationid: f.callingstationid.as_deref(),
            calledstationid: f.calledstationid.as_deref(),
            acctstarttime: rfc3339(s.start),
            acctstoptime: s.stop.map(rfc3339),
            acctupdatetime: rfc3339(s.update),
            acctinputoctets: s.input_octets,
            acctoutputoctets: s.output_octets,
            acctsessiontime: s.session_time,
            acctterminatecause: s.terminate_cause.as_deref(),
        }
    }
}

pub fn json(s: &Session) -> serde_json::Value {
    serde_json::to_value(SessionView::from(s)).unwrap_or(serde_json::Value::Null)
}
