//! An agent's whole behaviour as one JSON document: its flows (blocks with their settings,
//! connections and canvas positions; which flow is the First Flow), its pre-call actions in
//! order, and its variable schema. Never a secret: a Webhook action's URL, keys and signing
//! secret belong to the server, not to the document.
//!
//! Everything in the document is referred to by a stable key (a flow's `key`, a block's
//! `key` within its flow, an action's `key`), so a document exported from one agent or
//! server imports into another unchanged. [`AgentDocument::from_json`] reads a document
//! and reports every problem of its shape at once, as JSON pointers; [`check`] lists what
//! would stop it from being published; [`changes`] says in words what one version changes
//! against another.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::conditions::Op;
use super::payload::Problem;
use super::runtime::{self, At, Known, Program};
use super::variables::{SYSTEM_VARIABLES, VarType, VariableDef, VariableName};

/// What every document says it is, so that a later format can be told apart.
pub const FORMAT: &str = "precall-agent/1";

/// The longest key, name and text a document holds.
pub const MAX_KEY: usize = 64;
pub const MAX_NAME: usize = 100;
pub const MAX_TEXT: usize = 2000;
/// The most flows, blocks per flow, pre-call actions, variables, cases and conditions.
pub const MAX_FLOWS: usize = 100;
pub const MAX_BLOCKS: usize = 500;
pub const MAX_ACTIONS: usize = 50;
pub const MAX_VARIABLES: usize = 500;
pub const MAX_CASES: usize = 50;
pub const MAX_CONDITIONS: usize = 50;
/// A Webhook action's time wait before fallback and data TTL, as the brief sets them.
pub const MAX_WAIT_MS: i64 = 10_000;
pub const DEFAULT_WAIT_MS: i64 = 2_000;
pub const MAX_TTL_SECS: i64 = 604_800;
pub const DEFAULT_TTL_SECS: i64 = 600;

/// An agent's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDocument {
    /// The flow calls start in, after the pre-call actions.
    pub first_flow: Option<String>,
    pub flows: Vec<FlowDoc>,
    /// Run in this order before the First Flow's Greeting.
    pub precall: Vec<ActionDoc>,
    pub variables: Vec<VariableDoc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowDoc {
    pub key: String,
    pub name: String,
    /// In the editor's order: `#1` first. The entry (Greeting or Start) is one of them.
    pub blocks: Vec<BlockDoc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockDoc {
    pub key: String,
    /// Where the canvas draws it; none until an admin places it.
    pub position: Option<Position>,
    pub settings: Block,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub x: f64,
    pub y: f64,
}

/// A block's kind and settings. Connections name blocks of the same flow by key;
/// Transfer Flow names a flow.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Greeting {
        message: String,
        next: Option<String>,
    },
    Start {
        message: String,
        next: Option<String>,
    },
    Talk {
        message: String,
        next: Option<String>,
    },
    Collect {
        variable: String,
        prompt: String,
        next: Option<String>,
    },
    Filter {
        cases: Vec<Case>,
        otherwise: Option<String>,
    },
    TransferCall {
        destination: String,
        department: String,
        message: String,
    },
    TransferFlow {
        flow: Option<String>,
    },
    EndCall {
        message: String,
        outcome: String,
    },
}

