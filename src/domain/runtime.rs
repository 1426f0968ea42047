//! The flow interpreter: runs a call through an agent's pre-call rules and flows.
//!
//! A [`Program`] is an agent's flows compiled from their stored settings. [`Program::start`]
//! decides what the pre-call Filter and End Call actions do with the call's variables and
//! runs the First Flow (or the flow a pre-call Filter chose) until a Collect needs an
//! answer or the call ends; [`Program::resume`] continues after an answer. Every step is
//! recorded with what was said and why a Filter chose its case.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::conditions::Conditions;
use super::template::{Template, spoken};
use super::variables::{SYSTEM_VARIABLES, VarType, VariableDef, VariableName};

/// Steps one run may take before it is stopped as a loop (Transfer Flow can go round).
pub const MAX_STEPS: usize = 200;

/// One Filter case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub when: Conditions,
    /// The key of a block of the same flow (Filter block) or of a flow (pre-call Filter).
    pub next: Option<String>,
}

impl Case {
    fn label(&self, i: usize) -> String {
        if self.name.is_empty() {
            format!("Case {}", i + 1)
        } else {
            self.name.clone()
        }
    }
}

/// A reference to a block or flow by its key (`null`: not connected).
fn key_of(v: &Value) -> Option<String> {
    v.as_str().filter(|k| !k.is_empty()).map(str::to_owned)
}

