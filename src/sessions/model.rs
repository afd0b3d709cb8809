//! The session domain: what one accounting packet says ([`Record`]) and what one
//! `radacct` row holds ([`Session`]). Times are UTC Unix seconds, the precision of
//! `radacct` and of RADIUS itself.

use std::net::IpAddr;

use super::key::SessionKey;

/// UTC seconds since the Unix epoch.
pub type Timestamp = i64;

/// Acct-Status-Type values the server records (RFC 2866 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusType {
    Start,
    Stop,
    InterimUpdate,
    AccountingOn,
    AccountingOff,
    /// Not from the wire: the NAS confirmed a disconnect made through the API, and the
    /// server writes the stop itself (cause Admin-Reset) for the row in `Record::target`.
    AdminReset,
    /// Not from the wire: the stale-session sweeper closes `Record::target` as
    /// NAS-Idle-Timeout if it has still not been updated since `event_time`.
    IdleTimeout,
}

impl StatusType {
    pub fn from_value(v: u32) -> Option<Self> {
        use crate::radius::attr::status;
        Some(match v {
            status::START => StatusType::Start,
            status::STOP => StatusType::Stop,
            status::INTERIM_UPDATE => StatusType::InterimUpdate,
            status::ACCOUNTING_ON => StatusType::AccountingOn,
            status::ACCOUNTING_OFF => StatusType::AccountingOff,
            _ => return None,
        })
    }

    /// The dictionary name, used in event history and as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            StatusType::Start => "Start",
            StatusType::Stop => "Stop",
            StatusType::InterimUpdate => "Interim-Update",
            StatusType::AccountingOn => "Accounting-On",
            StatusType::AccountingOff => "Accounting-Off",
            StatusType::AdminReset => "Admin-Reset",
            StatusType::IdleTimeout => "NAS-Idle-Timeout",
        }
    }
}

/// Descriptive attributes of a session, stored in the `radacct` columns of the same name.
/// `None` is an attribute the NAS did not send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub username: Box<str>,
    pub acctsessionid: Box<str>,
    pub realm: Option<Box<str>>,
    pub nasipaddress: Option<IpAddr>,
    pub nasportid: Option<Box<str>>,
    pub nasporttype: Option<Box<str>>,
    pub acctauthentic: Option<Box<str>>,
    pub connectinfo_start: Option<Box<str>>,
    pub calledstationid: Option<Box<str>>,
    pub callingstationid: Option<Box<str>>,
    pub servicetype: Option<Box<str>>,
    pub framedprotocol: Option<Box<str>>,
    pub framedipaddress: Option<IpAddr>,
    pub framedipv6address: Option<Box<str>>,
    pub framedipv6prefix: Option<Box<str>>,
    pub framedinterfaceid: Option<Box<str>>,
    pub delegatedipv6prefix: Option<Box<str>>,
    pub class: Option<Box<str>>,
}

impl Fields {
    /// Fill attributes this row lacks from a later packet of the same session. Values the
    /// row already has are kept: the Start is the authoritative description, and a later
    /// packet only completes it (an Interim is often the first to carry the address).
    /// Returns whether any attribute was filled.
    pub fn fill_missing_from(&mut self, other: &Fields) -> bool {
        let mut filled = false;
        let mut fill = |mine: &mut Option<Box<str>>, theirs: &Option<Box<str>>| {
            if mine.is_none() && theirs.is_some() {
                mine.clone_from(theirs);
                filled = true;
            }
        };
        fill(&mut self.realm, &other.realm);
        fill(&mut self.nasportid, &other.nasportid);
        fill(&mut self.nasporttype, &other.nasporttype);
        fill(&mut self.acctauthentic, &other.acctauthentic);
        fill(&mut self.connectinfo_start, &other.connectinfo_start);
        fill(&mut self.calledstationid, &other.calledstationid);
        fill(&mut self.callingstationid, &other.callingstationid);
        fill(&mut self.servicetype, &other.servicetype);
        fill(&mut self.framedprotocol, &other.framedprotocol);
        fill(&mut self.framedipv6address, &other.framedipv6address);
        fill(&mut self.framedipv6prefix, &other.framedipv6prefix);
        fill(&mut self.framedinterfaceid, &other.framedinterfaceid);
        fill(&mut self.delegatedipv6prefix, &other.delegatedipv6prefix);
        fill(&mut self.class, &other.class);
        for (mine, theirs) in [
            (&mut self.nasipaddress, other.nasipaddress),
            (&mut self.framedipaddress, other.framedipaddress),
        ] {
            if mine.is_none() && theirs.is_some() {
                *mine = theirs;
                filled = true;
            }
        }
        filled
    }
}

