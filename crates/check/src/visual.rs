//! The visual trace of a run: what a space-time diagram of it needs, and the one
//! self-contained HTML page that draws it.
//!
//! Text traces tell a reader what happened; a picture shows *why*: which message a vote
//! waited for, which partition kept a leader from committing, which old primary kept answering.
//! A [`VisualTrace`] holds one lane per node with its role and term (or view) as they change,
//! every message from its send to each delivery (or to the point where it was lost or cut), the
//! partitions as they come and go, and notable events. The simulator fills one in while a seed
//! runs (`chorus sim --html`); the nemesis fills one in from what it did to real processes
//! (`cargo xtask nemesis --html`), where no message is seen. With the run's history and
//! findings, [`render_html`] turns it into a page with no network access, no external script
//! and no font to fetch: the data is embedded as JSON, the drawing is `visual/page.js` on a
//! canvas.
//!
//! It lives here, beside the history and the checker, because simulated and real runs both
//! draw with it, and the tools that check real clusters do not depend on the simulator.

use serde::Serialize;

use crate::history::{OpKind, OpStatus, Operation, Output};

/// Detail kept of each message's content, in characters.
const DETAIL_CHARS_MAX: usize = 160;

/// Messages recorded at most; later ones are counted, not drawn (a page must stay small).
const MESSAGES_MAX: usize = 200_000;

/// What a lane shows at a moment: the node's role and its term or view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LaneState {
    /// The role ("leader", "follower", "candidate", "primary", "backup", …).
    pub role: &'static str,
    /// The term (Raft) or view number (primary-backup) the node is in.
    pub epoch: u64,
    /// The highest index known committed (or applied, for schemes without a commit index).
    pub commit: u64,
    /// The index of the node's latest snapshot, 0 if none.
    pub snapshot: u64,
}

/// A lane's state from a moment on; `None` while the node is down.
#[derive(Clone, Debug, Serialize)]
struct LaneSample {
    lane: usize,
    time: u64,
    state: Option<LaneState>,
}

/// One message: `[from, to, sent, deliveries, kind, fate, detail]`. An empty `deliveries`
/// means it never arrived; `fate` says why (`""` delivered, `"lost"`, `"cut"`, `"filtered"`).
type MessageRow = (usize, usize, u64, Vec<u64>, usize, &'static str, String);

/// The links cut from a moment on, as `[from, to]` lane pairs.
#[derive(Clone, Debug, Serialize)]
struct CutSample {
    time: u64,
    cut: Vec<(usize, usize)>,
}

/// One client operation: `[client, kind, key, value, from, call, return, status, output]`.
type OpRow = (
    u64,
    &'static str,
    String,
    Option<String>,
    Option<String>,
    u64,
    Option<u64>,
    &'static str,
    String,
);

/// What a run's picture shows, recorded as the run goes, for [`render_html`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct VisualTrace {
    /// The lanes' names, nodes first (then anything else the scheme runs).
    lanes: Vec<String>,
    /// What the scheme calls its epochs ("term", "view"; empty to show none).
    epoch_name: &'static str,
    /// The unit of the time axis ("" for simulated time, "ms" for a real run).
    time_unit: &'static str,
    states: Vec<LaneSample>,
    kinds: Vec<String>,
    messages: Vec<MessageRow>,
    messages_dropped_from_page: u64,
    cuts: Vec<CutSample>,
    notes: Vec<(u64, String)>,
    captions: Vec<(u64, String)>,
    /// The page shows the run up to this time only (see [`VisualTrace::keep_until`]).
    shown_until: Option<u64>,
    #[serde(skip)]
    last_states: Vec<Option<LaneState>>,
    #[serde(skip)]
    last_cut: Vec<(usize, usize)>,
}

impl VisualTrace {
    /// An empty trace with these lanes.
    #[must_use]
    pub fn new(lanes: Vec<String>, epoch_name: &'static str) -> VisualTrace {
        let count = lanes.len();
        VisualTrace {
            lanes,
            epoch_name,
            last_states: vec![None; count],
            ..VisualTrace::default()
        }
    }

    /// Notes lane `lane`'s state at `time`, if it changed.
    pub fn sample(&mut self, lane: usize, time: u64, state: Option<LaneState>) {
        if lane >= self.last_states.len() {
            return;
        }
        if self.last_states[lane] != state || (time == 0 && self.states.is_empty()) {
            self.last_states[lane] = state.clone();
            self.states.push(LaneSample { lane, time, state });
        }
    }

    /// Sets the unit of the time axis ("" for simulated time, "ms" for a real run).
    pub fn set_time_unit(&mut self, unit: &'static str) {
        self.time_unit = unit;
    }

    /// Whether the links cut, as `(from, to)` lane pairs, differ from the last ones noted.
    #[must_use]
    pub fn cut_changed(&self, cut: &[(usize, usize)]) -> bool {
        cut != self.last_cut.as_slice()
    }

    /// Notes the links cut at `time`, as `(from, to)` lane pairs, if they changed.
    pub fn sample_cut(&mut self, time: u64, cut: &[(usize, usize)]) {
        if self.cut_changed(cut) {
            self.last_cut = cut.to_vec();
            self.cuts.push(CutSample {
                time,
                cut: cut.to_vec(),
            });
        }
    }

