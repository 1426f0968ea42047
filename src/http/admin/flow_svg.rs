//! The flow as a picture, drawn on the server: what the editor shows without JavaScript
//! (and before its script starts). Blocks are boxes where `layout` put them, each a link to
//! its settings; connections are arrows from a block's outputs (a Filter's cases and Else,
//! named on the box) to the top of the block they lead to; the First Flow has its pre-call
//! actions in a lane above the Greeting. Unreachable and unfinished blocks are marked.

use std::collections::HashMap;
use std::fmt::Write;

use crate::domain::document::{Action, AgentDocument, Block, FlowDoc};
use crate::domain::flow;
use crate::domain::layout::{self, Placed};

/// Height of a box's coloured header.
const HEAD: f64 = 28.0;
/// The pre-call lane: its boxes and the room it takes above the flow.
const LANE_W: f64 = 208.0;
const LANE_H: f64 = 72.0;
const LANE_GAP: f64 = 40.0;
const LANE_ROOM: f64 = LANE_H + 88.0;

/// What the picture marks on a block.
#[derive(Default)]
pub struct Marks {
    /// Blocks no path from the entry reaches.
    pub unreachable: Vec<String>,
    /// Blocks with something left to finish, with what.
    pub unfinished: HashMap<String, Vec<String>>,
    /// Pre-call actions with something left to finish.
    pub unfinished_actions: Vec<String>,
}

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to `max` characters, with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A smooth arrow from an output at (x1, y1) down to a block's top at (x2, y2), or, when
/// the block is not below, around the right of both.
fn edge_path(from: (f64, f64), to: (f64, f64), right: f64) -> String {
    let (x1, y1) = from;
    let (x2, y2) = to;
    if y2 > y1 + 16.0 {
        let dy = ((y2 - y1) / 2.0).max(24.0);
        format!(
            "M{x1:.0},{y1:.0} C{x1:.0},{:.0} {x2:.0},{:.0} {x2:.0},{y2:.0}",
            y1 + dy,
            y2 - dy
        )
    } else {
        let side = right + 32.0;
        format!(
            "M{x1:.0},{y1:.0} L{x1:.0},{:.0} Q{x1:.0},{:.0} {:.0},{:.0} L{:.0},{:.0} Q{side:.0},{:.0} {side:.0},{:.0} L{side:.0},{:.0} Q{side:.0},{:.0} {:.0},{:.0} L{:.0},{:.0} Q{x2:.0},{:.0} {x2:.0},{:.0} L{x2:.0},{y2:.0}",
            y1 + 8.0,
            y1 + 20.0,
            x1 + 12.0,
            y1 + 20.0,
            side - 12.0,
            y1 + 20.0,
            y1 + 20.0,
            y1 + 8.0,
            y2 - 8.0,
            y2 - 20.0,
            side - 12.0,
            y2 - 20.0,
            x2 + 12.0,
            y2 - 20.0,
            y2 - 20.0,
            y2 - 8.0,
        )
    }
}

/// A small white drawing of a block's kind, for its header: (filled or drawn, path).
fn icon(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "greeting" => ("fill", "M2,1 L11,6 L2,11 Z"),
        "start" => ("fill", "M2,1 L11,6 L2,11 Z"),
        "collect" => ("line", "M1,3 h10 v6 h-10 z M3.5,6 h5"),
        "filter" => ("line", "M1,1 h10 l-4,5 v5 l-2,-1 v-4 z"),
        "transfer_call" => ("line", "M1,6 h8 M6,3 l3,3 -3,3 M11,1 v10"),
        "transfer_flow" => (
            "line",
            "M1,3.5 h9 M7.5,1 l2.5,2.5 -2.5,2.5 M11,8.5 h-9 M4.5,6 l-2.5,2.5 2.5,2.5",
        ),
        "end_call" => ("fill", "M2,2 h8 v8 h-8 z"),
        "webhook" => ("line", "M6,1 v6 M3,4.5 l3,3 3,-3 M1,9 v2 h10 v-2"),
        _ => ("line", "M1,2 h10 v6 h-5 l-3,3 v-3 h-2 z"),
    }
}