fn cases_from(config: &Value, target: &str) -> Result<Vec<Case>, String> {
    config["cases"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(Case {
                name: c["name"].as_str().unwrap_or_default().to_owned(),
                when: Conditions::from_config(c).map_err(|e| format!("case {}: {e}", i + 1))?,
                next: key_of(&c[target]),
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
pub enum Block {
    /// Greeting, Start and Talk: say a message, go on.
    Say {
        kind: &'static str,
        message: Template,
        next: Option<String>,
    },
    Collect {
        variable: String,
        prompt: Template,
        next: Option<String>,
    },
    Filter {
        cases: Vec<Case>,
        otherwise: Option<String>,
    },
    TransferCall {
        destination: String,
        department: String,
        message: Template,
    },
    TransferFlow {
        flow: Option<String>,
    },
    EndCall {
        message: Template,
        outcome: String,
    },
    /// Settings that could not be read; a call reaching it ends with an error.
    Broken {
        kind: String,
        reason: String,
    },
}

fn text(config: &Value, key: &str) -> String {
    config[key].as_str().unwrap_or_default().trim().to_owned()
}

fn template(config: &Value, key: &str) -> Result<Template, String> {
    Template::parse(config[key].as_str().unwrap_or_default())
}

impl Block {
    /// Reads a block's stored settings.
    pub fn compile(kind: &str, config: &Value) -> Result<Self, String> {
        let next = key_of(&config["next"]);
        Ok(match kind {
            "greeting" | "start" | "talk" => Self::Say {
                kind: match kind {
                    "greeting" => "greeting",
                    "start" => "start",
                    _ => "talk",
                },
                message: template(config, "message")?,
                next,
            },
            "collect" => Self::Collect {
                variable: text(config, "variable"),
                prompt: template(config, "prompt")?,
                next,
            },
            "filter" => Self::Filter {
                cases: cases_from(config, "next")?,
                otherwise: key_of(&config["else"]),
            },
            "transfer_call" => Self::TransferCall {
                destination: text(config, "destination"),
                department: text(config, "department"),
                message: template(config, "message")?,
            },
            "transfer_flow" => Self::TransferFlow {
                flow: key_of(&config["flow"]),
            },
            "end_call" => Self::EndCall {
                message: template(config, "message")?,
                outcome: Some(text(config, "outcome"))
                    .filter(|o| !o.is_empty())
                    .unwrap_or_else(|| "completed".into()),
            },
            other => return Err(format!("unknown kind of block {other:?}")),
        })
    }

    fn compile_or_broken(kind: &str, config: &Value) -> Self {
        Self::compile(kind, config).unwrap_or_else(|reason| Self::Broken {
            kind: kind.to_owned(),
            reason,
        })
    }

    pub fn kind(&self) -> &str {
        match self {
            Self::Say { kind, .. } => kind,
            Self::Collect { .. } => "collect",
            Self::Filter { .. } => "filter",
            Self::TransferCall { .. } => "transfer_call",
            Self::TransferFlow { .. } => "transfer_flow",
            Self::EndCall { .. } => "end_call",
            Self::Broken { kind, .. } => kind,
        }
    }

    /// The blocks of the same flow this one leads to, with the output's label.
    pub fn connections(&self) -> Vec<(String, String)> {
        match self {
            Self::Say { next, .. } | Self::Collect { next, .. } => next
                .iter()
                .map(|n| ("Next".to_owned(), n.clone()))
                .collect(),
            Self::Filter { cases, otherwise } => cases
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.next.clone().map(|n| (c.label(i), n)))
                .chain(otherwise.iter().map(|n| ("Else".to_owned(), n.clone())))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Templates and conditions, for the save-time checks.
    fn templates(&self) -> Vec<(&'static str, &Template)> {
        match self {
            Self::Say { message, .. }
            | Self::TransferCall { message, .. }
            | Self::EndCall { message, .. } => vec![("message", message)],
            Self::Collect { prompt, .. } => vec![("question", prompt)],
            _ => Vec::new(),
        }
    }
}

/// A flow ready to run.
#[derive(Debug, Clone)]
pub struct Flow {
    pub key: String,
    pub name: String,
    /// The Greeting or Start block.
    pub entry: Option<String>,
    pub blocks: HashMap<String, Block>,
    /// The blocks' keys in the flow's order: `#1` is the first.
    pub order: Vec<String>,
}

impl Flow {
    /// Compiles blocks `(key, kind, settings)`, in the flow's order; connections in the
    /// settings name blocks (and Transfer Flow names a flow) by key.
    pub fn compile(key: String, name: String, blocks: &[(String, String, Value)]) -> Self {
        let entry = blocks
            .iter()
            .find(|(_, kind, _)| kind == "greeting" || kind == "start")
            .map(|b| b.0.clone());
        Self {
            key,
            name,
            entry,
            blocks: blocks
                .iter()
                .map(|(b, kind, config)| (b.clone(), Block::compile_or_broken(kind, config)))
                .collect(),
            order: blocks.iter().map(|b| b.0.clone()).collect(),
        }
    }

    /// `#n Kind` of a block, as the editor numbers it.
    pub fn label_of(&self, key: &str) -> String {
        match (
            self.order.iter().position(|k| k == key),
            self.blocks.get(key),
        ) {
            (Some(n), Some(b)) => format!("#{} {}", n + 1, super::flow::label(b.kind())),
            _ => format!("block {key:?}"),
        }
    }
}

/// A pre-call action other than Webhook.
#[derive(Debug, Clone)]
pub enum Rule {
    /// The first case that holds sends the call to its flow's Start; none: the Greeting.
    Filter {
        action: String,
        name: String,
        cases: Vec<Case>,
    },
    /// Ends the call before the greeting when its conditions hold (none: unfinished).
    EndCall {
        action: String,
        name: String,
        when: Conditions,
        message: Template,
        outcome: String,
    },
    Broken {
        action: String,
        name: String,
        reason: String,
    },
}

impl Rule {
    /// The action's name, as the admin gave it.
    pub fn name(&self) -> &str {
        match self {
            Self::Filter { name, .. } | Self::EndCall { name, .. } | Self::Broken { name, .. } => {
                name
            }
        }
    }

    /// The pre-call action's key.
    pub fn action(&self) -> &str {
        match self {
            Self::Filter { action, .. }
            | Self::EndCall { action, .. }
            | Self::Broken { action, .. } => action,
        }
    }

    /// Reads a pre-call action's settings: `filter` (`cases` with a target `flow`) or
    /// `end_call` (`join`, `conditions`, `message`, `outcome`).
    pub fn compile(action: String, name: String, kind: &str, config: &Value) -> Self {
        let rule = match kind {
            "filter" => cases_from(config, "flow").map(|cases| Self::Filter {
                action: action.clone(),
                name: name.clone(),
                cases,
            }),
            "end_call" => Conditions::from_config(config).and_then(|when| {
                Ok(Self::EndCall {
                    action: action.clone(),
                    name: name.clone(),
                    when,
                    message: template(config, "message")?,
                    outcome: Some(text(config, "outcome"))
                        .filter(|o| !o.is_empty())
                        .unwrap_or_else(|| "refused".into()),
                })
            }),
            other => Err(format!("unknown kind of pre-call action {other:?}")),
        };
        rule.unwrap_or_else(|reason| Self::Broken {
            action,
            name,
            reason,
        })
    }
}

/// An agent's pre-call rules and flows.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub first_flow: Option<String>,
    pub flows: HashMap<String, Flow>,
    pub rules: Vec<Rule>,
}

/// One thing a call did: a block entered, or a pre-call rule applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// A block kind (`greeting`, `start`, `talk`, `collect`, `filter`, `transfer_call`,
    /// `transfer_flow`, `end_call`), a pre-call rule (`precall_filter`, `precall_end_call`),
    /// `answer` (an answer given through `/input`) or `error`.
    #[schema(examples("greeting"))]
    pub kind: String,
    /// The flow's name, or the pre-call action's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow: Option<String>,
    /// The flow's key (for a pre-call Filter, the flow its route starts).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow_key: Option<String>,
    /// The block's key, for a block; the action's key, for a pre-call action.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub block_key: Option<String>,
    /// What the agent said.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub said: Option<String>,
    /// The Filter case taken (or `Else`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub case: Option<String>,
    /// Why: the values a Filter looked at, why a Collect was skipped, what went wrong.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub why: Option<String>,
    /// Collect: the variable asked for or skipped, and the answer given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = crate::domain::variables::VariableValue)]
    pub answer: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub skipped: Option<bool>,
    /// Transfer Call: where to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub department: Option<String>,
}

/// What the runtime must ask the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Question {
    pub flow_key: String,
    pub block_key: String,
    pub variable: String,
    pub prompt: String,
}

/// Where a transferred call goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub department: Option<String>,
    pub message: String,
}

/// Where a run stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// A Collect needs an answer.
    Ask(Question),
    /// The call is over: its outcome tag, and where it was transferred if it was.
    Ended {
        outcome: String,
        transfer: Option<Transfer>,
    },
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct Run {
    pub steps: Vec<Step>,
    pub stop: Stop,
}

impl Run {
    /// The first thing the agent said (the greeting, on a call's first run).
    pub fn first_said(&self) -> Option<&str> {
        self.steps.iter().find_map(|s| s.said.as_deref())
    }
}

/// A variable has a value when it is set and not empty.
pub fn has_value(vars: &Map<String, Value>, name: &str) -> bool {
    vars.get(name).and_then(spoken).is_some()
}

impl Program {
    /// Runs every pre-call rule in order, then the chosen flow. An End Call whose conditions
    /// hold ends the call, wherever it stands; a Filter's route is taken only once every rule
    /// has run and none ended the call (the first Filter that matched chooses), so that no
    /// End Call can be bypassed by its position. Unfinished rules are skipped, never run.
    /// The returned steps start with one step per rule, saying what it did and why.
    pub fn start(&self, vars: &Map<String, Value>) -> Run {
        let mut steps = Vec::new();
        let mut route: Option<(String, String)> = None;
        for rule in &self.rules {
            let kind = match rule {
                Rule::Filter { .. } => "precall_filter",
                Rule::EndCall { .. } => "precall_end_call",
                Rule::Broken { .. } => "precall_error",
            };
            let mut step = Step {
                kind: kind.into(),
                flow: Some(rule.name().to_owned()),
                block_key: Some(rule.action().to_owned()),
                ..Step::default()
            };
            if let Some(why) = self.unfinished(rule) {
                step.skipped = Some(true);
                step.why = Some(format!("skipped, because {why}"));
                steps.push(step);
                continue;
            }
            match rule {
                Rule::Filter { name, cases, .. } => {
                    let chosen = cases.iter().enumerate().find_map(|(i, c)| {
                        let why = c.when.held(vars)?;
                        Some((c.label(i), why, c.next.clone()))
                    });
                    match (chosen, &route) {
                        (Some((case, why, Some(flow))), None) => {
                            step.case = Some(case);
                            step.why = Some(why);
                            step.flow_key = Some(flow.clone());
                            route = Some((name.clone(), flow));
                        }
                        (Some((case, why, _)), Some((earlier, _))) => {
                            step.case = Some(case);
                            step.why = Some(format!(
                                "{why}; not taken: {earlier:?} already chose the route"
                            ));
                        }
                        (_, _) => {
                            step.case = Some("Continue".into());
                            step.why = Some("no case held".into());
                        }
                    }
                    steps.push(step);
                }
                Rule::EndCall {
                    when,
                    message,
                    outcome,
                    ..
                } => {
                    let (hold, why) = when.check(vars);
                    if hold {
                        step.said = Some(message.render(vars)).filter(|s| !s.trim().is_empty());
                        step.why = Some(why);
                        steps.push(step);
                        return Run {
                            steps,
                            stop: Stop::Ended {
                                outcome: outcome.clone(),
                                transfer: None,
                            },
                        };
                    }
                    step.case = Some("Continue".into());
                    step.why = Some(why);
                    steps.push(step);
                }
                Rule::Broken { .. } => unreachable!("a broken rule is unfinished"),
            }
        }
        let entry = route
            .map(|(_, flow)| flow)
            .or_else(|| self.first_flow.clone());
        let Some(flow) = entry.and_then(|f| self.flows.get(&f)) else {
            return self.fail(steps, "the agent has no First Flow to run");
        };
        let Some(block) = flow.entry.clone() else {
            return self.fail(steps, &format!("the flow {:?} has no entry", flow.name));
        };
        self.run(flow.key.clone(), Some(block), vars, steps)
    }

    /// Why a pre-call rule cannot run yet (it is skipped), if it cannot: an End Call with
    /// no conditions would refuse every call, a Filter case with none would route every
    /// call, and a case must lead to an existing flow.
    pub fn unfinished(&self, rule: &Rule) -> Option<String> {
        match rule {
            Rule::Broken { reason, .. } => Some(format!("its settings cannot be read: {reason}")),
            Rule::EndCall { when, .. } if when.list.is_empty() => {
                Some("it has no conditions yet".into())
            }
            Rule::EndCall { .. } => None,
            Rule::Filter { cases, .. } if cases.is_empty() => Some("it has no cases yet".into()),
            Rule::Filter { cases, .. } => cases.iter().enumerate().find_map(|(i, c)| {
                if c.when.list.is_empty() {
                    Some(format!("{} has no conditions yet", c.label(i)))
                } else {
                    match &c.next {
                        None => Some(format!("{} leads to no flow yet", c.label(i))),
                        Some(f) if !self.flows.contains_key(f) => {
                            Some(format!("the flow {} leads to is gone", c.label(i)))
                        }
                        Some(_) => None,
                    }
                }
            }),
        }
    }

    /// Continues a call that was asked `question`, once `vars` hold the answer.
    pub fn resume(&self, question: &Question, vars: &Map<String, Value>) -> Run {
        let block = self
            .flows
            .get(&question.flow_key)
            .and_then(|f| f.blocks.get(&question.block_key));
        let Some(Block::Collect { next, .. }) = block else {
            return self.fail(Vec::new(), "the flow changed: the question's block is gone");
        };
        self.run(question.flow_key.clone(), next.clone(), vars, Vec::new())
    }

    fn fail(&self, mut steps: Vec<Step>, why: &str) -> Run {
        steps.push(Step {
            kind: "error".into(),
            why: Some(why.to_owned()),
            ..Step::default()
        });
        Run {
            steps,
            stop: Stop::Ended {
                outcome: "error".into(),
                transfer: None,
            },
        }
    }

    fn run(
        &self,
        mut flow_key: String,
        mut at: Option<String>,
        vars: &Map<String, Value>,
        mut steps: Vec<Step>,
    ) -> Run {
        let budget = steps.len() + MAX_STEPS;
        loop {
            if steps.len() >= budget {
                return self.fail(
                    steps,
                    "stopped after 200 steps: the flows go round in a loop",
                );
            }
            let Some(flow) = self.flows.get(&flow_key) else {
                return self.fail(steps, "a Transfer Flow leads to a flow that is gone");
            };
            let Some(block_key) = at.take() else {
                return Run {
                    steps,
                    stop: Stop::Ended {
                        outcome: "completed".into(),
                        transfer: None,
                    },
                };
            };
            let Some(block) = flow.blocks.get(&block_key) else {
                return self.fail(steps, "a connection leads to a block that is gone");
            };
            let mut step = Step {
                kind: block.kind().to_owned(),
                flow: Some(flow.name.clone()),
                flow_key: Some(flow.key.clone()),
                block_key: Some(block_key.clone()),
                ..Step::default()
            };
            let said = |t: &Template, vars: &Map<String, Value>| {
                Some(t.render(vars)).filter(|s| !s.trim().is_empty())
            };
            match block {
                Block::Say { message, next, .. } => {
                    step.said = said(message, vars);
                    steps.push(step);
                    at = next.clone();
                }
                Block::Collect {
                    variable,
                    prompt,
                    next,
                } => {
                    step.variable = Some(variable.clone());
                    if has_value(vars, variable) {
                        step.skipped = Some(true);
                        step.why = Some(format!("{variable} is already known"));
                        step.answer = vars.get(variable).cloned();
                        steps.push(step);
                        at = next.clone();
                        continue;
                    }
                    let prompt = prompt.render(vars);
                    step.said = Some(prompt.clone()).filter(|s| !s.is_empty());
                    steps.push(step);
                    return Run {
                        steps,
                        stop: Stop::Ask(Question {
                            flow_key: flow_key.clone(),
                            block_key,
                            variable: variable.clone(),
                            prompt,
                        }),
                    };
                }
                Block::Filter { cases, otherwise } => {
                    let chosen = cases.iter().enumerate().find_map(|(i, c)| {
                        let why = c.when.held(vars)?;
                        Some((c.label(i), why, c.next.clone()))
                    });
                    match chosen {
                        Some((case, why, next)) => {
                            step.case = Some(case);
                            step.why = Some(why);
                            at = next;
                        }
                        None => {
                            step.case = Some("Else".into());
                            step.why = Some(if cases.is_empty() {
                                "no cases".into()
                            } else {
                                "no case held".into()
                            });
                            at = otherwise.clone();
                        }
                    }
                    steps.push(step);
                }
                Block::TransferCall {
                    destination,
                    department,
                    message,
                } => {
                    let transfer = Transfer {
                        destination: Some(destination.clone()).filter(|d| !d.is_empty()),
                        department: Some(department.clone()).filter(|d| !d.is_empty()),
                        message: message.render(vars),
                    };
                    step.said = said(message, vars);
                    step.destination = transfer.destination.clone();
                    step.department = transfer.department.clone();
                    steps.push(step);
                    return Run {
                        steps,
                        stop: Stop::Ended {
                            outcome: "transferred".into(),
                            transfer: Some(transfer),
                        },
                    };
                }
                Block::TransferFlow { flow } => {
                    let target = flow.as_ref().and_then(|f| self.flows.get(f));
                    step.why = target.map(|t| format!("continues in {:?}", t.name));
                    steps.push(step);
                    let Some(target) = target else {
                        return self.fail(steps, "a Transfer Flow leads to no flow");
                    };
                    flow_key = target.key.clone();
                    at = target.entry.clone();
                }
                Block::EndCall { message, outcome } => {
                    step.said = said(message, vars);
                    steps.push(step);
                    return Run {
                        steps,
                        stop: Stop::Ended {
                            outcome: outcome.clone(),
                            transfer: None,
                        },
                    };
                }
                Block::Broken { reason, .. } => {
                    steps.push(step);
                    return self.fail(steps, &format!("a block's settings are broken: {reason}"));
                }
            }
        }
    }
}

/// What the save-time checks need to know about the agent.
pub struct Known {
    /// Declared variables with their types, system variables, and variables Collect blocks
    /// fill (typeless unless declared).
    pub variables: HashMap<String, Option<VarType>>,
    /// The agent's flows, by key.
    pub flows: HashSet<String>,
}

impl Known {
    /// What `program`'s agent, with `schema`, knows.
    pub fn of(schema: &[VariableDef], program: &Program) -> Self {
        Self {
            variables: known_variables(schema, program),
            flows: program.flows.keys().cloned().collect(),
        }
    }
}

/// The variables templates and conditions may use: the declared ones with their types,
/// the system variables, and those a Collect block of any flow fills (typeless unless
/// declared).
fn known_variables(schema: &[VariableDef], program: &Program) -> HashMap<String, Option<VarType>> {
    let mut known: HashMap<String, Option<VarType>> = SYSTEM_VARIABLES
        .iter()
        .map(|n| ((*n).to_owned(), Some(VarType::String)))
        .collect();
    for flow in program.flows.values() {
        for block in flow.blocks.values() {
            if let Block::Collect { variable, .. } = block
                && !variable.is_empty()
            {
                known.insert(variable.clone(), None);
            }
        }
    }
    for def in schema {
        known.insert(def.name.to_string(), Some(def.ty));
    }
    known
}

/// Where a problem of a program is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// The agent as a whole (no First Flow, say).
    Agent,
    /// A flow, by key.
    Flow(String),
    /// A block: its flow's key and its own.
    Block(String, String),
    /// A pre-call action, by key.
    Rule(String),
}

