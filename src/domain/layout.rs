//! Where the canvas draws things: a flow's blocks, laid out as a layered graph from top to
//! bottom (the entry on top, each connection pointing down where it can), and the map of an
//! agent's flows with the Transfer Flow arrows between them.
//!
//! The layered layout is `layout-rs`'s (rank assignment, crossing reduction, placement), not
//! ours; this module only says how big each box is and reads back where it went. Positions an
//! admin dragged are kept as they are: a flow is laid out whole only while none of its blocks
//! has one, and a block added later without one goes below the first block that leads to it.

use ::layout::core::base::Orientation;
use ::layout::core::format::{ClipHandle, RenderBackend};
use ::layout::core::geometry::Point;
use ::layout::core::style::StyleAttr;
use ::layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use ::layout::topo::layout::VisualGraph;

use super::document::{Action, AgentDocument, Block, FlowDoc};

/// A block's box: as wide as this, wider for a Filter with many outputs.
pub const NODE_WIDTH: f64 = 248.0;
pub const NODE_HEIGHT: f64 = 96.0;
/// The room an output's label takes along a Filter's bottom edge.
pub const PORT_WIDTH: f64 = 124.0;
/// A flow's box on the map of flows.
pub const MAP_WIDTH: f64 = 168.0;
pub const MAP_HEIGHT: f64 = 40.0;
/// The margin around a laid-out graph.
const MARGIN: f64 = 24.0;
/// How far below the block that leads to it a block without a position goes.
const BELOW: f64 = NODE_HEIGHT + 72.0;

/// A box on the canvas: its top-left corner and size.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub key: String,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Placed {
    pub fn bottom(&self) -> f64 {
        self.y + self.height
    }

    pub fn centre_x(&self) -> f64 {
        self.x + self.width / 2.0
    }
}

/// The size of a block's box.
pub fn size(block: &Block) -> (f64, f64) {
    let outputs = block.outputs().len() as f64;
    (NODE_WIDTH.max(outputs * PORT_WIDTH), NODE_HEIGHT)
}

/// Keeps the top-left corner of each box layout-rs draws, by the key it carries.
struct Boxes(Vec<(String, Point)>);

impl RenderBackend for Boxes {
    fn draw_rect(
        &mut self,
        xy: Point,
        _size: Point,
        _look: &StyleAttr,
        properties: Option<String>,
        _clip: Option<ClipHandle>,
    ) {
        if let Some(key) = properties {
            self.0.push((key, xy));
        }
    }
    fn draw_line(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}
    fn draw_circle(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}
    fn draw_text(&mut self, _: Point, _: &str, _: &StyleAttr) {}
    fn draw_arrow(
        &mut self,
        _: &[(Point, Point)],
        _: bool,
        _: (bool, bool),
        _: &StyleAttr,
        _: Option<String>,
        _: &str,
    ) {
    }
    fn create_clip(&mut self, _: Point, _: Point, _: usize) -> ClipHandle {
        0
    }
}

/// Lays out boxes of `sizes` joined by `edges` (indexes, from → to) in layers from top to
/// bottom; returns each box's top-left corner, the whole moved to start at the margin.
pub fn layered(sizes: &[(f64, f64)], edges: &[(usize, usize)]) -> Vec<(f64, f64)> {
    if sizes.is_empty() {
        return Vec::new();
    }
    let mut graph = VisualGraph::new(Orientation::TopToBottom);
    let handles: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, (w, h))| {
            graph.add_node(Element::create_with_properties(
                ShapeKind::new_box(""),
                StyleAttr::simple(),
                Orientation::TopToBottom,
                Point::new(*w, *h),
                i.to_string(),
            ))
        })
        .collect();
    for (from, to) in forward_edges(sizes.len(), edges) {
        graph.add_edge(Arrow::simple(""), handles[from], handles[to]);
    }
    // layout-rs checks each arrow it is given for a cycle, and its whole graph again between
    // passes, by enumerating paths: exponential in the number of branches that merge again
    // (a Filter whose cases meet further down). Its arrows are handed over acyclic and in
    // order instead (see `forward_edges`), so that each check stops at once, and the whole
    // graph checks are left off.
    graph.dag.set_validate(false);
    let mut boxes = Boxes(Vec::with_capacity(sizes.len()));
    graph.do_it(false, false, false, &mut boxes);
    let mut out = vec![(0.0, 0.0); sizes.len()];
    for (key, at) in boxes.0 {
        if let Ok(i) = key.parse::<usize>()
            && i < out.len()
        {
            out[i] = (at.x, at.y);
        }
    }
    let min_x = out.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let min_y = out.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    out.iter()
        .map(|(x, y)| ((x - min_x + MARGIN).round(), (y - min_y + MARGIN).round()))
        .collect()
}