/// The one line a pre-call action's box says.
fn action_line(doc: &AgentDocument, a: &Action) -> (String, &'static str, &'static str) {
    let flow_name = |k: &str| doc.flow(k).map_or(k.to_owned(), |f| f.name.clone());
    match a {
        Action::Webhook {
            wait_ms, enabled, ..
        } => (
            if *enabled {
                let secs = *wait_ms as f64 / 1000.0;
                if wait_ms % 1000 == 0 {
                    format!("Waits up to {secs:.0} s for its data")
                } else {
                    format!("Waits up to {secs:.1} s for its data")
                }
            } else {
                "Disabled".into()
            },
            "Webhook",
            "webhook",
        ),
        Action::Filter { cases } => {
            let routes: Vec<String> = cases
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    format!(
                        "{} → {}",
                        c.label(i),
                        c.to.as_deref().map_or("?".into(), flow_name)
                    )
                })
                .collect();
            (
                if routes.is_empty() {
                    "No routes yet".into()
                } else {
                    routes.join("; ")
                },
                "Filter",
                "filter",
            )
        }
        Action::EndCall {
            conditions,
            outcome,
            ..
        } => (
            format!(
                "{} condition{} · {outcome}",
                conditions.len(),
                if conditions.len() == 1 { "" } else { "s" }
            ),
            "End Call",
            "end_call",
        ),
    }
}