/// One verified Accounting-Request, normalised by ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub status: StatusType,
    /// `nas.id` of the client the packet came from.
    pub nas_id: Option<i64>,
    /// NAS-IPv6-Address, else NAS-IP-Address, else the packet's source address: the value
    /// FreeRADIUS writes to `nasipaddress` and uses in the session key.
    pub nas_ip: IpAddr,
    pub key: SessionKey,
    /// When the event happened, after Event-Timestamp / Acct-Delay-Time reconciliation.
    pub event_time: Timestamp,
    /// Whether `event_time` is the NAS's own Event-Timestamp (accepted within the skew),
    /// rather than arrival time minus Acct-Delay-Time: a retransmission keeps the former,
    /// while the latter moves with every retransmission.
    pub timestamped: bool,
    pub session_time: Option<i64>,
    pub input_octets: Option<i64>,
    pub output_octets: Option<i64>,
    pub terminate_cause: Option<Box<str>>,
    pub connectinfo: Option<Box<str>>,
    pub fields: Fields,
    /// The row an `AdminReset` closes; `None` for packets from a NAS.
    pub target: Option<i64>,
}

impl Record {
    /// The server's own stop for a confirmed disconnect of `session`, at `at`.
    pub fn admin_reset(session: &Session, at: Timestamp) -> Record {
        Self::server_close(session, StatusType::AdminReset, at)
    }

    /// The sweeper's close of `session` if it was not updated since `cutoff`.
    pub fn idle_timeout(session: &Session, cutoff: Timestamp) -> Record {
        Self::server_close(session, StatusType::IdleTimeout, cutoff)
    }

    fn server_close(session: &Session, status: StatusType, at: Timestamp) -> Record {
        Record {
            status,
            nas_id: session.nas_id,
            nas_ip: session
                .fields
                .nasipaddress
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            key: session.key,
            event_time: at,
            timestamped: false,
            session_time: None,
            input_octets: None,
            output_octets: None,
            terminate_cause: None,
            connectinfo: None,
            fields: session.fields.clone(),
            target: Some(session.radacctid),
        }
    }

    /// The start time this packet implies: event time minus Acct-Session-Time.
    pub fn implied_start(&self) -> Timestamp {
        self.event_time - self.session_time.unwrap_or(0)
    }
}

/// Who closed a row. A row the server closed (disconnect, sweeper, Lost-Service,
/// Accounting-On) is still completed by the NAS's own Stop when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSource {
    Nas,
    Server,
}

impl StopSource {
    pub fn as_str(self) -> &'static str {
        match self {
            StopSource::Nas => "nas",
            StopSource::Server => "server",
        }
    }

    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("server") => StopSource::Server,
            _ => StopSource::Nas,
        }
    }
}

/// One `radacct` row as the engine and the index hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// 0 until the row has been inserted.
    pub radacctid: i64,
    pub acctuniqueid: Box<str>,
    pub key: SessionKey,
    pub nas_id: Option<i64>,
    pub fields: Fields,
    pub start: Timestamp,
    pub update: Timestamp,
    pub stop: Option<Timestamp>,
    pub interval: Option<i64>,
    pub session_time: i64,
    pub input_octets: i64,
    pub output_octets: i64,
    pub terminate_cause: Option<Box<str>>,
    pub connectinfo_stop: Option<Box<str>>,
    pub stop_source: Option<StopSource>,
}

impl Session {
    pub fn is_open(&self) -> bool {
        self.stop.is_none()
    }
}

/// One entry of a session's history (`radacct_events`): the values a packet carried, or
/// the close the server made.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub time: Timestamp,
    pub session_time: i64,
    pub input_octets: i64,
    pub output_octets: i64,
    pub source: StopSource,
}