/// One case of a Filter: conditions joined by AND or OR, and where it leads (a block of
/// the same flow for a Filter block, a flow for a pre-call Filter).
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub any: bool,
    pub conditions: Vec<Condition>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub variable: String,
    pub op: Op,
    /// None for `exists` and `not_exists`.
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionDoc {
    pub key: String,
    pub name: String,
    pub settings: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Waits for what a sender posts about the caller.
    Webhook {
        wait_ms: i64,
        ttl_secs: i64,
        enabled: bool,
    },
    /// Routes the call to a flow when a case holds.
    Filter { cases: Vec<Case> },
    /// Refuses the call when its conditions hold.
    EndCall {
        any: bool,
        conditions: Vec<Condition>,
        message: String,
        outcome: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariableDoc {
    pub name: String,
    pub ty: VarType,
    /// `Value::Null` when none.
    pub default: Value,
    pub description: String,
    pub source: Option<Source>,
}

/// What fills a variable, for the editor's information.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A pre-call action (a Webhook's field).
    Action(String),
    /// A Collect block.
    Block { flow: String, block: String },
}

impl Block {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Greeting { .. } => "greeting",
            Self::Start { .. } => "start",
            Self::Talk { .. } => "talk",
            Self::Collect { .. } => "collect",
            Self::Filter { .. } => "filter",
            Self::TransferCall { .. } => "transfer_call",
            Self::TransferFlow { .. } => "transfer_flow",
            Self::EndCall { .. } => "end_call",
        }
    }

    pub fn is_entry(&self) -> bool {
        matches!(self, Self::Greeting { .. } | Self::Start { .. })
    }

    /// A new block of `kind` with empty settings, or none for an unknown kind.
    pub fn empty(kind: &str) -> Option<Self> {
        Some(match kind {
            "greeting" => Self::Greeting {
                message: String::new(),
                next: None,
            },
            "start" => Self::Start {
                message: String::new(),
                next: None,
            },
            "talk" => Self::Talk {
                message: String::new(),
                next: None,
            },
            "collect" => Self::Collect {
                variable: String::new(),
                prompt: String::new(),
                next: None,
            },
            "filter" => Self::Filter {
                cases: Vec::new(),
                otherwise: None,
            },
            "transfer_call" => Self::TransferCall {
                destination: String::new(),
                department: String::new(),
                message: String::new(),
            },
            "transfer_flow" => Self::TransferFlow { flow: None },
            "end_call" => Self::EndCall {
                message: String::new(),
                outcome: "completed".into(),
            },
            _ => return None,
        })
    }

    /// The blocks this one leads to: (output label, target key or none), in order.
    pub fn outputs(&self) -> Vec<(String, Option<&String>)> {
        match self {
            Self::Greeting { next, .. }
            | Self::Start { next, .. }
            | Self::Talk { next, .. }
            | Self::Collect { next, .. } => vec![("Next".into(), next.as_ref())],
            Self::Filter { cases, otherwise } => cases
                .iter()
                .enumerate()
                .map(|(i, c)| (c.label(i), c.to.as_ref()))
                .chain([("Else".to_owned(), otherwise.as_ref())])
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every connection slot, to rewrite: used when a block is deleted or renamed.
    pub fn targets_mut(&mut self) -> Vec<&mut Option<String>> {
        match self {
            Self::Greeting { next, .. }
            | Self::Start { next, .. }
            | Self::Talk { next, .. }
            | Self::Collect { next, .. } => vec![next],
            Self::Filter { cases, otherwise } => cases
                .iter_mut()
                .map(|c| &mut c.to)
                .chain([otherwise])
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The block as the interpreter reads it: its kind and settings as JSON.
    fn runtime_config(&self) -> Value {
        match self {
            Self::Greeting { message, next }
            | Self::Start { message, next }
            | Self::Talk { message, next } => json!({ "message": message, "next": next }),
            Self::Collect {
                variable,
                prompt,
                next,
            } => json!({ "variable": variable, "prompt": prompt, "next": next }),
            Self::Filter { cases, otherwise } => json!({
                "cases": cases.iter().map(|c| c.runtime_config("next")).collect::<Vec<_>>(),
                "else": otherwise,
            }),
            Self::TransferCall {
                destination,
                department,
                message,
            } => {
                json!({ "destination": destination, "department": department, "message": message })
            }
            Self::TransferFlow { flow } => json!({ "flow": flow }),
            Self::EndCall { message, outcome } => json!({ "message": message, "outcome": outcome }),
        }
    }
}

impl Case {
    /// `Case 2` when it has no name.
    pub fn label(&self, i: usize) -> String {
        if self.name.trim().is_empty() {
            format!("Case {}", i + 1)
        } else {
            self.name.clone()
        }
    }

    fn runtime_config(&self, target: &str) -> Value {
        let mut c = json!({
            "name": self.name,
            "join": if self.any { "or" } else { "and" },
            "conditions": conditions_json(&self.conditions),
        });
        c[target] = json!(self.to);
        c
    }
}

fn conditions_json(conditions: &[Condition]) -> Vec<Value> {
    conditions.iter().map(Condition::to_json).collect()
}

impl Condition {
    pub fn to_json(&self) -> Value {
        let mut c = json!({ "variable": self.variable, "op": op_name(self.op) });
        if let Some(v) = &self.value {
            c["value"] = v.clone();
        }
        c
    }
}

/// An operator's name in documents (`greater_than`).
pub fn op_name(op: Op) -> &'static str {
    match op {
        Op::Exists => "exists",
        Op::NotExists => "not_exists",
        Op::Equals => "equals",
        Op::NotEquals => "not_equals",
        Op::GreaterThan => "greater_than",
        Op::LessThan => "less_than",
        Op::Contains => "contains",
    }
}

impl AgentDocument {
    /// What a new agent starts with: a First Flow that greets callers.
    pub fn new_agent() -> Self {
        Self {
            first_flow: Some("main".into()),
            flows: vec![FlowDoc {
                key: "main".into(),
                name: "Main".into(),
                blocks: vec![BlockDoc {
                    key: "greeting".into(),
                    position: None,
                    settings: Block::Greeting {
                        message: "Hello! Thanks for calling. How can I help you today?".into(),
                        next: None,
                    },
                }],
            }],
            precall: Vec::new(),
            variables: Vec::new(),
        }
    }

    pub fn flow(&self, key: &str) -> Option<&FlowDoc> {
        self.flows.iter().find(|f| f.key == key)
    }

    pub fn flow_mut(&mut self, key: &str) -> Option<&mut FlowDoc> {
        self.flows.iter_mut().find(|f| f.key == key)
    }

    pub fn action(&self, key: &str) -> Option<&ActionDoc> {
        self.precall.iter().find(|a| a.key == key)
    }

    pub fn action_mut(&mut self, key: &str) -> Option<&mut ActionDoc> {
        self.precall.iter_mut().find(|a| a.key == key)
    }

    /// The Webhook actions, in order, with their settings.
    pub fn webhooks(&self) -> impl Iterator<Item = (&ActionDoc, i64, i64, bool)> {
        self.precall.iter().filter_map(|a| match a.settings {
            Action::Webhook {
                wait_ms,
                ttl_secs,
                enabled,
            } => Some((a, wait_ms, ttl_secs, enabled)),
            _ => None,
        })
    }

    /// The variable schema, as ingest and calls check values against it.
    pub fn schema(&self) -> Vec<VariableDef> {
        self.variables
            .iter()
            .filter_map(|v| {
                Some(VariableDef {
                    name: VariableName::parse(&v.name).ok()?,
                    ty: v.ty,
                    default: Some(v.default.clone()).filter(|d| !d.is_null()),
                })
            })
            .collect()
    }

    /// The flows' keys in the document's order.
    pub fn flow_order(&self) -> Vec<String> {
        self.flows.iter().map(|f| f.key.clone()).collect()
    }

    /// The program calls run: flows and pre-call rules (Webhook actions are the caller's to
    /// wait for, not the interpreter's).
    pub fn compile(&self) -> Program {
        let flows = self
            .flows
            .iter()
            .map(|f| {
                let blocks: Vec<(String, String, Value)> = f
                    .blocks
                    .iter()
                    .map(|b| {
                        (
                            b.key.clone(),
                            b.settings.kind().to_owned(),
                            b.settings.runtime_config(),
                        )
                    })
                    .collect();
                (
                    f.key.clone(),
                    runtime::Flow::compile(f.key.clone(), f.name.clone(), &blocks),
                )
            })
            .collect();
        let rules = self
            .precall
            .iter()
            .filter_map(|a| {
                let (kind, config) = match &a.settings {
                    Action::Webhook { .. } => return None,
                    Action::Filter { cases } => (
                        "filter",
                        json!({ "cases": cases.iter().map(|c| c.runtime_config("flow")).collect::<Vec<_>>() }),
                    ),
                    Action::EndCall {
                        any,
                        conditions,
                        message,
                        outcome,
                    } => (
                        "end_call",
                        json!({
                            "join": if *any { "or" } else { "and" },
                            "conditions": conditions_json(conditions),
                            "message": message,
                            "outcome": outcome,
                        }),
                    ),
                };
                Some(runtime::Rule::compile(
                    a.key.clone(),
                    a.name.clone(),
                    kind,
                    &config,
                ))
            })
            .collect();
        Program {
            first_flow: self.first_flow.clone(),
            flows,
            rules,
        }
    }

    /// A key not used yet by any of `taken`, for something new: 8 random letters and
    /// digits, with `prefix` so that a reader can tell what it names.
    pub fn new_key<'a>(prefix: &str, taken: impl Iterator<Item = &'a str>) -> String {
        let taken: HashSet<&str> = taken.collect();
        loop {
            let key = format!("{prefix}{}", super::ids::random_base62(8));
            if !taken.contains(key.as_str()) {
                return key;
            }
        }
    }

    /// The document as JSON, in its canonical form: every setting written out, in a fixed
    /// order, so that exporting what was imported gives the same text.
    pub fn to_json(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("format".into(), json!(FORMAT));
        doc.insert("firstFlow".into(), json!(self.first_flow));
        doc.insert(
            "flows".into(),
            Value::Array(self.flows.iter().map(flow_json).collect()),
        );
        doc.insert(
            "precall".into(),
            Value::Array(self.precall.iter().map(action_json).collect()),
        );
        doc.insert(
            "variables".into(),
            Value::Array(self.variables.iter().map(variable_json).collect()),
        );
        Value::Object(doc)
    }

    /// The canonical JSON text, pretty-printed.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).expect("a document serialises")
    }

    /// Reads a document, reporting every problem of its shape and references at once, each
    /// with the JSON pointer of what it concerns.
    pub fn from_json(value: &Value) -> Result<Self, Vec<Problem>> {
        let mut r = Reader::default();
        let doc = r.document(value);
        if r.problems.is_empty() {
            let doc = doc.expect("a document without problems was read");
            let problems = integrity(&doc);
            if problems.is_empty() {
                return Ok(doc);
            }
            return Err(problems);
        }
        Err(r.problems)
    }
}

fn position_json(p: &Position) -> Value {
    // Whole numbers are written as such, so that an integer position reads back the same.
    let n = |v: f64| {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            json!(v as i64)
        } else {
            json!(v)
        }
    };
    json!({ "x": n(p.x), "y": n(p.y) })
}

fn flow_json(f: &FlowDoc) -> Value {
    json!({
        "key": f.key,
        "name": f.name,
        "blocks": f.blocks.iter().map(block_json).collect::<Vec<_>>(),
    })
}

fn block_json(b: &BlockDoc) -> Value {
    let mut o = Map::new();
    o.insert("key".into(), json!(b.key));
    o.insert("kind".into(), json!(b.settings.kind()));
    match &b.settings {
        Block::Greeting { message, next }
        | Block::Start { message, next }
        | Block::Talk { message, next } => {
            o.insert("message".into(), json!(message));
            o.insert("next".into(), json!(next));
        }
        Block::Collect {
            variable,
            prompt,
            next,
        } => {
            o.insert("variable".into(), json!(variable));
            o.insert("prompt".into(), json!(prompt));
            o.insert("next".into(), json!(next));
        }
        Block::Filter { cases, otherwise } => {
            o.insert(
                "cases".into(),
                Value::Array(cases.iter().map(|c| case_json(c, "next")).collect()),
            );
            o.insert("else".into(), json!(otherwise));
        }
        Block::TransferCall {
            destination,
            department,
            message,
        } => {
            o.insert("destination".into(), json!(destination));
            o.insert("department".into(), json!(department));
            o.insert("message".into(), json!(message));
        }
        Block::TransferFlow { flow } => {
            o.insert("flow".into(), json!(flow));
        }
        Block::EndCall { message, outcome } => {
            o.insert("message".into(), json!(message));
            o.insert("outcome".into(), json!(outcome));
        }
    }
    if let Some(p) = &b.position {
        o.insert("position".into(), position_json(p));
    }
    Value::Object(o)
}