/// One problem of a program, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub at: At,
    pub detail: String,
}

impl Found {
    /// The problem in words, naming what it concerns (`Main #2 Talk: …`).
    pub fn describe(&self, program: &Program) -> String {
        match &self.at {
            At::Agent => self.detail.clone(),
            At::Flow(f) => match program.flows.get(f) {
                Some(flow) => format!("{}: {}", flow.name, self.detail),
                None => self.detail.clone(),
            },
            At::Block(f, b) => match program.flows.get(f) {
                Some(flow) => format!("{} {}: {}", flow.name, flow.label_of(b), self.detail),
                None => self.detail.clone(),
            },
            At::Rule(r) => match program.rules.iter().find(|x| x.action() == r) {
                Some(rule) => format!("Pre-call {:?}: {}", rule.name(), self.detail),
                None => self.detail.clone(),
            },
        }
    }
}

/// Every problem of a whole program: a First Flow, each flow's blocks and connections,
/// Transfer Flow cycles, and each pre-call rule. Flows come in `flow_order`.
pub fn check_program(program: &Program, known: &Known, flow_order: &[String]) -> Vec<Found> {
    let mut problems = Vec::new();
    match &program.first_flow {
        None => problems.push(Found {
            at: At::Agent,
            detail: "choose a First Flow: calls start there".into(),
        }),
        Some(f) if !program.flows.contains_key(f) => problems.push(Found {
            at: At::Agent,
            detail: format!("the First Flow {f:?} does not exist"),
        }),
        Some(_) => {}
    }
    for key in flow_order {
        let Some(flow) = program.flows.get(key) else {
            continue;
        };
        for b in &flow.order {
            for detail in check_block(&flow.blocks[b], known) {
                problems.push(Found {
                    at: At::Block(flow.key.clone(), b.clone()),
                    detail,
                });
            }
        }
        for (b, detail) in check_connections(flow) {
            problems.push(Found {
                at: At::Block(flow.key.clone(), b),
                detail,
            });
        }
    }
    for (f, detail) in check_transfer_cycles(program, flow_order) {
        problems.push(Found {
            at: At::Flow(f),
            detail,
        });
    }
    for rule in &program.rules {
        for detail in check_rule(rule, known) {
            problems.push(Found {
                at: At::Rule(rule.action().to_owned()),
                detail,
            });
        }
    }
    problems
}

