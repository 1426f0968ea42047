//! The page that asks before something that cannot be undone. The console's destructive
//! buttons are forms that lead here (GET, changing nothing); this page says what will
//! happen, and its button does it (POST to the same address). With scripts, the console
//! asks in a dialog instead and posts at once.

use askama::Template;

use super::Page;

#[derive(Template)]
#[template(path = "admin/confirm.html")]
pub struct Confirmation {
    pub page: Page,
    /// Links above the question, each (address, text); the question's page ends them.
    pub crumbs: Vec<(String, String)>,
    /// The question, in three parts: the middle one is what a user named, shown isolated
    /// from the text around it (`Revoke the token ` `telephony` `?`).
    pub question: (String, String, String),
    /// What happens, one paragraph each.
    pub says: Vec<String>,
    /// Where the button posts (the address this page was asked for).
    pub action: String,
    /// Hidden fields the post carries besides the CSRF token.
    pub fields: Vec<(String, String)>,
    /// Where "keep" leads: the page the button was on.
    pub back: String,
    pub keep: String,
    pub button: String,
}

impl Confirmation {
    /// A page asking `question` (before, subject, after) with `button` posting to `action`.
    pub fn new(
        page: Page,
        question: (&str, &str, &str),
        action: impl Into<String>,
        back: impl Into<String>,
    ) -> Self {
        Self {
            page,
            crumbs: Vec::new(),
            question: (
                question.0.to_owned(),
                question.1.to_owned(),
                question.2.to_owned(),
            ),
            says: Vec::new(),
            action: action.into(),
            fields: Vec::new(),
            back: back.into(),
            keep: "Cancel".to_owned(),
            button: "Confirm".to_owned(),
        }
    }

    pub fn crumb(mut self, to: impl Into<String>, text: impl Into<String>) -> Self {
        self.crumbs.push((to.into(), text.into()));
        self
    }

    pub fn says(mut self, text: impl Into<String>) -> Self {
        self.says.push(text.into());
        self
    }

    pub fn field(mut self, name: &str, value: impl ToString) -> Self {
        self.fields.push((name.to_owned(), value.to_string()));
        self
    }

    pub fn buttons(mut self, keep: &str, button: &str) -> Self {
        self.keep = keep.to_owned();
        self.button = button.to_owned();
        self
    }
}