/// `edges` without duplicates or loops, each pointing forward in a depth-first order from
/// box 0 (the entry) and then from the other boxes in turn: an arrow that leads back up
/// (a cycle) is turned around, as a layered layout draws it anyway. Sorted by where they
/// start in that order, so that when one is added nothing leaves its end yet.
fn forward_edges(n: usize, edges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(from, to) in edges {
        if from != to && from < n && to < n && !out[from].contains(&to) {
            out[from].push(to);
        }
    }
    // Reverse post-order of an iterative depth-first search.
    let mut seen = vec![false; n];
    let mut post = Vec::with_capacity(n);
    for root in 0..n {
        if seen[root] {
            continue;
        }
        seen[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some((node, next)) = stack.pop() {
            if let Some(&to) = out[node].get(next) {
                stack.push((node, next + 1));
                if !seen[to] {
                    seen[to] = true;
                    stack.push((to, 0));
                }
            } else {
                post.push(node);
            }
        }
    }
    let mut rank = vec![0; n];
    for (i, node) in post.iter().rev().enumerate() {
        rank[*node] = i;
    }
    let mut forward: Vec<(usize, usize)> = Vec::new();
    for (from, tos) in out.iter().enumerate() {
        for &to in tos {
            let edge = if rank[from] < rank[to] {
                (from, to)
            } else {
                (to, from)
            };
            if !forward.contains(&edge) {
                forward.push(edge);
            }
        }
    }
    forward.sort_by_key(|&(from, to)| (rank[from], rank[to]));
    forward
}

/// Where the canvas draws each block of `flow`, in the flow's order: the saved positions,
/// with the blocks that have none placed below what leads to them; or, when no block has
/// one (or `tidy` asks for it), the whole flow laid out afresh.
pub fn flow(flow: &FlowDoc, tidy: bool) -> Vec<Placed> {
    let sizes: Vec<(f64, f64)> = flow.blocks.iter().map(|b| size(&b.settings)).collect();
    let index = |key: &str| flow.blocks.iter().position(|b| b.key == key);
    let edges: Vec<(usize, usize)> = flow
        .blocks
        .iter()
        .enumerate()
        .flat_map(|(i, b)| {
            b.settings
                .outputs()
                .into_iter()
                .filter_map(move |(_, to)| to.map(|t| (i, t.clone())))
        })
        .filter_map(|(i, to)| index(&to).map(|j| (i, j)))
        .collect();
    let placed = |i: usize, (x, y): (f64, f64)| Placed {
        key: flow.blocks[i].key.clone(),
        x,
        y,
        width: sizes[i].0,
        height: sizes[i].1,
    };
    if tidy || flow.blocks.iter().all(|b| b.position.is_none()) {
        return layered(&sizes, &edges)
            .into_iter()
            .enumerate()
            .map(|(i, at)| placed(i, at))
            .collect();
    }
    let mut at: Vec<Option<(f64, f64)>> = flow
        .blocks
        .iter()
        .map(|b| b.position.map(|p| (p.x, p.y)))
        .collect();
    // In the flow's order, each block without a position goes below the first placed block
    // leading to it, beside what is already there; else below everything.
    for i in 0..flow.blocks.len() {
        if at[i].is_some() {
            continue;
        }
        let lowest = at.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
        let below = edges
            .iter()
            .filter(|(_, to)| *to == i)
            .find_map(|(from, _)| at[*from].map(|p| (p.0, p.1 + BELOW)))
            .unwrap_or((MARGIN, lowest + BELOW));
        let mut spot = below;
        while at
            .iter()
            .flatten()
            .any(|p| (p.0 - spot.0).abs() < NODE_WIDTH && (p.1 - spot.1).abs() < NODE_HEIGHT)
        {
            spot.0 += NODE_WIDTH + 32.0;
        }
        at[i] = Some(spot);
    }
    at.into_iter()
        .enumerate()
        .map(|(i, p)| placed(i, p.unwrap_or((MARGIN, MARGIN))))
        .collect()
}

/// What leads from flow to flow: Transfer Flow blocks, and the First Flow's pre-call
/// Filters (a call starts in another flow). (from, to) by key, each pair once.
pub fn flow_links(doc: &AgentDocument) -> Vec<(String, String)> {
    let mut links: Vec<(String, String)> = Vec::new();
    let mut add = |from: &str, to: &str| {
        if from != to && !links.iter().any(|(a, b)| a == from && b == to) {
            links.push((from.to_owned(), to.to_owned()));
        }
    };
    if let Some(first) = &doc.first_flow {
        for a in &doc.precall {
            if let Action::Filter { cases } = &a.settings {
                for to in cases.iter().filter_map(|c| c.to.as_deref()) {
                    if doc.flow(to).is_some() {
                        add(first, to);
                    }
                }
            }
        }
    }
    for f in &doc.flows {
        for b in &f.blocks {
            if let Block::TransferFlow { flow: Some(to) } = &b.settings
                && doc.flow(to).is_some()
            {
                add(&f.key, to);
            }
        }
    }
    links
}

/// The map of the agent's flows: a box per flow, laid out so that Transfer Flow arrows point
/// down from the First Flow.
pub fn map(doc: &AgentDocument) -> Vec<Placed> {
    let sizes = vec![(MAP_WIDTH, MAP_HEIGHT); doc.flows.len()];
    let index = |key: &str| doc.flows.iter().position(|f| f.key == key);
    let edges: Vec<(usize, usize)> = flow_links(doc)
        .iter()
        .filter_map(|(a, b)| Some((index(a)?, index(b)?)))
        .collect();
    layered(&sizes, &edges)
        .into_iter()
        .enumerate()
        .map(|(i, (x, y))| Placed {
            key: doc.flows[i].key.clone(),
            x,
            y,
            width: MAP_WIDTH,
            height: MAP_HEIGHT,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> AgentDocument {
        AgentDocument::from_json(
            &serde_json::from_str(include_str!("../../examples/lead-qualification.json")).unwrap(),
        )
        .unwrap()
    }

    fn overlap(a: &Placed, b: &Placed) -> bool {
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
    }

    #[test]
    fn a_flow_without_positions_is_laid_out_in_layers_from_its_entry_down() {
        let d = doc();
        let sales = d.flow("sales").unwrap();
        let placed = flow(sales, false);
        assert_eq!(placed.len(), sales.blocks.len());
        let at = |k: &str| placed.iter().find(|p| p.key == k).unwrap();
        // Every connection points down, and no two boxes overlap.
        for b in &sales.blocks {
            for (_, to) in b.settings.outputs() {
                let to = to.unwrap();
                assert!(at(to).y > at(&b.key).y, "{} → {to}", b.key);
            }
        }
        for (i, a) in placed.iter().enumerate() {
            for b in &placed[i + 1..] {
                assert!(!overlap(a, b), "{a:?} overlaps {b:?}");
            }
        }
        // The Filter's two branches sit side by side.
        assert_eq!(at("pitch_enterprise").y, at("pitch").y);
        assert!(at("qualify").width >= 2.0 * PORT_WIDTH);
    }

    #[test]
    fn saved_positions_are_kept_and_a_new_block_goes_below_what_leads_to_it() {
        let mut value = serde_json::to_value(doc().to_json()).unwrap();
        let blocks = value["flows"][0]["blocks"].as_array_mut().unwrap();
        for (i, b) in blocks.iter_mut().enumerate() {
            if b["key"] != "ask_reason" {
                b["position"] = json!({"x": 100 + i * 10, "y": 50 + i * 200});
            }
        }
        let d = AgentDocument::from_json(&value).unwrap();
        let main = d.flow("main").unwrap();
        let placed = flow(main, false);
        let at = |k: &str| placed.iter().find(|p| p.key == k).unwrap();
        assert_eq!((at("greeting").x, at("greeting").y), (100.0, 50.0));
        // ask_reason is the Filter's Else: right below the Filter, beside nothing.
        assert_eq!(at("ask_reason").y, at("route").y + BELOW);
        assert!(
            !overlap(at("ask_reason"), at("to_sales")) || at("to_sales").y != at("ask_reason").y
        );
        // Tidying lays everything out afresh.
        let tidy = flow(main, true);
        assert_ne!(tidy, placed);
    }

    #[test]
    fn the_map_links_flows_by_their_transfers_and_precall_routes() {
        let d = doc();
        assert_eq!(flow_links(&d), vec![("main".into(), "sales".into())]);
        let m = map(&d);
        assert!(m[1].y > m[0].y, "{m:?}");
    }

    #[test]
    fn cycles_and_a_single_block_lay_out_without_trouble() {
        let sizes = vec![(100.0, 50.0); 3];
        let at = layered(&sizes, &[(0, 1), (1, 2), (2, 1), (1, 1)]);
        assert_eq!(at.len(), 3);
        assert_eq!(layered(&[(10.0, 10.0)], &[]), vec![(MARGIN, MARGIN)]);
        assert!(layered(&[], &[]).is_empty());
    }
}

#[cfg(test)]
mod merging {
    /// Branches that meet again (a Filter whose cases join further down) made the layout's
    /// own cycle checks enumerate every path: 2^20 of them here.
    #[test]
    fn two_hundred_boxes_with_twenty_merging_branches_lay_out_downwards() {
        let n = 200;
        let sizes = vec![(248.0, 96.0); n];
        let mut edges: Vec<(usize, usize)> = (0..n - 1).map(|i| (i, i + 1)).collect();
        for i in (5..n - 2).step_by(10) {
            edges.push((i, i + 2));
        }
        let at = super::layered(&sizes, &edges);
        for &(from, to) in &edges {
            assert!(
                at[to].1 > at[from].1,
                "{from} → {to}: {:?} {:?}",
                at[from],
                at[to]
            );
        }
    }
}