/// Each condition names a known variable and compares it with a value of a suitable type.
fn check_conditions(label: &str, when: &Conditions, known: &Known, problems: &mut Vec<String>) {
    for c in &when.list {
        match known.variables.get(&c.variable) {
            None => problems.push(format!(
                "{label}: {} is not a variable of this agent",
                c.variable
            )),
            Some(ty) => {
                if let Err(e) = c.check_types(*ty) {
                    problems.push(format!("{label}: {e}"));
                }
            }
        }
    }
}

/// Checks a pre-call rule: its conditions and message use known variables with suitable
/// comparisons, and a Filter's cases lead to flows of the agent.
pub fn check_rule(rule: &Rule, known: &Known) -> Vec<String> {
    let mut problems = Vec::new();
    match rule {
        Rule::Filter { cases, .. } => {
            if cases.is_empty() {
                problems.push("add a case: a Filter without cases does nothing".into());
            }
            for (i, case) in cases.iter().enumerate() {
                if case.when.list.is_empty() {
                    problems.push(format!("{}: add at least one condition", case.label(i)));
                }
                check_conditions(&case.label(i), &case.when, known, &mut problems);
            }
            for (i, case) in cases.iter().enumerate() {
                match &case.next {
                    None => {
                        problems.push(format!("{}: choose the flow it leads to", case.label(i)))
                    }
                    Some(f) if !known.flows.contains(f) => {
                        problems.push(format!("{}: the chosen flow does not exist", case.label(i)))
                    }
                    _ => {}
                }
            }
        }
        Rule::EndCall { when, message, .. } => {
            if when.list.is_empty() {
                problems.push(
                    "add at least one condition: an End Call without conditions would refuse \
                     every call (to refuse every call on purpose, use caller_phone exists)"
                        .into(),
                );
            }
            check_conditions("Conditions", when, known, &mut problems);
            for name in message.variables() {
                if !known.variables.contains_key(name) {
                    problems.push(format!(
                        "the message uses {{{{{name}}}}}, which is not a variable of this agent"
                    ));
                }
            }
        }
        Rule::Broken { reason, .. } => problems.push(reason.clone()),
    }
    problems
}

