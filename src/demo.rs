//! `precall demo`: one agent per pre-call example, each imported from its document in
//! `examples/` (which are also the document format's reference), ready to try.
//!
//! 1. **Call transfer with context** (`call-transfer.json`): `priority: "high"` → straight to
//!    the priority team, no questions.
//! 2. **CRM personalisation** (`crm-personalisation.json`): `customer_name` in the greeting;
//!    `plan: "enterprise"` → the caller's account manager.
//! 3. **Lead qualification** (`lead-qualification.json`): `lead_source`, `budget`, `interest`
//!    → the Sales flow skips the questions it already has answers to and tailors its pitch.
//! 4. **Fraud detection** (`fraud-detection.json`): `risk_score` over 80 or `flagged` → a
//!    pre-call Filter sends the call to the Verification flow before the greeting.
//!
//! Without webhook data every call takes the default path: a generic greeting, one question,
//! then the front desk.

use serde_json::{Value, json};

use crate::domain::document::{Action, AgentDocument};
use crate::domain::phone::Region;
use crate::store::agents::{self, Agent};
use crate::store::{Db, StoreError, tokens};

/// An example: its name, its document, and a payload that takes its routed path.
pub struct Example {
    pub name: &'static str,
    pub file: &'static str,
    pub document: &'static str,
}

/// The four examples, in the brief's order.
pub const EXAMPLES: [Example; 4] = [
    Example {
        name: "call transfer with context",
        file: "examples/call-transfer.json",
        document: include_str!("../examples/call-transfer.json"),
    },
    Example {
        name: "CRM personalisation",
        file: "examples/crm-personalisation.json",
        document: include_str!("../examples/crm-personalisation.json"),
    },
    Example {
        name: "lead qualification",
        file: "examples/lead-qualification.json",
        document: include_str!("../examples/lead-qualification.json"),
    },
    Example {
        name: "fraud detection",
        file: "examples/fraud-detection.json",
        document: include_str!("../examples/fraud-detection.json"),
    },
];

impl Example {
    /// The example's document, as imported.
    pub fn document(&self) -> AgentDocument {
        let value: Value = serde_json::from_str(self.document).expect("an example is JSON");
        AgentDocument::from_json(&value).expect("an example is a valid document")
    }

    /// The payload a sender posts for the example's caller, for the agent `agent_id`.
    pub fn payload(&self, agent_id: &str) -> Value {
        match self.file {
            "examples/call-transfer.json" => json!({
                "agentId": agent_id, "phoneNumber": "+12125550101",
                "customer_name": "Maria", "priority": "high",
            }),
            "examples/crm-personalisation.json" => json!({
                "agentId": agent_id, "phoneNumber": "+12125550102",
                "customer_name": "Ada", "plan": "enterprise", "account_manager": "Grace",
            }),
            "examples/lead-qualification.json" => json!({
                "agentId": agent_id, "phoneNumber": "+12125550103",
                "lead_source": "webinar", "budget": 25000, "interest": "voice analytics",
            }),
            _ => json!({
                "agentId": agent_id, "phoneNumber": "+12125550104",
                "risk_score": 92, "flagged": true,
            }),
        }
    }
}

/// One example's agent, with what is shown once: its webhook's key and a runtime token.
pub struct DemoAgent {
    pub example: &'static Example,
    pub agent: Agent,
    pub webhook_url: String,
    pub api_key: String,
    pub runtime_token: String,
}

/// Creates an agent per example from its document, its webhook waiting `wait_ms`.
pub async fn create(db: &Db, public_url: &str, wait_ms: i64) -> Result<Vec<DemoAgent>, StoreError> {
    if !(0..=crate::domain::document::MAX_WAIT_MS).contains(&wait_ms) {
        return Err(StoreError::Conflict(format!(
            "the wait must be 0 to {} ms, got {wait_ms}",
            crate::domain::document::MAX_WAIT_MS
        )));
    }
    let mut made = Vec::new();
    for example in &EXAMPLES {
        let mut doc = example.document();
        for a in &mut doc.precall {
            if let Action::Webhook { wait_ms: w, .. } = &mut a.settings {
                *w = wait_ms;
            }
        }
        let problems = crate::domain::document::check(&doc);
        if !problems.is_empty() {
            return Err(StoreError::Conflict(format!(
                "{} does not pass its checks: {problems:?}",
                example.file
            )));
        }
        let (agent, endpoints) = agents::create(
            db,
            &format!("Demo: {}", example.name),
            Region::parse("US").expect("US"),
            Some(&doc),
            "precall demo",
        )
        .await?;
        let endpoint = endpoints
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Conflict(format!("{} has no webhook", example.file)))?;
        let token = tokens::create(db, agent.id, "Demo runtime").await?;
        made.push(DemoAgent {
            example,
            webhook_url: crate::http::ingest::url(public_url, endpoint.slug.as_str()),
            api_key: endpoint.api_key.expose().to_owned(),
            runtime_token: token.expose().to_owned(),
            agent,
        });
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_is_a_canonical_document_that_passes_its_checks() {
        for e in &EXAMPLES {
            let doc = e.document();
            assert!(
                crate::domain::document::check(&doc).is_empty(),
                "{}: {:?}",
                e.file,
                crate::domain::document::check(&doc)
            );
            let reread = AgentDocument::from_json(&doc.to_json()).unwrap();
            assert_eq!(reread, doc, "{}", e.file);
        }
    }
}