/// The SVG of `f` (with the pre-call lane when it is the First Flow), each block a link to
/// `?block=<key>#settings`, the `selected` block highlighted.
pub fn flow_svg(doc: &AgentDocument, f: &FlowDoc, selected: Option<&str>, marks: &Marks) -> String {
    let is_first = doc.first_flow.as_deref() == Some(f.key.as_str());
    let lane = is_first && !doc.precall.is_empty();
    let placed = layout::flow(f, false);
    let top = if lane { LANE_ROOM } else { 0.0 };
    let at: HashMap<&str, &Placed> = placed.iter().map(|p| (p.key.as_str(), p)).collect();
    let right = placed.iter().map(|p| p.x + p.width).fold(0.0, f64::max);
    let lane_right = 24.0 + doc.precall.len() as f64 * (LANE_W + LANE_GAP);
    let width = (right + 72.0).max(if lane { lane_right } else { 0.0 });
    let height = placed.iter().map(Placed::bottom).fold(0.0, f64::max) + top + 48.0;
    let flow_name = |k: &str| doc.flow(k).map(|x| x.name.clone());
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="flow-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="group" aria-label="{} drawn as a graph">"##,
        esc(&f.name)
    );
    s.push_str(
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>"##,
    );
    // The pre-call lane: the actions in order, then down to the Greeting.
    if lane {
        let _ = write!(
            s,
            r##"<text class="lane-title" x="24" y="16">Before the call is answered</text>"##
        );
        let mut x = 24.0;
        let y = 28.0;
        for (i, a) in doc.precall.iter().enumerate() {
            let (line, label, kind) = action_line(doc, &a.settings);
            let unfinished = marks.unfinished_actions.contains(&a.key);
            let href = match a.settings {
                Action::Webhook { .. } => format!("../actions/{}/configure", esc(&a.key)),
                _ => format!("../rules/{}", esc(&a.key)),
            };
            let _ = write!(
                s,
                r##"<a href="{href}" class="node action kind-{kind}{}"><title>{label}: {} — {}</title><rect x="{x:.0}" y="{y:.0}" width="{LANE_W:.0}" height="{LANE_H:.0}" rx="10" class="box"/><rect x="{x:.0}" y="{y:.0}" width="6" height="{LANE_H:.0}" rx="3" class="stripe"/><path d="{}" class="icon {}" transform="translate({:.0},{:.0})"/><text x="{:.0}" y="{:.0}" class="kind">{label}</text><text x="{:.0}" y="{:.0}" class="name" dir="auto">{}</text><text x="{:.0}" y="{:.0}" class="line" dir="auto">{}</text>{}</a>"##,
                if unfinished { " unfinished" } else { "" },
                esc(&a.name),
                esc(&line),
                icon(kind).1,
                icon(kind).0,
                x + 16.0,
                y + 9.0,
                x + 34.0,
                y + 20.0,
                x + 16.0,
                y + 40.0,
                esc(&clip(&a.name, 24)),
                x + 16.0,
                y + 60.0,
                esc(&clip(&line, 30)),
                if unfinished {
                    format!(
                        r##"<circle cx="{:.0}" cy="{:.0}" r="9" class="mark"/><text x="{:.0}" y="{:.0}" class="mark-text">!</text>"##,
                        x + LANE_W - 16.0,
                        y + 16.0,
                        x + LANE_W - 16.0,
                        y + 20.0
                    )
                } else {
                    String::new()
                }
            );
            if i + 1 < doc.precall.len() {
                let _ = write!(
                    s,
                    r##"<path d="M{:.0},{:.0} L{:.0},{:.0}" class="edge" marker-end="url(#arrow)"/>"##,
                    x + LANE_W,
                    y + LANE_H / 2.0,
                    x + LANE_W + LANE_GAP - 2.0,
                    y + LANE_H / 2.0
                );
            }
            x += LANE_W + LANE_GAP;
        }
        if let Some(entry) = f.blocks.iter().find(|b| b.settings.is_entry())
            && let Some(p) = at.get(entry.key.as_str())
        {
            let from = (24.0 + LANE_W / 2.0, y + LANE_H);
            let to = (p.centre_x(), p.y + top);
            let _ = write!(
                s,
                r##"<path d="{}" class="edge lane-edge" marker-end="url(#arrow)"><title>then the call is answered</title></path>"##,
                edge_path(from, to, right),
            );
        }
    }
    // Connections under the boxes.
    for b in &f.blocks {
        let Some(p) = at.get(b.key.as_str()) else {
            continue;
        };
        let outputs = b.settings.outputs();
        let n = outputs.len().max(1) as f64;
        for (i, (label, to)) in outputs.iter().enumerate() {
            let px = p.x + (i as f64 + 0.5) * p.width / n;
            let py = p.bottom() + top;
            let Some(t) = to.and_then(|t| at.get(t.as_str())) else {
                // An output not connected yet: a short stub with an open end.
                let _ = write!(
                    s,
                    r##"<path d="M{px:.0},{py:.0} L{px:.0},{:.0}" class="edge open"><title>{} is not connected</title></path><circle cx="{px:.0}" cy="{:.0}" r="5" class="open-end"/>"##,
                    py + 22.0,
                    esc(label),
                    py + 27.0
                );
                continue;
            };
            let _ = write!(
                s,
                r##"<path d="{}" class="edge" marker-end="url(#arrow)"><title>{} → {}</title></path>"##,
                edge_path((px, py), (t.centre_x(), t.y + top), right),
                esc(label),
                esc(&t.key)
            );
        }
    }
    // The blocks.
    for (i, b) in f.blocks.iter().enumerate() {
        let Some(p) = at.get(b.key.as_str()) else {
            continue;
        };
        let (x, y, w, h) = (p.x, p.y + top, p.width, p.height);
        let kind = b.settings.kind();
        let label = flow::label(kind);
        let summary = flow::summary(&b.settings, flow_name);
        let problems = marks.unfinished.get(&b.key);
        let unreachable = marks.unreachable.contains(&b.key);
        let mut class = format!("node kind-{kind}");
        if Some(b.key.as_str()) == selected {
            class.push_str(" selected");
        }
        if unreachable {
            class.push_str(" unreachable");
        }
        if problems.is_some() {
            class.push_str(" unfinished");
        }
        let tip = match problems {
            Some(p) => format!("{label} #{}: {}", i + 1, p.join("; ")),
            None => format!("{label} #{}: {summary}", i + 1),
        };
        let _ = write!(
            s,
            r##"<a href="?block={key}#settings" class="{class}" id="node-{key}" data-key="{key}"{current}><title>{}</title><rect x="{x:.0}" y="{y:.0}" width="{w:.0}" height="{h:.0}" rx="10" class="box"/><path d="M{x:.0},{:.0} a10,10 0 0 1 10,-10 h{:.0} a10,10 0 0 1 10,10 v{:.0} h{:.0} z" class="head"/><path d="{}" class="icon {}" transform="translate({:.0},{:.0})"/><text x="{:.0}" y="{:.0}" class="kind">{}</text><text x="{:.0}" y="{:.0}" class="num">#{}</text><text x="{:.0}" y="{:.0}" class="name">{}</text>"##,
            esc(&tip),
            y + 10.0,
            w - 20.0,
            HEAD - 10.0,
            -w,
            icon(kind).1,
            icon(kind).0,
            x + 12.0,
            y + 8.0,
            x + 32.0,
            y + 19.0,
            esc(label),
            x + w - 14.0,
            y + 19.0,
            i + 1,
            x + 14.0,
            y + 50.0,
            esc(&clip(&b.key, 30)),
            key = esc(&b.key),
            current = if Some(b.key.as_str()) == selected {
                r#" aria-current="true""#
            } else {
                ""
            },
        );
        if let Block::Filter { .. } = &b.settings {
            // The outputs, named along the bottom edge above where their arrows leave.
            let outputs = b.settings.outputs();
            let n = outputs.len() as f64;
            let slot = w / n;
            for (j, (label, _)) in outputs.iter().enumerate() {
                let cx = x + (j as f64 + 0.5) * slot;
                let chars = ((slot - 16.0) / 7.0).max(4.0) as usize;
                let _ = write!(
                    s,
                    r##"<text x="{cx:.0}" y="{:.0}" class="port-label{}" dir="auto">{}</text>"##,
                    y + h - 12.0,
                    if j + 1 == outputs.len() { " else" } else { "" },
                    esc(&clip(label, chars))
                );
            }
        } else {
            let _ = write!(
                s,
                r##"<text x="{:.0}" y="{:.0}" class="line" dir="auto">{}</text>"##,
                x + 14.0,
                y + 74.0,
                esc(&clip(&summary, 32))
            );
        }
        if problems.is_some() || unreachable {
            let _ = write!(
                s,
                r##"<circle cx="{:.0}" cy="{y:.0}" r="10" class="mark"/><text x="{:.0}" y="{:.0}" class="mark-text">!</text>"##,
                x + w - 6.0,
                x + w - 6.0,
                y + 4.0
            );
        }
        s.push_str("</a>");
    }
    s.push_str("</svg>");
    s
}