/// Checks one block's own settings: templates name known variables, a Filter's comparisons
/// suit its variables' types, a Collect fills a valid name, transfers lead somewhere.
pub fn check_block(block: &Block, known: &Known) -> Vec<String> {
    let mut problems = Vec::new();
    for (what, t) in block.templates() {
        for name in t.variables() {
            if !known.variables.contains_key(name) {
                problems.push(format!(
                    "the {what} uses {{{{{name}}}}}, which is not a variable of this agent \
                     (declare it on the Variables page, or collect it first)"
                ));
            }
        }
    }
    match block {
        Block::Collect { variable, .. } => {
            if variable.is_empty() {
                problems.push("choose the variable this Collect fills".into());
            } else if let Err(e) = VariableName::parse(variable) {
                problems.push(e);
            } else if SYSTEM_VARIABLES.contains(&variable.as_str()) {
                problems.push(format!(
                    "{variable} is a system variable: it cannot be asked"
                ));
            }
        }
        Block::Filter { cases, .. } => {
            for (i, case) in cases.iter().enumerate() {
                if case.when.list.is_empty() {
                    problems.push(format!(
                        "{}: add at least one condition (until then it never holds)",
                        case.label(i)
                    ));
                }
                check_conditions(&case.label(i), &case.when, known, &mut problems);
            }
        }
        Block::TransferCall {
            destination,
            department,
            ..
        } if destination.is_empty() && department.is_empty() => {
            problems.push("a Transfer Call needs a destination number or a department".into());
        }
        Block::TransferFlow { flow } => match flow {
            None => problems.push("choose the flow this Transfer Flow continues in".into()),
            Some(f) if !known.flows.contains(f) => {
                problems.push("the chosen flow does not exist".into())
            }
            _ => {}
        },
        Block::Broken { reason, .. } => problems.push(reason.clone()),
        _ => {}
    }
    problems
}