fn case_json(c: &Case, target: &str) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(c.name));
    o.insert("join".into(), json!(if c.any { "or" } else { "and" }));
    o.insert(
        "conditions".into(),
        Value::Array(conditions_json(&c.conditions)),
    );
    o.insert(target.into(), json!(c.to));
    Value::Object(o)
}

fn action_json(a: &ActionDoc) -> Value {
    let mut o = Map::new();
    o.insert("key".into(), json!(a.key));
    o.insert("name".into(), json!(a.name));
    match &a.settings {
        Action::Webhook {
            wait_ms,
            ttl_secs,
            enabled,
        } => {
            o.insert("kind".into(), json!("webhook"));
            o.insert("waitMs".into(), json!(wait_ms));
            o.insert("ttlSecs".into(), json!(ttl_secs));
            o.insert("enabled".into(), json!(enabled));
        }
        Action::Filter { cases } => {
            o.insert("kind".into(), json!("filter"));
            o.insert(
                "cases".into(),
                Value::Array(cases.iter().map(|c| case_json(c, "flow")).collect()),
            );
        }
        Action::EndCall {
            any,
            conditions,
            message,
            outcome,
        } => {
            o.insert("kind".into(), json!("end_call"));
            o.insert("join".into(), json!(if *any { "or" } else { "and" }));
            o.insert(
                "conditions".into(),
                Value::Array(conditions_json(conditions)),
            );
            o.insert("message".into(), json!(message));
            o.insert("outcome".into(), json!(outcome));
        }
    }
    Value::Object(o)
}

fn variable_json(v: &VariableDoc) -> Value {
    let source = match &v.source {
        None => Value::Null,
        Some(Source::Action(a)) => json!({ "action": a }),
        Some(Source::Block { flow, block }) => json!({ "flow": flow, "block": block }),
    };
    json!({
        "name": v.name,
        "type": v.ty.as_str(),
        "default": v.default,
        "description": v.description,
        "source": source,
    })
}

/// Walks a JSON value, collecting every problem with its pointer.
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
}

/// `/flows/0/blocks/3`, built as the reader descends.
fn at(base: &str, field: impl std::fmt::Display) -> String {
    let field = field.to_string();
    format!("{base}/{}", field.replace('~', "~0").replace('/', "~1"))
}

impl Reader {
    fn problem(&mut self, pointer: &str, detail: impl Into<String>) {
        self.problems
            .push(Problem::at_pointer(pointer.to_owned(), detail.into()));
    }