    /// Notes a message sent at `time`, arriving at each of `deliveries` (absolute times).
    pub fn message(
        &mut self,
        (from, to): (usize, usize),
        time: u64,
        deliveries: Vec<u64>,
        fate: &'static str,
        (kind, detail): (String, String),
    ) {
        if self.messages.len() >= MESSAGES_MAX {
            self.messages_dropped_from_page += 1;
            return;
        }
        let kind = match self.kinds.iter().position(|k| *k == kind) {
            Some(index) => index,
            None => {
                self.kinds.push(kind);
                self.kinds.len() - 1
            }
        };
        let detail = shorten(&detail);
        self.messages
            .push((from, to, time, deliveries, kind, fate, detail));
    }

    /// Notes a line of the text trace.
    pub fn note(&mut self, time: u64, text: String) {
        self.notes.push((time, text));
    }

    /// Notes a caption: a step of a staged story, shown as a flag above the lanes.
    pub fn caption(&mut self, time: u64, text: String) {
        self.captions.push((time, text));
    }

    /// Keeps only what happened up to `time`: for a run that goes on long after its lesson
    /// (a stuck run waits out its whole liveness deadline), so that its page stays small. The
    /// page says how much of the run it shows.
    pub fn keep_until(&mut self, time: u64) {
        self.shown_until = Some(time);
        self.states.retain(|s| s.time <= time);
        self.messages.retain(|m| m.2 <= time);
        self.cuts.retain(|c| c.time <= time);
        self.notes.retain(|n| n.0 <= time);
        self.captions.retain(|c| c.0 <= time);
    }

    /// How many messages were recorded.
    #[must_use]
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// How many lanes (nodes, and whatever else the scheme runs) the trace has.
    #[must_use]
    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }
}

/// The kind of a message for the page's filter: the first word of its `Debug` text
/// (`AppendEntries(…)` → `AppendEntries`).
#[must_use]
pub fn debug_kind(debug: &str) -> String {
    debug
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Cuts `text` to [`DETAIL_CHARS_MAX`] characters, marking the cut.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(DETAIL_CHARS_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Everything one page draws.
#[derive(Serialize)]
struct Page<'a> {
    title: &'a str,
    end_time: u64,
    clients: u64,
    trace: &'a VisualTrace,
    ops: Vec<OpRow>,
    violations: Vec<(&'a str, u64, &'a str)>,
}

/// Something a checker found, for the page: which check, when, and what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The check (`S3`, `linearizability`, …).
    pub check: String,
    /// When it was seen, on the trace's clock.
    pub time: u64,
    /// What was seen. A finding that names `key K` marks every operation on K; the first
    /// finding's node names (`n3`) mark their lanes.
    pub detail: String,
}

fn op_row(op: &Operation) -> OpRow {
    let kind = match op.kind {
        OpKind::Get => "get",
        OpKind::Put => "put",
        OpKind::Append => "append",
        OpKind::Cas => "cas",
    };
    let status = match op.status {
        OpStatus::Ok => "ok",
        OpStatus::Fail => "fail",
        OpStatus::Unknown => "unknown",
    };
    let output = match &op.output {
        Output::None => String::new(),
        Output::Value(Some(value)) => format!("{value:?}"),
        Output::Value(None) => "nil".to_string(),
        Output::Swapped(swapped) => swapped.to_string(),
        Output::Length(length) => format!("length {length}"),
    };
    (
        op.client,
        kind,
        op.key.clone(),
        op.value.clone(),
        op.from.clone(),
        op.call,
        op.ret,
        status,
        output,
    )
}

/// The self-contained HTML page of a run: its visual trace, client history and findings.
/// `end_time` is the run's last time on the trace's clock, which the history shares.
#[must_use]
pub fn render_html(
    title: &str,
    trace: &VisualTrace,
    history: &[Operation],
    findings: &[Finding],
    end_time: u64,
) -> String {
    let clients = history.iter().map(|op| op.client + 1).max().unwrap_or(0);
    let page = Page {
        title,
        end_time,
        clients,
        trace,
        ops: history.iter().map(op_row).collect(),
        violations: findings
            .iter()
            .map(|f| (f.check.as_str(), f.time, f.detail.as_str()))
            .collect(),
    };
    // Serializing plain data to a string cannot fail; an empty object keeps the page valid.
    let data = serde_json::to_string(&page).unwrap_or_else(|_| "{}".to_string());
    // Inside a <script> element only "</" can end it early.
    let data = data.replace("</", "<\\/");
    let title = escape_html(title);
    PAGE_HTML
        .replace("__TITLE__", &title)
        .replace("/*__STYLE__*/", PAGE_CSS)
        .replace("/*__SCRIPT__*/", PAGE_JS)
        .replace("\"__DATA__\"", &data)
}

/// Escapes text for an HTML element's content.
fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PAGE_HTML: &str = include_str!("visual/page.html");
const PAGE_CSS: &str = include_str!("visual/page.css");
const PAGE_JS: &str = include_str!("visual/page.js");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_debug_text() {
        assert_eq!(
            debug_kind("AppendEntries(AppendEntries { term: 3 })"),
            "AppendEntries"
        );
        assert_eq!(debug_kind("Ping { view: 2 }"), "Ping");
    }

    #[test]
    fn details_are_shortened_on_a_character_boundary() {
        let long = "é".repeat(DETAIL_CHARS_MAX + 10);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), DETAIL_CHARS_MAX + 1);
        assert!(short.ends_with('…'));
    }

    #[test]
    fn the_page_embeds_its_data_without_closing_the_script_early() {
        let mut trace = VisualTrace::new(vec!["n1".into()], "term");
        trace.note(3, "</script><b>".into());
        let page = render_html("<t>", &trace, &[], &[], 10);
        assert!(page.contains("&lt;t&gt;"));
        assert!(!page.contains("</script><b>"));
        assert!(!page.contains("__DATA__"));
        assert_eq!(page.matches("</script>").count(), 2);
    }
}
