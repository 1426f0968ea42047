//! `precall demo`: an agent whose flows implement the four pre-call examples, ready to try.
//!
//! 1. **Call transfer with context**: `priority: "high"` → straight to the priority team,
//!    no questions.
//! 2. **CRM personalisation**: `customer_name` in the greeting; `plan: "enterprise"` → the
//!    caller's account manager.
//! 3. **Lead qualification**: `lead_source`, `budget`, `interest` → the sales flow skips the
//!    questions it already has answers to and tailors what it says.
//! 4. **Fraud detection**: `risk_score` over 80 or `flagged` → a pre-call Filter sends the
//!    call to the Verification flow before the greeting.
//!
//! Without webhook data every call takes the default path: a generic greeting, one question,
//! then the front desk.

use serde_json::{Value, json};

use crate::domain::phone::Region;
use crate::domain::runtime;
use crate::domain::variables::{VarType, VariableName};
use crate::store::actions::{self, NewWebhook};
use crate::store::agents::{self, Agent};
use crate::store::variables::{self, NewVariable};
use crate::store::{Db, StoreError, flows, tokens};

/// What the demo created; the key and token are shown once.
pub struct Demo {
    pub agent: Agent,
    pub webhook_url: String,
    pub api_key: String,
    pub runtime_token: String,
}

/// The variables the examples use: (name, type, default, description).
const VARIABLES: [(&str, VarType, Option<&str>, &str); 10] = [
    (
        "customer_name",
        VarType::String,
        None,
        "The caller's name, from the CRM",
    ),
    (
        "plan",
        VarType::String,
        Some("\"standard\""),
        "The caller's plan",
    ),
    (
        "account_manager",
        VarType::String,
        None,
        "The account manager's name",
    ),
    (
        "priority",
        VarType::String,
        Some("\"normal\""),
        "high routes at once",
    ),
    (
        "lead_source",
        VarType::String,
        None,
        "Where a lead came from",
    ),
    ("budget", VarType::Number, None, "A lead's budget"),
    (
        "interest",
        VarType::String,
        None,
        "The product a lead is interested in",
    ),
    (
        "risk_score",
        VarType::Number,
        Some("0"),
        "0-100 from the risk engine",
    ),
    (
        "flagged",
        VarType::Boolean,
        Some("false"),
        "Flagged by the risk engine",
    ),
    (
        "reason",
        VarType::String,
        None,
        "Why the caller calls, when not known",
    ),
];

fn cond(variable: &str, op: &str, value: Value) -> Value {
    if value.is_null() {
        json!({ "variable": variable, "op": op })
    } else {
        json!({ "variable": variable, "op": op, "value": value })
    }
}

async fn block(db: &Db, flow: i64, kind: &str) -> Result<i64, StoreError> {
    flows::add_block(db, flow, kind, &crate::domain::flow::default_config(kind)).await
}