    /// An object, with no fields but `allowed`.
    fn object<'v>(
        &mut self,
        value: &'v Value,
        pointer: &str,
        what: &str,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Some(o) = value.as_object() else {
            self.problem(
                pointer,
                format!("{what} must be an object, not {}", shape(value)),
            );
            return None;
        };
        for k in o.keys() {
            if !allowed.contains(&k.as_str()) {
                self.problem(
                    &at(pointer, k),
                    format!(
                        "{what} has no field {k:?}; its fields are {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(o)
    }

    fn text(
        &mut self,
        o: &Map<String, Value>,
        pointer: &str,
        field: &str,
        required: bool,
        max: usize,
    ) -> Option<String> {
        let p = at(pointer, field);
        match o.get(field) {
            None | Some(Value::Null) if !required => Some(String::new()),
            None => {
                self.problem(&p, format!("{field} is required"));
                None
            }
            Some(Value::String(s)) if s.chars().count() > max => {
                self.problem(&p, format!("{field} is longer than {max} characters"));
                None
            }
            Some(Value::String(s)) => {
                // Line breaks and tabs may shape a message; other control characters (NUL,
                // a bell, an escape) are no one's text and would be written raw into pages.
                if let Some(c) = s
                    .chars()
                    .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                {
                    self.problem(
                        &p,
                        format!("{field} holds a control character (U+{:04X})", u32::from(c)),
                    );
                    return None;
                }
                Some(s.clone())
            }
            Some(other) => {
                self.problem(&p, format!("{field} must be text, not {}", shape(other)));
                None
            }
        }
    }

    /// A required name: text, not blank.
    fn name(&mut self, o: &Map<String, Value>, pointer: &str) -> Option<String> {
        let name = self.text(o, pointer, "name", true, MAX_NAME)?;
        match super::text::check_name(&name, MAX_NAME) {
            Ok(Some(name)) => Some(name),
            Ok(None) => {
                self.problem(&at(pointer, "name"), "name must not be empty");
                None
            }
            Err(e) => {
                self.problem(&at(pointer, "name"), e);
                None
            }
        }
    }

    fn key(&mut self, o: &Map<String, Value>, pointer: &str) -> Option<String> {
        let p = at(pointer, "key");
        match o.get("key") {
            Some(Value::String(k)) if is_key(k) => Some(k.clone()),
            Some(Value::String(k)) => {
                self.problem(
                    &p,
                    format!(
                        "key {:?} must be 1 to {MAX_KEY} letters, digits, - or _",
                        super::ids::excerpt(k)
                    ),
                );
                None
            }
            None => {
                self.problem(&p, "key is required");
                None
            }
            Some(other) => {
                self.problem(&p, format!("key must be text, not {}", shape(other)));
                None
            }
        }
    }

    /// A reference by key, or null.
    fn reference(
        &mut self,
        o: &Map<String, Value>,
        pointer: &str,
        field: &str,
    ) -> Option<Option<String>> {
        let p = at(pointer, field);
        match o.get(field) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(k)) if is_key(k) => Some(Some(k.clone())),
            Some(Value::String(k)) => {
                self.problem(
                    &p,
                    format!("{field} {:?} is not a key", super::ids::excerpt(k)),
                );
                None
            }
            Some(other) => {
                self.problem(
                    &p,
                    format!("{field} must be a key or null, not {}", shape(other)),
                );
                None
            }
        }
    }

    fn list<'v>(
        &mut self,
        o: &'v Map<String, Value>,
        pointer: &str,
        field: &str,
        max: usize,
    ) -> Option<&'v [Value]> {
        let p = at(pointer, field);
        match o.get(field) {
            None | Some(Value::Null) => Some(&[]),
            Some(Value::Array(items)) if items.len() > max => {
                self.problem(&p, format!("{field} holds at most {max} items"));
                None
            }
            Some(Value::Array(items)) => Some(items),
            Some(other) => {
                self.problem(&p, format!("{field} must be a list, not {}", shape(other)));
                None
            }
        }
    }

    fn integer(
        &mut self,
        o: &Map<String, Value>,
        pointer: &str,
        field: &str,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> Option<i64> {
        let p = at(pointer, field);
        match o.get(field) {
            None | Some(Value::Null) => Some(default),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) if range.contains(&i) => Some(i),
                _ => {
                    self.problem(
                        &p,
                        format!(
                            "{field} must be a whole number from {} to {}",
                            range.start(),
                            range.end()
                        ),
                    );
                    None
                }
            },
            Some(other) => {
                self.problem(
                    &p,
                    format!("{field} must be a number, not {}", shape(other)),
                );
                None
            }
        }
    }

    fn boolean(
        &mut self,
        o: &Map<String, Value>,
        pointer: &str,
        field: &str,
        default: bool,
    ) -> Option<bool> {
        match o.get(field) {
            None | Some(Value::Null) => Some(default),
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.problem(
                    &at(pointer, field),
                    format!("{field} must be true or false, not {}", shape(other)),
                );
                None
            }
        }
    }

    fn join(&mut self, o: &Map<String, Value>, pointer: &str) -> Option<bool> {
        match o.get("join") {
            None | Some(Value::Null) => Some(false),
            Some(Value::String(j)) if j == "and" => Some(false),
            Some(Value::String(j)) if j == "or" => Some(true),
            Some(other) => {
                self.problem(
                    &at(pointer, "join"),
                    format!("join must be \"and\" or \"or\", not {}", shape(other)),
                );
                None
            }
        }
    }

    fn document(&mut self, value: &Value) -> Option<AgentDocument> {
        let o = self.object(
            value,
            "",
            "the document",
            &["format", "firstFlow", "flows", "precall", "variables"],
        )?;
        match o.get("format") {
            Some(Value::String(f)) if f == FORMAT => {}
            Some(other) => self.problem(
                "/format",
                format!("format must be {FORMAT:?}, not {}", shape(other)),
            ),
            None => self.problem("/format", format!("format is required: {FORMAT:?}")),
        }
        let first_flow = self.reference(o, "", "firstFlow");
        let flows = self.list(o, "", "flows", MAX_FLOWS).map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, f)| self.flow(f, &format!("/flows/{i}")))
                .collect::<Vec<_>>()
        });
        let precall = self.list(o, "", "precall", MAX_ACTIONS).map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, a)| self.action(a, &format!("/precall/{i}")))
                .collect::<Vec<_>>()
        });
        let variables = self.list(o, "", "variables", MAX_VARIABLES).map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| self.variable(v, &format!("/variables/{i}")))
                .collect::<Vec<_>>()
        });
        Some(AgentDocument {
            first_flow: first_flow?,
            flows: flows?,
            precall: precall?,
            variables: variables?,
        })
    }

    fn flow(&mut self, value: &Value, p: &str) -> Option<FlowDoc> {
        let o = self.object(value, p, "a flow", &["key", "name", "blocks"])?;
        let key = self.key(o, p);
        let name = self.name(o, p);
        let blocks = self.list(o, p, "blocks", MAX_BLOCKS).map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, b)| self.block(b, &format!("{p}/blocks/{i}")))
                .collect::<Vec<_>>()
        });
        Some(FlowDoc {
            key: key?,
            name: name?,
            blocks: blocks?,
        })
    }

    fn block(&mut self, value: &Value, p: &str) -> Option<BlockDoc> {
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let fields: &[&str] = match kind {
            "greeting" | "start" | "talk" => &["message", "next"],
            "collect" => &["variable", "prompt", "next"],
            "filter" => &["cases", "else"],
            "transfer_call" => &["destination", "department", "message"],
            "transfer_flow" => &["flow"],
            "end_call" => &["message", "outcome"],
            _ => {
                let what = match value.get("kind") {
                    None => "kind is required".to_owned(),
                    Some(k) => format!("{} is not a kind of block", shape(k)),
                };
                self.problem(
                    &at(p, "kind"),
                    format!(
                        "{what}: greeting, start, talk, collect, filter, transfer_call, \
                         transfer_flow or end_call"
                    ),
                );
                return None;
            }
        };
        let mut allowed = vec!["key", "kind", "position"];
        allowed.extend_from_slice(fields);
        let o = self.object(value, p, &format!("a {kind} block"), &allowed)?;
        let key = self.key(o, p);
        let position = self.position(o, p);
        let settings = match kind {
            "greeting" | "start" | "talk" => {
                let message = self.text(o, p, "message", false, MAX_TEXT);
                let next = self.reference(o, p, "next");
                let (message, next) = (message?, next?);
                match kind {
                    "greeting" => Block::Greeting { message, next },
                    "start" => Block::Start { message, next },
                    _ => Block::Talk { message, next },
                }
            }
            "collect" => {
                let variable = self.text(o, p, "variable", false, MAX_KEY);
                let prompt = self.text(o, p, "prompt", false, MAX_TEXT);
                let next = self.reference(o, p, "next");
                let variable = variable?.trim().to_owned();
                if !variable.is_empty()
                    && let Err(e) = VariableName::parse(&variable)
                {
                    self.problem(&at(p, "variable"), e);
                }
                Block::Collect {
                    variable,
                    prompt: prompt?,
                    next: next?,
                }
            }
            "filter" => {
                let cases = self.cases(o, p, "next");
                let otherwise = self.reference(o, p, "else");
                Block::Filter {
                    cases: cases?,
                    otherwise: otherwise?,
                }
            }
            "transfer_call" => {
                let destination = self.text(o, p, "destination", false, MAX_NAME);
                let department = self.text(o, p, "department", false, MAX_NAME);
                let message = self.text(o, p, "message", false, MAX_TEXT);
                Block::TransferCall {
                    destination: destination?.trim().to_owned(),
                    department: department?.trim().to_owned(),
                    message: message?,
                }
            }
            "transfer_flow" => Block::TransferFlow {
                flow: self.reference(o, p, "flow")?,
            },
            _ => {
                let message = self.text(o, p, "message", false, MAX_TEXT);
                let outcome = self.text(o, p, "outcome", false, MAX_KEY);
                let outcome = outcome?.trim().to_owned();
                Block::EndCall {
                    message: message?,
                    outcome: if outcome.is_empty() {
                        "completed".into()
                    } else {
                        outcome
                    },
                }
            }
        };
        Some(BlockDoc {
            key: key?,
            position: position?,
            settings,
        })
    }

    fn position(&mut self, o: &Map<String, Value>, p: &str) -> Option<Option<Position>> {
        let Some(value) = o.get("position").filter(|v| !v.is_null()) else {
            return Some(None);
        };
        let p = at(p, "position");
        let o = self.object(value, &p, "a position", &["x", "y"])?;
        let mut coordinate = |c: &str| match o.get(c).and_then(Value::as_f64) {
            Some(v) if v.is_finite() && v.abs() <= 1e7 => Some(v),
            _ => {
                self.problem(&at(&p, c), format!("{c} must be a number within ±10000000"));
                None
            }
        };
        let (x, y) = (coordinate("x"), coordinate("y"));
        Some(Some(Position { x: x?, y: y? }))
    }

    fn cases(&mut self, o: &Map<String, Value>, p: &str, target: &str) -> Option<Vec<Case>> {
        let items = self.list(o, p, "cases", MAX_CASES)?;
        let cases: Vec<Option<Case>> = items
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cp = format!("{p}/cases/{i}");
                let o = self.object(c, &cp, "a case", &["name", "join", "conditions", target])?;
                let name = self.text(o, &cp, "name", false, MAX_NAME);
                let any = self.join(o, &cp);
                let conditions = self.conditions(o, &cp);
                let to = self.reference(o, &cp, target);
                Some(Case {
                    name: name?.trim().to_owned(),
                    any: any?,
                    conditions: conditions?,
                    to: to?,
                })
            })
            .collect();
        cases.into_iter().collect()
    }

    fn conditions(&mut self, o: &Map<String, Value>, p: &str) -> Option<Vec<Condition>> {
        let items = self.list(o, p, "conditions", MAX_CONDITIONS)?;
        let conditions: Vec<Option<Condition>> = items
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cp = format!("{p}/conditions/{i}");
                let o = self.object(c, &cp, "a condition", &["variable", "op", "value"])?;
                let variable = self.text(o, &cp, "variable", true, MAX_KEY);
                let op = match o.get("op").and_then(Value::as_str).map(Op::parse) {
                    Some(Ok(op)) => Some(op),
                    _ => {
                        self.problem(
                            &at(&cp, "op"),
                            "op must be one of exists, not_exists, equals, not_equals, \
                             greater_than, less_than, contains",
                        );
                        None
                    }
                };
                let value = match (op, o.get("value")) {
                    (Some(Op::Exists | Op::NotExists), None | Some(Value::Null)) => Some(None),
                    (Some(Op::Exists | Op::NotExists), Some(_)) => {
                        self.problem(&at(&cp, "value"), "exists and not_exists take no value");
                        None
                    }
                    (_, None | Some(Value::Null)) => {
                        self.problem(&at(&cp, "value"), "this comparison needs a value");
                        None
                    }
                    (_, Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_)))) => {
                        Some(Some(v.clone()))
                    }
                    (_, Some(other)) => {
                        self.problem(
                            &at(&cp, "value"),
                            format!(
                                "value must be text, a number or true/false, not {}",
                                shape(other)
                            ),
                        );
                        None
                    }
                };
                let variable = variable?;
                if VariableName::parse(&variable).is_err() {
                    self.problem(
                        &at(&cp, "variable"),
                        format!(
                            "{:?} is not a variable name",
                            super::ids::excerpt(&variable)
                        ),
                    );
                    return None;
                }
                Some(Condition {
                    variable,
                    op: op?,
                    value: value?,
                })
            })
            .collect();
        conditions.into_iter().collect()
    }

    fn action(&mut self, value: &Value, p: &str) -> Option<ActionDoc> {
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let fields: &[&str] = match kind {
            "webhook" => &["waitMs", "ttlSecs", "enabled"],
            "filter" => &["cases"],
            "end_call" => &["join", "conditions", "message", "outcome"],
            _ => {
                self.problem(
                    &at(p, "kind"),
                    "kind must be webhook, filter or end_call".to_owned(),
                );
                return None;
            }
        };
        let mut allowed = vec!["key", "kind", "name"];
        allowed.extend_from_slice(fields);
        let o = self.object(value, p, &format!("a {kind} action"), &allowed)?;
        let key = self.key(o, p);
        let name = self.name(o, p);
        let settings = match kind {
            "webhook" => {
                let wait_ms = self.integer(o, p, "waitMs", 0..=MAX_WAIT_MS, DEFAULT_WAIT_MS);
                let ttl_secs = self.integer(o, p, "ttlSecs", 1..=MAX_TTL_SECS, DEFAULT_TTL_SECS);
                let enabled = self.boolean(o, p, "enabled", true);
                Action::Webhook {
                    wait_ms: wait_ms?,
                    ttl_secs: ttl_secs?,
                    enabled: enabled?,
                }
            }
            "filter" => Action::Filter {
                cases: self.cases(o, p, "flow")?,
            },
            _ => {
                let any = self.join(o, p);
                let conditions = self.conditions(o, p);
                let message = self.text(o, p, "message", false, MAX_TEXT);
                let outcome = self.text(o, p, "outcome", false, MAX_KEY);
                let outcome = outcome?.trim().to_owned();
                Action::EndCall {
                    any: any?,
                    conditions: conditions?,
                    message: message?,
                    outcome: if outcome.is_empty() {
                        "refused".into()
                    } else {
                        outcome
                    },
                }
            }
        };
        Some(ActionDoc {
            key: key?,
            name: name?,
            settings,
        })
    }

    fn variable(&mut self, value: &Value, p: &str) -> Option<VariableDoc> {
        let o = self.object(
            value,
            p,
            "a variable",
            &["name", "type", "default", "description", "source"],
        )?;
        let name = match o.get("name") {
            Some(Value::String(n)) => match VariableName::parse(n) {
                Ok(v) if v.is_system() => {
                    self.problem(
                        &at(p, "name"),
                        format!("{v} is a system variable: it cannot be declared"),
                    );
                    None
                }
                Ok(v) => Some(v.to_string()),
                Err(e) => {
                    self.problem(&at(p, "name"), e);
                    None
                }
            },
            _ => {
                self.problem(&at(p, "name"), "name is required: a variable name");
                None
            }
        };
        let ty = match o.get("type").and_then(Value::as_str).map(VarType::parse) {
            Some(Ok(t)) => Some(t),
            _ => {
                self.problem(
                    &at(p, "type"),
                    "type must be string, number, boolean or list",
                );
                None
            }
        };
        let description = self.text(o, p, "description", false, MAX_TEXT);
        let default = match (ty, o.get("default")) {
            (_, None | Some(Value::Null)) => Some(Value::Null),
            (Some(t), Some(v)) => match t.coerce(v) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.problem(&at(p, "default"), format!("default: {e}"));
                    None
                }
            },
            (None, Some(_)) => None,
        };
        let source = match o.get("source") {
            None | Some(Value::Null) => Some(None),
            Some(s) => {
                let sp = at(p, "source");
                match s.as_object() {
                    Some(so) if so.len() == 1 && so.get("action").is_some_and(Value::is_string) => {
                        Some(Some(Source::Action(
                            so["action"].as_str().unwrap_or_default().into(),
                        )))
                    }
                    Some(so)
                        if so.len() == 2
                            && so.get("flow").is_some_and(Value::is_string)
                            && so.get("block").is_some_and(Value::is_string) =>
                    {
                        Some(Some(Source::Block {
                            flow: so["flow"].as_str().unwrap_or_default().into(),
                            block: so["block"].as_str().unwrap_or_default().into(),
                        }))
                    }
                    _ => {
                        self.problem(
                            &sp,
                            "source must be null, {\"action\": key} or {\"flow\": key, \"block\": key}",
                        );
                        None
                    }
                }
            }
        };
        Some(VariableDoc {
            name: name?,
            ty: ty?,
            default: default?,
            description: description?.trim().to_owned(),
            source: source?,
        })
    }
}