/// Finds Transfer Flow blocks that lead round from flow to flow back to where they started:
/// a call would go round for ever (a Collect on the way is asked once, then skipped), so
/// such a cycle is refused. Names the flows in order, once per cycle, at the cycle's first
/// flow in `flow_order`.
pub fn check_transfer_cycles(program: &Program, flow_order: &[String]) -> Vec<(String, String)> {
    let targets = |key: &str| -> Vec<String> {
        let flow = &program.flows[key];
        let mut to: Vec<String> = Vec::new();
        for b in &flow.order {
            if let Block::TransferFlow { flow: Some(f) } = &flow.blocks[b]
                && program.flows.contains_key(f)
                && !to.contains(f)
            {
                to.push(f.clone());
            }
        }
        to.reverse();
        to
    };
    let name = |key: &str| format!("{:?}", program.flows[key].name);
    let mut problems = Vec::new();
    let mut done: HashSet<String> = HashSet::new();
    for root in flow_order.iter().filter(|k| program.flows.contains_key(*k)) {
        if done.contains(root) {
            continue;
        }
        // Depth-first, with the path kept to name a cycle when one closes.
        let mut path: Vec<(String, Vec<String>)> = vec![(root.clone(), targets(root))];
        let mut on_path: HashSet<String> = HashSet::from([root.clone()]);
        while let Some((key, next)) = path.last_mut() {
            let key = key.clone();
            match next.pop() {
                Some(to) if on_path.contains(&to) => {
                    let start = path.iter().position(|(f, _)| *f == to).unwrap_or(0);
                    let names: Vec<String> = path[start..].iter().map(|(f, _)| name(f)).collect();
                    let detail = format!(
                        "Transfer Flow goes round in a cycle: {} → {}; a call would never end",
                        names.join(" → "),
                        name(&to)
                    );
                    // Said at every flow on the cycle: any of them can break it.
                    for (f, _) in &path[start..] {
                        problems.push((f.clone(), detail.clone()));
                    }
                }
                Some(to) if !done.contains(&to) => {
                    on_path.insert(to.clone());
                    let next = targets(&to);
                    path.push((to, next));
                }
                Some(_) => {}
                None => {
                    on_path.remove(&key);
                    done.insert(key);
                    path.pop();
                }
            }
        }
    }
    problems
}

