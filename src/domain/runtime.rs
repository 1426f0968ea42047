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
    /// A block of the same flow (Filter block) or a flow (pre-call Filter).
    pub next: Option<i64>,
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
                next: c[target].as_i64(),
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
        next: Option<i64>,
    },
    Collect {
        variable: String,
        prompt: Template,
        next: Option<i64>,
    },
    Filter {
        cases: Vec<Case>,
        otherwise: Option<i64>,
    },
    TransferCall {
        destination: String,
        department: String,
        message: Template,
    },
    TransferFlow {
        flow: Option<i64>,
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
        let next = config["next"].as_i64();
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
                otherwise: config["else"].as_i64(),
            },
            "transfer_call" => Self::TransferCall {
                destination: text(config, "destination"),
                department: text(config, "department"),
                message: template(config, "message")?,
            },
            "transfer_flow" => Self::TransferFlow {
                flow: config["flow"].as_i64(),
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
    pub fn connections(&self) -> Vec<(String, i64)> {
        match self {
            Self::Say { next, .. } | Self::Collect { next, .. } => {
                next.map(|n| ("Next".to_owned(), n)).into_iter().collect()
            }
            Self::Filter { cases, otherwise } => cases
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.next.map(|n| (c.label(i), n)))
                .chain(otherwise.map(|n| ("Else".to_owned(), n)))
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
    pub id: i64,
    pub name: String,
    /// The Greeting or Start block.
    pub entry: Option<i64>,
    pub blocks: HashMap<i64, Block>,
}

impl Flow {
    /// Compiles stored blocks `(id, kind, config)`, in position order.
    pub fn compile(id: i64, name: String, blocks: &[(i64, String, Value)]) -> Self {
        let entry = blocks
            .iter()
            .find(|(_, kind, _)| kind == "greeting" || kind == "start")
            .map(|b| b.0);
        Self {
            id,
            name,
            entry,
            blocks: blocks
                .iter()
                .map(|(b, kind, config)| (*b, Block::compile_or_broken(kind, config)))
                .collect(),
        }
    }
}

/// A pre-call action other than Webhook.
#[derive(Debug, Clone)]
pub enum Rule {
    /// The first case that holds sends the call to its flow's Start; none: the Greeting.
    Filter {
        action_id: i64,
        name: String,
        cases: Vec<Case>,
    },
    /// Ends the call before the greeting when its conditions hold (none: always).
    EndCall {
        action_id: i64,
        name: String,
        when: Conditions,
        message: Template,
        outcome: String,
    },
    Broken {
        action_id: i64,
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

    /// The pre-call action's id.
    pub fn action_id(&self) -> i64 {
        match self {
            Self::Filter { action_id, .. }
            | Self::EndCall { action_id, .. }
            | Self::Broken { action_id, .. } => *action_id,
        }
    }

    /// Reads a pre-call action's settings: `filter` (`cases` with a target `flow`) or
    /// `end_call` (`join`, `conditions`, `message`, `outcome`).
    pub fn compile(action_id: i64, name: String, kind: &str, config: &Value) -> Self {
        let rule = match kind {
            "filter" => cases_from(config, "flow").map(|cases| Self::Filter {
                action_id,
                name: name.clone(),
                cases,
            }),
            "end_call" => Conditions::from_config(config).and_then(|when| {
                Ok(Self::EndCall {
                    action_id,
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
            action_id,
            name,
            reason,
        })
    }
}

/// An agent's pre-call rules and flows.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub first_flow: Option<i64>,
    pub flows: HashMap<i64, Flow>,
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
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub block_id: Option<i64>,
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
    #[schema(value_type = Option<crate::domain::variables::VariableValue>)]
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
    pub flow_id: i64,
    pub block_id: i64,
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
        let mut route: Option<(String, i64)> = None;
        for rule in &self.rules {
            let kind = match rule {
                Rule::Filter { .. } => "precall_filter",
                Rule::EndCall { .. } => "precall_end_call",
                Rule::Broken { .. } => "precall_error",
            };
            let mut step = Step {
                kind: kind.into(),
                flow: Some(rule.name().to_owned()),
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
                        let (hold, why) = c.when.check(vars);
                        hold.then(|| (c.label(i), why, c.next))
                    });
                    match (chosen, &route) {
                        (Some((case, why, Some(flow))), None) => {
                            step.case = Some(case);
                            step.why = Some(why);
                            step.flow_id = Some(flow);
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
        let entry = route.map(|(_, flow)| flow).or(self.first_flow);
        let Some(flow) = entry.and_then(|f| self.flows.get(&f)) else {
            return self.fail(steps, "the agent has no First Flow to run");
        };
        let Some(block) = flow.entry else {
            return self.fail(steps, &format!("the flow {:?} has no entry", flow.name));
        };
        self.run(flow.id, Some(block), vars, steps)
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
                    match c.next {
                        None => Some(format!("{} leads to no flow yet", c.label(i))),
                        Some(f) if !self.flows.contains_key(&f) => {
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
            .get(&question.flow_id)
            .and_then(|f| f.blocks.get(&question.block_id));
        let Some(Block::Collect { next, .. }) = block else {
            return self.fail(Vec::new(), "the flow changed: the question's block is gone");
        };
        self.run(question.flow_id, *next, vars, Vec::new())
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
        mut flow_id: i64,
        mut at: Option<i64>,
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
            let Some(flow) = self.flows.get(&flow_id) else {
                return self.fail(steps, "a Transfer Flow leads to a flow that is gone");
            };
            let Some(block_id) = at else {
                return Run {
                    steps,
                    stop: Stop::Ended {
                        outcome: "completed".into(),
                        transfer: None,
                    },
                };
            };
            let Some(block) = flow.blocks.get(&block_id) else {
                return self.fail(steps, "a connection leads to a block that is gone");
            };
            let mut step = Step {
                kind: block.kind().to_owned(),
                flow: Some(flow.name.clone()),
                flow_id: Some(flow.id),
                block_id: Some(block_id),
                ..Step::default()
            };
            let said = |t: &Template, vars: &Map<String, Value>| {
                Some(t.render(vars)).filter(|s| !s.trim().is_empty())
            };
            match block {
                Block::Say { message, next, .. } => {
                    step.said = said(message, vars);
                    steps.push(step);
                    at = *next;
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
                        at = *next;
                        continue;
                    }
                    let prompt = prompt.render(vars);
                    step.said = Some(prompt.clone()).filter(|s| !s.is_empty());
                    steps.push(step);
                    return Run {
                        steps,
                        stop: Stop::Ask(Question {
                            flow_id,
                            block_id,
                            variable: variable.clone(),
                            prompt,
                        }),
                    };
                }
                Block::Filter { cases, otherwise } => {
                    let chosen = cases.iter().enumerate().find_map(|(i, c)| {
                        let (hold, why) = c.when.check(vars);
                        hold.then(|| (c.label(i), why, c.next))
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
                            at = *otherwise;
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
                    let target = flow.and_then(|f| self.flows.get(&f));
                    step.why = target.map(|t| format!("continues in {:?}", t.name));
                    steps.push(step);
                    let Some(target) = target else {
                        return self.fail(steps, "a Transfer Flow leads to no flow");
                    };
                    flow_id = target.id;
                    at = target.entry;
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
    /// The agent's flows.
    pub flows: HashSet<i64>,
}

impl Known {
    /// What `program`'s agent, with `schema`, knows.
    pub fn of(schema: &[VariableDef], program: &Program) -> Self {
        Self {
            variables: known_variables(schema, program),
            flows: program.flows.keys().copied().collect(),
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

/// Every problem of a whole program: each flow's blocks and connections, and each rule.
/// Block numbers are by id order within a flow.
pub fn check_program(program: &Program, known: &Known) -> Vec<String> {
    let mut problems = Vec::new();
    let mut flows: Vec<&Flow> = program.flows.values().collect();
    flows.sort_by_key(|f| f.id);
    for flow in flows {
        let mut ids: Vec<i64> = flow.blocks.keys().copied().collect();
        ids.sort();
        let number: HashMap<i64, usize> =
            ids.iter().enumerate().map(|(i, b)| (*b, i + 1)).collect();
        for id in &ids {
            for p in check_block(&flow.blocks[id], known) {
                problems.push(format!("{} #{}: {p}", flow.name, number[id]));
            }
        }
        for p in check_connections(flow, &number) {
            problems.push(format!("{}: {p}", flow.name));
        }
    }
    problems.extend(check_transfer_cycles(program));
    for rule in &program.rules {
        problems.extend(check_rule(rule, known));
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
                match case.next {
                    None => {
                        problems.push(format!("{}: choose the flow it leads to", case.label(i)))
                    }
                    Some(f) if !known.flows.contains(&f) => {
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
/// such a cycle is refused. Names the flows in order, once per cycle.
pub fn check_transfer_cycles(program: &Program) -> Vec<String> {
    let mut ids: Vec<i64> = program.flows.keys().copied().collect();
    ids.sort();
    let targets = |id: i64| -> Vec<i64> {
        let mut to: Vec<i64> = program.flows[&id]
            .blocks
            .values()
            .filter_map(|b| match b {
                Block::TransferFlow { flow: Some(f) } if program.flows.contains_key(f) => Some(*f),
                _ => None,
            })
            .collect();
        to.sort();
        to.dedup();
        to
    };
    let name = |id: i64| format!("{:?}", program.flows[&id].name);
    let mut problems = Vec::new();
    let mut done: HashSet<i64> = HashSet::new();
    for &root in &ids {
        if done.contains(&root) {
            continue;
        }
        // Depth-first, with the path kept to name a cycle when one closes.
        let mut path: Vec<(i64, Vec<i64>)> = vec![(root, targets(root))];
        let mut on_path: HashSet<i64> = HashSet::from([root]);
        while let Some((id, next)) = path.last_mut() {
            let id = *id;
            match next.pop() {
                Some(to) if on_path.contains(&to) => {
                    let start = path.iter().position(|(f, _)| *f == to).unwrap_or(0);
                    let names: Vec<String> = path[start..].iter().map(|(f, _)| name(*f)).collect();
                    problems.push(format!(
                        "Transfer Flow goes round in a cycle: {} → {}; a call would never end",
                        names.join(" → "),
                        name(to)
                    ));
                }
                Some(to) if !done.contains(&to) => {
                    on_path.insert(to);
                    path.push((to, targets(to)));
                }
                Some(_) => {}
                None => {
                    done.insert(id);
                    on_path.remove(&id);
                    path.pop();
                }
            }
        }
    }
    problems
}

/// Checks a flow's connections: each leads to a block of the same flow other than its entry,
/// and no path goes round in a cycle.
pub fn check_connections(flow: &Flow, number: &HashMap<i64, usize>) -> Vec<String> {
    let name = |id: i64| match (number.get(&id), flow.blocks.get(&id)) {
        (Some(n), Some(b)) => format!("#{n} {}", super::flow::label(b.kind())),
        _ => format!("block {id}"),
    };
    let mut problems = Vec::new();
    let mut ids: Vec<i64> = flow.blocks.keys().copied().collect();
    ids.sort_by_key(|id| number.get(id).copied().unwrap_or(usize::MAX));
    for &id in &ids {
        for (label, to) in flow.blocks[&id].connections() {
            if !flow.blocks.contains_key(&to) {
                problems.push(format!(
                    "{}'s {label} output leads to a block that is not in this flow",
                    name(id)
                ));
            } else if Some(to) == flow.entry {
                problems.push(format!(
                    "{}'s {label} output leads back to the flow's entry, a cycle",
                    name(id)
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
    let mut marks: HashMap<i64, Mark> = ids.iter().map(|&id| (id, Mark::New)).collect();
    for &root in &ids {
        if marks[&root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(i64, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::Open);
        while let Some((id, i)) = stack.last().copied() {
            let outs: Vec<i64> = flow.blocks[&id]
                .connections()
                .into_iter()
                .map(|c| c.1)
                .filter(|to| flow.blocks.contains_key(to) && Some(*to) != flow.entry)
                .collect();
            if let Some(&to) = outs.get(i) {
                stack.last_mut().expect("not empty").1 += 1;
                match marks[&to] {
                    Mark::New => {
                        marks.insert(to, Mark::Open);
                        stack.push((to, 0));
                    }
                    Mark::Open => {
                        let start = stack.iter().position(|(b, _)| *b == to).unwrap_or(0);
                        let path: Vec<String> =
                            stack[start..].iter().map(|(b, _)| name(*b)).collect();
                        problems.push(format!("a cycle: {} → {}", path.join(" → "), name(to)));
                        return problems;
                    }
                    Mark::Done => {}
                }
            } else {
                marks.insert(id, Mark::Done);
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
            1,
            "Main".into(),
            &[
                (
                    10,
                    "greeting".into(),
                    json!({"message": "Hello {{name|there}}", "next": 11}),
                ),
                (
                    11,
                    "filter".into(),
                    json!({"cases": [{"name": "VIP", "join": "and", "conditions": [
                        {"variable": "priority", "op": "equals", "value": "high"}], "next": 12}],
                        "else": 13}),
                ),
                (
                    12,
                    "transfer_call".into(),
                    json!({"destination": "+12125550100", "department": "", "message": "Connecting you now."}),
                ),
                (
                    13,
                    "collect".into(),
                    json!({"variable": "reason", "prompt": "How can I help, {{name|there}}?", "next": 14}),
                ),
                (14, "transfer_flow".into(), json!({"flow": 2})),
            ],
        );
        let other = Flow::compile(
            2,
            "Wrap-up".into(),
            &[
                (
                    20,
                    "start".into(),
                    json!({"message": "About {{reason}}.", "next": 21}),
                ),
                (
                    21,
                    "end_call".into(),
                    json!({"message": "Bye.", "outcome": "resolved"}),
                ),
            ],
        );
        Program {
            first_flow: Some(1),
            flows: [(1, main), (2, other)].into(),
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
                7,
                "Blocked".into(),
                "end_call",
                &json!({"join": "and", "conditions": [{"variable": "blocked", "op": "equals", "value": true}],
                        "message": "Goodbye.", "outcome": "blocked"}),
            ),
            Rule::compile(
                8,
                "Risk".into(),
                "filter",
                &json!({"cases": [{"name": "Risky", "join": "or", "conditions": [
                    {"variable": "risk_score", "op": "greater_than", "value": 80}], "flow": 2}]}),
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
                8,
                "Risk".into(),
                "filter",
                &json!({"cases": [{"name": "Risky", "join": "or", "conditions": [
                    {"variable": "risk", "op": "greater_than", "value": 80}], "flow": 2}]}),
            ),
            Rule::compile(
                7,
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
                7,
                "End Call".into(),
                "end_call",
                &json!({"join": "and", "conditions": []}),
            ),
            Rule::compile(
                8,
                "Filter".into(),
                "filter",
                &json!({"cases": [{"name": "", "join": "and", "conditions": [], "flow": null}]}),
            ),
            Rule::compile(
                9,
                "Gone".into(),
                "filter",
                &json!({"cases": [{"name": "", "join": "and", "conditions": [
                    {"variable": "risk", "op": "exists"}], "flow": 99}]}),
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
            1,
            "A".into(),
            &[
                (1, "greeting".into(), json!({"message": "", "next": 2})),
                (2, "transfer_flow".into(), json!({"flow": 2})),
            ],
        );
        let b = Flow::compile(
            2,
            "B".into(),
            &[
                (3, "start".into(), json!({"message": "", "next": 4})),
                (4, "transfer_flow".into(), json!({"flow": 1})),
            ],
        );
        let p = Program {
            first_flow: Some(1),
            flows: [(1, a), (2, b)].into(),
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
        let flow = |id: i64, name: &str, to: Option<i64>| {
            let mut blocks = vec![(
                id * 10,
                "start".to_owned(),
                json!({"message": "", "next": id * 10 + 1}),
            )];
            blocks.push((id * 10 + 1, "transfer_flow".to_owned(), json!({"flow": to})));
            Flow::compile(id, name.into(), &blocks)
        };
        let p = Program {
            first_flow: Some(1),
            flows: [
                (1, flow(1, "A", Some(2))),
                (2, flow(2, "B", Some(3))),
                (3, flow(3, "C", Some(1))),
                (4, flow(4, "D", Some(1))),
            ]
            .into(),
            rules: Vec::new(),
        };
        let problems = check_transfer_cycles(&p);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(r#""A" → "B" → "C" → "A""#),
            "{problems:?}"
        );
        let acyclic = Program {
            first_flow: Some(1),
            flows: [(1, flow(1, "A", Some(2))), (2, flow(2, "B", None))].into(),
            rules: Vec::new(),
        };
        assert!(check_transfer_cycles(&acyclic).is_empty());
    }

    fn numbers(flow: &Flow) -> HashMap<i64, usize> {
        let mut ids: Vec<i64> = flow.blocks.keys().copied().collect();
        ids.sort();
        ids.into_iter()
            .enumerate()
            .map(|(i, id)| (id, i + 1))
            .collect()
    }

    #[test]
    fn cycles_and_dangling_connections_are_found() {
        let p = program();
        let main = &p.flows[&1];
        assert!(check_connections(main, &numbers(main)).is_empty());

        let cyclic = Flow::compile(
            3,
            "C".into(),
            &[
                (1, "start".into(), json!({"message": "", "next": 2})),
                (2, "talk".into(), json!({"message": "a", "next": 3})),
                (3, "talk".into(), json!({"message": "b", "next": 2})),
            ],
        );
        let problems = check_connections(&cyclic, &numbers(&cyclic));
        assert_eq!(problems, ["a cycle: #2 Talk → #3 Talk → #2 Talk"]);

        let dangling = Flow::compile(
            4,
            "D".into(),
            &[
                (1, "start".into(), json!({"message": "", "next": 99})),
                (2, "filter".into(), json!({"cases": [], "else": 1})),
            ],
        );
        let problems = check_connections(&dangling, &numbers(&dangling));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("not in this flow"));
        assert!(problems[1].contains("back to the flow's entry"));
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
            flows: HashSet::from([1]),
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
        let transfer = Block::compile("transfer_flow", &json!({"flow": 9})).unwrap();
        assert!(!check_block(&transfer, &known).is_empty());
    }
}