/// Whether `k` can be a key.
pub fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `an object`, `the number 3`: what was found, for messages.
fn shape(v: &Value) -> String {
    super::variables::describe_value(v)
}

/// What a well-formed document must hold together: keys unique, references to existing
/// blocks, flows and actions, one entry per flow (a Greeting for the First Flow, a Start
/// for the others), variable names unique.
fn integrity(doc: &AgentDocument) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut p =
        |pointer: String, detail: String| problems.push(Problem::at_pointer(pointer, detail));
    let flow_keys: HashMap<&str, usize> = doc
        .flows
        .iter()
        .enumerate()
        .map(|(i, f)| (f.key.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    for (i, f) in doc.flows.iter().enumerate() {
        if !seen.insert(f.key.as_str()) {
            p(
                format!("/flows/{i}/key"),
                format!("another flow has the key {:?}", f.key),
            );
        }
    }
    let mut names = HashSet::new();
    for (i, f) in doc.flows.iter().enumerate() {
        if !names.insert(f.name.to_lowercase()) {
            p(
                format!("/flows/{i}/name"),
                format!("another flow is named {:?}", f.name),
            );
        }
    }
    match &doc.first_flow {
        Some(k) if !flow_keys.contains_key(k.as_str()) => {
            p("/firstFlow".into(), format!("no flow has the key {k:?}"))
        }
        _ => {}
    }
    for (i, f) in doc.flows.iter().enumerate() {
        let blocks: HashSet<&str> = f.blocks.iter().map(|b| b.key.as_str()).collect();
        let mut seen = HashSet::new();
        let first = doc.first_flow.as_deref() == Some(f.key.as_str());
        let entries: Vec<usize> = f
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.settings.is_entry())
            .map(|(j, _)| j)
            .collect();
        match entries.as_slice() {
            [] => p(
                format!("/flows/{i}/blocks"),
                format!(
                    "the flow {:?} needs one {} block, where calls enter it",
                    f.name,
                    if first { "greeting" } else { "start" }
                ),
            ),
            [_] => {}
            [_, more @ ..] => {
                for j in more {
                    p(
                        format!("/flows/{i}/blocks/{j}/kind"),
                        "a flow has one entry (greeting or start); this is a second".into(),
                    );
                }
            }
        }
        for (j, b) in f.blocks.iter().enumerate() {
            let bp = format!("/flows/{i}/blocks/{j}");
            if !seen.insert(b.key.as_str()) {
                p(
                    format!("{bp}/key"),
                    format!("another block of this flow has the key {:?}", b.key),
                );
            }
            match (&b.settings, first) {
                (Block::Greeting { .. }, false) if doc.first_flow.is_none() => p(
                    format!("{bp}/kind"),
                    "only the First Flow begins with a greeting, and firstFlow names none: \
                     name this flow's key there, or begin it with start"
                        .into(),
                ),
                (Block::Greeting { .. }, false) => p(
                    format!("{bp}/kind"),
                    "only the First Flow begins with a greeting; this flow begins with start"
                        .into(),
                ),
                (Block::Start { .. }, true) => p(
                    format!("{bp}/kind"),
                    "the First Flow begins with a greeting, not start".into(),
                ),
                _ => {}
            }
            let targets: Vec<(String, &Option<String>)> = match &b.settings {
                Block::Greeting { next, .. }
                | Block::Start { next, .. }
                | Block::Talk { next, .. }
                | Block::Collect { next, .. } => vec![(format!("{bp}/next"), next)],
                Block::Filter { cases, otherwise } => cases
                    .iter()
                    .enumerate()
                    .map(|(c, case)| (format!("{bp}/cases/{c}/next"), &case.to))
                    .chain([(format!("{bp}/else"), otherwise)])
                    .collect(),
                _ => Vec::new(),
            };
            for (pointer, target) in targets {
                if let Some(t) = target
                    && !blocks.contains(t.as_str())
                {
                    p(pointer, format!("no block of this flow has the key {t:?}"));
                }
            }
            if let Block::TransferFlow { flow: Some(t) } = &b.settings
                && !flow_keys.contains_key(t.as_str())
            {
                p(format!("{bp}/flow"), format!("no flow has the key {t:?}"));
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, a) in doc.precall.iter().enumerate() {
        if !seen.insert(a.key.as_str()) {
            p(
                format!("/precall/{i}/key"),
                format!("another action has the key {:?}", a.key),
            );
        }
        if let Action::Filter { cases } = &a.settings {
            for (c, case) in cases.iter().enumerate() {
                if let Some(t) = &case.to
                    && !flow_keys.contains_key(t.as_str())
                {
                    p(
                        format!("/precall/{i}/cases/{c}/flow"),
                        format!("no flow has the key {t:?}"),
                    );
                }
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, v) in doc.variables.iter().enumerate() {
        if !seen.insert(v.name.as_str()) {
            p(
                format!("/variables/{i}/name"),
                format!("{} is declared twice", v.name),
            );
        }
        match &v.source {
            Some(Source::Action(a)) if doc.action(a).is_none() => p(
                format!("/variables/{i}/source/action"),
                format!("no pre-call action has the key {a:?}"),
            ),
            Some(Source::Block { flow, block }) => match doc.flow(flow) {
                None => p(
                    format!("/variables/{i}/source/flow"),
                    format!("no flow has the key {flow:?}"),
                ),
                Some(f) if !f.blocks.iter().any(|b| &b.key == block) => p(
                    format!("/variables/{i}/source/block"),
                    format!("no block of the flow {flow:?} has the key {block:?}"),
                ),
                _ => {}
            },
            _ => {}
        }
    }
    problems
}

/// What would stop the document from being published: unknown variables, cycles within and
/// across flows, comparisons that cannot make sense for a variable's type, unfinished
/// blocks and pre-call actions. Each problem points into the document and says in words
/// what it concerns.
pub fn check(doc: &AgentDocument) -> Vec<Problem> {
    let (program, found) = findings(doc);
    found
        .into_iter()
        .map(|found| {
            let pointer = match &found.at {
                At::Agent => "/firstFlow".to_owned(),
                At::Flow(f) => doc
                    .flows
                    .iter()
                    .position(|x| &x.key == f)
                    .map_or_else(String::new, |i| format!("/flows/{i}")),
                At::Block(f, b) => doc
                    .flows
                    .iter()
                    .enumerate()
                    .find(|(_, x)| &x.key == f)
                    .and_then(|(i, x)| {
                        x.blocks
                            .iter()
                            .position(|y| &y.key == b)
                            .map(|j| format!("/flows/{i}/blocks/{j}"))
                    })
                    .unwrap_or_default(),
                At::Rule(r) => doc
                    .precall
                    .iter()
                    .position(|a| &a.key == r)
                    .map_or_else(String::new, |i| format!("/precall/{i}")),
            };
            Problem::at_pointer(pointer, found.describe(&program))
        })
        .collect()
}

/// What would stop the document from being published, where each problem is, with the
/// program it was found in (to say it in words).
pub fn findings(doc: &AgentDocument) -> (Program, Vec<runtime::Found>) {
    let program = doc.compile();
    let known = Known::of(&doc.schema(), &program);
    let found = runtime::check_program(&program, &known, &doc.flow_order());
    (program, found)
}

/// What `new` changes against `old`, in words an admin reads: flows and blocks added,
/// removed, renamed or changed (which setting), connections changed, pre-call actions
/// added, removed, moved or changed, variables declared, removed or changed, the First
/// Flow chosen, blocks moved on the canvas.
pub fn changes(old: &AgentDocument, new: &AgentDocument) -> Vec<String> {
    let mut out = Vec::new();
    if old.first_flow != new.first_flow {
        let name = new
            .first_flow
            .as_deref()
            .and_then(|k| new.flow(k))
            .map_or("none".to_owned(), |f| format!("\"{}\"", f.name));
        out.push(format!("First Flow is now {name}"));
    }
    for f in &new.flows {
        match old.flow(&f.key) {
            None => out.push(format!(
                "Flow \"{}\" added ({} block{})",
                f.name,
                f.blocks.len(),
                plural(f.blocks.len())
            )),
            Some(o) => flow_changes(o, f, &mut out),
        }
    }
    for f in &old.flows {
        if new.flow(&f.key).is_none() {
            out.push(format!("Flow \"{}\" removed", f.name));
        }
    }
    let old_order: Vec<&str> = old.precall.iter().map(|a| a.key.as_str()).collect();
    for (i, a) in new.precall.iter().enumerate() {
        let what = action_label(a);
        match old.action(&a.key) {
            None => out.push(format!("Pre-call {what} \"{}\" added", a.name)),
            Some(o) => {
                if o.name != a.name {
                    out.push(format!(
                        "Pre-call {what} \"{}\" renamed to \"{}\"",
                        o.name, a.name
                    ));
                }
                for c in action_setting_changes(o, a) {
                    out.push(format!("Pre-call {what} \"{}\": {c}", a.name));
                }
                let before = old_order.iter().position(|k| *k == a.key);
                let kept_before: Vec<&str> = new.precall[..i]
                    .iter()
                    .map(|x| x.key.as_str())
                    .filter(|k| old_order.contains(k))
                    .collect();
                let old_before: Vec<&str> = before
                    .map(|b| {
                        old_order[..b]
                            .iter()
                            .copied()
                            .filter(|k| new.action(k).is_some())
                            .collect()
                    })
                    .unwrap_or_default();
                if kept_before != old_before {
                    out.push(format!(
                        "Pre-call {what} \"{}\" moved to position {}",
                        a.name,
                        i + 1
                    ));
                }
            }
        }
    }
    for a in &old.precall {
        if new.action(&a.key).is_none() {
            out.push(format!(
                "Pre-call {} \"{}\" removed",
                action_label(a),
                a.name
            ));
        }
    }
    let old_vars: BTreeMap<&str, &VariableDoc> =
        old.variables.iter().map(|v| (v.name.as_str(), v)).collect();
    let new_vars: BTreeMap<&str, &VariableDoc> =
        new.variables.iter().map(|v| (v.name.as_str(), v)).collect();
    for (name, v) in &new_vars {
        match old_vars.get(name) {
            None => out.push(format!("Variable {name} declared ({})", v.ty)),
            Some(o) if o.ty != v.ty => {
                out.push(format!("Variable {name}: type {} → {}", o.ty, v.ty))
            }
            Some(o) if o.default != v.default => out.push(format!(
                "Variable {name}: default {} → {}",
                shown(&o.default),
                shown(&v.default)
            )),
            Some(o) if o.description != v.description || o.source != v.source => {
                out.push(format!("Variable {name}: description changed"))
            }
            _ => {}
        }
    }
    for name in old_vars.keys() {
        if !new_vars.contains_key(name) {
            out.push(format!("Variable {name} removed"));
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn shown(v: &Value) -> String {
    if v.is_null() {
        "none".into()
    } else {
        v.to_string()
    }
}

fn action_label(a: &ActionDoc) -> &'static str {
    match a.settings {
        Action::Webhook { .. } => "Webhook",
        Action::Filter { .. } => "Filter",
        Action::EndCall { .. } => "End Call",
    }
}

fn flow_changes(old: &FlowDoc, new: &FlowDoc, out: &mut Vec<String>) {
    if old.name != new.name {
        out.push(format!("Flow \"{}\" renamed to \"{}\"", old.name, new.name));
    }
    let label = |f: &FlowDoc, key: &str| {
        f.blocks
            .iter()
            .position(|b| b.key == key)
            .map_or_else(String::new, |i| {
                format!(
                    "#{} {}",
                    i + 1,
                    super::flow::label(f.blocks[i].settings.kind())
                )
            })
    };
    let mut moved = 0;
    for b in &new.blocks {
        let this = format!("\"{}\" {}", new.name, label(new, &b.key));
        match old.blocks.iter().find(|o| o.key == b.key) {
            None => out.push(format!("Block added: {this}")),
            Some(o) => {
                if o.settings.kind() != b.settings.kind() {
                    out.push(format!(
                        "{this}: kind {} → {}",
                        super::flow::label(o.settings.kind()),
                        super::flow::label(b.settings.kind())
                    ));
                } else {
                    for c in block_setting_changes(old, o, new, b) {
                        out.push(format!("{this}: {c}"));
                    }
                }
                if o.position != b.position {
                    moved += 1;
                }
            }
        }
    }
    for o in &old.blocks {
        if !new.blocks.iter().any(|b| b.key == o.key) {
            out.push(format!(
                "Block removed: \"{}\" {} (was {})",
                new.name,
                super::flow::label(o.settings.kind()),
                label(old, &o.key)
            ));
        }
    }
    if moved > 0 {
        out.push(format!(
            "\"{}\": {moved} block{} moved on the canvas",
            new.name,
            plural(moved)
        ));
    }
}

/// Which settings of a block changed, in words. Connections are named by their targets'
/// numbers in each version.
fn block_setting_changes(
    old_flow: &FlowDoc,
    old: &BlockDoc,
    new_flow: &FlowDoc,
    new: &BlockDoc,
) -> Vec<String> {
    let mut out = Vec::new();
    let target = |f: &FlowDoc, k: Option<&String>| match k {
        None => "not connected".to_owned(),
        Some(k) => f.blocks.iter().position(|b| &b.key == k).map_or_else(
            || format!("{k:?}"),
            |i| {
                format!(
                    "#{} {}",
                    i + 1,
                    super::flow::label(f.blocks[i].settings.kind())
                )
            },
        ),
    };
    let (a, b) = (&old.settings, &new.settings);
    let text_fields = |s: &Block| -> Vec<(&'static str, String)> {
        match s {
            Block::Greeting { message, .. }
            | Block::Start { message, .. }
            | Block::Talk { message, .. } => vec![("message", message.clone())],
            Block::Collect {
                variable, prompt, ..
            } => vec![("variable", variable.clone()), ("question", prompt.clone())],
            Block::TransferCall {
                destination,
                department,
                message,
            } => vec![
                ("destination", destination.clone()),
                ("department", department.clone()),
                ("message", message.clone()),
            ],
            Block::TransferFlow { flow } => vec![("flow", flow.clone().unwrap_or_default())],
            Block::EndCall { message, outcome } => {
                vec![("message", message.clone()), ("outcome", outcome.clone())]
            }
            Block::Filter { .. } => Vec::new(),
        }
    };
    for ((field, x), (_, y)) in text_fields(a).into_iter().zip(text_fields(b)) {
        if x != y {
            out.push(format!("{field} changed"));
        }
    }
    if let (
        Block::Filter {
            cases: ca,
            otherwise: oa,
        },
        Block::Filter {
            cases: cb,
            otherwise: ob,
        },
    ) = (a, b)
    {
        if ca.len() != cb.len() {
            out.push(format!("{} case(s) → {}", ca.len(), cb.len()));
        }
        for (i, (x, y)) in ca.iter().zip(cb).enumerate() {
            if x.conditions != y.conditions || x.any != y.any {
                out.push(format!("{}: condition changed", y.label(i)));
            }
            if x.name != y.name {
                out.push(format!("{} renamed to {}", x.label(i), y.label(i)));
            }
            if target(old_flow, x.to.as_ref()) != target(new_flow, y.to.as_ref()) {
                out.push(format!(
                    "{} now leads to {}",
                    y.label(i),
                    target(new_flow, y.to.as_ref())
                ));
            }
        }
        if target(old_flow, oa.as_ref()) != target(new_flow, ob.as_ref()) {
            out.push(format!(
                "Else now leads to {}",
                target(new_flow, ob.as_ref())
            ));
        }
    } else {
        let next = |s: &Block| match s {
            Block::Greeting { next, .. }
            | Block::Start { next, .. }
            | Block::Talk { next, .. }
            | Block::Collect { next, .. } => Some(next.clone()),
            _ => None,
        };
        if let (Some(x), Some(y)) = (next(a), next(b))
            && target(old_flow, x.as_ref()) != target(new_flow, y.as_ref())
        {
            out.push(format!(
                "Next now leads to {}",
                target(new_flow, y.as_ref())
            ));
        }
    }
    out
}

fn action_setting_changes(old: &ActionDoc, new: &ActionDoc) -> Vec<String> {
    let mut out = Vec::new();
    match (&old.settings, &new.settings) {
        (
            Action::Webhook {
                wait_ms: wa,
                ttl_secs: ta,
                enabled: ea,
            },
            Action::Webhook {
                wait_ms: wb,
                ttl_secs: tb,
                enabled: eb,
            },
        ) => {
            if wa != wb {
                out.push(format!("time wait before fallback {wa} ms → {wb} ms"));
            }
            if ta != tb {
                out.push(format!("data TTL {ta} s → {tb} s"));
            }
            if ea != eb {
                out.push(if *eb { "enabled" } else { "disabled" }.to_owned());
            }
        }
        (Action::Filter { cases: ca }, Action::Filter { cases: cb }) => {
            if ca.len() != cb.len() {
                out.push(format!("{} case(s) → {}", ca.len(), cb.len()));
            }
            for (i, (x, y)) in ca.iter().zip(cb).enumerate() {
                if x.conditions != y.conditions || x.any != y.any {
                    out.push(format!("{}: condition changed", y.label(i)));
                }
                if x.to != y.to {
                    out.push(format!("{}: route changed", y.label(i)));
                }
                if x.name != y.name {
                    out.push(format!("{} renamed to {}", x.label(i), y.label(i)));
                }
            }
        }
        (
            Action::EndCall {
                any: aa,
                conditions: ca,
                message: ma,
                outcome: oa,
            },
            Action::EndCall {
                any: ab,
                conditions: cb,
                message: mb,
                outcome: ob,
            },
        ) => {
            if ca != cb || aa != ab {
                out.push("condition changed".into());
            }
            if ma != mb {
                out.push("message changed".into());
            }
            if oa != ob {
                out.push(format!("outcome {oa} → {ob}"));
            }
        }
        _ => out.push("kind changed".into()),
    }
    out
}

/// The variables a document's templates and conditions may use, with their types, for
/// the editor's menus: declared ones, system ones, and those a Collect fills.
pub fn known_variables(doc: &AgentDocument) -> Vec<(String, Option<VarType>)> {
    let mut known: BTreeMap<String, Option<VarType>> = SYSTEM_VARIABLES
        .iter()
        .map(|n| ((*n).to_owned(), Some(VarType::String)))
        .collect();
    for f in &doc.flows {
        for b in &f.blocks {
            if let Block::Collect { variable, .. } = &b.settings
                && !variable.is_empty()
            {
                known.entry(variable.clone()).or_insert(None);
            }
        }
    }
    for v in &doc.variables {
        known.insert(v.name.clone(), Some(v.ty));
    }
    known.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Value {
        json!({
            "format": FORMAT,
            "firstFlow": "main",
            "flows": [
                {"key": "main", "name": "Main", "blocks": [
                    {"key": "hello", "kind": "greeting", "message": "Hello {{name|there}}", "next": "route",
                     "position": {"x": 10, "y": 20}},
                    {"key": "route", "kind": "filter", "cases": [
                        {"name": "VIP", "join": "and", "conditions": [
                            {"variable": "priority", "op": "equals", "value": "high"}], "next": "vip"}],
                     "else": "sales"},
                    {"key": "vip", "kind": "transfer_call", "destination": "+12125550100",
                     "department": "", "message": "Connecting you."},
                    {"key": "sales", "kind": "transfer_flow", "flow": "sales"}
                ]},
                {"key": "sales", "name": "Sales", "blocks": [
                    {"key": "start", "kind": "start", "message": "", "next": "ask"},
                    {"key": "ask", "kind": "collect", "variable": "budget", "prompt": "Budget?", "next": "bye"},
                    {"key": "bye", "kind": "end_call", "message": "Bye.", "outcome": "qualified"}
                ]}
            ],
            "precall": [
                {"key": "crm", "kind": "webhook", "name": "CRM", "waitMs": 1500, "ttlSecs": 600, "enabled": true},
                {"key": "risk", "kind": "filter", "name": "Risk", "cases": [
                    {"name": "Risky", "join": "or", "conditions": [
                        {"variable": "risk_score", "op": "greater_than", "value": 80}], "flow": "sales"}]}
            ],
            "variables": [
                {"name": "priority", "type": "string", "default": "normal", "description": "", "source": {"action": "crm"}},
                {"name": "risk_score", "type": "number", "default": 0, "description": "0-100", "source": null},
                {"name": "name", "type": "string", "default": null, "description": "", "source": null}
            ]
        })
    }

    #[test]
    fn a_canonical_document_reads_and_writes_back_unchanged() {
        let value = example();
        let doc = AgentDocument::from_json(&value).unwrap();
        assert_eq!(doc.to_json(), value);
        assert!(check(&doc).is_empty(), "{:?}", check(&doc));
    }

    #[test]
    fn every_shape_problem_is_reported_with_its_pointer() {
        let mut value = example();
        value["flows"][0]["blocks"][0]["next"] = json!(3);
        value["flows"][0]["blocks"][1]["colour"] = json!("red");
        value["flows"][1]["blocks"][1]["kind"] = json!("dance");
        value["precall"][0]["waitMs"] = json!(20000);
        value["variables"][1]["default"] = json!("lots");
        value["extra"] = json!(true);
        let problems = AgentDocument::from_json(&value).unwrap_err();
        let pointers: Vec<&str> = problems
            .iter()
            .map(|p| p.pointer.as_deref().unwrap_or(""))
            .collect();
        for expected in [
            "/flows/0/blocks/0/next",
            "/flows/0/blocks/1/colour",
            "/flows/1/blocks/1/kind",
            "/precall/0/waitMs",
            "/variables/1/default",
            "/extra",
        ] {
            assert!(pointers.contains(&expected), "{expected} in {problems:?}");
        }
    }

    #[test]
    fn names_need_a_visible_character_and_texts_no_control_characters() {
        let mut value = example();
        value["flows"][0]["name"] = json!("\u{200b}\u{2060}");
        value["flows"][1]["name"] = json!("Sales\u{7}");
        value["flows"][0]["blocks"][0]["message"] = json!("Hello\u{0} there");
        let problems = AgentDocument::from_json(&value).unwrap_err();
        let text = format!("{problems:?}");
        assert!(text.contains("/flows/0/name"), "{text}");
        assert!(text.contains("visible"), "{text}");
        assert!(text.contains("/flows/1/name"), "{text}");
        assert!(text.contains("/flows/0/blocks/0/message"), "{text}");
        assert!(text.contains("U+0000"), "{text}");
        // Line breaks may shape a message, and a name may mix directions.
        let mut value = example();
        value["flows"][0]["blocks"][0]["message"] = json!("Hello.\nHow are you?");
        value["flows"][1]["name"] = json!("Sales \u{202e}selaS");
        assert!(AgentDocument::from_json(&value).is_ok());
    }

    #[test]
    fn references_must_resolve_and_keys_be_unique() {
        let mut value = example();
        value["flows"][0]["blocks"][1]["else"] = json!("nowhere");
        value["flows"][1]["blocks"][2]["key"] = json!("ask");
        value["precall"][1]["cases"][0]["flow"] = json!("gone");
        value["firstFlow"] = json!("sales");
        let problems = AgentDocument::from_json(&value).unwrap_err();
        let text = format!("{problems:?}");
        assert!(text.contains("/flows/0/blocks/1/else"), "{text}");
        assert!(text.contains("/flows/1/blocks/2/key"), "{text}");
        assert!(text.contains("/precall/1/cases/0/flow"), "{text}");
        // The First Flow begins with a greeting; the other flows with start.
        assert!(text.contains("/flows/0/blocks/0/kind"), "{text}");
        assert!(text.contains("/flows/1/blocks/0/kind"), "{text}");
    }

    #[test]
    fn a_greeting_without_a_first_flow_says_that_first_flow_names_none() {
        let mut value = example();
        value["firstFlow"] = Value::Null;
        let problems = AgentDocument::from_json(&value).unwrap_err();
        let greeting = problems
            .iter()
            .find(|p| p.pointer.as_deref() == Some("/flows/0/blocks/0/kind"))
            .expect("the greeting is pointed at");
        assert!(
            greeting.detail.contains("firstFlow names none"),
            "{problems:?}"
        );
    }

    #[test]
    fn publish_checks_point_at_the_block_or_action_concerned() {
        let mut value = example();
        value["flows"][0]["blocks"][0]["message"] = json!("Hi {{nmae}}");
        value["flows"][1]["blocks"][2] =
            json!({"key": "bye", "kind": "transfer_flow", "flow": "main"});
        value["precall"][1]["cases"][0]["conditions"][0]["value"] = json!("high");
        let doc = AgentDocument::from_json(&value).unwrap();
        let problems = check(&doc);
        let find = |pointer: &str| {
            problems
                .iter()
                .find(|p| p.pointer.as_deref() == Some(pointer))
                .unwrap_or_else(|| panic!("{pointer} in {problems:?}"))
        };
        assert!(find("/flows/0/blocks/0").detail.contains("{{nmae}}"));
        assert!(find("/precall/1").detail.contains("needs a number"));
        assert!(
            problems
                .iter()
                .any(|p| p.detail.contains("Transfer Flow goes round in a cycle")),
            "{problems:?}"
        );
    }

    #[test]
    fn changes_are_said_in_words() {
        let old = AgentDocument::from_json(&example()).unwrap();
        let mut new = old.clone();
        new.flows[0].blocks[0].settings = Block::Greeting {
            message: "Hi".into(),
            next: Some("route".into()),
        };
        new.flows[1].blocks.push(BlockDoc {
            key: "talk".into(),
            position: None,
            settings: Block::Talk {
                message: "x".into(),
                next: None,
            },
        });
        new.precall.swap(0, 1);
        new.variables.pop();
        let said = changes(&old, &new);
        assert!(
            said.contains(&"\"Main\" #1 Greeting: message changed".to_owned()),
            "{said:?}"
        );
        assert!(
            said.contains(&"Block added: \"Sales\" #4 Talk".to_owned()),
            "{said:?}"
        );
        assert!(
            said.iter().any(|s| s.contains("moved to position")),
            "{said:?}"
        );
        assert!(
            said.contains(&"Variable name removed".to_owned()),
            "{said:?}"
        );
        assert!(changes(&old, &old).is_empty());
    }
}