/// The small map of the agent's flows: a box per flow (the current one highlighted, each a
/// link to its canvas) and the Transfer Flow arrows between them.
pub fn map_svg(doc: &AgentDocument, current: &str) -> String {
    let placed = layout::map(doc);
    let at: HashMap<&str, &Placed> = placed.iter().map(|p| (p.key.as_str(), p)).collect();
    let width = placed.iter().map(|p| p.x + p.width).fold(0.0, f64::max) + 24.0;
    let height = placed.iter().map(Placed::bottom).fold(0.0, f64::max) + 24.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="flow-map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="group" aria-label="Map of the agent's flows"><defs><marker id="map-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>"##
    );
    for (from, to) in layout::flow_links(doc) {
        let (Some(a), Some(b)) = (at.get(from.as_str()), at.get(to.as_str())) else {
            continue;
        };
        let _ = write!(
            s,
            r##"<path d="{}" class="edge" marker-end="url(#map-arrow)"/>"##,
            edge_path(
                (a.centre_x(), a.bottom()),
                (b.centre_x(), b.y),
                a.x.max(b.x) + a.width
            )
        );
    }
    for (p, f) in placed.iter().zip(&doc.flows) {
        let first = doc.first_flow.as_deref() == Some(f.key.as_str());
        let _ = write!(
            s,
            r##"<a href="{}" class="map-node{}{}"><title>{}</title><rect x="{:.0}" y="{:.0}" width="{:.0}" height="{:.0}" rx="8"/><text x="{:.0}" y="{:.0}" dir="auto">{}{}</text></a>"##,
            esc(&f.key),
            if f.key == current { " current" } else { "" },
            if first { " first" } else { "" },
            esc(&f.name),
            p.x,
            p.y,
            p.width,
            p.height,
            p.centre_x(),
            p.y + 25.0,
            if first { "▶ " } else { "" },
            esc(&clip(&f.name, 20))
        );
    }
    s.push_str("</svg>");
    s
}