/// Checks a flow's connections: each leads to a block of the same flow other than its entry,
/// and no path goes round in a cycle. Each problem comes with the block it starts from.
pub fn check_connections(flow: &Flow) -> Vec<(String, String)> {
    let name = |key: &str| flow.label_of(key);
    let mut problems = Vec::new();
    for key in &flow.order {
        for (label, to) in flow.blocks[key].connections() {
            if !flow.blocks.contains_key(&to) {
                problems.push((
                    key.clone(),
                    format!("its {label} output leads to a block that is not in this flow"),
                ));
            } else if Some(&to) == flow.entry.as_ref() {
                problems.push((
                    key.clone(),
                    format!("its {label} output leads back to the flow's entry, a cycle"),
                ));
            }
        }
    }
    // Blocks no path from the entry reaches: a call never gets there.
    if let Some(entry) = &flow.entry {
        let mut reached: HashSet<&str> = HashSet::from([entry.as_str()]);
        let mut todo = vec![entry.clone()];
        while let Some(key) = todo.pop() {
            for (_, to) in flow.blocks[&key].connections() {
                if let Some(k) = flow.order.iter().find(|k| **k == to)
                    && reached.insert(k.as_str())
                {
                    todo.push(to);
                }
            }
        }
        for key in &flow.order {
            if !reached.contains(key.as_str()) {
                problems.push((
                    key.clone(),
                    "no path from the flow's entry reaches it: connect a block to it, or \
                     delete it"
                        .into(),
                ));
            }
        }
    }
    // Depth-first search for a cycle among the remaining connections.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks: HashMap<&str, Mark> =
        flow.order.iter().map(|k| (k.as_str(), Mark::New)).collect();
    for root in &flow.order {
        if marks[root.as_str()] != Mark::New {
            continue;
        }
        let mut stack: Vec<(String, usize)> = vec![(root.clone(), 0)];
        marks.insert(root, Mark::Open);
        while let Some((key, i)) = stack.last().cloned() {
            let outs: Vec<String> = flow.blocks[&key]
                .connections()
                .into_iter()
                .map(|c| c.1)
                .filter(|to| flow.blocks.contains_key(to) && Some(to) != flow.entry.as_ref())
                .collect();
            if let Some(to) = outs.get(i) {
                stack.last_mut().expect("not empty").1 += 1;
                let to_key = flow.order.iter().find(|k| *k == to).expect("in the flow");
                match marks[to_key.as_str()] {
                    Mark::New => {
                        marks.insert(to_key, Mark::Open);
                        stack.push((to.clone(), 0));
                    }
                    Mark::Open => {
                        let start = stack.iter().position(|(b, _)| b == to).unwrap_or(0);
                        let path: Vec<String> =
                            stack[start..].iter().map(|(b, _)| name(b)).collect();
                        problems.push((
                            to.clone(),
                            format!("a cycle: {} → {}", path.join(" → "), name(to)),
                        ));
                        return problems;
                    }
                    Mark::Done => {}
                }
            } else {
                let done = flow.order.iter().find(|k| **k == key).expect("in the flow");
                marks.insert(done, Mark::Done);
                stack.pop();
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// Greeting → Filter (VIP → transfer; else → Collect reason → End).
    fn program() -> Program {
        let main = Flow::compile(
            "main".into(),
            "Main".into(),
            &[
                (
                    "b10".into(),
                    "greeting".into(),
                    json!({"message": "Hello {{name|there}}", "next": "b11"}),
                ),
                (
                    "b11".into(),
                    "filter".into(),
                    json!({"cases": [{"name": "VIP", "join": "and", "conditions": [
                        {"variable": "priority", "op": "equals", "value": "high"}], "next": "b12"}],
                        "else": "b13"}),
                ),
                (
                    "b12".into(),
                    "transfer_call".into(),
                    json!({"destination": "+12125550100", "department": "", "message": "Connecting you now."}),
                ),
                (
                    "b13".into(),
                    "collect".into(),
                    json!({"variable": "reason", "prompt": "How can I help, {{name|there}}?", "next": "b14"}),
                ),
                ("b14".into(), "transfer_flow".into(), json!({"flow": "f2"})),
            ],
        );
        let other = Flow::compile(
            "f2".into(),
            "Wrap-up".into(),
            &[
                (
                    "b20".into(),
                    "start".into(),
                    json!({"message": "About {{reason}}.", "next": "b21"}),
                ),
                (
                    "b21".into(),
                    "end_call".into(),
                    json!({"message": "Bye.", "outcome": "resolved"}),
                ),
            ],
        );
        Program {
            first_flow: Some("main".into()),
            flows: [("main".into(), main), ("f2".into(), other)].into(),
            rules: Vec::new(),
        }
    }

    #[test]
    fn a_known_priority_routes_at_once_without_questions() {
        let run = program().start(&vars(json!({"name": "Ada", "priority": "high"})));
        assert_eq!(run.first_said(), Some("Hello Ada"));
        assert_eq!(run.steps[1].case.as_deref(), Some("VIP"));
        assert_eq!(
            run.steps[1].why.as_deref(),
            Some("priority is \"high\", equals high")
        );
        match run.stop {
            Stop::Ended { outcome, transfer } => {
                assert_eq!(outcome, "transferred");
                assert_eq!(
                    transfer.unwrap().destination.as_deref(),
                    Some("+12125550100")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unknown_caller_is_asked_and_the_answer_continues_the_call() {
        let p = program();
        let mut v = vars(json!({"name": null, "priority": "normal"}));
        let run = p.start(&v);
        assert_eq!(run.first_said(), Some("Hello there"));
        assert_eq!(run.steps[1].case.as_deref(), Some("Else"));
        let Stop::Ask(q) = run.stop else {
            panic!("expected a question")
        };
        assert_eq!(q.variable, "reason");
        assert_eq!(q.prompt, "How can I help, there?");
        v.insert("reason".into(), json!("billing"));
        let next = p.resume(&q, &v);
        let said: Vec<_> = next
            .steps
            .iter()
            .filter_map(|s| s.said.as_deref())
            .collect();
        assert_eq!(said, ["About billing.", "Bye."]);
        assert_eq!(
            next.stop,
            Stop::Ended {
                outcome: "resolved".into(),
                transfer: None
            }
        );
    }

    #[test]
    fn a_collect_is_skipped_when_its_variable_is_known() {
        let run = program().start(&vars(json!({"priority": "low", "reason": "refund"})));
        let collect = run.steps.iter().find(|s| s.kind == "collect").unwrap();
        assert_eq!(collect.skipped, Some(true));
        assert!(matches!(run.stop, Stop::Ended { ref outcome, .. } if outcome == "resolved"));
    }

    #[test]
    fn precall_rules_refuse_or_route_before_the_greeting() {
        let mut p = program();
        p.rules = vec![
            Rule::compile(
                "r7".into(),
                "Blocked".into(),
                "end_call",
                &json!({"join": "and", "conditions": [{"variable": "blocked", "op": "equals", "value": true}],
                        "message": "Goodbye.", "outcome": "blocked"}),
            ),
            Rule::compile(
                "r8".into(),
                "Risk".into(),
                "filter",
                &json!({"cases": [{"name": "Risky", "join": "or", "conditions": [
                    {"variable": "risk_score", "op": "greater_than", "value": 80}], "flow": "f2"}]}),
            ),
        ];
        let refused = p.start(&vars(json!({"blocked": true})));
        assert_eq!(refused.steps.len(), 1);
        assert!(matches!(refused.stop, Stop::Ended { ref outcome, .. } if outcome == "blocked"));
        let routed = p.start(&vars(json!({"blocked": false, "risk_score": 95})));
        assert_eq!(routed.steps[0].case.as_deref(), Some("Continue"));
        assert_eq!(routed.steps[1].case.as_deref(), Some("Risky"));
        assert_eq!(routed.steps[2].flow.as_deref(), Some("Wrap-up"));
        let normal = p.start(&vars(json!({"risk_score": 10, "priority": "high"})));
        assert_eq!(normal.steps[1].case.as_deref(), Some("Continue"));
        assert_eq!(normal.steps[2].kind, "greeting");
    }

    #[test]
    fn a_routing_filter_above_an_end_call_cannot_bypass_it() {
        let mut p = program();
        p.rules = vec![
            Rule::compile(
                "r8".into(),
                "Risk".into(),
                "filter",
                &json!({"cases": [{"name": "Risky", "join": "or", "conditions": [
                    {"variable": "risk", "op": "greater_than", "value": 80}], "flow": "f2"}]}),
            ),
            Rule::compile(
                "r7".into(),
                "Blocked".into(),
                "end_call",
                &json!({"join": "and", "conditions": [{"variable": "blocked", "op": "equals", "value": true}],
                        "message": "Goodbye.", "outcome": "blocked"}),
            ),
        ];
        let run = p.start(&vars(json!({"risk": 95, "blocked": true})));
        assert!(matches!(run.stop, Stop::Ended { ref outcome, .. } if outcome == "blocked"));
        assert_eq!(run.steps.len(), 2, "{:?}", run.steps);
        assert_eq!(run.steps[0].case.as_deref(), Some("Risky"));
        assert_eq!(run.steps[1].kind, "precall_end_call");
        let routed = p.start(&vars(json!({"risk": 95, "blocked": false})));
        assert_eq!(routed.steps[1].case.as_deref(), Some("Continue"));
        assert_eq!(routed.steps[2].kind, "start");
    }

    #[test]
    fn unfinished_precall_actions_are_skipped_and_say_why() {
        let mut p = program();
        p.rules = vec![
            Rule::compile(
                "r7".into(),
                "End Call".into(),
                "end_call",
                &json!({"join": "and", "conditions": []}),
            ),
            Rule::compile(
                "r8".into(),
                "Filter".into(),
                "filter",
                &json!({"cases": [{"name": "", "join": "and", "conditions": [], "flow": null}]}),
            ),
            Rule::compile(
                "r9".into(),
                "Gone".into(),
                "filter",
                &json!({"cases": [{"name": "", "join": "and", "conditions": [
                    {"variable": "risk", "op": "exists"}], "flow": "f99"}]}),
            ),
        ];
        let run = p.start(&vars(json!({"risk": 1, "priority": "high"})));
        for step in &run.steps[..3] {
            assert_eq!(step.skipped, Some(true), "{step:?}");
            assert!(
                step.why.as_deref().unwrap().starts_with("skipped, because"),
                "{step:?}"
            );
        }
        assert_eq!(run.steps[3].kind, "greeting");
        assert!(matches!(run.stop, Stop::Ended { ref outcome, .. } if outcome == "transferred"));
    }

    #[test]
    fn flows_that_loop_through_transfers_are_stopped() {
        let a = Flow::compile(
            "f1".into(),
            "A".into(),
            &[
                (
                    "b1".into(),
                    "greeting".into(),
                    json!({"message": "", "next": "b2"}),
                ),
                ("b2".into(), "transfer_flow".into(), json!({"flow": "f2"})),
            ],
        );
        let b = Flow::compile(
            "f2".into(),
            "B".into(),
            &[
                (
                    "b3".into(),
                    "start".into(),
                    json!({"message": "", "next": "b4"}),
                ),
                ("b4".into(), "transfer_flow".into(), json!({"flow": "f1"})),
            ],
        );
        let p = Program {
            first_flow: Some("f1".into()),
            flows: [("f1".into(), a), ("f2".into(), b)].into(),
            rules: Vec::new(),
        };
        let run = p.start(&Map::new());
        assert!(matches!(run.stop, Stop::Ended { ref outcome, .. } if outcome == "error"));
        assert!(
            run.steps
                .last()
                .unwrap()
                .why
                .as_deref()
                .unwrap()
                .contains("loop")
        );
    }

    #[test]
    fn transfer_flow_cycles_across_flows_are_found_once_with_their_flows_named() {
        let flow = |key: &str, name: &str, to: Option<&str>| {
            let blocks = vec![
                (
                    "s".to_owned(),
                    "start".to_owned(),
                    json!({"message": "", "next": "t"}),
                ),
                (
                    "t".to_owned(),
                    "transfer_flow".to_owned(),
                    json!({"flow": to}),
                ),
            ];
            (
                key.to_owned(),
                Flow::compile(key.into(), name.into(), &blocks),
            )
        };
        let order: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let p = Program {
            first_flow: Some("a".into()),
            flows: [
                flow("a", "A", Some("b")),
                flow("b", "B", Some("c")),
                flow("c", "C", Some("a")),
                flow("d", "D", Some("a")),
            ]
            .into(),
            rules: Vec::new(),
        };
        let problems = check_transfer_cycles(&p, &order);
        assert_eq!(
            problems.len(),
            3,
            "one for each flow on the cycle: {problems:?}"
        );
        assert!(
            problems[0].1.contains(r#""A" → "B" → "C" → "A""#),
            "{problems:?}"
        );
        let acyclic = Program {
            first_flow: Some("a".into()),
            flows: [flow("a", "A", Some("b")), flow("b", "B", None)].into(),
            rules: Vec::new(),
        };
        assert!(check_transfer_cycles(&acyclic, &order).is_empty());
    }

    #[test]
    fn cycles_and_dangling_connections_are_found() {
        let p = program();
        let main = &p.flows["main"];
        assert!(check_connections(main).is_empty());

        let cyclic = Flow::compile(
            "f3".into(),
            "C".into(),
            &[
                (
                    "b1".into(),
                    "start".into(),
                    json!({"message": "", "next": "b2"}),
                ),
                (
                    "b2".into(),
                    "talk".into(),
                    json!({"message": "a", "next": "b3"}),
                ),
                (
                    "b3".into(),
                    "talk".into(),
                    json!({"message": "b", "next": "b2"}),
                ),
            ],
        );
        let problems = check_connections(&cyclic);
        assert_eq!(
            problems,
            [(
                "b2".to_owned(),
                "a cycle: #2 Talk → #3 Talk → #2 Talk".to_owned()
            )]
        );

        let dangling = Flow::compile(
            "f4".into(),
            "D".into(),
            &[
                (
                    "b1".into(),
                    "start".into(),
                    json!({"message": "", "next": "b99"}),
                ),
                (
                    "b2".into(),
                    "filter".into(),
                    json!({"cases": [], "else": "b1"}),
                ),
            ],
        );
        let problems = check_connections(&dangling);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].1.contains("not in this flow"));
        assert!(problems[1].1.contains("back to the flow's entry"));
        assert_eq!(problems[2].0, "b2");
        assert!(
            problems[2]
                .1
                .contains("no path from the flow's entry reaches it")
        );
    }

    #[test]
    fn unknown_variables_and_mistyped_comparisons_are_refused() {
        let declared: HashMap<String, Option<VarType>> = [
            ("name".to_owned(), Some(VarType::String)),
            ("risk_score".to_owned(), Some(VarType::Number)),
        ]
        .into();
        let known = Known {
            variables: declared,
            flows: HashSet::from(["f1".to_owned()]),
        };
        let talk = Block::compile("talk", &json!({"message": "Hi {{nmae}}"})).unwrap();
        assert!(check_block(&talk, &known)[0].contains("{{nmae}}"));
        let filter = Block::compile(
            "filter",
            &json!({"cases": [{"join": "and", "conditions": [
                {"variable": "risk_score", "op": "greater_than", "value": "high"}]}]}),
        )
        .unwrap();
        assert!(check_block(&filter, &known)[0].contains("needs a number"));
        let ok = Block::compile("talk", &json!({"message": "Hi {{name|there}}"})).unwrap();
        assert!(check_block(&ok, &known).is_empty());
        let transfer = Block::compile("transfer_flow", &json!({"flow": "f9"})).unwrap();
        assert!(!check_block(&transfer, &known).is_empty());
    }
}