/// Creates the demo agent with its variables, webhook, pre-call Filter, flows and a token.
pub async fn create(db: &Db, public_url: &str, wait_ms: i64) -> Result<Demo, StoreError> {
    let agent = agents::create(
        db,
        "Demo: pre-call routing",
        Region::parse("US").expect("US"),
    )
    .await?;
    for (name, ty, default, description) in VARIABLES {
        variables::upsert(
            db,
            agent.id,
            &NewVariable {
                name: VariableName::parse(name).expect("a valid name"),
                ty,
                default: default.map(|d| serde_json::from_str(d).expect("JSON")),
                description: description.into(),
                source_action_id: None,
            },
        )
        .await?;
    }
    let main = agent
        .first_flow_id
        .ok_or_else(|| StoreError::Conflict("the agent has no First Flow".into()))?;
    let sales = flows::create(db, agent.id, "Sales qualification").await?;
    let verification = flows::create(db, agent.id, "Verification").await?;
    let entry = |flow: i64| async move {
        flows::blocks(db, flow)
            .await?
            .first()
            .map(|b| b.id)
            .ok_or_else(|| StoreError::Conflict("a flow without an entry".into()))
    };

    // Main flow: greeting by name, then route on what the webhook said.
    let greeting = entry(main).await?;
    let route = block(db, main, "filter").await?;
    let priority = block(db, main, "transfer_call").await?;
    let manager = block(db, main, "transfer_call").await?;
    let to_sales = block(db, main, "transfer_flow").await?;
    let ask_reason = block(db, main, "collect").await?;
    let front_desk = block(db, main, "transfer_call").await?;
    let set = |id: i64, flow: i64, config: Value| async move {
        flows::update_block(db, flow, id, &config).await
    };
    set(
        greeting,
        main,
        json!({
            "message": "Hello {{customer_name|there}}, thanks for calling Acme.", "next": route,
        }),
    )
    .await?;
    set(
        route,
        main,
        json!({
            "cases": [
                { "name": "Priority caller", "join": "and",
                  "conditions": [cond("priority", "equals", json!("high"))], "next": priority },
                { "name": "Enterprise plan", "join": "and",
                  "conditions": [cond("plan", "equals", json!("enterprise"))], "next": manager },
                { "name": "Known lead", "join": "and",
                  "conditions": [cond("lead_source", "exists", Value::Null)], "next": to_sales },
            ],
            "else": ask_reason,
        }),
    )
    .await?;
    set(
        priority,
        main,
        json!({
            "destination": "", "department": "Priority support",
            "message": "I'm connecting you to our priority team right away.",
        }),
    )
    .await?;
    set(manager, main, json!({
        "destination": "", "department": "Account management",
        "message": "As an enterprise customer you have a dedicated contact: connecting you to {{account_manager|your account manager}}.",
    })).await?;
    set(to_sales, main, json!({ "flow": sales })).await?;
    set(
        ask_reason,
        main,
        json!({
            "variable": "reason", "prompt": "How can I help you today?", "next": front_desk,
        }),
    )
    .await?;
    set(
        front_desk,
        main,
        json!({
            "destination": "", "department": "Front desk",
            "message": "Thanks. Connecting you to someone who can help with {{reason}}.",
        }),
    )
    .await?;

    // Sales qualification: ask only what the lead source did not say.
    let start = entry(sales).await?;
    let ask_budget = block(db, sales, "collect").await?;
    let ask_interest = block(db, sales, "collect").await?;
    let qualify = block(db, sales, "filter").await?;
    let pitch_enterprise = block(db, sales, "talk").await?;
    let enterprise_sales = block(db, sales, "transfer_call").await?;
    let pitch = block(db, sales, "talk").await?;
    let sales_desk = block(db, sales, "transfer_call").await?;
    set(
        start,
        sales,
        json!({
            "message": "Thanks for your interest in Acme.", "next": ask_budget,
        }),
    )
    .await?;
    set(
        ask_budget,
        sales,
        json!({
            "variable": "budget", "prompt": "What budget do you have in mind, in dollars?",
            "next": ask_interest,
        }),
    )
    .await?;
    set(
        ask_interest,
        sales,
        json!({
            "variable": "interest", "prompt": "Which of our products are you interested in?",
            "next": qualify,
        }),
    )
    .await?;
    set(
        qualify,
        sales,
        json!({
            "cases": [{ "name": "Large deal", "join": "and",
                        "conditions": [cond("budget", "greater_than", json!(10000))],
                        "next": pitch_enterprise }],
            "else": pitch,
        }),
    )
    .await?;
    set(pitch_enterprise, sales, json!({
        "message": "For {{interest}} at that scale, our enterprise team will put together a tailored offer.",
        "next": enterprise_sales,
    })).await?;
    set(
        enterprise_sales,
        sales,
        json!({
            "destination": "", "department": "Enterprise sales",
            "message": "Connecting you now.",
        }),
    )
    .await?;
    set(
        pitch,
        sales,
        json!({
            "message": "Our {{interest}} plans start small and grow with you.", "next": sales_desk,
        }),
    )
    .await?;
    set(
        sales_desk,
        sales,
        json!({
            "destination": "", "department": "Sales", "message": "Connecting you to sales.",
        }),
    )
    .await?;

    // Verification: stricter handling for risky callers.
    let start = entry(verification).await?;
    let ask_code = block(db, verification, "collect").await?;
    let fraud_team = block(db, verification, "transfer_call").await?;
    set(
        start,
        verification,
        json!({
            "message": "For your security, we need to verify your identity before we continue.",
            "next": ask_code,
        }),
    )
    .await?;
    set(
        ask_code,
        verification,
        json!({
            "variable": "verification_code",
            "prompt": "Please say the six-digit code we just sent to your phone.",
            "next": fraud_team,
        }),
    )
    .await?;
    set(
        fraud_team,
        verification,
        json!({
            "destination": "", "department": "Fraud prevention",
            "message": "Thank you. A security specialist will take it from here.",
        }),
    )
    .await?;

    // Above the First Flow: the CRM webhook, then the risk check.
    let created = actions::create_webhook(
        db,
        agent.id,
        &NewWebhook {
            name: "CRM webhook".into(),
            fallback_wait_ms: wait_ms,
            ttl_secs: actions::DEFAULT_TTL_SECS,
        },
    )
    .await?;
    actions::create_rule(
        db,
        agent.id,
        "filter",
        "Risk check",
        &json!({
            "cases": [{ "name": "Risky caller", "join": "or",
                        "conditions": [cond("risk_score", "greater_than", json!(80)),
                                       cond("flagged", "equals", json!(true))],
                        "flow": verification }],
        }),
    )
    .await?;
    // The demo is held to the checks an admin's saves are.
    let (program, known) = crate::catalog::load_checked(db, agent.id, Some(main), |_| {}).await?;
    let problems = runtime::check_program(&program, &known);
    if !problems.is_empty() {
        return Err(StoreError::Conflict(format!(
            "the demo's flows do not pass their checks: {}",
            problems.join("; ")
        )));
    }
    let token = tokens::create(db, agent.id, "Demo runtime").await?;
    Ok(Demo {
        webhook_url: crate::http::ingest::url(public_url, created.slug.as_str()),
        api_key: created.key.expose().to_owned(),
        runtime_token: token.expose().to_owned(),
        agent,
    })
}

/// The example payloads, by name, for the agent `agent_id`.
pub fn payloads(agent_id: &str) -> [(&'static str, Value); 4] {
    [
        (
            "call transfer with context",
            json!({
                "agentId": agent_id, "phoneNumber": "+12125550101",
                "customer_name": "Maria", "priority": "high",
            }),
        ),
        (
            "CRM personalisation",
            json!({
                "agentId": agent_id, "phoneNumber": "+12125550102",
                "customer_name": "Ada", "plan": "enterprise", "account_manager": "Grace",
            }),
        ),
        (
            "lead qualification",
            json!({
                "agentId": agent_id, "phoneNumber": "+12125550103",
                "lead_source": "webinar", "budget": 25000, "interest": "voice analytics",
            }),
        ),
        (
            "fraud detection",
            json!({
                "agentId": agent_id, "phoneNumber": "+12125550104",
                "risk_score": 92, "flagged": true,
            }),
        ),
    ]
}
